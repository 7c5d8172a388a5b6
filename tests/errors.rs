//! Our own error answers: the JSON body `{"error", "message"}` and the
//! `X-Authproxy-Error` header for the client, the same code in the access
//! log line.

mod support;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::{client, start_proxy, Echo, ProxyProcess};

fn config(echo: &Echo) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\
         [store]\nkind = \"memory\"\n\
         [[routes]]\nprefix = \"/e/\"\nupstream = \"{}/\"\n",
        echo.url()
    )
}

/// Each kind of our own answer (a proxied path without a route, a request
/// the guard refuses, an unknown local endpoint) tells the client its code
/// in the body and the header, and the access log line has the same code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_codes_reach_client_and_access_log() {
    let echo = Echo::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("authproxy.toml");
    std::fs::write(&path, config(&echo)).unwrap();
    let proxy = ProxyProcess::start(&path, &[("RUST_LOG", "info")]);
    let c = client();

    let cases = [
        (c.get(proxy.url("/nowhere")), "/nowhere", 404, "no_route"),
        (
            c.get(proxy.url("/e/x"))
                .header("origin", "https://evil.example"),
            "/e/x",
            403,
            "forbidden_origin",
        ),
        (
            c.get(proxy.url("/_authproxy/nothing-here")),
            "/_authproxy/nothing-here",
            404,
            "no_route",
        ),
    ];
    let mut expected_lines = Vec::new();
    for (request, path, status, code) in cases {
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), status, "{path}");
        assert_eq!(r.headers()["x-authproxy-error"], code, "{path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], code, "{path}");
        assert!(body["message"].is_string(), "{path}: {body}");
        expected_lines.push((path, format!("status={status}"), format!("error={code}")));
    }
    assert_eq!(echo.count(), 0);

    proxy.signal("TERM");
    let (code, log) = tokio::task::spawn_blocking(move || proxy.wait())
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{log}");
    for (path, status, error) in expected_lines {
        let line = log
            .lines()
            .find(|l| l.contains("authproxy::access") && l.contains(&format!("path={path} ")))
            .unwrap_or_else(|| panic!("no access line for {path}:\n{log}"));
        assert!(line.contains(&status), "{line}");
        assert!(line.ends_with(&error), "{line}");
    }
}

/// A wrong method on a local endpoint is our JSON error, with `Allow`.
#[tokio::test]
async fn wrong_method_on_a_local_endpoint_is_a_json_405() {
    let echo = Echo::start().await;
    let proxy = start_proxy(&config(&echo)).await;
    let r = client()
        .post(proxy.url("/_authproxy/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["x-authproxy-error"], "method_not_allowed");
    let allow = r.headers()["allow"].to_str().unwrap().to_string();
    assert!(allow.contains("GET"), "{allow}");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "method_not_allowed");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("POST"), "{message}");
}

/// A request head that stops half-way gets our JSON `408` when the head
/// deadline passes, then the connection closes.
#[tokio::test]
async fn unfinished_request_head_gets_a_json_408() {
    let echo = Echo::start().await;
    let text = config(&echo).replace("[server]\n", "[server]\nheader_read_timeout = \"300ms\"\n");
    let proxy = start_proxy(&text).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET /e/x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half: ")
        .await
        .unwrap();
    // The proxy closes the connection after its answer: read to the end.
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8(answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(head.contains("content-type: application/json"), "{answer}");
    assert!(
        head.contains("x-authproxy-error: request_timeout"),
        "{answer}"
    );
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["error"], "request_timeout");
    assert!(body["message"].is_string(), "{body}");
    assert_eq!(echo.count(), 0);
}

/// Reads one answer head from `s` (up to the blank line).
async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        if s.read(&mut byte).await.unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).to_lowercase()
}

/// Our error answered before the request's body was read (here: no route
/// for a large upload) says `Connection: close` and closes. Without it,
/// hyper decides to close only after the head is sent (when the rest of
/// the body is not in its buffer yet), and a client that saw a keep-alive
/// answer sends its next request into a closing connection: reqwest's
/// `IncompleteMessage`, seen as a flaky failure in tests/secrets_audit.rs.
#[tokio::test]
async fn an_error_before_the_body_is_read_closes_the_connection_and_says_so() {
    let echo = Echo::start().await;
    let proxy = start_proxy(&config(&echo)).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(
        b"POST /nowhere HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000000\r\n\r\nfirst bytes",
    )
    .await
    .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("http/1.1 404 "), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    // An error without a body to read keeps the connection for the next
    // request.
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    for _ in 0..2 {
        s.write_all(b"GET /nowhere HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .unwrap();
        let head = read_head(&mut s).await;
        assert!(head.starts_with("http/1.1 404 "), "{head}");
        assert!(!head.contains("connection: close"), "{head}");
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap();
        let mut body = vec![0u8; length];
        s.read_exact(&mut body).await.unwrap();
    }
}
