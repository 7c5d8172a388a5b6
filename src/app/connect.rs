//! Forward-proxy mode (`[forward_proxy] enabled`): `CONNECT host:port`
//! and absolute-form requests from apps that can only be given
//! `HTTPS_PROXY`.
//!
//! Only two kinds of target are served, so that the proxy never becomes
//! an open relay: a host with host routes (the tunnel's TLS is terminated
//! with a leaf certificate of the local CA, and each request inside is
//! served like a request to the listen address, routed among that host's
//! routes only), and a host listed in `forward_proxy.tunnel` (`CONNECT`
//! only, spliced blind: no TLS termination, no credential). Anything else
//! is refused `403 forbidden_host` before any connection is made.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::{header, HeaderValue, Method, Request, Response, Uri, Version};
use hyper::body::Incoming;
use tokio::net::TcpStream;

use super::dispatch::{answer, answer_tunnel, App};
use super::record::{Logged, Record};
use super::runtime::Runtime;
use crate::config::Authority;
use crate::error::ProxyError;
use crate::http::body::{local, ResponseBody};
use crate::http::head_timeout::{Activity, InFlight, Tracked};
use crate::proxy::{security, ForwardTarget, ProxyResponse};
use crate::upstream::PooledBody;

/// Whether `req` is a forward-proxy request: `CONNECT`, or an HTTP/1
/// request whose target names a scheme or authority (HTTP/2 always
/// carries those, in `:scheme` and `:authority`).
pub(super) fn is_forward_form<B>(req: &Request<B>) -> bool {
    req.method() == Method::CONNECT
        || (req.version() < Version::HTTP_2
            && (req.uri().scheme().is_some() || req.uri().authority().is_some()))
}

/// An absolute-form request (`GET http://api.vendor.example/v1/x`) to a
/// host with host routes, turned into the request it stands for: origin
/// form, `Host` the target, marked with its [`ForwardTarget`]. It is sent
/// on as https by its route, like a request from inside a tunnel. Any
/// other target is refused.
pub(super) fn absolute_form<B>(runtime: &Runtime, req: &mut Request<B>) -> Result<(), ProxyError> {
    security::check_proxy_authorization(&runtime.config.server, req.headers())?;
    let Some(authority) = req.uri().authority() else {
        return Err(ProxyError::BadRequest(
            "request target has a scheme but no host".into(),
        ));
    };
    // Without a port: the host route's default port (https's), as the
    // request is sent on as https.
    let target = Authority::parse_with_default(authority.as_str(), 443).map_err(|problem| {
        ProxyError::BadRequest(format!(
            "request target host `{}` {problem}",
            crate::text::sanitize(authority.as_str(), 100)
        ))
    })?;
    if !runtime.proxy.routes().has_host(&target) {
        return Err(ProxyError::NotForwarded {
            what: "a request for",
            target: target.to_string(),
        });
    }
    let origin_form: Uri = match req.uri().path_and_query() {
        Some(pq) => pq.as_str().parse(),
        None => "/".parse(),
    }
    .map_err(|_| ProxyError::BadRequest("request target is not a valid URI".into()))?;
    *req.uri_mut() = origin_form;
    let host = HeaderValue::from_str(&target.to_string())
        .map_err(|_| ProxyError::BadRequest("request target host is not valid".into()))?;
    req.headers_mut().insert(header::HOST, host);
    req.extensions_mut().insert(ForwardTarget(Arc::new(target)));
    Ok(())
}

/// What a `CONNECT` target gets.
enum Plan {
    /// A host route's host: TLS terminated here with this configuration.
    Terminate(Arc<rustls::ServerConfig>),
    /// A `forward_proxy.tunnel` host: this connection, spliced blind.
    /// Its connection, and `server.tunnel_idle_timeout`.
    Blind(TcpStream, Duration),
}

/// Answers a `CONNECT` (logged and counted like any request, by
/// `record`) and, when it is accepted, serves the tunnel in a task of its
/// own.
pub(super) async fn connect(
    app: App,
    mut req: Request<Incoming>,
    in_flight: InFlight,
    mut record: Box<Record>,
) -> Result<Response<Tracked<Logged<ResponseBody<PooledBody>>>>, Infallible> {
    let runtime = record.runtime.clone();
    match plan(&app, &runtime, &req).await {
        Ok((target, plan)) => {
            let upgrade = hyper::upgrade::on(&mut req);
            let drain = in_flight.activity().enter_drain();
            let activity = in_flight.activity().inner(false);
            match plan {
                Plan::Terminate(tls) => {
                    let limits = app.limits().clone();
                    tokio::spawn(async move {
                        let _drain = drain;
                        terminate(app, upgrade, tls, target, activity, limits).await;
                    });
                }
                Plan::Blind(upstream, idle) => {
                    tokio::spawn(async move {
                        let _drain = drain;
                        splice(upgrade, upstream, idle).await;
                    });
                }
            }
            let response: ProxyResponse = Response::new(ResponseBody::Local(Body::empty()));
            Ok(answer_tunnel(record, response, in_flight))
        }
        Err(e) => {
            record.info.error = Some(e.code());
            Ok(answer(record, local(e), in_flight))
        }
    }
}

