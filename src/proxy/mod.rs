//! Forwarding: everything between "this request is not for a local
//! endpoint" and the upstream's answer streaming back. In the order a
//! request meets them: [`security`] (who may use the proxy; checked for
//! local endpoints too), [`routes`] (which route), [`forward`] (guard the
//! body, check the route's `allow` policy, inject the credential, send),
//! [`outbody`] (the body read in full and kept for a replay, or streamed),
//! [`replay`] (oauth2 routes: 401 → renew → replay once), [`aws`]
//! (aws_sigv4 routes: hash the body, sign, re-sign once after a refusal
//! explained by clock skew), [`upgrade`] (101: splice the two
//! connections), [`grpc`] (gRPC: trailers, deadlines, UNAUTHENTICATED
//! as a `401`).
//!
//! # Future sizes
//!
//! A request's future is moved by value more than once (into hyper's
//! per-connection slot; into each caller's await), and every move copies
//! all of it. An `async fn` keeps its arguments twice (as captured and as
//! locals), and a value moved into a call before an `await` keeps its
//! place across it. So the path of a plain request is written as plain
//! functions that do the synchronous work (route, checks, headers) and
//! return a future holding only what sending needs: [`Forwarder::handle`],
//! [`forward::forward`], `send_plain`, `send` and the pool's `send`. That
//! took the request's future from 4,992 to 2,392 bytes (`-Zprint-type-sizes`)
//! and, with the access-log record boxed, a small GET from 42.3k to 41.6k
//! instructions (callgrind). Paths that may renew or replay stay
//! `async fn`s, boxed, so they do not size the plain path's future.

mod aws;
mod forward;
pub mod grpc;
mod outbody;
mod replay;
pub mod routes;
pub mod security;
mod upgrade;

use std::future::Future;
use std::sync::Arc;

use futures_util::TryFutureExt;

use http::{header, Request, Response, Version};
use hyper::body::Incoming;

use crate::config::Config;
use crate::credentials::Credential;
use crate::error::ProxyError;
use crate::http::body::{local, ResponseBody};
use crate::http::buffer::BufferBudget;
use crate::http::head_timeout::Activity;
use crate::telemetry::{AccessInfo, Metrics};
use crate::upstream::{PooledBody, Upstreams};
use routes::{Route, RouteTable};

/// Marks a forward-proxy request (inside a `CONNECT` tunnel, or in
/// absolute form, rewritten) with its target: it is routed among that
/// target's host routes only, never the listen address's prefix routes or
/// local endpoints.
#[derive(Debug, Clone)]
pub struct ForwardTarget(pub Arc<crate::config::Authority>);

/// Our answer to a forwarded request: the upstream's, or one of our own.
pub type ProxyResponse = Response<ResponseBody<PooledBody>>;

/// The forwarding part of what one config builds: the route table, each
/// route's credential (found once here, not by name per request), and the
/// upstream pools.
pub struct Forwarder {
    config: Arc<Config>,
    routes: RouteTable,
    /// By route index.
    route_credentials: Vec<Option<Arc<Credential>>>,
    upstreams: Upstreams,
    metrics: Arc<Metrics>,
    /// Shared by every request body kept for a replay.
    buffers: Arc<BufferBudget>,
}

impl Forwarder {
    /// `route_credentials` by route index (config order), `None` for a
    /// route without a provider.
    pub fn new(
        config: Arc<Config>,
        routes: RouteTable,
        route_credentials: Vec<Option<Arc<Credential>>>,
        upstreams: Upstreams,
        metrics: Arc<Metrics>,
        buffers: Arc<BufferBudget>,
    ) -> Forwarder {
        Forwarder {
            config,
            routes,
            route_credentials,
            upstreams,
            metrics,
            buffers,
        }
    }

    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    /// The credential of `route` (`None` for a route without a provider).
    pub fn credential(&self, route: &Route) -> Option<&Credential> {
        self.route_credentials[route.index].as_deref()
    }

    /// Forwards one request that is not for a local endpoint, noting in
    /// `info` what the access log needs to know. A refusal is answered
    /// with [`Refusal::answer`].
    ///
    /// `conn` is the request's connection: an upgraded connection's tunnel
    /// is counted for the server's drain through it.
    pub fn handle<'a>(
        &'a self,
        req: Request<Incoming>,
        conn: &'a Activity,
        info: &'a mut AccessInfo,
    ) -> impl Future<Output = Result<ProxyResponse, Refusal>> + Send + 'a {
        // Kept (cheaply: a header value clone) only for the login URL of a
        // `login_required` answer: the authority the Host check accepted
        // (`:authority` on HTTP/2, whatever a `host` header there says).
        let host = match req.uri().authority() {
            Some(a) if req.version() >= Version::HTTP_2 => {
                http::HeaderValue::from_str(a.as_str()).ok()
            }
            _ => req.headers().get(header::HOST).cloned(),
        };
        let grpc = crate::http::headers::is_grpc(req.headers());
        forward::forward(self, req, conn, info).map_err(move |error| Refusal { error, host, grpc })
    }
}

/// A request we could not forward, with what its answer needs.
pub struct Refusal {
    error: ProxyError,
    /// The authority the client used, for a login URL.
    host: Option<http::HeaderValue>,
    grpc: bool,
}

impl Refusal {
    /// Our answer for a request we could not forward. A `login_required`
    /// answer gets the login URL in full, on the host the client used.
    /// A gRPC client gets it as a gRPC status. Its code is noted in `info`.
    pub fn answer(self, info: &mut AccessInfo) -> ProxyResponse {
        let Refusal { error, host, grpc } = self;
        info.error = Some(error.code());
        let e = match error {
            ProxyError::LoginRequired {
                provider,
                login_url,
                device,
            } if login_url.starts_with('/') => {
                let host = host
                    .as_ref()
                    .and_then(|h| h.to_str().ok())
                    .unwrap_or("127.0.0.1");
                ProxyError::LoginRequired {
                    provider,
                    device,
                    login_url: format!("http://{host}{login_url}"),
                }
            }
            e => e,
        };
        local(e.answer(grpc))
    }
}
