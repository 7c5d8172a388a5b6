//! The token in use: swapped whole, read lock-free on every request.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use http::HeaderValue;

use super::OAuthProvider;
use crate::oauth::DpopKey;
use crate::secret::Secret;

/// The token in use, swapped whole. `generation` tells a 401 for an old
/// token from one for the current token.
pub struct TokenState {
    pub generation: u64,
    pub(super) access: Option<(Secret, HeaderValue)>,
    pub(super) refresh: Option<Secret>,
    pub expires_at: Option<u64>,
    pub(super) obtained_at: u64,
    pub(super) token_type: Option<String>,
    /// Whether a plain `401` to this token renews it: [`RENEWS`],
    /// [`UNPROVEN`] or [`NOT_CURED`].
    pub(super) plain_401: AtomicU8,
    /// With DPoP: the key this token is bound to, and its `ath`.
    pub(super) dpop: Option<(DpopKey, String)>,
}

/// A plain `401` to the token renews it (the usual case).
pub(super) const RENEWS: u8 = 0;
/// The token came from a renewal after a plain `401` and has had no
/// answer yet: the first one decides (a `401` means the renewal did not
/// cure it).
pub(super) const UNPROVEN: u8 = 1;
/// A renewal after a plain `401` was answered `401` too: that `401` is not
/// about the token, and renewing again would only burn refresh tokens.
pub(super) const NOT_CURED: u8 = 2;

impl TokenState {
    /// The ready-made header value (marked sensitive).
    pub fn header_value(&self) -> Option<&HeaderValue> {
        self.access.as_ref().map(|(_, v)| v)
    }

    /// A plain `401` came back to this token: whether renewing it may help.
    /// Not when a renewal after a plain `401` gave this token and its first
    /// answer is this `401`, or its replay got one.
    pub fn renews_on_plain_401(&self) -> bool {
        match self.plain_401.load(Ordering::Acquire) {
            RENEWS => true,
            UNPROVEN => {
                self.plain_401.store(NOT_CURED, Ordering::Release);
                false
            }
            _ => false,
        }
    }

    /// The upstream answered something other than `401` to this token.
    pub fn note_accepted(&self) {
        if self.plain_401.load(Ordering::Relaxed) == UNPROVEN {
            let _ = self.plain_401.compare_exchange(
                UNPROVEN,
                RENEWS,
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
    }

    /// The replay after a renewal on a plain `401` got `401` again.
    pub fn note_not_cured(&self) {
        self.plain_401.store(NOT_CURED, Ordering::Release);
    }

    pub fn has_refresh(&self) -> bool {
        self.refresh.is_some()
    }

    /// There is an access token and it is not known to be expired.
    pub fn usable(&self, now: u64) -> bool {
        self.access.is_some() && self.expires_at.is_none_or(|e| now < e)
    }

    /// Usable and not within the renewal window before expiry. The window
    /// is at most half the token's lifetime, so a short-lived token with a
    /// long `refresh_before` is not renewed on every request.
    pub(super) fn fresh(&self, now: u64, refresh_before: Duration) -> bool {
        match (self.access.is_some(), self.expires_at) {
            (false, _) => false,
            (true, None) => true,
            (true, Some(exp)) => {
                let lifetime = exp.saturating_sub(self.obtained_at);
                let window = refresh_before.as_secs().min(lifetime / 2);
                now.saturating_add(window) < exp
            }
        }
    }
}

impl OAuthProvider {
    /// A new token state (the next generation), its header value made
    /// with the configured or answered scheme.
    pub(super) fn make_state(
        &self,
        access: Option<Secret>,
        refresh: Option<Secret>,
        expires_at: Option<u64>,
        obtained_at: u64,
        token_type: Option<String>,
    ) -> TokenState {
        let scheme = self
            .cfg
            .scheme
            .clone()
            .or_else(|| token_type.clone())
            .unwrap_or_else(|| "Bearer".into());
        let access = access.and_then(|a| {
            // Zeroed when dropped; the `HeaderValue` copy cannot be.
            let text = zeroize::Zeroizing::new(if scheme.is_empty() {
                a.expose().to_string()
            } else {
                format!("{scheme} {}", a.expose())
            });
            match HeaderValue::from_str(&text) {
                Ok(mut v) => {
                    v.set_sensitive(true);
                    Some((a, v))
                }
                Err(_) => {
                    tracing::error!(provider = %self.name, "token is not a valid header value; ignoring it");
                    None
                }
            }
        });
        // Bound to the key of now: a key taken from the store later does
        // not change what this token's proofs are signed with.
        let dpop = match (&self.dpop, &access) {
            (Some(d), Some((a, _))) => Some((d.key(), crate::oauth::dpop::ath(a.expose()))),
            _ => None,
        };
        TokenState {
            generation: self.next_generation.fetch_add(1, Ordering::Relaxed),
            dpop,
            access,
            refresh,
            expires_at,
            obtained_at,
            token_type,
            plain_401: AtomicU8::new(RENEWS),
        }
    }
}
