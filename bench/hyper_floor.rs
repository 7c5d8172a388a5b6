//! The cheapest reverse proxy hyper allows: the floor under authproxy's
//! CPU cost per request on this stack, for `bench/instructions.sh`.
//!
//! ```text
//! cargo build --release --example hyper_floor
//! bash bench/instructions.sh target/release/examples/hyper_floor
//! ```
//!
//! It takes the same `run --config FILE` arguments as authproxy and reads
//! only `server.listen` and the first route's `prefix`, `upstream`,
//! `ca_file` and static `Authorization` header (`FLOOR_ROUTE=/tls/`: the
//! route with that prefix instead of the first). An `https` upstream is
//! reached over TLS (rustls, as authproxy; HTTP/1.1, trusting `ca_file`
//! only). Everything authproxy does beyond hyper's
//! own work is left out: no pool (each client connection gets its own
//! upstream connection, opened on its first request), no route table, no
//! security checks, no hop-by-hop header handling, no timeouts, no access
//! log, no metrics, no graceful drain. One thread (a current-thread
//! runtime), HTTP/1.1 only on both sides.
//!
//! Not a product: a wrong config panics, and upstream errors answer 502
//! without a body.
//!
//! `FLOOR_DUTIES=all` (or a comma-separated subset of `id,hop,log,metrics,
//! timeout,pool`) adds, each in the cheapest form that still does the job,
//! the per-request work SPEC.md asks of any authproxy route, so that the
//! floor of a proxy that keeps the contract can be measured
//! (bench/callgrind.sh's `duties` system):
//!
//! - `id`: the client's `X-Request-Id` kept (when short and printable) or
//!   one made (a counter after a random prefix); sent upstream and in the
//!   answer.
//! - `hop`: hop-by-hop headers (RFC 9110 §7.6.1) and the headers
//!   `Connection` names removed from the request and the answer.
//! - `log`: one access-log line per request, written when the answer's
//!   body ends, with the fields SPEC.md lists (time as epoch seconds with
//!   microseconds, the cheapest form), batched as authproxy batches its
//!   lines: written out at 64 KiB or every 50 ms.
//! - `metrics`: a request counter per status class and an upstream-latency
//!   histogram (atomics, no labels map).
//! - `timeout`: the upstream answer under a deadline (a tokio timer).
//! - `pool`: one upstream pool shared by all client connections (taken
//!   under a lock, given back when the answer's body ends), instead of an
//!   upstream connection per client connection.
//!
//! hyper's own knobs, to see whether one lowers the floor (both sides of
//! the proxy): `FLOOR_WRITEV=true|false` (the write strategy: vectored
//! writes or one flattened buffer; unset: hyper's default, which picks
//! per connection), `FLOOR_MAX_BUF=BYTES` (the read buffer's limit).
//!
//! `FLOOR_READ=BYTES`: reads from a client at most that many bytes at a
//! time, as authproxy does while a request body streams in (its
//! `BODY_READ`, 16 KiB − 1: the bound on what a stalled upload holds of
//! hyper's read buffer). The floor applies it to every read, head
//! included; a head is far shorter than the bound.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::{combinators::BoxBody, BodyExt, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

// Beside this file rather than in bench/ (a crate root's modules would be).
#[path = "hyper_floor/duties.rs"]
mod duties;
use duties::{forward_with_duties, Conn, Duties, Metrics, Slot};

struct Route {
    prefix: String,
    upstream_host: String,
    upstream_path: String,
    authorization: HeaderValue,
    duties: Duties,
    /// For an `https` upstream.
    tls: Option<tokio_rustls::TlsConnector>,
    /// The shared pool (`pool` duty).
    pool: std::sync::Mutex<Vec<Conn>>,
    metrics: Metrics,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let config = match args.iter().position(|a| a == "--config") {
        Some(i) => &args[i + 1],
        None => panic!("usage: hyper_floor run --config FILE"),
    };
    let text = std::fs::read_to_string(config).expect("config readable");
    let value: toml::Table = text.parse().expect("config is TOML");
    let listen = value["server"]["listen"].as_str().expect("server.listen");
    let routes = value["routes"].as_array().expect("[[routes]]");
    let route = match std::env::var("FLOOR_ROUTE") {
        Ok(prefix) => routes
            .iter()
            .find(|r| r.get("prefix").and_then(|p| p.as_str()) == Some(prefix.as_str()))
            .expect("FLOOR_ROUTE names a route's prefix"),
        Err(_) => &routes[0],
    };
    let upstream: Uri = route["upstream"]
        .as_str()
        .expect("routes[0].upstream")
        .parse()
        .expect("upstream is a URI");
    let provider = route["provider"].as_str().expect("routes[0].provider");
    let authorization = value["providers"][provider]["headers"]["Authorization"]
        .as_str()
        .expect("static Authorization header");
    let route = Arc::new(Route {
        prefix: route["prefix"].as_str().expect("prefix").to_string(),
        upstream_host: upstream.authority().expect("upstream host").to_string(),
        tls: (upstream.scheme_str() == Some("https")).then(|| {
            tls_connector(
                route["ca_file"]
                    .as_str()
                    .expect("an https upstream's ca_file"),
            )
        }),
        upstream_path: upstream.path().to_string(),
        authorization: HeaderValue::from_str(authorization).expect("header value"),
        duties: Duties::from_env(),
        pool: std::sync::Mutex::default(),
        metrics: Metrics::default(),
    });

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        if route.duties.log() {
            tokio::spawn(duties::flush_log_periodically());
        }
        let listener = TcpListener::bind(listen).await.expect("listen");
        let log = route.duties.log();
        let accept = async move {
            loop {
                let Ok((stream, client)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let route = route.clone();
                tokio::spawn(serve_connection(stream, client, route));
            }
        };
        // Stopped as the bench stops authproxy (SIGTERM) or by hand
        // (SIGINT): the log lines still waiting are written first.
        tokio::select! {
            () = accept => {}
            () = stop_signal() => {}
        }
        if log {
            duties::flush_log();
        }
    });
}

