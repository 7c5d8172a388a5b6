//! OAuth2 engine: grants, body encodings, renewal, re-authentication and
//! replay, single flight, against mock providers that behave like the
//! spec's provider docs.

mod support;

use std::time::Duration;

use support::providers::{
    ClientAuthRule, MockProvider, Style, CLIENT_ID, CLIENT_SECRET, PASSWORD, USERNAME,
};
use support::{client, start_proxy, Proxy};

/// A RIPS-style provider: password grant, JSON body, JWT tokens.
fn rips_config(mock: &MockProvider, extra: &str) -> String {
    format!(
        r#"
[store]
kind = "memory"

[providers.rips]
type = "oauth2"
grant = "password"
token_url = "{token_url}"
body = "json"
client_id = "{CLIENT_ID}"
username = "{USERNAME}"
password = "{PASSWORD}"
{extra}

[[routes]]
prefix = "/rips/"
upstream = "{base}/api/"
provider = "rips"
"#,
        token_url = mock.token_url(),
        base = mock.base(),
    )
}

/// A standard RFC 6749 provider: client_credentials, form body, Basic auth.
fn standard_config(mock: &MockProvider, extra: &str) -> String {
    format!(
        r#"
[store]
kind = "memory"

[providers.std]
type = "oauth2"
grant = "client_credentials"
token_url = "{token_url}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
client_auth = "basic"
{extra}

[[routes]]
prefix = "/std/"
upstream = "{base}/v1/"
provider = "std"
"#,
        token_url = mock.token_url(),
        base = mock.base(),
    )
}

/// A OneCloud-style provider: refresh_token grant from `seed`, JSON body.
/// `store` is the `[store]` table's body; `extra` goes into the provider.
fn onecloud_config(mock: &MockProvider, store: &str, seed: &str, extra: &str) -> String {
    format!(
        r#"
[store]
{store}
[providers.one]
type = "oauth2"
grant = "refresh_token"
token_url = "{token_url}"
body = "json"
client_id = "{CLIENT_ID}"
refresh_token = "{seed}"
{extra}
[[routes]]
prefix = "/one/"
upstream = "{base}/api/"
provider = "one"
"#,
        token_url = mock.token_url(),
        base = mock.base(),
    )
}

async fn get(proxy: &Proxy, path: &str) -> (u16, serde_json::Value) {
    let r = client().get(proxy.url(path)).send().await.unwrap();
    let status = r.status().as_u16();
    let body = r.json().await.unwrap_or(serde_json::Value::Null);
    (status, body)
}

#[tokio::test]
async fn password_grant_json_body_exact_request_and_token_reuse() {
    let mock = MockProvider::start(Style::Rips).await;
    let proxy = start_proxy(&rips_config(&mock, "")).await;
    for _ in 0..5 {
        let (status, body) = get(&proxy, "/rips/scans?page=2").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["path"], "/api/scans");
        assert_eq!(body["query"], "page=2");
    }
    let reqs = mock.token_requests();
    assert_eq!(reqs.len(), 1, "one token for five requests");
    assert!(reqs[0].content_type.starts_with("application/json"));
    let fields: Vec<(&str, &str)> = reqs[0]
        .fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        fields,
        vec![
            ("client_id", CLIENT_ID),
            ("grant_type", "password"),
            ("password", PASSWORD),
            ("username", USERNAME),
        ]
    );
    let hits = mock.api_hits();
    assert_eq!(hits.len(), 5);
    assert!(hits
        .iter()
        .all(|h| h.status == 200 && h.token.as_deref().unwrap().split('.').count() == 3));
}

#[tokio::test]
async fn expired_refreshes_once_and_replays() {
    let mock = MockProvider::start(Style::Rips).await;
    let proxy = start_proxy(&rips_config(&mock, "")).await;
    assert_eq!(get(&proxy, "/rips/a").await.0, 200);
    mock.expire_all();
    let (status, body) = get(&proxy, "/rips/b").await;
    assert_eq!(status, 200, "client never sees the expiry: {body}");
    let reqs = mock.token_requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[1].grant_type(), "refresh_token");
    let keys: Vec<&str> = reqs[1].fields.keys().map(String::as_str).collect();
    assert_eq!(keys, vec!["client_id", "grant_type", "refresh_token"]);
    assert!(reqs[1].fields["refresh_token"].starts_with("rt-1-"));
    let hits = mock.api_hits();
    let statuses: Vec<u16> = hits.iter().map(|h| h.status).collect();
    assert_eq!(statuses, vec![200, 401, 200], "one 401 then one replay");
}

