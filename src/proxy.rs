//! The forwarding handler: match the route, strip hop-by-hop headers,
//! inject the credential, send, stream the answer back; on an oauth2 route
//! turn a 401 into one renewal and one replay.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use futures_util::StreamExt;
use http::header::{self, HeaderMap, HeaderName};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::credentials::{Credential, CredentialError, OAuthProvider, Trigger};
use crate::error::ProxyError;
use crate::http::body::Buffered;
use crate::http::headers::{strip_hop_by_hop, upgrade_requested};
use crate::http::path::has_dot_segment;
use crate::routes::Route;
use crate::runtime::Runtime;
use crate::service::{local, ResponseBody};
use crate::telemetry::AccessInfo;
use crate::upstream::{PooledBody, UpstreamError};

const X_API_EXPIRED: HeaderName = HeaderName::from_static("x-api-expired");
const X_API_REVOKED: HeaderName = HeaderName::from_static("x-api-revoked");

/// Forwards one request that is not for a local endpoint. Also returns
/// what the access log needs (`None` when no route matched).
pub async fn handle(
    runtime: &Runtime,
    req: Request<Incoming>,
) -> (Response<ResponseBody>, Option<AccessInfo>) {
    // Kept (cheaply: a header value clone) only for the login URL of a
    // `login_required` answer.
    let host = req.headers().get(header::HOST).cloned().or_else(|| {
        // HTTP/2 clients send `:authority` (in the URI) instead of `Host`.
        req.uri()
            .authority()
            .and_then(|a| http::HeaderValue::from_str(a.as_str()).ok())
    });
    let mut info = None;
    let response = match forward(runtime, req, &mut info).await {
        Ok(r) => r,
        Err(ProxyError::LoginRequired {
            provider,
            login_url,
        }) if login_url.starts_with('/') => {
            let host = host
                .as_ref()
                .and_then(|h| h.to_str().ok())
                .unwrap_or("127.0.0.1");
            local(ProxyError::LoginRequired {
                provider,
                login_url: format!("http://{host}{login_url}"),
            })
        }
        Err(e) => local(e),
    };
    (response, info)
}

/// A request body that can be sent again (small enough to keep) or only once.
enum OutBody {
    Buffered(Buffered),
    Stream(Body),
}

/// Request bodies up to this size, with a declared length, are read in full
/// before the upstream request starts: the upstream gets head and body in
/// one write and answers once, where a streamed body went out in pieces and
/// some upstreams (nginx among them) answered before it was complete, which
/// cost the keep-alive connection. Larger and chunked bodies stream. Never
/// more than `server.max_replay_body`, which bounds request buffering.
const REQUEST_BUFFER: u64 = 64 * 1024;

async fn forward(
    runtime: &Runtime,
    req: Request<Incoming>,
    info: &mut Option<AccessInfo>,
) -> Result<Response<ResponseBody>, ProxyError> {
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
    let route = runtime
        .routes
        .lookup(path)
        .ok_or_else(|| ProxyError::NoRoute {
            path: path.to_string(),
        })?;
    *info = Some(AccessInfo {
        route: route.label.clone(),
        route_index: route.index,
        upstream_latency: None,
        replayed: false,
    });
    // Origin form: the connection already goes to the upstream's origin.
    let uri: Uri = route
        .upstream_target(path, req.uri().query())
        .parse()
        .map_err(|_| ProxyError::BadRequest("request path is not a valid URI".into()))?;

    let (mut parts, body) = req.into_parts();
    let body = limit_body(
        Body::new(body),
        &parts.headers,
        runtime.config.server.max_request_body,
    )?;
    let client_upgrade = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    let upgrade = upgrade_requested(&parts.headers);
    strip_hop_by_hop(&mut parts.headers, upgrade.clone());
    parts.headers.insert(header::HOST, route.host_value.clone());

    let credential = runtime.credential(route);
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
        runtime,
        route,
        method: parts.method,
        uri,
        client_upgrade,
        upgrade_requested: upgrade.is_some(),
    };

    match credential {
        None => ctx.send_plain(parts.headers, body, info).await,
        Some(Credential::Static(s)) => {
            // Any client Authorization is dropped; injected names replaced.
            parts.headers.remove(header::AUTHORIZATION);
            s.apply(&mut parts.headers);
            ctx.send_plain(parts.headers, body, info).await
        }
        Some(Credential::OAuth2(p)) => {
            parts.headers.remove(header::AUTHORIZATION);
            parts.headers.remove(p.header_name());
            // Boxed: its state (replay buffer, renewal) would otherwise size
            // the future of every request, static routes included.
            Box::pin(ctx.send_oauth(p, parts.headers, body, info)).await
        }
    }
}