async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// A client socket read at most `cap` bytes at a time (`FLOOR_READ`).
struct CappedRead {
    stream: TcpStream,
    cap: usize,
}

impl AsyncRead for CappedRead {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let cap = self.cap;
        if buf.remaining() <= cap {
            return Pin::new(&mut self.stream).poll_read(cx, buf);
        }
        loop {
            std::task::ready!(self.stream.poll_read_ready(cx))?;
            match self
                .stream
                .try_read_buf(&mut bytes::BufMut::limit(&mut *buf, cap))
            {
                Ok(_) => return Poll::Ready(Ok(())),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for CappedRead {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The upstream connection of one client connection (no duties).
type Upstream = Arc<tokio::sync::Mutex<Option<SendRequest<Incoming>>>>;

async fn serve_connection(stream: TcpStream, client: SocketAddr, route: Arc<Route>) {
    match knobs().read {
        Some(cap) => serve(TokioIo::new(CappedRead { stream, cap }), client, route).await,
        None => serve(TokioIo::new(stream), client, route).await,
    }
}

async fn serve<I>(io: TokioIo<I>, client: SocketAddr, route: Arc<Route>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    if let Some(w) = knobs().writev {
        builder.writev(w);
    }
    if let Some(n) = knobs().max_buf {
        builder.max_buf_size(n);
    }
    if route.duties.any() {
        let slot = Slot::default();
        let service = hyper::service::service_fn(move |req| {
            let route = route.clone();
            let slot = slot.clone();
            async move { Ok::<_, hyper::Error>(forward_with_duties(req, client, &route, &slot).await) }
        });
        let _ = builder.serve_connection(io, service).await;
    } else {
        let upstream = Upstream::default();
        let service = hyper::service::service_fn(move |req| {
            let route = route.clone();
            let upstream = upstream.clone();
            async move { Ok::<_, hyper::Error>(forward(req, &route, &upstream).await) }
        });
        let _ = builder.serve_connection(io, service).await;
    }
}

async fn forward(
    req: Request<Incoming>,
    route: &Route,
    upstream: &Upstream,
) -> Response<BoxBody<Bytes, hyper::Error>> {
    let (mut parts, body) = req.into_parts();
    let rest = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .strip_prefix(route.prefix.as_str())
        .unwrap_or("");
    parts.uri = format!("{}{rest}", route.upstream_path)
        .parse()
        .unwrap_or_default();
    parts.headers.insert(
        http::header::HOST,
        HeaderValue::from_str(&route.upstream_host).expect("host value"),
    );
    parts
        .headers
        .insert(http::header::AUTHORIZATION, route.authorization.clone());
    let req = Request::from_parts(parts, body);

    let mut guard = upstream.lock().await;
    if guard.as_ref().is_none_or(|s| s.is_closed()) {
        *guard = connect(route).await;
    }
    let Some(sender) = guard.as_mut() else {
        return bad_gateway();
    };
    if sender.ready().await.is_err() {
        *guard = None;
        return bad_gateway();
    }
    let answer = sender.send_request(req);
    drop(guard);
    match answer.await {
        Ok(response) => response.map(BodyExt::boxed),
        Err(_) => bad_gateway(),
    }
}

/// TLS to an upstream that trusts only the certificates in `ca_file`.
fn tls_connector(ca_file: &str) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).expect("ca_file readable") {
        roots
            .add(cert.expect("ca_file PEM"))
            .expect("a CA certificate");
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn connect(route: &Route) -> Option<SendRequest<Incoming>> {
    let stream = TcpStream::connect(&route.upstream_host).await.ok()?;
    let _ = stream.set_nodelay(true);
    match &route.tls {
        None => handshake(TokioIo::new(stream)).await,
        Some(tls) => {
            let host = route
                .upstream_host
                .rsplit_once(':')
                .map_or(route.upstream_host.as_str(), |(h, _)| h);
            let name = rustls::pki_types::ServerName::try_from(host.to_string()).ok()?;
            handshake(TokioIo::new(tls.connect(name, stream).await.ok()?)).await
        }
    }
}

async fn handshake<I>(io: TokioIo<I>) -> Option<SendRequest<Incoming>>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::client::conn::http1::Builder::new();
    if let Some(w) = knobs().writev {
        builder.writev(w);
    }
    if let Some(n) = knobs().max_buf {
        builder.max_buf_size(n);
    }
    let (sender, conn) = builder.handshake(io).await.ok()?;
    tokio::spawn(conn);
    Some(sender)
}

/// The environment knobs (see the top of this file), read once: a
/// `getenv` per connection cost the floor about 1.4k instructions per
/// request on the connection-per-request row.
struct Knobs {
    read: Option<usize>,
    writev: Option<bool>,
    max_buf: Option<usize>,
}

fn knobs() -> &'static Knobs {
    static KNOBS: std::sync::OnceLock<Knobs> = std::sync::OnceLock::new();
    KNOBS.get_or_init(|| Knobs {
        read: knob("FLOOR_READ"),
        writev: knob("FLOOR_WRITEV"),
        max_buf: knob("FLOOR_MAX_BUF"),
    })
}

/// An environment knob, parsed; unset (or unparsable): hyper's default.
fn knob<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok()?.parse().ok()
}

fn bad_gateway() -> Response<BoxBody<Bytes, hyper::Error>> {
    let mut r = Response::new(Empty::new().map_err(|never| match never {}).boxed());
    *r.status_mut() = StatusCode::BAD_GATEWAY;
    r
}
