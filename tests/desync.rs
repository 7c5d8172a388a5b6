//! Requests that would make the proxy and an upstream disagree about where
//! one request ends or what a connection is: a body on a GET read by a
//! lenient upstream as the next request (CL.0), TRACE echoing the injected
//! credential, missing or doubled `Host`, and an h2c upgrade that would
//! turn the client's connection into a raw tunnel. Raw sockets on both
//! sides, the proxy as a black box.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use support::{client, start_proxy, Echo};

const SECRET: &str = "Token DESYNC-SECRET";

fn config(upstream: &str) -> String {
    format!(
        r#"
[store]
kind = "memory"
[providers.cred]
type = "static"
headers = {{ Authorization = "{SECRET}" }}
[[routes]]
prefix = "/cred/"
upstream = "{upstream}/"
provider = "cred"
"#
    )
}

/// A request head an upstream parsed, and the connection it came on.
#[derive(Debug, Clone)]
struct Parsed {
    conn: usize,
    head: String,
}

impl Parsed {
    fn path(&self) -> &str {
        self.head.split_whitespace().nth(1).unwrap_or("")
    }
}

/// An upstream as lenient as some are: it reads no body on GET, HEAD,
/// OPTIONS and DELETE whatever `Content-Length` says, and ignores
/// `Connection: close`. Each answer says which path it answers; the answer
/// to `/leak` is the whole request head it got.
struct Lenient {
    addr: SocketAddr,
    parsed: Arc<Mutex<Vec<Parsed>>>,
}

impl Lenient {
    async fn start() -> Lenient {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let parsed: Arc<Mutex<Vec<Parsed>>> = Arc::default();
        let p = parsed.clone();
        tokio::spawn(async move {
            for conn in 0.. {
                let Ok((s, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(Self::serve(s, conn, p.clone()));
            }
        });
        Lenient { addr, parsed }
    }

    async fn serve(mut s: TcpStream, conn: usize, parsed: Arc<Mutex<Vec<Parsed>>>) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            let end = loop {
                if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break end;
                }
                match s.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            };
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            let method = head.split_whitespace().next().unwrap_or("").to_string();
            if !matches!(method.as_str(), "GET" | "HEAD" | "OPTIONS" | "DELETE") {
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (n, v) = l.split_once(':')?;
                        n.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                while buf.len() < len {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                buf.drain(..len);
            }
            let entry = Parsed { conn, head };
            parsed.lock().unwrap().push(entry.clone());
            let body = if entry.path() == "/leak" {
                entry.head.clone()
            } else {
                format!("answer for {}", entry.path())
            };
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            if s.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn parsed(&self) -> Vec<Parsed> {
        self.parsed.lock().unwrap().clone()
    }
}

/// Reads one answer (by its Content-Length) from `s`.
async fn read_answer(s: &mut TcpStream) -> (u16, String, String) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned();
                return (status, head, body);
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut chunk))
            .await
            .expect("an answer within 30 s")
            .unwrap();
        assert!(n > 0, "closed before a whole answer: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn exchange(addr: SocketAddr, request: &[u8]) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    read_answer(&mut s).await
}

/// The reproduction of issue 13 item 6: a `GET` whose 58-byte body is the
/// start of another request. The lenient upstream reads it as the next
/// request on that connection; had the proxy reused the connection, the
/// next client's request would have completed it, and that client would
/// have got the answer to `/leak` with the credential injected into its
/// own request in it.
#[tokio::test]
async fn a_body_on_get_never_reaches_the_next_client() {
    let upstream = Lenient::start().await;
    let proxy = start_proxy(&config(&upstream.url())).await;
    let smuggled = "GET /leak HTTP/1.1\r\nHost: upstream\r\nX-Swallowed-Requests: ";
    assert_eq!(smuggled.len(), 58);
    for method in ["GET", "DELETE", "OPTIONS"] {
        let before = upstream.parsed().len();
        let attack = format!(
            "{method} /cred/first HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n{smuggled}",
            smuggled.len()
        );
        let (status, _, body) = exchange(proxy.addr, attack.as_bytes()).await;
        assert_eq!(
            (status, body.as_str()),
            (200, "answer for /first"),
            "{method}"
        );

        let next = client().get(proxy.url("/cred/next")).send().await.unwrap();
        assert_eq!(next.status(), 200);
        let body = next.text().await.unwrap();
        assert_eq!(
            body, "answer for /next",
            "{method}: the next client got another answer"
        );
        assert!(!body.contains("DESYNC-SECRET"), "{method}: {body}");

        let parsed = &upstream.parsed()[before..];
        assert!(
            parsed.iter().all(|p| p.path() != "/leak"),
            "{method}: the smuggled request was answered: {parsed:?}"
        );
        let (first, next) = (&parsed[0], &parsed[1]);
        assert_ne!(first.conn, next.conn, "{method}: the connection was reused");
        assert!(
            first
                .head
                .to_ascii_lowercase()
                .contains("connection: close"),
            "{method}: {}",
            first.head
        );
    }

    // Bodies where they belong keep the connection (what makes the test
    // above able to see a reuse).
    let before = upstream.parsed().len();
    for path in ["/cred/p1", "/cred/p2"] {
        let r = client()
            .post(proxy.url(path))
            .body("some body")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap();
    }
    let parsed = &upstream.parsed()[before..];
    assert_eq!(
        parsed[0].conn, parsed[1].conn,
        "POSTs did not share a connection"
    );
}

