//! The local cache of every provider's record (requests read only this),
//! and reading records from Redis into it.

use std::collections::BTreeSet;
use std::sync::Arc;

use ::redis::aio::ConnectionLike;
use ::redis::RedisResult;

use super::{glob_escape, scrub, Shared};
use crate::store::{StoreError, StoredToken};

/// One provider's record as this replica last saw or wrote it.
#[derive(Clone)]
pub(super) struct Cached {
    pub(super) version: u64,
    pub(super) token: StoredToken,
    /// Written only here (Redis was unreachable, or the lease was lost):
    /// `flush` and the resync after a reconnect try again, unless Redis has
    /// a newer version by then.
    pub(super) dirty: bool,
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
            Some(c) if c.version == version && c.token == token => {
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
                    },
                );
                true
            }
        }
    }

    pub(super) fn remember_written(&self, provider: &str, version: u64, token: StoredToken) {
        self.cache.lock().unwrap().insert(
            provider.to_string(),
            Cached {
                version,
                token,
                dirty: false,
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
            },
        );
    }

    pub(super) fn initial_fill(self: &Arc<Self>) -> Result<usize, String> {
        // `open` is synchronous (it runs once, before serving) but the
        // client is async: read on a helper thread with its own runtime.
        let client = self.client.clone();
        let prefix = self.prefix.clone();
        let timeout = self.opts.op_timeout;
        let read = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let attempt = async {
                    let mut conn = client.get_multiplexed_async_connection().await?;
                    read_all(&mut conn, &prefix).await
                };
                match tokio::time::timeout(timeout * 2, attempt).await {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(_) => Err(format!("no answer within {:.0?}", timeout * 2)),
                }
            })
        })
        .join()
        .unwrap_or_else(|_| Err("reader thread panicked".into()));
        let records = read.map_err(|e| scrub(&e, &self.redact))?;
        let n = records.len();
        for (provider, version, token) in records {
            self.remember_read(&provider, version, token);
        }
        Ok(n)
    }

    /// One provider's record straight from Redis.
    pub(super) async fn fetch(
        &self,
        provider: &str,
    ) -> Result<Option<(u64, StoredToken)>, StoreError> {
        let key = self.token_key(provider);
        let raw: (Option<String>, Option<u64>) = self
            .call(|mut c| {
                let key = key.clone();
                async move {
                    ::redis::cmd("HMGET")
                        .arg(&key)
                        .arg("token")
                        .arg("version")
                        .query_async(&mut c)
                        .await
                }
            })
            .await?;
        match raw {
            (Some(json), version) => match serde_json::from_str::<StoredToken>(&json) {
                Ok(token) => Ok(Some((version.unwrap_or(0), token))),
                Err(e) => Err(StoreError::Corrupt {
                    path: format!("redis {} key {key}", self.endpoint),
                    reason: format!("not a token record ({:?} error)", e.classify()),
                }),
            },
            (None, _) => Ok(None),
        }
    }
}

/// Every `{prefix}token:*` record: (provider, version, token). Records
/// that do not parse are skipped with an error in the log.
pub(super) async fn read_all<C: ConnectionLike + Send>(
    conn: &mut C,
    prefix: &str,
) -> RedisResult<Vec<(String, u64, StoredToken)>> {
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
        let Some(json) = json else { continue };
        match serde_json::from_str::<StoredToken>(&json) {
            Ok(token) => out.push((provider.to_string(), version.unwrap_or(0), token)),
            Err(e) => {
                tracing::error!(key, error = ?e.classify(), "redis holds a token record that does not parse; ignoring it")
            }
        }
    }
    Ok(out)
}
