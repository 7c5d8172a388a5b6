//! Browsers may not borrow the credentials: the exact requests Chromium
//! makes (a page's `fetch`, a cross-site `<img>`, navigations), sent over
//! raw sockets to the proxy as a black box. Credential routes refuse them
//! (the upstream records nothing), local endpoints take what their kind
//! allows (the token store is unchanged), the login pages cannot be framed,
//! the h2 login goes back to the authority the Host check accepted, and
//! the inbound token is taken as `Authorization` on status and metrics only.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use support::{client, start_proxy, ClosedPort, Echo, Proxy};

// The request heads below are what Chromium 156 (Debian 12, headless)
// sent, captured with a raw socket server; only host, path, referer and
// origin are filled in. Chrome 12x sends the same Fetch Metadata.
const UA: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/156.0.0.0 Safari/537.36";
const CH_UA: &str = "sec-ch-ua: \"Not:A-Brand\";v=\"8\", \"Chromium\";v=\"156\"\r\n";

/// `fetch(path)` by a page of the proxy's own origin.
fn same_origin_fetch(host: &str, path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive\r\nsec-ch-ua-platform: \"Linux\"\r\nUser-Agent: {UA}\r\n{CH_UA}sec-ch-ua-mobile: ?0\r\nAccept: */*\r\nSec-Fetch-Site: same-origin\r\nSec-Fetch-Mode: cors\r\nSec-Fetch-Dest: empty\r\nReferer: http://{host}/plain/page.html\r\nAccept-Encoding: gzip, deflate, br, zstd\r\nAccept-Language: en-US,en;q=0.9\r\n\r\n"
    )
}

/// `fetch(path, {method: "POST", headers: {"Content-Type":
/// "application/json"}, body})` by a page of the proxy's own origin.
fn same_origin_post_json(host: &str, path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive\r\nContent-Length: {}\r\nsec-ch-ua-platform: \"Linux\"\r\nUser-Agent: {UA}\r\n{CH_UA}Content-Type: application/json\r\nsec-ch-ua-mobile: ?0\r\nAccept: */*\r\nOrigin: http://{host}\r\nSec-Fetch-Site: same-origin\r\nSec-Fetch-Mode: cors\r\nSec-Fetch-Dest: empty\r\nReferer: http://{host}/plain/page.html\r\nAccept-Encoding: gzip, deflate, br, zstd\r\nAccept-Language: en-US,en;q=0.9\r\n\r\n{body}",
        body.len()
    )
}

/// `<img src="http://{host}{path}">` on another site.
fn cross_site_image(host: &str, path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive\r\nsec-ch-ua-platform: \"Linux\"\r\nUser-Agent: {UA}\r\n{CH_UA}sec-ch-ua-mobile: ?0\r\nAccept: image/jxl,image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8\r\nSec-Fetch-Site: cross-site\r\nSec-Fetch-Mode: no-cors\r\nSec-Fetch-Dest: image\r\nSec-Fetch-Storage-Access: none\r\nReferer: http://evil.example/\r\nAccept-Encoding: gzip, deflate, br, zstd\r\nAccept-Language: en-US,en;q=0.9\r\n\r\n"
    )
}

/// The user typed the address (or opened a bookmark).
fn typed_navigation(host: &str, path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive\r\n{CH_UA}sec-ch-ua-mobile: ?0\r\nsec-ch-ua-platform: \"Linux\"\r\nUpgrade-Insecure-Requests: 1\r\nUser-Agent: {UA}\r\nAccept: text/html,application/xhtml+xml,application/xml;q=0.9,image/jxl,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7\r\nSec-Fetch-Site: none\r\nSec-Fetch-Mode: navigate\r\nSec-Fetch-User: ?1\r\nSec-Fetch-Dest: document\r\nAccept-Encoding: gzip, deflate, br, zstd\r\nAccept-Language: en-US,en;q=0.9\r\n\r\n"
    )
}

