//! Tokens shared by several proxy replicas in Redis, with a cross-replica
//! renewal lock.
//!
//! Layout (all keys start with the configured `key_prefix`):
//!
//! - `{prefix}token:{provider}`: a hash with `token` (the JSON of a
//!   [`StoredToken`]) and `version`, a counter bumped by every write.
//! - `{prefix}lock:{provider}`: the renewal lock, `SET NX PX` to a random
//!   value owned by one replica, extended while its renewal is in flight.
//! - `{prefix}changes`: a pub/sub channel; every write publishes the
//!   provider's name so the other replicas take the new token over.
//! - `{prefix}fingerprint_key`, `{prefix}key_check`: see [`keys`]. With
//!   `store.encryption_key`, `token` holds `{"sealed": …}`, sealed to the
//!   record's key name (see [`crate::store::record`]).
//!
//! Requests never touch Redis: [`TokenStore::load`] answers from a local
//! cache, filled at start, updated on every write and on every change
//! message. Only a renewal talks to Redis (lock, re-read, fenced write,
//! unlock), plus one `PING` on the pub/sub connection every few seconds.
//!
//! Writes are Lua scripts so that check and write are one atomic step:
//! a renewal's write lands only if its replica still holds the lock, or,
//! when the lock expired meanwhile, if nobody has written since the lock
//! was taken. A replica that lost its lease therefore never overwrites a
//! newer token. Versions never go backwards: a write takes the larger of
//! the stored and the locally known version, plus one, so a Redis that
//! restarted empty is refilled from the replicas' memory without
//! resurrecting an older token over a newer one.
//!
//! Here the store itself (opening, the [`TokenStore`] side); the Lua
//! scripts in [`scripts`], the local cache and reading records in
//! [`cache`], the change feed in [`feed`], the renewal lock in [`lease`],
//! the store-wide keys in [`keys`], names and URLs in [`names`], the
//! connection to the primary in [`conn`], Sentinel, `WAIT` and the probe
//! in [`topology`].
//!
//! High availability: behind Redis Sentinel the primary is asked of the
//! sentinels and asked again after every failed command. Every write (and
//! the taking of the lock) is followed by `WAIT` for `store.min_replicas`
//! on the same connection; a write they did not acknowledge is kept in
//! memory and written again, and until then no renewal of that provider
//! starts here and the lease that wrote it is held.

mod cache;
mod conn;
mod feed;
mod keys;
mod lease;
mod names;
mod scripts;
mod topology;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::redis::Client;
use futures_util::future::BoxFuture;
use tokio::sync::broadcast;

use super::{FingerprintKey, RenewalLease, StoreError, StoredToken, TokenStore};
use crate::config::{RedisTarget, RedisTimings, SentinelConfig};
use crate::secret::{Secret, SecretKey};
use cache::Cached;
use conn::{connection_manager, Primary};
use keys::Keys;
use names::{describe_url, glob_escape, scrub};
use scripts::SAVE;
pub use topology::probe;
use topology::Acked;

/// Timings of the Redis store. The defaults suit production; tests that
/// drive [`RedisStore`] directly may shorten them.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// How long the renewal lock lives without being extended. A replica
    /// that dies while holding it blocks renewals for at most this long.
    pub lease_ttl: Duration,
    /// How long a renewal waits for another replica's lock before giving up.
    pub lease_wait: Duration,
    /// Connect and response timeout of one Redis command. A command
    /// (one reconnect attempt included) gives up after about twice this.
    pub op_timeout: Duration,
    /// How often the pub/sub connection is checked with a `PING`.
    pub heartbeat: Duration,
    /// `store.min_replicas`: replicas that must acknowledge a write
    /// (`WAIT`); `None`: 1 behind Sentinel or when the primary reports
    /// replicas, else 0.
    pub min_replicas: Option<u32>,
    /// `store.replica_timeout`: how long a write waits for them.
    pub replica_timeout: Duration,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions::from(&RedisTimings::default())
    }
}

