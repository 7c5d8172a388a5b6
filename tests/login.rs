//! User-delegated logins the proxy keeps alive: the authorization code
//! with PKCE and the device flow, against node `oidc-provider` (a real,
//! OpenID-certified authorization server: it checks the PKCE verifier, the
//! client authentication, the redirect URI) and, for the polling errors it
//! never sends, the RFC 8628 mock of `src/demo/mocks/device.rs`.

mod support;

use std::time::Duration;

use authproxy::demo::mocks::device::{Answer, DeviceMock, DEVICE_CLIENT_ID};
use serde_json::Value;
use support::oidc::{Browser, Client, OidcConfig, OidcServer, Ttl, DEVICE_CODE_GRANT};
use support::{client, get_json, run_cli, start_proxy};

const SECRET: &str = "s3cret-for-oidc-provider-0123456789abcdef";

async fn get(proxy: &support::Proxy, path: &str) -> (u16, Value) {
    let resp = client().get(proxy.url(path)).send().await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

async fn provider_status(proxy: &support::Proxy, name: &str) -> Value {
    get_json(&client(), proxy.url("/_authproxy/status")).await["providers"][name].clone()
}

/// Polls the proxy's status (every 100 ms, at most `rounds` times) until
/// `done` holds for the provider's entry; returns it.
async fn status_until(
    proxy: &support::Proxy,
    name: &str,
    rounds: u32,
    done: impl Fn(&Value) -> bool,
) -> Value {
    for _ in 0..rounds {
        let s = provider_status(proxy, name).await;
        if done(&s) {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "status never got there: {}",
        provider_status(proxy, name).await
    );
}

/// Login → consent → callback → proxied request with the token → renewal
/// with the refresh token → refresh token revoked → `login_required` with
/// the login URL, in the 503 and in status.
#[tokio::test]
async fn authorization_code_with_pkce_end_to_end() {
    let config = OidcConfig {
        ttl: Ttl {
            access_token: Some(2),
            ..Ttl::default()
        },
        rotate_refresh_token: true,
        ..OidcConfig::with_clients([Client::new("web", "client_secret_basic")
            .secret(SECRET)
            .grants(&["authorization_code", "refresh_token"])
            // RFC 8252 §7.3: a native client's loopback redirect may use any port.
            .meta("application_type", "native")
            .redirect_uri("http://127.0.0.1/_authproxy/callback/op")])
    };
    let Some(op) = OidcServer::start(&config) else {
        return;
    };
    // A 2 s token is renewed in its second second (the renewal window is at
    // most half the lifetime).
    let proxy = start_proxy(&format!(
        r#"
[store]
kind = "memory"

[providers.op]
type = "oauth2"
grant = "authorization_code"
issuer = "{issuer}"
client_id = "web"
client_secret = "{SECRET}"
client_auth = "basic"
scope = "openid api:read"
refresh_before = "60s"

[[routes]]
prefix = "/api/"
upstream = "{api}/"
provider = "op"
"#,
        issuer = op.issuer(),
        api = op.resource(),
    ))
    .await;

    // Before any login: 503 with the login URL.
    let (status, body) = get(&proxy, "/api/me").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "login_required");
    let login_url = proxy.url("/_authproxy/login/op");
    assert_eq!(body["login_url"], login_url.as_str(), "{body}");
    assert_eq!(
        provider_status(&proxy, "op").await["state"],
        "login_required"
    );

    // The login page: 302 to the authorize endpoint with PKCE S256.
    let resp = client().get(&login_url).send().await.unwrap();
    assert_eq!(resp.status(), 302);
    assert_eq!(resp.headers()["x-frame-options"], "DENY");
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let authorize = url::Url::parse(&location).unwrap();
    let q: std::collections::HashMap<_, _> = authorize.query_pairs().into_owned().collect();
    assert!(location.starts_with(&op.url("/auth")), "{location}");
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["code_challenge"].len(), 43);
    assert_eq!(
        q["redirect_uri"],
        proxy.url("/_authproxy/callback/op").as_str()
    );

    // The user logs in and consents; the provider sends them back.
    let browser = Browser::new(&op);
    let back = browser.authorize(&location, "alice").await;
    assert!(
        back.as_str()
            .starts_with(&proxy.url("/_authproxy/callback/op")),
        "{back}"
    );
    // A forged state is refused and spends nothing.
    let mut forged = back.clone();
    let code = back
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .to_string();
    forged.set_query(Some(&format!("code={code}&state=forged")));
    let resp = client().get(forged.as_str()).send().await.unwrap();
    assert_eq!(resp.status(), 400);

    let resp = client().get(back.as_str()).send().await.unwrap();
    assert_eq!(resp.headers()["x-frame-options"], "DENY");
    let status = resp.status();
    let page = resp.text().await.unwrap();
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("data-result=\"ok\""), "{page}");
    // The state is single use.
    let resp = client().get(back.as_str()).send().await.unwrap();
    assert_eq!(resp.status(), 400);

    // The token reaches the resource server, which verifies it.
    let (status, me) = get(&proxy, "/api/me").await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["sub"], "alice");
    assert_eq!(me["client_id"], "web");
    let resp = client()
        .get(proxy.url("/_authproxy/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "ready once logged in");
    let grants = op.grants().await;
    let code_grant = grants
        .iter()
        .find(|g| g.grant_type.as_deref() == Some("authorization_code"))
        .expect("a code exchange");
    assert_eq!(
        code_grant.client_auth_method.as_deref(),
        Some("client_secret_basic")
    );
    assert!(code_grant.error.is_none(), "{:?}", code_grant.error);
    // Renewed with the (rotating) refresh token: requests go on until the
    // proxy has renewed twice, every one answered 200.
    let mut refreshes = 0;
    for _ in 0..100 {
        let (status, me) = get(&proxy, "/api/me").await;
        assert_eq!(status, 200, "{me}");
        refreshes = op
            .grants()
            .await
            .iter()
            .filter(|g| g.grant_type.as_deref() == Some("refresh_token") && g.error.is_none())
            .count();
        if refreshes >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(refreshes >= 2, "refresh grants: {refreshes}");
    let s = provider_status(&proxy, "op").await;
    assert_eq!(s["has_refresh_token"], true, "{s}");

    // The refresh token is revoked at the provider: the next renewal is
    // refused (invalid_grant) and the provider wants a login again.
    let refresh = proxy
        .state
        .store
        .load("op")
        .and_then(|t| t.refresh_token)
        .expect("stored refresh token");
    let resp = op
        .http()
        .post(op.revocation_url())
        .basic_auth("web", Some(SECRET))
        .form(&[
            ("token", refresh.expose()),
            ("token_type_hint", "refresh_token"),
        ])
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    // The access token (a JWT, not revocable) serves until its renewal.
    let mut last = (0, Value::Null);
    for _ in 0..100 {
        last = get(&proxy, "/api/me").await;
        if last.0 != 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, body) = last;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("login_required")),
        "{body}"
    );
    assert_eq!(body["login_url"], login_url.as_str());
    let s = provider_status(&proxy, "op").await;
    assert_eq!(s["state"], "login_required", "{s}");
    assert!(s["login_url"]
        .as_str()
        .unwrap()
        .ends_with("/_authproxy/login/op"));

    let metrics = client()
        .get(proxy.url("/_authproxy/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(
            "authproxy_logins_total{provider=\"op\",grant=\"authorization_code\",outcome=\"ok\"} 1"
        ),
        "{metrics}"
    );
}

