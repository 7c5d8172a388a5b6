//! Process signals: SIGTERM and SIGINT stop the proxy, SIGHUP reloads it.
//!
//! Each handler is registered when its function is called, not when a
//! future is first polled: a signal that arrives before registration gets
//! its default action, which for SIGHUP and SIGTERM ends the process. So
//! `run` calls these before it binds and says it is listening.

use std::future::Future;

use tokio::signal::unix::{signal, Signal, SignalKind};

/// Registers SIGTERM and SIGINT now; the future resolves on either.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    }
}

/// Registers SIGHUP now; see [`super::reload::reload_on_sighup`].
pub fn hangup() -> std::io::Result<Signal> {
    signal(SignalKind::hangup())
}