impl From<&RedisTimings> for RedisOptions {
    fn from(t: &RedisTimings) -> Self {
        RedisOptions {
            lease_ttl: t.lease_ttl,
            lease_wait: t.lease_wait,
            op_timeout: Duration::from_secs(2),
            heartbeat: Duration::from_secs(5),
            min_replicas: t.min_replicas,
            replica_timeout: t.replica_timeout,
        }
    }
}

pub struct RedisStore {
    shared: Arc<Shared>,
}

struct Shared {
    /// `None` behind Sentinel until the sentinels have named one.
    primary: Mutex<Option<Primary>>,
    /// `store.sentinels` and the rest: the primary is asked of them.
    sentinels: Option<SentinelConfig>,
    /// One sentinel lookup at a time.
    resolving: tokio::sync::Mutex<()>,
    /// How often the primary moved since start.
    failovers: AtomicU64,
    /// The primary reported connected replicas at some point (for the
    /// default of `store.min_replicas`).
    replicas_seen: AtomicBool,
    prefix: String,
    /// `host:port/db` (or the sentinels and master name), for messages.
    /// Never the URL (it may hold a password).
    endpoint: String,
    tls: bool,
    /// Credentials from the URL, scrubbed from any error text we pass on.
    redact: Vec<String>,
    opts: RedisOptions,
    cache: Mutex<HashMap<String, Cached>>,
    /// Set while the change feed (pub/sub) is down or was never up.
    link_error: Mutex<Option<String>>,
    /// Set by a failed command, cleared by the next one that works.
    command_error: Mutex<Option<String>>,
    changes: broadcast::Sender<String>,
    follower_started: AtomicBool,
    /// `store.encryption_key`, if set.
    encryption_key: Option<SecretKey>,
    /// The store-wide keys, once read from Redis.
    keys: Mutex<Keys>,
    /// Providers whose record in Redis is in plain text although a key is
    /// set: written again, sealed, at start.
    plain: Mutex<BTreeSet<String>>,
}

impl RedisStore {
    /// Connects and reads every stored token into the local cache. Must be
    /// called inside a Tokio runtime. A Redis that cannot be reached is
    /// not an error: the proxy starts with the config's seeds, says so
    /// loudly, and takes the stored tokens over once Redis answers (see
    /// [`TokenStore::subscribe`]); an invalid URL is, and so is a store
    /// that the encryption key does not fit (or that is encrypted while no
    /// key is set).
    pub fn open(
        url: &Secret,
        key_prefix: &str,
        encryption_key: Option<&SecretKey>,
        opts: RedisOptions,
    ) -> Result<Self, StoreError> {
        Self::open_target(
            &RedisTarget::Url(url.clone()),
            key_prefix,
            encryption_key,
            opts,
        )
    }

