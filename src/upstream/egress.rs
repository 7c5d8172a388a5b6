//! The egress proxy (`server.egress_proxy`) for every outbound connection:
//! the pool's [`Dialer`] (direct; a `CONNECT` tunnel for https upstreams;
//! a connection to the proxy for absolute-form requests to http upstreams,
//! see [`AbsoluteForm`]), and the same choice for the token client
//! ([`token_proxies`]).
//!
//! Nothing goes through a proxy the config did not name: `HTTP_PROXY` and
//! the like in the environment are ignored unless `egress_proxy = "env"`
//! (the token client used to honour them and sent client secrets to them in
//! clear text), and [`announce`] says so at start.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use http::{HeaderValue, Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::{Service, ServiceExt};

use super::BoxError;
use crate::config::{EgressConfig, ProxyEndpoint};

/// Largest answer head to `CONNECT` we read.
const MAX_CONNECT_ANSWER: usize = 8 * 1024;

/// Why the egress proxy gave no connection. Names the proxy by
/// `http://host:port`, never with its credentials.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    #[error("egress proxy {proxy} is unreachable")]
    Unreachable {
        proxy: String,
        #[source]
        source: BoxError,
    },
    #[error("egress proxy {proxy} refused {what}: {status}")]
    Refused {
        proxy: String,
        what: String,
        status: StatusCode,
    },
    #[error("egress proxy {proxy} gave no valid answer to CONNECT {target}: {problem}")]
    BadAnswer {
        proxy: String,
        target: String,
        problem: &'static str,
    },
}

/// Opens connections to one upstream origin: directly, or through the
/// egress proxy. TLS to the upstream is layered on top by the caller
/// (`HttpsConnector`), end to end through a tunnel.
#[derive(Clone)]
pub struct Dialer {
    tcp: HttpConnector,
    via: Option<Arc<Via>>,
}

struct Via {
    /// `http://host:port` of the proxy: what the TCP connector dials.
    proxy: Uri,
    authorization: Option<HeaderValue>,
    /// `CONNECT` to the destination (https) or not (absolute-form http).
    tunnel: bool,
}

impl Via {
    fn shown(&self) -> String {
        let proxy = self.proxy.to_string();
        proxy.trim_end_matches('/').to_string()
    }
}

impl Dialer {
    pub(super) fn new(tcp: HttpConnector, via: Option<&ProxyEndpoint>, tunnel: bool) -> Dialer {
        let via = via.map(|p| {
            Arc::new(Via {
                proxy: p.url().parse().expect("a checked proxy URL is a valid URI"),
                authorization: p.authorization(),
                tunnel,
            })
        });
        Dialer { tcp, via }
    }
}

impl Service<Uri> for Dialer {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Each call dials with its own clone of the TCP connector.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let tcp = self.tcp.clone();
        let Some(via) = self.via.clone() else {
            return Box::pin(async move { Ok(tcp.oneshot(dst).await?) });
        };
        Box::pin(async move {
            let conn =
                tcp.oneshot(via.proxy.clone())
                    .await
                    .map_err(|e| EgressError::Unreachable {
                        proxy: via.shown(),
                        source: e.into(),
                    })?;
            if !via.tunnel {
                return Ok(conn);
            }
            let stream = connect_tunnel(conn.into_inner(), &dst, &via).await?;
            Ok(TokioIo::new(stream))
        })
    }
}

/// The connection of a blind `CONNECT` tunnel (`forward_proxy.tunnel`) to
/// `target` (`host:port`, IPv6 in brackets): like every other outbound
/// connection, through the egress proxy the config names for https to that
/// host (a tunnel carries TLS as a rule), else directly. The TCP connect is
/// bounded by `connect_timeout`, as for upstreams.
pub async fn dial_blind(
    egress: &EgressConfig,
    target: &str,
    connect_timeout: std::time::Duration,
) -> Result<TcpStream, BoxError> {
    let url = url::Url::parse(&format!("https://{target}/"))?;
    let dst: Uri = format!("https://{target}/").parse()?;
    let via = egress.proxy_for_url(&url);
    let mut dialer = Dialer::new(super::tls::tcp_connector(connect_timeout), via, true);
    let conn = dialer.call(dst).await?;
    Ok(conn.into_inner())
}

/// `CONNECT host:port` on a connection to the proxy; the stream is the
/// tunnel once the proxy answered 2xx (RFC 9110 §9.3.6).
async fn connect_tunnel(
    mut stream: TcpStream,
    dst: &Uri,
    via: &Via,
) -> Result<TcpStream, EgressError> {
    let host = dst.host().unwrap_or_default();
    let port = dst.port_u16().unwrap_or(match dst.scheme_str() {
        Some("http") => 80,
        _ => 443,
    });
    let target = format!("{host}:{port}");
    let bad = |problem| EgressError::BadAnswer {
        proxy: via.shown(),
        target: target.clone(),
        problem,
    };
    let mut head = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n").into_bytes();
    if let Some(auth) = &via.authorization {
        head.extend_from_slice(b"Proxy-Authorization: ");
        head.extend_from_slice(auth.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"\r\n");
    let written = stream.write_all(&head).await;
    head.fill(0);
    if written.is_err() {
        return Err(bad("the connection broke while sending it"));
    }
    let mut answer = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    let end = loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|_| bad("the connection broke"))?;
        if n == 0 {
            return Err(bad("the connection was closed"));
        }
        answer.extend_from_slice(&chunk[..n]);
        if let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if answer.len() > MAX_CONNECT_ANSWER {
            return Err(bad("its answer head is larger than 8 KiB"));
        }
    };
    let status = answer
        .strip_prefix(b"HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| StatusCode::from_bytes(code).ok())
        .ok_or_else(|| bad("not an HTTP answer"))?;
    if !status.is_success() {
        return Err(refused(via.shown(), format!("CONNECT {target}"), status));
    }
    // The upstream speaks only after our TLS hello: anything here would be
    // the proxy's, and must not be taken for the upstream's.
    if answer.len() > end {
        return Err(bad("it sent data before the tunnel was used"));
    }
    Ok(stream)
}

