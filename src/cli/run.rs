//! `authproxy run`: serve until SIGTERM or SIGINT; SIGHUP, `authproxy
//! reload` and a changed config file reload; systemd is told each step.

use std::path::Path;
use std::process::ExitCode;

use crate::app::reload::reload_on_sighup;
use crate::app::signals::{hangup, shutdown_signal};
use crate::app::{systemd, watch, AppState, EXIT_CONFIG};
use crate::config::Config;
use crate::telemetry::{self, LogFormat};

pub(super) async fn run(path: &Path, format: LogFormat) -> ExitCode {
    let (config, files) = Config::load_tracked(path);
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            super::config_error(format, &e);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // Before anything that takes time, and before the "listening" line
    // tells operators (and scripts) that the proxy is up: until a handler
    // is registered, SIGHUP and SIGTERM would end the process.
    let shutdown = shutdown_signal();
    let hup = hangup();
    let _log = telemetry::init(format);
    let listen = config.server.listen;
    let watch_config = config.server.watch_config;
    let state = match AppState::new(config) {
        Ok(s) => s,
        Err(e) => {
            telemetry::report_error(format, &e.to_string(), None);
            return ExitCode::FAILURE;
        }
    };
    state.reloads.set_sources(files);
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            telemetry::report_error(format, &format!("cannot listen on {listen}: {e}"), None);
            return ExitCode::FAILURE;
        }
    };
    // Records in an older form (fingerprint, plain text while a key is
    // set) are written again before serving; bounded, since a shared
    // store may make it wait for another replica's lease (the next
    // renewal does it then).
    let upgrade = state.upgrade_store_records();
    if tokio::time::timeout(std::time::Duration::from_secs(10), upgrade)
        .await
        .is_err()
    {
        tracing::warn!("stored records not rewritten within 10 s; they are at their next renewal");
    }
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    match hup {
        Ok(hup) => {
            tokio::spawn(reload_on_sighup(state.clone(), hup));
        }
        Err(e) => tracing::error!(error = %e, "cannot handle SIGHUP; reloading is off"),
    }
    if watch_config {
        tokio::spawn(watch::watch_config(state.clone()));
    }
    // The listener is bound: connections from now on are queued and
    // served, so `systemctl start` may return. Before the "listening" line,
    // so that whoever reads it knows systemd was told.
    systemd::ready(&format!("serving on {addr}"));
    tracing::info!(address = %addr, config = %path.display(), store = %state.store.describe(), watch_config, "listening on {addr}");
    let shutdown = async move {
        shutdown.await;
        systemd::stopping();
    };
    crate::run(state, listener, shutdown).await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}
