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

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, RedisError, RedisResult, Script};
use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use tokio::sync::broadcast;

use super::{RenewalLease, StoreError, StoredToken, TokenStore};
use crate::secret::Secret;

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
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            lease_ttl: Duration::from_secs(10),
            lease_wait: Duration::from_secs(30),
            op_timeout: Duration::from_secs(2),
            heartbeat: Duration::from_secs(5),
        }
    }
}

/// One provider's record as this replica last saw or wrote it.
#[derive(Clone)]
struct Cached {
    version: u64,
    token: StoredToken,
    /// Written only here (Redis was unreachable, or the lease was lost):
    /// `flush` and the resync after a reconnect try again, unless Redis has
    /// a newer version by then.
    dirty: bool,
}

pub struct RedisStore {
    shared: Arc<Shared>,
}

struct Shared {
    client: Client,
    /// Reconnects by itself; replaced when it is stuck on a non-I/O error.
    conn: Mutex<ConnectionManager>,
    prefix: String,
    /// `host:port/db`, for messages. Never the URL (it may hold a password).
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
}

/// Takes the lock if it is free; answers `{1, version}` (the token's
/// version when the lock was taken: the fencing token) or `{0, pttl}`.
static ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, tonumber(redis.call('HGET', KEYS[2], 'version') or '0')}
end
return {0, redis.call('PTTL', KEYS[1])}
",
    )
});

/// Extends the lock if it is still ours.
static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
",
    )
});

/// Deletes the lock if it is still ours.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
",
    )
});

/// The fenced write of a renewal: only while the lock is ours, or, if it
/// expired and nobody took it, while the version is still the one seen
/// when it was taken. Answers the new version, or 0 when refused.
static FENCED_SAVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local holder = redis.call('GET', KEYS[2])
local v = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if holder ~= ARGV[3] and (holder or v ~= tonumber(ARGV[4])) then
  return 0
end
local n = math.max(v, tonumber(ARGV[2])) + 1
redis.call('HSET', KEYS[1], 'token', ARGV[1], 'version', n)
redis.call('PUBLISH', ARGV[5], ARGV[6])
return n
",
    )
});

/// A write outside a renewal (a token pasted by hand, a login without the
/// lock). Answers the new version.
static SAVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local v = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
local n = math.max(v, tonumber(ARGV[2])) + 1
redis.call('HSET', KEYS[1], 'token', ARGV[1], 'version', n)
redis.call('PUBLISH', ARGV[3], ARGV[4])
return n
",
    )
});

/// Writes a record kept in memory back, only if Redis has nothing newer
/// (after a Redis restart without persistence, or a failed write).
/// Answers 0 when written, else the stored version.
static RESTORE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local v = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if v >= tonumber(ARGV[2]) then
  return v
end
redis.call('HSET', KEYS[1], 'token', ARGV[1], 'version', ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 0
",
    )
});

