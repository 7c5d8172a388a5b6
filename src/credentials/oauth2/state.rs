//! The token in use: swapped whole, read lock-free on every request.

use std::time::Duration;

use http::HeaderValue;

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
}

impl TokenState {
    /// The ready-made header value (marked sensitive).
    pub fn header_value(&self) -> Option<&HeaderValue> {
        self.access.as_ref().map(|(_, v)| v)
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
