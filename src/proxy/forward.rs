//! Forwarding one request: match the route, guard the body (size limit,
//! read small bodies in full), strip hop-by-hop headers, inject the
//! credential, send, and turn the upstream's answer into ours.

use std::future::{Future, Ready};
use std::pin::Pin;
use std::time::Instant;

use axum::body::Body;
use futures_util::future::Either;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;

use super::grpc;
use super::outbody::{declared_length, prepare_body, NotKept, OutBody};
use super::routes::{Route, Scope};
use super::{Forwarder, ProxyResponse};
use crate::credentials::Credential;
use crate::error::ProxyError;
use crate::http::body::{local, IdleTimeout, ResponseBody, SignalOnEnd};
use crate::http::head_timeout::Activity;
use crate::http::headers::{is_grpc, strip_hop_by_hop, upgrade_requested};
use crate::http::path::has_dot_segment;
use crate::telemetry::{AccessInfo, RouteTag};
use crate::upstream::PooledBody;

/// Request bodies up to this size, with a declared length, are read in full
/// before the upstream request starts: the upstream gets head and body in
/// one write and answers once, where a streamed body went out in pieces and
/// some upstreams (nginx among them) answered before it was complete, which
/// cost the keep-alive connection. Larger and chunked bodies stream. Never
/// more than `server.max_replay_body`, which bounds request buffering.
const REQUEST_BUFFER: u64 = 64 * 1024;

/// What forwarding one request comes to: sent as it is, or the boxed
/// future of a credential that may renew and replay.
pub(super) type Forwarding<'a, P> =
    Either<Ready<Result<ProxyResponse, ProxyError>>, Either<P, BoxedForward<'a>>>;

type BoxedForward<'a> =
    Pin<Box<dyn Future<Output = Result<ProxyResponse, ProxyError>> + Send + 'a>>;

/// Forwards one request. The route, the checks and the headers are done
/// here, before the future is made: it holds only what sending needs
/// (see [`super`]'s note on future sizes).
pub(super) fn forward<'a>(
    fwd: &'a Forwarder,
    req: Request<Incoming>,
    conn: &'a Activity,
    info: &'a mut AccessInfo,
) -> Forwarding<'a, impl Future<Output = Result<ProxyResponse, ProxyError>> + Send + 'a> {
    let Prepared {
        ctx,
        mut headers,
        body,
        credential,
        grpc,
    } = match prepare(fwd, req, conn, info) {
        Ok(prepared) => prepared,
        Err(e) => return Either::Left(std::future::ready(Err(e))),
    };
    // The credentials that may renew, replay or sign leave this block as
    // a boxed future: their state (replay buffer, renewal, signing) would
    // otherwise size the future of every request, static routes included.
    // The others are injected here and fall through to the one plain send.
    let boxed: BoxedForward<'a> = 'special: {
        match credential {
            None => {}
            Some(Credential::Static(s)) => {
                // Any client Authorization is dropped; injected names replaced.
                headers.remove(header::AUTHORIZATION);
                s.apply(&mut headers);
            }
            Some(Credential::Basic(b)) => b.apply(&mut headers),
            Some(Credential::Query(_)) => {
                // The credential went into the query (in `prepare`).
                headers.remove(header::AUTHORIZATION);
            }
            Some(Credential::AwsSigV4(a)) => {
                let provider = ctx.route.provider.as_deref().unwrap_or("-");
                break 'special Box::pin(ctx.send_aws(a, provider, headers, body, info));
            }
            Some(Credential::OAuth2(p)) => {
                headers.remove(header::AUTHORIZATION);
                headers.remove(p.header_name());
                break 'special if grpc {
                    Box::pin(ctx.send_grpc_oauth(p, headers, body, info))
                } else {
                    Box::pin(ctx.send_oauth(p, headers, body, info))
                };
            }
        }
        return Either::Right(Either::Left(ctx.send_plain(headers, body, info)));
    };
    Either::Right(Either::Right(boxed))
}

/// A request ready to send: its route and target, outgoing head and body,
/// and the credential to inject.
struct Prepared<'a> {
    ctx: Forward<'a>,
    headers: HeaderMap,
    body: Body,
    credential: Option<&'a Credential>,
    grpc: bool,
}

