//! What `/_authproxy/status` shows of a provider. Never a secret.

use serde::Serialize;

use super::{CredentialError, OAuthProvider};
use crate::clock::unix_now;
use crate::config::Grant;

/// What `/_authproxy/status` shows. Never a secret.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RenewalStats {
    pub renewals: u64,
    pub token_requests: u64,
    pub last_renewal_at: Option<u64>,
    pub last_renewal_outcome: Option<&'static str>,
    pub last_renewal_reason: Option<&'static str>,
    pub last_error_code: Option<String>,
    pub last_error_message: Option<String>,
    pub store_error: Option<String>,
    /// When the rotation started whose refresh token the provider then
    /// refused (its answer was lost: a crash, a lost answer).
    pub rotation_interrupted_at: Option<u64>,
}

impl OAuthProvider {
    pub fn stats(&self) -> RenewalStats {
        let mut s = self.stats.lock().unwrap().clone();
        if s.store_error.is_none() {
            s.store_error = self.store.pending_error();
        }
        s
    }

    /// `ok`, `expiring`, `login_required` or `error`.
    pub fn state(&self) -> &'static str {
        let now = unix_now();
        let cur = self.current.load_full();
        let (failed, login) = match self.failure.lock().unwrap().as_ref() {
            Some(f) => (
                true,
                matches!(f.error, CredentialError::LoginRequired { .. }),
            ),
            None => (false, false),
        };
        match cur {
            Some(c) if c.fresh(now, self.cfg.refresh_before) && !failed => "ok",
            Some(c) if c.usable(now) => "expiring",
            _ if self.cfg.grant == Grant::Implicit => "login_required",
            // A login grant with nothing to renew with, or whose refresh
            // token was refused.
            _ if login => "login_required",
            ref c
                if self.cfg.grant.needs_login() && !c.as_ref().is_some_and(|c| c.has_refresh()) =>
            {
                "login_required"
            }
            _ if failed => "error",
            // A refusal the store remembers (fail-closed before a restart):
            // nothing is left to obtain a token with.
            Some(c) if !c.has_refresh() && !self.cfg.grant.has_primary() => "error",
            // Nothing obtained yet, nothing failed: the first request will
            // run the grant.
            _ => "ok",
        }
    }
}

/// The code `/_authproxy/status` shows for a failed renewal.
pub(super) fn error_code(e: &CredentialError) -> String {
    match e {
        CredentialError::TokenEndpoint(t) => t.code(),
        CredentialError::Reauthentication(_) => "reauthentication_failed".into(),
        CredentialError::LoginRequired { .. } => "login_required".into(),
        CredentialError::WaitTimeout(_) => "wait_timeout".into(),
        CredentialError::StoreUnavailable(_) => "store_unavailable".into(),
        CredentialError::Discovery(_) => "discovery_failed".into(),
    }
}
