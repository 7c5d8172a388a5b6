//! Reload: a new config replaces routes and providers while requests keep
//! flowing. Four triggers share one function, [`AppState::reload_file`]:
//! SIGHUP, `POST /_authproxy/reload` (which `authproxy reload` sends), and
//! the config watch ([`super::watch`]).
//!
//! One reload runs at a time; a trigger that arrives while one runs waits
//! for it and then takes the outcome of a reload that *started* after the
//! trigger, if there was one (it read the files as they were at the
//! trigger or later), instead of reading them again: N triggers at once
//! cause at most two reloads.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::signal::unix::Signal;
use tokio::sync::watch;

use super::runtime::build_runtime;
use super::state::{AppState, StartupError};
use super::systemd;
use crate::config::{Config, ConfigError, SourceFile};

/// What asked for a reload (for the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Signal,
    Endpoint,
    Watch,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Signal => "SIGHUP",
            Trigger::Endpoint => "POST /_authproxy/reload",
            Trigger::Watch => "config file changed",
        }
    }
}

/// A reload that was applied.
#[derive(Debug, Clone, Default)]
pub struct Reloaded {
    /// Changes it could not apply (`[server]` settings need a restart).
    pub warnings: Vec<String>,
}

/// A reload that was refused; the running config stays.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReloadError {
    /// The config does not load (messages scrubbed of secrets).
    #[error("{0}")]
    Config(ConfigError),
    /// It loads but cannot be applied (a different store, TLS setup).
    #[error("{0}")]
    Apply(String),
    /// The reload task failed (a bug).
    #[error("reload failed: {0}")]
    Failed(String),
}

/// The reload lock, and the files of the running config for the watch.
pub struct Reloads {
    /// Held while a reload runs; remembers the last outcome.
    last: Mutex<Option<Last>>,
    /// Triggers so far, numbered from 1.
    tickets: AtomicU64,
    /// The files the last load read (or tried to), with their digests.
    sources: watch::Sender<Arc<Vec<SourceFile>>>,
}

struct Last {
    /// The reload covered every trigger up to this ticket.
    covers: u64,
    outcome: Result<Reloaded, ReloadError>,
}

impl Default for Reloads {
    fn default() -> Self {
        Reloads {
            last: Mutex::new(None),
            tickets: AtomicU64::new(0),
            sources: watch::Sender::new(Arc::new(Vec::new())),
        }
    }
}

impl Reloads {
    /// The files the running config was loaded from (set at start by
    /// whoever loaded it, then by every reload).
    pub fn set_sources(&self, files: Vec<SourceFile>) {
        self.sources.send_replace(Arc::new(files));
    }

    /// Follows [`Reloads::set_sources`].
    pub fn sources(&self) -> watch::Receiver<Arc<Vec<SourceFile>>> {
        self.sources.subscribe()
    }
}

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

    /// Loads the running config's file again and applies it; a bad one is
    /// refused and the running one kept. Logs the outcome, counts it in
    /// the metrics and tells systemd. Loading reads files and building the
    /// runtime may scan the system's certificate store: this runs on the
    /// blocking pool, never on a worker that serves requests.
    pub async fn reload_file(self: &Arc<Self>, trigger: Trigger) -> Result<Reloaded, ReloadError> {
        let state = self.clone();
        match tokio::task::spawn_blocking(move || state.reload_file_blocking(trigger)).await {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::error!(error = %e, "reload failed; keeping the running config");
                Err(ReloadError::Failed(e.to_string()))
            }
        }
    }

    fn reload_file_blocking(&self, trigger: Trigger) -> Result<Reloaded, ReloadError> {
        let reloads = &self.reloads;
        let ticket = reloads.tickets.fetch_add(1, Ordering::SeqCst) + 1;
        let mut last = reloads.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(done) = last.as_ref().filter(|l| l.covers >= ticket) {
            return done.outcome.clone();
        }
        // Every trigger numbered up to here came before the files are read.
        let covers = reloads.tickets.load(Ordering::SeqCst);
        systemd::reloading();
        let path = self.runtime().config.file.clone();
        let outcome = self.load_and_apply(&path);
        match &outcome {
            Ok(done) => {
                for warning in &done.warnings {
                    tracing::warn!(trigger = trigger.as_str(), "{warning}");
                }
                tracing::info!(config = %path.display(), trigger = trigger.as_str(), "config reloaded");
                systemd::ready("serving; config reloaded");
            }
            Err(e) => {
                tracing::error!(config = %path.display(), trigger = trigger.as_str(), error = %e, "reload refused; keeping the running config");
                systemd::ready(
                    "serving; the last reload was refused (see the log), running config kept",
                );
            }
        }
        self.metrics.config_reloaded(outcome.is_ok());
        *last = Some(Last {
            covers,
            outcome: outcome.clone(),
        });
        outcome
    }

    fn load_and_apply(&self, path: &Path) -> Result<Reloaded, ReloadError> {
        let (loaded, files) = Config::load_tracked(path);
        let outcome = match loaded {
            Err(e) => Err(ReloadError::Config(e)),
            Ok(config) => {
                let mut warnings = Vec::new();
                if config.server != self.runtime().config.server {
                    warnings.push(
                        "[server] settings changed; they take effect at the next restart".into(),
                    );
                }
                self.reload(config)
                    .map(|()| Reloaded { warnings })
                    .map_err(|e| ReloadError::Apply(e.to_string()))
            }
        };
        let files = if outcome.is_ok() {
            files
        } else {
            // Keep watching what the running config reads too (a config
            // with a syntax error names no `${file:}` at all), as it is
            // now: an event that changes nothing does not retry the reload.
            let mut all = files;
            for f in self.reloads.sources.borrow().iter() {
                if !all.iter().any(|a| a.path == f.path) {
                    all.push(f.now());
                }
            }
            all
        };
        self.reloads.set_sources(files);
        outcome
    }
}

/// SIGHUP (`hup`, registered by the caller) reloads; see
/// [`AppState::reload_file`].
pub async fn reload_on_sighup(state: Arc<AppState>, mut hup: Signal) {
    while hup.recv().await.is_some() {
        let _ = state.reload_file(Trigger::Signal).await;
    }
}
