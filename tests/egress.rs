//! The egress proxy: nothing goes through a proxy the config did not name
//! (the environment's `HTTP_PROXY` & co. are ignored), and with
//! `server.egress_proxy` token requests and upstream requests alike go
//! through it (absolute form for http, `CONNECT` for https) with its
//! `Proxy-Authorization`, except loopback and `no_proxy` hosts. Checked
//! against a recording proxy on loopback that resolves `*.example.test` to
//! 127.0.0.1, as a real proxy resolves the names it is given.

mod support;

use std::path::Path;

use support::egress_proxy::{basic, RecordingProxy, TlsEcho};
use support::oidc::TestPki;
use support::providers::{MockProvider, Style, CLIENT_ID, CLIENT_SECRET};
use support::{client, get_json, run_cli, start_proxy, Echo, ProxyProcess};

const USER: &str = "egress-user";
const PASSWORD: &str = "egress-pw-SECRET-7";

/// A client_credentials provider with HTTP Basic client authentication
/// (the issue's reproduction: `authorization: Basic …` to the token URL).
fn std_provider(token_url: &str) -> String {
    format!(
        r#"
[providers.std]
type = "oauth2"
grant = "client_credentials"
token_url = "{token_url}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
client_auth = "basic"
allow_http = true
"#
    )
}

/// `http://<name>:<port of addr>`: a name only the egress proxy can resolve.
fn named(name: &str, addr: std::net::SocketAddr) -> String {
    format!("http://{name}:{}", addr.port())
}

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("authproxy.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn status_of(url: String) -> u16 {
    client().get(url).send().await.unwrap().status().as_u16()
}

/// Today's bug: with `HTTP_PROXY` set, the token request to a loopback
/// http token URL went to that proxy, client secret included. Now no
/// variable of the environment moves any connection; one line says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_proxies_are_ignored_without_egress_proxy() {
    let proxy = RecordingProxy::open().await;
    let mock = MockProvider::start(Style::Standard).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[store]\nkind = \"memory\"\n{}\n\
             [[routes]]\nprefix = \"/std/\"\nupstream = \"{}/v1/\"\nprovider = \"std\"\n",
            std_provider(&mock.token_url()),
            mock.base()
        ),
    );
    let env_url = proxy.url_with("envuser", "envpw-SECRET-3");
    let vars = [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ];
    let envs: Vec<(&str, &str)> = vars.iter().map(|v| (*v, env_url.as_str())).collect();
    let authproxy = ProxyProcess::start(&config, &envs);
    assert_eq!(status_of(authproxy.url("/std/x")).await, 200);
    authproxy.signal("TERM");
    let (_, log) = authproxy.wait();

    assert!(
        proxy.seen().is_empty(),
        "the environment's proxy got requests: {:?}",
        proxy.seen()
    );
    assert_eq!(mock.token_request_count(), 1, "token request went direct");
    assert_eq!(mock.api_hits().len(), 1, "upstream request went direct");
    let line = log
        .lines()
        .find(|l| l.contains("environment proxy variables are set and ignored"))
        .unwrap_or_else(|| panic!("no line about the ignored variables:\n{log}"));
    for v in vars {
        assert!(line.contains(v), "{v} not named: {line}");
    }
    assert!(!log.contains("envpw-SECRET"), "a value was logged:\n{log}");
}

