//! Real headless browser (Debian's chromium): the implicit-grant login
//! (login URL → mock authorize endpoint → callback page whose script POSTs
//! the URL fragment back → the proxy holds the token), and a hostile page
//! served through a pass-through route, which must not get to use or
//! replace the credentials; and the authorization-code login (PKCE) page.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use support::providers::{MockProvider, Style};
use support::{client, start_proxy, Echo};

/// Debian's `chromium` (or Ubuntu's `chromium-browser`) found on `PATH`.
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
        .find(|p| p.is_file())
}

/// Loads `url` in headless chromium, lets its scripts run (up to 10 s of
/// virtual time), and returns the DOM as it then is, and the browser's log.
async fn dump_dom(browser: &Path, url: &str) -> (String, String) {
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
        .arg(url)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("chromium finished in time")
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Whether the test may go on: chromium is there, or may be missing.
fn have_chromium() -> Option<PathBuf> {
    let browser = chromium();
    if !support::require_tool(
        "chromium",
        browser.is_some(),
        "apt-get install chromium (.ci/run installs it)",
    ) {
        return None;
    }
    browser
}

#[tokio::test]
async fn implicit_login_in_headless_chromium() {
    let Some(browser) = have_chromium() else {
        return;
    };
    // The provider's authorize endpoint (the mock ReadyCloud): approves at
    // once, like a user who is already logged in, and returns the token in
    // the fragment.
    let provider = MockProvider::start(Style::Implicit).await;
    provider.set(|s| s.client_id = "browser-app".into());
    let echo = Echo::start().await;
    let proxy = start_proxy(&format!(
        r#"
[store]
kind = "memory"
[providers.ready]
type = "oauth2"
grant = "implicit"
authorize_url = "{authorize}"
client_id = "browser-app"
scope = "order.read"
[[routes]]
prefix = "/ready/"
upstream = "{}/"
provider = "ready"
"#,
        echo.url(),
        authorize = provider.authorize_url(),
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

    let (dom, stderr) = dump_dom(&browser, &proxy.url("/_authproxy/login/ready")).await;
    assert!(
        dom.contains("data-result=\"ok\""),
        "callback page did not complete the login:\n{dom}\n{stderr}"
    );
    let authorized = provider.token_requests();
    assert_eq!(authorized.len(), 1, "{authorized:?}");
    assert_eq!(authorized[0].fields["response_type"], "token");
    let tokens = provider.access_tokens();
    assert_eq!(tokens.len(), 1, "one token handed out");
    let token = &tokens[0];
    assert!(
        !dom.contains(token.as_str()),
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
        Some(format!("Bearer {token}").as_str())
    );
}

/// The page an attacker gets served through a pass-through route (so it
/// runs in the proxy's own origin): it fetches a credential route and the
/// status, posts its own tokens for the provider, loads a credential route
/// as an image from another site's name for the proxy (`localhost`), and
/// writes each outcome into the DOM.
const HOSTILE_PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>hostile</title></head>
<body>
<script>
(async function () {
  async function attempt(name, url, init) {
    var outcome;
    try {
      var r = await fetch(url, init);
      var text = await r.text();
      var code = "";
      try { code = JSON.parse(text).error || ""; } catch (e) {}
      outcome = r.status + " " + code;
    } catch (e) {
      outcome = "failed " + e;
    }
    document.body.setAttribute("data-" + name, outcome);
  }
  await attempt("credential", "/cred/data");
  await attempt("status", "/_authproxy/status");
  await attempt("tokens", "/_authproxy/tokens/p", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ access_token: "ATTACKER", refresh_token: "ATTACKER-R" })
  });
  await new Promise(function (done) {
    var img = new Image();
    img.onload = function () { document.body.setAttribute("data-image", "loaded"); done(); };
    img.onerror = function () { document.body.setAttribute("data-image", "error"); done(); };
    img.src = "http://localhost:{port}/cred/pixel.png";
  });
  document.body.setAttribute("data-done", "yes");
})();
</script>
</body></html>
"#;

/// Issue 13 item 1, end to end in chromium: a page served through the
/// pass-through route `/plain/` cannot use the credential route, read the
/// status or replace the provider's tokens; a cross-site image of the
/// credential route is refused too. The credential upstream sees nothing,
/// the provider keeps its token.
#[tokio::test]
async fn page_served_through_a_route_cannot_use_the_credentials() {
    let Some(browser) = have_chromium() else {
        return;
    };
    let cred = Echo::start().await;
    let closed = support::ClosedPort::new();
    // The page's server; it learns the proxy's port once the proxy runs.
    let port = Arc::new(std::sync::OnceLock::<u16>::new());
    let p = port.clone();
    let pages = support::serve(Router::new().route(
        "/page.html",
        get(move || {
            let page = HOSTILE_PAGE.replace("{port}", &p.get().unwrap().to_string());
            async move {
                (
                    [(http::header::CONTENT_TYPE, "text/html; charset=utf-8")],
                    page,
                )
            }
        }),
    ))
    .await;
    let proxy = start_proxy(&format!(
        r#"
[providers.p]
type = "oauth2"
grant = "refresh_token"
token_url = "http://127.0.0.1:{}/token"
client_id = "c"
refresh_token = "GOOD-R"
access_token = "GOOD-ACCESS"
[[routes]]
prefix = "/cred/"
upstream = "{}/"
provider = "p"
[[routes]]
prefix = "/plain/"
upstream = "http://{pages}/"
"#,
        closed.port(),
        cred.url()
    ))
    .await;
    port.set(proxy.addr.port()).unwrap();
    let store = proxy.dir.path().join("state/tokens.json");
    let stored = std::fs::read(&store).ok();

    let (dom, stderr) = dump_dom(&browser, &proxy.url("/plain/page.html")).await;
    assert!(
        dom.contains("data-done=\"yes\""),
        "the page did not finish:\n{dom}\n{stderr}"
    );
    for (name, outcome) in [
        ("credential", "403 forbidden_browser"),
        ("status", "403 forbidden_browser"),
        ("tokens", "403 forbidden_browser"),
        ("image", "error"),
    ] {
        assert!(
            dom.contains(&format!("data-{name}=\"{outcome}\"")),
            "{name}: expected {outcome}:\n{dom}"
        );
    }
    assert_eq!(
        cred.count(),
        0,
        "the credential upstream was contacted: {:?}",
        cred.requests.lock().unwrap()
    );
    assert_eq!(
        std::fs::read(&store).ok(),
        stored,
        "the token store changed"
    );
    // The provider still injects its own token.
    let r = client().get(proxy.url("/cred/after")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        cred.last().header("authorization"),
        Some("Bearer GOOD-ACCESS")
    );
}

