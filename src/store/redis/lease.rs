//! The cross-replica renewal lock: taken with `SET NX PX`, extended while
//! the renewal runs, released (or left to expire), and the fenced write
//! that lands only while the lock is ours.

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::scripts::{ACQUIRE, EXTEND, FENCED_SAVE, RELEASE};
use super::{random_owner, Shared};
use crate::store::{RenewalLease, StoreError, StoredToken};

/// Takes the renewal lock of `provider`, waiting (bounded by
/// `lease_wait`) while another replica holds it.
pub(super) async fn acquire(
    s: &Arc<Shared>,
    provider: &str,
) -> Result<Box<dyn RenewalLease>, StoreError> {
    // The keys first: a replica whose encryption key does not fit the
    // store must not renew (it could not write the result).
    s.codec().await?;
    let owner = random_owner();
    let lock = s.lock_key(provider);
    let key = s.token_key(provider);
    let ttl_ms = s.opts.lease_ttl.as_millis() as u64;
    let started = tokio::time::Instant::now();
    let deadline = started + s.opts.lease_wait;
    let mut pause = Duration::from_millis(5);
    let mut waited = false;
    loop {
        let (lock2, key2, owner2) = (lock.clone(), key.clone(), owner.clone());
        let answer: Vec<i64> = s
            .call(|mut c| async move {
                ACQUIRE
                    .key(lock2)
                    .key(key2)
                    .arg(owner2)
                    .arg(ttl_ms)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let (taken, value) = (
            answer.first().copied().unwrap_or(0),
            answer.get(1).copied().unwrap_or(0),
        );
        if taken == 1 {
            if waited {
                tracing::debug!(
                    provider,
                    waited_ms = started.elapsed().as_millis() as u64,
                    "took the renewal lock after another replica"
                );
            }
            return Ok(Box::new(RedisLease::new(
                s.clone(),
                provider,
                owner,
                value.max(0) as u64,
            )));
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(StoreError::Unavailable(format!(
                    "another replica has held the renewal lock of provider {provider} for over {:.0?}; gave up waiting",
                    s.opts.lease_wait
                )));
        }
        if !waited {
            tracing::debug!(
                provider,
                "another replica is renewing; waiting for its token"
            );
            waited = true;
        }
        // Short, growing pauses: the holder usually finishes within
        // one token request; never sleep past the lock's expiry.
        let mut sleep = pause;
        if value > 0 {
            sleep = sleep.min(Duration::from_millis(value as u64 + 1));
        }
        sleep = sleep.min(deadline - now);
        tokio::time::sleep(sleep).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// The renewal lock of one provider, held by this replica and extended in
/// the background until released or dropped.
struct RedisLease {
    shared: Arc<Shared>,
    provider: String,
    owner: String,
    /// The token's version when the lock was taken (the fencing token).
    version_at_take: u64,
    keeper: tokio::task::JoinHandle<()>,
    released: bool,
}

impl RedisLease {
    fn new(shared: Arc<Shared>, provider: &str, owner: String, version_at_take: u64) -> Self {
        let keeper = tokio::spawn(keep_alive(
            Arc::downgrade(&shared),
            provider.to_string(),
            shared.lock_key(provider),
            owner.clone(),
        ));
        RedisLease {
            shared,
            provider: provider.to_string(),
            owner,
            version_at_take,
            keeper,
            released: false,
        }
    }
}

/// Extends the lock every third of its lifetime while the renewal runs.
async fn keep_alive(weak: Weak<Shared>, provider: String, lock: String, owner: String) {
    let Some(ttl) = weak.upgrade().map(|s| s.opts.lease_ttl) else {
        return;
    };
    let ttl_ms = ttl.as_millis() as u64;
    loop {
        tokio::time::sleep(ttl / 3).await;
        let Some(shared) = weak.upgrade() else { return };
        let (lock2, owner2) = (lock.clone(), owner.clone());
        let extended: Result<i64, StoreError> = shared
            .call(|mut c| async move {
                EXTEND
                    .key(lock2)
                    .arg(owner2)
                    .arg(ttl_ms)
                    .invoke_async(&mut c)
                    .await
            })
            .await;
        match extended {
            Ok(1) => {}
            Ok(_) => {
                tracing::warn!(provider, "renewal lock lost (expired) while renewing; the result is written only if no other replica wrote since");
                return;
            }
            Err(e) => {
                tracing::warn!(provider, error = %e, "cannot extend the renewal lock; retrying")
            }
        }
    }
}

async fn release_lock(shared: Arc<Shared>, lock: String, owner: String) {
    let result: Result<i64, StoreError> = shared
        .call(|mut c| async move { RELEASE.key(lock).arg(owner).invoke_async(&mut c).await })
        .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, "cannot release the renewal lock; it expires on its own");
    }
}

impl RenewalLease for RedisLease {
    fn save(&mut self, token: StoredToken) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let s = &self.shared;
            let key = s.token_key(&self.provider);
            let codec = match s.codec().await {
                Ok(codec) => codec,
                Err(e) => {
                    s.remember_dirty(&self.provider, self.version_at_take + 1, token);
                    return Err(e);
                }
            };
            let json = codec.encode(&token, &key);
            let lock = s.lock_key(&self.provider);
            let floor = s.cached_version(&self.provider);
            let owner = self.owner.clone();
            let at_take = self.version_at_take;
            let channel = s.channel();
            let name = self.provider.clone();
            let written: Result<u64, StoreError> = s
                .call(|mut c| async move {
                    FENCED_SAVE
                        .key(key)
                        .key(lock)
                        .arg(json.as_slice())
                        .arg(floor)
                        .arg(owner)
                        .arg(at_take)
                        .arg(channel)
                        .arg(name)
                        .invoke_async(&mut c)
                        .await
                })
                .await;
            match written {
                // Refused or unknown outcome: ours is kept in memory at
                // the version right after the one the lock was taken at,
                // so any write made since (another replica's, or this very
                // one if only its answer was lost) wins over it; it is
                // written later only if Redis has nothing that new (e.g.
                // it restarted without persistence).
                Ok(0) => {
                    s.remember_dirty(&self.provider, at_take + 1, token);
                    Err(StoreError::LeaseLost(self.provider.clone()))
                }
                Ok(version) => {
                    s.remember_written(&self.provider, version, token);
                    s.note_form(&self.provider, codec.sealer.is_some());
                    Ok(())
                }
                Err(e) => {
                    s.remember_dirty(&self.provider, at_take + 1, token);
                    Err(e)
                }
            }
        })
    }

    fn release(mut self: Box<Self>) -> BoxFuture<'static, ()> {
        self.released = true;
        self.keeper.abort();
        let shared = self.shared.clone();
        let lock = shared.lock_key(&self.provider);
        let owner = self.owner.clone();
        Box::pin(release_lock(shared, lock, owner))
    }
}

impl Drop for RedisLease {
    fn drop(&mut self) {
        self.keeper.abort();
        if !self.released {
            // Dropped without `release` (the renewal was cancelled): let
            // the lock go in the background rather than block others for
            // a whole lease.
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                let lock = self.shared.lock_key(&self.provider);
                handle.spawn(release_lock(self.shared.clone(), lock, self.owner.clone()));
            }
        }
    }
}