/// Everything before sending: the route, its checks and policy, the
/// target, the body's guards and the outgoing headers.
fn prepare<'a>(
    fwd: &'a Forwarder,
    req: Request<Incoming>,
    conn: &'a Activity,
    info: &mut AccessInfo,
) -> Result<Prepared<'a>, ProxyError> {
    let path = req.uri().path();
    if !path.starts_with('/') {
        // `OPTIONS *` and other non-path targets have no route (found by
        // fuzzing: `*` was appended to the upstream's host).
        return Err(ProxyError::BadRequest(
            "request target must be a path starting with `/`".into(),
        ));
    }
    if has_dot_segment(path) {
        return Err(ProxyError::BadRequest(
            "path contains `.` or `..` segments (also percent-encoded); send the normalised path"
                .into(),
        ));
    }
    let route = match req.extensions().get::<super::ForwardTarget>() {
        Some(target) => fwd.routes.lookup_in(Scope::Host(&target.0), path),
        None => fwd.routes.lookup(path),
    }
    .ok_or_else(|| ProxyError::NoRoute {
        path: path.to_string(),
    })?;
    info.route = Some(RouteTag {
        label: route.label.clone(),
        index: route.index,
    });
    super::security::check_route(route, req.headers())?;
    if !route.allows(req.method(), path) {
        return Err(ProxyError::ForbiddenByPolicy {
            provider: route.provider.clone(),
            detail: format!(
                "{} {} is not allowed on route {}: no entry of its `allow` list matches (`authproxy check` lists them)",
                req.method(),
                crate::text::sanitize(path, 200),
                route.prefix
            ),
        });
    }
    let credential = fwd.credential(route);
    // Origin form: the connection already goes to the upstream's origin.
    let target = match credential {
        Some(Credential::Query(q)) => {
            route.upstream_target(path, Some(&q.rewrite(req.uri().query())))
        }
        Some(Credential::AwsSigV4(a)) => {
            a.upstream_target(&route.upstream_target(path, None), req.uri().query())
        }
        _ => route.upstream_target(path, req.uri().query()),
    };
    let uri: Uri = target
        .parse()
        .map_err(|_| ProxyError::BadRequest("request path is not a valid URI".into()))?;

    let (mut parts, body) = req.into_parts();
    // CL.0 desync: an upstream that ignores bodies on GET reads this body
    // as the next request on the connection, whose answer would then go to
    // whoever uses the connection next (with their credential). The body
    // is forwarded, on a connection that is closed afterwards.
    let close_after = !body.is_end_stream() && no_body_semantics(&parts.method);
    // A body that pauses longer than `body_read_timeout` fails, whoever
    // reads it (a replay buffer, or the upstream request it streams into).
    let body = if body.is_end_stream() {
        Body::new(body)
    } else {
        let counter = info.bytes_in.get_or_insert_with(Default::default).clone();
        Body::new(IdleTimeout::request(body, fwd.config.server.body_read_timeout).counting(counter))
    };
    let body = limit_body(body, &parts.headers, fwd.config.server.max_request_body)?;
    let client_upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    let upgrade = upgrade_requested(&parts.headers).filter(|p| !close_after && !names_h2c(p));
    let grpc = is_grpc(&parts.headers);
    // gRPC asks for trailers (and its servers may check that it does);
    // other requests have `TE` stripped as any hop-by-hop header.
    let te_trailers = grpc && grpc::wants_trailers(&parts.headers);
    strip_hop_by_hop(&mut parts.headers, upgrade.clone());
    if te_trailers {
        grpc::put_te_trailers(&mut parts.headers);
    }
    // A gRPC call's deadline is the longest the upstream gets to answer.
    let timeout = match grpc.then(|| grpc::timeout(&parts.headers)).flatten() {
        Some(deadline) => deadline.min(fwd.config.server.upstream_timeout),
        None => fwd.config.server.upstream_timeout,
    };
    parts.headers.insert(header::HOST, route.host_value.clone());
    if close_after {
        // The pool never reuses a connection whose request said this.
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }

    if let (Some(name), None) = (&route.provider, credential) {
        return Err(ProxyError::Internal(format!("provider {name} missing")));
    }
    tracing::debug!(
        route = route.prefix.as_str(),
        provider = route.provider.as_deref(),
        upstream = %uri.path(),
        "forwarding"
    );
    let ctx = Forward {
        fwd,
        conn,
        route,
        method: parts.method,
        uri,
        client_upgrade,
        upgrade,
        timeout,
    };
    Ok(Prepared {
        ctx,
        headers: parts.headers,
        body,
        credential,
        grpc,
    })
}

/// One request on its way out, after the route and credential were found.
pub(super) struct Forward<'a> {
    pub(super) fwd: &'a Forwarder,
    /// The client connection, for the drain to count a tunnel.
    conn: &'a Activity,
    pub(super) route: &'a Route,
    pub(super) method: Method,
    pub(super) uri: Uri,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    /// The protocol(s) of the upgrade forwarded, if any.
    upgrade: Option<HeaderValue>,
    /// `server.upstream_timeout`, or a gRPC call's shorter deadline.
    timeout: std::time::Duration,
}

