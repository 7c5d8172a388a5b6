//! Prometheus metrics, exposed at `/_authproxy/metrics`. Labels never carry
//! secrets: routes are config prefixes, providers are config names.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: Arc<str>,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    pub provider: String,
    pub grant: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReauthLabels {
    pub provider: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProviderLabels {
    pub provider: String,
}

/// Every metric the proxy keeps. One per process, shared by reloads.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub upstream_latency: Family<RouteLabels, Histogram>,
    pub token_requests: Family<TokenLabels, Counter>,
    pub reauthentications: Family<ReauthLabels, Counter>,
    pub replays: Family<ProviderLabels, Counter>,
    pub store_write_failures: Counter<u64, AtomicU64>,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0005, 2.0, 16,
    ))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("authproxy");
        let requests = Family::<RequestLabels, Counter>::default();
        let upstream_latency = Family::<RouteLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let token_requests = Family::<TokenLabels, Counter>::default();
        let reauthentications = Family::<ReauthLabels, Counter>::default();
        let replays = Family::<ProviderLabels, Counter>::default();
        let store_write_failures = Counter::default();
        registry.register(
            "requests",
            "Requests answered, by route prefix (or `-` for none) and status",
            requests.clone(),
        );
        registry.register(
            "upstream_latency_seconds",
            "Time until the upstream's response head, by route prefix",
            upstream_latency.clone(),
        );
        registry.register(
            "token_requests",
            "Token endpoint requests, by provider, grant and outcome",
            token_requests.clone(),
        );
        registry.register(
            "reauthentications",
            "Renewals caused by an upstream 401, by provider and reason (expired, revoked, unauthorized)",
            reauthentications.clone(),
        );
        registry.register(
            "replays",
            "Requests replayed after a renewal, by provider",
            replays.clone(),
        );
        registry.register(
            "store_write_failures",
            "Token store writes that failed (tokens kept in memory and retried)",
            store_write_failures.clone(),
        );
        Metrics {
            registry,
            requests,
            upstream_latency,
            token_requests,
            reauthentications,
            replays,
            store_write_failures,
        }
    }
}

impl Metrics {
    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}
