//! Work besides answering requests: following a shared store's change
//! feed, and retrying token-store writes that failed.

use std::sync::Arc;
use std::time::Duration;

use super::state::AppState;
use crate::credentials::Credential;

/// Shared stores announce tokens other replicas wrote; take them over so
/// this replica does not renew what is already renewed.
pub(super) async fn follow_shared_store(state: Arc<AppState>) {
    let Some(mut changes) = state.store.subscribe() else {
        return;
    };
    loop {
        match changes.recv().await {
            Ok(provider) => {
                let runtime = state.runtime();
                if let Some(Credential::OAuth2(p)) =
                    runtime.credentials.get(&provider).map(|c| c.as_ref())
                {
                    p.sync_from_store().await;
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                // Missed some: re-read every provider.
                for c in state.runtime().credentials.values() {
                    if let Credential::OAuth2(p) = c.as_ref() {
                        p.sync_from_store().await;
                    }
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

pub(super) async fn flush_store_periodically(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        if state.store.pending_error().is_some() {
            match state.store.flush().await {
                Ok(()) => tracing::info!("token store written again after an earlier failure"),
                Err(e) => tracing::error!(error = %e, "token store write still failing"),
            }
        }
    }
}
