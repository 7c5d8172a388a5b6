//! authproxy: a local reverse proxy that injects credentials (static
//! headers, OAuth2 tokens kept fresh) into requests to upstream APIs.
//!
//! The request's path: [`http`] accepts the connection and reads the
//! request, [`app`]'s dispatcher logs it and guards it
//! ([`proxy::security`]), [`admin`] answers `/_authproxy/`, and [`proxy`]
//! forwards the rest: route ([`proxy::routes`]), inject the
//! [`credentials`], send through the [`upstream`] pools, replay after a
//! 401.
//!
//! Layers, top to bottom; a module uses only modules below it:
//!
//! 1. [`cli`]: the subcommands; [`demo`]: `authproxy demo`.
//! 2. This crate root: [`run`] wires the local endpoints into the app.
//! 3. [`admin`]: the local endpoints; they read the [`app`] state.
//! 4. [`app`]: what one config builds, reload, signals, background tasks,
//!    the per-request dispatcher.
//! 5. [`proxy`]: forwarding (security guard, routes, forward, replay,
//!    upgrades).
//! 6. [`error`]: the one error enum and its JSON answer.
//! 7. [`credentials`]: one module per credential kind; the OAuth2
//!    provider runtime.
//! 8. [`store`] (tokens between restarts), [`upstream`] (pools, TLS) and
//!    [`ca`] (forward-proxy mode's local CA and leaf certificates).
//! 9. [`config`]: raw TOML → checked types.
//! 10. [`oauth`]: the OAuth wire protocol only.
//! 11. [`telemetry`] (logs, access log, metrics) and [`http`] (hyper glue).
//! 12. Leaves: [`secret`], [`clock`], [`text`].

pub mod admin;
pub mod app;
pub mod ca;
pub mod cli;
pub mod clock;
pub mod config;
pub mod credentials;
pub mod demo;
pub mod error;
pub mod http;
pub mod oauth;
pub mod proxy;
pub mod secret;
pub mod store;
pub mod telemetry;
pub mod text;
pub mod upstream;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

pub use app::{AppState, StartupError};
pub use config::Config;
pub use upstream::tls::install_crypto_provider;

/// Serves until `shutdown` resolves, then drains: the local endpoints
/// under `/_authproxy/`, everything else forwarded. Also retries pending
/// token-store writes and follows a shared store in the background.
pub async fn run(
    state: Arc<AppState>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let local = admin::router(state.clone());
    app::serve(state, local, listener, shutdown).await;
}
