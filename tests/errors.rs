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