    /// As [`RedisStore::open`], with the primary given by URL or found
    /// through Redis Sentinel (and followed across failovers).
    pub fn open_target(
        target: &RedisTarget,
        key_prefix: &str,
        encryption_key: Option<&SecretKey>,
        opts: RedisOptions,
    ) -> Result<Self, StoreError> {
        let (endpoint, tls, redact, primary, sentinels) = match target {
            RedisTarget::Url(url) => {
                let (endpoint, tls, redact) = describe_url(url.expose());
                let bad_url = |reason: String| StoreError::Read {
                    path: format!("redis {endpoint}"),
                    reason,
                };
                let client = Client::open(url.expose())
                    .map_err(|e| bad_url(format!("invalid store.url: {}", scrub(&e, &redact))))?;
                if tokio::runtime::Handle::try_current().is_err() {
                    return Err(bad_url("the redis store needs an async runtime".into()));
                }
                let conn = connection_manager(&client, &opts).map_err(|e| {
                    bad_url(format!("cannot set up the client: {}", scrub(&e, &redact)))
                })?;
                let addr = endpoint.clone();
                (
                    endpoint.clone(),
                    tls,
                    redact,
                    Some(Primary { client, conn, addr }),
                    None,
                )
            }
            RedisTarget::Sentinel(cfg) => {
                let endpoint = topology::describe_sentinels(cfg);
                let redact = topology::sentinel_secrets(cfg);
                let bad = |reason: String| StoreError::Read {
                    path: format!("redis {endpoint}"),
                    reason,
                };
                topology::sentinel_client(cfg)
                    .map_err(|e| bad(format!("invalid store.sentinels: {}", scrub(&e, &redact))))?;
                if tokio::runtime::Handle::try_current().is_err() {
                    return Err(bad("the redis store needs an async runtime".into()));
                }
                (endpoint, cfg.tls, redact, None, Some(cfg.clone()))
            }
        };
        let (changes, _) = broadcast::channel(64);
        let shared = Arc::new(Shared {
            primary: Mutex::new(primary),
            sentinels,
            resolving: tokio::sync::Mutex::new(()),
            failovers: AtomicU64::new(0),
            replicas_seen: AtomicBool::new(false),
            prefix: key_prefix.to_string(),
            endpoint,
            tls,
            redact,
            opts,
            cache: Mutex::new(HashMap::new()),
            link_error: Mutex::new(None),
            command_error: Mutex::new(None),
            changes,
            follower_started: AtomicBool::new(false),
            encryption_key: encryption_key.cloned(),
            keys: Mutex::new(Keys::Unknown),
            plain: Mutex::new(BTreeSet::new()),
        });
        match shared.initial_fill() {
            Ok(n) => {
                tracing::info!(store = %shared.describe(), tokens = n, "connected to the shared token store")
            }
            Err(cache::FillError::Fatal(e)) => return Err(e),
            Err(cache::FillError::Unreachable(e)) => {
                tracing::error!(
                    store = %shared.describe(),
                    error = %e,
                    "REDIS TOKEN STORE UNREACHABLE AT START: serving with the config's seed tokens; \
                     renewals of single-use refresh tokens are refused until it answers; \
                     stored tokens are taken over as soon as it does"
                );
                *shared.link_error.lock().unwrap() =
                    Some(format!("redis {} unreachable: {e}", shared.endpoint));
            }
        }
        Ok(RedisStore { shared })
    }

    /// How often the primary moved (Sentinel failovers) since start.
    pub fn failovers(&self) -> u64 {
        self.shared.failovers.load(Ordering::Relaxed)
    }

    /// `host:port` of the primary in use, once known.
    pub fn primary(&self) -> Option<String> {
        self.shared
            .primary
            .lock()
            .unwrap()
            .as_ref()
            .map(|p| p.addr.clone())
    }
}

fn random_owner() -> String {
    format!("{:032x}", rand::random::<u128>())
}

impl Shared {
    fn token_key(&self, provider: &str) -> String {
        format!("{}token:{provider}", self.prefix)
    }

    fn lock_key(&self, provider: &str) -> String {
        format!("{}lock:{provider}", self.prefix)
    }

    fn channel(&self) -> String {
        format!("{}changes", self.prefix)
    }

    fn describe(&self) -> String {
        let primary = match (&self.sentinels, &*self.primary.lock().unwrap()) {
            (Some(_), Some(p)) => format!(", primary {}", p.addr),
            (Some(_), None) => ", primary not known yet".to_string(),
            (None, _) => String::new(),
        };
        format!(
            "redis {}{}{primary} (key prefix {:?})",
            self.endpoint,
            if self.tls { " tls" } else { "" },
            self.prefix
        )
    }
}

impl TokenStore for RedisStore {
    fn load(&self, provider: &str) -> Option<StoredToken> {
        self.shared
            .cache
            .lock()
            .unwrap()
            .get(provider)
            .map(|c| c.token.clone())
    }

