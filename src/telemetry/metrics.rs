//! Prometheus metrics, exposed at `/_authproxy/metrics`. Labels never carry
//! secrets: routes are config prefixes, providers are config names.
//!
//! Two text formats ([`Format`]): OpenMetrics 1.0 for clients that ask for
//! it, and the classic Prometheus text format 0.0.4 for everyone else. The
//! registry writes OpenMetrics; [`to_prometheus_text`] turns that into
//! 0.0.4, where a counter's `# TYPE` names its `_total` series (else a
//! classic parser files the samples under an untyped family of their own)
//! and there is no `# EOF`.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

mod format;

pub use format::{to_prometheus_text, Format};

use crate::http::buffer::BufferMetrics;
use crate::http::load::Counts;

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
pub struct ProtocolLabels {
    pub route: Arc<str>,
    /// `h1` or `h2`.
    pub protocol: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrpcLabels {
    pub route: Arc<str>,
    pub grpc_status: u16,
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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabels {
    pub version: &'static str,
    pub commit: &'static str,
}

/// The package version and the git commit it was built from (`unknown`
/// outside a git checkout; see build.rs).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const COMMIT: &str = env!("AUTHPROXY_COMMIT");

/// Every metric the proxy keeps. One per process, shared by reloads.
pub struct Metrics {
    registry: Registry,
    /// Values set at scrape time ([`Metrics::render`]) are set and encoded
    /// under this lock, so two scrapes cannot mix their values.
    scrape: Mutex<()>,
    pub requests: Family<RequestLabels, Counter>,
    pub upstream_latency: Family<RouteLabels, Histogram>,
    pub token_requests: Family<TokenLabels, Counter>,
    pub reauthentications: Family<ReauthLabels, Counter>,
    pub logins: Family<LoginLabels, Counter>,
    pub replays: Family<ProviderLabels, Counter>,
    /// Requests refused by a route's `allow` policy.
    pub policy_denied: Family<RouteLabels, Counter>,
    /// Upstream answers by the protocol they came in.
    pub upstream_responses: Family<ProtocolLabels, Counter>,
    /// gRPC answers by their `grpc-status`.
    pub grpc_responses: Family<GrpcLabels, Counter>,
    pub store_write_failures: Counter<u64, AtomicU64>,
    /// What the replay buffers hold, handed to their budget.
    pub buffers: BufferMetrics,
    /// Config reloads by outcome (`success`, `failure`).
    pub config_reloads: Family<OutcomeLabels, Counter>,
    /// Unix time of the last config load that was applied (the start's too).
    pub config_last_reload_success: Gauge,
    /// 1 if the last reload was applied, 0 if it was refused.
    pub config_last_reload_successful: Gauge,
    /// Connections and requests, counted by the server.
    pub connections: Counts,
    connections_by_state: Family<StateLabels, Gauge>,
    inflight_requests: Gauge,
    token_expiry: Family<ProviderLabels, Gauge>,
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
        let upstream_responses = Family::<ProtocolLabels, Counter>::default();
        let grpc_responses = Family::<GrpcLabels, Counter>::default();
        registry.register(
            "upstream_responses",
            "Upstream answers, by route prefix and protocol (h1, h2)",
            upstream_responses.clone(),
        );
        registry.register(
            "grpc_responses",
            "gRPC answers (the upstream's and the proxy's own), by route prefix and grpc-status",
            grpc_responses.clone(),
        );
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
        let config_reloads = Family::<OutcomeLabels, Counter>::default();
        // Both outcomes from the start, so `rate()` and alerts see a zero
        // rather than no series.
        for outcome in ["success", "failure"] {
            let _ = config_reloads.get_or_create(&OutcomeLabels { outcome });
        }
        registry.register(
            "config_reloads",
            "Config reloads (SIGHUP, authproxy reload, POST /_authproxy/reload, file watch), by outcome: success or failure (the running config kept)",
            config_reloads.clone(),
        );
        let config_last_reload_success = Gauge::default();
        config_last_reload_success.set(crate::clock::unix_now() as i64);
        registry.register(
            "config_last_reload_success_timestamp_seconds",
            "Unix time the running config was loaded (at start or by the last reload applied)",
            config_last_reload_success.clone(),
        );
        let config_last_reload_successful = Gauge::default();
        config_last_reload_successful.set(1);
        registry.register(
            "config_last_reload_successful",
            "1 if the last config reload was applied (or none was tried), 0 if it was refused",
            config_last_reload_successful.clone(),
        );
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: VERSION,
                commit: COMMIT,
            })
            .set(1);
        registry.register(
            "build_info",
            "Always 1; the labels say which authproxy version and git commit runs",
            build_info,
        );
        let connections_by_state = Family::<StateLabels, Gauge>::default();
        registry.register(
            "connections",
            "Client connections open, by state: active (a request in flight, or upgraded to a tunnel) or idle (waiting for a request)",
            connections_by_state.clone(),
        );
        let inflight_requests = Gauge::default();
        registry.register(
            "inflight_requests",
            "Requests received whose answer has not been sent in full yet",
            inflight_requests.clone(),
        );
        let token_expiry = Family::<ProviderLabels, Gauge>::default();
        registry.register(
            "token_expiry_seconds",
            "Seconds until the current token of an OAuth2 provider expires (negative: expired); no series while it has no token or its token has no known expiry",
            token_expiry.clone(),
        );
        Metrics {
            registry,
            scrape: Mutex::new(()),
            config_reloads,
            config_last_reload_success,
            config_last_reload_successful,
            connections: Counts::default(),
            connections_by_state,
            inflight_requests,
            token_expiry,
            buffers,
            requests,
            upstream_latency,
            token_requests,
            reauthentications,
            logins,
            replays,
            policy_denied,
            upstream_responses,
            grpc_responses,
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
    /// Upstream answers over HTTP/1.1 and HTTP/2, created on first use.
    by_protocol: [std::sync::OnceLock<Counter>; 2],
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
            by_protocol: Default::default(),
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

    /// One more upstream answer over `protocol` (`h1` or `h2`).
    pub fn count_protocol(&self, metrics: &Metrics, protocol: &'static str) {
        let i = usize::from(protocol == "h2");
        self.by_protocol[i]
            .get_or_init(|| {
                metrics
                    .upstream_responses
                    .get_or_create(&ProtocolLabels {
                        route: self.label.clone(),
                        protocol,
                    })
                    .clone()
            })
            .inc();
    }

    /// One more gRPC answer with `grpc_status`.
    pub fn count_grpc(&self, metrics: &Metrics, grpc_status: u16) {
        metrics
            .grpc_responses
            .get_or_create(&GrpcLabels {
                route: self.label.clone(),
                grpc_status,
            })
            .inc();
    }

    pub fn observe_latency(&self, latency: std::time::Duration) {
        self.latency.observe(latency.as_secs_f64());
    }
}

impl Metrics {
    /// The exposition in `format`. `token_expiry` holds each provider's
    /// seconds until its token expires, read by the caller now.
    pub fn render(&self, format: Format, token_expiry: &[(String, i64)]) -> String {
        let _scrape = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        self.token_expiry.clear();
        for (provider, seconds) in token_expiry {
            self.token_expiry
                .get_or_create(&ProviderLabels {
                    provider: provider.clone(),
                })
                .set(*seconds);
        }
        // Requests first: a request holds its connection active, so read
        // this way `active` is not below what `inflight` implies.
        let requests = self.connections.requests();
        let active = self.connections.active();
        let open = self.connections.open();
        self.inflight_requests.set(requests as i64);
        for (state, n) in [("active", active), ("idle", open.saturating_sub(active))] {
            self.connections_by_state
                .get_or_create(&StateLabels { state })
                .set(n as i64);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        match format {
            Format::OpenMetrics => out,
            Format::Prometheus => to_prometheus_text(&out),
        }
    }

    /// A config reload's outcome.
    pub fn config_reloaded(&self, applied: bool) {
        let outcome = if applied { "success" } else { "failure" };
        self.config_reloads
            .get_or_create(&OutcomeLabels { outcome })
            .inc();
        self.config_last_reload_successful.set(applied as i64);
        if applied {
            self.config_last_reload_success
                .set(crate::clock::unix_now() as i64);
        }
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
        let text = metrics.render(Format::Prometheus, &[]);
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
