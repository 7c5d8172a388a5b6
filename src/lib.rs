//! authproxy: a local reverse proxy that injects credentials (static
//! headers, OAuth2 tokens kept fresh) into requests to upstream APIs.
//!
//! The request path: [`server`] accepts, [`service`] logs and guards every
//! request ([`security`]), [`admin`] answers `/_authproxy/`, and [`proxy`]
//! forwards the rest using the [`routes`] table and the [`credentials`] of
//! the current [`runtime::Runtime`].

pub mod admin;
pub mod cli;
pub mod clock;
pub mod config;
pub mod credentials;
pub mod demo;
pub mod error;
pub mod http;
pub mod oauth;
pub mod proxy;
pub mod routes;
pub mod runtime;
pub mod secret;
pub mod security;
pub mod service;
pub mod store;
pub mod telemetry;
pub mod text;
pub mod upstream;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

pub use config::Config;
pub use runtime::{AppState, StartupError};
pub use upstream::tls::install_crypto_provider;

/// Serves until `shutdown` resolves, then drains. Also retries pending
/// token-store writes in the background.
pub async fn run(state: Arc<AppState>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let server = &state.runtime().config.server;
    let limits = http::Limits {
        max_header_bytes: server.max_header_bytes,
        max_headers: server.max_headers,
        header_read_timeout: server.header_read_timeout,
        drain_timeout: server.drain_timeout,
    };
    let flusher = tokio::spawn(flush_store_periodically(state.clone()));
    let watcher = tokio::spawn(follow_shared_store(state.clone()));
    let app = service::App::new(state.clone());
    http::serve(
        listener,
        move |req, activity: &Arc<http::head_timeout::Activity>| app.serve(req, activity),
        shutdown,
        &limits,
    )
    .await;
    flusher.abort();
    watcher.abort();
    if let Err(e) = state.store.flush().await {
        tracing::error!(error = %e, "token store still not written at shutdown");
    }
}

/// Shared stores announce tokens other replicas wrote; take them over so
/// this replica does not renew what is already renewed.
async fn follow_shared_store(state: Arc<AppState>) {
    let Some(mut changes) = state.store.subscribe() else {
        return;
    };
    loop {
        match changes.recv().await {
            Ok(provider) => {
                let runtime = state.runtime();
                if let Some(credentials::Credential::OAuth2(p)) =
                    runtime.credentials.get(&provider).map(|c| c.as_ref())
                {
                    p.sync_from_store().await;
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                // Missed some: re-read every provider.
                for c in state.runtime().credentials.values() {
                    if let credentials::Credential::OAuth2(p) = c.as_ref() {
                        p.sync_from_store().await;
                    }
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

async fn flush_store_periodically(state: Arc<AppState>) {
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
