//! Shared by every request: the current [`Runtime`] plus what outlives
//! reloads (token store, token client, egress proxy, metrics).

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::reload::Reloads;
use super::runtime::{build_runtime, Runtime};
use crate::config::{Config, EgressConfig};
use crate::credentials::Credential;
use crate::http::buffer::BufferBudget;
use crate::oauth::client::RetryPolicy;
use crate::oauth::TokenClient;
use crate::store::{self, StoreError, TokenStore};
use crate::telemetry::Metrics;
use crate::upstream::egress::{announce, token_proxies};
use crate::upstream::TlsSetupError;

/// Failures after the config itself was accepted.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Tls(#[from] TlsSetupError),
    #[error("{0}")]
    TokenClient(String),
    #[error("{0}")]
    Ca(#[from] crate::ca::CaError),
    #[error("cannot listen on {addr}: {reason}")]
    Bind { addr: String, reason: String },
    #[error("[store] changed (kind `{from}` to `{to}`); a reload cannot move tokens between stores or change their encryption key, restart instead")]
    StoreChanged { from: String, to: String },
}

/// Shared by every request: the current runtime plus what outlives reloads.
pub struct AppState {
    pub(super) runtime: ArcSwap<Runtime>,
    pub store: Arc<dyn TokenStore>,
    pub token_client: TokenClient,
    /// The egress proxy the process started with: token requests and
    /// upstream connections keep it across reloads.
    pub egress: Arc<EgressConfig>,
    pub metrics: Arc<Metrics>,
    /// What all replay buffers together may hold (`server.max_buffered_bytes`).
    pub buffers: Arc<BufferBudget>,
    /// One reload at a time, and the files the running config was read from.
    pub reloads: Reloads,
    /// Forward-proxy mode's CA, loaded (or made) at start when
    /// `[forward_proxy] enabled`; kept across reloads.
    pub forward_ca: Option<Arc<crate::ca::LocalCa>>,
}

impl AppState {
    pub fn new(config: Config) -> Result<Arc<AppState>, StartupError> {
        Self::with_retry(config, RetryPolicy::default())
    }

    /// As [`AppState::new`] with a chosen token-endpoint retry policy.
    pub fn with_retry(config: Config, retry: RetryPolicy) -> Result<Arc<AppState>, StartupError> {
        let forward_ca = match config.forward_proxy.enabled {
            true => Some(Arc::new(crate::ca::LocalCa::load_or_create(
                &config.forward_proxy,
            )?)),
            false => None,
        };
        let store = store::open(&config.store)?;
        let egress = Arc::new(config.server.egress.clone());
        announce(&egress);
        let token_client = TokenClient::with_proxies(retry, token_proxies(&egress))
            .map_err(StartupError::TokenClient)?;
        let metrics = Arc::new(Metrics::default());
        let buffers = Arc::new(BufferBudget::new(
            config.server.max_buffered_bytes,
            metrics.buffers.clone(),
        ));
        let runtime = build_runtime(
            config,
            &store,
            &token_client,
            &egress,
            &metrics,
            &buffers,
            None,
        )?;
        Ok(Arc::new(AppState {
            runtime: ArcSwap::from_pointee(runtime),
            store,
            token_client,
            egress,
            metrics,
            buffers,
            reloads: Reloads::default(),
            forward_ca,
        }))
    }

    /// The runtime to use for one request.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// Writes stored records that were taken at start but are in an older
    /// form again (see `OAuthProvider::upgrade_stored_record`), and starts
    /// the retry of rotations a crash interrupted within `rotation_grace`
    /// (see `OAuthProvider::resume_interrupted_rotation`; in tasks of
    /// their own, never cancelled halfway by a caller's timeout). Once per
    /// provider; later calls do nothing.
    pub async fn upgrade_store_records(&self) {
        let runtime = self.runtime();
        for credential in runtime.credentials.values() {
            if let Credential::OAuth2(p) = credential.as_ref() {
                let p = p.clone();
                tokio::spawn(async move { p.resume_interrupted_rotation().await });
            }
        }
        for credential in runtime.credentials.values() {
            if let Credential::OAuth2(p) = credential.as_ref() {
                p.upgrade_stored_record().await;
            }
        }
    }
}
