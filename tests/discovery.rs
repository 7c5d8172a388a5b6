//! Discovery that fails at start: the proxy starts anyway, the provider
//! says `error` with the reason, requests get `502` naming it, and once
//! the issuer answers the provider recovers without a restart.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::{Json, Router};
use http::StatusCode;
use serde_json::{json, Value};
use support::{client, get_json, serve, start_proxy, Echo};

#[tokio::test]
async fn a_provider_whose_issuer_is_down_at_start_recovers_when_it_answers() {
    let up = Arc::new(AtomicBool::new(false));
    let fetches = Arc::new(AtomicUsize::new(0));
    // The issuer is known only once it listens: a router that reads its
    // own address from a cell set after binding.
    let issuer: Arc<std::sync::OnceLock<String>> = Arc::default();
    let (up2, fetches2, issuer2) = (up.clone(), fetches.clone(), issuer.clone());
    let metadata = move || {
        let (up, fetches, issuer) = (up2.clone(), fetches2.clone(), issuer2.clone());
        async move {
            fetches.fetch_add(1, Ordering::SeqCst);
            if !up.load(Ordering::SeqCst) {
                return Err(StatusCode::SERVICE_UNAVAILABLE);
            }
            let issuer = issuer.get().unwrap().clone();
            Ok(Json(json!({
                "issuer": issuer,
                "token_endpoint": format!("{issuer}/oauth/token"),
                "authorization_endpoint": format!("{issuer}/authorize"),
            })))
        }
    };
    let router = Router::new()
        .route("/.well-known/openid-configuration", get(metadata))
        .route(
            "/oauth/token",
            post(|| async {
                Json(json!({"access_token": "discovered-token", "token_type": "Bearer", "expires_in": 3600}))
            }),
        );
    let addr = serve(router).await;
    issuer.set(format!("http://{addr}")).unwrap();
    let issuer = issuer.get().unwrap().clone();
    let echo = Echo::start().await;
    let proxy = start_proxy(&format!(
        r#"
[store]
kind = "memory"

[providers.disc]
type = "oauth2"
grant = "client_credentials"
issuer = "{issuer}"
client_id = "app"
client_secret = "disc-SECRET-1"

[[routes]]
prefix = "/api/"
upstream = "{echo}/"
provider = "disc"
"#,
        echo = echo.url(),
    ))
    .await;

    // The background discovery fails (every try a 503) and says so.
    let status_url = proxy.url("/_authproxy/status");
    let mut status = Value::Null;
    for _ in 0..3000 {
        status = get_json(&client(), status_url.clone()).await;
        if status["providers"]["disc"]["state"] == "error" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let disc = &status["providers"]["disc"];
    assert_eq!(disc["state"], "error", "{status}");
    assert_eq!(disc["last_error"]["code"], "discovery_failed", "{status}");
    let message = disc["last_error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("discovery of issuer {issuer} failed"))
            && message.contains("/.well-known/openid-configuration: HTTP 503"),
        "{message}"
    );
    assert_eq!(disc["discovered"]["token_endpoint"], Value::Null);

    let resp = client().get(proxy.url("/api/x")).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "token_endpoint_error", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("discovery of issuer"),
        "{body}"
    );
    assert_eq!(echo.count(), 0);

    // The issuer comes back: a later request discovers and gets through.
    up.store(true, Ordering::SeqCst);
    let mut last = 0;
    for _ in 0..3000 {
        let resp = client().get(proxy.url("/api/x")).send().await.unwrap();
        last = resp.status().as_u16();
        if last == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(last, 200);
    assert_eq!(
        echo.last().header("authorization"),
        Some("Bearer discovered-token")
    );
    let status = get_json(&client(), status_url).await;
    let disc = &status["providers"]["disc"];
    assert_eq!(disc["state"], "ok", "{status}");
    assert_eq!(
        disc["discovered"]["token_endpoint"],
        format!("{issuer}/oauth/token")
    );
    assert!(fetches.load(Ordering::SeqCst) >= 2);
}
