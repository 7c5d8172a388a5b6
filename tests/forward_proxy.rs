//! Forward-proxy mode: real clients (curl, Python `requests`) given only
//! the proxy's address and the generated CA, against loopback mocks
//! standing in for `api.example.test`; the refusals that keep the proxy
//! from being an open relay.

mod support;

use std::net::SocketAddr;
use std::path::Path;

use futures_util::FutureExt;
use support::egress_proxy::TlsEcho;
use support::oidc::TestPki;
use support::providers::{MockProvider, Style, CLIENT_ID, PASSWORD, USERNAME};
use support::{start_proxy, Echo, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const KEY: &str = "upstream-key-SECRET";

/// A host route for `api.example.test` injecting a static key, its
/// upstream `echo` (plain http on loopback); `extra` goes into
/// `[forward_proxy]`, `server` into `[server]`.
fn config(echo: &Echo, server: &str, extra: &str) -> String {
    format!(
        "[server]\n{server}\n\
         [store]\nkind = \"memory\"\n\
         [forward_proxy]\nenabled = true\nca_cert = \"state/ca.pem\"\nca_key = \"state/ca.key\"\n{extra}\n\
         [providers.key]\ntype = \"static\"\nheaders = {{ X-Api-Key = \"{KEY}\" }}\n\
         [[routes]]\nhost = \"api.example.test\"\nupstream = \"{}/v1/\"\nprovider = \"key\"\n\
         [[routes]]\nprefix = \"/plain/\"\nupstream = \"{}/plain/\"\n",
        echo.url(),
        echo.url(),
    )
}

fn ca_path(proxy: &Proxy) -> std::path::PathBuf {
    proxy.dir.path().join("state/ca.pem")
}

/// What curl printed: the body, then the status and HTTP version of the
/// last answer (`-w`), and its exit code.
struct Curl {
    code: i32,
    body: String,
    status: String,
    version: String,
    stderr: String,
}

async fn curl(args: &[&str]) -> Curl {
    let out = tokio::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "60",
            "-w",
            "\n%{http_code} %{http_version}",
        ])
        .args(args)
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .env_remove("ALL_PROXY")
        .output()
        .await
        .expect("curl runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, last) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    let (status, version) = last.split_once(' ').unwrap_or((last, ""));
    Curl {
        code: out.status.code().unwrap_or(-1),
        body: body.to_string(),
        status: status.to_string(),
        version: version.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).to_string(),
    }
}

fn has_curl() -> bool {
    support::require_tool(
        "curl",
        std::process::Command::new("curl")
            .arg("--version")
            .output()
            .is_ok(),
        "apt-get install curl",
    )
}

/// Curl through the proxy, trusting its CA.
async fn curl_via(proxy: &Proxy, url: &str, more: &[&str]) -> Curl {
    let proxy_url = format!("http://{}", proxy.addr);
    let ca = ca_path(proxy);
    let mut args = vec!["--proxy", &proxy_url, "--cacert", ca.to_str().unwrap()];
    args.extend_from_slice(more);
    args.push(url);
    curl(&args).await
}

/// Sends `head` on a new connection and reads one answer (head and
/// `content-length` body).
async fn raw(addr: SocketAddr, head: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.unwrap();
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length || n == 0 {
                return text;
            }
        } else if n == 0 {
            return text;
        }
    }
}