#[tokio::test]
async fn revoked_runs_the_primary_grant_not_refresh() {
    let mock = MockProvider::start(Style::Rips).await;
    let proxy = start_proxy(&rips_config(&mock, "")).await;
    assert_eq!(get(&proxy, "/rips/a").await.0, 200);
    mock.revoke_all();
    assert_eq!(get(&proxy, "/rips/b").await.0, 200);
    let grants: Vec<String> = mock
        .token_requests()
        .iter()
        .map(|r| r.grant_type().to_string())
        .collect();
    assert_eq!(grants, vec!["password", "password"]);
}

#[tokio::test]
async fn post_body_is_replayed_byte_identical() {
    let mock = MockProvider::start(Style::Rips).await;
    let proxy = start_proxy(&rips_config(&mock, "")).await;
    assert_eq!(get(&proxy, "/rips/warmup").await.0, 200);
    mock.expire_all();
    let payload = support::pattern(300 * 1024, 7);
    let r = client()
        .post(proxy.url("/rips/upload"))
        .body(payload.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["body_sha256"], support::sha256(&payload));
    let hits = mock.api_hits();
    assert_eq!(hits.len(), 3);
    assert_eq!(hits[1].status, 401);
    assert_eq!(hits[1].body_sha256, support::sha256(&payload));
    assert_eq!(hits[2].body_sha256, support::sha256(&payload));
    assert_eq!(hits[2].method, "POST");
}

#[tokio::test]
async fn chunked_body_without_length_is_replayed_too() {
    let mock = MockProvider::start(Style::Rips).await;
    let proxy = start_proxy(&rips_config(&mock, "")).await;
    assert_eq!(get(&proxy, "/rips/warmup").await.0, 200);
    mock.expire_all();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..8).map(|i| Ok(support::pattern(4096, i + 1))).collect();
    let all: Vec<u8> = chunks
        .iter()
        .flat_map(|c| c.as_ref().unwrap().clone())
        .collect();
    let r = client()
        .put(proxy.url("/rips/chunked"))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["body_sha256"], support::sha256(&all));
}

#[tokio::test]
async fn body_over_replay_limit_streams_without_replay_but_token_is_renewed() {
    let mock = MockProvider::start(Style::Rips).await;
    let proxy = start_proxy(&format!(
        "[server]\nmax_replay_body = \"1KiB\"\n{}",
        rips_config(&mock, "")
    ))
    .await;
    assert_eq!(get(&proxy, "/rips/warmup").await.0, 200);
    mock.expire_all();
    let payload = support::pattern(64 * 1024, 3);
    let r = client()
        .post(proxy.url("/rips/big"))
        .body(payload.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "too large to replay: the 401 goes back");
    assert!(r.headers().contains_key("x-api-expired"));
    // The token was renewed anyway, so the next request just works.
    let r = client()
        .post(proxy.url("/rips/big"))
        .body(payload)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(mock.token_request_count(), 2);
    let statuses: Vec<u16> = mock.api_hits().iter().map(|h| h.status).collect();
    assert_eq!(statuses, vec![200, 401, 200]);
}

#[tokio::test]
async fn jwt_exp_drives_proactive_renewal() {
    let mock = MockProvider::start(Style::Rips).await;
    // JWTs live 2 s; the renewal window is capped at half the lifetime (1 s).
    mock.set(|s| s.ttl = 2);
    let proxy = start_proxy(&rips_config(&mock, "refresh_before = \"60s\"")).await;
    assert_eq!(get(&proxy, "/rips/a").await.0, 200);
    let issued = support::providers::now();
    // Let the clock enter the renewal window (time is what is under test).
    while support::providers::now() < issued + 1 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get(&proxy, "/rips/b").await.0, 200);
    let grants: Vec<String> = mock
        .token_requests()
        .iter()
        .map(|r| r.grant_type().to_string())
        .collect();
    assert_eq!(
        grants,
        vec!["password", "refresh_token"],
        "renewed before use"
    );
    assert!(
        mock.api_hits().iter().all(|h| h.status == 200),
        "upstream never saw an expired token"
    );
}

