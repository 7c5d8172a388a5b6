//! The hand-off between a provider and its store: every new token made
//! durable before it is used (and the rotation intent it ends cleared
//! with it), and tokens another replica wrote taken over.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::state::UNPROVEN;
use super::{OAuthProvider, TokenState, Trigger};
use crate::oauth::TokenSet;
use crate::store::{OwnerMatch, RenewalLease, StoredToken};

impl OAuthProvider {
    pub(super) fn drop_refresh_token(&self) {
        if let Some(c) = self.current.load_full() {
            let state = self.make_state(
                c.access.as_ref().map(|(s, _)| s.clone()),
                None,
                c.expires_at,
                c.obtained_at,
                c.token_type.clone(),
            );
            self.current.store(Some(Arc::new(state)));
        }
    }

    /// Makes a new token durable, then current. A store failure is logged
    /// and reported, but the token is still used: the provider already
    /// considers it issued, and the store retries the write later.
    ///
    /// A token renewed because of a plain `401` starts unproven: if its
    /// first answer is a `401` too, that `401` was not about the token and
    /// a plain `401` does not renew it again.
    pub(super) async fn accept(
        &self,
        set: TokenSet,
        lease: Option<&mut Box<dyn RenewalLease>>,
        trigger: Trigger,
    ) -> Arc<TokenState> {
        self.note_token_type(set.token_type.as_deref());
        let mut record = StoredToken::new(&set, &self.identity);
        record.dpop_key = self.dpop_key_record();
        let saved = match lease {
            Some(lease) => lease.save(record).await,
            None => self.store.save(&self.name, record).await,
        };
        match saved {
            Ok(()) => self.stats.lock().unwrap().store_error = None,
            Err(e) => {
                self.metrics.store_write_failures.inc();
                tracing::error!(provider = %self.name, error = %e, "TOKEN STORE WRITE FAILED: the new token is only in memory; a restart now would lose it. Retrying in the background");
                self.stats.lock().unwrap().store_error = Some(e.to_string());
            }
        }
        let state = self.make_state(
            Some(set.access_token),
            set.refresh_token,
            set.expires_at,
            set.obtained_at,
            set.token_type,
        );
        if trigger == Trigger::Unauthorized {
            state.plain_401.store(UNPROVEN, Ordering::Relaxed);
        }
        let state = Arc::new(state);
        self.current.store(Some(state.clone()));
        state
    }

    /// Takes the store's record as the current token if it differs from
    /// ours (another replica renewed). Returns the adopted state.
    pub(super) async fn adopt_from_store(&self) -> Option<Arc<TokenState>> {
        let record = match self.store.reread(&self.name).await {
            Ok(Some(r)) => r,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(provider = %self.name, error = %e, "cannot re-read the shared store");
                return None;
            }
        };
        let key = self.store.fingerprint_key();
        if record.owner_match(&self.identity, key.as_ref()) == OwnerMatch::Other {
            return None;
        }
        let cur = self.current.load_full();
        let same = cur.as_ref().is_some_and(|c| {
            c.access.as_ref().map(|(a, _)| a) == record.access_token.as_ref()
                && c.refresh == record.refresh_token
        });
        if same {
            return None;
        }
        self.adopt_dpop_key(record.dpop_key.as_ref());
        let state = Arc::new(self.make_state(
            record.access_token,
            record.refresh_token,
            record.expires_at,
            record.obtained_at,
            record.token_type,
        ));
        tracing::info!(provider = %self.name, generation = state.generation, "using a token another replica obtained");
        self.current.store(Some(state.clone()));
        Some(state)
    }

    /// Called when a shared store says another replica wrote this
    /// provider's token: take it without a token request.
    ///
    /// Never waits for the renewal lock: a renewal with a slow token
    /// endpoint can hold it for minutes (every try of two grants), and the
    /// store's change feed calls this for every provider in turn. While
    /// the lock is held, a note is left instead, and the holder looks at
    /// the store before it lets go ([`Self::take_skipped_sync`]).
    pub async fn sync_from_store(&self) {
        let _guard = match self.renew_lock.try_lock() {
            Ok(guard) => guard,
            Err(_) => {
                self.sync_skipped.store(true, Ordering::Release);
                // The holder may have let go before it could see the note.
                match self.renew_lock.try_lock() {
                    Ok(guard) => guard,
                    Err(_) => return,
                }
            }
        };
        self.sync_skipped.store(false, Ordering::Release);
        if self.adopt_from_store().await.is_some() {
            *self.failure.lock().unwrap() = None;
        }
    }

    /// With the renewal lock held, at the end: takes over a token another
    /// replica wrote meanwhile, if the change feed announced one. Returns
    /// it, as it is newer than what this holder got.
    pub(super) async fn take_skipped_sync(&self) -> Option<Arc<TokenState>> {
        if !self.sync_skipped.swap(false, Ordering::AcqRel) {
            return None;
        }
        let adopted = self.adopt_from_store().await?;
        *self.failure.lock().unwrap() = None;
        Some(adopted)
    }
}