#[tokio::test]
async fn curl_gets_the_credential_injected_inside_a_connect_tunnel() {
    if !has_curl() {
        return;
    }
    let echo = Echo::start().await;
    let proxy = start_proxy(&config(&echo, "", "")).await;
    let c = curl_via(
        &proxy,
        "https://api.example.test/things?page=2",
        &[
            "-H",
            "X-Api-Key: the-client-own",
            "-H",
            "Authorization: Bearer client",
        ],
    )
    .await;
    assert_eq!(
        (c.code, c.status.as_str()),
        (0, "200"),
        "{} {}",
        c.body,
        c.stderr
    );
    let rec = echo.last();
    assert_eq!(rec.path, "/v1/things");
    assert_eq!(rec.query.as_deref(), Some("page=2"));
    assert_eq!(rec.header("x-api-key"), Some(KEY), "replaced, not merged");
    assert_eq!(rec.headers["x-api-key"].len(), 1);
    assert_eq!(
        rec.header("authorization"),
        None,
        "client Authorization dropped"
    );
    assert!(
        rec.header("x-request-id").is_some(),
        "request ids as on prefix routes"
    );
    // The local endpoints are not reachable through a tunnel: the path
    // goes to the host's upstream like any other.
    let c = curl_via(&proxy, "https://api.example.test/_authproxy/status", &[]).await;
    assert_eq!(c.status, "200", "{}", c.body);
    assert_eq!(echo.last().path, "/v1/_authproxy/status");
}

