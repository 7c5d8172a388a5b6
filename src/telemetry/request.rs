//! The record of one finished request: request metrics and the access-log
//! line, from what the forwarding path found out along the way
//! ([`AccessInfo`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, Response};

use super::metrics::{Metrics, RequestLabels, RouteMetrics};

/// What the access log needs to know about a proxied request.
#[derive(Clone, Debug)]
pub struct AccessInfo {
    pub route: Arc<str>,
    /// Index into the runtime's per-route tables (metric handles).
    pub route_index: usize,
    pub upstream_latency: Option<Duration>,
    pub replayed: bool,
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
    info: Option<&AccessInfo>,
    response: &Response<B>,
    started: Instant,
) {
    let error = response
        .headers()
        .get("x-authproxy-error")
        .and_then(|v| v.to_str().ok());
    let status = response.status().as_u16();
    let upstream_latency = info.and_then(|i| i.upstream_latency);
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
        route: info.map_or(&*NO_ROUTE, |i| &i.route),
        status,
        upstream_us: upstream_latency.map(|d| d.as_micros() as u64),
        total_us: started.elapsed().as_micros() as u64,
        replayed: info.is_some_and(|i| i.replayed),
        error,
    });
}
