//! The change feed: other replicas' writes, announced on pub/sub, taken
//! over; after every (re)connect a resync that also writes back what only
//! this replica has.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use ::redis::RedisError;
use futures_util::StreamExt;

use super::cache::{read_all, Cached};
use super::scripts::RESTORE;
use super::topology::Acked;
use super::{scrub, Shared};
use crate::store::StoreError;

impl Shared {
    /// Called for every change message: takes a newer record over and
    /// passes the provider's name on.
    pub(super) async fn on_change(&self, provider: &str) {
        match self.fetch(provider).await {
            Ok(Some((version, token))) => {
                if self.remember_read(provider, version, token) {
                    let _ = self.changes.send(provider.to_string());
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(provider, error = %e, "cannot read a changed token from redis")
            }
        }
    }

    /// After (re)connecting: take over what other replicas wrote while we
    /// did not listen, and write back what only we have (Redis restarted
    /// empty, or our own write failed).
    pub(super) async fn resync(&self) -> Result<(), StoreError> {
        let codec = self.codec().await?;
        let prefix = self.prefix.clone();
        let reader = codec.clone();
        let stored = self
            .call(|mut c| async move { read_all(&mut c, &prefix, &reader).await })
            .await?;
        let mut seen = BTreeSet::new();
        for r in stored {
            // Never written over, even when it cannot be read here.
            seen.insert(r.provider.clone());
            let (provider, version) = (r.provider, r.version);
            let token = match r.record {
                Ok(decoded) => {
                    self.note_form(&provider, decoded.sealed);
                    decoded.token
                }
                Err(e) => {
                    tracing::error!(key = r.key, error = %e, "cannot read a token record in redis; leaving it as it is");
                    continue;
                }
            };
            let ours = self.cache.lock().unwrap().get(&provider).cloned();
            match ours {
                Some(c) if c.version > version => tolerate_short(self.restore(&provider, c).await)?,
                _ => {
                    if self.remember_read(&provider, version, token) {
                        tracing::info!(provider, "token changed in redis while this replica was not listening; taking it over");
                        let _ = self.changes.send(provider);
                    }
                }
            }
        }
        let missing: Vec<(String, Cached)> = self
            .cache
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| !seen.contains(*p))
            .map(|(p, c)| (p.clone(), c.clone()))
            .collect();
        for (provider, cached) in missing {
            tracing::warn!(provider, "token missing in redis (restarted without persistence?); writing back the one in memory");
            tolerate_short(self.restore(&provider, cached).await)?;
        }
        self.note_replicas().await;
        Ok(())
    }

    /// Writes a cached record back unless Redis has a newer one, which is
    /// then taken over instead; a record the replicas did not acknowledge
    /// is written again as the same bytes and waited for. Fails with
    /// [`StoreError::NotDurable`] when they still do not.
    pub(super) async fn restore(&self, provider: &str, cached: Cached) -> Result<(), StoreError> {
        let codec = self.codec().await?;
        let key = self.token_key(provider);
        let json = match &cached.unacked {
            Some(bytes) => bytes.clone(),
            None => Arc::new(codec.encode(&cached.token, &key)),
        };
        let version = cached.version;
        let mut eval = ::redis::cmd("EVAL");
        eval.arg(RESTORE)
            .arg(1)
            .arg(key)
            .arg(json.as_slice())
            .arg(version)
            .arg(self.channel())
            .arg(provider);
        let (answer, acked): (u64, Acked) = self.write_waited(eval).await?;
        if answer == 0 {
            self.note_form(provider, codec.sealer.is_some());
            let short = match acked {
                Acked::Enough => None,
                Acked::Short { acked, wanted } => Some((acked, wanted)),
            };
            if let Some(c) = self.cache.lock().unwrap().get_mut(provider) {
                if c.version == version {
                    c.dirty = false;
                    c.unacked = short.map(|_| json.clone());
                }
            }
            if let Some((acked, wanted)) = short {
                return Err(self.not_durable(provider, acked, wanted));
            }
            if cached.unacked.is_some() {
                tracing::info!(
                    provider,
                    version,
                    "token acknowledged by the replicas: durable again"
                );
            } else {
                tracing::info!(provider, version, "token written back to redis");
            }
            return Ok(());
        }
        // Redis has a newer record (or another one at this version): it
        // wins, and ours is no longer waited for.
        if let Some((v, token)) = self.fetch(provider).await? {
            if let Some(c) = self.cache.lock().unwrap().get_mut(provider) {
                if c.version <= v {
                    c.unacked = None;
                }
            }
            if self.remember_read(provider, v, token) {
                let _ = self.changes.send(provider.to_string());
            }
        }
        Ok(())
    }

    /// Makes the newest token of `provider` durable if it is not (written
    /// only here, or not acknowledged by the replicas): no renewal may
    /// start from a token a failover could still take back.
    /// Whether the newest token of `provider` is not yet durable.
    pub(super) fn unsettled(&self, provider: &str) -> bool {
        self.cache
            .lock()
            .unwrap()
            .get(provider)
            .is_some_and(|c| c.dirty || c.unacked.is_some())
    }

