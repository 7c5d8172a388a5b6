//! DPoP (`dpop = true`): the provider's key, kept in the store record with
//! the tokens bound to it, and the proofs of proxied requests.

use http::HeaderValue;

use super::{OAuthProvider, TokenState};
use crate::clock::unix_now;
use crate::oauth::{Dpop, DpopKey};
use crate::secret::Secret;

impl OAuthProvider {
    /// DPoP (`dpop = true`): the key and the servers' nonces.
    pub fn dpop(&self) -> Option<&Dpop> {
        self.dpop.as_ref()
    }

    /// A DPoP proof for a request with `token` to `htu` (no query) on
    /// `origin`, signed with the key `token` is bound to; `None` without
    /// DPoP.
    pub fn dpop_proof(
        &self,
        token: &TokenState,
        htm: &str,
        origin: &str,
        htu: &str,
    ) -> Option<HeaderValue> {
        let dpop = self.dpop.as_ref()?;
        let (key, ath) = token.dpop.as_ref()?;
        Some(dpop.proof_with(key, htm, origin, htu, Some(ath), unix_now()))
    }

    /// The DPoP key as a store record keeps it.
    pub(super) fn dpop_key_record(&self) -> Option<Secret> {
        self.dpop.as_ref().map(|d| d.key().stored().clone())
    }

    /// Takes the key of a stored record (its tokens are bound to it). A
    /// record without one, or one that does not read, keeps ours.
    pub(super) fn adopt_dpop_key(&self, stored: Option<&Secret>) {
        let (Some(dpop), Some(stored)) = (&self.dpop, stored) else {
            return;
        };
        match DpopKey::from_stored(stored) {
            Ok(key) => {
                if key != dpop.key() {
                    dpop.set_key(key);
                }
            }
            Err(e) => {
                tracing::warn!(provider = %self.name, error = %e, "ignoring the stored DPoP key; a new one is used")
            }
        }
    }

    /// A token endpoint that ignores DPoP answers `token_type` `Bearer`:
    /// the token works, but is not bound to the key. Said once per token.
    pub(super) fn note_token_type(&self, token_type: Option<&str>) {
        if self.dpop.is_some() && !token_type.is_some_and(|t| t.eq_ignore_ascii_case("dpop")) {
            tracing::warn!(provider = %self.name, token_type = token_type.unwrap_or("none"), "dpop = true, but the token endpoint issued a token that is not DPoP-bound (RFC 9449 §5); it is used as it is");
        }
    }
}
