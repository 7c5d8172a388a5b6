//! HTTP/2 against HTTP/1.1 to a high-latency upstream: 64 clients at once
//! through the proxy to an https upstream that answers each request after
//! 20 ms, once over a route with `http2 = "auto"` (ALPN picks h2) and once
//! with `http2 = "never"`. Prints the upstream connections each run opened
//! and the latency percentiles the clients saw.
//!
//! ```text
//! cargo run --release --example h2_upstream [-- CLIENTS REQUESTS_PER_CLIENT DELAY_MS]
//! ```
//!
//! Everything in one process on loopback: the upstream (hyper, rustls with
//! a CA made here by rcgen), the proxy (`authproxy::run`), the clients
//! (reqwest, HTTP/1.1 keep-alive to the proxy, one connection each).
//!
//! Measured 2026-12-01 (release without LTO, on a 2-core machine shared
//! with other builds, load ~5; each protocol twice, in turns):
//!
//! ```text
//! protocol  upstream_conns  p50_ms  p99_ms  max_ms  req/s
//! h2                     1    27.5   407.8   867.7   1265
//! h1                    64    25.7   440.2   883.6   1414
//! h2                     0    24.2   275.3   513.3   1677
//! h1                     0    23.6   331.4   594.0   1695
//! ```
//!
//! One upstream connection instead of 64, at the same median. On loopback
//! a connection costs no round trips, so what HTTP/2 saves there (64 TCP
//! and TLS handshakes, 64 sockets upstream) does not show in the latency;
//! the tails are the shared machine's.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numbers: CLIENTS REQUESTS DELAY_MS"))
        .collect();
    let clients = args.first().copied().unwrap_or(64);
    let per_client = args.get(1).copied().unwrap_or(50);
    let delay = Duration::from_millis(args.get(2).copied().unwrap_or(20) as u64);
    authproxy::install_crypto_provider();

    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = pki();
    std::fs::write(dir.path().join("ca.pem"), ca).unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let upstream = upstream(cert, key, delay, connections.clone()).await;
    let config = format!(
        r#"
[[routes]]
prefix = "/h2/"
upstream = "https://127.0.0.1:{port}/"
ca_file = "ca.pem"

[[routes]]
prefix = "/h1/"
upstream = "https://127.0.0.1:{port}/"
ca_file = "ca.pem"
http2 = "never"
"#,
        port = upstream.port()
    );
    let path = dir.path().join("authproxy.toml");
    std::fs::write(&path, config).unwrap();
    let config = authproxy::Config::load(&path).unwrap();
    let state = authproxy::AppState::new(config).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = listener.local_addr().unwrap();
    tokio::spawn(authproxy::run(state, listener, std::future::pending()));

    println!(
        "{clients} clients x {per_client} requests, upstream answers after {} ms",
        delay.as_millis()
    );
    println!("protocol  upstream_conns  p50_ms  p99_ms  max_ms  req/s");
    for (name, prefix) in [
        ("h2", "/h2/"),
        ("h1", "/h1/"),
        ("h2", "/h2/"),
        ("h1", "/h1/"),
    ] {
        let before = connections.load(Ordering::SeqCst);
        let (mut latencies, wall) = run(proxy, prefix, clients, per_client).await;
        let opened = connections.load(Ordering::SeqCst) - before;
        latencies.sort();
        let pct = |p: f64| {
            latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)]
                .as_secs_f64()
                * 1000.0
        };
        println!(
            "{name:<8}  {opened:>14}  {:>6.1}  {:>6.1}  {:>6.1}  {:>5.0}",
            pct(0.50),
            pct(0.99),
            pct(1.0),
            latencies.len() as f64 / wall.as_secs_f64()
        );
    }
}

/// `clients` clients, each sending `per_client` requests one after the
/// other; every request's latency and the run's wall time.
async fn run(
    proxy: SocketAddr,
    prefix: &str,
    clients: usize,
    per_client: usize,
) -> (Vec<Duration>, Duration) {
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let url = format!("http://{proxy}{prefix}item");
            tokio::spawn(async move {
                let client = reqwest::Client::builder()
                    .no_proxy()
                    .http1_only()
                    .build()
                    .unwrap();
                let mut out = Vec::with_capacity(per_client);
                for _ in 0..per_client {
                    let t = Instant::now();
                    let r = client.get(&url).send().await.unwrap();
                    assert_eq!(r.status(), 200);
                    r.bytes().await.unwrap();
                    out.push(t.elapsed());
                }
                out
            })
        })
        .collect();
    let mut all = Vec::with_capacity(clients * per_client);
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    (all, started.elapsed())
}

/// An https upstream that answers every request after `delay`, HTTP/2 or
/// HTTP/1.1 as ALPN chose, counting the connections it accepts.
async fn upstream(
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
    delay: Duration,
    connections: Arc<AtomicUsize>,
) -> SocketAddr {
    let mut tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            connections.fetch_add(1, Ordering::SeqCst);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                let io = TokioIo::new(tls);
                let service =
                    hyper::service::service_fn(move |_req: Request<Incoming>| async move {
                        tokio::time::sleep(delay).await;
                        Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from_static(
                            b"{\"ok\":true}",
                        ))))
                    });
                if h2 {
                    let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                    b.max_concurrent_streams(250);
                    let _ = b.serve_connection(io, service).await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                }
            });
        }
    });
    addr
}

/// A CA (PEM) and a leaf for 127.0.0.1 signed by it.
fn pki() -> (String, CertificateDer<'static>, PrivateKeyDer<'static>) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    (
        ca_cert.pem(),
        leaf.der().clone(),
        PrivatePkcs8KeyDer::from(leaf_key.serialize_der()).into(),
    )
}