/// Token requests and a non-loopback upstream go through the egress proxy
/// with its credentials; a loopback upstream goes direct.
#[tokio::test]
async fn egress_proxy_carries_token_and_upstream_requests() {
    let proxy = RecordingProxy::with_credentials(USER, PASSWORD).await;
    let mock = MockProvider::start(Style::Standard).await;
    let local = Echo::start().await;
    let config = format!(
        "[server]\negress_proxy = \"{}\"\n[store]\nkind = \"memory\"\n{}\n\
         [[routes]]\nprefix = \"/std/\"\nupstream = \"{}/v1/\"\nprovider = \"std\"\nallow_http = true\n\
         [[routes]]\nprefix = \"/local/\"\nupstream = \"{}/\"\n",
        proxy.url_with(USER, PASSWORD),
        std_provider(&format!("{}/token", named("auth.example.test", mock.addr))),
        named("api.example.test", mock.addr),
        local.url(),
    );
    let authproxy = start_proxy(&config).await;
    let r = client()
        .get(authproxy.url("/std/x?q=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(status_of(authproxy.url("/local/y")).await, 200);

    let seen = proxy.seen();
    let lines: Vec<String> = seen
        .iter()
        .map(|s| format!("{} {}", s.method, s.target))
        .collect();
    let port = mock.addr.port();
    assert_eq!(
        lines,
        [
            format!("POST http://auth.example.test:{port}/token"),
            format!("GET http://api.example.test:{port}/v1/x?q=1"),
        ],
        "token request and upstream request through the proxy, in absolute form; the loopback route direct"
    );
    for s in &seen {
        assert_eq!(
            s.header("proxy-authorization"),
            Some(basic(USER, PASSWORD).as_str())
        );
        assert_eq!(s.refused, None);
    }
    assert_eq!(local.count(), 1);
    assert_eq!(local.last().header("proxy-authorization"), None);
    // The upstream got the credential, not the proxy's.
    let hit = &mock.api_hits()[0];
    assert_eq!(hit.status, 200);

    let status = client()
        .get(authproxy.url("/_authproxy/status"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(v["egress"]["https_proxy"], proxy.url());
    assert!(
        !status.contains(PASSWORD) && !status.contains(USER),
        "{status}"
    );
}

/// An https upstream: `CONNECT host:port` with the proxy's credentials,
/// then TLS to the upstream through the tunnel (verified against the
/// route's `ca_file`), reused for the next request. The proxy sees no
/// credential of the upstream.
#[tokio::test]
async fn https_upstream_goes_through_connect_with_end_to_end_tls() {
    let pki = TestPki::new();
    let (cert, key) = pki.issue(
        "api.example.test",
        &[
            "subjectAltName=DNS:api.example.test",
            "extendedKeyUsage=serverAuth",
        ],
    );
    let upstream = TlsEcho::start(&cert, &key).await;
    let proxy = RecordingProxy::with_credentials(USER, PASSWORD).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &pki.ca_pem).unwrap();
    let config = format!(
        "[server]\negress_proxy = \"{}\"\n\
         [providers.key]\ntype = \"static\"\nheaders = {{ X-Api-Key = \"upstream-key-SECRET\" }}\n\
         [[routes]]\nprefix = \"/tls/\"\nupstream = \"https://api.example.test:{}/\"\nprovider = \"key\"\n\
         ca_file = \"ca.pem\"\n",
        proxy.url_with(USER, PASSWORD),
        upstream.addr.port(),
    );
    let authproxy = support::start_proxy_in(&config, dir).await;
    for path in ["/tls/one", "/tls/two"] {
        let r = client().get(authproxy.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
    let got = upstream.last();
    assert_eq!(got.path, "/two");
    assert_eq!(got.header("x-api-key"), Some("upstream-key-SECRET"));
    assert_eq!(got.header("proxy-authorization"), None);
    assert_eq!(
        got.header("host"),
        Some(format!("api.example.test:{}", upstream.addr.port()).as_str())
    );

    let seen = proxy.seen();
    assert_eq!(seen.len(), 1, "one tunnel, kept alive: {seen:?}");
    let target = format!("api.example.test:{}", upstream.addr.port());
    assert_eq!(seen[0].method, "CONNECT");
    assert_eq!(seen[0].target, target);
    assert_eq!(seen[0].header("host"), Some(target.as_str()));
    assert_eq!(
        seen[0].header("proxy-authorization"),
        Some(basic(USER, PASSWORD).as_str())
    );
    assert!(
        seen[0]
            .headers
            .iter()
            .all(|(_, v)| !v.contains("upstream-key")),
        "the proxy saw the upstream's credential: {seen:?}"
    );
}

/// A `CONNECT` the proxy refuses (407 for bad credentials, 403 by its
/// rules) is a 502 `upstream_unreachable` that names the proxy and its
/// answer, without the proxy's credentials.
#[tokio::test]
async fn refused_connect_is_a_clear_502_naming_the_proxy() {
    let proxy = RecordingProxy::with_credentials(USER, PASSWORD).await;
    let wrong = "wrong-pw-SECRET-9";
    let config = format!(
        "[server]\negress_proxy = \"{}\"\n\
         [[routes]]\nprefix = \"/a/\"\nupstream = \"https://api.example.test:1/\"\n\
         [[routes]]\nprefix = \"/b/\"\nupstream = \"http://plain.example.test:1/\"\nallow_http = true\n",
        proxy.url_with(USER, wrong),
    );
    let authproxy = start_proxy(&config).await;
    for (path, what) in [
        (
            "/a/x",
            "CONNECT api.example.test:1: 407 Proxy Authentication Required",
        ),
        (
            "/b/x",
            "the request to http://plain.example.test:1: 407 Proxy Authentication Required",
        ),
    ] {
        let r = client().get(authproxy.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 502, "{path}");
        let text = r.text().await.unwrap();
        let body: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(body["error"], "upstream_unreachable", "{body}");
        let message = body["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("egress proxy {} refused {what}", proxy.url())),
            "{message}"
        );
        assert!(!text.contains(wrong) && !text.contains(USER), "{text}");
    }

    let proxy = RecordingProxy::open().await;
    let config = format!(
        "[server]\negress_proxy = \"{}\"\n\
         [[routes]]\nprefix = \"/d/\"\nupstream = \"https://deny403.example.test/\"\n",
        proxy.url(),
    );
    let authproxy = start_proxy(&config).await;
    let body = get_json(&client(), authproxy.url("/d/x")).await;
    assert_eq!(body["error"], "upstream_unreachable", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains(&format!(
            "egress proxy {} refused CONNECT deny403.example.test:443: 403 Forbidden",
            proxy.url()
        )),
        "{body}"
    );
}

/// `no_proxy` hosts go direct: here `0.0.0.0`, which this machine reaches
/// without leaving it, and which is no loopback name to authproxy.
#[tokio::test]
async fn no_proxy_hosts_go_direct() {
    let proxy = RecordingProxy::open().await;
    let mock = MockProvider::start(Style::Standard).await;
    let direct = Echo::start().await;
    let via = Echo::start().await;
    let config = format!(
        "[server]\negress_proxy = \"{}\"\nno_proxy = [\"0.0.0.0\", \"*.internal.test\"]\n\
         [store]\nkind = \"memory\"\n{}\n\
         [[routes]]\nprefix = \"/std/\"\nupstream = \"{}/v1/\"\nprovider = \"std\"\nallow_http = true\n\
         [[routes]]\nprefix = \"/direct/\"\nupstream = \"{}/\"\nallow_http = true\n\
         [[routes]]\nprefix = \"/via/\"\nupstream = \"{}/\"\nallow_http = true\n",
        proxy.url(),
        std_provider(&format!("{}/token", named("0.0.0.0", mock.addr))),
        named("0.0.0.0", mock.addr),
        named("0.0.0.0", direct.addr),
        named("api.example.test", via.addr),
    );
    let authproxy = start_proxy(&config).await;
    assert_eq!(status_of(authproxy.url("/std/x")).await, 200);
    assert_eq!(status_of(authproxy.url("/direct/y")).await, 200);
    assert_eq!(status_of(authproxy.url("/via/z")).await, 200);
    let lines: Vec<String> = proxy
        .seen()
        .iter()
        .map(|s| format!("{} {}", s.method, s.target))
        .collect();
    assert_eq!(
        lines,
        [format!("GET http://api.example.test:{}/z", via.addr.port())],
        "only the host outside no_proxy went through the proxy"
    );
    assert_eq!(mock.token_request_count(), 1);
    assert_eq!(direct.count(), 1);
    assert_eq!(via.count(), 1);
}

/// `egress_proxy = "env"`: `HTTP_PROXY`/`HTTPS_PROXY` with their userinfo,
/// `NO_PROXY` honoured; `ALL_PROXY` is not read (and the log says so).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_mode_takes_http_proxy_and_no_proxy_from_the_environment() {
    let proxy = RecordingProxy::with_credentials(USER, PASSWORD).await;
    let other = RecordingProxy::open().await;
    let mock = MockProvider::start(Style::Standard).await;
    let direct = Echo::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\negress_proxy = \"env\"\n[store]\nkind = \"memory\"\n{}\n\
             [[routes]]\nprefix = \"/std/\"\nupstream = \"{}/v1/\"\nprovider = \"std\"\nallow_http = true\n\
             [[routes]]\nprefix = \"/direct/\"\nupstream = \"{}/\"\nallow_http = true\n",
            std_provider(&format!("{}/token", named("auth.example.test", mock.addr))),
            named("api.example.test", mock.addr),
            named("0.0.0.0", direct.addr),
        ),
    );
    let with_creds = proxy.url_with(USER, PASSWORD);
    let other_url = other.url();
    let authproxy = ProxyProcess::start(
        &config,
        &[
            ("HTTP_PROXY", with_creds.as_str()),
            ("HTTPS_PROXY", with_creds.as_str()),
            ("NO_PROXY", "example.invalid,0.0.0.0"),
            ("ALL_PROXY", other_url.as_str()),
        ],
    );
    assert_eq!(status_of(authproxy.url("/std/x")).await, 200);
    assert_eq!(status_of(authproxy.url("/direct/y")).await, 200);
    authproxy.signal("TERM");
    let (_, log) = authproxy.wait();

    let port = mock.addr.port();
    let lines: Vec<String> = proxy
        .seen()
        .iter()
        .map(|s| format!("{} {}", s.method, s.target))
        .collect();
    assert_eq!(
        lines,
        [
            format!("POST http://auth.example.test:{port}/token"),
            format!("GET http://api.example.test:{port}/v1/x"),
        ]
    );
    assert!(proxy
        .seen()
        .iter()
        .all(|s| s.header("proxy-authorization") == Some(basic(USER, PASSWORD).as_str())));
    assert_eq!(direct.count(), 1, "NO_PROXY host went direct");
    assert!(other.seen().is_empty(), "ALL_PROXY is not read");
    assert!(
        log.lines()
            .any(|l| l.contains("set and ignored") && l.contains("ALL_PROXY")),
        "{log}"
    );
    assert!(!log.contains(PASSWORD), "{log}");
}

/// A full run at debug level, a refusal included: the proxy's user and
/// password are in no log line, not in status, not in `check`'s output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_credentials_never_reach_logs_status_or_check() {
    let proxy = RecordingProxy::with_credentials(USER, PASSWORD).await;
    let mock = MockProvider::start(Style::Standard).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[server]\nlisten = \"127.0.0.1:0\"\negress_proxy = \"http://${{EGRESS_AUTH}}@{}\"\n\
             no_proxy = [\"db.internal.test\"]\n[store]\nkind = \"memory\"\n{}\n\
             [[routes]]\nprefix = \"/std/\"\nupstream = \"{}/v1/\"\nprovider = \"std\"\nallow_http = true\n\
             [[routes]]\nprefix = \"/denied/\"\nupstream = \"https://deny407.example.test/\"\n",
            proxy.addr,
            std_provider(&format!("{}/token", named("auth.example.test", mock.addr))),
            named("api.example.test", mock.addr),
        ),
    );
    let auth = format!("{USER}:{PASSWORD}");
    let envs = [("EGRESS_AUTH", auth.as_str())];
    let authproxy = ProxyProcess::start(&config, &envs);
    assert_eq!(status_of(authproxy.url("/std/x")).await, 200);
    assert_eq!(status_of(authproxy.url("/denied/x")).await, 502);
    let status = client()
        .get(authproxy.url("/_authproxy/status"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    authproxy.signal("TERM");
    let (_, log) = authproxy.wait();
    let (code, out, err) = run_cli(
        &["check", "--config", config.to_str().unwrap()],
        &envs,
        dir.path(),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("egress proxy {} (with credentials)", proxy.url())),
        "{out}"
    );
    assert!(out.contains("no_proxy db.internal.test"), "{out}");

    assert!(proxy.seen().len() >= 3, "{:?}", proxy.seen());
    let encoded = basic(USER, PASSWORD);
    let encoded = encoded.trim_start_matches("Basic ");
    for (what, text) in [
        ("log", &log),
        ("status", &status),
        ("check", &out),
        ("check stderr", &err),
    ] {
        for secret in [PASSWORD, USER, encoded] {
            assert!(!text.contains(secret), "{what} holds `{secret}`:\n{text}");
        }
    }
    assert!(
        log.contains(&format!(
            "egress proxy {} refused CONNECT deny407.example.test:443",
            proxy.url()
        )),
        "the refusal is logged, by the proxy's address:\n{log}"
    );
}
