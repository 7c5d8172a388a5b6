//! Where tokens live between restarts. A small trait so the file store,
//! the in-memory store and the shared Redis store are interchangeable.

mod file;
mod folder;
mod memory;
mod record;
mod redis;
mod seal;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

pub use file::FileStore;
pub use memory::MemoryStore;
pub use redis::{probe as probe_redis, RedisOptions, RedisStore};
pub use seal::FingerprintKey;

use crate::config::StoreConfig;
use crate::oauth::TokenSet;
use crate::secret::Secret;

/// Whose tokens a record holds: a digest of the provider's identity and
/// seeds in the config (grant, token URL, client id, username, password,
/// scope, seed tokens). Kept in memory only: it is an unsalted hash of a
/// password. What a store writes is [`FingerprintKey::fingerprint`] of it,
/// keyed with a random key of that store.
#[derive(Clone, PartialEq, Eq)]
pub struct Identity([u8; 32]);

impl Identity {
    /// The digest of these identity fields (in a fixed order).
    pub fn of(fields: &[&str]) -> Identity {
        let mut hasher = Sha256::new();
        hasher.update(b"authproxy-seed-v1\0");
        for (i, field) in fields.iter().enumerate() {
            if i > 0 {
                hasher.update("\u{1f}".as_bytes());
            }
            hasher.update(field.as_bytes());
        }
        Identity(hasher.finalize().into())
    }

    pub(crate) fn digest(&self) -> &[u8; 32] {
        &self.0
    }

    /// The fingerprint versions up to 0.1 stored: the digest itself, in
    /// hex (unsalted, so a reader of the store could test guesses of the
    /// password against it). Only compared with, never written.
    fn legacy_fingerprint(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl Drop for Identity {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Identity([redacted])")
    }
}

/// Who a record belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// Made by this process: the store writes the keyed fingerprint of it.
    Identity(Identity),
    /// Read from a store: the fingerprint as written there.
    Fingerprint(String),
}

/// How a stored record relates to a provider's identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerMatch {
    /// Written for this identity.
    Same,
    /// Written for this identity by an older version (unkeyed
    /// fingerprint): use it, and write it again in the current form.
    Legacy,
    /// Another identity, or seeds that changed since: not ours.
    Other,
}

/// One provider's tokens as kept in a store.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredToken {
    /// Absent when only a refresh token is known (a seed not yet used).
    pub access_token: Option<Secret>,
    pub refresh_token: Option<Secret>,
    pub expires_at: Option<u64>,
    pub token_type: Option<String>,
    pub obtained_at: u64,
    /// Whose tokens these are; a record of another identity (or of seeds
    /// that changed in the config since) is not used: the config's seeds win.
    pub owner: Owner,
    /// The DPoP private key the tokens are bound to (PKCS#8, base64url).
    pub dpop_key: Option<Secret>,
    /// A refresh-token grant sent with `refresh_token` whose answer is not
    /// stored yet: written before the grant goes out, cleared by the
    /// write of its answer (the same record, so one atomic write).
    pub rotation: Option<RotationIntent>,
}

/// An open rotation: the refresh token it spends, as a keyed hash
/// ([`FingerprintKey::token_hash`]; never the token), and when it started.
/// Found at start, it says the provider may have rotated the token while
/// its answer was lost (spec: "A crash in the middle of a rotation").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationIntent {
    pub refresh_hash: String,
    /// Unix seconds: when the first grant with this refresh token was
    /// about to be sent (a retry keeps the first time).
    pub started_at: u64,
}

impl StoredToken {
    pub fn new(token: &TokenSet, identity: &Identity) -> Self {
        StoredToken {
            access_token: Some(token.access_token.clone()),
            refresh_token: token.refresh_token.clone(),
            expires_at: token.expires_at,
            token_type: token.token_type.clone(),
            obtained_at: token.obtained_at,
            owner: Owner::Identity(identity.clone()),
            dpop_key: None,
            rotation: None,
        }
    }

    /// Whether this record belongs to `identity`; `key` is the store's
    /// fingerprint key (see [`TokenStore::fingerprint_key`]).
    pub fn owner_match(&self, identity: &Identity, key: Option<&FingerprintKey>) -> OwnerMatch {
        match &self.owner {
            Owner::Identity(i) if i == identity => OwnerMatch::Same,
            Owner::Identity(_) => OwnerMatch::Other,
            Owner::Fingerprint(stored) => {
                let stored = stored.as_bytes();
                if key.is_some_and(|k| bool::from(k.fingerprint(identity).as_bytes().ct_eq(stored)))
                {
                    OwnerMatch::Same
                } else if bool::from(identity.legacy_fingerprint().as_bytes().ct_eq(stored)) {
                    OwnerMatch::Legacy
                } else {
                    OwnerMatch::Other
                }
            }
        }
    }

    /// The same tokens, times and open rotation (whoever they are recorded
    /// for).
    pub fn same_tokens(&self, other: &StoredToken) -> bool {
        self.access_token == other.access_token
            && self.refresh_token == other.refresh_token
            && self.expires_at == other.expires_at
            && self.token_type == other.token_type
            && self.obtained_at == other.obtained_at
            && self.dpop_key == other.dpop_key
            && self.rotation == other.rotation
    }
}