    fn save<'a>(
        &'a self,
        provider: &'a str,
        token: StoredToken,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let s = &self.shared;
            let key = s.token_key(provider);
            let floor = s.cached_version(provider);
            let codec = match s.codec().await {
                Ok(codec) => codec,
                Err(e) => {
                    s.remember_dirty(provider, floor + 1, token);
                    return Err(e);
                }
            };
            let json = Arc::new(codec.encode(&token, &key));
            let mut eval = ::redis::cmd("EVAL");
            eval.arg(SAVE)
                .arg(1)
                .arg(key)
                .arg(json.as_slice())
                .arg(floor)
                .arg(s.channel())
                .arg(provider);
            match s.write_waited(eval).await {
                Ok((version, acked)) => {
                    s.note_form(provider, codec.sealer.is_some());
                    match acked {
                        Acked::Enough => {
                            s.remember_written(provider, version, token, None);
                            Ok(())
                        }
                        Acked::Short { acked, wanted } => {
                            s.remember_written(provider, version, token, Some(json));
                            Err(s.not_durable(provider, acked, wanted))
                        }
                    }
                }
                Err(e) => {
                    s.remember_dirty(provider, floor + 1, token);
                    Err(e)
                }
            }
        })
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let s = &self.shared;
            if !s.follower_started.load(Ordering::Acquire) {
                // Nobody follows the change feed (an embedding that never
                // subscribed): catch up here instead.
                s.resync().await?;
                s.link_up();
            }
            // Also what the replicas did not acknowledge (a resync leaves
            // a record at the same version as it is).
            s.flush_dirty().await?;
            if s.link_error.lock().unwrap().is_none() && s.command_error.lock().unwrap().is_none() {
                return Ok(());
            }
            // Still marked unreachable: a PING tells whether that is over
            // (the change feed clears its own mark when it reconnects).
            s.call(|mut c| async move {
                ::redis::cmd("PING")
                    .query_async::<::redis::Value>(&mut c)
                    .await
            })
            .await
            .map(|_| ())
        })
    }

    fn pending_error(&self) -> Option<String> {
        let s = &self.shared;
        if let Keys::Refused(why) = &*s.keys.lock().unwrap() {
            return Some(why.clone());
        }
        if let Some(e) = s.link_error.lock().unwrap().clone() {
            return Some(e);
        }
        if let Some(e) = s.command_error.lock().unwrap().clone() {
            return Some(e);
        }
        let dirty: Vec<String> = s
            .cache
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, c)| c.dirty)
            .map(|(p, _)| p.clone())
            .collect();
        if !dirty.is_empty() {
            return Some(format!(
                "newest token of {} only in memory, not yet written to redis {}",
                dirty.join(", "),
                s.endpoint
            ));
        }
        let unacked: Vec<String> = s
            .cache
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, c)| c.unacked.is_some())
            .map(|(p, _)| p.clone())
            .collect();
        (!unacked.is_empty()).then(|| {
            format!(
                "not durable: newest token of {} written to the redis primary but not yet acknowledged by {} replica(s) (store.min_replicas); a failover now could lose it",
                unacked.join(", "),
                s.wanted_replicas()
            )
        })
    }

    fn describe(&self) -> String {
        self.shared.describe()
    }

    fn lease<'a>(
        &'a self,
        provider: &'a str,
    ) -> BoxFuture<'a, Result<Option<Box<dyn RenewalLease>>, StoreError>> {
        Box::pin(async move { lease::acquire(&self.shared, provider).await.map(Some) })
    }

    fn reread<'a>(
        &'a self,
        provider: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredToken>, StoreError>> {
        Box::pin(async move {
            let s = &self.shared;
            match s.fetch(provider).await? {
                Some((version, token)) => {
                    s.remember_read(provider, version, token.clone());
                    Ok(Some(token))
                }
                None => Ok(None),
            }
        })
    }

    /// Starts the change feed on first use (so no change is announced
    /// before anyone listens; the feed's first resync covers the gap
    /// since `open`).
    fn subscribe(&self) -> Option<broadcast::Receiver<String>> {
        let receiver = self.shared.changes.subscribe();
        self.shared.start_follower();
        Some(receiver)
    }

    fn fingerprint_key(&self) -> Option<FingerprintKey> {
        match &*self.shared.keys.lock().unwrap() {
            Keys::Ready(codec) => Some(codec.fingerprint.clone()),
            _ => None,
        }
    }

    fn needs_rewrite(&self, provider: &str) -> bool {
        self.shared.plain.lock().unwrap().contains(provider)
    }

    fn encrypted(&self) -> bool {
        let s = &self.shared;
        s.encryption_key.is_some()
            && s.plain.lock().unwrap().is_empty()
            && !matches!(*s.keys.lock().unwrap(), Keys::Refused(_))
    }
}
