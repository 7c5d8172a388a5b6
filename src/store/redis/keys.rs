//! The store-wide keys kept in Redis next to the records:
//!
//! - `{prefix}fingerprint_key`: the random key of the identity
//!   fingerprints, set once by whichever replica comes first (`SET NX`);
//! - `{prefix}key_check`: with `store.encryption_key`, a value only that
//!   key opens, also `SET NX`. A replica with another key, or without one,
//!   finds out before it reads a record, and refuses to start (or, when
//!   Redis was unreachable at its start, refuses every store operation).

use std::sync::{Arc, LazyLock};

use ::redis::Script;

use super::Shared;
use crate::store::record::Codec;
use crate::store::seal::{FingerprintKey, Sealer};
use crate::store::StoreError;

/// Sets the fingerprint key and (if ARGV[2] is not empty) the key check
/// value unless they exist; answers both as stored (`''` for none).
pub(super) static INIT_KEYS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('SET', KEYS[1], ARGV[1], 'NX')
if ARGV[2] ~= '' then
  redis.call('SET', KEYS[2], ARGV[2], 'NX')
end
return {redis.call('GET', KEYS[1]) or '', redis.call('GET', KEYS[2]) or ''}
",
    )
});

/// What this replica knows of the store-wide keys.
pub(super) enum Keys {
    /// Redis not reached yet.
    Unknown,
    Ready(Arc<Codec>),
    /// The configured key does not fit the store (or is missing): every
    /// operation fails with this, nothing is read or written.
    Refused(String),
}

impl Shared {
    pub(super) fn fingerprint_key_name(&self) -> String {
        format!("{}fingerprint_key", self.prefix)
    }

    pub(super) fn key_check_name(&self) -> String {
        format!("{}key_check", self.prefix)
    }

    /// The arguments of [`INIT_KEYS`]: a fresh fingerprint key (used only
    /// if the store has none) and this replica's key check value.
    pub(super) fn init_args(&self) -> (String, String) {
        let fresh = FingerprintKey::random().to_hex().expose().to_string();
        let check = self
            .encryption_key
            .as_ref()
            .map(|k| Sealer::new(k).key_check())
            .unwrap_or_default();
        (fresh, check)
    }

    /// The codec, reading (or setting) the store-wide keys on first use.
    pub(super) async fn codec(&self) -> Result<Arc<Codec>, StoreError> {
        match &*self.keys.lock().unwrap() {
            Keys::Ready(codec) => return Ok(codec.clone()),
            Keys::Refused(why) => return Err(StoreError::Key(why.clone())),
            Keys::Unknown => {}
        }
        let (fresh, check) = self.init_args();
        let (k1, k2) = (self.fingerprint_key_name(), self.key_check_name());
        let (stored_fp, stored_check): (String, String) = self
            .call(|mut c| async move {
                INIT_KEYS
                    .key(k1)
                    .key(k2)
                    .arg(fresh)
                    .arg(check)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        self.adopt_keys(&stored_fp, &stored_check)
    }

    /// Checks the keys as stored against the configured encryption key and
    /// keeps the outcome.
    pub(super) fn adopt_keys(
        &self,
        stored_fp: &str,
        stored_check: &str,
    ) -> Result<Arc<Codec>, StoreError> {
        let mut keys = self.keys.lock().unwrap();
        if let Keys::Ready(codec) = &*keys {
            return Ok(codec.clone());
        }
        let store = self.describe();
        let refusal = match (&self.encryption_key, stored_check.is_empty()) {
            (None, false) => Some(format!(
                "{store} is encrypted (it has {}): set store.encryption_key to the key its replicas use",
                self.key_check_name()
            )),
            (Some(key), false) if !Sealer::new(key).opens_key_check(stored_check) => Some(format!(
                "store.encryption_key does not open {store}: its records were written with another key. Set the key the other replicas use; nothing in Redis was changed"
            )),
            _ => None,
        };
        if let Some(why) = refusal {
            *keys = Keys::Refused(why.clone());
            return Err(StoreError::Key(why));
        }
        let fingerprint = FingerprintKey::parse(stored_fp).ok_or_else(|| StoreError::Corrupt {
            path: format!(
                "redis {} key {}",
                self.endpoint,
                self.fingerprint_key_name()
            ),
            reason: "not 64 hex digits".into(),
        })?;
        let codec = Arc::new(Codec {
            fingerprint,
            sealer: self.encryption_key.as_ref().map(Sealer::new),
        });
        *keys = Keys::Ready(codec.clone());
        Ok(codec)
    }

    /// Notes whether a provider's record in Redis is sealed, so a plain one
    /// is written again (sealed) when a key is set.
    pub(super) fn note_form(&self, provider: &str, sealed: bool) {
        if self.encryption_key.is_none() {
            return;
        }
        let mut plain = self.plain.lock().unwrap();
        if sealed {
            plain.remove(provider);
        } else if plain.insert(provider.to_string()) && plain.len() == 1 {
            tracing::warn!(store = %self.describe(), provider, "redis token store is not encrypted yet: records are encrypted at their next write (at start, for the providers in the config)");
        }
    }
}