/// Why the store could not be opened or written. Names the file, never a token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("token store {path} is unreadable: {reason}. Fix or move the file; deleting it loses any rotated refresh token (you would need to bootstrap again from a new seed)")]
    Corrupt { path: String, reason: String },
    #[error("cannot read token store {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("cannot write token store {path}: {reason}")]
    Write { path: String, reason: String },
    #[error("token store kind `{0}` is not available in this build")]
    Unsupported(&'static str),
    /// The store's folder lets others replace the tokens.
    #[error("{0}")]
    Unsafe(String),
    /// The store is encrypted and the configured key does not open it, or
    /// no key is configured. Names the store, never a key.
    #[error("{0}")]
    Key(String),
    /// A shared store cannot be reached (e.g. Redis down).
    #[error("shared token store unavailable: {0}")]
    Unavailable(String),
    /// The renewal lease expired before the write: another replica may have
    /// renewed since, and its token must not be overwritten.
    #[error(
        "renewal lease for provider {0} was lost before the write; not overwriting a newer token"
    )]
    LeaseLost(String),
    /// Written to the Redis primary, but fewer replicas than
    /// `store.min_replicas` acknowledged it within `store.replica_timeout`:
    /// a failover could still lose it.
    #[error("shared token store not durable: {0}")]
    NotDurable(String),
}

impl StoreError {
    /// The `outcome` label of a refresh this error refused to start
    /// (`authproxy_token_requests_total`).
    pub fn refusal_outcome(&self) -> &'static str {
        match self {
            StoreError::NotDurable(_) => "refused_store_not_durable",
            _ => "refused_store_unavailable",
        }
    }
}

/// A cross-replica renewal lease, from stores shared by several proxies.
/// While it is held no other replica renews the provider's token; the store
/// keeps it alive (extends it) until it is released or dropped.
pub trait RenewalLease: Send {
    /// Writes the token only if this lease is still held (fencing).
    fn save(&mut self, token: StoredToken) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Lets the lease go (best effort; it also expires on its own).
    fn release(self: Box<Self>) -> BoxFuture<'static, ()>;
}

/// A durable home for tokens. `save` returns only once the token is as
/// durable as the store can make it.
pub trait TokenStore: Send + Sync {
    fn load(&self, provider: &str) -> Option<StoredToken>;
    fn save<'a>(
        &'a self,
        provider: &'a str,
        token: StoredToken,
    ) -> BoxFuture<'a, Result<(), StoreError>>;
    /// Writes again whatever a failed `save` left only in memory.
    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>>;
    /// The last write error, if the newest tokens are not yet durable.
    fn pending_error(&self) -> Option<String>;
    /// e.g. `file state/tokens.json`, for `check` and the logs.
    fn describe(&self) -> String;

    /// Shared stores: takes the provider's cross-replica renewal lease,
    /// waiting (bounded) while another replica holds it. `Ok(None)` from
    /// stores only this process uses: the in-process single flight is enough.
    fn lease<'a>(
        &'a self,
        _provider: &'a str,
    ) -> BoxFuture<'a, Result<Option<Box<dyn RenewalLease>>, StoreError>> {
        Box::pin(async { Ok(None) })
    }

    /// Re-reads a provider's record, bypassing any local cache (shared
    /// stores: another replica may have written a newer token).
    fn reread<'a>(
        &'a self,
        provider: &'a str,
    ) -> BoxFuture<'a, Result<Option<StoredToken>, StoreError>> {
        let record = self.load(provider);
        Box::pin(async move { Ok(record) })
    }

    /// Shared stores: names of providers whose record another replica
    /// changed, so the local copy can be replaced without polling.
    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        None
    }

    /// The key the store's identity fingerprints are made with, once known
    /// (a shared store learns it when it first reaches its server).
    fn fingerprint_key(&self) -> Option<FingerprintKey> {
        None
    }

    /// Whether the provider's record is not yet in the form this store
    /// writes (in plain text while a key is set): it is written again at
    /// start (see `OAuthProvider::upgrade_stored_record`).
    fn needs_rewrite(&self, _provider: &str) -> bool {
        false
    }

    /// Whether the tokens are encrypted at rest (every record, as far as
    /// this process knows).
    fn encrypted(&self) -> bool {
        false
    }

    /// Problems worth an operator's attention that do not stop the proxy
    /// (a group-writable store folder), for the log and status.
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }
}

/// Opens the store the config asks for. The Redis store needs to be
/// opened inside a Tokio runtime (it starts background tasks).
pub fn open(cfg: &StoreConfig) -> Result<Arc<dyn TokenStore>, StoreError> {
    match cfg {
        StoreConfig::File {
            path,
            encryption_key,
        } => Ok(Arc::new(FileStore::open(path, encryption_key.as_ref())?)),
        StoreConfig::Memory => Ok(Arc::new(MemoryStore::default())),
        StoreConfig::Redis {
            target,
            key_prefix,
            encryption_key,
            timings,
        } => Ok(Arc::new(RedisStore::open_target(
            target,
            key_prefix,
            encryption_key.as_ref(),
            RedisOptions::from(timings),
        )?)),
    }
}
