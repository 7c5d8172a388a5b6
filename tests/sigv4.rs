//! AWS Signature Version 4: the signer against AWS's published test suite
//! (every case, each step), and the proxy end to end against a recording
//! upstream whose requests botocore verifies (`SigV4Auth`,
//! `S3SigV4Auth`): the receiving side checks, never the code that signed.

mod support;

use std::path::{Path, PathBuf};

use authproxy::config::AwsSigV4Config;
use authproxy::credentials::aws_sigv4::canonical;
use authproxy::credentials::AwsSigV4;
use authproxy::secret::Secret;

/// One case of the suite: the raw request and what each step must give.
struct Case {
    name: String,
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    creq: String,
    sts: String,
    authz: String,
}

fn suite_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/aws4_testsuite")
}

fn cases(dir: &Path, out: &mut Vec<Case>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if !path.is_dir() {
            continue;
        }
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let req = path.join(format!("{name}.req"));
        if !req.exists() {
            cases(&path, out);
            continue;
        }
        let read = |ext: &str| {
            std::fs::read_to_string(path.join(format!("{name}.{ext}")))
                .unwrap()
                .replace('\r', "")
        };
        let raw = read("req");
        let (head, body) = raw.split_once("\n\n").unwrap_or((raw.as_str(), ""));
        let mut lines = head.lines();
        let request_line = lines.next().unwrap();
        let (method, rest) = request_line.split_once(' ').unwrap();
        let (target, _version) = rest.rsplit_once(' ').unwrap();
        let mut headers: Vec<(String, String)> = Vec::new();
        for line in lines {
            if line.starts_with([' ', '\t']) {
                // A folded continuation line (get-header-value-multiline).
                let last = headers.last_mut().unwrap();
                last.1.push(' ');
                last.1.push_str(line);
            } else {
                let (n, v) = line.split_once(':').unwrap();
                headers.push((n.to_string(), v.to_string()));
            }
        }
        out.push(Case {
            name: path
                .strip_prefix(suite_dir())
                .unwrap()
                .display()
                .to_string(),
            method: method.into(),
            target: target.into(),
            headers,
            body: body.as_bytes().to_vec(),
            creq: read("creq"),
            sts: read("sts"),
            authz: read("authz"),
        });
    }
}

fn hex_sha256(bytes: &[u8]) -> String {
    support::sha256(bytes)
}