/// An authorization server that approves at once (a user already logged
/// in): `/authorize` redirects back with a code bound to the PKCE
/// challenge and redirect URI it was asked with; `/token` gives a token
/// only for that code, redirect URI and a verifier whose S256 hash is the
/// challenge (RFC 7636 §4.6: the receiving side checks the proof).
fn code_server(issued: Arc<std::sync::Mutex<Vec<String>>>) -> Router {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use sha2::Digest;
    type Codes = Arc<std::sync::Mutex<Vec<(String, String, String)>>>;
    let codes: Codes = Arc::default();
    let at_authorize = codes.clone();
    Router::new()
        .route(
            "/authorize",
            get(move |q: axum::extract::RawQuery| {
                let codes = at_authorize.clone();
                async move {
                    let q: std::collections::HashMap<String, String> =
                        url::form_urlencoded::parse(q.0.unwrap_or_default().as_bytes())
                            .into_owned()
                            .collect();
                    assert_eq!(q["response_type"], "code");
                    assert_eq!(q["code_challenge_method"], "S256");
                    let code = format!("code-{}", rand::random::<u64>());
                    codes.lock().unwrap().push((
                        code.clone(),
                        q["code_challenge"].clone(),
                        q["redirect_uri"].clone(),
                    ));
                    let mut back = url::Url::parse(&q["redirect_uri"]).unwrap();
                    back.query_pairs_mut()
                        .append_pair("code", &code)
                        .append_pair("state", &q["state"]);
                    (
                        http::StatusCode::FOUND,
                        [(http::header::LOCATION, back.to_string())],
                    )
                }
            }),
        )
        .route(
            "/token",
            axum::routing::post(move |body: String| {
                let codes = codes.clone();
                let issued = issued.clone();
                async move {
                    let f: std::collections::HashMap<String, String> =
                        url::form_urlencoded::parse(body.as_bytes())
                            .into_owned()
                            .collect();
                    let mut codes = codes.lock().unwrap();
                    let found = codes.iter().position(|(code, challenge, redirect)| {
                        f.get("code") == Some(code)
                            && f.get("redirect_uri") == Some(redirect)
                            && f.get("code_verifier").is_some_and(|v| {
                                URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(v.as_bytes()))
                                    == *challenge
                            })
                    });
                    let Some(i) = found.filter(|_| f["grant_type"] == "authorization_code") else {
                        return (
                            http::StatusCode::BAD_REQUEST,
                            axum::Json(serde_json::json!({"error": "invalid_grant"})),
                        );
                    };
                    codes.remove(i);
                    let token = format!("code-token-{}", rand::random::<u64>());
                    issued.lock().unwrap().push(token.clone());
                    (
                        http::StatusCode::OK,
                        axum::Json(serde_json::json!({
                            "access_token": token, "token_type": "Bearer",
                            "expires_in": 3600, "refresh_token": "r-1"
                        })),
                    )
                }
            }),
        )
}

/// The authorization-code login page end to end in chromium: login URL →
/// authorize (PKCE S256) → callback (the proxy exchanges the code with the
/// verifier) → "logged in" page; the proxy then injects the token.
#[tokio::test]
async fn authorization_code_login_in_headless_chromium() {
    let Some(browser) = have_chromium() else {
        return;
    };
    let issued: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let server = support::serve(code_server(issued.clone())).await;
    let echo = Echo::start().await;
    let proxy = start_proxy(&format!(
        r#"
[store]
kind = "memory"
[providers.crm]
type = "oauth2"
grant = "authorization_code"
authorize_url = "http://{server}/authorize"
token_url = "http://{server}/token"
client_id = "browser-app"
client_auth = "none"
scope = "crm.read"
[[routes]]
prefix = "/crm/"
upstream = "{}/"
provider = "crm"
"#,
        echo.url(),
    ))
    .await;
    let (dom, stderr) = dump_dom(&browser, &proxy.url("/_authproxy/login/crm")).await;
    assert!(
        dom.contains("data-result=\"ok\""),
        "the callback did not complete the login:\n{dom}\n{stderr}"
    );
    let tokens = issued.lock().unwrap().clone();
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert!(!dom.contains(tokens[0].as_str()), "the page shows no token");
    let r = client().get(proxy.url("/crm/deals")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        echo.last().header("authorization"),
        Some(format!("Bearer {}", tokens[0]).as_str())
    );
}