/// Another site's script sets `location.href`.
fn cross_site_navigation(host: &str, path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive\r\n{CH_UA}sec-ch-ua-mobile: ?0\r\nsec-ch-ua-platform: \"Linux\"\r\nUpgrade-Insecure-Requests: 1\r\nUser-Agent: {UA}\r\nAccept: text/html,application/xhtml+xml,application/xml;q=0.9,image/jxl,image/avif,image/webp,image/apng,*/*;q=0.8,application/signed-exchange;v=b3;q=0.7\r\nSec-Fetch-Site: cross-site\r\nSec-Fetch-Mode: navigate\r\nSec-Fetch-Dest: document\r\nReferer: http://evil.example/\r\nAccept-Encoding: gzip, deflate, br, zstd\r\nAccept-Language: en-US,en;q=0.9\r\n\r\n"
    )
}

/// The same navigation inside an `<iframe>` of a page of the same site.
fn iframe_navigation(host: &str, path: &str) -> String {
    typed_navigation(host, path)
        .replace("Sec-Fetch-Site: none", "Sec-Fetch-Site: same-origin")
        .replace("Sec-Fetch-Dest: document", "Sec-Fetch-Dest: iframe")
        .replace("Sec-Fetch-User: ?1\r\n", "")
}

/// A request shape: builds the head for a host and a path.
type Shape = fn(&str, &str) -> String;

/// One answer, read by its Content-Length.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn error_code(&self) -> String {
        serde_json::from_str::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_default()
    }
}

