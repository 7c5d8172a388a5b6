//! Proxy core, in-process: routing, credential injection, header hygiene,
//! streaming, error answers and the security guard. Every server (proxy and
//! mock upstreams) runs in this process on 127.0.0.1:0.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use support::{client, sha256, start_proxy, Echo};

/// Bound on every raw-socket read in this file.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

const TOKEN_SECRET: &str = "Token tok-3f9a1c2b7d";
const EMAIL_SECRET: &str = "robot@rips.example";
const PASSWORD_SECRET: &str = "pw-8d7e6f5a4b";

/// A config with a Token-style route (`/ri/`), a header-pair route
/// (`/rips/`) and a pass-through route (`/open/`), all to `upstream`.
fn static_config(upstream: &str) -> String {
    format!(
        r#"
[providers.ri]
type = "static"
headers = {{ Authorization = "{TOKEN_SECRET}" }}

[providers.rips_plain]
type = "static"
headers = {{ "X-API-Email" = "{EMAIL_SECRET}", "X-API-Password" = "{PASSWORD_SECRET}" }}

[[routes]]
prefix = "/ri/"
upstream = "{upstream}/v1/"
provider = "ri"

[[routes]]
prefix = "/rips/"
upstream = "{upstream}/api/"
provider = "rips_plain"

[[routes]]
prefix = "/open/"
upstream = "{upstream}/"
"#
    )
}

/// One route `prefix` → `upstream` with the Token-style provider `ri`.
fn one_route(prefix: &str, upstream: &str, server: &str) -> String {
    format!(
        r#"
[server]
{server}

[providers.ri]
type = "static"
headers = {{ Authorization = "{TOKEN_SECRET}" }}

[[routes]]
prefix = "{prefix}"
upstream = "{upstream}"
provider = "ri"
"#
    )
}

/// Asserts a proxy error answer: status, `{"error","message","provider"?}`
/// and nothing else in the body.
async fn assert_error(
    response: reqwest::Response,
    status: u16,
    code: &str,
    provider: Option<&str>,
) {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/json",
        "proxy errors are JSON"
    );
    let body: Value = response.json().await.unwrap();
    assert_error_body(&body, code, provider);
}

fn assert_error_body(body: &Value, code: &str, provider: Option<&str>) {
    let obj = body.as_object().expect("error body is a JSON object");
    assert_eq!(obj["error"], code, "{body}");
    let message = obj["message"].as_str().expect("message is a string");
    assert!(!message.is_empty());
    match provider {
        Some(p) => {
            assert_eq!(obj["provider"], p, "{body}");
            assert_eq!(obj.len(), 3, "{body}");
        }
        None => assert_eq!(obj.len(), 2, "no provider key expected: {body}"),
    }
    for secret in [
        TOKEN_SECRET,
        "tok-3f9a1c2b7d",
        EMAIL_SECRET,
        PASSWORD_SECRET,
    ] {
        assert!(!message.contains(secret), "secret in error message: {body}");
    }
}

/// A raw HTTP/1.1 answer: status code, header block (lowercased) and body.
struct RawResponse {
    status: u16,
    head: String,
    body: String,
}

/// Sends `request` as written over a fresh connection (so the client side
/// cannot normalise it) and reads the answer until the server closes; the
/// request should carry `Connection: close`.
async fn raw_request(addr: SocketAddr, request: &str) -> RawResponse {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    tokio::time::timeout(IO_TIMEOUT, stream.read_to_end(&mut buf))
        .await
        .expect("proxy did not close the connection")
        .unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("no header block");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("no status code");
    RawResponse {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_string(),
    }
}

/// Reads from `stream` until the end of an HTTP header block (bounded).
async fn read_head(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert!(buf.len() < 64 * 1024, "header block too long");
        let n = tokio::time::timeout(IO_TIMEOUT, stream.read(&mut byte))
            .await
            .expect("timed out reading a header block")
            .unwrap();
        assert_eq!(n, 1, "connection closed inside the header block");
        buf.push(byte[0]);
    }
    String::from_utf8(buf).unwrap()
}

/// An upstream on a raw socket: for each connection, sends the request
/// head it read to the returned channel and writes `response` as is.
async fn raw_upstream(response: &'static str) -> (SocketAddr, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let head = read_head(&mut stream).await;
            let _ = tx.send(head);
            stream.write_all(response.as_bytes()).await.unwrap();
            stream.shutdown().await.unwrap();
        }
    });
    (addr, rx)
}

/// The Token style: `Authorization: Token …` replaces the client's own
/// Authorization; path prefix stripped, query kept.
#[tokio::test]
async fn token_style_header_is_injected() {
    let echo = Echo::start().await;
    let proxy = start_proxy(&static_config(&echo.url())).await;
    let r = client()
        .get(proxy.url("/ri/x?y=1"))
        .header("authorization", "Bearer mine")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let last = echo.last();
    assert_eq!(last.path, "/v1/x");
    assert_eq!(last.query.as_deref(), Some("y=1"));
    assert_eq!(last.headers["authorization"], vec![TOKEN_SECRET]);
    proxy.stop().await;
}