#[test]
fn aws_signature_v4_test_suite() {
    let mut all = Vec::new();
    cases(&suite_dir(), &mut all);
    all.sort_by(|a, b| a.name.cmp(&b.name));
    assert!(all.len() >= 30, "only {} cases found", all.len());
    let signer = AwsSigV4::new(&AwsSigV4Config {
        access_key_id: Secret::new("AKIDEXAMPLE"),
        secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
        session_token: None,
        region: "us-east-1".into(),
        service: "service".into(),
        unsigned_payload: false,
    });
    let mut failures = Vec::new();
    for case in &all {
        let (path, query) = case
            .target
            .split_once('?')
            .unwrap_or((case.target.as_str(), ""));
        let amz_date = case
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("x-amz-date"))
            .map(|(_, v)| v.trim().to_string())
            .unwrap();
        // As botocore's harness does: a session token the canonical request
        // names is the signer's to add (get-vanilla-with-session-token).
        let mut raw_headers = case.headers.clone();
        let token = case
            .creq
            .lines()
            .find_map(|l| l.strip_prefix("x-amz-security-token:"));
        if let Some(token) = token {
            if !raw_headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("x-amz-security-token"))
            {
                raw_headers.push(("X-Amz-Security-Token".into(), token.into()));
            }
        }
        let headers = canonical::canonical_headers(
            raw_headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())),
        );
        let sig = signer.signature(
            &case.method,
            &canonical::canonical_uri(path, false),
            &canonical::canonical_query(query),
            &headers,
            &hex_sha256(&case.body),
            &amz_date,
        );
        let creq = String::from_utf8(sig.canonical_request).unwrap();
        if creq != case.creq || sig.string_to_sign != case.sts || *sig.authorization != case.authz {
            failures.push(format!(
                "{}:\n  creq  {creq:?}\n  want  {:?}\n  sts   {:?}\n  want  {:?}\n  authz {:?}\n  want  {:?}",
                case.name, case.creq, sig.string_to_sign, case.sts, &*sig.authorization, case.authz
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases differ:\n{}",
        failures.len(),
        all.len(),
        failures.join("\n")
    );
}

// ---------------------------------------------------------------------------
// End to end: the proxy signs, a recording upstream keeps every request
// exactly as received, botocore verifies each.
// ---------------------------------------------------------------------------

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::Request;
use axum::response::IntoResponse;
use axum::Router;
use http_body_util::BodyExt;
use support::{client, require_tool, serve, start_proxy};

const ACCESS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY";
const SESSION_TOKEN: &str = "IQoJb3JpZ2luX2VjEXAMPLE//////////wEaCXVzLWVhc3QtMSJHMEUCIQ==";

/// A request as the upstream received it.
#[derive(Clone, Debug)]
struct Got {
    method: String,
    /// Path and query exactly as received.
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Got {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn path(&self) -> &str {
        self.target.split('?').next().unwrap()
    }

    fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }
}

/// Records every request; answers 200, or once, when asked, `403` with a
/// `Date` that many seconds ahead (S3's `RequestTimeTooSkewed`), or a
/// plain `403` (`AccessDenied`).
#[derive(Clone)]
struct Upstream {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Got>>>,
    refuse_next: Arc<Mutex<Option<i64>>>,
    /// The clock this upstream answers with, seconds ahead of ours.
    ahead: Arc<Mutex<i64>>,
}

impl Upstream {
    async fn start() -> Upstream {
        let got: Arc<Mutex<Vec<Got>>> = Arc::default();
        let refuse_next: Arc<Mutex<Option<i64>>> = Arc::default();
        let ahead: Arc<Mutex<i64>> = Arc::default();
        let (g, r, a) = (got.clone(), refuse_next.clone(), ahead.clone());
        let router = Router::new().fallback(move |req: Request| {
            let (g, r, a) = (g.clone(), r.clone(), a.clone());
            async move {
                let (parts, body) = req.into_parts();
                let body = body.collect().await.unwrap().to_bytes().to_vec();
                let mut headers = Vec::new();
                for (n, v) in &parts.headers {
                    headers.push((
                        n.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    ));
                }
                g.lock().unwrap().push(Got {
                    method: parts.method.to_string(),
                    target: parts.uri.path_and_query().unwrap().to_string(),
                    headers,
                    body,
                });
                let date = |ahead: i64| {
                    let t = std::time::SystemTime::now()
                        + std::time::Duration::from_secs(ahead.unsigned_abs());
                    httpdate::fmt_http_date(t)
                };
                let refuse = r.lock().unwrap().take();
                let ahead = *a.lock().unwrap();
                match refuse {
                    Some(skew) => {
                        let code = if skew == 0 {
                            "AccessDenied"
                        } else {
                            "RequestTimeTooSkewed"
                        };
                        (
                            http::StatusCode::FORBIDDEN,
                            [
                                ("date", date(skew)),
                                ("content-type", "application/xml".into()),
                            ],
                            format!("<Error><Code>{code}</Code></Error>"),
                        )
                            .into_response()
                    }
                    None => ([("date", date(ahead))], "{\"ok\":true}").into_response(),
                }
            }
        });
        let addr = serve(router).await;
        Upstream {
            addr,
            got,
            refuse_next,
            ahead,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn all(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    fn last(&self) -> Got {
        self.all().pop().expect("the upstream got no request")
    }
}

/// How a route signs, for the verifier.
struct Signing<'a> {
    region: &'a str,
    service: &'a str,
    token: Option<&'a str>,
    s3: bool,
}

/// The Python of the botocore virtualenv, or `None` (test skipped) when it
/// is missing and AUTHPROXY_TEST_ALLOW_MISSING lists `botocore`.
fn botocore_python() -> Option<PathBuf> {
    let python = std::env::var_os("AUTHPROXY_TEST_BOTOCORE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/botocore-venv/bin/python3")
        });
    let found = std::process::Command::new(&python)
        .args(["-c", "import botocore.auth"])
        .output()
        .is_ok_and(|o| o.status.success());
    require_tool(
        "botocore",
        found,
        "run `bash tests/botocore/setup-venv.sh` (a virtualenv with the pinned botocore in target/botocore-venv; .ci/run does it), or point AUTHPROXY_TEST_BOTOCORE_PYTHON at a Python that has botocore",
    )
    .then_some(python)
}

/// botocore signs each request again; panics with its reasons unless all
/// signatures agree. `unsigned`: the body went as UNSIGNED-PAYLOAD.
fn verify(python: &Path, got: &[Got], how: &Signing<'_>, unsigned: bool) {
    use std::io::Write;
    let mut input = String::new();
    for g in got {
        let host = g.header("host").expect("host");
        let line = serde_json::json!({
            "method": g.method,
            "url": format!("http://{host}{}", g.target),
            "headers": g.headers,
            "body_hex": support::hex(&g.body),
            "access_key": ACCESS_KEY,
            "secret_key": SECRET_KEY,
            "token": how.token,
            "region": how.region,
            "service": how.service,
            "s3": how.s3,
            "unsigned": unsigned,
        });
        input.push_str(&line.to_string());
        input.push('\n');
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/botocore/verify.py");
    let mut child = std::process::Command::new(python)
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.lines().count() == got.len(),
        "botocore disagrees:\n{stdout}\n{}\nrequests: {got:#?}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn config(upstream: &Upstream, provider: &str, route: &str) -> String {
    format!(
        "[server]\nmax_replay_body = \"64KiB\"\n[store]\nkind = \"memory\"\n\
         [providers.aws]\ntype = \"aws_sigv4\"\naccess_key_id = \"{ACCESS_KEY}\"\n\
         secret_access_key = \"{SECRET_KEY}\"\n{provider}\n\
         [[routes]]\nprefix = \"/aws/\"\nupstream = \"{}/\"\nprovider = \"aws\"\n{route}\n",
        upstream.url()
    )
}

#[tokio::test]
async fn get_with_a_query_that_needs_encoding_is_signed_as_botocore_signs_it() {
    let Some(python) = botocore_python() else {
        return;
    };
    let up = Upstream::start().await;
    let proxy = start_proxy(&config(
        &up,
        "region = \"eu-west-1\"\nservice = \"execute-api\"",
        "",
    ))
    .await;
    let c = client();
    // Spaces, `+` (a space, as in forms), `~` plain and encoded, unicode,
    // a repeated name, a name without value, reserved characters.
    let r = c
        .get(proxy.url(
            "/aws/prod/items/a%20b/it~em?b=2&a=x+y&tilde=~v&uni=ü&a=1&emp&sp=a%20b&q=%7E&r=a/b:c@d",
        ))
        .header("authorization", "AWS4-HMAC-SHA256 the client's own")
        .header("x-amz-date", "20000101T000000Z")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = up.last();
    assert_eq!(got.path(), "/prod/items/a%20b/it~em");
    assert_eq!(
        got.query(),
        Some("a=1&a=x%20y&b=2&emp=&q=~&r=a%2Fb%3Ac%40d&sp=a%20b&tilde=~v&uni=%C3%BC"),
        "the query goes out in canonical form"
    );
    assert_ne!(got.header("x-amz-date"), Some("20000101T000000Z"));
    assert!(got.header("x-amz-security-token").is_none());
    verify(
        &python,
        &[got],
        &Signing {
            region: "eu-west-1",
            service: "execute-api",
            token: None,
            s3: false,
        },
        false,
    );
}

#[tokio::test]
async fn post_json_to_bedrock_with_a_session_token_and_client_x_amz_headers() {
    let Some(python) = botocore_python() else {
        return;
    };
    let up = Upstream::start().await;
    let proxy = start_proxy(&config(
        &up,
        &format!(
            "region = \"us-east-1\"\nservice = \"bedrock\"\nsession_token = \"{SESSION_TOKEN}\""
        ),
        "",
    ))
    .await;
    let body = serde_json::json!({
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": "Grüße, \"world\""}],
    })
    .to_string();
    let r = client()
        .post(proxy.url("/aws/model/anthropic.claude-3-5-sonnet-20240620-v1:0/invoke"))
        .header("content-type", "application/json")
        .header("x-amz-target", "Bedrock.InvokeModel")
        .header("x-amz-security-token", "the client's")
        .header("x-amz-content-sha256", "0000")
        .header("user-agent", "not-signed/1.0")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = up.last();
    assert_eq!(got.body, body.as_bytes());
    assert_eq!(got.header("x-amz-security-token"), Some(SESSION_TOKEN));
    let auth = got.header("authorization").unwrap();
    assert!(
        auth.contains("SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date;x-amz-security-token;x-amz-target,"),
        "{auth}"
    );
    verify(
        &python,
        &[got],
        &Signing {
            region: "us-east-1",
            service: "bedrock",
            token: Some(SESSION_TOKEN),
            s3: false,
        },
        false,
    );
}