/// The device flow against oidc-provider: the first request starts it and
/// gets the user code; the test plays the person; the proxy's polling
/// picks up the token.
#[tokio::test]
async fn device_flow_against_oidc_provider() {
    let config = OidcConfig {
        device_interval: Some(1),
        ..OidcConfig::with_clients([
            Client::new("tv", "none").grants(&[DEVICE_CODE_GRANT, "refresh_token"])
        ])
    };
    let Some(op) = OidcServer::start(&config) else {
        return;
    };
    let proxy = start_proxy(&format!(
        r#"
[store]
kind = "memory"

[providers.op]
type = "oauth2"
grant = "device_code"
issuer = "{issuer}"
client_id = "tv"
client_auth = "none"
scope = "openid api:read"

[[routes]]
prefix = "/api/"
upstream = "{api}/"
provider = "op"
"#,
        issuer = op.issuer(),
        api = op.resource(),
    ))
    .await;

    let (status, body) = get(&proxy, "/api/me").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("login_required")),
        "{body}"
    );
    assert_eq!(
        body["verification_uri"],
        op.url("/device").as_str(),
        "{body}"
    );
    let user_code = body["user_code"].as_str().unwrap().to_string();
    assert!(body["expires_in"].as_u64().unwrap() > 0);
    // A second request names the same flow (one per provider at a time).
    let (_, again) = get(&proxy, "/api/me").await;
    assert_eq!(again["user_code"], user_code.as_str());
    let s = provider_status(&proxy, "op").await;
    assert_eq!(s["state"], "login_required");
    assert_eq!(s["device_login"]["state"], "pending", "{s}");
    assert_eq!(s["device_login"]["user_code"], user_code.as_str());

    let page = Browser::new(&op).device(&user_code, "bob").await;
    assert!(page.contains("Sign-in Success"), "{page}");

    status_until(&proxy, "op", 300, |s| s["device_login"]["state"] == "ok").await;
    let (status, me) = get(&proxy, "/api/me").await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(
        (me["sub"].as_str(), me["client_id"].as_str()),
        (Some("bob"), Some("tv"))
    );
    let s = provider_status(&proxy, "op").await;
    assert_eq!(s["state"], "ok", "{s}");
    assert_eq!(s["has_refresh_token"], true, "{s}");
}