impl RedisStore {
    /// Connects and reads every stored token into the local cache. Must be
    /// called inside a Tokio runtime. A Redis that cannot be reached is
    /// not an error: the proxy starts with the config's seeds, says so
    /// loudly, and takes the stored tokens over once Redis answers (see
    /// [`TokenStore::subscribe`]); an invalid URL is.
    pub fn open(url: &Secret, key_prefix: &str, opts: RedisOptions) -> Result<Self, StoreError> {
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
        let conn = connection_manager(&client, &opts)
            .map_err(|e| bad_url(format!("cannot set up the client: {}", scrub(&e, &redact))))?;
        let (changes, _) = broadcast::channel(64);
        let shared = Arc::new(Shared {
            client,
            conn: Mutex::new(conn),
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
        });
        match shared.initial_fill() {
            Ok(n) => {
                tracing::info!(store = %shared.describe(), tokens = n, "connected to the shared token store")
            }
            Err(e) => {
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
}

fn connection_manager(client: &Client, opts: &RedisOptions) -> RedisResult<ConnectionManager> {
    // Few, quick reconnect attempts per command: when Redis is down a
    // renewal should be refused within seconds, not after a long backoff.
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(opts.op_timeout))
        .set_response_timeout(Some(opts.op_timeout))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_lazy_with_config(client.clone(), config)
}

/// `host:port/db` and whether TLS is used, plus the credentials to scrub
/// from error messages. Parsed leniently: the config already checked it.
fn describe_url(url: &str) -> (String, bool, Vec<String>) {
    let Ok(parsed) = url::Url::parse(url) else {
        return ("(unparsable url)".into(), false, Vec::new());
    };
    let host = parsed.host_str().unwrap_or("localhost");
    let port = parsed.port().unwrap_or(6379);
    let db = parsed.path().trim_start_matches('/');
    let db = if db.is_empty() { "0" } else { db };
    let mut redact = Vec::new();
    if let Some(password) = parsed.password().filter(|p| !p.is_empty()) {
        redact.push(password.to_string());
        let decoded = percent_encoding::percent_decode_str(password)
            .decode_utf8_lossy()
            .into_owned();
        if decoded != password {
            redact.push(decoded);
        }
    }
    (
        format!("{host}:{port}/{db}"),
        parsed.scheme() == "rediss",
        redact,
    )
}

/// An error's text with any credential from the URL cut out.
fn scrub(e: &dyn std::fmt::Display, redact: &[String]) -> String {
    let mut text = e.to_string();
    for secret in redact {
        text = text.replace(secret.as_str(), "[redacted]");
    }
    text
}

/// `\`-escapes glob characters so a prefix matches only itself in `SCAN`.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
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
        format!(
            "redis {}{} (key prefix {:?})",
            self.endpoint,
            if self.tls { " tls" } else { "" },
            self.prefix
        )
    }

    fn unavailable(&self, e: &dyn std::fmt::Display) -> StoreError {
        StoreError::Unavailable(format!(
            "redis {} unreachable: {}",
            self.endpoint,
            scrub(e, &self.redact)
        ))
    }

