//! Faults at the token endpoint and the upstream: each gives a typed,
//! logged error and the right JSON answer, retries stay bounded, and the
//! proxy recovers as soon as the fault is gone.

mod support;

use std::time::{Duration, Instant};

use support::providers::{MockProvider, Style, CLIENT_ID, CLIENT_SECRET};
use support::{client, start_proxy, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn standard(mock: &MockProvider, extra: &str) -> String {
    format!(
        r#"
[store]
kind = "memory"
[providers.std]
type = "oauth2"
grant = "client_credentials"
token_url = "{}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
client_auth = "basic"
{extra}
[[routes]]
prefix = "/std/"
upstream = "{}/v1/"
provider = "std"
"#,
        mock.token_url(),
        mock.base()
    )
}

async fn get(proxy: &Proxy, path: &str) -> (u16, serde_json::Value) {
    let r = client().get(proxy.url(path)).send().await.unwrap();
    (
        r.status().as_u16(),
        r.json().await.unwrap_or(serde_json::Value::Null),
    )
}

/// Polls until a request succeeds (bounded): recovery without a restart.
async fn recovers(proxy: &Proxy) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if get(proxy, "/std/x").await.0 == 200 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn token_endpoint_refusing_connections() {
    // A port nobody listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mock = MockProvider::start(Style::Standard).await;
    let config = standard(&mock, "").replace(&mock.token_url(), &format!("http://{closed}/token"));
    let proxy = start_proxy(&config).await;
    let (status, body) = get(&proxy, "/std/x").await;
    assert_eq!(status, 502);
    assert_eq!(body["error"], "token_endpoint_error");
    assert!(
        body["message"].as_str().unwrap().contains("unreachable"),
        "{body}"
    );
    let status = support::get_json(&client(), proxy.url("/_authproxy/status")).await;
    assert_eq!(status["providers"]["std"]["state"], "error");
    assert_eq!(status["providers"]["std"]["last_error"]["code"], "network");
}

#[tokio::test]
async fn token_endpoint_answering_after_the_timeout() {
    let mock = MockProvider::start(Style::Standard).await;
    mock.set(|s| s.token_delay = Duration::from_secs(3));
    let proxy = start_proxy(&standard(&mock, "token_timeout = \"300ms\"")).await;
    let started = Instant::now();
    let (status, body) = get(&proxy, "/std/x").await;
    assert_eq!(status, 502);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("did not answer within 0.3s"),
        "{body}"
    );
    assert!(started.elapsed() < Duration::from_secs(10), "bounded");
    assert_eq!(mock.state.lock().unwrap().token_hits, 4, "bounded retries");
    mock.set(|s| s.token_delay = Duration::ZERO);
    assert!(recovers(&proxy).await);
}

#[tokio::test]
async fn token_endpoint_5xx_burst_then_recovery() {
    let mock = MockProvider::start(Style::Standard).await;
    mock.set(|s| s.fail_queue.extend([502, 503, 500, 504, 500, 500]));
    let proxy = start_proxy(&standard(&mock, "")).await;
    let (status, body) = get(&proxy, "/std/x").await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"], "token_endpoint_error");
    assert_eq!(mock.state.lock().unwrap().token_hits, 4);
    // Two failures left in the burst, then healthy: recovers by itself.
    assert!(recovers(&proxy).await);
    assert_eq!(mock.state.lock().unwrap().token_hits, 7);
}

#[tokio::test]
async fn token_endpoint_429_with_retry_after_is_honoured() {
    let mock = MockProvider::start(Style::Standard).await;
    mock.set(|s| {
        s.fail_queue.push_back(429);
        s.retry_after = Some(1);
    });
    let proxy = start_proxy(&standard(&mock, "")).await;
    let started = Instant::now();
    let (status, _) = get(&proxy, "/std/x").await;
    assert_eq!(status, 200);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "waited for Retry-After"
    );
    assert_eq!(mock.token_request_count(), 2);
}

#[tokio::test]
async fn token_endpoint_garbage_answers_are_typed_errors_without_retry() {
    for (body, expect) in [
        ("<html><body>Bad Gateway</body></html>", "looks like HTML"),
        ("not json at all", "not a JSON object"),
        (
            "{\"token_type\":\"bearer\",\"expires_in\":3600}",
            "no `access_token`",
        ),
        (
            "{\"access_token\":\"abc\\r\\nX-Evil: 1\"}",
            "not allowed in an HTTP header",
        ),
        ("{\"access_token\":\"\"}", "empty"),
    ] {
        let mock = MockProvider::start(Style::Standard).await;
        mock.set(|s| s.answer_override = Some(body.to_string()));
        let proxy = start_proxy(&standard(&mock, "")).await;
        let (status, answer) = get(&proxy, "/std/x").await;
        assert_eq!(status, 502, "{body}");
        assert_eq!(answer["error"], "token_endpoint_error");
        assert!(
            answer["message"].as_str().unwrap().contains(expect),
            "{body}: {answer}"
        );
        assert!(!answer.to_string().contains("X-Evil"));
        assert_eq!(
            mock.token_request_count(),
            1,
            "{body}: a broken answer is not retried"
        );
        assert!(mock.api_hits().is_empty());
        mock.set(|s| s.answer_override = None);
        assert!(recovers(&proxy).await, "{body}");
    }
}

/// Upstream resets the connection before answering → 502; in the middle of
/// a body → the client sees a broken body, never a complete-looking one.
#[tokio::test]
async fn upstream_resets_before_and_during_the_response() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut n = 0;
        while let Ok((mut s, _)) = listener.accept().await {
            n += 1;
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            if n == 1 {
                drop(s); // reset before any answer
            } else {
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nonly-part-of-it")
                    .await;
                drop(s);
            }
        }
    });
    let proxy = start_proxy(&format!(
        "[[routes]]\nprefix = \"/u/\"\nupstream = \"http://{addr}/\"\n"
    ))
    .await;
    let (status, body) = get(&proxy, "/u/a").await;
    assert_eq!(status, 502);
    assert_eq!(body["error"], "upstream_unreachable");
    let r = client().get(proxy.url("/u/b")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.bytes().await.is_err(),
        "a truncated body must fail, not end normally"
    );
}

/// A client that reads slowly gets every byte; the proxy applies
/// back-pressure instead of buffering the whole response.
#[tokio::test]
async fn slow_client_gets_the_whole_response() {
    let data = support::pattern(8 << 20, 11);
    let expected = support::sha256(&data);
    let data = bytes::Bytes::from(data);
    let upstream = support::serve(axum::Router::new().fallback(move || {
        let data = data.clone();
        async move { data }
    }))
    .await;
    let proxy = start_proxy(&format!(
        "[[routes]]\nprefix = \"/u/\"\nupstream = \"http://{upstream}/\"\n"
    ))
    .await;
    let mut r = client().get(proxy.url("/u/big")).send().await.unwrap();
    let mut all = Vec::new();
    let mut reads = 0;
    while let Some(chunk) = r.chunk().await.unwrap() {
        all.extend_from_slice(&chunk);
        reads += 1;
        if reads % 16 == 0 {
            // Reading slowly is the point of this test.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(support::sha256(&all), expected);
}
