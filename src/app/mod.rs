//! The running proxy: what one config builds ([`runtime`]), the state
//! shared by every request ([`state`]), reload and its triggers
//! ([`reload`]: SIGHUP, the endpoint; [`watch`]: the config files), stop
//! signals ([`signals`]), the systemd notify protocol ([`systemd`]), work
//! besides requests ([`background`]), the file-descriptor limit at start
//! ([`limits`]), and the per-request dispatcher every connection serves
//! ([`dispatch`]).

mod background;
mod connect;
pub mod dispatch;
pub mod limits;
mod record;
pub mod reload;
pub mod runtime;
pub mod signals;
pub mod state;
pub mod systemd;
pub mod watch;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;

pub use dispatch::App;
pub use runtime::Runtime;
pub use state::{AppState, StartupError};

/// Exit code for a bad config or bad usage (sysexits EX_USAGE).
pub const EXIT_CONFIG: u8 = 64;

/// Serves until `shutdown` resolves, then drains: `local` answers
/// `/_authproxy/`, the rest is forwarded. Also follows a shared store's
/// changes and retries pending token-store writes in the background.
pub async fn serve(
    state: Arc<AppState>,
    local: Router,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let server = &state.runtime().config.server;
    let limits = crate::http::Limits {
        max_header_bytes: server.max_header_bytes,
        max_headers: server.max_headers,
        header_read_timeout: server.header_read_timeout,
        drain_timeout: server.drain_timeout,
        max_connections: limits::max_connections(server),
        counts: state.metrics.connections.clone(),
    };
    // Usually done already (`authproxy run` does it before it says it
    // listens); then this does nothing.
    state.upgrade_store_records().await;
    let flusher = tokio::spawn(background::flush_store_periodically(state.clone()));
    let watcher = tokio::spawn(background::follow_shared_store(state.clone()));
    let app = App::new(state.clone(), local, limits.clone());
    crate::http::serve(
        listener,
        move |req, activity: &Arc<crate::http::head_timeout::Activity>| app.serve(req, activity),
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
