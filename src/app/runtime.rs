//! What a request needs, built from one config: route table, credentials,
//! upstream pools, metric handles. Swapped whole on reload, so a request
//! sees one consistent version from start to end.

use std::collections::HashMap;
use std::sync::Arc;

use super::state::StartupError;
use crate::config::{Config, EgressConfig, ProviderKind};
use crate::credentials::oauth2::client_for;
use crate::credentials::oauth2::configured_secrets;
use crate::credentials::{Credential, OAuthProvider};
use crate::http::buffer::BufferBudget;
use crate::oauth::TokenClient;
use crate::proxy::routes::RouteTable;
use crate::proxy::Forwarder;
use crate::store::TokenStore;
use crate::telemetry::{Metrics, RouteMetrics};
use crate::upstream::Upstreams;

pub struct Runtime {
    pub config: Arc<Config>,
    /// By provider name.
    pub credentials: HashMap<String, Arc<Credential>>,
    /// Route table, each route's credential, upstream pools.
    pub proxy: Forwarder,
    /// By route index: the route's metric handles, found once here rather
    /// than by name on every request.
    route_metrics: Vec<RouteMetrics>,
    pub metrics: Arc<Metrics>,
}

impl Runtime {
    pub fn route_metrics(&self, route_index: usize) -> &RouteMetrics {
        &self.route_metrics[route_index]
    }
}

/// Builds the runtime of `config`. Providers whose settings are the same
/// as in `previous` keep their runtime (and so their tokens).
pub(super) fn build_runtime(
    config: Config,
    store: &Arc<dyn TokenStore>,
    token_client: &TokenClient,
    egress: &EgressConfig,
    metrics: &Arc<Metrics>,
    buffers: &Arc<BufferBudget>,
    previous: Option<&Runtime>,
) -> Result<Runtime, StartupError> {
    let upstreams = Upstreams::new(&config, egress)?;
    let routes = RouteTable::new(&config.routes);
    // Token endpoints' text is scrubbed of these too (kept providers get
    // the new list).
    let secrets = Arc::new(configured_secrets(&config));
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
                ProviderKind::OAuth2(o) => {
                    let client = client_for(o, token_client)
                        .map_err(|e| StartupError::TokenClient(format!("providers.{name}: {e}")))?;
                    Credential::OAuth2(Arc::new(OAuthProvider::new(
                        name,
                        (**o).clone(),
                        client,
                        store.clone(),
                        metrics.clone(),
                        format!("/_authproxy/login/{name}"),
                    )))
                }
                kind => Credential::fixed(kind).expect("every kind but oauth2 is fixed"),
            }),
        };
        if let Credential::OAuth2(p) = credential.as_ref() {
            p.set_other_secrets(secrets.clone());
            p.bind();
            // Discovery at start and on every reload (kept providers too:
            // the issuer may have moved its endpoints).
            p.spawn_discovery();
        }
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
    let config = Arc::new(config);
    let proxy = Forwarder::new(
        config.clone(),
        routes,
        route_credentials,
        upstreams,
        metrics.clone(),
        buffers.clone(),
    );
    Ok(Runtime {
        config,
        credentials,
        proxy,
        route_metrics,
        metrics: metrics.clone(),
    })
}
