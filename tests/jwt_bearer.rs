//! `grant = "jwt_bearer"` with a Google service-account key file, against
//! the Google-style mock (src/demo/mocks/google.rs), which verifies every
//! assertion with the account's public key and answers like Google:
//! `expires_in` 3599, no refresh token, `invalid_grant` with Google's
//! descriptions.

mod support;

use std::time::Duration;

use authproxy::demo::mocks::google::GoogleMock;
use authproxy::oauth::jwt::decode_unverified;
use serde_json::{json, Value};
use support::oidc::{generate_key, KeyFormat, KeyKind};
use support::{client, get_json, start_proxy_in};

const EMAIL: &str = "robot@demo-project.iam.gserviceaccount.example";
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

fn service_account(private_pem: &str, kid: &str, token_uri: &str) -> String {
    json!({
        "type": "service_account",
        "project_id": "demo-project",
        "private_key_id": kid,
        "private_key": private_pem,
        "client_email": EMAIL,
        "client_id": "108000000000000000000",
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "universe_domain": "googleapis.com",
    })
    .to_string()
}

fn config(api: &str) -> String {
    format!(
        r#"
[store]
kind = "memory"

[providers.gcp]
type = "oauth2"
grant = "jwt_bearer"
service_account_file = "sa.json"
scope = "{SCOPE}"

[[routes]]
prefix = "/gcp/"
upstream = "{api}/"
provider = "gcp"
"#
    )
}

async fn get(proxy: &support::Proxy, path: &str) -> (u16, Value) {
    let resp = client().get(proxy.url(path)).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

#[tokio::test]
async fn service_account_tokens_are_renewed_with_new_assertions() {
    if !support::oidc::available() {
        return;
    }
    let key = generate_key(KeyKind::Rsa, KeyFormat::Pkcs8, Some("sa-key-1"));
    let google = GoogleMock::start(EMAIL, &key.public_jwk).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sa.json"),
        service_account(&key.private_pem, "sa-key-1", &google.token_url()),
    )
    .unwrap();
    let proxy = start_proxy_in(&config(&google.base()), dir).await;

    let (status, body) = get(&proxy, "/gcp/v1/projects").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["path"], "/v1/projects");
    let status = get_json(&client(), proxy.url("/_authproxy/status")).await;
    let gcp = &status["providers"]["gcp"];
    assert_eq!(gcp["grant"], "jwt_bearer");
    assert_eq!(gcp["has_refresh_token"], false, "{status}");
    let expires_in = gcp["expires_in"].as_i64().unwrap();
    assert!((3590..=3599).contains(&expires_in), "{status}");

    // What Google verified: the claims of the service account, the scope
    // in the assertion, a short life.
    let first = &google.received()[0];
    assert_eq!(first.refused, None);
    let claims = first.claims.as_ref().unwrap();
    assert_eq!(claims["iss"], EMAIL);
    assert_eq!(claims["aud"], google.token_url());
    assert_eq!(claims["scope"], SCOPE);
    assert!(claims.get("sub").is_none());
    let (header, _) = decode_unverified(&first.assertion).unwrap();
    assert_eq!(
        (header["alg"].as_str(), header["kid"].as_str()),
        (Some("RS256"), Some("sa-key-1"))
    );
    let life = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    assert!(life <= 300, "exp at most 5 minutes ahead: {claims}");

    // A token the API no longer takes: no refresh token, so a new
    // assertion, and the request is replayed.
    google.revoke_all();
    let (status, body) = get(&proxy, "/gcp/v1/buckets").await;
    assert_eq!(status, 200, "{body}");
    // Short-lived tokens are renewed before they expire, each time with a
    // new assertion.
    google.set_lifetime(2);
    google.revoke_all();
    let (status, _) = get(&proxy, "/gcp/v1/a").await;
    assert_eq!(status, 200);
    let iat_before = google.received().last().unwrap().claims.as_ref().unwrap()["iat"]
        .as_u64()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, _) = get(&proxy, "/gcp/v1/b").await;
    assert_eq!(status, 200);

    let received = google.received();
    assert_eq!(received.len(), 4, "one assertion per token: {received:?}");
    assert!(received.iter().all(|r| r.refused.is_none()), "{received:?}");
    let jtis: std::collections::HashSet<_> = received
        .iter()
        .map(|r| {
            r.claims.as_ref().unwrap()["jti"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(jtis.len(), 4, "a new jti each time");
    let last_iat = received[3].claims.as_ref().unwrap()["iat"]
        .as_u64()
        .unwrap();
    assert!(last_iat > iat_before, "a new iat");

    // Nothing of the key or an assertion in status or metrics.
    let status = client()
        .get(proxy.url("/_authproxy/status"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let metrics = client()
        .get(proxy.url("/_authproxy/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for text in [&status, &metrics] {
        for r in &received {
            assert!(!text.contains(&r.assertion));
        }
        assert!(!text.contains(key.private_pem.lines().nth(1).unwrap()));
    }
}

#[tokio::test]
async fn a_signature_google_refuses_is_reauthentication_failed_with_its_reason() {
    if !support::oidc::available() {
        return;
    }
    let registered = generate_key(KeyKind::Rsa, KeyFormat::Pkcs8, Some("k"));
    let other = generate_key(KeyKind::Rsa, KeyFormat::Pkcs1, Some("k"));
    let google = GoogleMock::start(EMAIL, &registered.public_jwk).await;
    let dir = tempfile::tempdir().unwrap();
    // The file's key is not the one Google has.
    std::fs::write(
        dir.path().join("sa.json"),
        service_account(&other.private_pem, "k", &google.token_url()),
    )
    .unwrap();
    let proxy = start_proxy_in(&config(&google.base()), dir).await;
    let (status, body) = get(&proxy, "/gcp/v1/projects").await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"], "reauthentication_failed");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("invalid_grant (Invalid JWT Signature.)"),
        "{body}"
    );
    let received = google.received();
    assert_eq!(
        received.len(),
        1,
        "a refused grant is not retried: {received:?}"
    );
    assert!(!body.to_string().contains(&received[0].assertion));
    let status = get_json(&client(), proxy.url("/_authproxy/status")).await;
    assert_eq!(status["providers"]["gcp"]["state"], "error", "{status}");
}
