//! `authproxy run`: serve until SIGTERM or SIGINT; SIGHUP reloads.

use std::path::Path;
use std::process::ExitCode;

use super::load;
use crate::app::reload::reload_on_sighup;
use crate::app::signals::{hangup, shutdown_signal};
use crate::app::AppState;
use crate::telemetry::{self, LogFormat};

pub(super) async fn run(path: &Path, format: LogFormat) -> ExitCode {
    let config = match load(path, format) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // Before anything that takes time, and before the "listening" line
    // tells operators (and scripts) that the proxy is up: until a handler
    // is registered, SIGHUP and SIGTERM would end the process.
    let shutdown = shutdown_signal();
    let hup = hangup();
    let _log = telemetry::init(format);
    let listen = config.server.listen;
    let state = match AppState::new(config) {
        Ok(s) => s,
        Err(e) => {
            telemetry::report_error(format, &e.to_string(), None);
            return ExitCode::FAILURE;
        }
    };
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
    tracing::info!(address = %addr, config = %path.display(), store = %state.store.describe(), "listening on {addr}");
    match hup {
        Ok(hup) => {
            tokio::spawn(reload_on_sighup(state.clone(), path.to_path_buf(), hup));
        }
        Err(e) => tracing::error!(error = %e, "cannot handle SIGHUP; reloading is off"),
    }
    crate::run(state, listener, shutdown).await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}
