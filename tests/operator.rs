//! Operator surface: status and metrics, implicit-grant login, pasted
//! tokens, SIGHUP reload, and the demo.

mod support;

use std::time::Duration;

use support::providers::{MockProvider, Style, CLIENT_ID, CLIENT_SECRET, PASSWORD, USERNAME};
use support::{client, start_proxy, Echo, ProxyProcess};

const STATIC_SECRET: &str = "static-SECRET-token-9";
const PAIR_SECRET: &str = "pair-SECRET-password-8";
const SEED_SECRET: &str = "seed-SECRET-refresh-7";
const PASTED_SECRET: &str = "pasted-SECRET-access-6";

fn implicit_provider(authorize_url: &str) -> String {
    format!(
        r#"
[providers.ready]
type = "oauth2"
grant = "implicit"
authorize_url = "{authorize_url}"
client_id = "ready-app"
scope = "order.read"
"#
    )
}

async fn json(url: String) -> serde_json::Value {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Status lists every provider with its state and holds none of the
/// config's secrets nor any token; metrics count what happened.
#[tokio::test]
async fn status_and_metrics_show_everything_but_secrets() {
    let echo = Echo::start().await;
    let rips = MockProvider::start(Style::Rips).await;
    let one = MockProvider::start(Style::OneCloud).await;
    one.issue_seed(SEED_SECRET);
    let std_mock = MockProvider::start(Style::Standard).await;
    let config = format!(
        r#"
[store]
kind = "memory"
[providers.ri]
type = "static"
headers = {{ Authorization = "Token {STATIC_SECRET}" }}
[providers.pair]
type = "static"
headers = {{ "X-API-Email" = "{USERNAME}", "X-API-Password" = "{PAIR_SECRET}" }}
[providers.rips]
type = "oauth2"
grant = "password"
token_url = "{rips_token}"
body = "json"
client_id = "{CLIENT_ID}"
username = "{USERNAME}"
password = "{PASSWORD}"
[providers.one]
type = "oauth2"
grant = "refresh_token"
token_url = "{one_token}"
body = "json"
client_id = "{CLIENT_ID}"
refresh_token = "{SEED_SECRET}"
[providers.std]
type = "oauth2"
grant = "client_credentials"
token_url = "{std_token}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
client_auth = "basic"
{implicit}
[[routes]]
prefix = "/ri/"
upstream = "{echo}/"
provider = "ri"
[[routes]]
prefix = "/pair/"
upstream = "{echo}/"
provider = "pair"
[[routes]]
prefix = "/rips/"
upstream = "{rips}/api/"
provider = "rips"
[[routes]]
prefix = "/one/"
upstream = "{one}/api/"
provider = "one"
[[routes]]
prefix = "/std/"
upstream = "{std}/v1/"
provider = "std"
[[routes]]
prefix = "/ready/"
upstream = "{echo}/"
provider = "ready"
"#,
        rips_token = rips.token_url(),
        one_token = one.token_url(),
        std_token = std_mock.token_url(),
        implicit = implicit_provider("https://ready.example/authorize"),
        echo = echo.url(),
        rips = rips.base(),
        one = one.base(),
        std = std_mock.base(),
    );
    let proxy = start_proxy(&config).await;
    let c = client();
    for path in ["/ri/a", "/pair/b", "/rips/c", "/one/d", "/std/e"] {
        assert_eq!(
            c.get(proxy.url(path)).send().await.unwrap().status(),
            200,
            "{path}"
        );
    }
    rips.expire_all();
    assert_eq!(
        c.get(proxy.url("/rips/again"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let r = c.get(proxy.url("/ready/x")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "login_required");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("/_authproxy/login/ready"),
        "{body}"
    );
    let r = c
        .post(proxy.url("/_authproxy/tokens/ready"))
        .json(&serde_json::json!({"access_token": PASTED_SECRET, "expires_in": 600}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        c.get(proxy.url("/ready/x")).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        echo.last().header("authorization"),
        Some(format!("Bearer {PASTED_SECRET}").as_str())
    );

    let status_text = c
        .get(proxy.url("/_authproxy/status"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let status: serde_json::Value = serde_json::from_str(&status_text).unwrap();
    let p = &status["providers"];
    assert_eq!(p["ri"]["type"], "static");
    assert_eq!(p["ri"]["state"], "ok");
    assert_eq!(p["rips"]["grant"], "password");
    assert_eq!(p["rips"]["state"], "ok");
    assert_eq!(p["rips"]["renewals"], 2);
    assert_eq!(p["rips"]["last_renewal_reason"], "x_api_expired");
    assert_eq!(p["one"]["grant"], "refresh_token");
    assert!(p["one"]["expires_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(p["ready"]["state"], "ok");
    assert_eq!(p["ready"]["login_url"], "/_authproxy/login/ready");

    let mut secrets = vec![
        STATIC_SECRET.to_string(),
        PAIR_SECRET.into(),
        SEED_SECRET.into(),
        PASTED_SECRET.into(),
        PASSWORD.into(),
        CLIENT_SECRET.into(),
    ];
    for m in [&rips, &one, &std_mock] {
        for h in m.api_hits() {
            secrets.extend(h.token.map(|t| t.rsplit('.').next().unwrap().to_string()));
        }
        for r in m.token_requests() {
            secrets.extend(r.fields.get("refresh_token").cloned());
        }
    }
    let metrics = c
        .get(proxy.url("/_authproxy/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for s in &secrets {
        assert!(!status_text.contains(s.as_str()), "status leaks {s}");
        assert!(!metrics.contains(s.as_str()), "metrics leak {s}");
    }
    for line in [
        "authproxy_requests_total{route=\"/rips/\",status=\"200\"} 2",
        "authproxy_requests_total{route=\"/ready/\",status=\"503\"} 1",
        "authproxy_token_requests_total{provider=\"rips\",grant=\"password\",outcome=\"ok\"} 1",
        "authproxy_token_requests_total{provider=\"rips\",grant=\"refresh_token\",outcome=\"ok\"} 1",
        "authproxy_reauthentications_total{provider=\"rips\",reason=\"initial\"} 1",
        "authproxy_reauthentications_total{provider=\"rips\",reason=\"x_api_expired\"} 1",
        "authproxy_replays_total{provider=\"rips\"} 1",
        "authproxy_store_write_failures_total 0",
        "authproxy_upstream_latency_seconds_count{route=\"/ri/\"} 1",
    ] {
        assert!(metrics.contains(line), "missing `{line}` in:\n{metrics}");
    }
}

/// The browser flow without a browser: login → authorize URL with a fresh
/// state; the callback page; posting the fragment back with that state.
#[tokio::test]
async fn implicit_login_state_checked_and_token_used() {
    let echo = Echo::start().await;
    let config = format!(
        "[store]\nkind = \"memory\"\n{}\n[[routes]]\nprefix = \"/ready/\"\nupstream = \"{}/\"\nprovider = \"ready\"\n",
        implicit_provider("https://ready.example/oauth2/authorize?tenant=t1"),
        echo.url()
    );
    let proxy = start_proxy(&config).await;
    let c = client();
    let r = c
        .get(proxy.url("/_authproxy/login/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let location = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(location.host_str(), Some("ready.example"));
    let q: std::collections::HashMap<String, String> =
        location.query_pairs().into_owned().collect();
    assert_eq!(q["tenant"], "t1", "existing query kept");
    assert_eq!(q["response_type"], "token");
    assert_eq!(q["client_id"], "ready-app");
    assert_eq!(q["scope"], "order.read");
    assert_eq!(q["redirect_uri"], proxy.url("/_authproxy/callback/ready"));
    let state = q["state"].clone();

    let page = c
        .get(proxy.url("/_authproxy/callback/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(page.text().await.unwrap().contains("location.hash"));

    let post = |body: serde_json::Value| {
        let c = c.clone();
        let url = proxy.url("/_authproxy/callback/ready");
        async move { c.post(url).json(&body).send().await.unwrap() }
    };
    let bad = post(serde_json::json!({"access_token": "tok-1", "state": "forged"})).await;
    assert_eq!(bad.status(), 400);
    assert_eq!(
        c.get(proxy.url("/ready/x")).send().await.unwrap().status(),
        503
    );
    let good =
        post(serde_json::json!({"access_token": "tok-1", "expires_in": 3600, "state": state}))
            .await;
    assert_eq!(good.status(), 200);
    let again = post(serde_json::json!({"access_token": "tok-2", "state": state})).await;
    assert_eq!(again.status(), 400, "a state is single use");
    assert_eq!(
        c.get(proxy.url("/ready/x")).send().await.unwrap().status(),
        200
    );
    assert_eq!(echo.last().header("authorization"), Some("Bearer tok-1"));
}

/// An implicit token the upstream refuses sends the provider back to
/// login_required; pasted tokens are JSON only with known fields.
#[tokio::test]
async fn implicit_token_refused_goes_back_to_login_required() {
    let api = support::serve(
        axum::Router::new().fallback(|| async { (http::StatusCode::UNAUTHORIZED, "no") }),
    )
    .await;
    let config = format!(
        "[store]\nkind = \"memory\"\n{}\n[[routes]]\nprefix = \"/ready/\"\nupstream = \"http://{api}/\"\nprovider = \"ready\"\n",
        implicit_provider("https://ready.example/authorize"),
    );
    let proxy = start_proxy(&config).await;
    let c = client();
    let form = c
        .post(proxy.url("/_authproxy/tokens/ready"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("access_token=x")
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 400, "JSON only");
    let unknown = c
        .post(proxy.url("/_authproxy/tokens/ready"))
        .json(&serde_json::json!({"access_token": "x", "acess_token_typo": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        unknown.status(),
        400,
        "unknown fields are not dropped silently"
    );
    let ok = c
        .post(proxy.url("/_authproxy/tokens/ready"))
        .json(&serde_json::json!({"access_token": "will-be-refused"}))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let r = c.get(proxy.url("/ready/x")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let status = json(proxy.url("/_authproxy/status")).await;
    assert_eq!(status["providers"]["ready"]["state"], "login_required");
}

fn reload_config(echo: &Echo, rips: &MockProvider, extra_route: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
[store]
kind = "memory"
[providers.rips]
type = "oauth2"
grant = "password"
token_url = "{}"
body = "json"
client_id = "{CLIENT_ID}"
username = "{USERNAME}"
password = "{PASSWORD}"
[[routes]]
prefix = "/rips/"
upstream = "{}/api/"
provider = "rips"
{extra_route}
"#,
        rips.token_url(),
        rips.base()
    )
    .replace("ECHO", &echo.url())
}

/// SIGHUP: a good config swaps routes atomically and keeps the tokens of
/// unchanged providers; a bad one is logged and the old one kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_good_config_and_ignores_bad_one() {
    let echo = Echo::start().await;
    let rips = MockProvider::start(Style::Rips).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("authproxy.toml");
    std::fs::write(&path, reload_config(&echo, &rips, "")).unwrap();
    let proxy = ProxyProcess::start(&path, &[]);
    let c = client();
    assert_eq!(
        c.get(proxy.url("/rips/a")).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        c.get(proxy.url("/new/a")).send().await.unwrap().status(),
        404
    );

    std::fs::write(
        &path,
        reload_config(
            &echo,
            &rips,
            "[[routes]]\nprefix = \"/new/\"\nupstream = \"ECHO/\"\n",
        ),
    )
    .unwrap();
    proxy.signal("HUP");
    let mut reloaded = false;
    for _ in 0..200 {
        if c.get(proxy.url("/new/a")).send().await.unwrap().status() == 200 {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(reloaded, "new route live after SIGHUP:\n{}", proxy.log());
    assert_eq!(
        c.get(proxy.url("/rips/b")).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        rips.token_request_count(),
        1,
        "unchanged provider kept its token"
    );

    std::fs::write(
        &path,
        "[[routes]]\nprefix = \"/x/\"\nupstream = \"http://10.1.1.1/\"\nbogus = 1\n",
    )
    .unwrap();
    proxy.signal("HUP");
    let logged = support::eventually(Duration::from_secs(10), || {
        proxy.log().contains("reload refused")
    })
    .await;
    assert!(logged, "{}", proxy.log());
    assert_eq!(
        c.get(proxy.url("/new/b")).send().await.unwrap().status(),
        200,
        "old config kept"
    );
    assert_eq!(
        c.get(proxy.url("/rips/c")).send().await.unwrap().status(),
        200
    );
    proxy.signal("TERM");
    let (code, _) = proxy.wait();
    assert_eq!(code, Some(0));
}

/// The README's first command: every curl line of the demo works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_every_provider_style() {
    let demo = ProxyProcess::spawn(
        &["demo", "--listen", "127.0.0.1:0"],
        &[("RUST_LOG", "info")],
    );
    let c = client();
    let get = |path: &str| {
        let c = c.clone();
        let url = demo.url(path);
        async move {
            let r = c.get(url).send().await.unwrap();
            (
                r.status().as_u16(),
                r.json::<serde_json::Value>().await.unwrap(),
            )
        }
    };
    for (path, api) in [
        ("/ricloud/devices", "ricloud"),
        ("/rips-plain/scans", "rips-plain"),
        ("/rips/scans", "rips"),
        ("/onecloud/devices", "onecloud"),
    ] {
        let (status, body) = get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body["api"], api);
    }
    // The guide's forward-proxy line: curl with --proxy and the demo's CA
    // (its path is in the log line that says it was made).
    let log = demo.log();
    let ca = log
        .split("ca_cert=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no CA in the log: {log}"))
        .trim_matches('"')
        .to_string();
    let proxy_url = demo.url("");
    let out = tokio::process::Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "60",
            "--proxy",
            &proxy_url,
            "--cacert",
            &ca,
        ])
        .arg("https://api.ricloud.test/devices")
        .output()
        .await
        .expect("curl runs");
    let body: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(body["api"], "ricloud", "{body}");
    for action in ["expire", "revoke"] {
        let r = c
            .post(demo.url(&format!("/demo-admin/rips/{action}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(get("/rips/scans").await.0, 200, "after {action}");
    }
    assert_eq!(get("/readycloud/orders").await.0, 503);
    // Follow the login redirect chain like a browser up to the callback.
    let r = c
        .get(demo.url("/_authproxy/login/readycloud"))
        .send()
        .await
        .unwrap();
    let authorize = r.headers()["location"].to_str().unwrap().to_string();
    let r = c.get(&authorize).send().await.unwrap();
    let callback = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    let fragment: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(callback.fragment().unwrap().as_bytes())
            .into_owned()
            .collect();
    let r = c
        .post(demo.url("/_authproxy/callback/readycloud"))
        .json(&serde_json::json!({
            "access_token": fragment["access_token"],
            "expires_in": fragment["expires_in"].parse::<u64>().unwrap(),
            "state": fragment["state"],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(get("/readycloud/orders").await.0, 200);
    let status = json(demo.url("/_authproxy/status")).await;
    assert_eq!(
        status["providers"]["rips"]["last_renewal_reason"],
        "x_api_revoked"
    );
    assert_eq!(status["providers"]["rips"]["renewals"], 3);
    demo.signal("INT");
    let (code, log) = demo.wait();
    assert_eq!(code, Some(0));
    assert!(log.contains("token renewed"), "{log}");
}
