//! A crash in the middle of a rotation (spec, "Token behaviour"). Before
//! a refresh-token grant goes out, an intent (a keyed hash of the refresh
//! token, the time) is made durable in the store; the write of the answer
//! clears it, in the same record, so in one atomic write. An intent found
//! open means the provider may have rotated that token while its answer
//! was lost (the proxy was killed, or the answer never arrived). With
//! `rotation_grace` (the provider's reuse interval) and the intent younger
//! than it, the same token is sent once more at start and the chain
//! continues; otherwise the next refresh sends it as usual and, if it is
//! refused, status says `rotation_interrupted` with the time, so the
//! operator re-seeds instead of looking for a bug.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{CredentialError, OAuthProvider, TokenState, Trigger};
use crate::clock::{rfc3339, unix_now};
use crate::oauth::TokenError;
use crate::secret::Secret;
use crate::store::{Owner, OwnerMatch, RenewalLease, RotationIntent, StoredToken};

/// The rotation a refresh grant is part of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rotation {
    /// Recorded just now, or not durable (memory store, a failed write of
    /// a store only this process uses).
    New,
    /// Found open: a rotation of this very refresh token started at this
    /// time (Unix seconds) and its answer was never stored.
    Interrupted(u64),
}

impl OAuthProvider {
    /// When the open rotation of refresh token `rt` started, if the store
    /// holds one for it.
    pub(super) fn open_rotation(&self, rt: &Secret) -> Option<u64> {
        let key = self.store.fingerprint_key()?;
        let record = self.store.load(&self.name)?;
        let intent = record.rotation.as_ref()?;
        let ours = record.owner_match(&self.identity, Some(&key)) == OwnerMatch::Same;
        (ours
            && record.refresh_token.as_ref() == Some(rt)
            && intent.refresh_hash == key.token_hash(rt))
        .then_some(intent.started_at)
    }

    /// At construction: says so when the stored token's rotation was
    /// interrupted, and whether it is to be retried at start.
    pub(super) fn note_open_rotation(&self) {
        let Some(rt) = self.current.load_full().and_then(|c| c.refresh.clone()) else {
            return;
        };
        let Some(at) = self.open_rotation(&rt) else {
            return;
        };
        let age = unix_now().saturating_sub(at);
        let grace = self.cfg.rotation_grace;
        if age < grace.as_secs() {
            tracing::warn!(provider = %self.name, interrupted_at = %rfc3339(at), age_s = age, "a token rotation was interrupted (the proxy stopped before the provider's answer was stored); within rotation_grace ({grace:?}) the same refresh token is sent once more now");
            self.resume_pending.store(true, Ordering::Release);
        } else {
            tracing::warn!(provider = %self.name, interrupted_at = %rfc3339(at), age_s = age, "a token rotation was interrupted (the proxy stopped before the provider's answer was stored) and rotation_grace ({grace:?}) is over; the next refresh sends the same refresh token, and if the provider spent it, a new seed or login is needed");
        }
    }

    /// At start, once: retries an interrupted rotation found within
    /// `rotation_grace` now, rather than at the first request (which may
    /// come after the provider stopped taking the spent token).
    pub async fn resume_interrupted_rotation(&self) {
        if !self.resume_pending.swap(false, Ordering::AcqRel) {
            return;
        }
        match self.renew(Trigger::Interrupted, None).await {
            Ok(_) => {
                tracing::info!(provider = %self.name, "interrupted rotation retried; the refresh-token chain continues")
            }
            Err(e) => {
                tracing::warn!(provider = %self.name, error = %e, "retrying the interrupted rotation failed")
            }
        }
    }

    /// Whether a renewal asked for by [`Trigger::Interrupted`] still has
    /// something to do: the token renewed from has its rotation open.
    pub(super) fn rotation_still_open(&self, from: Option<&Arc<TokenState>>) -> bool {
        from.and_then(|c| c.refresh.as_ref())
            .is_some_and(|rt| self.open_rotation(rt).is_some())
    }

    /// Before a refresh grant with `rt` (the refresh token of `cur`):
    /// records the intent durably, or finds one open for this token (then
    /// its time is kept: the provider's grace runs from the first send).
    /// A shared store that cannot record it refuses the refresh (fail
    /// closed, as without its lease); a store only this process uses is
    /// no worse off than before, so the refresh goes ahead.
    pub(super) async fn begin_rotation(
        &self,
        cur: &TokenState,
        rt: &Secret,
        lease: Option<&mut Box<dyn RenewalLease>>,
    ) -> Result<Rotation, CredentialError> {
        if let Some(at) = self.open_rotation(rt) {
            tracing::warn!(provider = %self.name, interrupted_at = %rfc3339(at), "sending again the refresh token of a rotation whose answer was never stored");
            return Ok(Rotation::Interrupted(at));
        }
        // A memory store keeps nothing past a crash.
        let Some(key) = self.store.fingerprint_key() else {
            return Ok(Rotation::New);
        };
        let record = StoredToken {
            access_token: cur.access.as_ref().map(|(a, _)| a.clone()),
            refresh_token: Some(rt.clone()),
            expires_at: cur.expires_at,
            token_type: cur.token_type.clone(),
            obtained_at: cur.obtained_at,
            owner: Owner::Identity(self.identity.clone()),
            dpop_key: self.dpop_key_record(),
            rotation: Some(RotationIntent {
                refresh_hash: key.token_hash(rt),
                started_at: unix_now(),
            }),
        };
        let shared = lease.is_some();
        let saved = match lease {
            Some(lease) => lease.save(record).await,
            None => self.store.save(&self.name, record).await,
        };
        match saved {
            Ok(()) => Ok(Rotation::New),
            Err(e) if shared => Err(CredentialError::StoreUnavailable(format!(
                "cannot record the rotation intent ({e})"
            ))),
            Err(e) => {
                tracing::warn!(provider = %self.name, error = %e, "cannot record the rotation intent; a crash before the answer is stored would go unexplained");
                Ok(Rotation::New)
            }
        }
    }

    /// The refresh token of an interrupted rotation was refused: the
    /// provider spent it and its answer is lost. Says so in the log and
    /// status; answers the error's text.
    pub(super) fn rotation_lost(&self, at: u64, e: &TokenError) -> String {
        self.stats.lock().unwrap().rotation_interrupted_at = Some(at);
        let when = rfc3339(at);
        tracing::error!(provider = %self.name, interrupted_at = %when, error = %e, "ROTATION INTERRUPTED: the refresh-token rotation started at {when} got no stored answer (the proxy stopped or the answer was lost) and the provider now refuses that refresh token: the chain is lost. Set a new refresh_token seed (or log in again); rotation_grace = the provider's reuse interval lets a restart retry it in time");
        format!("rotation_interrupted: the refresh-token rotation started at {when} was interrupted before its answer was stored, and the provider refuses the spent token ({e}); set a new refresh_token seed in the config and reload")
    }
}