struct Forward<'a> {
    runtime: &'a Runtime,
    route: &'a Route,
    method: Method,
    uri: Uri,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    upgrade_requested: bool,
}

impl Forward<'_> {
    async fn send_plain(
        self,
        headers: HeaderMap,
        body: Body,
        info: &mut Option<AccessInfo>,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let server = &self.runtime.config.server;
        // Never more than the spec's buffering bound, `max_replay_body`.
        let limit = REQUEST_BUFFER.min(server.max_replay_body);
        let declared = declared_length(&headers);
        let body = if declared.is_some_and(|n| n <= limit) {
            prepare_body(body, declared, limit, server.max_request_body).await?
        } else {
            OutBody::Stream(body)
        };
        let started = Instant::now();
        let response = self.send(headers, body).await;
        set_latency(info, started);
        Ok(self.finish(response?))
    }

    async fn send_oauth(
        self,
        provider: &Arc<OAuthProvider>,
        mut headers: HeaderMap,
        body: Body,
        info: &mut Option<AccessInfo>,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let token = provider
            .token()
            .await
            .map_err(|e| credential_error(provider, e))?;
        let header_value = token
            .header_value()
            .ok_or_else(|| ProxyError::Internal("renewed token has no access token".into()))?;
        headers.insert(provider.header_name().clone(), header_value.clone());

        let limit = self.runtime.config.server.max_replay_body;
        let body = prepare_body(
            body,
            declared_length(&headers),
            limit,
            self.runtime.config.server.max_request_body,
        )
        .await?;
        let (first_body, replay_body) = match body {
            OutBody::Buffered(b) => (OutBody::Buffered(b.clone()), Some(b)),
            OutBody::Stream(s) => (OutBody::Stream(s), None),
        };

        let started = Instant::now();
        let response = self.send(headers.clone(), first_body).await?;
        set_latency(info, started);
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(self.finish(response));
        }
        let trigger = if response.headers().contains_key(X_API_REVOKED) {
            Trigger::Revoked
        } else if response.headers().contains_key(X_API_EXPIRED) {
            Trigger::Expired
        } else if provider.config().refresh_on_401 {
            Trigger::Unauthorized
        } else {
            return Ok(self.finish(response));
        };
        tracing::info!(
            provider = provider.name(),
            reason = trigger.as_str(),
            "upstream answered 401; renewing the credential"
        );

        let Some(replay_body) = replay_body else {
            // The body streamed and is gone: renew for the next request and
            // hand this 401 back.
            if let Err(e) = provider.renew_after_401(token.generation, trigger).await {
                tracing::warn!(provider = provider.name(), error = %e, "renewal after 401 failed");
            }
            tracing::info!(
                provider = provider.name(),
                "request body was too large to replay; returning the 401"
            );
            return Ok(self.finish(response));
        };
        drain(response).await;
        let renewed = provider
            .renew_after_401(token.generation, trigger)
            .await
            .map_err(|e| credential_error(provider, e))?;
        let value = renewed
            .header_value()
            .ok_or_else(|| ProxyError::Internal("renewed token has no access token".into()))?;
        headers.insert(provider.header_name().clone(), value.clone());
        let started = Instant::now();
        let response = self.send(headers, OutBody::Buffered(replay_body)).await;
        set_latency(info, started);
        if let Some(i) = info.as_mut() {
            i.replayed = true;
        }
        self.runtime
            .metrics
            .replays
            .get_or_create(&crate::telemetry::metrics::ProviderLabels {
                provider: provider.name().to_string(),
            })
            .inc();
        // A second 401 goes back to the client as it is.
        Ok(self.finish(response?))
    }

    async fn send(
        &self,
        headers: HeaderMap,
        body: OutBody,
    ) -> Result<Response<PooledBody>, ProxyError> {
        let pool = self.runtime.upstreams.for_route(self.route.index);
        let timeout = self.runtime.config.server.upstream_timeout;
        // `upstream_timeout` is the upstream's time to answer: for a body
        // that is still streaming it starts once the body is sent. A
        // buffered body goes out at once.
        let (body, sent) = match body {
            OutBody::Buffered(b) => (Body::new(b), None),
            OutBody::Stream(s) if s.is_end_stream() => (s, None),
            OutBody::Stream(s) => {
                let (body, sent) = crate::http::body::SignalOnEnd::new(s);
                (Body::new(body), Some(sent))
            }
        };
        let mut req = hyper::Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = Version::HTTP_11;
        *req.headers_mut() = headers;
        match pool.send(req, timeout, sent).await {
            Ok(response) => Ok(response),
            Err(UpstreamError::Timeout) => Err(ProxyError::UpstreamTimeout {
                provider: self.route.provider.clone(),
                upstream: self.route.origin().to_string(),
                seconds: timeout.as_secs_f64(),
            }),
            Err(e) if is_body_limit(&e) => Err(ProxyError::PayloadTooLarge {
                limit: self.runtime.config.server.max_request_body.unwrap_or(0),
            }),
            Err(e) => Err(ProxyError::UpstreamUnreachable {
                provider: self.route.provider.clone(),
                upstream: self.route.origin().to_string(),
                detail: e.describe(),
            }),
        }
    }

    /// Turns the upstream's answer into ours: hop-by-hop headers out, body
    /// streamed, protocol upgrades spliced.
    fn finish(self, mut response: Response<PooledBody>) -> Response<ResponseBody> {
        let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        let upgrade = if switching && self.upgrade_requested {
            upgrade_requested(response.headers())
        } else {
            None
        };
        if upgrade.is_some() {
            if let Some(client_upgrade) = self.client_upgrade {
                let upstream_upgrade = hyper::upgrade::on(&mut response);
                tokio::spawn(async move {
                    match tokio::try_join!(client_upgrade, upstream_upgrade) {
                        Ok((client, upstream)) => {
                            let mut client = TokioIo::new(client);
                            let mut upstream = TokioIo::new(upstream);
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                        }
                        Err(e) => tracing::debug!(error = %e, "upgrade failed"),
                    }
                });
            }
        }
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers, upgrade);
        let idle = self.runtime.config.server.upstream_idle_timeout;
        Response::from_parts(
            parts,
            ResponseBody::Upstream(crate::http::body::IdleTimeout::new(body, idle)),
        )
    }
}

