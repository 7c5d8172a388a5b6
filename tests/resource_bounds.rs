//! Resource bounds against local denial of service, tried on the real
//! binary with raw sockets: request bodies that stop short of their end
//! (over HTTP/1.1 and HTTP/2), connection floods under a low
//! file-descriptor limit, the budget of replay buffers, and the upstream
//! connections each route may keep.

mod support;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request as AxumRequest;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use support::{client, eventually, ProxyProcess};

/// The issue's attack: a 1 MiB body of which all but the last byte is sent.
const DECLARED: usize = 1_048_576;
const SENT: usize = DECLARED - 1;

/// The memory bound the proxy must keep under both body attacks.
const RSS_LIMIT_MIB: u64 = 64;

// ---------------------------------------------------------------- fixtures

/// An RFC 6749 client_credentials token endpoint: checks the grant and the
/// client's credentials (in the body), answers `tok-1`, `tok-2`, ...
async fn token_endpoint() -> SocketAddr {
    let issued = Arc::new(AtomicUsize::new(0));
    let router = Router::new().route(
        "/token",
        post(move |req: AxumRequest| {
            let issued = issued.clone();
            async move {
                let body = req.into_body().collect().await.unwrap().to_bytes();
                let form: Vec<(String, String)> = serde_urlencoded::from_bytes(&body).unwrap();
                let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
                if get("grant_type") != Some("client_credentials")
                    || get("client_id") != Some("bounds-client")
                    || get("client_secret") != Some("bounds-secret-SECRET")
                {
                    return (
                        StatusCode::UNAUTHORIZED,
                        axum::Json(serde_json::json!({"error": "invalid_client"})),
                    )
                        .into_response();
                }
                let n = issued.fetch_add(1, Ordering::SeqCst) + 1;
                axum::Json(serde_json::json!({
                    "access_token": format!("tok-{n}"),
                    "token_type": "Bearer",
                    "expires_in": 3600,
                }))
                .into_response()
            }
        }),
    );
    support::serve(router).await
}

type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>>
        + Send
        + Sync,
>;

/// An upstream that counts the connections it accepted.
struct Upstream {
    addr: SocketAddr,
    accepts: Arc<AtomicUsize>,
    /// Connections that ended.
    closed: Arc<AtomicUsize>,
}

impl Upstream {
    async fn start(handler: Handler) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepts = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let (counted, ended) = (accepts.clone(), closed.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                counted.fetch_add(1, Ordering::SeqCst);
                let handler = handler.clone();
                let ended = ended.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let answer = handler(req);
                        async move { Ok::<_, Infallible>(answer.await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                    ended.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Upstream {
            addr,
            accepts,
            closed,
        }
    }

    /// Reads the whole body and answers `200 ok`.
    async fn ok() -> Upstream {
        Self::start(Arc::new(|req: Request<Incoming>| {
            Box::pin(async move {
                let _ = req.into_body().collect().await;
                Response::new(Full::new(Bytes::from_static(b"ok")))
            })
        }))
        .await
    }

    fn accepted(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }
}

/// Writes the proxy's config into `dir`: an oauth2 route `/oauth/` and a
/// pass-through route `/plain/` to `upstream`, with `server` and `route`
/// lines added to those tables.
fn write_config(
    dir: &Path,
    token: SocketAddr,
    upstream: SocketAddr,
    server: &str,
    route: &str,
) -> PathBuf {
    let path = dir.join("authproxy.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
{server}
[store]
kind = "memory"
[providers.api]
type = "oauth2"
grant = "client_credentials"
token_url = "http://{token}/token"
client_id = "bounds-client"
client_secret = "bounds-secret-SECRET"
[[routes]]
prefix = "/oauth/"
upstream = "http://{upstream}/"
provider = "api"
{route}
[[routes]]
prefix = "/plain/"
upstream = "http://{upstream}/"
{route}
"#
        ),
    )
    .unwrap();
    path
}

/// The proxy's resident memory, in MiB.
fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib / 1024
}