#[tokio::test]
async fn client_credentials_form_body_with_basic_auth() {
    let mock = MockProvider::start(Style::Standard).await;
    let proxy = start_proxy(&standard_config(
        &mock,
        "scope = \"read write\"\nextra = { audience = \"https://api.example\" }",
    ))
    .await;
    let (status, body) = get(&proxy, "/std/items").await;
    assert_eq!(status, 200, "{body}");
    let reqs = mock.token_requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].content_type, "application/x-www-form-urlencoded");
    let fields: Vec<(&str, &str)> = reqs[0]
        .fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        fields,
        vec![
            ("audience", "https://api.example"),
            ("grant_type", "client_credentials"),
            ("scope", "read write"),
        ],
        "client credentials go in the Basic header, not the body"
    );
    assert!(reqs[0]
        .authorization
        .as_deref()
        .unwrap()
        .starts_with("Basic "));
    // expires_in arrived as a string; the status shows the expiry.
    let status = support::get_json(&client(), proxy.url("/_authproxy/status")).await;
    let expires_in = status["providers"]["std"]["expires_in"].as_i64().unwrap();
    assert!((3590..=3600).contains(&expires_in), "{status}");
}

#[tokio::test]
async fn client_secret_in_form_body_when_client_auth_is_body() {
    let mock = MockProvider::start(Style::Standard).await;
    let proxy =
        start_proxy(&standard_config(&mock, "").replace("client_auth = \"basic\"", "")).await;
    let (status, body) = get(&proxy, "/std/items").await;
    assert_eq!(status, 200, "{body}");
    let reqs = mock.token_requests();
    assert_eq!(reqs.len(), 1);
    let fields: Vec<(&str, &str)> = reqs[0]
        .fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        fields,
        vec![
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
            ("grant_type", "client_credentials"),
        ]
    );
    assert!(reqs[0].authorization.is_none(), "one client authentication");
}

#[tokio::test]
async fn endpoint_that_takes_basic_only_refuses_body_client_auth() {
    let mock = MockProvider::start(Style::Standard).await;
    mock.set(|s| s.client_auth = ClientAuthRule::Basic);
    let proxy =
        start_proxy(&standard_config(&mock, "").replace("client_auth = \"basic\"", "")).await;
    // The endpoint insists on Basic auth, so this is refused ...
    let (status, body) = get(&proxy, "/std/items").await;
    assert_eq!(status, 502);
    assert_eq!(body["error"], "reauthentication_failed");
    // ... but the request carried the credentials in the body.
    let reqs = mock.token_requests();
    assert_eq!(reqs[0].fields["client_id"], CLIENT_ID);
    assert_eq!(reqs[0].fields["client_secret"], CLIENT_SECRET);
    assert!(reqs[0].authorization.is_none());
}

#[tokio::test]
async fn token_endpoint_500_500_200_succeeds() {
    let mock = MockProvider::start(Style::Standard).await;
    mock.set(|s| s.fail_queue.extend([500, 500]));
    let proxy = start_proxy(&standard_config(&mock, "")).await;
    let (status, body) = get(&proxy, "/std/x").await;
    assert_eq!(status, 200, "{body}");
    let statuses: Vec<u16> = mock.token_requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![500, 500, 200]);
}

