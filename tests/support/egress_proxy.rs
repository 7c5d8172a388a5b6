//! A recording HTTP proxy on 127.0.0.1 for the egress tests: it records
//! the head of every request it gets (request line and headers), tunnels
//! `CONNECT`, and forwards absolute-form requests (one per connection, with
//! `Connection: close`, as HTTP/1.0 proxies do).
//!
//! Like a real proxy it resolves the names it is asked for, here by a
//! fixed rule: every `*.example.test` name is 127.0.0.1 (the test's own
//! servers). So an upstream or token URL on such a name counts as a
//! non-loopback destination for authproxy, and still reaches a loopback
//! mock, without DNS.
//!
//! Refusals, as a proxy's access rules would give them: when credentials
//! are required, a missing or wrong `Proxy-Authorization` gets `407`;
//! a host starting with `deny403.` gets `403`, `deny407.` gets `407`.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One request head as the proxy received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    /// Lower-case names, in order.
    pub headers: Vec<(String, String)>,
    /// The status the proxy answered with itself, if it refused.
    pub refused: Option<u16>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub struct RecordingProxy {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

struct Rules {
    /// The exact `Proxy-Authorization` value required, if any.
    required: Option<String>,
}

/// `Basic base64(user:password)`.
pub fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

impl RecordingProxy {
    /// A proxy that takes anyone.
    pub async fn open() -> RecordingProxy {
        Self::start(None).await
    }

    /// A proxy that wants these credentials.
    pub async fn with_credentials(user: &str, password: &str) -> RecordingProxy {
        Self::start(Some(basic(user, password))).await
    }

    async fn start(required: Option<String>) -> RecordingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let rules = Arc::new(Rules { required });
        let s = seen.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let (seen, rules) = (s.clone(), rules.clone());
                tokio::spawn(async move {
                    let _ = serve(conn, &seen, &rules).await;
                });
            }
        });
        RecordingProxy { addr, seen }
    }

    /// `http://127.0.0.1:port`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://user:password@127.0.0.1:port`.
    pub fn url_with(&self, user: &str, password: &str) -> String {
        format!("http://{user}:{password}@{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Where the proxy sends `host:port`: `*.example.test` and loopback names
/// are this machine.
fn resolve(host: &str, port: u16) -> Option<SocketAddr> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.ends_with(".example.test") || host == "localhost" {
        return Some(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    host.parse().ok().map(|ip| SocketAddr::new(ip, port))
}

async fn serve(
    mut client: TcpStream,
    seen: &Mutex<Vec<Seen>>,
    rules: &Rules,
) -> std::io::Result<()> {
    let (head, rest) = read_head(&mut client).await?;
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_string();
    let target = first.next().unwrap_or("").to_string();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut record = Seen {
        method: method.clone(),
        target: target.clone(),
        headers: headers.clone(),
        refused: None,
    };
    let (host, port, path) = if method == "CONNECT" {
        let (h, p) = target.rsplit_once(':').unwrap_or((&target, "443"));
        (h.to_string(), p.parse().unwrap_or(443), String::new())
    } else {
        match url::Url::parse(&target) {
            Ok(u) => {
                let path = match u.query() {
                    Some(q) => format!("{}?{q}", u.path()),
                    None => u.path().to_string(),
                };
                (
                    u.host_str().unwrap_or("").to_string(),
                    u.port_or_known_default().unwrap_or(80),
                    path,
                )
            }
            Err(_) => (String::new(), 0, String::new()),
        }
    };
    let auth_ok = rules
        .required
        .as_deref()
        .is_none_or(|want| record.header("proxy-authorization") == Some(want));
    let refusal = if !auth_ok || host.starts_with("deny407.") {
        Some((407, "Proxy Authentication Required"))
    } else if host.starts_with("deny403.") {
        Some((403, "Forbidden"))
    } else {
        None
    };
    let upstream = match (refusal, resolve(&host, port)) {
        (None, Some(addr)) => TcpStream::connect(addr).await.ok(),
        _ => None,
    };
    let Some(mut upstream) = upstream else {
        let (code, reason) = refusal.unwrap_or((502, "Bad Gateway"));
        record.refused = Some(code);
        seen.lock().unwrap().push(record);
        let answer = format!(
            "HTTP/1.1 {code} {reason}\r\nProxy-Authenticate: Basic realm=\"test\"\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        client.write_all(answer.as_bytes()).await?;
        return client.shutdown().await;
    };
    seen.lock().unwrap().push(record);
    if method == "CONNECT" {
        client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await?;
        upstream.write_all(&rest).await?;
        tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
        return Ok(());
    }
    // Absolute form: forwarded in origin form, the proxy's own headers
    // dropped, one request on this connection.
    let mut out = format!("{method} {path} HTTP/1.1\r\n");
    for (name, value) in &headers {
        if !matches!(
            name.as_str(),
            "proxy-authorization" | "proxy-connection" | "connection" | "keep-alive"
        ) {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    out.push_str("connection: close\r\n\r\n");
    upstream.write_all(out.as_bytes()).await?;
    upstream.write_all(&rest).await?;
    let (mut client_read, mut client_write) = client.into_split();
    let (mut up_read, mut up_write) = upstream.into_split();
    let body = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut up_write).await;
    });
    tokio::io::copy(&mut up_read, &mut client_write).await?;
    body.abort();
    client_write.shutdown().await
}

/// The request head (up to and without the blank line) and whatever came
/// after it in the same reads.
async fn read_head(conn: &mut TcpStream) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(end + 4);
            buf.truncate(end);
            return Ok((buf, rest));
        }
        if buf.len() > 64 * 1024 {
            return Err(std::io::ErrorKind::InvalidData.into());
        }
    }
}

/// An https echo upstream on 127.0.0.1 with the given certificate: it
/// answers every request with [`super::echo_response`] and records it.
pub struct TlsEcho {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<super::Recorded>>>,
}

impl TlsEcho {
    pub async fn start(cert_pem: &str, key_pem: &str) -> TlsEcho {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        authproxy::install_crypto_provider();
        let certs: Vec<CertificateDer<'static>> =
            CertificateDer::pem_slice_iter(cert_pem.as_bytes())
                .map(|c| c.unwrap())
                .collect();
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests: Arc<Mutex<Vec<super::Recorded>>> = Arc::default();
        let r = requests.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, r) = (acceptor.clone(), r.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        let r = r.clone();
                        async move {
                            let rec = super::record(req.map(axum::body::Body::new)).await;
                            r.lock().unwrap().push(rec.clone());
                            Ok::<_, std::convert::Infallible>(super::echo_response(&rec))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        TlsEcho { addr, requests }
    }

    pub fn last(&self) -> super::Recorded {
        self.requests
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("no request")
    }
}
