//! The connection to the primary: set up, replaced when stuck or when
//! the sentinels name another primary, and every command run through
//! [`Shared::call`], bounded in time, keeping the health state.

use std::future::Future;
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, RedisResult};

use super::{scrub, RedisOptions, Shared};
use crate::store::StoreError;

/// The node written to: its client and a connection that reconnects by
/// itself (replaced when it is stuck on a non-I/O error, or when the
/// sentinels name another primary).
#[derive(Clone)]
pub(super) struct Primary {
    pub(super) client: Client,
    pub(super) conn: ConnectionManager,
    /// `host:port`, for messages.
    pub(super) addr: String,
}

pub(super) fn connection_manager(
    client: &Client,
    opts: &RedisOptions,
) -> RedisResult<ConnectionManager> {
    // Few, quick reconnect attempts per command: when Redis is down a
    // renewal should be refused within seconds, not after a long backoff.
    // A write's answer comes after its `WAIT` for the replicas.
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(opts.op_timeout))
        .set_response_timeout(Some(opts.op_timeout + opts.replica_timeout))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500));
    ConnectionManager::new_lazy_with_config(client.clone(), config)
}

impl Shared {
    /// The primary's client, once known.
    pub(super) fn client(&self) -> Option<Client> {
        self.primary
            .lock()
            .unwrap()
            .as_ref()
            .map(|p| p.client.clone())
    }

    pub(super) fn unavailable(&self, e: &dyn std::fmt::Display) -> StoreError {
        StoreError::Unavailable(format!(
            "redis {} unreachable: {}",
            self.endpoint,
            scrub(e, &self.redact)
        ))
    }

    /// Runs one operation on the shared connection, bounded in time, and
    /// keeps the health state up to date.
    pub(super) async fn call<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let mut conn = self
            .primary
            .lock()
            .unwrap()
            .as_ref()
            .map(|p| p.conn.clone());
        if conn.is_none() {
            // Behind Sentinel, before any primary was found.
            if let Err(e) = self.follow_primary(false).await {
                return Err(self.command_failed(&e));
            }
            conn = self
                .primary
                .lock()
                .unwrap()
                .as_ref()
                .map(|p| p.conn.clone());
        }
        let Some(conn) = conn else {
            return Err(self.command_failed(&"no primary known"));
        };
        // The manager's own timeouts fire first (and make it reconnect);
        // this outer bound only catches what they do not cover.
        let bound =
            (self.opts.op_timeout + self.opts.replica_timeout) * 2 + Duration::from_millis(500);
        let result = tokio::time::timeout(bound, op(conn)).await;
        match result {
            Ok(Ok(v)) => {
                if self.command_error.lock().unwrap().take().is_some() {
                    tracing::info!(store = %self.describe(), "redis answers again");
                }
                Ok(v)
            }
            Ok(Err(e)) => {
                if self.sentinels.is_some() {
                    // Dead primary, or one demoted to a replica
                    // (READONLY): the sentinels know where to go next.
                    if let Err(why) = self.follow_primary(!e.is_io_error()).await {
                        tracing::debug!(error = %why, "no other primary yet");
                    }
                } else if !e.is_io_error() {
                    // The manager reconnects on I/O errors only; anything
                    // else (TLS, auth during a reconnect) could leave it
                    // stuck, so start over with a fresh one.
                    let fresh = self
                        .primary
                        .lock()
                        .unwrap()
                        .as_ref()
                        .and_then(|p| connection_manager(&p.client, &self.opts).ok());
                    if let Some(fresh) = fresh {
                        if let Some(p) = self.primary.lock().unwrap().as_mut() {
                            p.conn = fresh;
                        }
                    }
                }
                Err(self.command_failed(&e))
            }
            Err(_) => {
                if self.sentinels.is_some() {
                    let _ = self.follow_primary(true).await;
                }
                Err(self.command_failed(&format!("no answer within {bound:.0?}")))
            }
        }
    }

    pub(super) fn command_failed(&self, e: &dyn std::fmt::Display) -> StoreError {
        let err = self.unavailable(e);
        let mut slot = self.command_error.lock().unwrap();
        if slot.is_none() {
            tracing::error!(store = %self.describe(), error = %err, "redis command failed");
        }
        *slot = Some(err.to_string());
        err
    }
}