    /// Runs one operation on the shared connection, bounded in time, and
    /// keeps the health state up to date.
    async fn call<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let conn = self.conn.lock().unwrap().clone();
        // The manager's own timeouts fire first (and make it reconnect);
        // this outer bound only catches what they do not cover.
        let bound = self.opts.op_timeout * 2 + Duration::from_millis(500);
        let result = tokio::time::timeout(bound, op(conn)).await;
        match result {
            Ok(Ok(v)) => {
                if self.command_error.lock().unwrap().take().is_some() {
                    tracing::info!(store = %self.describe(), "redis answers again");
                }
                Ok(v)
            }
            Ok(Err(e)) => {
                if !e.is_io_error() {
                    // The manager reconnects on I/O errors only; anything
                    // else (TLS, auth during a reconnect) could leave it
                    // stuck, so start over with a fresh one.
                    if let Ok(fresh) = connection_manager(&self.client, &self.opts) {
                        *self.conn.lock().unwrap() = fresh;
                    }
                }
                Err(self.command_failed(&e))
            }
            Err(_) => Err(self.command_failed(&format!("no answer within {bound:.0?}"))),
        }
    }

    fn command_failed(&self, e: &dyn std::fmt::Display) -> StoreError {
        let err = self.unavailable(e);
        let mut slot = self.command_error.lock().unwrap();
        if slot.is_none() {
            tracing::error!(store = %self.describe(), error = %err, "redis command failed");
        }
        *slot = Some(err.to_string());
        err
    }

    fn cached_version(&self, provider: &str) -> u64 {
        self.cache
            .lock()
            .unwrap()
            .get(provider)
            .map_or(0, |c| c.version)
    }

    /// Takes a record read from Redis into the cache unless ours has a
    /// higher version (Redis wins ties: a dirty copy at the same version
    /// lost the race). Returns whether the cached token changed.
    fn remember_read(&self, provider: &str, version: u64, token: StoredToken) -> bool {
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

    fn remember_written(&self, provider: &str, version: u64, token: StoredToken) {
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
    fn remember_dirty(&self, provider: &str, version: u64, token: StoredToken) {
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

    fn initial_fill(self: &Arc<Self>) -> Result<usize, String> {
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
    async fn fetch(&self, provider: &str) -> Result<Option<(u64, StoredToken)>, StoreError> {
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

    /// Called for every change message: takes a newer record over and
    /// passes the provider's name on.
    async fn on_change(&self, provider: &str) {
        match self.fetch(provider).await {
            Ok(Some((version, token))) => {
                if self.remember_read(provider, version, token) {
                    let _ = self.changes.send(provider.to_string());
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(provider, error = %e, "cannot read a changed token from redis")
            }
        }
    }

    /// After (re)connecting: take over what other replicas wrote while we
    /// did not listen, and write back what only we have (Redis restarted
    /// empty, or our own write failed).
    async fn resync(&self) -> Result<(), StoreError> {
        let prefix = self.prefix.clone();
        let stored = self
            .call(|mut c| async move { read_all(&mut c, &prefix).await })
            .await?;
        let mut seen = BTreeSet::new();
        for (provider, version, token) in stored {
            seen.insert(provider.clone());
            let ours = self.cache.lock().unwrap().get(&provider).cloned();
            match ours {
                Some(c) if c.version > version => self.restore(&provider, c).await?,
                _ => {
                    if self.remember_read(&provider, version, token) {
                        tracing::info!(provider, "token changed in redis while this replica was not listening; taking it over");
                        let _ = self.changes.send(provider);
                    }
                }
            }
        }
        let missing: Vec<(String, Cached)> = self
            .cache
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| !seen.contains(*p))
            .map(|(p, c)| (p.clone(), c.clone()))
            .collect();
        for (provider, cached) in missing {
            tracing::warn!(provider, "token missing in redis (restarted without persistence?); writing back the one in memory");
            self.restore(&provider, cached).await?;
        }
        Ok(())
    }

    /// Writes a cached record back unless Redis has a newer one, which is
    /// then taken over instead.
    async fn restore(&self, provider: &str, cached: Cached) -> Result<(), StoreError> {
        let json = serde_json::to_string(&cached.token).expect("token record serialises");
        let key = self.token_key(provider);
        let channel = self.channel();
        let name = provider.to_string();
        let version = cached.version;
        let answer: u64 = self
            .call(|mut c| async move {
                RESTORE
                    .key(key)
                    .arg(json)
                    .arg(version)
                    .arg(channel)
                    .arg(name)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        if answer == 0 {
            if let Some(c) = self.cache.lock().unwrap().get_mut(provider) {
                if c.version == version {
                    c.dirty = false;
                }
            }
            tracing::info!(provider, version, "token written back to redis");
            return Ok(());
        }
        // Redis has a record at least as new: it wins.
        if let Some((v, token)) = self.fetch(provider).await? {
            if self.remember_read(provider, v, token) {
                let _ = self.changes.send(provider.to_string());
            }
        }
        Ok(())
    }

    async fn flush_dirty(&self) -> Result<(), StoreError> {
        let dirty: Vec<(String, Cached)> = self
            .cache
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, c)| c.dirty)
            .map(|(p, c)| (p.clone(), c.clone()))
            .collect();
        for (provider, cached) in dirty {
            self.restore(&provider, cached).await?;
        }
        Ok(())
    }

    fn link_down(&self, reason: String) {
        let mut slot = self.link_error.lock().unwrap();
        if slot.is_none() {
            tracing::error!(
                store = %self.describe(),
                error = %reason,
                "REDIS TOKEN STORE UNREACHABLE: tokens in memory are still served; renewals of \
                 single-use refresh tokens are refused until it is back"
            );
        }
        *slot = Some(format!("redis {} unreachable: {reason}", self.endpoint));
    }

    fn link_up(&self) {
        if self.link_error.lock().unwrap().take().is_some() {
            tracing::info!(store = %self.describe(), "redis token store reachable again; in sync");
        }
    }

    fn start_follower(self: &Arc<Self>) {
        if self.follower_started.swap(true, Ordering::AcqRel) {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(follow_changes(Arc::downgrade(self)));
            }
            Err(_) => self.follower_started.store(false, Ordering::Release),
        }
    }
}

/// Every `{prefix}token:*` record: (provider, version, token). Records
/// that do not parse are skipped with an error in the log.
async fn read_all<C: ConnectionLike + Send>(
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

/// The change feed: subscribes to `{prefix}changes`, resyncs after every
/// (re)connect, passes changed provider names on, and reconnects with
/// backoff. Ends when the store is dropped.
async fn follow_changes(weak: Weak<Shared>) {
    const MIN_BACKOFF: Duration = Duration::from_millis(100);
    const MAX_BACKOFF: Duration = Duration::from_secs(5);
    let mut backoff = MIN_BACKOFF;
    loop {
        let Some(shared) = weak.upgrade() else { return };
        let client = shared.client.clone();
        let channel = shared.channel();
        let subscribe = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, RedisError>(pubsub)
        };
        let connected = match tokio::time::timeout(shared.opts.op_timeout, subscribe).await {
            Ok(Ok(pubsub)) => match shared.resync().await {
                // Subscribed first, then read: nothing written in between
                // can be missed.
                Ok(()) => Ok(pubsub),
                Err(StoreError::Unavailable(m)) => Err(m
                    .strip_prefix(&format!("redis {} unreachable: ", shared.endpoint))
                    .map(str::to_string)
                    .unwrap_or(m)),
                Err(e) => Err(e.to_string()),
            },
            Ok(Err(e)) => Err(scrub(&e, &shared.redact)),
            Err(_) => Err(format!("no answer within {:.0?}", shared.opts.op_timeout)),
        };
        let pubsub = match connected {
            Ok(p) => p,
            Err(reason) => {
                shared.link_down(reason);
                drop(shared);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        shared.link_up();
        backoff = MIN_BACKOFF;
        let heartbeat_every = shared.opts.heartbeat;
        let op_timeout = shared.opts.op_timeout;
        drop(shared);

        let (mut sink, mut stream) = pubsub.split();
        let mut heartbeat = tokio::time::interval(heartbeat_every);
        heartbeat.tick().await;
        let reason = loop {
            tokio::select! {
                msg = stream.next() => {
                    let Some(msg) = msg else { break "connection closed".to_string() };
                    let Some(shared) = weak.upgrade() else { return };
                    if let Ok(provider) = msg.get_payload::<String>() {
                        shared.on_change(&provider).await;
                    }
                }
                _ = heartbeat.tick() => {
                    if weak.strong_count() == 0 {
                        return;
                    }
                    match tokio::time::timeout(op_timeout, sink.ping::<::redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => break e.to_string(),
                        Err(_) => break format!("no answer to PING within {op_timeout:.0?}"),
                    }
                }
            }
        };
        if let Some(shared) = weak.upgrade() {
            shared.link_down(scrub(&reason, &shared.redact));
        }
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
            let json = serde_json::to_string(&token).expect("token record serialises");
            let key = s.token_key(provider);
            let floor = s.cached_version(provider);
            let channel = s.channel();
            let name = provider.to_string();
            let written: Result<u64, StoreError> = s
                .call(|mut c| async move {
                    SAVE.key(key)
                        .arg(json)
                        .arg(floor)
                        .arg(channel)
                        .arg(name)
                        .invoke_async(&mut c)
                        .await
                })
                .await;
            match written {
                Ok(version) => {
                    s.remember_written(provider, version, token);
                    Ok(())
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
            } else {
                s.flush_dirty().await?;
            }
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
        (!dirty.is_empty()).then(|| {
            format!(
                "newest token of {} only in memory, not yet written to redis {}",
                dirty.join(", "),
                s.endpoint
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
        Box::pin(async move {
            let s = &self.shared;
            let owner = random_owner();
            let lock = s.lock_key(provider);
            let key = s.token_key(provider);
            let ttl_ms = s.opts.lease_ttl.as_millis() as u64;
            let started = tokio::time::Instant::now();
            let deadline = started + s.opts.lease_wait;
            let mut pause = Duration::from_millis(5);
            let mut waited = false;
            loop {
                let (lock2, key2, owner2) = (lock.clone(), key.clone(), owner.clone());
                let answer: Vec<i64> = s
                    .call(|mut c| async move {
                        ACQUIRE
                            .key(lock2)
                            .key(key2)
                            .arg(owner2)
                            .arg(ttl_ms)
                            .invoke_async(&mut c)
                            .await
                    })
                    .await?;
                let (taken, value) = (
                    answer.first().copied().unwrap_or(0),
                    answer.get(1).copied().unwrap_or(0),
                );
                if taken == 1 {
                    if waited {
                        tracing::debug!(
                            provider,
                            waited_ms = started.elapsed().as_millis() as u64,
                            "took the renewal lock after another replica"
                        );
                    }
                    return Ok(Some(Box::new(RedisLease::new(
                        s.clone(),
                        provider,
                        owner,
                        value.max(0) as u64,
                    )) as Box<dyn RenewalLease>));
                }
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    return Err(StoreError::Unavailable(format!(
                        "another replica has held the renewal lock of provider {provider} for over {:.0?}; gave up waiting",
                        s.opts.lease_wait
                    )));
                }
                if !waited {
                    tracing::debug!(
                        provider,
                        "another replica is renewing; waiting for its token"
                    );
                    waited = true;
                }
                // Short, growing pauses: the holder usually finishes within
                // one token request; never sleep past the lock's expiry.
                let mut sleep = pause;
                if value > 0 {
                    sleep = sleep.min(Duration::from_millis(value as u64 + 1));
                }
                sleep = sleep.min(deadline - now);
                tokio::time::sleep(sleep).await;
                pause = (pause * 2).min(Duration::from_millis(100));
            }
        })
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
}

/// The renewal lock of one provider, held by this replica and extended in
/// the background until released or dropped.
struct RedisLease {
    shared: Arc<Shared>,
    provider: String,
    owner: String,
    /// The token's version when the lock was taken (the fencing token).
    version_at_take: u64,
    keeper: tokio::task::JoinHandle<()>,
    released: bool,
}

impl RedisLease {
    fn new(shared: Arc<Shared>, provider: &str, owner: String, version_at_take: u64) -> Self {
        let keeper = tokio::spawn(keep_alive(
            Arc::downgrade(&shared),
            provider.to_string(),
            shared.lock_key(provider),
            owner.clone(),
        ));
        RedisLease {
            shared,
            provider: provider.to_string(),
            owner,
            version_at_take,
            keeper,
            released: false,
        }
    }
}

/// Extends the lock every third of its lifetime while the renewal runs.
async fn keep_alive(weak: Weak<Shared>, provider: String, lock: String, owner: String) {
    let Some(ttl) = weak.upgrade().map(|s| s.opts.lease_ttl) else {
        return;
    };
    let ttl_ms = ttl.as_millis() as u64;
    loop {
        tokio::time::sleep(ttl / 3).await;
        let Some(shared) = weak.upgrade() else { return };
        let (lock2, owner2) = (lock.clone(), owner.clone());
        let extended: Result<i64, StoreError> = shared
            .call(|mut c| async move {
                EXTEND
                    .key(lock2)
                    .arg(owner2)
                    .arg(ttl_ms)
                    .invoke_async(&mut c)
                    .await
            })
            .await;
        match extended {
            Ok(1) => {}
            Ok(_) => {
                tracing::warn!(provider, "renewal lock lost (expired) while renewing; the result is written only if no other replica wrote since");
                return;
            }
            Err(e) => {
                tracing::warn!(provider, error = %e, "cannot extend the renewal lock; retrying")
            }
        }
    }
}

async fn release_lock(shared: Arc<Shared>, lock: String, owner: String) {
    let result: Result<i64, StoreError> = shared
        .call(|mut c| async move { RELEASE.key(lock).arg(owner).invoke_async(&mut c).await })
        .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, "cannot release the renewal lock; it expires on its own");
    }
}

impl RenewalLease for RedisLease {
    fn save(&mut self, token: StoredToken) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let s = &self.shared;
            let json = serde_json::to_string(&token).expect("token record serialises");
            let key = s.token_key(&self.provider);
            let lock = s.lock_key(&self.provider);
            let floor = s.cached_version(&self.provider);
            let owner = self.owner.clone();
            let at_take = self.version_at_take;
            let channel = s.channel();
            let name = self.provider.clone();
            let written: Result<u64, StoreError> = s
                .call(|mut c| async move {
                    FENCED_SAVE
                        .key(key)
                        .key(lock)
                        .arg(json)
                        .arg(floor)
                        .arg(owner)
                        .arg(at_take)
                        .arg(channel)
                        .arg(name)
                        .invoke_async(&mut c)
                        .await
                })
                .await;
            match written {
                // Refused or unknown outcome: ours is kept in memory at
                // the version right after the one the lock was taken at,
                // so any write made since (another replica's, or this very
                // one if only its answer was lost) wins over it; it is
                // written later only if Redis has nothing that new (e.g.
                // it restarted without persistence).
                Ok(0) => {
                    s.remember_dirty(&self.provider, at_take + 1, token);
                    Err(StoreError::LeaseLost(self.provider.clone()))
                }
                Ok(version) => {
                    s.remember_written(&self.provider, version, token);
                    Ok(())
                }
                Err(e) => {
                    s.remember_dirty(&self.provider, at_take + 1, token);
                    Err(e)
                }
            }
        })
    }

    fn release(mut self: Box<Self>) -> BoxFuture<'static, ()> {
        self.released = true;
        self.keeper.abort();
        let shared = self.shared.clone();
        let lock = shared.lock_key(&self.provider);
        let owner = self.owner.clone();
        Box::pin(release_lock(shared, lock, owner))
    }
}

impl Drop for RedisLease {
    fn drop(&mut self) {
        self.keeper.abort();
        if !self.released {
            // Dropped without `release` (the renewal was cancelled): let
            // the lock go in the background rather than block others for
            // a whole lease.
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                let lock = self.shared.lock_key(&self.provider);
                handle.spawn(release_lock(self.shared.clone(), lock, self.owner.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_never_shows_credentials() {
        let (endpoint, tls, redact) =
            describe_url("rediss://user:p%40ss-SECRET@cache.example:6380/2");
        assert_eq!(endpoint, "cache.example:6380/2");
        assert!(tls);
        let text = scrub(
            &"AUTH failed for user with p@ss-SECRET and p%40ss-SECRET",
            &redact,
        );
        assert!(!text.contains("SECRET"), "{text}");
        assert!(text.contains("for user with"), "{text}");
        let (endpoint, tls, _) = describe_url("redis://127.0.0.1");
        assert_eq!(endpoint, "127.0.0.1:6379/0");
        assert!(!tls);
    }

    #[test]
    fn glob_characters_in_the_prefix_are_escaped() {
        assert_eq!(glob_escape("a*b?[c]\\:"), "a\\*b\\?\\[c\\]\\\\:");
    }
}
