//! The local cache of every provider's record (requests read only this),
//! and reading records from Redis into it.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use ::redis::aio::ConnectionLike;
use ::redis::RedisResult;
use zeroize::Zeroizing;

use super::keys::INIT_KEYS;
use super::{glob_escape, scrub, Shared};
use crate::secret::SecretBuf;
use crate::store::record::{Codec, Decoded, RecordError};
use crate::store::{StoreError, StoredToken};

/// Why the first read at start failed.
pub(super) enum FillError {
    /// Redis did not answer: start anyway, take the tokens over later.
    Unreachable(String),
    /// Redis answered, and what it holds must not be used or replaced with
    /// this config (another encryption key, or none): refuse to start.
    Fatal(StoreError),
}

/// One record as read by [`read_all`].
pub(super) struct ReadRecord {
    pub(super) provider: String,
    pub(super) key: String,
    pub(super) version: u64,
    pub(super) record: Result<Decoded, RecordError>,
}

/// One provider's record as this replica last saw or wrote it.
#[derive(Clone)]
pub(super) struct Cached {
    pub(super) version: u64,
    pub(super) token: StoredToken,
    /// Written only here (Redis was unreachable, or the lease was lost):
    /// `flush` and the resync after a reconnect try again, unless Redis has
    /// a newer version by then.
    pub(super) dirty: bool,
    /// Written to the primary as these exact bytes, but fewer replicas
    /// than wanted acknowledged it (`WAIT`): a failover now could lose it.
    /// Written again (same bytes, same version) and waited for until they
    /// do; meanwhile no renewal of this provider starts here.
    pub(super) unacked: Option<Arc<SecretBuf>>,
}

impl Shared {
    pub(super) fn cached_version(&self, provider: &str) -> u64 {
        self.cache
            .lock()
            .unwrap()
            .get(provider)
            .map_or(0, |c| c.version)
    }

    /// Takes a record read from Redis into the cache unless ours has a
    /// higher version (Redis wins ties: a dirty copy at the same version
    /// lost the race). Returns whether the cached token changed.
    pub(super) fn remember_read(&self, provider: &str, version: u64, token: StoredToken) -> bool {
        let mut cache = self.cache.lock().unwrap();
        match cache.get_mut(provider) {
            Some(c) if c.version > version => false,
            Some(c) if c.version == version && c.token.same_tokens(&token) => {
                c.dirty = false;
                false
            }
            _ => {
                cache.insert(
                    provider.to_string(),
                    Cached {
                        version,
                        token,
                        dirty: false,
                        unacked: None,
                    },
                );
                true
            }
        }
    }

    /// A token written at `version`; `unacked` holds its bytes when the
    /// replicas did not acknowledge it in time.
    pub(super) fn remember_written(
        &self,
        provider: &str,
        version: u64,
        token: StoredToken,
        unacked: Option<Arc<SecretBuf>>,
    ) {
        self.cache.lock().unwrap().insert(
            provider.to_string(),
            Cached {
                version,
                token,
                dirty: false,
                unacked,
            },
        );
    }

    /// Keeps a token that could not be written, at `version`: the next
    /// `flush` or resync writes it unless Redis has that version or a
    /// newer one by then. A clean record already at `version` or newer
    /// came from another replica after ours was made: it stays.
    pub(super) fn remember_dirty(&self, provider: &str, version: u64, token: StoredToken) {
        let mut cache = self.cache.lock().unwrap();
        if cache
            .get(provider)
            .is_some_and(|c| !c.dirty && c.version >= version)
        {
            return;
        }
        cache.insert(
            provider.to_string(),
            Cached {
                version,
                token,
                dirty: true,
                unacked: None,
            },
        );
    }