impl<'a> Forward<'a> {
    fn send_plain<'i>(
        self,
        headers: HeaderMap,
        body: Body,
        info: &'i mut AccessInfo,
    ) -> impl Future<Output = Result<ProxyResponse, ProxyError>> + Send + use<'a, 'i> {
        let server = &self.fwd.config.server;
        // Never more than the spec's buffering bound, `max_replay_body`.
        let limit = REQUEST_BUFFER.min(server.max_replay_body);
        let max_body = server.max_request_body;
        let declared = declared_length(&headers).filter(|n| *n <= limit);
        async move {
            let started;
            // Awaited as the block's value: a future in a local would be
            // kept twice, and the body in one next to the request it went
            // into.
            let response = {
                let body = match declared {
                    Some(n) => {
                        prepare_body(body, Some(n), limit, max_body, &self.fwd.buffers).await?
                    }
                    None => OutBody::Stream(body, NotKept::TooLarge),
                };
                started = Instant::now();
                self.send(headers, body)
            }
            .await;
            set_latency(info, started);
            Ok(self.finish(response?))
        }
    }

    pub(super) fn send(
        &self,
        headers: HeaderMap,
        body: OutBody,
    ) -> impl Future<Output = Result<Response<PooledBody>, ProxyError>> + Send + '_ {
        let pool = self.fwd.upstreams.for_route(self.route.index);
        let timeout = self.timeout;
        // `upstream_timeout` is the upstream's time to answer: for a body
        // that is still streaming it starts once the body is sent. A
        // buffered body goes out at once.
        let (body, sent) = match body {
            OutBody::Buffered(b) => (Body::new(b), None),
            OutBody::Stream(s, _) if s.is_end_stream() => (s, None),
            OutBody::Stream(s, _) => {
                let (body, sent) = SignalOnEnd::new(s);
                (Body::new(body), Some(sent))
            }
        };
        let mut req = hyper::Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = Version::HTTP_11;
        *req.headers_mut() = headers;
        async move {
            match pool.send(req, timeout, sent).await {
                Ok(response) => Ok(response),
                Err(e) => Err(ProxyError::upstream(
                    e,
                    self.route.provider.as_deref(),
                    self.route.origin(),
                    timeout,
                    self.fwd.config.server.max_request_body,
                )),
            }
        }
    }

    /// Turns the upstream's answer into ours: hop-by-hop headers out, body
    /// streamed, protocol upgrades spliced.
    pub(super) fn finish(self, mut response: Response<PooledBody>) -> ProxyResponse {
        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        let upgrade = if switching {
            upgrade_requested(response.headers())
        } else {
            None
        };
        if switching && !upgrade_matches(self.upgrade.as_ref(), upgrade.as_ref()) {
            // A switch nobody asked for (an h2c upgrade we did not forward,
            // or another protocol than requested) would make the client's
            // connection a raw tunnel past the route and path checks.
            return local(ProxyError::UpstreamUnreachable {
                provider: self.route.provider.clone(),
                upstream: self.route.origin().to_string(),
                detail: "the upstream switched protocols without being asked to".into(),
            });
        }
        if upgrade.is_some() {
            if let Some(client_upgrade) = self.client_upgrade {
                super::upgrade::splice(
                    client_upgrade,
                    hyper::upgrade::on(&mut response),
                    self.conn.enter_drain(),
                    self.fwd.config.server.tunnel_idle_timeout,
                );
            }
        }
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers, upgrade);
        let idle = self.fwd.config.server.upstream_idle_timeout;
        Response::from_parts(parts, ResponseBody::Upstream(IdleTimeout::new(body, idle)))
    }
}

/// Methods whose request body has no defined meaning (RFC 9110 §9.3).
fn no_body_semantics(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::DELETE
    )
}

/// Whether an `Upgrade` value offers h2c. Never forwarded: after the
/// switch the client would speak HTTP/2 straight to the upstream, on a
/// connection the credential was injected into, past every check here
/// (what Envoy and nginx do too: the token is dropped).
fn names_h2c(protocols: &HeaderValue) -> bool {
    tokens(protocols).any(|p| p.eq_ignore_ascii_case(b"h2c"))
}

/// The protocol an upstream switched to was one of those asked for.
fn upgrade_matches(asked: Option<&HeaderValue>, answered: Option<&HeaderValue>) -> bool {
    let (Some(asked), Some(answered)) = (asked, answered) else {
        return false;
    };
    let answered = answered.as_bytes().trim_ascii();
    tokens(asked).any(|p| p.eq_ignore_ascii_case(answered))
}

fn tokens(value: &HeaderValue) -> impl Iterator<Item = &[u8]> {
    value
        .as_bytes()
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
}

pub(super) fn set_latency(info: &mut AccessInfo, started: Instant) {
    info.upstream_latency = Some(started.elapsed());
}

/// Enforces `server.max_request_body`: a declared length over it is a 413
/// before anything is sent; a chunked body that grows past it is cut.
fn limit_body(body: Body, headers: &HeaderMap, max: Option<u64>) -> Result<Body, ProxyError> {
    let Some(limit) = max else {
        return Ok(body);
    };
    if declared_length(headers).is_some_and(|n| n > limit) {
        return Err(ProxyError::PayloadTooLarge { limit });
    }
    Ok(Body::new(http_body_util::Limited::new(
        body,
        usize::try_from(limit).unwrap_or(usize::MAX),
    )))
}
