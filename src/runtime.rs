//! What a request needs, built from one config: route table, credentials,
//! upstream clients. Swapped whole on reload, so a request sees one
//! consistent version from start to end.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{Config, ProviderKind};
use crate::credentials::{Credential, OAuthProvider, StaticHeaders};
use crate::oauth::client::RetryPolicy;
use crate::oauth::TokenClient;
use crate::routes::{Route, RouteTable};
use crate::store::{self, StoreError, TokenStore};
use crate::telemetry::{Metrics, RouteMetrics};
use crate::upstream::{TlsSetupError, Upstreams};

pub struct Runtime {
    pub config: Arc<Config>,
    pub routes: RouteTable,
    /// By provider name.
    pub credentials: HashMap<String, Arc<Credential>>,
    /// By route index: the route's credential and metric handles, found
    /// once here rather than by name on every request.
    route_credentials: Vec<Option<Arc<Credential>>>,
    route_metrics: Vec<RouteMetrics>,
    pub upstreams: Upstreams,
    pub metrics: Arc<Metrics>,
}

impl Runtime {
    /// The credential of `route` (`None` for a route without a provider).
    pub fn credential(&self, route: &Route) -> Option<&Credential> {
        self.route_credentials[route.index].as_deref()
    }

    pub fn route_metrics(&self, route_index: usize) -> &RouteMetrics {
        &self.route_metrics[route_index]
    }
}

/// Failures after the config itself was accepted.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Tls(#[from] TlsSetupError),
    #[error("{0}")]
    TokenClient(String),
    #[error("cannot listen on {addr}: {reason}")]
    Bind { addr: String, reason: String },
    #[error("store kind changed from `{from}` to `{to}`; a reload cannot move tokens between stores, restart instead")]
    StoreChanged { from: String, to: String },
}

/// Shared by every request: the current runtime plus what outlives reloads.
pub struct AppState {
    runtime: ArcSwap<Runtime>,
    pub store: Arc<dyn TokenStore>,
    pub token_client: TokenClient,
    pub metrics: Arc<Metrics>,
    pub logins: crate::credentials::implicit::PendingLogins,
}

impl AppState {
    pub fn new(config: Config) -> Result<Arc<AppState>, StartupError> {
        Self::with_retry(config, RetryPolicy::default())
    }

    /// As [`AppState::new`] with a chosen token-endpoint retry policy.
    pub fn with_retry(config: Config, retry: RetryPolicy) -> Result<Arc<AppState>, StartupError> {
        let store = store::open(&config.store)?;
        let token_client = TokenClient::new(retry).map_err(StartupError::TokenClient)?;
        let metrics = Arc::new(Metrics::default());
        let runtime = build_runtime(config, &store, &token_client, &metrics, None)?;
        Ok(Arc::new(AppState {
            runtime: ArcSwap::from_pointee(runtime),
            store,
            token_client,
            metrics,
            logins: Default::default(),
        }))
    }

    /// The runtime to use for one request.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// Replaces routes and providers with those of `config`. Providers whose
    /// settings did not change keep their runtime (and so their tokens);
    /// requests in flight finish on the runtime they started with.
    pub fn reload(&self, config: Config) -> Result<(), StartupError> {
        let old = self.runtime();
        if old.config.store != config.store {
            return Err(StartupError::StoreChanged {
                from: format!("{:?}", old.config.store)
                    .split([' ', '{'])
                    .next()
                    .unwrap_or("")
                    .to_string(),
                to: format!("{:?}", config.store)
                    .split([' ', '{'])
                    .next()
                    .unwrap_or("")
                    .to_string(),
            });
        }
        let runtime = build_runtime(
            config,
            &self.store,
            &self.token_client,
            &self.metrics,
            Some(&old),
        )?;
        self.runtime.store(Arc::new(runtime));
        Ok(())
    }
}

fn build_runtime(
    config: Config,
    store: &Arc<dyn TokenStore>,
    token_client: &TokenClient,
    metrics: &Arc<Metrics>,
    previous: Option<&Runtime>,
) -> Result<Runtime, StartupError> {
    let upstreams = Upstreams::new(&config)?;
    let routes = RouteTable::new(&config.routes);
    let mut credentials = HashMap::new();
    for (name, provider) in &config.providers {
        let unchanged = previous.and_then(|p| {
            (p.config.providers.get(name) == Some(provider))
                .then(|| p.credentials.get(name).cloned())
                .flatten()
        });
        let credential = match unchanged {
            Some(c) => c,
            None => Arc::new(match &provider.kind {
                ProviderKind::Static(s) => Credential::Static(StaticHeaders::new(s)),
                ProviderKind::OAuth2(o) => Credential::OAuth2(Arc::new(OAuthProvider::new(
                    name,
                    (**o).clone(),
                    token_client.clone(),
                    store.clone(),
                    metrics.clone(),
                    format!("/_authproxy/login/{name}"),
                ))),
            }),
        };
        credentials.insert(name.clone(), credential);
    }
    // Config checking made sure every route's provider exists.
    let (route_credentials, route_metrics) = routes
        .in_config_order()
        .into_iter()
        .map(|r| {
            let credential = r
                .provider
                .as_ref()
                .and_then(|p| credentials.get(p).cloned());
            (credential, RouteMetrics::new(metrics, r.label.clone()))
        })
        .unzip();
    Ok(Runtime {
        config: Arc::new(config),
        routes,
        credentials,
        route_credentials,
        route_metrics,
        upstreams,
        metrics: metrics.clone(),
    })
}