#[tokio::test]
async fn s3_put_signs_the_body_or_sends_a_large_one_unsigned() {
    let Some(python) = botocore_python() else {
        return;
    };
    let up = Upstream::start().await;
    let proxy = start_proxy(&config(
        &up,
        "region = \"eu-central-1\"\nservice = \"s3\"\nunsigned_payload = true",
        "",
    ))
    .await;
    let how = Signing {
        region: "eu-central-1",
        service: "s3",
        token: None,
        s3: true,
    };
    let c = client();
    // Small: hashed while buffered. The key needs encoding, and `+` and
    // `(` go out in S3's canonical encoding.
    let small = support::pattern(10_000, 7);
    let r = c
        .put(proxy.url("/aws/bucket/a%20b/%c3%bc+(1).txt"))
        .header("content-type", "text/plain")
        .header("x-amz-meta-note", "  two   spaces ")
        .body(small.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = up.last();
    assert_eq!(got.path(), "/bucket/a%20b/%C3%BC%2B%281%29.txt");
    assert_eq!(got.body, small);
    verify(&python, &[got], &how, false);

    // Larger than max_replay_body (64 KiB here): streamed, UNSIGNED-PAYLOAD.
    let large = support::pattern(300_000, 9);
    let r = c
        .put(proxy.url("/aws/bucket/a b/ü.txt"))
        .body(large.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = up.last();
    assert_eq!(got.path(), "/bucket/a%20b/%C3%BC.txt");
    assert_eq!(got.header("x-amz-content-sha256"), Some("UNSIGNED-PAYLOAD"));
    assert_eq!(got.body.len(), large.len());
    verify(&python, &[got], &how, true);

    // A chunked body (no length) that grows past the limit: the same.
    let stream = futures_util::stream::iter(
        large
            .chunks(16 * 1024)
            .map(|c| Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    );
    let r = c
        .put(proxy.url("/aws/bucket/chunked"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = up.last();
    assert_eq!(got.body, large);
    verify(&python, &[got], &how, true);
}

#[tokio::test]
async fn a_body_too_large_to_hash_is_refused_without_unsigned_payload() {
    let up = Upstream::start().await;
    let proxy = start_proxy(&config(
        &up,
        "region = \"us-east-1\"\nservice = \"execute-api\"",
        "",
    ))
    .await;
    let c = client();
    for body in [
        reqwest::Body::from(vec![b'x'; 100_000]),
        reqwest::Body::wrap_stream(futures_util::stream::iter(
            (0..10).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'y'; 10_000]))),
        )),
    ] {
        let r = c.post(proxy.url("/aws/x")).body(body).send().await.unwrap();
        assert_eq!(r.status(), 413);
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["error"], "bad_request");
        assert_eq!(v["provider"], "aws");
        let message = v["message"].as_str().unwrap();
        assert!(message.contains("server.max_replay_body"), "{message}");
        assert!(message.contains("unsigned_payload"), "{message}");
    }
    assert!(up.all().is_empty(), "the upstream saw {:?}", up.all());
}