#[tokio::test]
async fn token_endpoint_always_500_gives_bounded_502() {
    let mock = MockProvider::start(Style::Standard).await;
    mock.set(|s| s.fail_always = Some(503));
    let proxy = start_proxy(&standard_config(&mock, "")).await;
    let (status, body) = get(&proxy, "/std/x").await;
    assert_eq!(status, 502);
    assert_eq!(body["error"], "token_endpoint_error");
    assert_eq!(body["provider"], "std");
    assert_eq!(mock.token_request_count(), 4, "bounded retries");
    // Requests right after share the failure instead of retrying again.
    for _ in 0..5 {
        assert_eq!(get(&proxy, "/std/x").await.0, 502);
    }
    assert_eq!(mock.token_request_count(), 4);
    assert!(
        mock.api_hits().is_empty(),
        "no request went upstream without a token"
    );
}

#[tokio::test]
async fn invalid_grant_is_final_no_retry_storm() {
    let mock = MockProvider::start(Style::Rips).await;
    mock.set(|s| s.password = "changed-by-admin".into());
    let proxy = start_proxy(&rips_config(&mock, "")).await;
    for _ in 0..10 {
        let (status, body) = get(&proxy, "/rips/x").await;
        assert_eq!(status, 502);
        assert_eq!(body["error"], "reauthentication_failed");
        assert!(
            body["message"].as_str().unwrap().contains("invalid_grant"),
            "{body}"
        );
        assert!(!body.to_string().contains(PASSWORD));
    }
    assert_eq!(
        mock.token_request_count(),
        1,
        "invalid_grant is not retried"
    );
}

#[tokio::test]
async fn replay_that_gets_401_again_goes_back_as_is() {
    let mock = MockProvider::start(Style::Rips).await;
    let proxy = start_proxy(&rips_config(&mock, "")).await;
    assert_eq!(get(&proxy, "/rips/a").await.0, 200);
    mock.set(|s| s.api_always_expired = true);
    let hits_before = mock.api_hits().len();
    let r = client().get(proxy.url("/rips/b")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("x-api-expired"));
    assert_eq!(
        mock.api_hits().len() - hits_before,
        2,
        "original and one replay only"
    );
}

#[tokio::test]
async fn plain_401_is_passed_through_when_refresh_on_401_is_off() {
    let mock = MockProvider::start(Style::OneCloud).await;
    mock.issue_seed("seed-1");
    let config = onecloud_config(
        &mock,
        r#"kind = "memory""#,
        "seed-1",
        "refresh_on_401 = false",
    );
    let proxy = start_proxy(&config).await;
    assert_eq!(get(&proxy, "/one/a").await.0, 200);
    mock.expire_all();
    assert_eq!(get(&proxy, "/one/b").await.0, 401);
    assert_eq!(mock.token_request_count(), 1, "no renewal on a plain 401");
}

#[tokio::test]
async fn failed_refresh_falls_back_to_primary_grant() {
    let mock = MockProvider::start(Style::Rips).await;
    let proxy = start_proxy(&rips_config(&mock, "")).await;
    assert_eq!(get(&proxy, "/rips/a").await.0, 200);
    mock.invalidate_refresh_tokens();
    mock.expire_all();
    assert_eq!(get(&proxy, "/rips/b").await.0, 200);
    let reqs: Vec<(String, u16)> = mock
        .token_requests()
        .iter()
        .map(|r| (r.grant_type().to_string(), r.status))
        .collect();
    assert_eq!(
        reqs,
        vec![
            ("password".to_string(), 200),
            ("refresh_token".to_string(), 400),
            ("password".to_string(), 200)
        ]
    );
}

#[tokio::test]
async fn rotating_refresh_tokens_are_used_once_each() {
    let mock = MockProvider::start(Style::OneCloud).await;
    mock.issue_seed("seed-1");
    let dir = tempfile::tempdir().unwrap();
    let config = onecloud_config(&mock, r#"path = "state/tokens.json""#, "seed-1", "");
    let proxy = support::start_proxy_in(&config, dir).await;
    for round in 0..5 {
        assert_eq!(get(&proxy, &format!("/one/r{round}")).await.0, 200);
        mock.expire_all();
    }
    assert!(!mock.reuse_detected());
    let used: Vec<String> = mock
        .token_requests()
        .iter()
        .map(|r| r.fields["refresh_token"].clone())
        .collect();
    assert_eq!(used.len(), 5);
    assert_eq!(used[0], "seed-1");
    let mut dedup = used.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), used.len(), "no refresh token sent twice");
    // The store holds the newest (still valid) refresh token, 0600.
    let path = proxy.dir.path().join("state/tokens.json");
    let stored: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let live = mock.live_refresh_tokens();
    assert_eq!(live.len(), 1);
    assert_eq!(stored["providers"]["one"]["refresh_token"], live[0]);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[tokio::test]
