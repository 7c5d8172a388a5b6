//! The record of one finished request: request metrics and the access-log
//! line, from what the forwarding path found out along the way
//! ([`AccessInfo`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, Response};

use super::metrics::{Metrics, RequestLabels, RouteMetrics};

/// What the access log and the request metrics need to know about a
/// request, beyond the request and the answer themselves: filled in along
/// the way by whoever handles it.
#[derive(Clone, Debug, Default)]
pub struct AccessInfo {
    /// The route that matched; `None` when none did (local endpoints too).
    pub route: Option<RouteTag>,
    pub upstream_latency: Option<Duration>,
    pub replayed: bool,
    /// Our error code, when the answer is one of our own errors. Carried
    /// here rather than read back from the `X-Authproxy-Error` header the
    /// client gets.
    pub error: Option<&'static str>,
}

/// A matched route, as the log and metrics name it.
#[derive(Clone, Debug)]
pub struct RouteTag {
    /// The prefix as written in the config.
    pub label: Arc<str>,
    /// Index into the runtime's per-route tables (metric handles).
    pub index: usize,
}

/// The route label of requests that matched no route (local endpoints too).
static NO_ROUTE: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from("-"));

/// Counts a finished request and writes its access-log line.
///
/// `route` is the matched route's metric handles (`None` when no route
/// matched, local endpoints included).
pub fn record_request<B>(
    metrics: &Metrics,
    route: Option<&RouteMetrics>,
    method: &Method,
    path: &str,
    info: &AccessInfo,
    response: &Response<B>,
    started: Instant,
) {
    let status = response.status().as_u16();
    let upstream_latency = info.upstream_latency;
    match route {
        Some(handles) => {
            handles.count(metrics, status);
            if let Some(latency) = upstream_latency {
                handles.observe_latency(latency);
            }
        }
        None => {
            metrics
                .requests
                .get_or_create(&RequestLabels {
                    route: NO_ROUTE.clone(),
                    status,
                })
                .inc();
        }
    }
    super::access::write(&super::access::Entry {
        method: method.as_str(),
        path,
        route: info.route.as_ref().map_or(&*NO_ROUTE, |r| &r.label),
        status,
        upstream_us: upstream_latency.map(|d| d.as_micros() as u64),
        total_us: started.elapsed().as_micros() as u64,
        replayed: info.replayed,
        error: info.error,
    });
}