/// Decides what the `CONNECT` gets; a blind tunnel's connection is made
/// here, so that a target that cannot be reached is answered `502`.
async fn plan(
    app: &App,
    runtime: &Runtime,
    req: &Request<Incoming>,
) -> Result<(Arc<Authority>, Plan), ProxyError> {
    security::check_proxy_authorization(&runtime.config.server, req.headers())?;
    if req.version() >= Version::HTTP_2 {
        // A tunnel would take one stream of a connection whose other
        // streams are still HTTP (and its head deadline with it); proxy
        // clients speak HTTP/1.1 to their proxy.
        return Err(ProxyError::BadRequest(
            "CONNECT over HTTP/2 is not supported; send it over HTTP/1.1".into(),
        ));
    }
    let text = req.uri().authority().map(|a| a.as_str()).unwrap_or("");
    let target = Authority::parse_connect(text).map_err(|problem| {
        ProxyError::BadRequest(format!(
            "CONNECT target `{}` {problem}",
            crate::text::sanitize(text, 100)
        ))
    })?;
    if runtime.proxy.routes().has_host(&target) {
        let Some(ca) = app.forward_ca() else {
            return Err(ProxyError::Internal(
                "forward-proxy mode was enabled by a reload; restart authproxy to load its CA"
                    .into(),
            ));
        };
        let tls = ca
            .server_config(&target.host)
            .map_err(|e| ProxyError::Internal(e.to_string()))?;
        return Ok((Arc::new(target), Plan::Terminate(tls)));
    }
    let listed = runtime
        .config
        .forward_proxy
        .tunnel
        .iter()
        .any(|p| p.matches(&target));
    if !listed {
        return Err(ProxyError::NotForwarded {
            what: "CONNECT to",
            target: target.to_string(),
        });
    }
    let server = &runtime.config.server;
    let unreachable = |detail: String| ProxyError::UpstreamUnreachable {
        provider: None,
        upstream: target.to_string(),
        detail,
    };
    let shown = target.to_string();
    let dial = crate::upstream::egress::dial_blind(app.egress(), &shown, server.connect_timeout);
    // The connector bounds the TCP connect; this bounds the egress proxy's
    // answer to our own `CONNECT` too.
    match tokio::time::timeout(server.connect_timeout, dial).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok((
                Arc::new(target),
                Plan::Blind(stream, server.tunnel_idle_timeout),
            ))
        }
        Ok(Err(e)) => Err(unreachable(crate::upstream::describe(&*e))),
        Err(_) => Err(unreachable(format!(
            "no connection within server.connect_timeout ({:.1}s)",
            server.connect_timeout.as_secs_f64()
        ))),
    }
}

/// The client's side of an accepted `CONNECT`, once hyper hands it over.
async fn upgraded(
    upgrade: hyper::upgrade::OnUpgrade,
) -> Option<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>> {
    match upgrade.await {
        Ok(io) => Some(hyper_util::rt::TokioIo::new(io)),
        Err(e) => {
            tracing::debug!(error = %e, "CONNECT: the client's connection was not handed over");
            None
        }
    }
}

/// Terminates the tunnel's TLS (the handshake bounded by
/// `server.header_read_timeout`, like a request head) and serves the
/// requests inside, each marked with the tunnel's target.
async fn terminate(
    app: App,
    upgrade: hyper::upgrade::OnUpgrade,
    tls: Arc<rustls::ServerConfig>,
    target: Arc<Authority>,
    outer: Arc<Activity>,
    limits: crate::http::Limits,
) {
    let Some(io) = upgraded(upgrade).await else {
        return;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let stream = match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(io)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            // Typically a client that does not trust the local CA.
            tracing::info!(target = %target, error = %e, "CONNECT: TLS handshake with the client failed (does it trust forward_proxy.ca_cert?)");
            return;
        }
        Err(_) => {
            tracing::debug!(target = %target, "CONNECT: no TLS handshake within server.header_read_timeout");
            return;
        }
    };
    let http2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let activity = if http2 { outer.inner(true) } else { outer };
    let drain = activity.enter_drain();
    let service = move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(ForwardTarget(target.clone()));
        app.serve(req, &activity)
    };
    if let Err(e) = crate::http::server::serve_inner(stream, http2, service, &limits, drain).await {
        tracing::debug!(error = %e, "tunnel connection ended with an error");
    }
}

/// A blind tunnel: bytes both ways until both sides close or it has been
/// quiet for `server.tunnel_idle_timeout`.
async fn splice(upgrade: hyper::upgrade::OnUpgrade, upstream: TcpStream, idle: Duration) {
    let Some(client) = upgraded(upgrade).await else {
        return;
    };
    if crate::http::splice::splice(client, upstream, idle).await == crate::http::splice::Ended::Idle
    {
        tracing::debug!("blind tunnel closed: quiet for server.tunnel_idle_timeout");
    }
}

#[cfg(test)]
mod tests {
    use super::is_forward_form;

    #[test]
    fn forward_forms() {
        let req = |method: &str, target: &str, version| {
            http::Request::builder()
                .method(method)
                .uri(target)
                .version(version)
                .body(())
                .unwrap()
        };
        assert!(is_forward_form(&req(
            "CONNECT",
            "api.example:443",
            http::Version::HTTP_11
        )));
        assert!(is_forward_form(&req(
            "GET",
            "http://api.example/x",
            http::Version::HTTP_11
        )));
        assert!(!is_forward_form(&req("GET", "/x", http::Version::HTTP_11)));
        assert!(!is_forward_form(&req(
            "GET",
            "http://127.0.0.1/x",
            http::Version::HTTP_2
        )));
    }
}