/// The header-pair style: both headers injected; a client's duplicate
/// `X-API-Email` values are replaced by exactly one configured value, and
/// the client's Authorization is dropped on a credential route.
#[tokio::test]
async fn header_pair_replaces_client_values_and_drops_authorization() {
    let echo = Echo::start().await;
    let proxy = start_proxy(&static_config(&echo.url())).await;
    let r = client()
        .get(proxy.url("/rips/scans"))
        .header("x-api-email", "mallory@evil.example")
        .header("x-api-email", "second@evil.example")
        .header("x-api-password", "guess")
        .header("authorization", "Bearer client-own")
        .header("x-other", "kept")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let last = echo.last();
    assert_eq!(last.path, "/api/scans");
    assert_eq!(last.headers["x-api-email"], vec![EMAIL_SECRET]);
    assert_eq!(last.headers["x-api-password"], vec![PASSWORD_SECRET]);
    assert_eq!(last.header("authorization"), None);
    assert_eq!(last.headers["x-other"], vec!["kept"]);
    proxy.stop().await;
}

/// A route without a provider forwards the client's own Authorization and
/// injects nothing.
#[tokio::test]
async fn pass_through_route_keeps_client_authorization() {
    let echo = Echo::start().await;
    let proxy = start_proxy(&static_config(&echo.url())).await;
    let r = client()
        .get(proxy.url("/open/thing"))
        .header("authorization", "Bearer client-own")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let last = echo.last();
    assert_eq!(last.path, "/thing");
    assert_eq!(last.headers["authorization"], vec!["Bearer client-own"]);
    assert_eq!(last.header("x-api-email"), None);
    assert_eq!(last.header("x-api-password"), None);
    proxy.stop().await;
}

