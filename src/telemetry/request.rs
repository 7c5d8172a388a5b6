//! The record of one finished request: request metrics and the access-log
//! line, from what the forwarding path found out along the way
//! ([`AccessInfo`]) and how the answer ended ([`Outcome`]); and the
//! request id ([`request_id`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue, Method};

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
    /// Why the credential was renewed for this request, if it was
    /// (`initial`, `proactive`, `expired`, `x_api_expired`, …).
    pub renewal: Option<&'static str>,
    /// Request body bytes read from the client, counted by the body's
    /// wrapper; `None` for a request without a body.
    pub bytes_in: Option<Arc<AtomicU64>>,
    /// `h1` or `h2`: how the upstream answered, when it did.
    pub upstream_protocol: Option<&'static str>,
    /// A gRPC answer's `grpc-status` (in its head, or its trailers).
    pub grpc_status: Option<u16>,
}

/// A matched route, as the log and metrics name it.
#[derive(Clone, Debug)]
pub struct RouteTag {
    /// The prefix as written in the config.
    pub label: Arc<str>,
    /// Index into the runtime's per-route tables (metric handles).
    pub index: usize,
}

/// The request, as the access log names it.
pub struct RequestLine<'a> {
    pub method: &'a Method,
    /// Without the query.
    pub path: &'a str,
    pub request_id: &'a HeaderValue,
    pub client: SocketAddr,
}

/// How the answer ended.
#[derive(Clone, Copy, Debug)]
pub struct Outcome {
    /// The status sent; 499 when the client went away before there was
    /// an answer to send.
    pub status: u16,
    /// Body bytes handed to the client's connection.
    pub bytes_out: u64,
    /// The answer's body was cut before its end: `client` (the client went
    /// away) or `upstream` (the upstream's body failed).
    pub aborted: Option<&'static str>,
}

/// The route label of requests that matched no route (local endpoints too).
static NO_ROUTE: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from("-"));

/// `X-Request-Id`: kept from the client when valid, else made here;
/// forwarded upstream and returned in the answer.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client request id kept (a UUID is 36, a W3C trace id 32).
pub const MAX_REQUEST_ID: usize = 128;

/// The request's id: the client's `X-Request-Id` if it is 1 to
/// [`MAX_REQUEST_ID`] visible ASCII characters (what ends up in log lines
/// and headers cannot carry a control character or a space), else a new
/// random 128-bit one in hex.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(X_REQUEST_ID) {
        let b = v.as_bytes();
        if (1..=MAX_REQUEST_ID).contains(&b.len()) && b.iter().all(|c| (0x21..=0x7e).contains(c)) {
            return v.clone();
        }
    }
    let n: u128 = rand::random();
    let mut hex = [0u8; 32];
    for (i, d) in hex.iter_mut().enumerate() {
        *d = b"0123456789abcdef"[((n >> (124 - 4 * i)) & 15) as usize];
    }
    HeaderValue::from_bytes(&hex).expect("hex digits")
}

/// Counts a finished request and writes its access-log line.
///
/// `route` is the matched route's metric handles (`None` when no route
/// matched, local endpoints included).
pub fn record_request(
    metrics: &Metrics,
    route: Option<&RouteMetrics>,
    request: &RequestLine<'_>,
    info: &AccessInfo,
    outcome: &Outcome,
    started: Instant,
) {
    let status = outcome.status;
    let upstream_latency = info.upstream_latency;
    match route {
        Some(handles) => {
            handles.count(metrics, status);
            if let Some(latency) = upstream_latency {
                handles.observe_latency(latency);
            }
            if info.error == Some("forbidden_by_policy") {
                handles.count_policy_denied(metrics);
            }
            if let Some(protocol) = info.upstream_protocol {
                handles.count_protocol(metrics, protocol);
            }
            if let Some(code) = info.grpc_status {
                handles.count_grpc(metrics, code);
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
        request_id: request.request_id.to_str().unwrap_or("-"),
        client: request.client,
        method: request.method.as_str(),
        path: request.path,
        route: info.route.as_ref().map_or(&*NO_ROUTE, |r| &r.label),
        status,
        bytes_in: info
            .bytes_in
            .as_ref()
            .map_or(0, |c| c.load(Ordering::Relaxed)),
        bytes_out: outcome.bytes_out,
        upstream_us: upstream_latency.map(|d| d.as_micros() as u64),
        total_us: started.elapsed().as_micros() as u64,
        replayed: info.replayed,
        renewal: info.renewal,
        error: info.error,
        aborted: outcome.aborted,
        upstream_protocol: info.upstream_protocol,
        grpc_status: info.grpc_status,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids() {
        let mut headers = HeaderMap::new();
        let made = request_id(&headers);
        assert_eq!(made.len(), 32);
        assert!(made.as_bytes().iter().all(u8::is_ascii_hexdigit));
        assert_ne!(made, request_id(&headers), "random");
        headers.insert(X_REQUEST_ID, HeaderValue::from_static("abc-123_{x}"));
        assert_eq!(request_id(&headers), "abc-123_{x}");
        for bad in ["a b", "", "tab\there"] {
            headers.insert(X_REQUEST_ID, HeaderValue::from_str(bad).unwrap());
            assert_eq!(request_id(&headers).len(), 32, "{bad:?}");
        }
        headers.insert(
            X_REQUEST_ID,
            HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        );
        assert_eq!(request_id(&headers).len(), 32);
        let long = "x".repeat(MAX_REQUEST_ID + 1);
        headers.insert(X_REQUEST_ID, HeaderValue::from_str(&long).unwrap());
        assert_eq!(request_id(&headers).len(), 32);
        let longest = "x".repeat(MAX_REQUEST_ID);
        headers.insert(X_REQUEST_ID, HeaderValue::from_str(&longest).unwrap());
        assert_eq!(request_id(&headers), longest.as_str());
    }
}