#[tokio::test]
async fn python_requests_with_https_proxy_and_the_ca_bundle() {
    let found = std::process::Command::new("python3")
        .args(["-c", "import requests"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !support::require_tool("python3-requests", found, "pip install requests") {
        return;
    }
    let echo = Echo::start().await;
    let proxy = start_proxy(&config(&echo, "", "")).await;
    let script = "import requests\n\
                  r = requests.get('https://api.example.test/py/ok', timeout=60)\n\
                  print(r.status_code)\n";
    let out = tokio::process::Command::new("python3")
        .args(["-c", script])
        .env("HTTPS_PROXY", format!("http://{}", proxy.addr))
        .env("REQUESTS_CA_BUNDLE", ca_path(&proxy))
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.trim(),
        "200",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rec = echo.last();
    assert_eq!(rec.path, "/v1/py/ok");
    assert_eq!(rec.header("x-api-key"), Some(KEY));
}

#[tokio::test]
async fn http2_inside_the_tunnel_and_many_requests_on_one_handshake() {
    if !has_curl() {
        return;
    }
    let echo = Echo::start().await;
    let proxy = start_proxy(&config(&echo, "", "")).await;
    let c = curl_via(&proxy, "https://api.example.test/h2", &["--http2"]).await;
    assert_eq!(
        (c.status.as_str(), c.version.as_str()),
        ("200", "2"),
        "{}",
        c.stderr
    );
    assert_eq!(echo.last().header("x-api-key"), Some(KEY));
    // Three URLs, one curl: one CONNECT and one TLS handshake, the
    // requests one after another inside (curl -v says "Re-using").
    let c = curl_via(
        &proxy,
        "https://api.example.test/one",
        &[
            "-v",
            "--http1.1",
            "https://api.example.test/two",
            "https://api.example.test/three",
        ],
    )
    .await;
    assert_eq!(c.status, "200", "{}", c.stderr);
    assert_eq!(
        c.stderr.matches("CONNECT api.example.test:443").count(),
        1,
        "{}",
        c.stderr
    );
    let paths: Vec<String> = echo
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.path.clone())
        .collect();
    // curl_via puts its own URL last.
    assert_eq!(paths, ["/v1/h2", "/v1/two", "/v1/three", "/v1/one"]);
    assert_eq!(echo.count(), 4);
}

#[tokio::test]
async fn hosts_without_a_host_route_are_refused_and_nothing_is_connected() {
    if !has_curl() {
        return;
    }
    let echo = Echo::start().await;
    // A listener that must see no connection.
    let bystander = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = bystander.local_addr().unwrap().port();
    let proxy = start_proxy(&config(&echo, "", "tunnel = [\"*.example.org\"]")).await;
    for target in [
        format!("127.0.0.1:{port}"),
        "other.example.test:443".into(),
        "example.org:443".into(),
    ] {
        let answer = raw(
            proxy.addr,
            &format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n"),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 403"), "{target}: {answer}");
        assert!(answer.contains("\"error\":\"forbidden_host\""), "{answer}");
    }
    // Absolute form too, to an unknown host and to the bystander.
    let answer = raw(
        proxy.addr,
        &format!("GET http://127.0.0.1:{port}/x HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n"),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(
        bystander.accept().now_or_never().is_none(),
        "the proxy connected to a host it refused"
    );
    // curl sees the refusal as a failed CONNECT.
    let c = curl_via(&proxy, "https://other.example.test/", &[]).await;
    assert_ne!(c.code, 0);
    assert!(c.stderr.contains("403"), "{}", c.stderr);
    // A malformed target is a bad request, not a connection.
    let answer = raw(
        proxy.addr,
        "CONNECT api.example.test HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    // Requests to the listen address never reach host routes.
    let answer = raw(
        proxy.addr,
        "GET /things HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    assert_eq!(echo.count(), 0);
}

#[tokio::test]
async fn tunnel_hosts_are_spliced_blind_with_the_upstream_certificate() {
    if !has_curl() {
        return;
    }
    let pki = TestPki::new();
    let (cert, key) = pki.issue(
        "127.0.0.1",
        &["subjectAltName=IP:127.0.0.1", "extendedKeyUsage=serverAuth"],
    );
    let upstream = TlsEcho::start(&cert, &key).await;
    let echo = Echo::start().await;
    let proxy = start_proxy(&config(&echo, "", "tunnel = [\"127.0.0.1:*\"]")).await;
    let dir = tempfile::tempdir().unwrap();
    let upstream_ca = dir.path().join("upstream-ca.pem");
    std::fs::write(&upstream_ca, &pki.ca_pem).unwrap();
    let url = format!("https://127.0.0.1:{}/blind", upstream.addr.port());
    // Trusting only the upstream's own CA: the certificate is the
    // upstream's, not one of authproxy's.
    let proxy_url = format!("http://{}", proxy.addr);
    let c = curl(&[
        "--proxy",
        &proxy_url,
        "--cacert",
        upstream_ca.to_str().unwrap(),
        "-H",
        "X-Api-Key: client-own",
        &url,
    ])
    .await;
    assert_eq!((c.code, c.status.as_str()), (0, "200"), "{}", c.stderr);
    let rec = upstream.last();
    assert_eq!(rec.path, "/blind");
    assert_eq!(
        rec.header("x-api-key"),
        Some("client-own"),
        "no credential in a blind tunnel"
    );
    // Trusting only authproxy's CA, the same URL fails verification.
    let c = curl_via(&proxy, &url, &[]).await;
    assert_ne!(c.code, 0, "{}", c.body);
    assert_eq!(echo.count(), 0);
}

/// A blind tunnel is an outbound connection like any other: with
/// `server.egress_proxy` it is opened through that proxy's `CONNECT`, not
/// directly (before, it went direct and skipped the egress rules).
#[tokio::test]
async fn blind_tunnels_go_through_the_egress_proxy() {
    if !has_curl() {
        return;
    }
    let pki = TestPki::new();
    let (cert, key) = pki.issue(
        "blind.example.test",
        &[
            "subjectAltName=DNS:blind.example.test",
            "extendedKeyUsage=serverAuth",
        ],
    );
    let upstream = TlsEcho::start(&cert, &key).await;
    let egress = support::egress_proxy::RecordingProxy::open().await;
    let echo = Echo::start().await;
    let server = format!("egress_proxy = \"{}\"", egress.url());
    let proxy = start_proxy(&config(
        &echo,
        &server,
        "tunnel = [\"blind.example.test:*\"]",
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let upstream_ca = dir.path().join("upstream-ca.pem");
    std::fs::write(&upstream_ca, &pki.ca_pem).unwrap();
    let target = format!("blind.example.test:{}", upstream.addr.port());
    let proxy_url = format!("http://{}", proxy.addr);
    let c = curl(&[
        "--proxy",
        &proxy_url,
        "--cacert",
        upstream_ca.to_str().unwrap(),
        &format!("https://{target}/via-egress"),
    ])
    .await;
    assert_eq!((c.code, c.status.as_str()), (0, "200"), "{}", c.stderr);
    assert_eq!(upstream.last().path, "/via-egress");
    let seen = egress.seen();
    assert!(
        seen.iter()
            .any(|s| s.method == "CONNECT" && s.target == target),
        "the egress proxy saw {seen:?}"
    );
}

/// A blind tunnel nobody speaks on is closed after
/// `server.tunnel_idle_timeout`, on both sides; before, a client that
/// vanished without a FIN held the tunnel (a connection slot and a task)
/// for ever.
#[tokio::test]
async fn a_quiet_blind_tunnel_is_closed_after_tunnel_idle_timeout() {
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = upstream.local_addr().unwrap().port();
    let echo = Echo::start().await;
    let proxy = start_proxy(&config(
        &echo,
        "tunnel_idle_timeout = \"1s\"",
        "tunnel = [\"127.0.0.1:*\"]",
    ))
    .await;
    let mut client = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    client
        .write_all(
            format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let (mut far, _) = upstream.accept().await.unwrap();
    // Bytes pass while the tunnel is used...
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        assert_eq!(client.read(&mut byte).await.unwrap(), 1, "{head:?}");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    client.write_all(b"hello").await.unwrap();
    let mut got = [0u8; 5];
    far.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"hello");
    // ...then silence: both ends see the close. The bound only keeps a
    // broken build from hanging the suite; it is not a timing assertion.
    let bound = std::time::Duration::from_secs(120);
    let mut rest = Vec::new();
    let n = tokio::time::timeout(bound, client.read_to_end(&mut rest))
        .await
        .expect("the client's side was closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    let n = tokio::time::timeout(bound, far.read_to_end(&mut rest))
        .await
        .expect("the upstream's side was closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn inbound_token_is_needed_on_connect() {
    if !has_curl() {
        return;
    }
    let echo = Echo::start().await;
    let token = "inbound-SECRET-token";
    let proxy = start_proxy(&config(&echo, &format!("inbound_token = \"{token}\""), "")).await;
    let answer = raw(
        proxy.addr,
        "CONNECT api.example.test:443 HTTP/1.1\r\nHost: api.example.test:443\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 407"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("proxy-authenticate: basic"),
        "{answer}"
    );
    let answer = raw(
        proxy.addr,
        "CONNECT api.example.test:443 HTTP/1.1\r\nHost: api.example.test:443\r\nProxy-Authorization: Bearer wrong\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 407"), "{answer}");
    // Absolute form too.
    let answer = raw(
        proxy.addr,
        "GET http://api.example.test/abs HTTP/1.1\r\nHost: api.example.test\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 407"), "{answer}");
    let c = curl_via(&proxy, "https://api.example.test/no", &[]).await;
    assert_ne!(c.code, 0, "{}", c.body);
    assert_eq!(echo.count(), 0);
    // The token as the proxy password (Basic), as HTTPS_PROXY URLs carry it.
    let c = curl_via(
        &proxy,
        "https://api.example.test/basic",
        &["--proxy-user", &format!("any:{token}")],
    )
    .await;
    assert_eq!(c.status, "200", "{}", c.stderr);
    // And as Bearer.
    let bearer = format!("Proxy-Authorization: Bearer {token}");
    let c = curl_via(
        &proxy,
        "https://api.example.test/bearer",
        &["--proxy-header", &bearer],
    )
    .await;
    assert_eq!(c.status, "200", "{}", c.stderr);
    let rec = echo.last();
    assert_eq!(rec.path, "/v1/bearer");
    assert_eq!(rec.header("proxy-authorization"), None);
    assert_eq!(rec.header("x-api-key"), Some(KEY));
}

#[tokio::test]
async fn absolute_form_http_to_a_host_route_goes_to_the_route() {
    if !has_curl() {
        return;
    }
    let echo = Echo::start().await;
    let proxy = start_proxy(&config(&echo, "", "")).await;
    let c = curl_via(&proxy, "http://api.example.test/plain-http?q=1", &[]).await;
    assert_eq!(c.status, "200", "{} {}", c.body, c.stderr);
    let rec = echo.last();
    assert_eq!(rec.path, "/v1/plain-http");
    assert_eq!(rec.header("x-api-key"), Some(KEY));
}

#[tokio::test]
async fn a_request_for_another_host_inside_a_tunnel_is_misdirected() {
    if !has_curl() {
        return;
    }
    let echo = Echo::start().await;
    let proxy = start_proxy(&config(&echo, "", "")).await;
    let c = curl_via(
        &proxy,
        "https://api.example.test/x",
        &["-H", "Host: other.example.test"],
    )
    .await;
    assert_eq!(c.status, "421", "{}", c.body);
    assert!(c.body.contains("forbidden_host"), "{}", c.body);
    assert_eq!(echo.count(), 0);
}

#[tokio::test]
async fn expired_token_is_renewed_and_the_request_replayed_inside_the_tunnel() {
    if !has_curl() {
        return;
    }
    let mock = MockProvider::start(Style::Rips).await;
    let config = format!(
        "[store]\nkind = \"memory\"\n\
         [forward_proxy]\nenabled = true\nca_cert = \"ca.pem\"\nca_key = \"ca.key\"\n\
         [providers.rips]\ntype = \"oauth2\"\ngrant = \"password\"\ntoken_url = \"{}\"\nbody = \"json\"\n\
         client_id = \"{CLIENT_ID}\"\nusername = \"{USERNAME}\"\npassword = \"{PASSWORD}\"\n\
         [[routes]]\nhost = \"api.rips.test\"\nupstream = \"{}/api/\"\nprovider = \"rips\"\n",
        mock.token_url(),
        mock.base(),
    );
    let proxy = start_proxy(&config).await;
    let ca = proxy.dir.path().join("ca.pem");
    let proxy_url = format!("http://{}", proxy.addr);
    let get = |path: &'static str| {
        let (ca, proxy_url) = (ca.clone(), proxy_url.clone());
        async move {
            curl(&[
                "--proxy",
                &proxy_url,
                "--cacert",
                ca.to_str().unwrap(),
                &format!("https://api.rips.test{path}"),
            ])
            .await
        }
    };
    assert_eq!(get("/a").await.status, "200");
    mock.expire_all();
    let c = get("/b").await;
    assert_eq!(
        c.status, "200",
        "the client never sees the expiry: {}",
        c.body
    );
    let statuses: Vec<u16> = mock.api_hits().iter().map(|h| h.status).collect();
    assert_eq!(statuses, vec![200, 401, 200], "one 401 then one replay");
    assert_eq!(mock.token_requests().len(), 2);
}

#[tokio::test]
async fn disabled_forward_proxy_keeps_refusing_connect() {
    let echo = Echo::start().await;
    let proxy = start_proxy(&format!(
        "[store]\nkind = \"memory\"\n[[routes]]\nprefix = \"/p/\"\nupstream = \"{}/\"\n",
        echo.url()
    ))
    .await;
    let answer = raw(
        proxy.addr,
        &format!("CONNECT {0} HTTP/1.1\r\nHost: {0}\r\n\r\n", echo.addr),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("bad_request"), "{answer}");
    assert!(!Path::new(&proxy.dir.path().join("state/ca.pem")).exists());
    assert_eq!(echo.count(), 0);
}

#[test]
fn ca_prints_the_certificate_and_check_lists_host_routes() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("authproxy.toml"),
        "[store]\nkind = \"file\"\npath = \"state/tokens.json\"\n\
         [forward_proxy]\nenabled = true\ntunnel = [\"*.example.org\"]\n\
         [[routes]]\nhost = \"api.example.test\"\n\
         [[routes]]\nprefix = \"/p/\"\nupstream = \"http://127.0.0.1:9/\"\n",
    )
    .unwrap();
    let (code, stdout, stderr) =
        support::run_cli(&["check", "--config", "authproxy.toml"], &[], dir.path());
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("api.example.test/"), "{stdout}");
    assert!(stdout.contains("https://api.example.test/"), "{stdout}");
    assert!(stdout.contains("made on first start"), "{stdout}");
    assert!(
        stdout.contains("tunnelled blind: *.example.org"),
        "{stdout}"
    );
    let (code, stdout, stderr) =
        support::run_cli(&["ca", "--config", "authproxy.toml"], &[], dir.path());
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with("-----BEGIN CERTIFICATE-----"),
        "{stdout}"
    );
    assert!(stderr.trim_end().ends_with("state/ca.pem"), "{stderr}");
    assert!(!stdout.contains("PRIVATE KEY") && !stderr.contains("PRIVATE KEY"));
    let key = dir.path().join("state/ca.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // The same CA the next time.
    let (_, again, _) = support::run_cli(&["ca", "--config", "authproxy.toml"], &[], dir.path());
    assert_eq!(again, stdout);
}

/// Node's own https client over a `CONNECT` tunnel it opens with `http`
/// (what proxy agents do), trusting only authproxy's CA.
const NODE_CLIENT: &str = r#"
const http = require('http'), https = require('https'), tls = require('tls'), fs = require('fs');
const proxy = new URL(process.env.HTTPS_PROXY);
const ca = fs.readFileSync(process.env.AUTHPROXY_CA);
const connect = http.request({ host: proxy.hostname, port: proxy.port, method: 'CONNECT', path: 'api.example.test:443' });
connect.on('connect', (res, socket) => {
  if (res.statusCode !== 200) { console.log('CONNECT ' + res.statusCode); process.exit(1); }
  const agent = new https.Agent({ keepAlive: false });
  agent.createConnection = () => tls.connect({ socket, servername: 'api.example.test', ca });
  const req = https.request({ host: 'api.example.test', path: '/node/ok', agent }, (r) => { console.log(r.statusCode); r.resume(); r.on('end', () => process.exit(0)); });
  req.on('error', (e) => { console.log('error ' + e.message); process.exit(1); });
  req.end();
});
connect.on('error', (e) => { console.log('error ' + e.message); process.exit(1); });
connect.end();
"#;

#[tokio::test]
async fn node_https_through_a_connect_tunnel() {
    let found = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok();
    if !support::require_tool("node", found, "apt-get install nodejs") {
        return;
    }
    let echo = Echo::start().await;
    let proxy = start_proxy(&config(&echo, "", "")).await;
    let out = tokio::process::Command::new("node")
        .args(["-e", NODE_CLIENT])
        .env("HTTPS_PROXY", format!("http://{}", proxy.addr))
        .env("AUTHPROXY_CA", ca_path(&proxy))
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.trim(),
        "200",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rec = echo.last();
    assert_eq!(rec.path, "/v1/node/ok");
    assert_eq!(rec.header("x-api-key"), Some(KEY));
}

/// Java's `HttpClient` with a `ProxySelector` and a trust store holding
/// only authproxy's CA; HTTP/2 by default, so h2 inside the tunnel.
const JAVA_CLIENT: &str = r#"
import java.io.FileInputStream;
import java.net.InetSocketAddress;
import java.net.ProxySelector;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.security.KeyStore;
import java.security.cert.CertificateFactory;
import javax.net.ssl.SSLContext;
import javax.net.ssl.TrustManagerFactory;

public class Client {
    public static void main(String[] a) throws Exception {
        KeyStore trust = KeyStore.getInstance(KeyStore.getDefaultType());
        trust.load(null, null);
        try (FileInputStream in = new FileInputStream(a[2])) {
            trust.setCertificateEntry("authproxy", CertificateFactory.getInstance("X.509").generateCertificate(in));
        }
        TrustManagerFactory tmf = TrustManagerFactory.getInstance(TrustManagerFactory.getDefaultAlgorithm());
        tmf.init(trust);
        SSLContext tls = SSLContext.getInstance("TLS");
        tls.init(null, tmf.getTrustManagers(), null);
        HttpClient client = HttpClient.newBuilder()
            .proxy(ProxySelector.of(new InetSocketAddress(a[0], Integer.parseInt(a[1]))))
            .sslContext(tls)
            .build();
        HttpResponse<String> r = client.send(HttpRequest.newBuilder(URI.create(a[3])).build(), HttpResponse.BodyHandlers.ofString());
        System.out.println(r.statusCode() + " " + r.version());
    }
}
"#;

#[tokio::test]
async fn java_http_client_with_a_proxy_selector() {
    let found = std::process::Command::new("java")
        .arg("-version")
        .output()
        .is_ok();
    if !support::require_tool("java", found, "apt-get install openjdk-17-jdk-headless") {
        return;
    }
    let echo = Echo::start().await;
    let proxy = start_proxy(&config(&echo, "", "")).await;
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("Client.java");
    std::fs::write(&source, JAVA_CLIENT).unwrap();
    let out = tokio::process::Command::new("java")
        .arg(&source)
        .arg("127.0.0.1")
        .arg(proxy.addr.port().to_string())
        .arg(ca_path(&proxy))
        .arg("https://api.example.test/java/ok")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout.trim(),
        "200 HTTP_2",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rec = echo.last();
    assert_eq!(rec.path, "/v1/java/ok");
    assert_eq!(rec.header("x-api-key"), Some(KEY));
}

/// The leaf a tunnel presents, as `openssl s_client -proxy` sees it:
/// SAN the host, ECDSA P-256, issued by the local CA, valid a day, and
/// verified against the CA alone.
#[tokio::test]
async fn the_leaf_certificate_names_the_host_and_lives_a_day() {
    let echo = Echo::start().await;
    let proxy = start_proxy(&config(&echo, "", "")).await;
    let ca = ca_path(&proxy);
    let mut s_client = tokio::process::Command::new("openssl")
        .args(["s_client", "-proxy"])
        .arg(proxy.addr.to_string())
        .args([
            "-connect",
            "api.example.test:443",
            "-servername",
            "api.example.test",
        ])
        .arg("-CAfile")
        .arg(&ca)
        .args(["-verify_return_error", "-showcerts"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("openssl runs");
    let mut pem = String::new();
    s_client
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut pem)
        .await
        .unwrap();
    assert!(s_client.wait().await.unwrap().success(), "{pem}");
    assert!(pem.contains("Verify return code: 0 (ok)"), "{pem}");
    let leaf = &pem[pem.find("-----BEGIN CERTIFICATE-----").unwrap()
        ..pem.find("-----END CERTIFICATE-----").unwrap() + 25];
    let mut x509 = tokio::process::Command::new("openssl")
        .args(["x509", "-noout", "-text", "-dates"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    x509.stdin
        .take()
        .unwrap()
        .write_all(leaf.as_bytes())
        .await
        .unwrap();
    let text = String::from_utf8(x509.wait_with_output().await.unwrap().stdout).unwrap();
    assert!(text.contains("DNS:api.example.test"), "{text}");
    assert!(
        text.contains("prime256v1") || text.contains("P-256"),
        "{text}"
    );
    assert!(text.contains("Issuer: CN = authproxy local CA"), "{text}");
    assert!(text.contains("TLS Web Server Authentication"), "{text}");
    let date = |key: &str| {
        let line = text.lines().find(|l| l.starts_with(key)).unwrap();
        let out = std::process::Command::new("date")
            .args(["-u", "+%s", "-d", &line[key.len()..]])
            .output()
            .unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .parse::<i64>()
            .unwrap()
    };
    // 24 h valid, plus the hour it is backdated for clocks behind ours.
    assert_eq!(date("notAfter=") - date("notBefore="), 25 * 3600, "{text}");
}