    pub(super) async fn settle(&self, provider: &str) -> Result<(), StoreError> {
        let pending = self
            .cache
            .lock()
            .unwrap()
            .get(provider)
            .filter(|c| c.dirty || c.unacked.is_some())
            .cloned();
        match pending {
            Some(cached) => self.restore(provider, cached).await,
            None => Ok(()),
        }
    }

    pub(super) async fn flush_dirty(&self) -> Result<(), StoreError> {
        let dirty: Vec<(String, Cached)> = self
            .cache
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, c)| c.dirty || c.unacked.is_some())
            .map(|(p, c)| (p.clone(), c.clone()))
            .collect();
        for (provider, cached) in dirty {
            self.restore(&provider, cached).await?;
        }
        Ok(())
    }

    pub(super) fn link_down(&self, reason: String) {
        let mut slot = self.link_error.lock().unwrap();
        if slot.is_none() {
            tracing::error!(
                store = %self.describe(),
                error = %reason,
                "REDIS TOKEN STORE UNREACHABLE: tokens in memory are still served; renewals of \
                 single-use refresh tokens are refused until it is back"
            );
        }
        *slot = Some(format!("redis {} unreachable: {reason}", self.endpoint));
    }

    pub(super) fn link_up(&self) {
        if self.link_error.lock().unwrap().take().is_some() {
            tracing::info!(store = %self.describe(), "redis token store reachable again; in sync");
        }
    }

    pub(super) fn start_follower(self: &Arc<Self>) {
        if self.follower_started.swap(true, Ordering::AcqRel) {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(follow_changes(Arc::downgrade(self)));
            }
            Err(_) => self.follower_started.store(false, Ordering::Release),
        }
    }
}

/// The change feed: subscribes to `{prefix}changes`, resyncs after every
/// (re)connect, passes changed provider names on, and reconnects with
/// backoff. Ends when the store is dropped.
pub(super) async fn follow_changes(weak: Weak<Shared>) {
    const MIN_BACKOFF: Duration = Duration::from_millis(100);
    const MAX_BACKOFF: Duration = Duration::from_secs(5);
    let mut backoff = MIN_BACKOFF;
    loop {
        let Some(shared) = weak.upgrade() else { return };
        // Behind Sentinel: subscribe where the primary is now (a
        // demoted one would hear no more writes).
        let found = shared.follow_primary(false).await;
        let client = shared.client();
        let channel = shared.channel();
        let subscribe = async {
            let Some(client) = client else {
                return Err(found.err().unwrap_or_else(|| "no primary known".into()));
            };
            let pubsub = async {
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                Ok::<_, RedisError>(pubsub)
            };
            pubsub.await.map_err(|e| scrub(&e, &shared.redact))
        };
        let connected = match tokio::time::timeout(shared.opts.op_timeout, subscribe).await {
            Ok(Ok(pubsub)) => match shared.resync().await {
                // Subscribed first, then read: nothing written in between
                // can be missed.
                Ok(()) => Ok(pubsub),
                Err(StoreError::Unavailable(m)) => Err(m
                    .strip_prefix(&format!("redis {} unreachable: ", shared.endpoint))
                    .map(str::to_string)
                    .unwrap_or(m)),
                Err(e) => Err(e.to_string()),
            },
            Ok(Err(e)) => Err(e),
            Err(_) => Err(format!("no answer within {:.0?}", shared.opts.op_timeout)),
        };
        let pubsub = match connected {
            Ok(p) => p,
            Err(reason) => {
                shared.link_down(reason);
                drop(shared);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        shared.link_up();
        backoff = MIN_BACKOFF;
        let heartbeat_every = shared.opts.heartbeat;
        let op_timeout = shared.opts.op_timeout;
        drop(shared);

        let (mut sink, mut stream) = pubsub.split();
        let mut heartbeat = tokio::time::interval(heartbeat_every);
        heartbeat.tick().await;
        let reason = loop {
            tokio::select! {
                msg = stream.next() => {
                    let Some(msg) = msg else { break "connection closed".to_string() };
                    let Some(shared) = weak.upgrade() else { return };
                    if let Ok(provider) = msg.get_payload::<String>() {
                        shared.on_change(&provider).await;
                    }
                }
                _ = heartbeat.tick() => {
                    if weak.strong_count() == 0 {
                        return;
                    }
                    match tokio::time::timeout(op_timeout, sink.ping::<::redis::Value>()).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => break e.to_string(),
                        Err(_) => break format!("no answer to PING within {op_timeout:.0?}"),
                    }
                }
            }
        };
        if let Some(shared) = weak.upgrade() {
            shared.link_down(scrub(&reason, &shared.redact));
        }
    }
}

/// A resync that wrote everything back, but not yet to enough replicas,
/// still counts as connected: the record stays marked and is retried.
fn tolerate_short(r: Result<(), StoreError>) -> Result<(), StoreError> {
    match r {
        Err(StoreError::NotDurable(why)) => {
            tracing::warn!(error = %why, "written back, not yet durable");
            Ok(())
        }
        other => other,
    }
}
