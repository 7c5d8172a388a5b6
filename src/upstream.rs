//! Connections to upstreams: a pool of HTTP/1.1 keep-alive connections
//! per upstream origin (and CA file), over plain TCP or rustls.
//!
//! Our own small pool on hyper's connection API instead of hyper-util's
//! legacy client: that client spawned a task per request to put the
//! connection back, cloned its connector and hashed the pool key on every
//! request, about a sixth of the proxy's CPU per small request. Here a
//! request costs a pop and a push under an uncontended mutex, and the
//! connection goes back when its response body has been read to the end.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use futures_util::FutureExt;
use http::{Request, Response, StatusCode, Uri};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::RootCertStore;
use tokio::sync::oneshot;
use tower::ServiceExt;

use crate::config::Config;

/// Idle connections kept per pool; more are closed when they come back.
const MAX_IDLE: usize = 256;
/// An idle connection older than this is closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Pools by route index (routes to the same origin share one).
#[derive(Clone)]
pub struct Upstreams {
    by_route: Vec<Arc<Pool>>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("routes[{route}].ca_file {path}: {reason}")]
    CaFile {
        route: usize,
        path: String,
        reason: String,
    },
}

/// Why a request did not get an answer from the upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection: DNS, TCP or TLS failed.
    #[error("connect failed")]
    Connect(#[source] BoxError),
    /// The connection failed while sending or waiting for the answer.
    #[error(transparent)]
    Http(#[from] hyper::Error),
    /// No response head within the time allowed.
    #[error("no answer in time")]
    Timeout,
}

impl UpstreamError {
    /// The error and its causes, e.g. "connect failed: tcp connect error:
    /// Connection refused (os error 111)".
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = Vec::new();
        let chain = std::iter::successors(Some(self as &dyn std::error::Error), |e| e.source());
        for e in chain {
            let text = e.to_string();
            if !parts.iter().any(|p| p.contains(&text)) {
                parts.push(text);
            }
        }
        parts.join(": ")
    }
}

impl Upstreams {
    pub fn new(config: &Config) -> Result<Upstreams, TlsSetupError> {
        crate::install_crypto_provider();
        let base_roots = system_roots();
        let default = build_connector(base_roots.clone(), config.server.connect_timeout);
        let mut connectors: HashMap<PathBuf, HttpsConnector<HttpConnector>> = HashMap::new();
        let mut pools: HashMap<(String, Option<PathBuf>), Arc<Pool>> = HashMap::new();
        let mut by_route = Vec::with_capacity(config.routes.len());
        for (i, route) in config.routes.iter().enumerate() {
            let connector = match &route.ca_file {
                None => default.clone(),
                Some(path) => match connectors.get(path) {
                    Some(c) => c.clone(),
                    None => {
                        let mut roots = base_roots.clone();
                        add_pem_roots(&mut roots, path).map_err(|reason| {
                            TlsSetupError::CaFile {
                                route: i,
                                path: path.display().to_string(),
                                reason,
                            }
                        })?;
                        let c = build_connector(roots, config.server.connect_timeout);
                        connectors.insert(path.clone(), c.clone());
                        c
                    }
                },
            };
            let origin = route.upstream.origin().ascii_serialization();
            let pool = pools
                .entry((origin.clone(), route.ca_file.clone()))
                .or_insert_with(|| {
                    Arc::new(Pool {
                        connector,
                        origin: origin
                            .parse()
                            .expect("config check made sure the upstream origin is a valid URI"),
                        idle: Mutex::new(VecDeque::new()),
                    })
                })
                .clone();
            by_route.push(pool);
        }
        Ok(Upstreams { by_route })
    }

    pub fn for_route(&self, index: usize) -> &Arc<Pool> {
        &self.by_route[index]
    }
}