/// Requests to an http upstream through the egress proxy: the target in
/// absolute form and the proxy's `Proxy-Authorization`.
pub(super) struct AbsoluteForm {
    origin: Uri,
    proxy: String,
    authorization: Option<HeaderValue>,
}

impl AbsoluteForm {
    pub(super) fn new(origin: &Uri, proxy: &ProxyEndpoint) -> AbsoluteForm {
        AbsoluteForm {
            origin: origin.clone(),
            proxy: proxy.url().to_string(),
            authorization: proxy.authorization(),
        }
    }

    /// Turns an origin-form request into the proxy's form. The client's own
    /// `Proxy-Authorization` never gets here (hop-by-hop, removed earlier).
    pub(super) fn apply(&self, req: &mut Request<Body>) {
        let mut parts = self.origin.clone().into_parts();
        parts.path_and_query = req.uri().path_and_query().cloned();
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
        if let Some(auth) = &self.authorization {
            req.headers_mut()
                .insert(http::header::PROXY_AUTHORIZATION, auth.clone());
        }
    }

    /// A `407` can only be the proxy's: it did not take our credentials.
    pub(super) fn refused(&self, status: StatusCode) -> Option<EgressError> {
        (status == StatusCode::PROXY_AUTHENTICATION_REQUIRED).then(|| {
            let origin = self.origin.to_string();
            let what = format!("the request to {}", origin.trim_end_matches('/'));
            refused(self.proxy.clone(), what, status)
        })
    }
}

/// A refusal by the egress proxy is its configuration or ours, not the
/// upstream's: said in the log too, where the operator looks.
fn refused(proxy: String, what: String, status: StatusCode) -> EgressError {
    let e = EgressError::Refused {
        proxy,
        what,
        status,
    };
    tracing::warn!(error = %e, "egress proxy refused a connection");
    e
}

/// The token client's proxies: one per destination scheme (each may have
/// its own proxy and credentials), each choosing as the pool does. With
/// none, token requests go direct.
pub fn token_proxies(egress: &EgressConfig) -> Vec<reqwest::Proxy> {
    let shared = Arc::new(egress.clone());
    [("https", &egress.https), ("http", &egress.http)]
        .into_iter()
        .filter_map(|(scheme, endpoint)| {
            let endpoint = endpoint.as_ref()?;
            let proxy_url = url::Url::parse(endpoint.url()).ok()?;
            let egress = shared.clone();
            let proxy = reqwest::Proxy::custom(move |dst: &url::Url| {
                (dst.scheme() == scheme && egress.proxy_for_url(dst).is_some())
                    .then(|| proxy_url.clone())
            });
            Some(match endpoint.authorization() {
                Some(auth) => proxy.custom_http_auth(auth),
                None => proxy,
            })
        })
        .collect()
}

/// The proxy variables of the environment. Only their names are ever
/// shown: the values may hold a user and password.
const ENV_PROXY_VARS: [&str; 6] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// One line at start: which egress proxy is used, and which proxy
/// variables of the environment are set but ignored.
pub fn announce(egress: &EgressConfig) {
    let ignored: Vec<&str> = ENV_PROXY_VARS
        .iter()
        .copied()
        .filter(|n| std::env::var_os(n).is_some_and(|v| !v.is_empty()))
        // "env" uses the HTTP(S) ones; ALL_PROXY is not read.
        .filter(|n| !egress.from_env || n.eq_ignore_ascii_case("all_proxy"))
        .collect();
    if !ignored.is_empty() {
        let hint = if egress.from_env {
            "server.egress_proxy = \"env\" reads HTTPS_PROXY, HTTP_PROXY and NO_PROXY only"
        } else {
            "outbound connections go only through a proxy the config names; set server.egress_proxy = \"env\" to use them"
        };
        tracing::warn!(variables = %ignored.join(", "), "environment proxy variables are set and ignored: {hint}");
    }
    let shown = |p: &Option<ProxyEndpoint>| p.as_ref().map_or("direct", |p| p.url()).to_string();
    if egress.https.is_some() || egress.http.is_some() {
        let no_proxy: Vec<String> = egress.no_proxy.iter().map(|n| n.to_string()).collect();
        tracing::info!(
            https = %shown(&egress.https),
            http = %shown(&egress.http),
            no_proxy = %no_proxy.join(","),
            from_env = egress.from_env,
            "egress proxy: token requests and upstream connections go through it (loopback and no_proxy hosts go direct)"
        );
    } else if egress.from_env {
        tracing::info!("server.egress_proxy = \"env\" but neither HTTPS_PROXY nor HTTP_PROXY is set: outbound connections go direct");
    }
}
