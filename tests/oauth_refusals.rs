//! A 401 that a renewal did not cure, and a renewal refused for good:
//! no refresh-token burning on a path the upstream always refuses, and
//! no refused token injected again (fail closed until a new credential).

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use axum::extract::Request;
use axum::response::IntoResponse;
use axum::Router;
use http::StatusCode;
use support::providers::{MockProvider, Style, CLIENT_ID};
use support::{client, get_json, start_proxy, Proxy};

/// A OneCloud provider (single-use rotating refresh tokens, plain 401 on
/// expiry) on `/one/`, and `/deny/` on `deny` with the same credential.
fn config(mock: &MockProvider, seed: &str, access: Option<&str>, deny: &str) -> String {
    let access = access
        .map(|a| format!("access_token = \"{a}\"\n"))
        .unwrap_or_default();
    format!(
        r#"
[store]
kind = "memory"
[providers.one]
type = "oauth2"
grant = "refresh_token"
token_url = "{token_url}"
body = "json"
client_id = "{CLIENT_ID}"
refresh_token = "{seed}"
{access}
[[routes]]
prefix = "/one/"
upstream = "{base}/api/"
provider = "one"
[[routes]]
prefix = "/deny/"
upstream = "{deny}/"
provider = "one"
"#,
        token_url = mock.token_url(),
        base = mock.base(),
    )
}

/// An upstream that refuses every request: `/expired` with
/// `X-API-Expired`, anything else with a plain 401. Counts its hits.
async fn always_401() -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let router = Router::new().fallback(move |req: Request| {
        let h = h.clone();
        async move {
            h.fetch_add(1, Ordering::SeqCst);
            let mut r = (StatusCode::UNAUTHORIZED, "no").into_response();
            if req.uri().path() == "/expired" {
                r.headers_mut()
                    .insert("x-api-expired", http::HeaderValue::from_static("1"));
            }
            r
        }
    });
    let addr = support::serve(router).await;
    (format!("http://{addr}"), hits)
}

async fn status_code(proxy: &Proxy, path: &str) -> u16 {
    client()
        .get(proxy.url(path))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn refresh_grants(mock: &MockProvider) -> usize {
    mock.token_requests()
        .iter()
        .filter(|r| r.grant_type() == "refresh_token")
        .count()
}

/// Today's bug: 30 requests to a path the upstream always answers 401
/// made 30 refresh grants (30 rotations of a single-use chain). Now the
/// first renewal's replay is refused too, so that 401 is not about the
/// token: the new token is not renewed on a plain 401 again. An explicit
/// `X-API-Expired` still renews it.
#[tokio::test]
async fn always_401_path_spends_one_refresh_not_thirty() {
    let mock = MockProvider::start(Style::OneCloud).await;
    mock.issue_seed("seed-1");
    let (deny, hits) = always_401().await;
    let proxy = start_proxy(&config(&mock, "seed-1", None, &deny)).await;
    assert_eq!(status_code(&proxy, "/one/a").await, 200);
    assert_eq!(refresh_grants(&mock), 1, "the first token");

    for _ in 0..30 {
        assert_eq!(status_code(&proxy, "/deny/x").await, 401);
    }
    assert!(
        refresh_grants(&mock) <= 2,
        "{} refresh grants for 30 requests to an always-401 path",
        refresh_grants(&mock) - 1
    );
    assert_eq!(
        hits.load(Ordering::SeqCst),
        31,
        "30 requests and one replay"
    );
    // The token is fine where the upstream takes it.
    assert_eq!(status_code(&proxy, "/one/b").await, 200);
    let before = refresh_grants(&mock);

    // An explicit expiry header still renews (and replays once).
    let r = client()
        .get(proxy.url("/deny/expired"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("x-api-expired"));
    assert_eq!(refresh_grants(&mock), before + 1, "X-API-Expired renews");
    assert_eq!(status_code(&proxy, "/one/c").await, 200);
    assert!(!mock.reuse_detected());
    assert!(mock.token_requests().iter().all(|r| r.status == 200));
}

/// A body too large to replay: the renewal after a plain 401 cannot be
/// checked by a replay, so the new token's first answer decides. Ten
/// uploads to an always-401 path cost one refresh grant, not ten.
#[tokio::test]
async fn always_401_path_with_bodies_too_large_to_replay_spends_one_refresh() {
    let mock = MockProvider::start(Style::OneCloud).await;
    mock.issue_seed("seed-1");
    let (deny, hits) = always_401().await;
    let text = format!(
        "[server]\nmax_replay_body = \"1KiB\"\n{}",
        config(&mock, "seed-1", None, &deny)
    );
    let proxy = start_proxy(&text).await;
    assert_eq!(status_code(&proxy, "/one/a").await, 200);
    for _ in 0..10 {
        let r = client()
            .post(proxy.url("/deny/upload"))
            .body(vec![b'x'; 4096])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    assert_eq!(hits.load(Ordering::SeqCst), 10, "no replays");
    assert!(
        refresh_grants(&mock) <= 2,
        "{} refresh grants for 10 uploads to an always-401 path",
        refresh_grants(&mock) - 1
    );
    assert_eq!(status_code(&proxy, "/one/b").await, 200);
}

/// Today's bug: after the refresh token was refused (`invalid_grant`) and
/// no primary grant was left, the refused access token was still injected
/// (one wasted upstream call per request) and status said `expiring`.
/// Now requests get `502 reauthentication_failed` without contacting the
/// upstream, status says `error`, and a pasted token brings it back.
#[tokio::test]
async fn refused_refresh_fails_closed_until_a_new_token_arrives() {
    let mock = MockProvider::start(Style::OneCloud).await;
    let (deny, _) = always_401().await;
    // The seeds are dead: the access token is unknown to the upstream
    // (plain 401) and the refresh token was never issued (invalid_grant).
    let proxy = start_proxy(&config(&mock, "dead-seed", Some("dead-access"), &deny)).await;

    let body = get_json(&client(), proxy.url("/one/a")).await;
    assert_eq!(body["error"], "reauthentication_failed", "{body}");
    assert_eq!(
        mock.api_hits().len(),
        1,
        "the first request tried the token"
    );
    assert_eq!(mock.token_request_count(), 1);

    for path in ["/one/b", "/one/c", "/deny/d", "/one/e"] {
        let r = client().get(proxy.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 502, "{path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], "reauthentication_failed", "{body}");
    }
    assert_eq!(
        mock.api_hits().len(),
        1,
        "the refused token was injected again"
    );
    assert_eq!(mock.token_request_count(), 1, "nothing left to try");
    let status = get_json(&client(), proxy.url("/_authproxy/status")).await;
    assert_eq!(status["providers"]["one"]["state"], "error", "{status}");
    assert_eq!(
        status["providers"]["one"]["last_error"]["code"],
        "reauthentication_failed"
    );

    // A new credential: a token obtained by hand, pasted.
    mock.issue_seed("by-hand");
    let minted: serde_json::Value = client()
        .post(mock.token_url())
        .json(&serde_json::json!({
            "grant_type": "refresh_token",
            "client_id": CLIENT_ID,
            "refresh_token": "by-hand",
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = client()
        .post(proxy.url("/_authproxy/tokens/one"))
        .json(&serde_json::json!({
            "access_token": minted["access_token"],
            "refresh_token": minted["refresh_token"],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let status = get_json(&client(), proxy.url("/_authproxy/status")).await;
    assert_eq!(status["providers"]["one"]["state"], "ok", "{status}");
    assert_eq!(status_code(&proxy, "/one/f").await, 200);
    assert_eq!(mock.api_hits().len(), 2);
}