#[tokio::test]
async fn a_refusal_explained_by_clock_skew_is_signed_again_with_the_upstreams_time() {
    let Some(python) = botocore_python() else {
        return;
    };
    let up = Upstream::start().await;
    let proxy = start_proxy(&config(&up, "region = \"us-east-1\"\nservice = \"s3\"", "")).await;
    let how = Signing {
        region: "us-east-1",
        service: "s3",
        token: None,
        s3: true,
    };
    let c = client();
    // The upstream's clock is an hour ahead: it refuses, saying its time.
    *up.ahead.lock().unwrap() = 3600;
    *up.refuse_next.lock().unwrap() = Some(3600);
    let r = c
        .put(proxy.url("/aws/bucket/key"))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "replayed after the refusal");
    let got = up.all();
    assert_eq!(got.len(), 2);
    let date = |g: &Got| {
        let d = g.header("x-amz-date").unwrap();
        let t = chrono_like(d);
        assert!(t > 0, "{d}");
        t
    };
    let (first, second) = (date(&got[0]), date(&got[1]));
    assert!(
        (3500..=3700).contains(&(second - first)),
        "signed again with the upstream's time: {first} then {second}"
    );
    assert_eq!(got[0].body, b"hello");
    assert_eq!(got[1].body, b"hello");
    verify(&python, &got, &how, false);

    // Later requests are signed with the learnt time at once.
    let r = c.get(proxy.url("/aws/bucket/key")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let got = up.all();
    assert_eq!(got.len(), 3);
    assert!((date(&got[2]) - first) >= 3500);

    // A refusal the time does not explain goes back as it is.
    *up.refuse_next.lock().unwrap() = Some(3600 + 10);
    let r = c.get(proxy.url("/aws/bucket/denied")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(up.all().len(), 4);
}

/// Unix seconds of an `X-Amz-Date` (`20150830T123600Z`).
fn chrono_like(amz: &str) -> i64 {
    let n = |r: std::ops::Range<usize>| amz[r].parse::<i64>().unwrap();
    let (y, m, d) = (n(0..4), n(4..6), n(6..8));
    let (hh, mm, ss) = (n(9..11), n(11..13), n(13..15));
    // Days from civil (Howard Hinnant).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + hh * 3600 + mm * 60 + ss
}

#[test]
fn amz_dates_read_back() {
    assert_eq!(chrono_like("20150830T123600Z"), 1_440_938_160);
}
