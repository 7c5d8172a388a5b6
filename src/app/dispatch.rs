//! What every connection serves, per request: the access log and request
//! metrics around everything, the [`security`](crate::proxy::security)
//! guard, then either the local endpoints under `/_authproxy/` (an axum
//! router, handed over ready-made so that this layer does not depend on
//! the endpoints, which read the app state) or forwarding ([`crate::proxy`]).
//!
//! Written as one hyper `Service` rather than axum middleware around a
//! fallback handler: the layered version cost a boxed future and a service
//! clone per layer, a second runtime load, and a response extension (a
//! small hash map) to carry the route label to the logger; together a fifth
//! of the proxy's user CPU per request.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::response::IntoResponse;
use axum::Router;
use futures_util::future::Either;
use http::{Request, Response};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tower::ServiceExt;

use super::state::AppState;
use crate::error::{ErrorCode, ProxyError};
use crate::http::body::{body_timed_out, is_body_limit, local, IdleTimeout, ResponseBody};
use crate::http::head_timeout::{Activity, InFlight, Tracked};
use crate::proxy::{security, ProxyResponse};
use crate::telemetry::{self, AccessInfo};
use crate::upstream::PooledBody;

/// What every connection serves ([`App::serve`]); cloning is one `Arc`.
#[derive(Clone)]
pub struct App {
    inner: Arc<Inner>,
}

struct Inner {
    state: Arc<AppState>,
    /// The local endpoints, every path under `/_authproxy` included.
    local: Router,
}

impl App {
    /// `local` answers every request under `/_authproxy/`.
    pub fn new(state: Arc<AppState>, local: Router) -> App {
        App {
            inner: Arc::new(Inner { state, local }),
        }
    }
}

fn is_local(path: &str) -> bool {
    path.strip_prefix("/_authproxy")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

impl App {
    /// Answers one request. The future is returned as its own type rather
    /// than boxed: hyper keeps each connection's in-flight future in one
    /// allocation made per connection, so a boxed future here would add an
    /// allocation and a free of about 4 KB per request (a size glibc's
    /// per-thread cache does not cover), about 2% of the proxy's CPU for a
    /// small request.
    ///
    /// `activity` is the connection's: the request counts as in flight
    /// (no head deadline) until its answer's body is dropped.
    pub fn serve(
        &self,
        req: Request<Incoming>,
        activity: &Arc<Activity>,
    ) -> impl Future<Output = Result<Response<Tracked<ResponseBody<PooledBody>>>, Infallible>>
           + Send
           + 'static {
        let in_flight = activity.begin();
        let started = Instant::now();
        // One runtime for the whole request, so a reload mid-request cannot
        // mix two configs.
        let runtime = self.inner.state.runtime();
        // Refusals are answered here, before any work is done. What is left
        // is one async block rather than an async fn inside one: each
        // nesting level keeps its own copy of the request in the future,
        // and the whole future is moved into place on every request.
        if let Err(e) = security::check(&runtime.config.server, &req) {
            let info = AccessInfo {
                error: Some(e.code()),
                ..AccessInfo::default()
            };
            let response = local(e);
            let path = req.uri().path();
            telemetry::record_request(
                &runtime.metrics,
                None,
                req.method(),
                path,
                &info,
                &response,
                started,
            );
            return Either::Left(std::future::ready(Ok(track(response, in_flight))));
        }
        let inner = self.inner.clone();
        let method = req.method().clone();
        // A clone of the URI shares its bytes with the request; the log
        // needs the path after the request was consumed.
        let uri = req.uri().clone();
        Either::Right(async move {
            let (response, info) = if is_local(uri.path()) {
                let answer = match local_request(req, runtime.config.server.body_read_timeout).await
                {
                    Ok(req) => match inner.local.clone().oneshot(req).await {
                        Ok(r) => r,
                        Err(never) => match never {},
                    },
                    Err(e) => e.into_response(),
                };
                let info = AccessInfo {
                    error: answer.extensions().get::<ErrorCode>().map(|c| c.0),
                    ..AccessInfo::default()
                };
                (answer.map(ResponseBody::Local), info)
            } else if in_flight.over_limit() {
                // An HTTP/2 stream past max_connections + 64: no upstream
                // connection for it. Local endpoints (health) are still
                // answered: they hold nothing.
                let e = ProxyError::TooManyConnections;
                let info = AccessInfo {
                    error: Some(e.code()),
                    ..AccessInfo::default()
                };
                (local(e), info)
            } else {
                runtime.proxy.handle(req, in_flight.activity()).await
            };
            let path = uri.path();
            let route = info.route.as_ref().map(|r| runtime.route_metrics(r.index));
            telemetry::record_request(
                &runtime.metrics,
                route,
                &method,
                path,
                &info,
                &response,
                started,
            );
            Ok(track(response, in_flight))
        })
    }
}

/// Largest request body a local endpoint takes (a pasted token, a login
/// callback's post); beyond it `413`.
const LOCAL_BODY_LIMIT: usize = 64 * 1024;

/// A local endpoint's request with its body read in full here, so that a
/// body that pauses longer than `body_read_timeout` gets our `408` and one
/// over [`LOCAL_BODY_LIMIT`] our `413`, whatever the endpoint.
async fn local_request(
    req: Request<Incoming>,
    timeout: std::time::Duration,
) -> Result<Request<Body>, ProxyError> {
    if req.body().is_end_stream() {
        return Ok(req.map(Body::new));
    }
    let (parts, body) = req.into_parts();
    let body = http_body_util::Limited::new(IdleTimeout::request(body, timeout), LOCAL_BODY_LIMIT);
    match body.collect().await {
        Ok(collected) => Ok(Request::from_parts(parts, Body::from(collected.to_bytes()))),
        Err(e) if is_body_limit(&*e) => Err(ProxyError::PayloadTooLarge {
            limit: LOCAL_BODY_LIMIT as u64,
        }),
        Err(e) => Err(match body_timed_out(&*e) {
            Some(seconds) => ProxyError::RequestTimeout { seconds },
            None => ProxyError::BadRequest(format!("reading the request body failed: {e}")),
        }),
    }
}

fn track(
    response: ProxyResponse,
    in_flight: InFlight,
) -> Response<Tracked<ResponseBody<PooledBody>>> {
    let status = response.status();
    response.map(|body| in_flight.attach(status, body))
}

#[cfg(test)]
mod tests {
    use super::is_local;

    #[test]
    fn local_paths() {
        for p in ["/_authproxy", "/_authproxy/", "/_authproxy/status"] {
            assert!(is_local(p), "{p}");
        }
        for p in ["/_authproxyx", "/_authprox", "/api/_authproxy/status", "/"] {
            assert!(!is_local(p), "{p}");
        }
    }
}