/// The sum of the metrics named `name` (all label sets).
async fn metric(proxy: &ProxyProcess, name: &str) -> f64 {
    let text = client()
        .get(proxy.url("/_authproxy/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Bytes of request bodies the proxy holds for replays, memory and file.
async fn buffered(proxy: &ProxyProcess) -> f64 {
    metric(proxy, "authproxy_buffered_bytes_memory").await
        + metric(proxy, "authproxy_buffered_bytes_file").await
}

/// Polls the proxy's RSS until `done` holds (checked every 50 ms, up to
/// 120 s), then a second more; fails as soon as RSS passes the limit.
/// Returns the peak.
async fn hold_under_limit<F, Fut>(proxy: &ProxyProcess, mut done: F) -> u64
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let pid = proxy.child.id();
    let mut peak = 0;
    let mut after = None;
    for _ in 0..2400 {
        let rss = rss_mib(pid);
        peak = peak.max(rss);
        assert!(
            rss < RSS_LIMIT_MIB,
            "proxy RSS reached {rss} MiB under the attack (limit {RSS_LIMIT_MIB} MiB)"
        );
        match after {
            None if done().await => after = Some(20),
            Some(0) => return peak,
            Some(n) => after = Some(n - 1),
            None => {}
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the attack never got all its bytes in (peak RSS {peak} MiB)");
}

/// Polls `done` every 20 ms until it holds (true) or 60 s pass (false).
async fn poll_until<F, Fut>(mut done: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..3000 {
        if done().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Opens a connection and sends `head` and `body`; returns the connection.
async fn send_partial(addr: SocketAddr, head: String, body: Arc<Vec<u8>>) -> TcpStream {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&body).await.unwrap();
    s
}

/// Reads until the proxy closes the connection (bounded), returns the text.
async fn read_until_closed(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut out))
        .await
        .expect("the proxy did not close the connection")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether the proxy still holds `s` open, without an answer.
fn still_open(s: &TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(s.try_read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// A request body that sends one chunk and then never ends.
struct Stalled(Option<Bytes>);

impl http_body::Body for Stalled {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.0.take() {
            Some(b) => Poll::Ready(Some(Ok(Frame::data(b)))),
            None => Poll::Pending,
        }
    }
}

type H2Sender =
    hyper::client::conn::http2::SendRequest<http_body_util::Either<Stalled, Full<Bytes>>>;

/// An HTTP/2 connection (prior knowledge) to the proxy.
async fn h2_connect(addr: SocketAddr) -> H2Sender {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

/// Sends a `POST` with a `content-length` of `declared` whose body stops
/// after `sent` bytes; resolves with the answer, if one comes.
fn h2_stalled_post(
    sender: &H2Sender,
    addr: SocketAddr,
    path: &str,
    declared: usize,
    sent: Bytes,
) -> tokio::task::JoinHandle<Result<Response<Incoming>, hyper::Error>> {
    let req = Request::post(format!("http://{addr}{path}"))
        .header("content-length", declared)
        .body(http_body_util::Either::Left(Stalled(Some(sent))))
        .unwrap();
    let mut sender = sender.clone();
    tokio::spawn(async move { sender.send_request(req).await })
}

async fn h2_get(sender: &H2Sender, addr: SocketAddr, path: &str) -> (StatusCode, String) {
    let req = Request::get(format!("http://{addr}{path}"))
        .body(http_body_util::Either::Right(Full::new(Bytes::new())))
        .unwrap();
    let response = sender.clone().send_request(req).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A legitimate request through the oauth2 route: answered by the upstream.
async fn legitimate(proxy: &ProxyProcess) {
    let r = client()
        .post(proxy.url("/oauth/legit"))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "ok");
}

async fn health(proxy: &ProxyProcess) {
    let r = client()
        .get(proxy.url("/_authproxy/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

// ------------------------------------------------------ body slow loris

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_slowloris_over_http1_stays_under_64_mib_with_default_settings() {
    let token = token_endpoint().await;
    let upstream = Upstream::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), token, upstream.addr, "", "");
    let proxy = ProxyProcess::start(&config, &[("RUST_LOG", "info")]);
    legitimate(&proxy).await;

    // 200 connections, each a 1 MiB body short of its last byte.
    let body = Arc::new(vec![b'x'; SENT]);
    let attackers: Vec<_> = (0..200)
        .map(|i| {
            let head = format!(
                "POST /oauth/x{i} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {DECLARED}\r\n\r\n"
            );
            tokio::spawn(send_partial(proxy.addr, head, body.clone()))
        })
        .collect();
    let all = (200 * SENT) as f64;
    let peak = hold_under_limit(&proxy, || async { buffered(&proxy).await >= all }).await;
    eprintln!("peak RSS with 200 stalled 1 MiB bodies held: {peak} MiB");

    // Meanwhile the proxy serves.
    health(&proxy).await;
    legitimate(&proxy).await;
    let mut attackers: Vec<TcpStream> =
        futures_util::future::try_join_all(attackers).await.unwrap();
    assert!(
        attackers.iter().all(still_open),
        "the attack was cut before it held"
    );
    drop(attackers.drain(..));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_slowloris_over_http2_stays_under_64_mib_with_default_settings() {
    let token = token_endpoint().await;
    let upstream = Upstream::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), token, upstream.addr, "", "");
    let proxy = ProxyProcess::start(&config, &[("RUST_LOG", "info")]);
    legitimate(&proxy).await;

    // One connection, 150 streams, each a 1 MiB body short of its last byte.
    let sender = h2_connect(proxy.addr).await;
    let chunk = Bytes::from(vec![b'x'; SENT]);
    let streams: Vec<_> = (0..150)
        .map(|i| {
            h2_stalled_post(
                &sender,
                proxy.addr,
                &format!("/oauth/x{i}"),
                DECLARED,
                chunk.clone(),
            )
        })
        .collect();
    let all = (150 * SENT) as f64;
    let peak = hold_under_limit(&proxy, || async { buffered(&proxy).await >= all }).await;
    eprintln!("peak RSS with 150 stalled 1 MiB HTTP/2 streams held: {peak} MiB");

    health(&proxy).await;
    legitimate(&proxy).await;
    // The same connection still answers.
    assert_eq!(
        h2_get(&sender, proxy.addr, "/_authproxy/health").await.0,
        200
    );
    assert!(
        streams.iter().all(|s| !s.is_finished()),
        "the attack was cut before it held"
    );
    for s in streams {
        s.abort();
    }
}

#[tokio::test]
async fn stalled_bodies_are_cut_with_408_and_the_upstream_request_aborted() {
    let token = token_endpoint().await;
    let aborted = Arc::new(AtomicUsize::new(0));
    let seen = aborted.clone();
    let upstream = Upstream::start(Arc::new(move |req: Request<Incoming>| {
        let aborted = seen.clone();
        Box::pin(async move {
            if req.into_body().collect().await.is_err() {
                aborted.fetch_add(1, Ordering::SeqCst);
            }
            Response::new(Full::new(Bytes::from_static(b"ok")))
        })
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        token,
        upstream.addr,
        "body_read_timeout = \"1s\"",
        "",
    );
    let proxy = ProxyProcess::start(&config, &[("RUST_LOG", "info")]);
    legitimate(&proxy).await;
    assert_eq!(upstream.accepted(), 1);

    let check_408 = |answer: &str| {
        assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
        assert!(answer.contains("\"error\":\"request_timeout\""), "{answer}");
        assert!(answer.contains("body_read_timeout"), "{answer}");
    };
    let head = |path: &str, length: usize| {
        format!("POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {length}\r\n\r\n")
    };

    // A body kept for a replay (oauth2 route), a local endpoint's body,
    // and a body that was streaming to the upstream (plain route, over
    // the 64 KiB read in advance): all three stop.
    let mut buffered = send_partial(
        proxy.addr,
        head("/oauth/slow", 100),
        Arc::new(vec![b'a'; 50]),
    )
    .await;
    let mut local = send_partial(
        proxy.addr,
        head("/_authproxy/tokens/api", 100),
        Arc::new(b"{\"access_token\":".to_vec()),
    )
    .await;
    let mut streamed = send_partial(
        proxy.addr,
        head("/plain/upload", 1_000_000),
        Arc::new(vec![b'b'; 100_000]),
    )
    .await;
    // Each is answered 408 and closed.
    check_408(&read_until_closed(&mut buffered).await);
    check_408(&read_until_closed(&mut local).await);
    check_408(&read_until_closed(&mut streamed).await);
    // The upstream saw its request cut and its connection closed (not
    // kept for another request); the legitimate one's stays open.
    assert!(
        eventually(Duration::from_secs(30), || aborted.load(Ordering::SeqCst)
            == 1)
        .await
    );
    assert!(
        eventually(Duration::from_secs(30), || upstream
            .closed
            .load(Ordering::SeqCst)
            == 1)
        .await
    );
    legitimate(&proxy).await;
    assert_eq!(upstream.closed.load(Ordering::SeqCst), 1);

    // HTTP/2: the stalled stream gets 408; the connection serves on.
    let sender = h2_connect(proxy.addr).await;
    let stalled = h2_stalled_post(
        &sender,
        proxy.addr,
        "/oauth/slow",
        100,
        Bytes::from_static(b"abc"),
    );
    let answer = tokio::time::timeout(Duration::from_secs(60), stalled)
        .await
        .expect("no answer to the stalled stream")
        .unwrap()
        .unwrap();
    assert_eq!(answer.status(), 408);
    assert_eq!(answer.headers()["x-authproxy-error"], "request_timeout");
    assert_eq!(
        h2_get(&sender, proxy.addr, "/_authproxy/health").await.0,
        200
    );

    let log = proxy.log();
    assert!(log.contains("408"), "{log}");
}

// ---------------------------------------------------- connection floods

/// Opens `n` connections that each send a part of a request head and stop.
async fn flood(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let mut s = TcpStream::connect(addr).await.unwrap();
        // Accepted or not, the kernel takes these few bytes.
        s.write_all(b"GET /plain/slow HTTP/1.1\r\nHo")
            .await
            .unwrap();
        out.push(s);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_flood_under_a_low_soft_fd_limit_keeps_serving() {
    let token = token_endpoint().await;
    let upstream = Upstream::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), token, upstream.addr, "", "");
    let config = config.to_str().unwrap();
    // A soft limit of 256 open files, the hard one left as it is (higher).
    let proxy = ProxyProcess::spawn_after(
        "ulimit -Sn 256",
        &["run", "--config", config],
        &[("RUST_LOG", "info")],
    );

    // 300 connections, each a head that never ends.
    let attackers = flood(proxy.addr, 300).await;
    health(&proxy).await;
    legitimate(&proxy).await;
    // ...served while every one of them was still held open.
    assert!(
        attackers.iter().all(still_open),
        "the flood was cut before the requests were served"
    );

    let log = proxy.log();
    assert!(!log.contains("accept failed"), "{log}");
    assert!(
        eventually(Duration::from_secs(30), || proxy
            .log()
            .contains("fd_soft_limit_at_start=256"))
        .await,
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_flood_under_a_low_hard_fd_limit_waits_without_spinning() {
    let token = token_endpoint().await;
    let upstream = Upstream::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        token,
        upstream.addr,
        "header_read_timeout = \"1s\"",
        "",
    );
    let config = config.to_str().unwrap();
    // 256 open files, soft and hard: room for (256 - 64) / 2 = 96 connections.
    let proxy = ProxyProcess::spawn_after(
        "ulimit -n 256",
        &["run", "--config", config],
        &[("RUST_LOG", "info")],
    );
    assert!(
        eventually(Duration::from_secs(30), || proxy
            .log()
            .contains("max_connections=96"))
        .await,
        "{}",
        proxy.log()
    );

    // 300 connections that never finish their heads: 96 are served (and
    // cut after header_read_timeout), the others wait in the backlog, and
    // so do the requests below, until there is room.
    let attackers = flood(proxy.addr, 300).await;
    health(&proxy).await;
    legitimate(&proxy).await;
    drop(attackers);

    let log = proxy.log();
    assert!(!log.contains("accept failed"), "{log}");
}

#[tokio::test]
async fn http2_streams_past_max_connections_and_headroom_get_503() {
    let token = token_endpoint().await;
    let upstream = Upstream::ok().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), token, upstream.addr, "max_connections = 1", "");
    let proxy = ProxyProcess::start(&config, &[("RUST_LOG", "info")]);

    // One connection (the one allowed): its first stream and 64 more are
    // in flight (bodies that stop); the 66th is refused.
    let sender = h2_connect(proxy.addr).await;
    let held: Vec<_> = (0..65)
        .map(|i| {
            h2_stalled_post(
                &sender,
                proxy.addr,
                &format!("/plain/x{i}"),
                10,
                Bytes::from_static(b"abc"),
            )
        })
        .collect();
    let mut refused = None;
    for _ in 0..3000 {
        let (status, body) = h2_get(&sender, proxy.addr, "/plain/one-more").await;
        if status == 503 {
            refused = Some(body);
            break;
        }
        // Not all 65 streams had started yet.
        assert_eq!(status, 200, "{body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = refused.expect("no stream was refused");
    assert!(refused.contains("too_many_connections"), "{refused}");
    // Local endpoints hold nothing and are still answered.
    assert_eq!(
        h2_get(&sender, proxy.addr, "/_authproxy/health").await.0,
        200
    );
    for h in held {
        h.abort();
    }
}

// ------------------------------------------------ replay buffer budget

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_past_max_buffered_bytes_stream_without_replay() {
    let token = token_endpoint().await;
    // The upstream takes only the newest token: `tok-1` gets a plain 401.
    let upstream = Upstream::start(Arc::new(|req: Request<Incoming>| {
        Box::pin(async move {
            let auth = req.headers().get("authorization").cloned();
            let _ = req.into_body().collect().await;
            if auth.as_ref().is_some_and(|a| a == "Bearer tok-1") {
                let mut r = Response::new(Full::new(Bytes::from_static(b"expired")));
                *r.status_mut() = StatusCode::UNAUTHORIZED;
                return r;
            }
            Response::new(Full::new(Bytes::from_static(b"ok")))
        })
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    // 256 KiB: a 100 KiB body takes 128 KiB of it (two 64 KiB blocks of
    // the spill file), so two fit and a third does not.
    let config = write_config(
        dir.path(),
        token,
        upstream.addr,
        "max_buffered_bytes = \"256KiB\"",
        "",
    );
    let proxy = ProxyProcess::start(&config, &[("RUST_LOG", "info")]);

    let length = 100 * 1024;
    let head = |i: usize| {
        format!(
            "POST /oauth/held{i} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {length}\r\n\r\n"
        )
    };
    let first_half = Arc::new(vec![b'h'; length / 2]);
    let mut held = Vec::new();
    for i in 0..2 {
        held.push(send_partial(proxy.addr, head(i), first_half.clone()).await);
    }
    let half = (2 * (length / 2)) as f64;
    assert!(
        poll_until(|| async { buffered(&proxy).await >= half }).await,
        "the two bodies were not buffered"
    );

    // The third: no room in the budget, so it streams, and its 401 goes
    // back to the client rather than being replayed.
    let third = client()
        .post(proxy.url("/oauth/third"))
        .body(vec![b't'; length])
        .send()
        .await
        .unwrap();
    assert_eq!(third.status(), 401);
    assert_eq!(third.text().await.unwrap(), "expired");
    assert_eq!(
        metric(&proxy, "authproxy_replay_buffer_refused_total").await,
        1.0
    );
    assert!(
        proxy.log().contains("max_buffered_bytes"),
        "{}",
        proxy.log()
    );

    // The two kept ones are replayed with the renewed token.
    let second_half = vec![b'h'; length - length / 2];
    for s in &mut held {
        s.write_all(&second_half).await.unwrap();
    }
    for mut s in held {
        let mut answer = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(60), s.read(&mut answer))
            .await
            .unwrap()
            .unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    }
}

// --------------------------------------------- upstream connection limit

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_keeps_at_most_max_upstream_connections() {
    let token = token_endpoint().await;
    // Holds every request until the test lets go, counting those in flight.
    let in_flight = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(Notify::new());
    let released = Arc::new(Mutex::new(false));
    let (f, r, done) = (in_flight.clone(), release.clone(), released.clone());
    let upstream = Upstream::start(Arc::new(move |req: Request<Incoming>| {
        let (in_flight, release, released) = (f.clone(), r.clone(), done.clone());
        Box::pin(async move {
            let _ = req.into_body().collect().await;
            in_flight.fetch_add(1, Ordering::SeqCst);
            loop {
                let wait = release.notified();
                if *released.lock().unwrap() {
                    break;
                }
                wait.await;
            }
            Response::new(Full::new(Bytes::from_static(b"ok")))
        })
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        token,
        upstream.addr,
        "",
        "max_upstream_connections = 4",
    );
    let proxy = ProxyProcess::start(&config, &[("RUST_LOG", "info")]);

    let requests: Vec<_> = (0..40)
        .map(|i| {
            let url = proxy.url(&format!("/plain/r{i}"));
            tokio::spawn(async move { client().get(url).send().await.unwrap().status() })
        })
        .collect();
    // Four reach the upstream and are held there; the rest wait for one of
    // the four connections.
    assert!(
        eventually(Duration::from_secs(30), || in_flight.load(Ordering::SeqCst)
            >= 4)
        .await
    );
    assert_eq!(upstream.accepted(), 4);
    *released.lock().unwrap() = true;
    release.notify_waiters();
    for r in requests {
        assert_eq!(r.await.unwrap(), 200);
    }
    assert_eq!(in_flight.load(Ordering::SeqCst), 40);
    assert_eq!(
        upstream.accepted(),
        4,
        "more than 4 upstream connections were opened"
    );
}