fn device_config(mock: &DeviceMock, extra_server: &str) -> String {
    format!(
        r#"
[server]
{extra_server}

[store]
kind = "memory"

[providers.dev]
type = "oauth2"
grant = "device_code"
device_authorization_url = "{device}"
token_url = "{token}"
client_id = "{DEVICE_CLIENT_ID}"
client_auth = "none"
scope = "read"

[[routes]]
prefix = "/api/"
upstream = "{api}"
provider = "dev"
"#,
        device = mock.url("/device"),
        token = mock.url("/token"),
        api = mock.url("/api/"),
    )
}

async fn start_device(proxy: &support::Proxy) -> Value {
    let resp = client()
        .post(proxy.url("/_authproxy/device/dev"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// `authorization_pending` twice, then `slow_down`: the interval grows by
/// 5 s (the mock would answer a poll sooner than its interval with another
/// `slow_down`, so exactly one means the proxy slowed down).
#[tokio::test]
async fn device_flow_polls_at_the_interval_and_slows_down() {
    let mock = DeviceMock::start(1).await;
    mock.script(&[
        Answer::Pending,
        Answer::Pending,
        Answer::SlowDown,
        Answer::Tokens,
    ]);
    let proxy = start_proxy(&device_config(&mock, "")).await;
    let started = start_device(&proxy).await;
    assert_eq!(
        started["verification_uri"],
        "https://device.example/activate"
    );
    assert_eq!(started["user_code"], mock.user_code().as_str());

    status_until(&proxy, "dev", 300, |s| s["device_login"]["state"] == "ok").await;
    let polls = mock.polls();
    let answers: Vec<Answer> = polls.iter().map(|(_, a)| *a).collect();
    assert_eq!(
        answers,
        [
            Answer::Pending,
            Answer::Pending,
            Answer::SlowDown,
            Answer::Tokens
        ],
        "a poll came sooner than the interval"
    );
    let gap = polls[3].0.duration_since(polls[2].0);
    assert!(gap >= Duration::from_secs(6), "after slow_down: {gap:?}");
    let (status, body) = get(&proxy, "/api/x").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(mock.flows(), 1);
}

#[tokio::test]
async fn device_flow_stops_on_access_denied_and_on_expired_token() {
    for (answer, outcome) in [(Answer::Denied, "denied"), (Answer::Expired, "expired")] {
        let mock = DeviceMock::start(1).await;
        mock.script(&[Answer::Pending, answer]);
        let proxy = start_proxy(&device_config(&mock, "")).await;
        start_device(&proxy).await;
        let s = status_until(&proxy, "dev", 300, |s| {
            s["device_login"]["state"] != "pending"
        })
        .await;
        assert_eq!(s["device_login"]["state"], outcome, "{s}");
        assert_eq!(s["state"], "login_required", "{s}");
        assert_eq!(mock.polls().len(), 2, "stopped polling");
        // A request now does not start a new flow at once (the outcome
        // stays visible); it is told to log in.
        let (status, body) = get(&proxy, "/api/x").await;
        assert_eq!(
            (status, body["error"].as_str()),
            (503, Some("login_required")),
            "{body}"
        );
        assert_eq!(mock.flows(), 1);
        let metrics = client()
            .get(proxy.url("/_authproxy/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains(&format!(
                "authproxy_logins_total{{provider=\"dev\",grant=\"device_code\",outcome=\"{outcome}\"}} 1"
            )),
            "{metrics}"
        );
    }
}

/// The device endpoint is refused to browsers like every state-changing one.
#[tokio::test]
async fn device_start_is_refused_to_browsers() {
    let mock = DeviceMock::start(1).await;
    let proxy = start_proxy(&device_config(&mock, "")).await;
    let resp = client()
        .post(proxy.url("/_authproxy/device/dev"))
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    assert_eq!(mock.flows(), 0);
}

/// `authproxy login` against a proxy with `inbound_token`: prints the
/// verification URI and the code, waits, exits 0 once logged in and 1 when
/// the person refuses.
#[tokio::test]
async fn login_command_runs_the_device_flow() {
    let mock = DeviceMock::start(1).await;
    let token = "inbound-token-for-the-login-test-0123456789";
    let proxy = start_proxy(&device_config(
        &mock,
        &format!("inbound_token = \"{token}\""),
    ))
    .await;
    let config = proxy.dir.path().join("authproxy.toml");
    let url = proxy.url("");
    let run = |config: std::path::PathBuf, url: String| {
        tokio::task::spawn_blocking(move || {
            run_cli(
                &[
                    "login",
                    "dev",
                    "--config",
                    config.to_str().unwrap(),
                    "--url",
                    &url,
                ],
                &[],
                std::path::Path::new("/"),
            )
        })
    };

    mock.approve_after(Duration::from_secs(2));
    let ready = |config: std::path::PathBuf, url: String| {
        tokio::task::spawn_blocking(move || {
            run_cli(
                &[
                    "health",
                    "--ready",
                    "--config",
                    config.to_str().unwrap(),
                    "--url",
                    &url,
                ],
                &[],
                std::path::Path::new("/"),
            )
            .0
        })
    };
    let ready_url = proxy.url("/_authproxy/ready");
    assert_eq!(
        ready(config.clone(), ready_url.clone()).await.unwrap(),
        1,
        "not ready before the login"
    );
    let (code, out, err) = run(config.clone(), url.clone()).await.unwrap();
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        ready(config.clone(), ready_url).await.unwrap(),
        0,
        "ready once logged in"
    );
    assert!(out.contains("https://device.example/activate"), "{out}");
    assert!(out.contains(&mock.user_code()), "{out}");
    assert!(out.contains("Logged in"), "{out}");
    let resp = client()
        .get(proxy.url("/api/x"))
        .header("proxy-authorization", format!("Bearer {token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    // A second login, which the person refuses.
    let mock2 = mock.clone();
    mock2.approve_after(Duration::from_secs(3600));
    mock2.script(&[Answer::Denied]);
    let (code, out, err) = run(config, url).await.unwrap();
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains("denied"), "{err}");
}
