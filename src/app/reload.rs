//! Reload: a new config replaces routes and providers while requests keep
//! flowing; SIGHUP asks for it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::signal::unix::Signal;

use super::runtime::build_runtime;
use super::state::{AppState, StartupError};
use crate::config::Config;

impl AppState {
    /// Replaces routes and providers with those of `config`. Providers whose
    /// settings did not change keep their runtime (and so their tokens);
    /// requests in flight finish on the runtime they started with.
    pub fn reload(&self, config: Config) -> Result<(), StartupError> {
        let old = self.runtime();
        if old.config.store != config.store {
            return Err(StartupError::StoreChanged {
                from: old.config.store.kind().to_string(),
                to: config.store.kind().to_string(),
            });
        }
        let runtime = build_runtime(
            config,
            &self.store,
            &self.token_client,
            &self.egress,
            &self.metrics,
            &self.buffers,
            Some(&old),
        )?;
        self.runtime.store(Arc::new(runtime));
        Ok(())
    }
}

/// SIGHUP (`hup`, registered by the caller): load the config again; a bad
/// one is logged and the old one kept.
///
/// Loading reads files and building the runtime scans the system's
/// certificate store: both run on the blocking pool, not on a worker that
/// serves requests.
pub async fn reload_on_sighup(state: Arc<AppState>, path: PathBuf, mut hup: Signal) {
    while hup.recv().await.is_some() {
        let state = state.clone();
        let path = path.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || reload_from(&state, &path)).await {
            tracing::error!(error = %e, "reload failed; keeping the running config");
        }
    }
}

/// Loads the config at `path` and swaps it in, logging the outcome.
/// Blocking.
fn reload_from(state: &AppState, path: &Path) {
    match Config::load(path) {
        Err(e) => {
            tracing::error!(error = %e, "reload refused: config has errors; keeping the running config")
        }
        Ok(config) => {
            if config.server != state.runtime().config.server {
                tracing::warn!("[server] settings changed; they take effect at the next restart");
            }
            match state.reload(config) {
                Ok(()) => tracing::info!(config = %path.display(), "config reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "reload refused; keeping the running config")
                }
            }
        }
    }
}