/// Keep-alive connections to one upstream origin.
pub struct Pool {
    connector: HttpsConnector<HttpConnector>,
    /// `scheme://host:port`: what the connector dials.
    origin: Uri,
    /// Most recently used last: reused first, so surplus connections age
    /// out at the front.
    idle: Mutex<VecDeque<Idle>>,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// One keep-alive connection and its answer timer. The timer lives as
/// long as the connection: moving an armed timer's deadline later is an
/// atomic store, while a new timer per request costs a registration in
/// the timer wheel and a removal.
struct Conn {
    sender: SendRequest<Body>,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl Pool {
    /// Sends `req` (its URI in origin form) on a pooled connection, or a new
    /// one. A pooled connection that turns out to be closed before the
    /// request was written is dropped and the request tried on another.
    ///
    /// The upstream gets `timeout` to connect and answer with a response
    /// head; with `body_sent` given, the answer's clock starts once the
    /// request body has been sent (a slow upload is not a slow upstream).
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<Body>,
        timeout: Duration,
        mut body_sent: Option<oneshot::Receiver<()>>,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        let now = tokio::time::Instant::now();
        let mut deadline = now + timeout;
        loop {
            let (mut conn, reused) = match self.checkout(now.into_std()) {
                Some(c) => (c, true),
                // Boxed: connecting (DNS, TCP, TLS, handshake) is rare and its
                // state large; unboxed it would size every request's future.
                None => {
                    let connect = tokio::time::timeout_at(deadline, self.connect());
                    let conn = Box::pin(connect)
                        .await
                        .map_err(|_| UpstreamError::Timeout)??;
                    (conn, false)
                }
            };
            // A reused connection may still be finishing its last response;
            // one the upstream closed fails here.
            let ready = match conn.sender.ready().now_or_never() {
                Some(ready) => ready,
                None => tokio::time::timeout_at(deadline, conn.sender.ready())
                    .await
                    .map_err(|_| UpstreamError::Timeout)?,
            };
            if ready.is_err() && reused {
                continue;
            }
            let answer = conn.sender.try_send_request(req);
            let timer = &mut conn.timer;
            let expired = async {
                if let Some(sent) = body_sent.as_mut() {
                    let _ = sent.await;
                    deadline = tokio::time::Instant::now() + timeout;
                }
                timer.as_mut().reset(deadline);
                timer.as_mut().await;
            };
            let answer = tokio::select! {
                answer = answer => answer,
                () = expired => return Err(UpstreamError::Timeout),
            };
            match answer {
                Ok(response) => {
                    // After a protocol switch the connection is no longer HTTP.
                    let reusable = response.status() != StatusCode::SWITCHING_PROTOCOLS;
                    let owner = reusable.then(|| (conn, self.clone()));
                    return Ok(response.map(|inner| PooledBody { inner, owner }));
                }
                Err(mut e) => match e.take_message() {
                    // Never written: safe to send again on another connection.
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(UpstreamError::Http(e.into_error())),
                },
            }
        }
    }

    fn checkout(&self, now: Instant) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(c) = idle.pop_back() {
            if !c.conn.sender.is_closed() && now.saturating_duration_since(c.since) < IDLE_TIMEOUT {
                return Some(c.conn);
            }
        }
        None
    }

    fn put_back(&self, conn: Conn) {
        if conn.sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while idle.front().is_some_and(|c| {
            now.duration_since(c.since) >= IDLE_TIMEOUT || c.conn.sender.is_closed()
        }) {
            idle.pop_front();
        }
        if idle.len() < MAX_IDLE {
            idle.push_back(Idle { conn, since: now });
        }
    }

    async fn connect(&self) -> Result<Conn, UpstreamError> {
        let io = self
            .connector
            .clone()
            .oneshot(self.origin.clone())
            .await
            .map_err(UpstreamError::Connect)?;
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(io)
            .await?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(Conn {
            sender,
            // Armed (and so registered) only when a request first waits.
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
        })
    }
}

/// An upstream response body that gives its connection back to the pool
/// once read to the end. A body dropped early takes the connection with it
/// (it still has unread bytes).
pub struct PooledBody {
    inner: Incoming,
    owner: Option<(Conn, Arc<Pool>)>,
}

impl PooledBody {
    fn release(&mut self) {
        if let Some((conn, pool)) = self.owner.take() {
            pool.put_back(conn);
        }
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // Bodies the server never polls (empty ones) end here.
        if http_body::Body::is_end_stream(&self.inner) {
            self.release();
        }
    }
}

impl http_body::Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.release(),
            Poll::Ready(Some(Err(_))) => self.owner = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    // Corporate CAs installed on the host count too; a missing or partly
    // unreadable system store is not fatal (webpki roots remain).
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    roots
}

fn add_pem_roots(roots: &mut RootCertStore, path: &Path) -> Result<(), String> {
    let data = std::fs::read(path).map_err(|e| e.to_string())?;
    let mut added = 0;
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    for cert in CertificateDer::pem_slice_iter(&data) {
        let cert = cert.map_err(|e| format!("not a PEM certificate file ({e})"))?;
        roots
            .add(cert)
            .map_err(|e| format!("certificate rejected: {e}"))?;
        added += 1;
    }
    if added == 0 {
        return Err("contains no PEM certificates (-----BEGIN CERTIFICATE-----)".into());
    }
    Ok(())
}

fn build_connector(
    roots: RootCertStore,
    connect_timeout: Duration,
) -> HttpsConnector<HttpConnector> {
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http)
}