async fn no_refresh_token_left_gives_reauthentication_failed() {
    let mock = MockProvider::start(Style::OneCloud).await;
    // The seed was never issued by the provider: refused.
    let config = onecloud_config(&mock, r#"kind = "memory""#, "not-a-valid-seed", "");
    let proxy = start_proxy(&config).await;
    for _ in 0..3 {
        let (status, body) = get(&proxy, "/one/a").await;
        assert_eq!(status, 502);
        assert_eq!(body["error"], "reauthentication_failed");
    }
    assert_eq!(
        mock.token_request_count(),
        1,
        "a refused refresh token is never sent again"
    );
    let status = support::get_json(&client(), proxy.url("/_authproxy/status")).await;
    assert_eq!(status["providers"]["one"]["state"], "error");
    assert_eq!(
        status["providers"]["one"]["last_error"]["code"],
        "reauthentication_failed"
    );
}

#[tokio::test]
async fn expired_token_is_never_injected_when_renewal_fails() {
    let mock = MockProvider::start(Style::Standard).await;
    mock.set(|s| s.fail_always = Some(500));
    // A seeded JWT that expired a minute ago.
    let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    let exp = support::providers::now() - 60;
    let stale = format!(
        "{}.{}.x",
        e.encode("{}"),
        e.encode(format!("{{\"exp\":{exp}}}"))
    );
    let proxy = start_proxy(&standard_config(
        &mock,
        &format!("access_token = \"{stale}\""),
    ))
    .await;
    let (status, body) = get(&proxy, "/std/x").await;
    assert_eq!(status, 502, "{body}");
    assert!(
        mock.api_hits().is_empty(),
        "the expired token was not sent as a fallback"
    );
}

#[tokio::test]
async fn header_and_scheme_are_configurable() {
    let mock = MockProvider::start(Style::Standard).await;
    let echo = support::Echo::start().await;
    let config = standard_config(&mock, "header = \"X-Auth-Token\"\nscheme = \"\"").replace(
        &format!("upstream = \"{}/v1/\"", mock.base()),
        &format!("upstream = \"{}/v1/\"", echo.url()),
    );
    let proxy = start_proxy(&config).await;
    let r = client()
        .get(proxy.url("/std/x"))
        .header("authorization", "Bearer client-own")
        .header("x-auth-token", "client-own")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let last = echo.last();
    assert!(
        last.header("authorization").is_none(),
        "client Authorization dropped"
    );
    assert_eq!(last.headers["x-auth-token"].len(), 1);
    assert!(last.header("x-auth-token").unwrap().starts_with("at-1-"));
}

// Four workers on any machine: the 200 requests, the proxy and the token
// endpoint run in parallel, so the single flight is tested under real races.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_on_expired_token_make_one_token_request() {
    let mock = MockProvider::start(Style::OneCloud).await;
    mock.issue_seed("seed-1");
    let config = onecloud_config(&mock, r#"kind = "memory""#, "seed-1", "");
    let proxy = start_proxy(&config).await;
    assert_eq!(get(&proxy, "/one/warm").await.0, 200);
    mock.expire_all();
    // A slow token endpoint makes sure the requests pile up behind it.
    mock.set(|s| s.token_delay = Duration::from_millis(300));
    let c = client();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let c = c.clone();
            let url = proxy.url(&format!("/one/item/{i}"));
            tokio::spawn(async move { c.get(url).send().await.map(|r| r.status().as_u16()) })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap().unwrap() == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, 200, "every request succeeded");
    assert_eq!(
        mock.token_request_count(),
        2,
        "seed exchange + exactly one refresh"
    );
    assert!(!mock.reuse_detected());
}
