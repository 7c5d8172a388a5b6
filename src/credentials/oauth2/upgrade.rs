//! Records written by older versions or before `store.encryption_key` was
//! set: used as they are, and written again in the current form at start.

use std::sync::atomic::Ordering;

use super::OAuthProvider;
use crate::store::{Owner, OwnerMatch};

impl OAuthProvider {
    /// Writes the provider's stored record again if it was taken at start
    /// but is not in the current form (an unkeyed fingerprint from an
    /// older version, or plain text while a key is set).
    ///
    /// Under the renewal lock and a shared store's lease, and only if the
    /// store still holds the very tokens this provider took: a token
    /// written since (a renewal here, another replica) is never replaced.
    /// When it cannot be done now, the next renewal writes the record in
    /// the current form anyway.
    pub async fn upgrade_stored_record(&self) {
        if !self.upgrade_pending.swap(false, Ordering::AcqRel) {
            return;
        }
        let _guard = self.renew_lock.lock().await;
        let later = "it is written in the current form at the next renewal";
        let mut lease = match self.store.lease(&self.name).await {
            Ok(lease) => lease,
            Err(e) => {
                tracing::warn!(provider = %self.name, error = %e, "cannot rewrite the stored record now; {later}");
                return;
            }
        };
        let record = match self.store.reread(&self.name).await {
            Ok(Some(record)) => Some(record),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(provider = %self.name, error = %e, "cannot re-read the stored record; {later}");
                None
            }
        };
        let key = self.store.fingerprint_key();
        let current = self.current.load_full();
        let record = record.filter(|r| {
            let ours = match r.owner_match(&self.identity, key.as_ref()) {
                OwnerMatch::Legacy => true,
                OwnerMatch::Same => self.store.needs_rewrite(&self.name),
                OwnerMatch::Other => false,
            };
            ours && current.as_ref().is_some_and(|c| {
                c.access.as_ref().map(|(a, _)| a) == r.access_token.as_ref()
                    && c.refresh == r.refresh_token
            })
        });
        let saved = match record {
            None => None,
            Some(mut record) => {
                record.owner = Owner::Identity(self.identity.clone());
                Some(match lease.as_mut() {
                    Some(lease) => lease.save(record).await,
                    None => self.store.save(&self.name, record).await,
                })
            }
        };
        if let Some(lease) = lease.take() {
            lease.release().await;
        }
        match saved {
            Some(Ok(())) => tracing::info!(
                provider = %self.name,
                encrypted = self.store.encrypted(),
                "stored record written again in the current form (keyed fingerprint)"
            ),
            Some(Err(e)) => {
                tracing::warn!(provider = %self.name, error = %e, "cannot rewrite the stored record; {later}")
            }
            None => {}
        }
    }
}
