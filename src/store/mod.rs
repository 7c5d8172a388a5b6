//! Where tokens live between restarts. A small trait so the file store,
//! the in-memory store and the shared Redis store are interchangeable.

mod file;
mod memory;
mod redis;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

pub use file::FileStore;
pub use memory::MemoryStore;
pub use redis::{RedisOptions, RedisStore};

use crate::config::StoreConfig;
use crate::oauth::TokenSet;
use crate::secret::Secret;

/// One provider's tokens as written to the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredToken {
    /// Absent when only a refresh token is known (a seed not yet used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    #[serde(default)]
    pub obtained_at: u64,
    /// Fingerprint of the provider's identity and seeds in the config when
    /// this was written; a different one at start means the config changed
    /// and its seeds win.
    pub seed_fingerprint: String,
}

impl StoredToken {
    pub fn new(token: &TokenSet, seed_fingerprint: &str) -> Self {
        StoredToken {
            access_token: Some(token.access_token.clone()),
            refresh_token: token.refresh_token.clone(),
            expires_at: token.expires_at,
            token_type: token.token_type.clone(),
            obtained_at: token.obtained_at,
            seed_fingerprint: seed_fingerprint.to_string(),
        }
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
    /// A shared store cannot be reached (e.g. Redis down).
    #[error("shared token store unavailable: {0}")]
    Unavailable(String),
    /// The renewal lease expired before the write: another replica may have
    /// renewed since, and its token must not be overwritten.
    #[error(
        "renewal lease for provider {0} was lost before the write; not overwriting a newer token"
    )]
    LeaseLost(String),
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
}

/// Opens the store the config asks for. The Redis store needs to be
/// opened inside a Tokio runtime (it starts background tasks).
pub fn open(cfg: &StoreConfig) -> Result<Arc<dyn TokenStore>, StoreError> {
    match cfg {
        StoreConfig::File { path } => Ok(Arc::new(FileStore::open(path)?)),
        StoreConfig::Memory => Ok(Arc::new(MemoryStore::default())),
        StoreConfig::Redis { url, key_prefix } => Ok(Arc::new(RedisStore::open(
            url,
            key_prefix,
            RedisOptions::default(),
        )?)),
    }
}