#[tokio::test]
async fn trace_and_track_are_refused_without_contacting_the_upstream() {
    let echo = Echo::start().await;
    let proxy = start_proxy(&config(&echo.url())).await;
    for method in ["TRACE", "TRACK"] {
        for path in ["/cred/x", "/_authproxy/status", "/nothing-here"] {
            let request = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
            let (status, head, body) = exchange(proxy.addr, request.as_bytes()).await;
            assert_eq!(status, 405, "{method} {path}: {head}\n{body}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["error"], "method_not_allowed", "{method} {path}");
            assert!(!body.contains("DESYNC-SECRET"));
        }
    }
    assert_eq!(echo.count(), 0);
}

#[tokio::test]
async fn host_must_be_there_once_in_http_1_1() {
    let echo = Echo::start().await;
    let proxy = start_proxy(&config(&echo.url())).await;
    for (what, request) in [
        ("no Host", "GET /cred/x HTTP/1.1\r\n\r\n"),
        (
            "two Hosts",
            "GET /cred/x HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n\r\n",
        ),
        (
            "the same Host twice",
            "GET /cred/x HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: 127.0.0.1\r\n\r\n",
        ),
        (
            "two Hosts in HTTP/1.0",
            "GET /cred/x HTTP/1.0\r\nHost: 127.0.0.1\r\nHost: evil.example\r\n\r\n",
        ),
    ] {
        let (status, _, body) = exchange(proxy.addr, request.as_bytes()).await;
        assert_eq!(status, 400, "{what}: {body}");
        assert!(body.contains("bad_request"), "{what}: {body}");
    }
    assert_eq!(echo.count(), 0);
    // HTTP/1.0 without Host is served.
    let (status, _, _) = exchange(proxy.addr, b"GET /cred/old HTTP/1.0\r\n\r\n").await;
    assert_eq!(status, 200);
    assert_eq!(echo.last().path, "/old");
    assert_eq!(echo.count(), 1);
}

/// An upstream that switches to h2c when asked (`eager`: whether asked or
/// not), and records every byte it gets after the switch.
struct Switcher {
    addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    tunnelled: Arc<Mutex<Vec<u8>>>,
}

impl Switcher {
    async fn start(eager: bool) -> Switcher {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let heads: Arc<Mutex<Vec<String>>> = Arc::default();
        let tunnelled: Arc<Mutex<Vec<u8>>> = Arc::default();
        let (h, t) = (heads.clone(), tunnelled.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let (h, t) = (h.clone(), t.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 8192];
                    loop {
                        let end = loop {
                            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break end;
                            }
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                        buf.drain(..end + 4);
                        let asked = head.to_ascii_lowercase().contains("upgrade: h2c");
                        h.lock().unwrap().push(head);
                        if asked || eager {
                            let _ = s
                                .write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n")
                                .await;
                            t.lock().unwrap().extend_from_slice(&buf);
                            loop {
                                match s.read(&mut chunk).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => t.lock().unwrap().extend_from_slice(&chunk[..n]),
                                }
                            }
                        }
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nplain answer")
                            .await;
                    }
                });
            }
        });
        Switcher {
            addr,
            heads,
            tunnelled,
        }
    }
}

/// `Upgrade: h2c` to a credential route whose upstream would switch: the
/// upgrade is not forwarded, so the client's connection never becomes a
/// tunnel in which its next bytes (here a path with `..`) would reach the
/// upstream unchecked. An upstream that switches unasked gets a 502.
#[tokio::test]
async fn h2c_upgrade_never_becomes_a_tunnel() {
    for eager in [false, true] {
        let upstream = Switcher::start(eager).await;
        let proxy = start_proxy(&config(&format!("http://{}", upstream.addr))).await;
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(b"GET /cred/x HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")
            .await
            .unwrap();
        let (status, head, body) = read_answer(&mut s).await;
        let expected = if eager { 502 } else { 200 };
        assert_eq!(status, expected, "eager {eager}: {head}\n{body}");
        let heads = upstream.heads.lock().unwrap().clone();
        assert_eq!(heads.len(), 1);
        assert!(
            !heads[0].to_ascii_lowercase().contains("upgrade"),
            "the upgrade was forwarded: {}",
            heads[0]
        );
        // The next bytes on the client's connection are a request to the
        // proxy, which refuses the dot segments.
        let _ = s
            .write_all(
                b"GET /cred/%2e%2e/admin HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
            )
            .await;
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
        let rest = String::from_utf8_lossy(&rest);
        if !rest.is_empty() {
            assert!(rest.starts_with("HTTP/1.1 400"), "eager {eager}: {rest}");
        }
        let tunnelled = upstream.tunnelled.lock().unwrap().clone();
        assert!(
            !String::from_utf8_lossy(&tunnelled).contains("%2e%2e"),
            "eager {eager}: the client's bytes went through a tunnel: {:?}",
            String::from_utf8_lossy(&tunnelled)
        );
        assert_eq!(upstream.heads.lock().unwrap().len(), 1, "eager {eager}");
    }
}