/// Sends `request` on a new connection and reads one answer.
async fn send(addr: SocketAddr, request: &str) -> Answer {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (n, v) = l.split_once(':')?;
                    n.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
                let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned();
                return Answer { status, head, body };
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut chunk))
            .await
            .expect("an answer within 30 s")
            .unwrap();
        assert!(n > 0, "closed before a whole answer: {buf:?}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

struct Setup {
    proxy: Proxy,
    /// The upstream of every credential route.
    cred: Echo,
    /// The upstream of the pass-through route.
    plain: Echo,
    _closed: ClosedPort,
}

impl Setup {
    fn host(&self) -> String {
        self.proxy.addr.to_string()
    }

    fn store(&self) -> Option<Vec<u8>> {
        std::fs::read(self.proxy.dir.path().join("state/tokens.json")).ok()
    }
}

/// Credential routes `/cred/` (static), `/oauth/` (oauth2, a seeded
/// refresh-token grant whose token endpoint is a closed port: any token
/// request fails), `/open/` (static, `allow_browsers = true`), `/ready/`
/// (implicit grant, no token yet); pass-through `/plain/`. `server` goes
/// into `[server]`.
async fn setup(server: &str) -> Setup {
    let cred = Echo::start().await;
    let plain = Echo::start().await;
    let closed = ClosedPort::new();
    let port = closed.port();
    let proxy = start_proxy(&format!(
        r#"
[server]
{server}
[providers.st]
type = "static"
headers = {{ Authorization = "Token STATIC-SECRET" }}
[providers.p]
type = "oauth2"
grant = "refresh_token"
token_url = "http://127.0.0.1:{port}/token"
client_id = "c"
refresh_token = "GOOD-R"
access_token = "GOOD-ACCESS"
[providers.ready]
type = "oauth2"
grant = "implicit"
authorize_url = "http://127.0.0.1:{port}/authorize"
client_id = "app"
[[routes]]
prefix = "/cred/"
upstream = "{cred}/"
provider = "st"
[[routes]]
prefix = "/oauth/"
upstream = "{cred}/"
provider = "p"
[[routes]]
prefix = "/open/"
upstream = "{cred}/"
provider = "st"
allow_browsers = true
[[routes]]
prefix = "/ready/"
upstream = "{cred}/"
provider = "ready"
[[routes]]
prefix = "/plain/"
upstream = "{plain}/"
"#,
        cred = cred.url(),
        plain = plain.url(),
    ))
    .await;
    Setup {
        proxy,
        cred,
        plain,
        _closed: closed,
    }
}

#[tokio::test]
async fn credential_routes_refuse_every_browser_request() {
    let s = setup("").await;
    let host = s.host();
    let attempts: [(&str, Shape); 6] = [
        ("same-origin fetch", same_origin_fetch),
        ("same-origin POST", |h, p| {
            same_origin_post_json(h, p, "{\"q\":1}")
        }),
        ("cross-site image", cross_site_image),
        ("typed navigation", typed_navigation),
        ("cross-site navigation", cross_site_navigation),
        ("iframe", iframe_navigation),
    ];
    for (what, request) in attempts {
        let before = s.cred.count();
        for (path, provider) in [("/cred/x", "st"), ("/oauth/x", "p")] {
            let a = send(s.proxy.addr, &request(&host, path)).await;
            assert_eq!(
                (a.status, a.error_code().as_str()),
                (403, "forbidden_browser"),
                "{what} {path}: {}",
                a.body
            );
            assert!(a.body.contains("allow_browsers"), "{}", a.body);
            let body: serde_json::Value = serde_json::from_str(&a.body).unwrap();
            assert_eq!(body["provider"], provider);
        }
        assert_eq!(
            s.cred.count(),
            before,
            "{what}: the credential upstream was contacted"
        );

        // Pass-through routes are not affected; `allow_browsers` opens a
        // credential route to them.
        let a = send(s.proxy.addr, &request(&host, "/plain/x")).await;
        assert_eq!(a.status, 200, "{what} /plain/: {}", a.body);
        let a = send(s.proxy.addr, &request(&host, "/open/x")).await;
        assert_eq!(a.status, 200, "{what} /open/: {}", a.body);
        assert_eq!(
            s.cred.last().header("authorization"),
            Some("Token STATIC-SECRET")
        );
    }
    assert_eq!(s.plain.count(), 6);
    // No browser, no refusal: the same route serves a client library.
    let r = client().get(s.proxy.url("/cred/y")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(s.cred.last().path, "/y");
}

#[tokio::test]
async fn token_endpoint_refuses_browsers_and_the_store_stays_unchanged() {
    let s = setup("").await;
    let host = s.host();
    let stored = s.store();
    let attack = r#"{"access_token":"ATTACKER","refresh_token":"ATTACKER-R"}"#;
    let without_fetch_metadata = same_origin_post_json(&host, "/_authproxy/tokens/p", attack)
        .replace(
            "Sec-Fetch-Site: same-origin\r\nSec-Fetch-Mode: cors\r\nSec-Fetch-Dest: empty\r\n",
            "",
        );
    let without_origin = same_origin_post_json(&host, "/_authproxy/tokens/p", attack)
        .replace(&format!("Origin: http://{host}\r\n"), "");
    for (what, request) in [
        (
            "same-origin fetch",
            same_origin_post_json(&host, "/_authproxy/tokens/p", attack),
        ),
        ("Origin only (an older browser)", without_fetch_metadata),
        ("Fetch Metadata only", without_origin),
    ] {
        let a = send(s.proxy.addr, &request).await;
        assert_eq!(
            (a.status, a.error_code().as_str()),
            (403, "forbidden_browser"),
            "{what}: {}",
            a.body
        );
    }
    assert_eq!(s.store(), stored, "the store changed");
    let status = support::get_json(&client(), s.proxy.url("/_authproxy/status")).await;
    assert_eq!(status["providers"]["p"]["renewals"], 0, "{status}");
    // The provider still injects its own token.
    let r = client()
        .get(s.proxy.url("/oauth/after"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        s.cred.last().header("authorization"),
        Some("Bearer GOOD-ACCESS")
    );
    assert_eq!(s.cred.count(), 1);

    // A client that is no browser may still paste a token.
    let r = client()
        .post(s.proxy.url("/_authproxy/tokens/p"))
        .header("content-type", "application/json")
        .body(r#"{"access_token":"PASTED-BY-HAND"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    client()
        .get(s.proxy.url("/oauth/after"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        s.cred.last().header("authorization"),
        Some("Bearer PASTED-BY-HAND")
    );
}

#[tokio::test]
async fn status_and_metrics_take_only_a_typed_navigation_from_browsers() {
    let s = setup("").await;
    let host = s.host();
    let origin_only = format!(
        "GET /_authproxy/status HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\nAccept: */*\r\n\r\n"
    );
    for path in ["/_authproxy/status", "/_authproxy/metrics"] {
        for (what, request) in [
            ("same-origin fetch", same_origin_fetch(&host, path)),
            ("cross-site navigation", cross_site_navigation(&host, path)),
            ("iframe", iframe_navigation(&host, path)),
            ("cross-site image", cross_site_image(&host, path)),
        ] {
            let a = send(s.proxy.addr, &request).await;
            assert_eq!(
                (a.status, a.error_code().as_str()),
                (403, "forbidden_browser"),
                "{what} {path}: {}",
                a.body
            );
        }
        let a = send(s.proxy.addr, &typed_navigation(&host, path)).await;
        assert_eq!(a.status, 200, "typed {path}: {}", a.body);
        let r = client().get(s.proxy.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path} from a client library");
    }
    let a = send(s.proxy.addr, &origin_only).await;
    assert_eq!(a.error_code(), "forbidden_browser", "{}", a.body);
    // Health says nothing secret: anyone may read it.
    let a = send(
        s.proxy.addr,
        &same_origin_fetch(&host, "/_authproxy/health"),
    )
    .await;
    assert_eq!(a.status, 200);
}

#[tokio::test]
async fn login_pages_are_navigations_only_and_cannot_be_framed() {
    let s = setup("").await;
    let host = s.host();
    let login = send(
        s.proxy.addr,
        &typed_navigation(&host, "/_authproxy/login/ready"),
    )
    .await;
    assert_eq!(login.status, 302, "{}", login.body);
    let callback = send(
        s.proxy.addr,
        &cross_site_navigation(&host, "/_authproxy/callback/ready"),
    )
    .await;
    assert_eq!(callback.status, 200);
    assert!(callback.body.contains("<script>"));
    // A login for a provider without browser login: an error page, with
    // the same headers.
    let refused = send(
        s.proxy.addr,
        &typed_navigation(&host, "/_authproxy/login/st"),
    )
    .await;
    assert_eq!(refused.status, 400);
    for a in [&login, &callback, &refused] {
        assert_eq!(a.header("x-frame-options"), Some("DENY"), "{}", a.head);
        let csp = a.header("content-security-policy").unwrap_or_default();
        assert!(csp.contains("frame-ancestors 'none'"), "{}", a.head);
        assert_eq!(a.header("cache-control"), Some("no-store"), "{}", a.head);
        assert_eq!(
            a.header("referrer-policy"),
            Some("no-referrer"),
            "{}",
            a.head
        );
        assert_eq!(
            a.header("cross-origin-opener-policy"),
            Some("same-origin"),
            "{}",
            a.head
        );
    }
    // Not as a frame, an image or a script's fetch.
    for request in [
        iframe_navigation(&host, "/_authproxy/login/ready"),
        iframe_navigation(&host, "/_authproxy/callback/ready"),
        cross_site_image(&host, "/_authproxy/login/ready"),
        same_origin_fetch(&host, "/_authproxy/login/ready"),
    ] {
        let a = send(s.proxy.addr, &request).await;
        assert_eq!(a.error_code(), "forbidden_browser", "{request}: {}", a.body);
    }
    // The callback's post needs the state of a login started here; from
    // another page of this origin without one it stores nothing.
    let post = same_origin_post_json(
        &host,
        "/_authproxy/callback/ready",
        r#"{"access_token":"ATTACKER","state":"made-up"}"#,
    );
    let a = send(s.proxy.addr, &post).await;
    assert_eq!(a.status, 400, "{}", a.body);
    let r = client().get(s.proxy.url("/ready/x")).send().await.unwrap();
    assert_eq!(r.status(), 503, "a token was stored");
}

/// Over HTTP/2 the Host check reads `:authority`; a `host` header beside
/// it must not move where the provider sends the browser back (or the
/// login URL in a `login_required` answer).
#[tokio::test]
async fn h2_login_redirect_uses_the_authority_the_host_check_accepted() {
    let s = setup("").await;
    let stream = TcpStream::connect(s.proxy.addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let own = format!("http://{}", s.proxy.addr);
    for (path, what) in [
        ("/_authproxy/login/ready", "login"),
        ("/ready/x", "login_required"),
    ] {
        let req = http::Request::get(format!("{own}{path}"))
            .header("host", "evil.example")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let r = sender.send_request(req).await.unwrap();
        let location = r
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_string());
        let status = r.status();
        let body = r.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body);
        let text = match what {
            "login" => {
                assert_eq!(status, 302, "{body}");
                let location = url::Url::parse(&location.unwrap()).unwrap();
                let redirect = location
                    .query_pairs()
                    .find(|(k, _)| k == "redirect_uri")
                    .unwrap()
                    .1
                    .into_owned();
                assert_eq!(redirect, format!("{own}/_authproxy/callback/ready"));
                redirect
            }
            _ => {
                assert_eq!(status, 503, "{body}");
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                v["message"].as_str().unwrap().to_string()
            }
        };
        assert!(!text.contains("evil.example"), "{what}: {text}");
        assert!(text.contains(&own), "{what}: {text}");
    }
}

/// With `inbound_token`, status and metrics also take it as
/// `Authorization: Bearer` (Prometheus' `authorization` setting); proxied
/// routes and other local endpoints only as `Proxy-Authorization`.
#[tokio::test]
async fn inbound_token_as_authorization_on_status_and_metrics_only() {
    const TOKEN: &str = "inbound-token-0123456789";
    let s = setup(&format!("inbound_token = \"{TOKEN}\"")).await;
    let c = client();
    let bearer = format!("Bearer {TOKEN}");
    for path in ["/_authproxy/status", "/_authproxy/metrics"] {
        let r = c
            .get(s.proxy.url(path))
            .header("authorization", &bearer)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let r = c
            .get(s.proxy.url(path))
            .header("authorization", format!("bearer {TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}, scheme in lower case");
        for wrong in [
            format!("Bearer {TOKEN}x"),
            "Bearer inbound".into(),
            "Bearer ".into(),
            TOKEN.into(),
        ] {
            let r = c
                .get(s.proxy.url(path))
                .header("authorization", wrong)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 401, "{path}");
        }
    }
    for path in ["/cred/x", "/plain/x", "/_authproxy/login/ready"] {
        let r = c
            .get(s.proxy.url(path))
            .header("authorization", &bearer)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path} took Authorization");
    }
    let r = c
        .post(s.proxy.url("/_authproxy/tokens/p"))
        .header("authorization", &bearer)
        .header("content-type", "application/json")
        .body(r#"{"access_token":"NOPE"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "tokens took Authorization");
    assert_eq!(s.cred.count() + s.plain.count(), 0);

    // Proxy-Authorization works everywhere and goes no further.
    let r = c
        .get(s.proxy.url("/cred/x"))
        .header("proxy-authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = s.cred.last();
    assert_eq!(seen.header("authorization"), Some("Token STATIC-SECRET"));
    assert_eq!(seen.header("proxy-authorization"), None);
    let r = c
        .get(s.proxy.url("/_authproxy/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "health needs no token");
}