fn set_latency(info: &mut Option<AccessInfo>, started: Instant) {
    if let Some(i) = info.as_mut() {
        i.upstream_latency = Some(started.elapsed());
    }
}

fn credential_error(provider: &OAuthProvider, e: CredentialError) -> ProxyError {
    let name = provider.name().to_string();
    match e {
        CredentialError::TokenEndpoint(t) => ProxyError::TokenEndpoint {
            provider: name,
            detail: t.to_string(),
        },
        CredentialError::WaitTimeout(_) | CredentialError::StoreUnavailable(_) => {
            ProxyError::TokenEndpoint {
                provider: name,
                detail: e.to_string(),
            }
        }
        CredentialError::Reauthentication(detail) => ProxyError::ReauthenticationFailed {
            provider: name,
            detail,
        },
        CredentialError::LoginRequired { login_url } => ProxyError::LoginRequired {
            provider: name,
            login_url,
        },
    }
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

/// Whether a failure was our own body limit tripping mid-stream.
fn is_body_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Reads a small 401 body so the upstream connection can be reused; gives
/// up quietly on a large or slow one (the connection is then dropped).
async fn drain(response: Response<PooledBody>) {
    let body = http_body_util::Limited::new(response.into_body(), 64 * 1024);
    let _ = tokio::time::timeout(Duration::from_secs(2), body.collect()).await;
}

/// The request's `Content-Length`, if it has a valid one.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Buffers a body up to `limit` bytes so it can be replayed; a larger one
/// (by its `declared` length, or found while reading) streams on unbuffered.
async fn prepare_body(
    body: Body,
    declared: Option<u64>,
    limit: u64,
    max_body: Option<u64>,
) -> Result<OutBody, ProxyError> {
    if body.is_end_stream() {
        return Ok(OutBody::Buffered(Buffered::default()));
    }
    if declared.is_some_and(|n| n > limit) {
        return Ok(OutBody::Stream(body));
    }
    let mut body = body;
    let mut buf = Buffered::default();
    loop {
        match body.frame().await {
            None => break,
            Some(Err(e)) if is_body_limit(&e) => {
                return Err(ProxyError::PayloadTooLarge {
                    limit: max_body.unwrap_or(0),
                })
            }
            Some(Err(e)) => {
                return Err(ProxyError::BadRequest(format!(
                    "reading the request body failed: {e}"
                )))
            }
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    if buf.len() + data.len() as u64 > limit {
                        // Too big to keep: send what we have, then the rest.
                        let mut chunks = buf.into_chunks();
                        chunks.push_back(data);
                        let prefix = futures_util::stream::iter(
                            chunks.into_iter().map(Ok::<_, axum::Error>),
                        );
                        let rest = body.into_data_stream();
                        return Ok(OutBody::Stream(Body::from_stream(prefix.chain(rest))));
                    }
                    buf.push(data);
                }
            }
        }
    }
    Ok(OutBody::Buffered(buf))
}
