//! The implicit-grant login in a real headless browser (Debian's
//! chromium): login URL → mock authorize endpoint → callback page whose
//! script POSTs the URL fragment back → the proxy holds the token.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::Query;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use support::{client, start_proxy, Echo};

/// Debian's `chromium` (or Ubuntu's `chromium-browser`) found on `PATH`.
fn chromium() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|p| p.is_file())
}

#[tokio::test]
async fn implicit_login_in_headless_chromium() {
    let browser = chromium();
    if !support::require_tool(
        "chromium",
        browser.is_some(),
        "apt-get install chromium (.ci/run installs it)",
    ) {
        return;
    }
    let browser = browser.unwrap();
    // The provider's authorize endpoint: approves at once, like a user who
    // is already logged in, and returns the token in the fragment.
    let authorize = support::serve(Router::new().route(
        "/authorize",
        get(|Query(q): Query<HashMap<String, String>>| async move {
            assert_eq!(q["response_type"], "token");
            assert_eq!(q["client_id"], "browser-app");
            let location = format!(
                "{}#access_token=browser-token-1&token_type=bearer&expires_in=3600&state={}",
                q["redirect_uri"], q["state"]
            );
            (
                http::StatusCode::FOUND,
                [(http::header::LOCATION, location)],
            )
                .into_response()
        }),
    ))
    .await;
    let echo = Echo::start().await;
    let proxy = start_proxy(&format!(
        r#"
[store]
kind = "memory"
[providers.ready]
type = "oauth2"
grant = "implicit"
authorize_url = "http://{authorize}/authorize"
client_id = "browser-app"
scope = "order.read"
[[routes]]
prefix = "/ready/"
upstream = "{}/"
provider = "ready"
"#,
        echo.url()
    ))
    .await;
    assert_eq!(
        client()
            .get(proxy.url("/ready/x"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );

    let profile = tempfile::tempdir().unwrap();
    let run = tokio::process::Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=10000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(proxy.url("/_authproxy/login/ready"))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("chromium finished in time")
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains("data-result=\"ok\""),
        "callback page did not complete the login:\n{dom}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !dom.contains("browser-token-1"),
        "the page does not show the token"
    );

    let r = client()
        .get(proxy.url("/ready/orders"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        echo.last().header("authorization"),
        Some("Bearer browser-token-1")
    );
}
