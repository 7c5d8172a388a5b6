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
use http::{HeaderValue, Request, Response};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tower::ServiceExt;

use super::record::{Logged, Record};
use super::state::AppState;
use crate::error::{ErrorCode, ProxyError};
use crate::http::body::{body_timed_out, is_body_limit, local, IdleTimeout, ResponseBody};
use crate::http::head_timeout::{Activity, InFlight, Tracked};
use crate::http::Limits;
use crate::proxy::{security, ForwardTarget, ProxyResponse};
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
    /// The listen address's; also those of connections inside `CONNECT`
    /// tunnels.
    limits: Limits,
}

impl App {
    /// `local` answers every request under `/_authproxy/`.
    pub fn new(state: Arc<AppState>, local: Router, limits: Limits) -> App {
        App {
            inner: Arc::new(Inner {
                state,
                local,
                limits,
            }),
        }
    }

    pub(super) fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    pub(super) fn forward_ca(&self) -> Option<&crate::ca::LocalCa> {
        self.inner.state.forward_ca.as_deref()
    }

    /// The egress proxy the process started with (upstream connections
    /// keep it across reloads, and so do blind tunnels).
    pub(super) fn egress(&self) -> &crate::config::EgressConfig {
        &self.inner.state.egress
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
    ///
    /// The access-log line is written when the answer's body is dropped
    /// ([`Logged`]), or with status 499 when this future is dropped first
    /// (the client went away before the answer).
    pub fn serve(
        &self,
        mut req: Request<Incoming>,
        activity: &Arc<Activity>,
    ) -> impl Future<Output = Result<Response<Tracked<Logged<ResponseBody<PooledBody>>>>, Infallible>>
           + Send
           + 'static {
        let in_flight = activity.begin();
        let started = Instant::now();
        // One runtime for the whole request, so a reload mid-request cannot
        // mix two configs.
        let runtime = self.inner.state.runtime();
        // Kept from the client (when valid) or made here; forwarded
        // upstream and returned in the answer.
        let request_id = telemetry::request_id(req.headers());
        req.headers_mut()
            .insert(telemetry::X_REQUEST_ID, request_id.clone());
        // Forward-proxy mode: a CONNECT gets a future of its own (boxed:
        // once per tunnel, not per request); an absolute-form request is
        // rewritten for its host route, or refused.
        let mut forwarded = req.extensions().get::<ForwardTarget>().is_some();
        let mut refused = None;
        let forward_form = runtime.config.forward_proxy.enabled
            && !forwarded
            && super::connect::is_forward_form(&req);
        if forward_form && req.method() != http::Method::CONNECT {
            match super::connect::absolute_form(&runtime, &mut req) {
                Ok(()) => forwarded = true,
                Err(e) => refused = Some(e),
            }
        }
        // A clone of the URI shares its bytes with the request; the log
        // needs the path after the request was consumed.
        let mut record = Record::new(
            runtime,
            req.method().clone(),
            req.uri().clone(),
            request_id,
            activity.peer(),
            started,
        );
        record.request_body = !req.body().is_end_stream();
        if forward_form && req.method() == http::Method::CONNECT {
            let app = self.clone();
            return Either::Right(Either::Left(Box::pin(super::connect::connect(
                app, req, in_flight, record,
            ))));
        }
        // Refusals are answered here, before any work is done. What is left
        // is one async block rather than an async fn inside one: each
        // nesting level keeps its own copy of the request in the future,
        // and the whole future is moved into place on every request.
        let checked = match (refused, req.extensions().get::<ForwardTarget>()) {
            (Some(e), _) => Err(e),
            (None, Some(target)) => security::check_forwarded(&target.0, &req),
            (None, None) => security::check(&record.runtime.config.server, &req),
        };
        if let Err(e) = checked {
            record.info.error = Some(e.code());
            let e = e.answer(crate::http::headers::is_grpc(req.headers()));
            return Either::Left(std::future::ready(Ok(answer(record, local(e), in_flight))));
        }
        let inner = self.inner.clone();
        Either::Right(Either::Right(async move {
            // `record` is dropped with the future if the client goes away
            // first: then it logs 499. (Used in place: a local copy would
            // be kept in the future next to the one captured.)
            let response = if !forwarded && is_local(req.uri().path()) {
                let timeout = record.runtime.config.server.body_read_timeout;
                let answer = match local_request(req, timeout, &mut record.info).await {
                    Ok(req) => match inner.local.clone().oneshot(req).await {
                        Ok(r) => r,
                        Err(never) => match never {},
                    },
                    Err(e) => e.into_response(),
                };
                record.info.error = answer.extensions().get::<ErrorCode>().map(|c| c.0);
                answer.map(ResponseBody::Local)
            } else if in_flight.over_limit() {
                // An HTTP/2 stream past max_connections + 64: no upstream
                // connection for it. Local endpoints (health) are still
                // answered: they hold nothing.
                let e = ProxyError::TooManyConnections;
                record.info.error = Some(e.code());
                local(e.answer(crate::http::headers::is_grpc(req.headers())))
            } else {
                let proxy = &record.runtime.proxy;
                match proxy
                    .handle(req, in_flight.activity(), &mut record.info)
                    .await
                {
                    Ok(response) => response,
                    Err(refused) => refused.answer(&mut record.info),
                }
            };
            Ok(answer(record, response, in_flight))
        }))
    }
}

/// The answer as it goes out: with the request id, its body counted and
/// logged when dropped, the request in flight until then.
pub(super) fn answer(
    record: Box<Record>,
    mut response: ProxyResponse,
    in_flight: InFlight,
) -> Response<Tracked<Logged<ResponseBody<PooledBody>>>> {
    response
        .headers_mut()
        .insert(telemetry::X_REQUEST_ID, record.request_id.clone());
    if record.request_body && response.extensions().get::<ErrorCode>().is_some() {
        // Our error, most often answered before the request's body was
        // read (413, 404, 403): hyper closes the connection after it
        // unless the rest of the body is already in its buffer, but
        // decides that only once this head has gone out. Said up front,
        // as nginx does, a client does not send its next request into a
        // closing connection (hyper drops the header on HTTP/2).
        response
            .headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    let status = response.status();
    let mut record = record;
    if record.info.upstream_latency.is_some() && record.info.error.is_none() {
        record.info.upstream_protocol = Some(if response.version() == http::Version::HTTP_2 {
            "h2"
        } else {
            "h1"
        });
    }
    record.info.grpc_status = telemetry::grpc_status(response.headers());
    response.map(|body| in_flight.attach(status, Logged::new(body, record, status)))
}

/// The `2xx` answer to a `CONNECT`, as [`answer`] makes it: the rest of
/// the connection is a tunnel, not HTTP.
pub(super) fn answer_tunnel(
    record: Box<Record>,
    mut response: ProxyResponse,
    in_flight: InFlight,
) -> Response<Tracked<Logged<ResponseBody<PooledBody>>>> {
    response
        .headers_mut()
        .insert(telemetry::X_REQUEST_ID, record.request_id.clone());
    let status = response.status();
    response.map(|body| in_flight.attach_tunnel(Logged::new(body, record, status)))
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
    info: &mut AccessInfo,
) -> Result<Request<Body>, ProxyError> {
    if req.body().is_end_stream() {
        return Ok(req.map(Body::new));
    }
    let (parts, body) = req.into_parts();
    let counter = info.bytes_in.get_or_insert_with(Default::default).clone();
    let body = http_body_util::Limited::new(
        IdleTimeout::request(body, timeout).counting(counter),
        LOCAL_BODY_LIMIT,
    );
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