    pub(super) fn initial_fill(self: &Arc<Self>) -> Result<usize, FillError> {
        // `open` is synchronous (it runs once, before serving) but the
        // client is async: read on a helper thread with its own runtime.
        let me = self.clone();
        let timeout = self.opts.op_timeout;
        let read = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| FillError::Unreachable(e.to_string()))?;
            rt.block_on(async {
                // Behind Sentinel: ask for the primary first (installed
                // below, on the caller's runtime).
                let found = match &me.sentinels {
                    Some(cfg) => Some(
                        super::topology::resolve(cfg, timeout)
                            .await
                            .map_err(FillError::Unreachable)?,
                    ),
                    None => None,
                };
                let client = match &found {
                    Some((client, _)) => client.clone(),
                    None => me
                        .client()
                        .ok_or_else(|| FillError::Unreachable("no primary known".into()))?,
                };
                let attempt = async {
                    let mut conn = client.get_multiplexed_async_connection().await?;
                    let (fresh, check) = me.init_args();
                    let (fp, kc): (String, String) = INIT_KEYS
                        .key(me.fingerprint_key_name())
                        .key(me.key_check_name())
                        .arg(fresh)
                        .arg(check)
                        .invoke_async(&mut conn)
                        .await?;
                    let codec = match me.adopt_keys(&fp, &kc) {
                        Ok(codec) => codec,
                        Err(e) => return Ok(Err(FillError::Fatal(e))),
                    };
                    let info: String = ::redis::cmd("INFO")
                        .arg("replication")
                        .query_async(&mut conn)
                        .await?;
                    let replicas = super::topology::connected_replicas(&info);
                    read_all(&mut conn, &me.prefix, &codec)
                        .await
                        .map(|records| Ok((records, replicas)))
                };
                let read = match tokio::time::timeout(timeout * 2, attempt).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(e)) => Err(FillError::Unreachable(e.to_string())),
                    Err(_) => Err(FillError::Unreachable(format!(
                        "no answer within {:.0?}",
                        timeout * 2
                    ))),
                };
                Ok((found, read))
            })
        })
        .join()
        .unwrap_or_else(|_| Err(FillError::Unreachable("reader thread panicked".into())));
        let scrubbed = |e| match e {
            FillError::Unreachable(why) => FillError::Unreachable(scrub(&why, &self.redact)),
            fatal => fatal,
        };
        let (found, read) = read.map_err(scrubbed)?;
        if let Some((client, addr)) = found {
            self.install(client, addr, false);
        }
        let (records, replicas) = read.map_err(scrubbed)?;
        if replicas > 0 {
            self.replicas_seen.store(true, Ordering::Relaxed);
        }
        let mut n = 0;
        for r in records {
            match r.record {
                Ok(decoded) => {
                    self.note_form(&r.provider, decoded.sealed);
                    self.remember_read(&r.provider, r.version, decoded.token);
                    n += 1;
                }
                Err(e @ (RecordError::NoKey | RecordError::WontOpen)) => {
                    return Err(FillError::Fatal(StoreError::Key(format!(
                        "the record of provider {} in {} (key {}): {e}; nothing in Redis was changed",
                        r.provider,
                        self.describe(),
                        r.key
                    ))))
                }
                Err(e) => {
                    tracing::error!(key = r.key, error = %e, "redis holds a token record that does not parse; ignoring it")
                }
            }
        }
        Ok(n)
    }

    /// One provider's record straight from Redis.
    pub(super) async fn fetch(
        &self,
        provider: &str,
    ) -> Result<Option<(u64, StoredToken)>, StoreError> {
        let codec = self.codec().await?;
        let key = self.token_key(provider);
        let raw: (Option<Zeroizing<String>>, Option<u64>) = self
            .call(|mut c| {
                let key = key.clone();
                async move {
                    let (json, version): (Option<String>, Option<u64>) = ::redis::cmd("HMGET")
                        .arg(&key)
                        .arg("token")
                        .arg("version")
                        .query_async(&mut c)
                        .await?;
                    Ok((json.map(Zeroizing::new), version))
                }
            })
            .await?;
        match raw {
            (Some(json), version) => match codec.decode(json.as_bytes(), &key) {
                Ok(decoded) => {
                    self.note_form(provider, decoded.sealed);
                    Ok(Some((version.unwrap_or(0), decoded.token)))
                }
                Err(e @ (RecordError::NoKey | RecordError::WontOpen)) => {
                    Err(StoreError::Key(format!(
                        "the record of provider {provider} in {} (key {key}): {e}",
                        self.describe()
                    )))
                }
                Err(e) => Err(StoreError::Corrupt {
                    path: format!("redis {} key {key}", self.endpoint),
                    reason: e.to_string(),
                }),
            },
            (None, _) => Ok(None),
        }
    }
}

/// Every `{prefix}token:*` record, decoded with `codec` (a record that
/// does not decode is returned as such: the caller decides).
pub(super) async fn read_all<C: ConnectionLike + Send>(
    conn: &mut C,
    prefix: &str,
    codec: &Codec,
) -> RedisResult<Vec<ReadRecord>> {
    let key_prefix = format!("{prefix}token:");
    let pattern = format!("{}*", glob_escape(&key_prefix));
    let mut keys = BTreeSet::new();
    let mut cursor: u64 = 0;
    // SCAN returns every key in a bounded number of rounds; the cap only
    // guards against a server that misbehaves.
    for _ in 0..100_000 {
        let (next, batch): (u64, Vec<String>) = ::redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(200)
            .query_async(conn)
            .await?;
        keys.extend(batch);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    let mut out = Vec::new();
    for key in keys {
        let Some(provider) = key.strip_prefix(&key_prefix) else {
            continue;
        };
        let (json, version): (Option<String>, Option<u64>) = ::redis::cmd("HMGET")
            .arg(&key)
            .arg("token")
            .arg("version")
            .query_async(conn)
            .await?;
        let Some(json) = json.map(Zeroizing::new) else {
            continue;
        };
        out.push(ReadRecord {
            provider: provider.to_string(),
            record: codec.decode(json.as_bytes(), &key),
            key,
            version: version.unwrap_or(0),
        });
    }
    Ok(out)
}
