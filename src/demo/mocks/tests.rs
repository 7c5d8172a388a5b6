//! The mocks behave like the providers' docs say, checked over real HTTP.

use base64::Engine;
use serde_json::{json, Value};

use super::{MockProvider, Style, CLIENT_ID, CLIENT_SECRET, PASSWORD, USERNAME};

fn http() -> reqwest::Client {
    crate::install_crypto_provider();
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn post_json(mock: &MockProvider, body: Value) -> (u16, Value) {
    let r = http()
        .post(mock.token_url())
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn post_form(mock: &MockProvider, basic: Option<(&str, &str)>, form: &str) -> (u16, Value) {
    let mut req = http()
        .post(mock.token_url())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.to_string());
    if let Some((id, secret)) = basic {
        let raw = format!("{id}:{secret}");
        let b64 = base64::engine::general_purpose::STANDARD.encode(raw);
        req = req.header("authorization", format!("Basic {b64}"));
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn api(mock: &MockProvider, token: &str) -> reqwest::Response {
    http()
        .get(format!("{}/api/x", mock.base()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

fn refresh(rt: &str) -> Value {
    json!({"grant_type": "refresh_token", "client_id": CLIENT_ID, "refresh_token": rt})
}

#[tokio::test]
async fn onecloud_refresh_tokens_work_once_and_reuse_revokes_the_chain() {
    let mock = MockProvider::start(Style::OneCloud).await;
    mock.issue_seed("seed-1");
    mock.issue_seed("other-chain");
    let (status, first) = post_json(&mock, refresh("seed-1")).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["expires_in"], 3600);
    let next = first["refresh_token"].as_str().unwrap();
    let access = first["access_token"].as_str().unwrap();
    assert_eq!(api(&mock, access).await.status(), 200);

    // The seed again: reuse. Refused, echoing the token, and the chain
    // (its live successor and its access token) is revoked.
    let (status, answer) = post_json(&mock, refresh("seed-1")).await;
    assert_eq!(status, 400);
    assert_eq!(answer["error"], "invalid_grant");
    assert!(answer["error_description"]
        .as_str()
        .unwrap()
        .contains("seed-1"));
    assert!(mock.reuse_detected());
    assert_eq!(post_json(&mock, refresh(next)).await.0, 400);
    let r = api(&mock, access).await;
    assert_eq!(r.status(), 401);
    assert!(
        r.headers().get("x-api-revoked").is_none(),
        "OneCloud answers a plain 401"
    );
    // Another chain is not touched.
    assert_eq!(mock.live_refresh_tokens(), vec!["other-chain".to_string()]);
}

/// With a grace window, a spent refresh token is taken once more while
/// the pair its first answer carried is unused (that pair is superseded);
/// a second reuse, a reuse after the chain moved on, or one past the
/// window is detected as reuse.
#[tokio::test]
async fn onecloud_grace_window_takes_a_spent_token_once_while_its_answer_is_unused() {
    let mock = MockProvider::start(Style::OneCloud).await;
    mock.set(|s| s.rotation_grace = std::time::Duration::from_secs(60));
    mock.issue_seed("seed-g");
    let (_, lost) = post_json(&mock, refresh("seed-g")).await;
    // The answer is "lost": the seed is sent again within the window.
    let (status, again) = post_json(&mock, refresh("seed-g")).await;
    assert_eq!(status, 200, "{again}");
    assert!(!mock.reuse_detected());
    assert_eq!(mock.grace_reuses(), 1);
    // Only the newest pair is valid.
    let old_access = lost["access_token"].as_str().unwrap();
    assert_eq!(api(&mock, old_access).await.status(), 401);
    assert_eq!(
        post_json(&mock, refresh(lost["refresh_token"].as_str().unwrap()))
            .await
            .0,
        400
    );
    assert!(
        !mock.reuse_detected(),
        "a superseded token is refused, not a reuse"
    );
    // Once only: a third send of the seed is reuse.
    assert_eq!(post_json(&mock, refresh("seed-g")).await.0, 400);
    assert!(mock.reuse_detected());

    // A chain that moved on (its answer was used) gets no grace.
    let mock = MockProvider::start(Style::OneCloud).await;
    mock.set(|s| s.rotation_grace = std::time::Duration::from_secs(60));
    mock.issue_seed("seed-h");
    let (_, first) = post_json(&mock, refresh("seed-h")).await;
    assert_eq!(
        api(&mock, first["access_token"].as_str().unwrap())
            .await
            .status(),
        200
    );
    assert_eq!(post_json(&mock, refresh("seed-h")).await.0, 400);
    assert!(mock.reuse_detected());

    // Past the window: reuse, as without a grace.
    let mock = MockProvider::start(Style::OneCloud).await;
    mock.set(|s| s.rotation_grace = std::time::Duration::ZERO);
    mock.issue_seed("seed-i");
    assert_eq!(post_json(&mock, refresh("seed-i")).await.0, 200);
    assert_eq!(post_json(&mock, refresh("seed-i")).await.0, 400);
    assert!(mock.reuse_detected());
    assert_eq!(mock.grace_reuses(), 0);
}

#[tokio::test]
async fn json_only_endpoints_refuse_forms_echoing_the_body() {
    for style in [Style::Rips, Style::OneCloud] {
        let mock = MockProvider::start(style).await;
        let (status, answer) = post_form(&mock, None, "grant_type=password&password=p%2Fw").await;
        assert_eq!(status, 400);
        assert_eq!(answer["error"], "invalid_request");
        let text = answer["error_description"].as_str().unwrap();
        assert!(text.contains("password=p%2Fw"), "{text}");
    }
}

#[tokio::test]
async fn rips_issues_jwts_with_and_without_expires_in_and_refuses_with_headers() {
    let mock = MockProvider::start(Style::Rips).await;
    let login = json!({"grant_type": "password", "client_id": CLIENT_ID, "username": USERNAME, "password": PASSWORD});
    let (_, one) = post_json(&mock, login.clone()).await;
    let (_, two) = post_json(&mock, login).await;
    assert!(one.get("expires_in").is_none(), "{one}");
    assert_eq!(two["expires_in"], 3600);
    let access = one["access_token"].as_str().unwrap();
    assert_eq!(
        crate::oauth::token::jwt_exp(access).map(|e| e > super::now()),
        Some(true)
    );
    mock.expire_all();
    assert!(api(&mock, access)
        .await
        .headers()
        .contains_key("x-api-expired"));
    mock.revoke_all();
    assert!(api(&mock, access)
        .await
        .headers()
        .contains_key("x-api-revoked"));
    let wrong = json!({"grant_type": "password", "client_id": CLIENT_ID, "username": USERNAME, "password": "nope-7"});
    let (status, answer) = post_json(&mock, wrong).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert!(answer["error_description"]
        .as_str()
        .unwrap()
        .contains("nope-7"));
}

#[tokio::test]
async fn standard_takes_basic_or_body_client_auth_but_not_both() {
    let mock = MockProvider::start(Style::Standard).await;
    let (status, answer) = post_form(
        &mock,
        Some((CLIENT_ID, CLIENT_SECRET)),
        "grant_type=client_credentials",
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["expires_in"], "3600");
    assert!(answer.get("refresh_token").is_none());
    let body = format!(
        "grant_type=client_credentials&client_id={CLIENT_ID}&client_secret={CLIENT_SECRET}"
    );
    assert_eq!(post_form(&mock, None, &body).await.0, 200);
    let (status, answer) = post_form(&mock, Some((CLIENT_ID, CLIENT_SECRET)), &body).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("invalid_request"))
    );
    let (status, answer) = post_form(
        &mock,
        Some((CLIENT_ID, "guess-123")),
        "grant_type=client_credentials",
    )
    .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (401, Some("invalid_client"))
    );
    assert!(answer["error_description"]
        .as_str()
        .unwrap()
        .contains("guess-123"));
    // Password grant with a refresh token that is not rotated.
    let login = format!(
        "grant_type=password&username={}&password={PASSWORD}",
        url::form_urlencoded::byte_serialize(USERNAME.as_bytes()).collect::<String>()
    );
    let (status, answer) = post_form(&mock, Some((CLIENT_ID, CLIENT_SECRET)), &login).await;
    assert_eq!(status, 200, "{answer}");
    let rt = answer["refresh_token"].as_str().unwrap().to_string();
    for _ in 0..2 {
        let (status, answer) = post_form(
            &mock,
            Some((CLIENT_ID, CLIENT_SECRET)),
            &format!("grant_type=refresh_token&refresh_token={rt}"),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        assert!(answer.get("refresh_token").is_none());
    }
}

#[tokio::test]
async fn implicit_authorize_redirects_with_the_token_in_the_fragment() {
    let mock = MockProvider::start(Style::Implicit).await;
    let url = url::Url::parse_with_params(
        &mock.authorize_url(),
        [
            ("response_type", "token"),
            ("client_id", CLIENT_ID),
            ("redirect_uri", "http://127.0.0.1:1/cb"),
            ("state", "s 1"),
        ],
    )
    .unwrap();
    let r = http().get(url).send().await.unwrap();
    assert_eq!(r.status(), 302);
    let location = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(location.path(), "/cb");
    let fragment: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(location.fragment().unwrap().as_bytes())
            .into_owned()
            .collect();
    assert_eq!(fragment["state"], "s 1");
    assert_eq!(fragment["token_type"], "bearer");
    assert_eq!(api(&mock, &fragment["access_token"]).await.status(), 200);
    assert_eq!(api(&mock, "made-up").await.status(), 401);
}

#[tokio::test]
async fn injected_failures_are_html_pages_echoing_the_request() {
    let mock = MockProvider::start(Style::Standard).await;
    mock.set(|s| {
        s.fail_queue.push_back(503);
        s.retry_after = Some(7);
    });
    let r = http()
        .post(mock.token_url())
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials&client_secret=s3cr3t-9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "7");
    assert!(r.text().await.unwrap().contains("client_secret=s3cr3t-9"));
    assert_eq!(mock.stats()["token_requests"], 1);
}
