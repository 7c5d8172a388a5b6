//! The secrets audit: one full run with every kind of credential, at debug
//! log level, through successes, renewals, re-logins and every kind of
//! error; no secret value may appear in stdout, stderr, status, metrics,
//! `check` output or any error body. Private keys (JWT signing, client
//! certificates) and the assertions signed with them count as secrets.

mod support;

use authproxy::demo::mocks::google::GoogleMock;
use support::oidc::TestPki;
use support::providers::{MockProvider, Style, CLIENT_ID, CLIENT_SECRET, PASSWORD, USERNAME};
use support::{client, Echo, ProxyProcess};

const INBOUND: &str = "inbound-SECRET-0123456789abcdef";
const STATIC_TOKEN: &str = "static-SECRET-ricloud-55";
const PAIR_PASSWORD: &str = "pair-SECRET-rips-plain-66";
const SEED: &str = "seed-SECRET-onecloud-77";
const PASTED: &str = "pasted-SECRET-ready-88";
const WRONG_PASSWORD: &str = "wrong-SECRET-password-99";
const BASIC_PASSWORD: &str = "basic-SECRET-pw-44";
const QUERY_KEY: &str = "query-SECRET-key+/=45";
const AWS_SECRET: &str = "aws-SECRET-access-key/46";
const AWS_TOKEN: &str = "aws-SECRET-session-token-47";
/// The store's encryption key (base64 of 32 bytes); in the store's file
/// only as what it seals.
const STORE_KEY: &str = "c3RvcmUta2V5LVNFQ1JFVC0wMTIzNDU2Nzg5YWJjZGU=";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_any_output() {
    let echo = Echo::start().await;
    let rips = MockProvider::start(Style::Rips).await;
    let bad_rips = MockProvider::start(Style::Rips).await;
    let one = MockProvider::start(Style::OneCloud).await;
    one.issue_seed(SEED);
    let std_mock = MockProvider::start(Style::Standard).await;
    // Keys: a service account's RSA key (Google mock), an EC key for
    // private_key_jwt at an endpoint whose error page repeats the request
    // body (and so the assertion), a client certificate's key.
    let pki = TestPki::new();
    let (sa_key, sa_jwk) = pki.rsa_key("sa-1");
    let google = GoogleMock::start("robot@audit.iam.example", &sa_jwk).await;
    let pk_mock = MockProvider::start(Style::Rips).await;
    // Its failure page repeats the request body, assertion and all.
    pk_mock.set(|s| s.fail_always = Some(503));
    let (cert, cert_key) = pki.client_cert("audit-client");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("sa.json"),
        serde_json::json!({
            "type": "service_account",
            "private_key_id": "sa-1",
            "private_key": sa_key,
            "client_email": "robot@audit.iam.example",
            "token_uri": google.token_url(),
        })
        .to_string(),
    )
    .unwrap();
    std::fs::write(dir.path().join("client.pem"), &cert).unwrap();
    std::fs::write(dir.path().join("client.key"), &cert_key).unwrap();
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:0"
inbound_token = "${{INBOUND}}"
# Small, so that the aws body past it fits in the socket buffers: the
# proxy answers 413 without reading on, and a client still writing a
# larger body would see a broken pipe instead of the answer.
max_replay_body = "64KiB"
[store]
encryption_key = "${{file:store.key}}"
[providers.ricloud]
type = "static"
headers = {{ Authorization = "Token ${{STATIC_TOKEN}}" }}
[providers.pair]
type = "static"
headers = {{ "X-API-Email" = "{USERNAME}", "X-API-Password" = "${{PAIR_PASSWORD}}" }}
[providers.rips]
type = "oauth2"
grant = "password"
token_url = "{rips_token}"
body = "json"
client_id = "{CLIENT_ID}"
username = "{USERNAME}"
password = "${{RIPS_PASSWORD}}"
[providers.badrips]
type = "oauth2"
grant = "password"
token_url = "{bad_token}"
body = "json"
client_id = "{CLIENT_ID}"
username = "{USERNAME}"
password = "${{WRONG_PASSWORD}}"
[providers.one]
type = "oauth2"
grant = "refresh_token"
token_url = "{one_token}"
body = "json"
client_id = "{CLIENT_ID}"
refresh_token = "${{SEED}}"
[providers.std]
type = "oauth2"
grant = "client_credentials"
token_url = "{std_token}"
client_id = "{CLIENT_ID}"
client_secret = "${{STD_SECRET}}"
client_auth = "basic"
[providers.ready]
type = "oauth2"
grant = "implicit"
authorize_url = "https://ready.example/authorize"
client_id = "ready-app"
[providers.gcp]
type = "oauth2"
grant = "jwt_bearer"
service_account_file = "sa.json"
scope = "https://www.example/auth/cloud"
[providers.pkjwt]
type = "oauth2"
grant = "client_credentials"
token_url = "{pk_token}"
client_id = "{CLIENT_ID}"
client_auth = "private_key_jwt"
body = "json"
private_key = "${{file:client.key}}"
key_id = "audit-k"
[providers.dpop]
type = "oauth2"
grant = "client_credentials"
token_url = "{std_token}"
client_id = "{CLIENT_ID}"
client_secret = "${{STD_SECRET}}"
client_auth = "basic"
dpop = true
[[routes]]
prefix = "/gcp/"
upstream = "{google}/"
provider = "gcp"
[[routes]]
prefix = "/dpop/"
upstream = "{echo}/"
provider = "dpop"
[[routes]]
prefix = "/pkjwt/"
upstream = "{echo}/"
provider = "pkjwt"
[[routes]]
prefix = "/mtls/"
upstream = "{echo}/"
client_cert = "client.pem"
client_key = "client.key"
[[routes]]
prefix = "/ricloud/"
upstream = "{echo}/"
provider = "ricloud"
[[routes]]
prefix = "/pair/"
upstream = "{echo}/"
provider = "pair"
[[routes]]
prefix = "/rips/"
upstream = "{rips}/api/"
provider = "rips"
[[routes]]
prefix = "/badrips/"
upstream = "{bad}/api/"
provider = "badrips"
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
[[routes]]
prefix = "/dead/"
upstream = "http://127.0.0.1:9/"
provider = "ricloud"
[providers.basic]
type = "basic"
username = "{USERNAME}"
password = "${{BASIC_PASSWORD}}"
[providers.query]
type = "query"
params = {{ api_key = "${{QUERY_KEY}}" }}
[providers.aws]
type = "aws_sigv4"
access_key_id = "AKIDEXAMPLE"
secret_access_key = "${{AWS_SECRET}}"
session_token = "${{AWS_TOKEN}}"
region = "us-east-1"
service = "execute-api"
[[routes]]
prefix = "/basic/"
upstream = "{echo}/"
provider = "basic"
allow = ["GET /a", "GET /b"]
[[routes]]
prefix = "/query/"
upstream = "{echo}/"
provider = "query"
[[routes]]
prefix = "/aws/"
upstream = "{echo}/"
provider = "aws"
[[routes]]
prefix = "/deadbasic/"
upstream = "http://127.0.0.1:9/"
provider = "basic"
[[routes]]
prefix = "/deadquery/"
upstream = "http://127.0.0.1:9/"
provider = "query"
[[routes]]
prefix = "/deadaws/"
upstream = "http://127.0.0.1:9/"
provider = "aws"
"#,
        rips_token = rips.token_url(),
        bad_token = bad_rips.token_url(),
        one_token = one.token_url(),
        std_token = std_mock.token_url(),
        echo = echo.url(),
        rips = rips.base(),
        bad = bad_rips.base(),
        one = one.base(),
        std = std_mock.base(),
        google = google.base(),
        pk_token = pk_mock.token_url(),
    );
    let path = dir.path().join("authproxy.toml");
    std::fs::write(&path, config).unwrap();
    std::fs::write(dir.path().join("store.key"), format!("{STORE_KEY}\n")).unwrap();
    let env = [
        ("INBOUND", INBOUND),
        ("STATIC_TOKEN", STATIC_TOKEN),
        ("PAIR_PASSWORD", PAIR_PASSWORD),
        ("RIPS_PASSWORD", PASSWORD),
        ("WRONG_PASSWORD", WRONG_PASSWORD),
        ("SEED", SEED),
        ("STD_SECRET", CLIENT_SECRET),
        ("BASIC_PASSWORD", BASIC_PASSWORD),
        ("QUERY_KEY", QUERY_KEY),
        ("AWS_SECRET", AWS_SECRET),
        ("AWS_TOKEN", AWS_TOKEN),
    ];

    let path_arg = path.to_str().unwrap().to_string();
    let (code, check_out, check_err) = {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let cwd = dir.path().to_path_buf();
        let p = path_arg.clone();
        tokio::task::spawn_blocking(move || {
            let e: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            support::run_cli(&["check", "--probe", "--config", &p], &e, &cwd)
        })
        .await
        .unwrap()
    };
    assert_eq!(code, 1, "badrips fails its probe: {check_out}{check_err}");

    let mut envs = env.to_vec();
    envs.push(("RUST_LOG", "debug"));
    let proxy = ProxyProcess::start(&path, &envs);
    let c = client();
    let auth = format!("Bearer {INBOUND}");
    let mut bodies = String::new();
    let get = |p: &'static str, with_auth: bool| {
        let c = c.clone();
        let url = proxy.url(p);
        let auth = auth.clone();
        async move {
            let mut r = c.get(url);
            if with_auth {
                r = r.header("proxy-authorization", auth);
            }
            let r = r.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    for (p, expect) in [
        ("/ricloud/a", 200),
        ("/pair/a", 200),
        ("/rips/a", 200),
        ("/one/a", 200),
        ("/std/a", 200),
        ("/gcp/a", 200),
        ("/mtls/a", 200),
        ("/pkjwt/a", 502),
        ("/badrips/a", 502),
        ("/ready/a", 503),
        ("/dead/a", 502),
        ("/nothing/here", 404),
        ("/basic/a", 200),
        ("/basic/forbidden", 403),
        ("/query/a?api_key=mine&x=1", 200),
        ("/aws/a?b=1", 200),
        ("/deadbasic/a", 502),
        ("/deadquery/a?x=1", 502),
        ("/deadaws/a", 502),
        ("/_authproxy/status", 200),
        ("/_authproxy/metrics", 200),
    ] {
        let (status, body) = get(p, true).await;
        assert_eq!(status, expect, "{p}: {body}");
        // Upstream answers are the upstream's business (the mocks echo the
        // request); what the proxy itself says must be clean.
        if expect != 200 || p.starts_with("/_authproxy/") {
            bodies.push_str(&body);
        }
    }
    // DPoP proofs are secrets too (whoever holds one can replay it for a
    // moment): the one the upstream got is looked for below.
    assert_eq!(get("/dpop/a", true).await.0, 200);
    let proof = echo
        .last()
        .header("dpop")
        .expect("a DPoP proof")
        .to_string();
    rips.expire_all();
    one.expire_all();
    assert_eq!(get("/rips/b", true).await.0, 200);
    assert_eq!(get("/one/b", true).await.0, 200);
    rips.revoke_all();
    assert_eq!(get("/rips/c", true).await.0, 200);
    google.revoke_all();
    assert_eq!(
        get("/gcp/b", true).await.0,
        200,
        "renewed with a new assertion"
    );
    let (status, body) = get("/ricloud/a", false).await;
    assert_eq!(status, 401);
    bodies.push_str(&body);
    let r = c
        .post(proxy.url("/_authproxy/tokens/ready"))
        .header("proxy-authorization", &auth)
        .json(&serde_json::json!({"access_token": PASTED}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    bodies.push_str(&r.text().await.unwrap());
    let r = c
        .post(proxy.url("/_authproxy/tokens/ready"))
        .header("proxy-authorization", &auth)
        .json(&serde_json::json!({"access_token": format!("{PASTED}\r\nX: y")}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    bodies.push_str(&r.text().await.unwrap());
    assert_eq!(get("/ready/b", true).await.0, 200);
    // An aws_sigv4 body too large to hash: 413, nothing sent.
    let r = c
        .post(proxy.url("/aws/big"))
        .header("proxy-authorization", &auth)
        .body(vec![b'x'; (64 << 10) + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    bodies.push_str(&r.text().await.unwrap());
    // The credentials did reach the upstream (so the audit means something).
    let sent = echo.requests.lock().unwrap().clone();
    assert!(sent.iter().any(|r| r
        .query
        .as_deref()
        .is_some_and(|q| q.contains("api_key=query-SECRET"))));
    assert!(sent
        .iter()
        .any(|r| r.header("x-amz-security-token") == Some(AWS_TOKEN)));
    bodies.push_str(&get("/_authproxy/status", true).await.1);
    bodies.push_str(&get("/_authproxy/metrics", true).await.1);
    proxy.signal("TERM");
    let (code, log) = proxy.wait();
    assert_eq!(code, Some(0));
    assert!(log.contains("DEBUG"), "ran at debug level");

    let mut secrets: Vec<String> = [
        INBOUND,
        STATIC_TOKEN,
        PAIR_PASSWORD,
        SEED,
        PASTED,
        WRONG_PASSWORD,
        PASSWORD,
        CLIENT_SECRET,
        STORE_KEY,
        BASIC_PASSWORD,
        QUERY_KEY,
        AWS_SECRET,
        AWS_TOKEN,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // The forms they travel in: Basic's base64, the query's encoding.
    {
        use base64::Engine;
        secrets.push(
            base64::engine::general_purpose::STANDARD
                .encode(format!("{USERNAME}:{BASIC_PASSWORD}")),
        );
        secrets.push("query-SECRET-key%2B%2F%3D45".into());
    }
    for m in [&rips, &one, &std_mock] {
        for h in m.api_hits() {
            secrets.extend(h.token.map(|t| t.rsplit('.').next().unwrap().to_string()));
        }
        for r in m.token_requests() {
            secrets.extend(r.fields.get("refresh_token").cloned());
        }
    }
    // Every line of every private key, and every assertion sent (whole,
    // and its signature alone).
    for pem in [&sa_key, &cert_key] {
        secrets.extend(
            pem.lines()
                .filter(|l| !l.starts_with("-----") && l.len() >= 16)
                .map(str::to_string),
        );
    }
    let mut assertions: Vec<String> = google.received().into_iter().map(|r| r.assertion).collect();
    assert_eq!(
        assertions.len(),
        2 + 1,
        "probe, first token, renewal: {assertions:?}"
    );
    for r in pk_mock.token_requests() {
        assertions.extend(r.fields.get("client_assertion").cloned());
    }
    assert!(
        assertions.len() > 3,
        "the refused private_key_jwt requests were recorded"
    );
    assertions.push(proof);
    // Of an assertion, the header is the same every time (alg, kid); its
    // claims and signature are not: no run of 32 of their characters may
    // show (provider text is cut at 200 characters, so a whole assertion
    // never would).
    let mut runs: Vec<String> = Vec::new();
    for a in assertions {
        let (_, rest) = a.split_once('.').unwrap();
        let rest: Vec<char> = rest.chars().collect();
        for start in (0..rest.len().saturating_sub(24)).step_by(8) {
            runs.push(rest[start..start + 24].iter().collect());
        }
        secrets.push(a);
    }
    for run in &runs {
        for (what, text) in [
            ("check stdout", &check_out),
            ("check stderr", &check_err),
            ("log", &log),
            ("answers", &bodies),
        ] {
            assert!(
                !text.contains(run.as_str()),
                "{what} shows part of an assertion: {run}"
            );
        }
    }
    // Encrypted: the store file holds no token, seed or password either.
    let store = std::fs::read_to_string(dir.path().join("state/tokens.json")).unwrap();
    assert!(store.contains("\"sealed\""), "{store}");
    for s in &secrets {
        for (what, text) in [
            ("check stdout", &check_out),
            ("check stderr", &check_err),
            ("log", &log),
            ("answers", &bodies),
            ("store file", &store),
        ] {
            assert!(!text.contains(s.as_str()), "{what} contains secret {s}");
        }
    }
}

/// The same for the Redis store with a key: no token, seed, password or
/// key in any Redis value, nor in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_redis_holds_no_secret() {
    let Some(redis) = support::redis_server::RedisServer::start() else {
        return;
    };
    let rips = MockProvider::start(Style::Rips).await;
    let one = MockProvider::start(Style::OneCloud).await;
    one.issue_seed(SEED);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("store.key"), STORE_KEY).unwrap();
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[store]
kind = "redis"
url = "{url}"
encryption_key = "${{file:store.key}}"
[providers.rips]
type = "oauth2"
grant = "password"
token_url = "{rips_token}"
body = "json"
client_id = "{CLIENT_ID}"
username = "{USERNAME}"
password = "${{RIPS_PASSWORD}}"
[providers.one]
type = "oauth2"
grant = "refresh_token"
token_url = "{one_token}"
body = "json"
client_id = "{CLIENT_ID}"
refresh_token = "${{SEED}}"
[[routes]]
prefix = "/rips/"
upstream = "{rips}/api/"
provider = "rips"
[[routes]]
prefix = "/one/"
upstream = "{one}/api/"
provider = "one"
"#,
        url = redis.url(),
        rips_token = rips.token_url(),
        one_token = one.token_url(),
        rips = rips.base(),
        one = one.base(),
    );
    let path = dir.path().join("authproxy.toml");
    std::fs::write(&path, config).unwrap();
    let proxy = ProxyProcess::start(
        &path,
        &[
            ("RIPS_PASSWORD", PASSWORD),
            ("SEED", SEED),
            ("RUST_LOG", "debug"),
        ],
    );
    let c = client();
    for p in ["/rips/a", "/one/a"] {
        let r = c.get(proxy.url(p)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{p}");
    }
    rips.expire_all();
    one.expire_all();
    for p in ["/rips/b", "/one/b"] {
        let r = c.get(proxy.url(p)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{p}");
    }
    proxy.signal("TERM");
    let (code, log) = proxy.wait();
    assert_eq!(code, Some(0));

    let mut secrets: Vec<String> = [SEED, PASSWORD, STORE_KEY]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for m in [&rips, &one] {
        for h in m.api_hits() {
            secrets.extend(h.token.map(|t| t.rsplit('.').next().unwrap().to_string()));
        }
        for r in m.token_requests() {
            secrets.extend(r.fields.get("refresh_token").cloned());
        }
        secrets.extend(m.live_refresh_tokens());
    }
    let mut conn = redis.connection();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    let mut values = String::new();
    for key in &keys {
        let kind: String = redis::cmd("TYPE").arg(key).query(&mut conn).unwrap();
        let value: String = match kind.as_str() {
            "hash" => {
                let v: Vec<String> = redis::cmd("HGETALL").arg(key).query(&mut conn).unwrap();
                v.join(" ")
            }
            _ => redis::cmd("GET").arg(key).query(&mut conn).unwrap(),
        };
        values.push_str(&format!("{key} {value}\n"));
    }
    assert!(values.contains("sealed"), "{values}");
    for s in &secrets {
        assert!(
            !values.contains(s.as_str()),
            "redis holds secret {s}:\n{values}"
        );
        assert!(!log.contains(s.as_str()), "log contains secret {s}");
    }
}

// Secrets that echoing token endpoints send back (every error answer of the
// mocks repeats what it got). Special characters, so that URL-encoded and
// JSON-escaped echoes are checked too.
const STALE_SEED: &str = "stale-SECRET-seed-31";
const REUSED_SEED: &str = "reused-SECRET-seed-32";
const BAD_SECRET: &str = "bad/SECRET+client&=33";
const FORM_PASSWORD: &str = "form/SECRET+pw&=ü-34";
const DOWN_SEED: &str = "down-SECRET-\"seed\\-35";
const ODD_SEED: &str = "odd-SECRET-seed-36";
const ECHO_INBOUND: &str = "inbound-SECRET-echo-37";
const ECHO_STATIC: &str = "static-SECRET-echo-38";

/// The forms a secret takes in what a token endpoint echoes: as is,
/// form-URL-encoded, percent-encoded, JSON-escaped.
fn encoded_forms(secret: &str) -> Vec<String> {
    let form: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    let percent = form.replace('+', "%20");
    let json = serde_json::to_string(secret).unwrap();
    let json = json[1..json.len() - 1].to_string();
    let mut forms = vec![secret.to_string(), form, percent, json];
    forms.dedup();
    forms
}

/// Issue 13 item 8: a token endpoint whose error text contains the refresh
/// token it got (or the client secret, the password, the request body)
/// must not make the proxy repeat it in the client's answer, status,
/// metrics or logs (debug level). Every error path of the token client
/// against an echoing endpoint: refused refresh token (unknown and
/// reused), wrong client secret over HTTP Basic, a form body to a
/// JSON-only endpoint, 5xx HTML pages with the JSON body in them, a
/// made-up error code, and text naming secrets the endpoint was never
/// sent (the inbound token, another provider's static token).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_text_is_scrubbed_of_every_secret() {
    let one = MockProvider::start(Style::OneCloud).await;
    one.issue_seed(REUSED_SEED);
    let rips = MockProvider::start(Style::Rips).await;
    let std_mock = MockProvider::start(Style::Standard).await;
    let down = MockProvider::start(Style::OneCloud).await;
    down.issue_seed(DOWN_SEED);
    down.set(|s| s.fail_always = Some(503));
    let odd = MockProvider::start(Style::OneCloud).await;
    odd.set(|s| {
        s.answer_override = Some(
            serde_json::json!({
                "error": format!("refused_{ODD_SEED}"),
                "error_description": format!("caller sent {ECHO_INBOUND}; see also {ECHO_STATIC}"),
            })
            .to_string(),
        )
    });
    let echo = Echo::start().await;
    // The reused seed is spent before the proxy sends it.
    let c = client();
    let spent = c
        .post(one.token_url())
        .json(&serde_json::json!({"grant_type": "refresh_token", "client_id": CLIENT_ID, "refresh_token": REUSED_SEED}))
        .send()
        .await
        .unwrap();
    assert_eq!(spent.status(), 200);

    let onecloud = |name: &str, mock: &MockProvider, seed_var: &str| {
        format!(
            r#"
[providers.{name}]
type = "oauth2"
grant = "refresh_token"
token_url = "{}"
body = "json"
client_id = "{CLIENT_ID}"
refresh_token = "${{{seed_var}}}"
[[routes]]
prefix = "/{name}/"
upstream = "{}/api/"
provider = "{name}"
"#,
            mock.token_url(),
            mock.base()
        )
    };
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:0"
inbound_token = "${{INBOUND}}"
[providers.ricloud]
type = "static"
headers = {{ Authorization = "Token ${{STATIC_TOKEN}}" }}
[providers.badclient]
type = "oauth2"
grant = "client_credentials"
token_url = "{std_token}"
client_id = "{CLIENT_ID}"
client_secret = "${{BAD_SECRET}}"
client_auth = "basic"
[providers.formrips]
type = "oauth2"
grant = "password"
token_url = "{rips_token}"
body = "form"
client_id = "{CLIENT_ID}"
username = "{USERNAME}"
password = "${{FORM_PASSWORD}}"
[[routes]]
prefix = "/ricloud/"
upstream = "{echo}/"
provider = "ricloud"
[[routes]]
prefix = "/badclient/"
upstream = "{std}/v1/"
provider = "badclient"
[[routes]]
prefix = "/formrips/"
upstream = "{rips}/api/"
provider = "formrips"
{stale}{reused}{down_cfg}{odd_cfg}"#,
        std_token = std_mock.token_url(),
        rips_token = rips.token_url(),
        echo = echo.url(),
        std = std_mock.base(),
        rips = rips.base(),
        stale = onecloud("stale", &one, "STALE_SEED"),
        reused = onecloud("reused", &one, "REUSED_SEED"),
        down_cfg = onecloud("down", &down, "DOWN_SEED"),
        odd_cfg = onecloud("odd", &odd, "ODD_SEED"),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("authproxy.toml");
    std::fs::write(&path, config).unwrap();
    let env = [
        ("INBOUND", ECHO_INBOUND),
        ("STATIC_TOKEN", ECHO_STATIC),
        ("BAD_SECRET", BAD_SECRET),
        ("FORM_PASSWORD", FORM_PASSWORD),
        ("STALE_SEED", STALE_SEED),
        ("REUSED_SEED", REUSED_SEED),
        ("DOWN_SEED", DOWN_SEED),
        ("ODD_SEED", ODD_SEED),
    ];

    // `check --probe` runs the primary grants: badclient and formrips fail.
    let (code, check_out, check_err) = {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let cwd = dir.path().to_path_buf();
        let p = path.to_str().unwrap().to_string();
        tokio::task::spawn_blocking(move || {
            let e: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            support::run_cli(&["check", "--probe", "--config", &p], &e, &cwd)
        })
        .await
        .unwrap()
    };
    assert_eq!(code, 1, "{check_out}{check_err}");

    let mut envs = env.to_vec();
    envs.push(("RUST_LOG", "debug"));
    let proxy = ProxyProcess::start(&path, &envs);
    let auth = format!("Bearer {ECHO_INBOUND}");
    let get = |p: String| {
        let c = c.clone();
        let url = proxy.url(&p);
        let auth = auth.clone();
        async move {
            let r = c
                .get(url)
                .header("proxy-authorization", auth)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let mut answers = Vec::new();
    for (route, error) in [
        ("stale", "reauthentication_failed"),
        ("reused", "reauthentication_failed"),
        ("badclient", "reauthentication_failed"),
        ("formrips", "token_endpoint_error"),
        ("down", "token_endpoint_error"),
        ("odd", "token_endpoint_error"),
    ] {
        // Twice: the second answer comes from the remembered failure.
        for _ in 0..2 {
            let (status, body) = get(format!("/{route}/x")).await;
            assert_eq!(status, 502, "{route}: {body}");
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["error"], error, "{route}: {body}");
            answers.push((route, body));
        }
    }
    assert!(one.reuse_detected(), "the proxy sent the spent seed");
    assert_eq!(
        down.token_request_count(),
        4,
        "5xx pages are retried (bounded)"
    );
    let (_, status) = get("/_authproxy/status".into()).await;
    let (_, metrics) = get("/_authproxy/metrics".into()).await;
    proxy.signal("TERM");
    let (code, log) = proxy.wait();
    assert_eq!(code, Some(0));
    assert!(log.contains("DEBUG"), "ran at debug level");

    let mut secrets = vec![
        STALE_SEED,
        REUSED_SEED,
        BAD_SECRET,
        FORM_PASSWORD,
        DOWN_SEED,
        ODD_SEED,
        ECHO_INBOUND,
        ECHO_STATIC,
    ]
    .into_iter()
    .map(str::to_string)
    .collect::<Vec<_>>();
    for m in [&one, &rips, &std_mock, &down, &odd] {
        secrets.extend(m.access_tokens());
        secrets.extend(m.live_refresh_tokens());
    }
    let bodies: String = answers.iter().map(|(_, b)| b.as_str()).collect();
    for s in &secrets {
        for form in encoded_forms(s) {
            for (what, text) in [
                ("check stdout", &check_out),
                ("check stderr", &check_err),
                ("log", &log),
                ("answers", &bodies),
                ("status", &status),
                ("metrics", &metrics),
            ] {
                assert!(
                    !text.contains(form.as_str()),
                    "{what} contains secret {s} (as {form}):\n{text}"
                );
            }
        }
    }

    // What is left of the provider's text still says what went wrong, in
    // at most 200 characters.
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    for (route, says) in [
        ("stale", "is not valid"),
        ("reused", "was already used"),
        ("badclient", "unknown"),
        ("formrips", "must be a JSON object"),
        ("down", "Service Unavailable"),
        ("odd", "caller sent"),
    ] {
        let message = status["providers"][route]["last_error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("{route}: {status}"));
        assert!(message.contains(says), "{route}: {message}");
        assert!(message.contains("[redacted]"), "{route}: {message}");
        let (_, body) = answers.iter().find(|(r, _)| *r == route).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(
            v["message"].as_str().unwrap().contains(says),
            "{route}: {body}"
        );
    }
    assert!(
        metrics.contains("outcome=\"other\""),
        "a made-up error code is `other` in metrics"
    );
}
