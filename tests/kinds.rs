//! The credential kinds built once at load (`basic`, `query`) end to end
//! against a recording upstream, the `allow` request policy, and the config
//! errors of both.

mod support;

use std::path::Path;

use authproxy::config::interpolate::ProcessEnv;
use authproxy::Config;
use support::{client, start_proxy, Echo};

fn route(prefix: &str, upstream: &str, provider: Option<&str>, extra: &str) -> String {
    format!(
        "[[routes]]\nprefix = \"{prefix}\"\nupstream = \"{upstream}/\"\n{}{extra}\n",
        provider
            .map(|p| format!("provider = \"{p}\"\n"))
            .unwrap_or_default()
    )
}

#[tokio::test]
async fn basic_replaces_the_clients_authorization() {
    let echo = Echo::start().await;
    let proxy = start_proxy(&format!(
        "[store]\nkind = \"memory\"\n[providers.b]\ntype = \"basic\"\nusername = \"Aladdin\"\npassword = \"open sesame\"\n{}",
        route("/b/", &echo.url(), Some("b"), "")
    ))
    .await;
    let r = client()
        .get(proxy.url("/b/x"))
        .header("authorization", "Basic Y2xpZW50OnNlY3JldA==")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = echo.last();
    assert_eq!(
        got.headers["authorization"],
        ["Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="]
    );
}

#[tokio::test]
async fn basic_is_utf8() {
    let echo = Echo::start().await;
    let proxy = start_proxy(&format!(
        "[store]\nkind = \"memory\"\n[providers.b]\ntype = \"basic\"\nusername = \"test\"\npassword = \"123£\"\n{}",
        route("/b/", &echo.url(), Some("b"), "")
    ))
    .await;
    client().get(proxy.url("/b/")).send().await.unwrap();
    // RFC 7617 §2.1's example.
    assert_eq!(
        echo.last().header("authorization"),
        Some("Basic dGVzdDoxMjPCow==")
    );
}

#[tokio::test]
async fn query_params_replace_the_clients_and_leave_the_rest_byte_for_byte() {
    let echo = Echo::start().await;
    let proxy = start_proxy(&format!(
        "[store]\nkind = \"memory\"\n[providers.q]\ntype = \"query\"\nparams = {{ api_key = \"k3y/+&=ü\", sig = \"S\" }}\n{}",
        route("/q/", &echo.url(), Some("q"), "")
    ))
    .await;
    let c = client();
    for (sent, expected) in [
        (
            "/q/search?b=%7e&a=1+2&api_key=evil&x=%2F",
            "b=%7e&a=1+2&x=%2F&api_key=k3y%2F%2B%26%3D%C3%BC&sig=S",
        ),
        ("/q/search", "api_key=k3y%2F%2B%26%3D%C3%BC&sig=S"),
        (
            "/q/search?API_KEY=1&api%5Fkey=2&Sig=3;z=4",
            "z=4&api_key=k3y%2F%2B%26%3D%C3%BC&sig=S",
        ),
    ] {
        let r = c
            .get(proxy.url(sent))
            .header("authorization", "Bearer client")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let got = echo.last();
        assert_eq!(got.path, "/search");
        assert_eq!(got.query.as_deref(), Some(expected), "{sent}");
        assert!(got.header("authorization").is_none());
    }
}

/// The access log has the path without the query: a query credential
/// never reaches the log, at debug level either (tests/secrets_audit.rs
/// covers every kind through every error too).
#[test]
fn query_credentials_never_reach_the_log() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let echo = rt.block_on(Echo::start());
    let dir = tempfile::tempdir().unwrap();
    let secret = "QUERYSECRETvalue42";
    let config = dir.path().join("authproxy.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[store]\nkind = \"memory\"\n\
             [providers.q]\ntype = \"query\"\nparams = {{ token = \"${{QUERY_SECRET}}\" }}\n{}",
            route("/q/", &echo.url(), Some("q"), "")
        ),
    )
    .unwrap();
    for format in ["text", "json"] {
        let proxy = support::ProxyProcess::spawn(
            &[
                "--log-format",
                format,
                "run",
                "--config",
                config.to_str().unwrap(),
            ],
            &[("QUERY_SECRET", secret), ("RUST_LOG", "trace")],
        );
        rt.block_on(async {
            let c = client();
            for path in ["/q/a?x=1", "/q/b?token=mine", "/nothing/here?q=1"] {
                c.get(proxy.url(path)).send().await.unwrap();
            }
        });
        assert!(echo.last().query.unwrap().contains(secret));
        proxy.signal("TERM");
        let (_, log) = proxy.wait();
        assert!(log.contains("/q/b"), "no access line in:\n{log}");
        assert!(
            !log.contains(secret),
            "{format} log leaks the query credential:\n{log}"
        );
        assert!(!log.contains("token=mine"), "the query is logged:\n{log}");
    }
}

