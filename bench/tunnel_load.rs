//! Load inside forward-proxy tunnels, for `bench/compare.py`'s tunnel rows
//! (wrk cannot send `CONNECT`).
//!
//! ```text
//! cargo build --release --example tunnel_load
//! tunnel_load tunnel  PROXY HOST:PORT CA_PEM PATH CONNS SECONDS
//! tunnel_load tls     PROXY HOST:PORT CA_PEM PATH CONNS SECONDS
//! tunnel_load reverse PROXY PREFIX+PATH CONNS SECONDS
//! ```
//!
//! `tunnel`: each of CONNS client connections sends `CONNECT HOST:PORT` to
//! PROXY once, does TLS inside (trusting CA_PEM, the forward-proxy CA, for
//! the name HOST), then keep-alive `GET PATH` requests, one in flight at a
//! time, until SECONDS are up. `tls`: the same without `CONNECT`, TLS
//! straight to PROXY (a TLS-terminating nginx or HAProxy front, which is
//! what nginx and HAProxy can offer instead of a tunnel). `reverse`: the same requests straight to the
//! proxy's listen address (a reverse route), for comparison. One line out:
//! `requests=… seconds=… rps=… p50_ms=… p99_ms=… errors=… setup_ms=…`
//! (setup: the slowest connection's CONNECT + TLS handshake, before the
//! clock starts). Every answer must be a 200; anything else counts as an
//! error and ends that connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

struct Tunnel {
    /// `CONNECT` this first; `None`: TLS straight to the proxy.
    connect: Option<String>,
    target: String,
    tls: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
}

struct Load {
    proxy: String,
    path: String,
    conns: usize,
    seconds: f64,
    tunnel: Option<Arc<Tunnel>>,
}

#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    errors: u64,
    setup: Duration,
}

fn usage() -> ! {
    eprintln!(
        "usage: tunnel_load tunnel|tls PROXY HOST:PORT CA_PEM PATH CONNS SECONDS\n       \
         tunnel_load reverse PROXY PATH CONNS SECONDS"
    );
    std::process::exit(2)
}

fn parse() -> Result<Load> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let tail = |from: usize| -> Result<(usize, f64)> {
        Ok((args[from].parse()?, args[from + 1].parse()?))
    };
    match args.first().map(String::as_str) {
        Some(mode @ ("tunnel" | "tls")) if args.len() == 7 => {
            let target = args[2].clone();
            let host = target
                .rsplit_once(':')
                .map_or(target.as_str(), |(h, _)| h)
                .to_string();
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(&args[3])? {
                roots.add(cert?)?;
            }
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
            let (conns, seconds) = tail(5)?;
            Ok(Load {
                proxy: args[1].clone(),
                path: args[4].clone(),
                conns,
                seconds,
                tunnel: Some(Arc::new(Tunnel {
                    connect: (mode == "tunnel").then(|| target.clone()),
                    target,
                    tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
                    name: ServerName::try_from(host)?,
                })),
            })
        }
        Some("reverse") if args.len() == 5 => {
            let (conns, seconds) = tail(3)?;
            Ok(Load {
                proxy: args[1].clone(),
                path: args[2].clone(),
                conns,
                seconds,
                tunnel: None,
            })
        }
        _ => usage(),
    }
}

/// `CONNECT` on a fresh connection; the stream once the proxy said 200.
async fn connect(proxy: &str, target: &str) -> Result<TcpStream> {
    let mut tcp = TcpStream::connect(proxy).await?;
    tcp.set_nodelay(true)?;
    tcp.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await?;
    // Byte by byte up to the blank line: nothing of the TLS stream after
    // it may be consumed here (the proxy sends nothing before our hello).
    let mut head = Vec::with_capacity(128);
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 8192 {
            return Err("CONNECT answer head over 8 KiB".into());
        }
        let mut byte = [0u8];
        if tcp.read(&mut byte).await? == 0 {
            return Err("proxy closed the connection after CONNECT".into());
        }
        head.push(byte[0]);
    }
    if !head.starts_with(b"HTTP/1.1 200") && !head.starts_with(b"HTTP/1.0 200") {
        return Err(format!("CONNECT refused: {}", String::from_utf8_lossy(&head)).into());
    }
    Ok(tcp)
}

async fn handshake<T>(io: T) -> Result<SendRequest<Empty<Bytes>>>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn open(load: &Load) -> Result<(SendRequest<Empty<Bytes>>, String)> {
    match &load.tunnel {
        Some(t) => {
            let tcp = match &t.connect {
                Some(target) => connect(&load.proxy, target).await?,
                None => {
                    let tcp = TcpStream::connect(&load.proxy).await?;
                    tcp.set_nodelay(true)?;
                    tcp
                }
            };
            let tls = t.tls.connect(t.name.clone(), tcp).await?;
            Ok((handshake(tls).await?, t.target.clone()))
        }
        None => {
            let tcp = TcpStream::connect(&load.proxy).await?;
            tcp.set_nodelay(true)?;
            Ok((handshake(tcp).await?, load.proxy.clone()))
        }
    }
}

/// One connection: opened, then requests until `deadline`, which is set
/// once every connection is open (`start` says when).
async fn one(load: Arc<Load>, start: Arc<tokio::sync::Barrier>) -> Result<Tally> {
    let t0 = Instant::now();
    let opened = open(&load).await;
    let mut tally = Tally {
        setup: t0.elapsed(),
        ..Tally::default()
    };
    start.wait().await;
    let (mut sender, host) = opened?;
    let deadline = Instant::now() + Duration::from_secs_f64(load.seconds);
    while Instant::now() < deadline {
        let req = Request::get(load.path.as_str())
            .header(http::header::HOST, host.as_str())
            .body(Empty::new())?;
        let sent = Instant::now();
        let ok = async {
            sender.ready().await?;
            let res = sender.send_request(req).await?;
            let status = res.status();
            res.into_body().collect().await?;
            Ok::<_, hyper::Error>(status == http::StatusCode::OK)
        }
        .await;
        match ok {
            Ok(true) => tally.latencies.push(sent.elapsed()),
            _ => {
                tally.errors += 1;
                break;
            }
        }
    }
    Ok(tally)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

fn main() -> Result<()> {
    let load = Arc::new(parse()?);
    // One thread, as wrk -t1 in the other rows.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let start = Arc::new(tokio::sync::Barrier::new(load.conns));
        let tasks: Vec<_> = (0..load.conns)
            .map(|_| tokio::spawn(one(load.clone(), start.clone())))
            .collect();
        let mut all = Tally::default();
        let mut failed = Vec::new();
        for t in tasks {
            match t.await? {
                Ok(tally) => {
                    all.latencies.extend(tally.latencies);
                    all.errors += tally.errors;
                    all.setup = all.setup.max(tally.setup);
                }
                Err(e) => {
                    all.errors += 1;
                    failed.push(e.to_string());
                }
            }
        }
        all.latencies.sort_unstable();
        let n = all.latencies.len();
        println!(
            "requests={n} seconds={:.3} rps={:.1} p50_ms={:.3} p99_ms={:.3} errors={} setup_ms={:.1}",
            load.seconds,
            n as f64 / load.seconds,
            percentile(&all.latencies, 0.50),
            percentile(&all.latencies, 0.99),
            all.errors,
            all.setup.as_secs_f64() * 1000.0,
        );
        if let Some(e) = failed.first() {
            eprintln!("tunnel_load: {} connection(s) failed; first: {e}", failed.len());
        }
        Ok(())
    })
}
