//! Prometheus metrics, exposed at `/_authproxy/metrics`. Labels never carry
//! secrets: routes are config prefixes, providers are config names.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::http::buffer::BufferMetrics;

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
pub struct LoginLabels {
    pub provider: String,
    pub grant: String,
    /// `ok`, `denied`, `expired`, `error`.
    pub outcome: String,
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
    pub logins: Family<LoginLabels, Counter>,
    pub replays: Family<ProviderLabels, Counter>,
    /// Requests refused by a route's `allow` policy.
    pub policy_denied: Family<RouteLabels, Counter>,
    pub store_write_failures: Counter<u64, AtomicU64>,
    /// What the replay buffers hold, handed to their budget.
    pub buffers: BufferMetrics,
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
        let policy_denied = Family::<RouteLabels, Counter>::default();
        let logins = Family::<LoginLabels, Counter>::default();
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
            "Token renewals started, by provider and reason (initial, proactive, expired, x_api_expired, x_api_revoked, unauthorized)",
            reauthentications.clone(),
        );
        registry.register(
            "logins",
            "Finished user logins (authorization code, device code), by provider, grant and outcome (ok, denied, expired, error)",
            logins.clone(),
        );
        registry.register(
            "replays",
            "Requests replayed after a renewal, by provider",
            replays.clone(),
        );
        registry.register(
            "policy_denied",
            "Requests refused by their route's `allow` policy (403 forbidden_by_policy), by route prefix",
            policy_denied.clone(),
        );
        registry.register(
            "log_lines_dropped",
            "Log lines dropped because stderr could not keep up (4 MiB waiting)",
            super::writer::LINES_DROPPED.clone(),
        );
        registry.register(
            "store_write_failures",
            "Token store writes that failed (tokens kept in memory and retried)",
            store_write_failures.clone(),
        );
        let buffers = BufferMetrics::default();
        registry.register(
            "buffered_bytes_memory",
            "Bytes of request bodies kept for a replay, held in memory",
            buffers.memory.clone(),
        );
        registry.register(
            "buffered_bytes_file",
            "Bytes of request bodies kept for a replay, held in the spill file (whole 64 KiB blocks)",
            buffers.file.clone(),
        );
        registry.register(
            "replay_buffer_refused",
            "Request bodies that streamed without replay because server.max_buffered_bytes was in use",
            buffers.refused.clone(),
        );
        Metrics {
            registry,
            buffers,
            requests,
            upstream_latency,
            token_requests,
            reauthentications,
            logins,
            replays,
            policy_denied,
            store_write_failures,
        }
    }
}

/// One route's request metrics, resolved once per config instead of
/// looked up (lock, hash, compare) in the families on every request. The
/// handles share their counts with the families, so the exposition is
/// unchanged.
pub struct RouteMetrics {
    label: Arc<str>,
    latency: Histogram,
    /// Counters of the common statuses, created on first use; the rest go
    /// through the family.
    by_status: [std::sync::OnceLock<Counter>; COMMON_STATUSES.len()],
}

const COMMON_STATUSES: [u16; 16] = [
    200, 201, 204, 206, 301, 302, 304, 400, 401, 403, 404, 413, 429, 500, 502, 504,
];

impl RouteMetrics {
    pub fn new(metrics: &Metrics, label: Arc<str>) -> RouteMetrics {
        let latency = metrics
            .upstream_latency
            .get_or_create(&RouteLabels {
                route: label.clone(),
            })
            .clone();
        RouteMetrics {
            label,
            latency,
            by_status: Default::default(),
        }
    }

    pub fn count(&self, metrics: &Metrics, status: u16) {
        let resolve = || {
            metrics
                .requests
                .get_or_create(&RequestLabels {
                    route: self.label.clone(),
                    status,
                })
                .clone()
        };
        match COMMON_STATUSES.iter().position(|&s| s == status) {
            Some(i) => self.by_status[i].get_or_init(resolve).inc(),
            None => resolve().inc(),
        };
    }

    /// One more request refused by the route's `allow` policy.
    pub fn count_policy_denied(&self, metrics: &Metrics) {
        metrics
            .policy_denied
            .get_or_create(&RouteLabels {
                route: self.label.clone(),
            })
            .inc();
    }

    pub fn observe_latency(&self, latency: std::time::Duration) {
        self.latency.observe(latency.as_secs_f64());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_handles_count_into_the_families() {
        let metrics = Metrics::default();
        let route = RouteMetrics::new(&metrics, Arc::from("/api/"));
        route.count(&metrics, 200);
        route.count(&metrics, 200);
        route.count(&metrics, 418);
        route.observe_latency(std::time::Duration::from_millis(3));
        // A second config's handles for the same prefix add to the same series.
        RouteMetrics::new(&metrics, Arc::from("/api/")).count(&metrics, 200);
        let text = metrics.render();
        assert!(
            text.contains(r#"authproxy_requests_total{route="/api/",status="200"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"authproxy_requests_total{route="/api/",status="418"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"authproxy_upstream_latency_seconds_count{route="/api/"} 1"#),
            "{text}"
        );
    }
}
