//! The cross-replica renewal lock: taken with `SET NX PX`, extended while
//! the renewal runs, released (or left to expire), and the fenced write
//! that lands only while the lock is ours.

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::scripts::{ACQUIRE, EXTEND, FENCED_SAVE, RELEASE};
use super::topology::Acked;
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
    // Fail closed while the newest token is not durable: a failover could
    // bring back the refresh token it replaced, already spent.
    s.settle(provider).await?;
    let owner = random_owner();
    let lock = s.lock_key(provider);
    let key = s.token_key(provider);
    let ttl_ms = s.opts.lease_ttl.as_millis() as u64;
    let started = tokio::time::Instant::now();
    let deadline = started + s.opts.lease_wait;
    let mut pause = Duration::from_millis(5);
    let mut waited = false;
    loop {
        let mut eval = ::redis::cmd("EVAL");
        eval.arg(ACQUIRE)
            .arg(2)
            .arg(&lock)
            .arg(&key)
            .arg(&owner)
            .arg(ttl_ms);
        let (answer, acked): (Vec<i64>, Acked) = s.write_waited(eval).await?;
        let (taken, value) = (
            answer.first().copied().unwrap_or(0),
            answer.get(1).copied().unwrap_or(0),
        );
        if taken == 1 {
            if let Acked::Short { acked, wanted } = acked {
                // A failover now could forget the lock while our refresh
                // is in flight: give it back, refuse the renewal.
                release_lock(s.clone(), lock, owner).await;
                return Err(StoreError::NotDurable(format!(
                    "the renewal lock of provider {provider} reached {acked} of {wanted} replica(s) within {:.0?} (store.min_replicas, store.replica_timeout); not renewing until the replicas answer",
                    s.opts.replica_timeout
                )));
            }
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
    /// The token's version when the lock was taken, or of this lease's
    /// own last write (the fencing token).
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
            let json = Arc::new(codec.encode(&token, &key));
            let floor = s.cached_version(&self.provider);
            let at_take = self.version_at_take;
            let mut eval = ::redis::cmd("EVAL");
            eval.arg(FENCED_SAVE)
                .arg(2)
                .arg(key)
                .arg(s.lock_key(&self.provider))
                .arg(json.as_slice())
                .arg(floor)
                .arg(&self.owner)
                .arg(at_take)
                .arg(s.channel())
                .arg(&self.provider);
            // The write and its `WAIT` happen while the lease is held (the
            // keeper extends it), so no other replica renews before the
            // replicas have the new token.
            match s.write_waited(eval).await {
                // Refused or unknown outcome: ours is kept in memory at
                // the version right after the one the lock was taken at,
                // so any write made since (another replica's, or this very
                // one if only its answer was lost) wins over it; it is
                // written later only if Redis has nothing that new (e.g.
                // it restarted without persistence).
                Ok((0, _)) => {
                    s.remember_dirty(&self.provider, at_take + 1, token);
                    Err(StoreError::LeaseLost(self.provider.clone()))
                }
                Ok((version, Acked::Enough)) => {
                    // Our own write: a later one of this lease (the answer
                    // after the rotation intent) is fenced against writes
                    // made since this one, not since the take.
                    self.version_at_take = version;
                    s.remember_written(&self.provider, version, token, None);
                    s.note_form(&self.provider, codec.sealer.is_some());
                    Ok(())
                }
                Ok((version, Acked::Short { acked, wanted })) => {
                    self.version_at_take = version;
                    s.remember_written(&self.provider, version, token, Some(json));
                    s.note_form(&self.provider, codec.sealer.is_some());
                    Err(s.not_durable(&self.provider, acked, wanted))
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
        let shared = self.shared.clone();
        let provider = self.provider.clone();
        let lock = shared.lock_key(&self.provider);
        let owner = self.owner.clone();
        if !shared.unsettled(&provider) {
            self.keeper.abort();
            return Box::pin(release_lock(shared, lock, owner));
        }
        // The new token is only here, or not yet on the replicas: the
        // lease stays ours (the keeper goes on extending it, on the new
        // primary after a failover) until it is, so that no other replica
        // renews from the refresh token it replaced. In the background:
        // the access token is in use already. Bounded by `lease_wait`.
        let keeper = std::mem::replace(&mut self.keeper, tokio::spawn(async {}));
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + shared.opts.lease_wait;
            let mut pause = Duration::from_millis(50);
            while shared.unsettled(&provider) && tokio::time::Instant::now() < deadline {
                match shared.settle(&provider).await {
                    Ok(()) => break,
                    Err(e) => {
                        tracing::warn!(provider, error = %e, "new token not yet durable; holding the renewal lock");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(1));
                    }
                }
            }
            keeper.abort();
            release_lock(shared, lock, owner).await;
        });
        Box::pin(async {})
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