/// The longest matching prefix wins, on whole segments: `/api/v2` beats
/// `/api/` beats `/`, and `/api/v23` is not under `/api/v2/`.
#[tokio::test]
async fn longest_prefix_wins() {
    let echo = Echo::start().await;
    let u = echo.url();
    let proxy = start_proxy(&format!(
        r#"
[[routes]]
prefix = "/"
upstream = "{u}/root/"
[[routes]]
prefix = "/api/"
upstream = "{u}/api-upstream/"
[[routes]]
prefix = "/api/v2/"
upstream = "{u}/v2-upstream/"
"#
    ))
    .await;
    let c = client();
    for (path, expected) in [
        ("/api/v2/items", "/v2-upstream/items"),
        ("/api/v23/items", "/api-upstream/v23/items"),
        ("/api/items", "/api-upstream/items"),
        ("/apix/items", "/root/apix/items"),
        ("/other", "/root/other"),
    ] {
        let r = c.get(proxy.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(echo.last().path, expected, "{path}");
    }
    proxy.stop().await;
}

/// `/api` matches on whole segments only: `/apix` finds no route → 404
/// `no_route`, and the upstream receives nothing.
#[tokio::test]
async fn prefix_does_not_match_longer_segment() {
    let echo = Echo::start().await;
    let proxy = start_proxy(&one_route("/api", &format!("{}/", echo.url()), "")).await;
    let c = client();
    let r = c.get(proxy.url("/apix")).send().await.unwrap();
    assert_error(r, 404, "no_route", None).await;
    let r = c.get(proxy.url("/apix/y")).send().await.unwrap();
    assert_error(r, 404, "no_route", None).await;
    assert_eq!(echo.count(), 0);
    let r = c.get(proxy.url("/api/y")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(echo.last().path, "/y");
    proxy.stop().await;
}

/// Prefix stripping keeps the query string byte for byte; with
/// `strip_prefix = false` the whole path is appended to the upstream's.
#[tokio::test]
async fn prefix_stripping_and_strip_prefix_false() {
    let echo = Echo::start().await;
    let u = echo.url();
    let proxy = start_proxy(&format!(
        r#"
[[routes]]
prefix = "/strip/"
upstream = "{u}/base/"
[[routes]]
prefix = "/keep/"
upstream = "{u}/base/"
strip_prefix = false
"#
    ))
    .await;
    let c = client();
    let r = c
        .get(proxy.url("/strip/a/b?x=1&y=%20z&x=2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let last = echo.last();
    assert_eq!(last.path, "/base/a/b");
    assert_eq!(last.query.as_deref(), Some("x=1&y=%20z&x=2"));

    let r = c.get(proxy.url("/strip")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(echo.last().path, "/base/");
    assert_eq!(echo.last().query, None);

    let r = c.get(proxy.url("/keep/a?q=1")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let last = echo.last();
    assert_eq!(last.path, "/base/keep/a");
    assert_eq!(last.query.as_deref(), Some("q=1"));
    proxy.stop().await;
}

/// `.` / `..` segments, plain or percent-encoded, are refused with 400
/// `bad_request` before any routing; the upstream (a catch-all route)
/// receives nothing. Sent over raw TCP because HTTP clients normalise them.
#[tokio::test]
async fn dot_segments_are_refused() {
    let echo = Echo::start().await;
    let proxy = start_proxy(&one_route("/", &format!("{}/", echo.url()), "")).await;
    for path in [
        "/a/../b",
        "/a/%2e%2e/b",
        "/a/%2E%2E/b",
        "/a/.%2e/b",
        "/a/./b",
        "/a/%2e/b",
        "/..",
    ] {
        let r = raw_request(
            proxy.addr,
            &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(r.status, 400, "{path}: {}", r.body);
        assert!(
            r.head.contains("\r\ncontent-type: application/json"),
            "{}",
            r.head
        );
        let body: Value = serde_json::from_str(&r.body).unwrap();
        assert_error_body(&body, "bad_request", None);
    }
    assert_eq!(
        echo.count(),
        0,
        "a dot-segment request reached the upstream"
    );
    // The same socket path without dots goes through.
    let r = raw_request(
        proxy.addr,
        "GET /a/..b HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(echo.last().path, "/a/..b");
    proxy.stop().await;
}

/// No route → 404 with `{"error":"no_route","message"}` and no provider.
#[tokio::test]
async fn no_route_is_404_json() {
    let echo = Echo::start().await;
    let proxy = start_proxy(&static_config(&echo.url())).await;
    let r = client().get(proxy.url("/nowhere/x")).send().await.unwrap();
    assert_error(r, 404, "no_route", None).await;
    assert_eq!(echo.count(), 0);
    proxy.stop().await;
}

/// An upstream whose port is closed → 502 `upstream_unreachable` naming the
/// route's provider.
#[tokio::test]
async fn closed_upstream_port_is_502() {
    let closed = support::ClosedPort::new();
    let proxy = start_proxy(&one_route("/ri/", &format!("http://{}/", closed.addr), "")).await;
    let r = client().get(proxy.url("/ri/x")).send().await.unwrap();
    assert_error(r, 502, "upstream_unreachable", Some("ri")).await;
    proxy.stop().await;
}

/// An upstream that accepts but never answers → 504 `upstream_timeout`
/// after `upstream_timeout`, and the proxy gives the request up: the
/// upstream sees its connection closed.
#[tokio::test]
async fn silent_upstream_is_504() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (accepted_tx, mut accepted_rx) = mpsc::unbounded_channel();
    let (closed_tx, mut closed_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = accepted_tx.send(());
            let closed_tx = closed_tx.clone();
            // Say nothing; read until the proxy closes the connection.
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
                let _ = closed_tx.send(());
            });
        }
    });
    let proxy = start_proxy(&one_route(
        "/ri/",
        &format!("http://{addr}/"),
        "upstream_timeout = \"300ms\"",
    ))
    .await;
    let started = std::time::Instant::now();
    let r = client().get(proxy.url("/ri/x")).send().await.unwrap();
    let elapsed = started.elapsed();
    assert_error(r, 504, "upstream_timeout", Some("ri")).await;
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(
        accepted_rx.try_recv().is_ok(),
        "the upstream never saw a connection"
    );
    // The timed-out request is cancelled, not left hanging upstream. (The
    // bound only keeps a broken proxy from hanging the test.)
    tokio::time::timeout(IO_TIMEOUT, closed_rx.recv())
        .await
        .expect("the proxy did not close the timed-out upstream connection")
        .unwrap();
    proxy.stop().await;
}

/// `upstream_timeout` bounds the wait for the response head only: a body
/// that keeps streaming for longer than that is not cut off.
#[tokio::test]
async fn upstream_timeout_does_not_cut_a_streaming_body() {
    let upstream = support::serve(Router::new().route(
        "/slow-body",
        get(|| async {
            let chunks = futures_util::stream::iter(0..3u64).then(|i| async move {
                if i > 0 {
                    // The pause is the point of the test: longer than upstream_timeout.
                    tokio::time::sleep(Duration::from_millis(400)).await;
                }
                Ok::<_, std::io::Error>(Bytes::from(format!("part{i};")))
            });
            Body::from_stream(chunks).into_response()
        }),
    ))
    .await;
    let proxy = start_proxy(&one_route(
        "/ri/",
        &format!("http://{upstream}/"),
        "upstream_timeout = \"300ms\"",
    ))
    .await;
    let r = client()
        .get(proxy.url("/ri/slow-body"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "part0;part1;part2;");
    proxy.stop().await;
}

/// `upstream_timeout` is the upstream's time to answer once the request is
/// sent: a slow upload to a healthy upstream is not cut off as a 504.
#[tokio::test]
async fn upstream_timeout_starts_after_a_slow_upload() {
    let echo = Echo::start().await;
    let proxy = start_proxy(&one_route(
        "/ri/",
        &echo.url(),
        "upstream_timeout = \"300ms\"\nmax_replay_body = \"1KiB\"",
    ))
    .await;
    let chunks = futures_util::stream::iter(0..4u64).then(|i| async move {
        if i > 0 {
            // The pauses are the point: 3 x 200 ms of upload > upstream_timeout.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok::<_, std::io::Error>(vec![b'x'; 4096])
    });
    let r = client()
        .post(proxy.url("/ri/upload"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(echo.last().body_len, 4 * 4096);
    proxy.stop().await;
}

/// The answer timer is kept with its upstream connection and moved on for
/// each request: a connection reused for longer than `upstream_timeout`
/// in total never times out a request that was answered in time.
#[tokio::test]
async fn reused_connection_timer_counts_per_request() {
    let (addr, connections, _) = counting_upstream(None).await;
    let proxy = start_proxy(&one_route(
        "/ri/",
        &format!("http://{addr}/"),
        "upstream_timeout = \"200ms\"",
    ))
    .await;
    let c = client();
    let started = std::time::Instant::now();
    let mut sent = 0;
    // Bounded in count and time; the point is to outlast the timeout 3x.
    while started.elapsed() < Duration::from_millis(600) && sent < 5000 {
        let r = c.get(proxy.url("/ri/x")).send().await.unwrap();
        assert_eq!(r.status(), 200, "request {sent}");
        assert_eq!(r.text().await.unwrap(), "ok");
        sent += 1;
    }
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "{sent} requests"
    );
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    proxy.stop().await;
}

/// A reused connection whose upstream stops answering: that request gets
/// 504, and the connection is not used again (the next request opens a
/// new one and succeeds).
#[tokio::test]
async fn timeout_on_a_reused_connection_is_504_and_drops_it() {
    let (silent_tx, mut silent_rx) = mpsc::unbounded_channel::<()>();
    let upstream = support::serve(Router::new().route("/ok", get(|| async { "ok" })).route(
        "/silent",
        get(move || {
            let _ = silent_tx.send(());
            std::future::pending::<&'static str>()
        }),
    ))
    .await;
    let proxy = start_proxy(&one_route(
        "/ri/",
        &format!("http://{upstream}/"),
        "upstream_timeout = \"300ms\"",
    ))
    .await;
    let c = client();
    let r = c.get(proxy.url("/ri/ok")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "ok");
    let r = c.get(proxy.url("/ri/silent")).send().await.unwrap();
    assert_error(r, 504, "upstream_timeout", Some("ri")).await;
    silent_rx
        .try_recv()
        .expect("the upstream saw the silent request");
    let r = c.get(proxy.url("/ri/ok")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "ok");
    proxy.stop().await;
}

/// A small body with a declared length is read in full before the upstream
/// is contacted: a client that stalls halfway holds no upstream connection,
/// and the upstream gets the whole body once it is there.
#[tokio::test]
async fn small_declared_body_is_read_before_the_upstream_is_contacted() {
    // Not accepting yet: a connection from the proxy would wait in the
    // listen queue, where a non-blocking accept finds it.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let upstream = listener.local_addr().unwrap();
    let not_contacted = |when: &str| match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the upstream was contacted {when}: {other:?}"),
    };
    let proxy = start_proxy(&one_route("/ri/", &format!("http://{upstream}/"), "")).await;
    let mut conn = TcpStream::connect(proxy.addr).await.unwrap();
    conn.write_all(
        b"POST /ri/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 10\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    // hyper sends `100 Continue` when the proxy first asks for the body. A
    // proxy that streams asks only after it has connected upstream and
    // sent the head there (a loopback connect has completed, and is queued
    // at the listener, once `connect` returns), so here the queue tells.
    let interim = read_head(&mut conn).await;
    assert!(interim.starts_with("HTTP/1.1 100 "), "{interim}");
    not_contacted("before the body arrived");
    conn.write_all(b"hello").await.unwrap();

    let listener = TcpListener::from_std(listener).unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let head = read_head(&mut stream).await.to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .and_then(|v| v.trim().parse().ok())
                .expect("the forwarded request has a content-length");
            let mut body = vec![0u8; len];
            tokio::time::timeout(IO_TIMEOUT, stream.read_exact(&mut body))
                .await
                .expect("the body arrives")
                .unwrap();
            let answer =
                format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n");
            stream.write_all(answer.as_bytes()).await.unwrap();
            stream.write_all(&body).await.unwrap();
            let _ = stream.shutdown().await;
        }
    });
    conn.write_all(b"world").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(IO_TIMEOUT, conn.read_to_end(&mut answer))
        .await
        .expect("the proxy answers and closes")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nhelloworld"), "{answer}");
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    proxy.stop().await;
}

/// Stopping closes idle keep-alive client connections (and connections
/// that have not sent anything yet) at once instead of waiting out
/// `drain_timeout` for them, and lets an in-flight request on another
/// connection finish first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_closes_idle_connections_and_finishes_in_flight_ones() {
    let (arrived_tx, mut arrived_rx) = mpsc::unbounded_channel::<()>();
    let (release_tx, release_rx) = oneshot::channel::<()>();
    let release_rx = Arc::new(tokio::sync::Mutex::new(Some(release_rx)));
    let upstream = support::serve(Router::new().route("/ok", get(|| async { "ok" })).route(
        "/slow",
        get(move || {
            let arrived = arrived_tx.clone();
            let release = release_rx.clone();
            async move {
                let _ = arrived.send(());
                if let Some(rx) = release.lock().await.take() {
                    let _ = rx.await;
                }
                "slow-done"
            }
        }),
    ))
    .await;
    let proxy = start_proxy(&one_route(
        "/ri/",
        &format!("http://{upstream}/"),
        "drain_timeout = \"60s\"",
    ))
    .await;
    let addr = proxy.addr;

    // A connection that never sends anything; accepted before the next one
    // (the accept loop takes them in order), so it is open when stopping.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    // An idle keep-alive connection: one answered request, then silence.
    let mut idle = TcpStream::connect(addr).await.unwrap();
    idle.write_all(b"GET /ri/ok HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut idle).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut ok = [0u8; 2];
    idle.read_exact(&mut ok).await.unwrap();

    let slow = tokio::spawn(client().get(format!("http://{addr}/ri/slow")).send());
    tokio::time::timeout(IO_TIMEOUT, arrived_rx.recv())
        .await
        .expect("the slow request reached the upstream");

    let stopping = tokio::spawn(proxy.stop());
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(IO_TIMEOUT, idle.read_to_end(&mut rest)).await;
    assert!(
        matches!(closed, Ok(Ok(0))),
        "the idle connection was not closed: {closed:?}"
    );
    let closed = tokio::time::timeout(IO_TIMEOUT, silent.read_to_end(&mut rest)).await;
    assert!(
        matches!(closed, Ok(Ok(0))),
        "the silent connection was not closed: {closed:?}"
    );
    assert!(
        !stopping.is_finished(),
        "stopped before the in-flight request ended"
    );
    release_tx.send(()).unwrap();
    let r = slow.await.unwrap().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "slow-done");
    tokio::time::timeout(IO_TIMEOUT, stopping)
        .await
        .expect("the drain ends once the last request is done")
        .unwrap();
}

/// An upstream redirect is handed to the client, never followed: the
/// redirect target receives nothing (and so never sees the credential).
#[tokio::test]
async fn redirects_are_returned_not_followed() {
    let elsewhere = Echo::start().await;
    let location = format!("{}/stolen", elsewhere.url());
    let loc = location.clone();
    let redirecting = support::serve(Router::new().fallback(move || {
        let loc = loc.clone();
        async move { (http::StatusCode::FOUND, [("location", loc)], "moved") }
    }))
    .await;
    let proxy = start_proxy(&one_route("/ri/", &format!("http://{redirecting}/"), "")).await;
    let r = client().get(proxy.url("/ri/x")).send().await.unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(r.headers()["location"], location.as_str());
    assert_eq!(r.text().await.unwrap(), "moved");
    assert_eq!(elsewhere.count(), 0, "the proxy followed the redirect");
    proxy.stop().await;
}

/// A 10 MiB request body reaches the upstream intact through a credential
/// route (larger than `max_replay_body`, so it streams).
#[tokio::test]
async fn large_request_body_streams_intact() {
    let echo = Echo::start().await;
    let proxy = start_proxy(&static_config(&echo.url())).await;
    let body = support::pattern(10 << 20, 7);
    let expected = sha256(&body);
    let r = client()
        .post(proxy.url("/ri/upload"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen: Value = r.json().await.unwrap();
    assert_eq!(seen["body_len"], 10 << 20);
    assert_eq!(seen["body_sha256"], expected.as_str());
    let last = echo.last();
    assert_eq!(last.method, "POST");
    assert_eq!(last.body_len, 10 << 20);
    assert_eq!(last.body_sha256, expected);
    assert_eq!(last.headers["authorization"], vec![TOKEN_SECRET]);
    proxy.stop().await;
}

/// Chunk `i` of the big streamed response: one pseudo-random MiB, rotated
/// by `i` bytes so that every chunk differs (a dropped, repeated or
/// reordered chunk changes the hash). Built from one pattern because
/// generating 64 MiB byte by byte is slow in a debug build.
fn big_chunk(i: u64) -> Bytes {
    static BASE: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let base = BASE.get_or_init(|| support::pattern(1 << 20, 1000));
    let at = (i as usize * 4099) % base.len();
    let mut chunk = Vec::with_capacity(base.len());
    chunk.extend_from_slice(&base[at..]);
    chunk.extend_from_slice(&base[..at]);
    Bytes::from(chunk)
}

const BIG_CHUNKS: u64 = 64;

/// A 64 MiB response generated as a stream reaches the client intact; the
/// client hashes it while it streams.
#[tokio::test]
async fn large_response_streams_intact() {
    let upstream = support::serve(Router::new().route(
        "/big",
        get(|| async {
            let chunks = futures_util::stream::iter(0..BIG_CHUNKS)
                .map(|i| Ok::<_, std::io::Error>(big_chunk(i)));
            Body::from_stream(chunks).into_response()
        }),
    ))
    .await;
    let proxy = start_proxy(&one_route("/ri/", &format!("http://{upstream}/"), "")).await;

    // Hashing is slow in a debug build: compute the expected digest on
    // another thread while the response streams.
    let expected = tokio::task::spawn_blocking(|| {
        let mut expected = Sha256::new();
        for i in 0..BIG_CHUNKS {
            expected.update(big_chunk(i));
        }
        support::hex(&expected.finalize())
    });

    let r = client().get(proxy.url("/ri/big")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut stream = r.bytes_stream();
    let mut hasher = Sha256::new();
    let mut len = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        len += chunk.len();
        hasher.update(&chunk);
    }
    assert_eq!(len, (BIG_CHUNKS as usize) << 20);
    assert_eq!(support::hex(&hasher.finalize()), expected.await.unwrap());
    proxy.stop().await;
}

/// Hop-by-hop request headers (`Connection` and what it names,
/// `Keep-Alive`, `TE`, `Proxy-Authorization`, `Proxy-Connection`) do not
/// reach the upstream; end-to-end headers do. Sent over raw TCP so that
/// every header is on the wire exactly as written.
#[tokio::test]
async fn hop_by_hop_request_headers_are_stripped() {
    let echo = Echo::start().await;
    let proxy = start_proxy(&static_config(&echo.url())).await;
    let r = raw_request(
        proxy.addr,
        "GET /open/hop HTTP/1.1\r\n\
         Host: 127.0.0.1\r\n\
         Connection: close, X-Foo\r\n\
         X-Foo: hop-only\r\n\
         Keep-Alive: timeout=5\r\n\
         TE: trailers\r\n\
         Proxy-Authorization: Bearer not-for-upstream\r\n\
         Proxy-Connection: keep-alive\r\n\
         X-End-To-End: kept\r\n\
         \r\n",
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let last = echo.last();
    for name in [
        "connection",
        "x-foo",
        "keep-alive",
        "te",
        "proxy-authorization",
        "proxy-connection",
    ] {
        assert_eq!(last.header(name), None, "{name} reached the upstream");
    }
    assert_eq!(last.headers["x-end-to-end"], vec!["kept"]);
    proxy.stop().await;
}

/// Hop-by-hop headers in the upstream's answer (`Connection` and what it
/// names, `Keep-Alive`, `Proxy-Authenticate`) do not reach the client.
#[tokio::test]
async fn hop_by_hop_response_headers_are_stripped() {
    let (upstream, _heads) = raw_upstream(
        "HTTP/1.1 200 OK\r\n\
         Content-Length: 2\r\n\
         Connection: close, X-Bar\r\n\
         X-Bar: hop-only\r\n\
         Keep-Alive: timeout=5\r\n\
         Proxy-Authenticate: Basic realm=\"upstream\"\r\n\
         X-End-To-End: kept\r\n\
         \r\n\
         ok",
    )
    .await;
    let proxy = start_proxy(&one_route("/ri/", &format!("http://{upstream}/"), "")).await;
    let r = client().get(proxy.url("/ri/x")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let h = r.headers();
    for name in ["x-bar", "keep-alive", "proxy-authenticate"] {
        assert!(h.get(name).is_none(), "{name} reached the client");
    }
    if let Some(c) = h.get("connection") {
        assert!(
            !c.to_str().unwrap().to_ascii_lowercase().contains("x-bar"),
            "upstream Connection header forwarded: {c:?}"
        );
    }
    assert_eq!(h["x-end-to-end"], "kept");
    assert_eq!(r.text().await.unwrap(), "ok");
    proxy.stop().await;
}

/// The upstream sees its own authority as `Host`, not the client's.
#[tokio::test]
async fn host_header_is_the_upstreams() {
    let echo = Echo::start().await;
    let proxy = start_proxy(&static_config(&echo.url())).await;
    let r = client()
        .get(proxy.url("/ri/x"))
        .header("host", "localhost:9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(echo.last().headers["host"], vec![echo.addr.to_string()]);
    proxy.stop().await;
}

/// With `inbound_token`: missing or wrong `Proxy-Authorization` → 401
/// `unauthorized` (local endpoints too, except health); the right one → 200
/// and the header never reaches the upstream.
#[tokio::test]
async fn inbound_token_is_required_and_not_forwarded() {
    const INBOUND: &str = "inbound-7c1e9b2a4f6d8e0a";
    let echo = Echo::start().await;
    let proxy = start_proxy(&one_route(
        "/ri/",
        &format!("{}/", echo.url()),
        &format!("inbound_token = \"{INBOUND}\""),
    ))
    .await;
    let c = client();

    let r = c.get(proxy.url("/ri/x")).send().await.unwrap();
    assert_error(r, 401, "unauthorized", None).await;
    let r = c
        .get(proxy.url("/ri/x"))
        .header("proxy-authorization", "Bearer inbound-7c1e9b2a4f6d8e0b")
        .send()
        .await
        .unwrap();
    assert_error(r, 401, "unauthorized", None).await;
    let r = c
        .get(proxy.url("/ri/x"))
        .header("proxy-authorization", INBOUND)
        .send()
        .await
        .unwrap();
    assert_error(r, 401, "unauthorized", None).await;
    let r = c.get(proxy.url("/_authproxy/status")).send().await.unwrap();
    assert_error(r, 401, "unauthorized", None).await;
    assert_eq!(echo.count(), 0);

    let r = c
        .get(proxy.url("/ri/x"))
        .header("proxy-authorization", format!("Basic {INBOUND}"))
        .send()
        .await
        .unwrap();
    assert_error(r, 401, "unauthorized", None).await;
    assert_eq!(echo.count(), 0);

    // The auth scheme is case-insensitive (RFC 9110 §11.1).
    for scheme in ["Bearer", "bearer"] {
        let r = c
            .get(proxy.url("/ri/x"))
            .header("proxy-authorization", format!("{scheme} {INBOUND}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{scheme}");
        let last = echo.last();
        assert_eq!(last.header("proxy-authorization"), None);
        assert_eq!(last.headers["authorization"], vec![TOKEN_SECRET]);
    }

    let r = c.get(proxy.url("/_authproxy/health")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"status": "ok"}));
    proxy.stop().await;
}

/// `GET /_authproxy/health` → 200 `{"status":"ok"}`.
#[tokio::test]
async fn health_endpoint() {
    let echo = Echo::start().await;
    let proxy = start_proxy(&one_route("/", &format!("{}/", echo.url()), "")).await;
    let r = client()
        .get(proxy.url("/_authproxy/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"status": "ok"}));
    assert_eq!(echo.count(), 0);
    proxy.stop().await;
}

/// Unknown paths under `/_authproxy/` are 404 and never proxied, even with
/// a catch-all route.
#[tokio::test]
async fn unknown_local_endpoint_is_404_not_proxied() {
    let echo = Echo::start().await;
    let proxy = start_proxy(&one_route("/", &format!("{}/", echo.url()), "")).await;
    let c = client();
    for path in [
        "/_authproxy/whatever",
        "/_authproxy/health/x",
        "/_authproxy",
    ] {
        let r = c.get(proxy.url(path)).send().await.unwrap();
        assert_error(r, 404, "no_route", None).await;
    }
    let r = c
        .post(proxy.url("/_authproxy/whatever"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(echo.count(), 0, "a local path was proxied");
    // The catch-all route itself works.
    let r = c.get(proxy.url("/_authproxyish")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(echo.last().path, "/_authproxyish");
    proxy.stop().await;
}

/// A foreign `Origin` is refused with 403 `forbidden_origin` (a browser
/// must not borrow the credential); the proxy's own origin is fine.
#[tokio::test]
async fn foreign_origin_is_forbidden() {
    let echo = Echo::start().await;
    let proxy = start_proxy(&static_config(&echo.url())).await;
    let c = client();
    let r = c
        .get(proxy.url("/ri/x"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_error(r, 403, "forbidden_origin", None).await;
    assert_eq!(echo.count(), 0);
    let r = c
        .get(proxy.url("/ri/x"))
        .header("origin", format!("http://{}", proxy.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    proxy.stop().await;
}

/// Without an inbound token, a `Host` that is not ours (DNS rebinding) is
/// refused with 403 `forbidden_host`.
#[tokio::test]
async fn foreign_host_is_forbidden() {
    let echo = Echo::start().await;
    let proxy = start_proxy(&static_config(&echo.url())).await;
    let c = client();
    for host in ["evil.example", "evil.example:80"] {
        let r = c
            .get(proxy.url("/ri/x"))
            .header("host", host)
            .send()
            .await
            .unwrap();
        assert_error(r, 403, "forbidden_host", None).await;
    }
    assert_eq!(echo.count(), 0);
    let r = c
        .get(proxy.url("/ri/x"))
        .header("host", format!("localhost:{}", proxy.addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    proxy.stop().await;
}

/// An absolute-form request target (forward-proxy style) is refused with
/// 400 even with a catch-all route: this is no open relay.
#[tokio::test]
async fn absolute_form_target_is_refused() {
    let echo = Echo::start().await;
    let proxy = start_proxy(&one_route("/", &format!("{}/", echo.url()), "")).await;
    let r = raw_request(
        proxy.addr,
        "GET http://evil.example/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.head.contains("\r\ncontent-type: application/json"),
        "{}",
        r.head
    );
    let body: Value = serde_json::from_str(&r.body).unwrap();
    assert_error_body(&body, "bad_request", None);
    assert_eq!(echo.count(), 0);
    proxy.stop().await;
}

/// A WebSocket-style `Upgrade` passes through a credential route: the
/// upstream sees the injected header (and not the client's), answers 101,
/// and bytes then flow both ways through the proxy, also after the
/// upgraded connection was quiet for longer than `header_read_timeout`
/// (which is about HTTP request heads only).
#[tokio::test]
async fn upgrade_passes_through_credential_route() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let (head_tx, head_rx) = oneshot::channel::<String>();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let head = read_head(&mut stream).await;
        let _ = head_tx.send(head);
        stream
            .write_all(
                b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n",
            )
            .await
            .unwrap();
        let (mut r, mut w) = stream.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
    });
    let proxy = start_proxy(&one_route(
        "/ws/",
        &format!("http://{upstream}/"),
        "header_read_timeout = \"200ms\"",
    ))
    .await;

    let mut conn = TcpStream::connect(proxy.addr).await.unwrap();
    conn.write_all(
        b"GET /ws/chat HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: echo\r\nAuthorization: Bearer client-own\r\n\r\n",
    )
    .await
    .unwrap();
    let answer = read_head(&mut conn).await;
    assert!(answer.starts_with("HTTP/1.1 101"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("upgrade: echo"),
        "{answer}"
    );

    let head = tokio::time::timeout(IO_TIMEOUT, head_rx)
        .await
        .unwrap()
        .unwrap();
    let lower = head.to_ascii_lowercase();
    assert!(head.starts_with("GET /chat HTTP/1.1\r\n"), "{head}");
    assert!(
        lower.contains(&format!(
            "\r\nauthorization: {}\r\n",
            TOKEN_SECRET.to_ascii_lowercase()
        )),
        "{head}"
    );
    assert!(!lower.contains("client-own"), "{head}");
    assert!(lower.contains("\r\nupgrade: echo\r\n"), "{head}");

    for (i, message) in [&b"ping-123"[..], &b"second message"[..]]
        .into_iter()
        .enumerate()
    {
        if i == 1 {
            // Quiet for longer than the head deadline: nothing to wait for.
            tokio::time::sleep(Duration::from_millis(600)).await;
        }
        conn.write_all(message).await.unwrap();
        let mut back = vec![0u8; message.len()];
        tokio::time::timeout(IO_TIMEOUT, conn.read_exact(&mut back))
            .await
            .expect("no echo through the upgraded connection")
            .unwrap();
        assert_eq!(back, message);
    }
    drop(conn);
    proxy.stop().await;
}

/// A POST body through a pass-through route arrives intact, with the
/// method and content type kept (guards against the proxy only handling GET).
#[tokio::test]
async fn post_through_pass_through_route() {
    let upstream = support::serve(Router::new().route(
        "/submit",
        post(|headers: http::HeaderMap, body: Bytes| async move {
            format!(
                "{}:{}",
                headers["content-type"].to_str().unwrap(),
                String::from_utf8_lossy(&body)
            )
        }),
    ))
    .await;
    let proxy = start_proxy(&format!(
        "[[routes]]\nprefix = \"/open/\"\nupstream = \"http://{upstream}/\"\n"
    ))
    .await;
    let r = client()
        .post(proxy.url("/open/submit"))
        .header("content-type", "application/json")
        .body(r#"{"a":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), r#"application/json:{"a":1}"#);
    proxy.stop().await;
}

/// Opens an HTTP/2 connection with prior knowledge (h2c, no upgrade) to
/// the proxy.
async fn h2_connect(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<Body> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

async fn h2_body(body: hyper::body::Incoming) -> Bytes {
    use http_body_util::BodyExt;
    tokio::time::timeout(IO_TIMEOUT, body.collect())
        .await
        .expect("the body arrives in time")
        .unwrap()
        .to_bytes()
}

/// Sends one HTTP/2 (prior knowledge) request for `uri` to `addr`, whatever
/// host the URI names: its `:authority` is the URI's.
async fn h2_get(addr: SocketAddr, uri: &str) -> (http::Response<()>, Bytes) {
    let mut send = h2_connect(addr).await;
    let req = http::Request::get(uri).body(Body::empty()).unwrap();
    let response = send.send_request(req).await.unwrap();
    let (parts, body) = response.into_parts();
    (http::Response::from_parts(parts, ()), h2_body(body).await)
}

/// An HTTP/2 client (prior knowledge; the server speaks h2c) is served like
/// an HTTP/1.1 one: its `:authority` is not taken for an absolute-form
/// target, and a foreign `:authority` is refused like a foreign `Host`.
#[tokio::test]
async fn http2_clients_are_served() {
    let echo = Echo::start().await;
    let proxy = start_proxy(&static_config(&echo.url())).await;

    let (r, _) = h2_get(proxy.addr, &proxy.url("/ri/x?h=2")).await;
    assert_eq!(r.version(), http::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let last = echo.last();
    assert_eq!(last.path, "/v1/x");
    assert_eq!(last.query.as_deref(), Some("h=2"));
    assert_eq!(last.headers["authorization"], vec![TOKEN_SECRET]);
    assert_eq!(last.headers["host"], vec![echo.addr.to_string()]);

    let (r, body) = h2_get(proxy.addr, "http://evil.example/ri/x").await;
    assert_eq!(r.status(), 403);
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_error_body(&body, "forbidden_host", None);
    assert_eq!(echo.count(), 1);
    proxy.stop().await;
}

/// A raw HTTP/1.1 upstream that counts connections and answers GETs with
/// `ok`. With `idle_close` it closes a connection that stays idle that long
/// after an answer, without having announced it (`Connection: close`), as
/// an upstream's keep-alive timeout does, and reports each such close.
async fn counting_upstream(
    idle_close: Option<Duration>,
) -> (SocketAddr, Arc<AtomicUsize>, mpsc::UnboundedReceiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    let (closed_tx, closed_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let closed_tx = closed_tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let mut answered = false;
                loop {
                    // One request head at a time (GETs only: no bodies).
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        let wait = match idle_close {
                            Some(idle) if answered => idle,
                            _ => IO_TIMEOUT,
                        };
                        match tokio::time::timeout(wait, stream.read(&mut chunk)).await {
                            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                            Err(_) if idle_close.is_some() && answered => {
                                drop(stream);
                                let _ = closed_tx.send(());
                                return;
                            }
                            _ => return,
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    buf.drain(..end);
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if stream.write_all(answer).await.is_err() {
                        return;
                    }
                    answered = true;
                }
            });
        }
    });
    (addr, connections, closed_rx)
}

/// Sequential requests share one upstream connection.
#[tokio::test]
async fn upstream_connections_are_reused() {
    let (addr, connections, _) = counting_upstream(None).await;
    let proxy = start_proxy(&one_route("/ri/", &format!("http://{addr}/"), "")).await;
    let c = client();
    for i in 0..20 {
        let r = c.get(proxy.url("/ri/x")).send().await.unwrap();
        assert_eq!(r.status(), 200, "request {i}");
        assert_eq!(r.text().await.unwrap(), "ok");
    }
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    proxy.stop().await;
}

/// An upstream that closes idle keep-alive connections: the request after
/// each close goes out on a new connection and succeeds, never on the
/// closed one.
#[tokio::test]
async fn upstream_closing_idle_connections_is_invisible_to_clients() {
    let (addr, connections, mut closed) = counting_upstream(Some(Duration::from_millis(50))).await;
    let proxy = start_proxy(&one_route("/ri/", &format!("http://{addr}/"), "")).await;
    let c = client();
    for i in 0..10 {
        let r = c.get(proxy.url("/ri/x")).send().await.unwrap();
        assert_eq!(r.status(), 200, "request {i}");
        assert_eq!(r.text().await.unwrap(), "ok");
        tokio::time::timeout(IO_TIMEOUT, closed.recv())
            .await
            .expect("the upstream closes the idle connection")
            .unwrap();
    }
    assert_eq!(connections.load(Ordering::SeqCst), 10);
    proxy.stop().await;
}

/// Over one h2c connection a large upload arrives whole with the header
/// pair injected, and concurrent streams are each forwarded to the
/// HTTP/1.1 upstream and answered on their own stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_uploads_and_concurrent_streams_share_one_connection() {
    let echo = Echo::start().await;
    let proxy = start_proxy(&static_config(&echo.url())).await;
    let mut h2 = h2_connect(proxy.addr).await;
    let authority = proxy.addr.to_string();

    let payload = support::pattern(200_000, 7);
    let post = http::Request::post(format!("http://{authority}/rips/upload"))
        .body(Body::from(payload.clone()))
        .unwrap();
    let r = h2.send_request(post).await.unwrap();
    assert_eq!(r.status(), 200);
    let seen: Value = serde_json::from_slice(&h2_body(r.into_body()).await).unwrap();
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["path"], "/api/upload");
    assert_eq!(seen["body_len"], payload.len());
    assert_eq!(seen["body_sha256"], sha256(&payload));
    assert_eq!(seen["headers"]["x-api-email"], json!([EMAIL_SECRET]));

    let mut pending = Vec::new();
    for i in 0..8 {
        let req = http::Request::get(format!("http://{authority}/ri/n{i}"))
            .body(Body::empty())
            .unwrap();
        pending.push(h2.send_request(req));
    }
    let answers = futures_util::future::join_all(pending).await;
    for (i, answer) in answers.into_iter().enumerate() {
        let r = answer.unwrap();
        assert_eq!(r.status(), 200, "stream {i}");
        let seen: Value = serde_json::from_slice(&h2_body(r.into_body()).await).unwrap();
        assert_eq!(seen["path"], format!("/v1/n{i}"));
        assert_eq!(seen["headers"]["authorization"], json!([TOKEN_SECRET]));
    }
    assert_eq!(echo.count(), 9);
    proxy.stop().await;
}