/// The status of `GET <path>` sent as it is, byte for byte.
async fn raw_status(addr: std::net::SocketAddr, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out);
    text.split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{text}"))
}

fn policy_config(echo: &Echo, strip: bool) -> String {
    format!(
        "[store]\nkind = \"memory\"\n[providers.s]\ntype = \"static\"\nheaders = {{ Authorization = \"Token t\" }}\n{}{}",
        route(
            "/billing/",
            &echo.url(),
            Some("s"),
            &format!(
                "strip_prefix = {strip}\nallow = [\"GET /invoices/**\", \"POST /invoices\", \"GET /customers/*\", \"* /status\"]\n"
            )
        ),
        route("/open/", &echo.url(), None, "")
    )
}

#[tokio::test]
async fn policy_allows_listed_requests_and_refuses_the_rest_unseen() {
    let echo = Echo::start().await;
    let proxy = start_proxy(&policy_config(&echo, true)).await;
    let c = client();
    let send =
        |method: &str, path: &str| c.request(method.parse().unwrap(), proxy.url(path)).send();
    for (method, path) in [
        ("GET", "/billing/invoices"),
        ("GET", "/billing/invoices/42"),
        ("GET", "/billing/invoices/42/lines?page=2"),
        ("POST", "/billing/invoices"),
        ("GET", "/billing/customers/7"),
        ("GET", "/billing/%69nvoices/1"),
        ("PATCH", "/billing/status"),
        ("DELETE", "/billing/status"),
    ] {
        let r = send(method, path).await.unwrap();
        assert_eq!(r.status(), 200, "{method} {path}");
    }
    let allowed = echo.count();
    for (method, path) in [
        ("DELETE", "/billing/invoices/42"),
        ("POST", "/billing/invoices/42"),
        ("GET", "/billing/customers"),
        ("GET", "/billing/customers/"),
        ("GET", "/billing/customers/7/orders"),
        ("GET", "/billing/admin"),
        ("GET", "/billing"),
        ("GET", "/billing/invoices%2Fadmin"),
        ("GET", "/billing/customers/a%2Fb"),
        ("GET", "/billing/customers/a%5cb"),
        ("GET", "/billing/customers/a%252Fb"),
    ] {
        let r = send(method, path).await.unwrap();
        assert_eq!(r.status(), 403, "{method} {path}");
        assert_eq!(r.headers()["x-authproxy-error"], "forbidden_by_policy");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"], "forbidden_by_policy", "{method} {path}");
        assert_eq!(v["provider"], "s");
        assert!(v["message"].as_str().unwrap().contains("/billing/"));
    }
    // Dot segments, encoded or not, never get as far as the policy (sent
    // raw: a URL library would resolve them first).
    for path in [
        "/billing/invoices%2F..%2Fadmin",
        "/billing/invoices/%2e%2e/admin",
        "/billing/invoices/../admin",
    ] {
        assert_eq!(raw_status(proxy.addr, path).await, 400, "{path}");
    }
    assert_eq!(echo.count(), allowed, "the upstream saw a refused request");
    // Routes without `allow` are not affected.
    assert_eq!(
        send("DELETE", "/open/anything").await.unwrap().status(),
        200
    );

    let metrics = c
        .get(proxy.url("/_authproxy/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("authproxy_policy_denied_total{route=\"/billing/\"} 11"),
        "{metrics}"
    );
    assert!(metrics.contains("authproxy_requests_total{route=\"/billing/\",status=\"403\"} 11"));
}

/// `strip_prefix = false` sends the prefix upstream; the policy still
/// matches the path after it.
#[tokio::test]
async fn policy_paths_are_relative_to_the_prefix_either_way() {
    let echo = Echo::start().await;
    let proxy = start_proxy(&policy_config(&echo, false)).await;
    let c = client();
    let r = c
        .get(proxy.url("/billing/invoices/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(echo.last().path, "/billing/invoices/1");
    let r = c
        .get(proxy.url("/billing/billing/invoices/1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

fn check_errors(text: &str) -> String {
    match Config::parse(text, Path::new("x.toml"), &ProcessEnv) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn config_errors_name_the_key_and_the_fix() {
    let r = "[[routes]]\nprefix = \"/p/\"\nupstream = \"http://127.0.0.1:9/\"\nprovider = \"p\"\n";
    for (provider, key, words) in [
        ("type = \"basic\"\nusername = \"a:b\"\npassword = \"x\"", "providers.p.username", "`:`"),
        ("type = \"basic\"\nusername = \"a\"", "providers.p.password", "required"),
        ("type = \"basic\"\nusername = \"a\"\npassword = \"b\"\ntoken_url = \"https://x/\"", "providers.p.token_url", "type = \"oauth2\""),
        ("type = \"basic\"\nusername = \"a\"\npassword = \"b\"\nparams = { a = \"b\" }", "providers.p.params", "type = \"query\""),
        ("type = \"query\"", "providers.p.params", "required"),
        ("type = \"query\"\nparams = { \"\" = \"x\" }", "providers.p.params", "empty parameter name"),
        ("type = \"static\"\nheaders = { A = \"b\" }\nregion = \"x\"", "providers.p.region", "type = \"aws_sigv4\""),
        ("type = \"oauth2\"\ngrant = \"client_credentials\"\ntoken_url = \"https://x/\"\nclient_id = \"c\"\nservice = \"s3\"", "providers.p.service", "type = \"aws_sigv4\""),
        ("type = \"aws_sigv4\"\naccess_key_id = \"AK\"\nsecret_access_key = \"s\"\nregion = \"us-east-1\"", "providers.p.service", "required"),
        ("type = \"aws_sigv4\"\naccess_key_id = \"AK/x\"\nsecret_access_key = \"s\"\nregion = \"us-east-1\"\nservice = \"s3\"", "providers.p.access_key_id", "letters and digits"),
        ("type = \"aws_sigv4\"\naccess_key_id = \"AK\"\nsecret_access_key = \"s\"\nregion = \"US East\"\nservice = \"s3\"", "providers.p.region", "lowercase"),
        ("type = \"aws_sigv4\"\naccess_key_id = \"AK\"\nsecret_access_key = \"\"\nregion = \"us-east-1\"\nservice = \"s3\"", "providers.p.secret_access_key", "empty"),
        ("type = \"aws_sigv4\"\naccess_key_id = \"AK\"\nsecret_access_key = \"s\"\nregion = \"us-east-1\"\nservice = \"s3\"\nusername = \"u\"", "providers.p.username", "type = \"basic\" or type = \"oauth2\""),
        ("type = \"kerberos\"", "providers.p.type", "\"aws_sigv4\""),
    ] {
        let e = check_errors(&format!("[providers.p]\n{provider}\n{r}"));
        let line = e
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{key}:")))
            .unwrap_or_else(|| panic!("no error for {key} in:\n{e}"));
        assert!(line.contains(words), "{key}: `{words}` not in: {line}");
    }
    for (allow, key, words) in [
        (
            "[\"GET /a\", \"get /b\"]",
            "routes[0].allow[1]",
            "write `GET`",
        ),
        ("[\"GET a\"]", "routes[0].allow[0]", "must start with `/`"),
        ("[\"GET /a**\"]", "routes[0].allow[0]", "whole segment"),
        ("[\"/a\"]", "routes[0].allow[0]", "METHOD and path"),
        ("[]", "routes[0].allow", "refuses every request"),
    ] {
        let e = check_errors(&format!(
            "[[routes]]\nprefix = \"/p/\"\nupstream = \"http://127.0.0.1:9/\"\nallow = {allow}\n"
        ));
        let line = e
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{key}:")))
            .unwrap_or_else(|| panic!("no error for {key} in:\n{e}"));
        assert!(line.contains(words), "{key}: `{words}` not in: {line}");
    }
}

#[test]
fn check_prints_each_routes_policy() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("authproxy.toml"),
        "[store]\nkind = \"memory\"\n[providers.b]\ntype = \"basic\"\nusername = \"u\"\npassword = \"${PW}\"\n\
         [providers.q]\ntype = \"query\"\nparams = { api_key = \"${PW}\" }\n\
         [providers.a]\ntype = \"aws_sigv4\"\naccess_key_id = \"AKIDEXAMPLE\"\nsecret_access_key = \"${PW}\"\nregion = \"eu-west-1\"\nservice = \"execute-api\"\n\
         [[routes]]\nprefix = \"/b/\"\nupstream = \"https://b.example/\"\nprovider = \"b\"\nallow = [\"GET /invoices/**\", \"* /status\"]\n\
         [[routes]]\nprefix = \"/q/\"\nupstream = \"https://q.example/\"\nprovider = \"q\"\n\
         [[routes]]\nprefix = \"/a/\"\nupstream = \"https://a.example/\"\nprovider = \"a\"\n",
    )
    .unwrap();
    let (code, out, err) = support::run_cli(
        &["check", "--config", "authproxy.toml"],
        &[("PW", "SECRETpw123")],
        dir.path(),
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("allow: GET /invoices/**, * /status"), "{out}");
    assert!(out.contains("basic"), "{out}");
    assert!(out.contains("adds query parameters api_key"), "{out}");
    assert!(out.contains("aws_sigv4/execute-api"), "{out}");
    assert!(!out.contains("SECRETpw123") && !err.contains("SECRETpw123"));
}
