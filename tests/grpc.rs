//! gRPC end to end with a real gRPC stack: Python grpcio (pinned in
//! tests/grpc/requirements.txt, in target/grpc-venv made by
//! tests/grpc/setup-venv.sh) as a TLS server whose servicer checks the
//! `authorization` metadata, and as a client on an insecure channel (h2c
//! prior knowledge) to the proxy, which injects an oauth2 token from the
//! mock provider and speaks HTTP/2 over TLS to the server. Unary, server
//! streaming, client streaming, bidirectional ping-pong (which never ends
//! if either direction is held back), a 16 MiB message each way;
//! UNAUTHENTICATED → renewal → replay.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use serde_json::Value;
use support::providers::{MockProvider, Style, CLIENT_ID, CLIENT_SECRET};
use support::{require_tool, start_proxy_in, Proxy};

fn grpc_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/grpc")
}

/// The Python of the grpcio virtualenv, or `None` (test skipped) when it
/// is missing and AUTHPROXY_TEST_ALLOW_MISSING lists `grpcio`.
fn grpc_python() -> Option<PathBuf> {
    let python = std::env::var_os("AUTHPROXY_TEST_GRPC_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/grpc-venv/bin/python3")
        });
    let found = Command::new(&python)
        .args(["-c", "import grpc"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    require_tool(
        "grpcio",
        found,
        "run `bash tests/grpc/setup-venv.sh` (a virtualenv with the pinned grpcio in target/grpc-venv; .ci/run does it), or point AUTHPROXY_TEST_GRPC_PYTHON at a Python that has grpcio",
    )
    .then_some(python)
}

/// The grpcio server, killed when dropped.
struct Server {
    child: Child,
    port: u16,
    /// Its `ACCEPTED <token>` / `REFUSED <token>` lines, as they come.
    lines: std::sync::mpsc::Receiver<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(python: &Path, dir: &Path) -> Server {
        let mut child = Command::new(python)
            .arg(grpc_dir().join("server.py"))
            .arg(dir.join("server.pem"))
            .arg(dir.join("server.key"))
            .arg(dir.join("refused"))
            .stdout(Stdio::piped())
            .spawn()
            .expect("start server.py");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).unwrap();
        let port = first
            .strip_prefix("PORT ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("server.py said {first:?}"));
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Server { child, port, lines }
    }

    /// The lines printed since the last call.
    fn seen(&self) -> Vec<String> {
        self.lines.try_iter().collect()
    }
}

/// Runs client.py's `calls` against the proxy; one JSON object per call.
async fn calls(python: &Path, proxy: &Proxy, calls: &[&str]) -> Vec<Value> {
    let python = python.to_path_buf();
    let target = proxy.addr.to_string();
    let calls: Vec<String> = calls.iter().map(|c| c.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(grpc_dir().join("client.py"))
            .arg(target)
            .args(calls)
            .output()
            .expect("run client.py")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client.py failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A CA, and a leaf for 127.0.0.1 signed by it, as PEM files in `dir`.
fn write_pki(dir: &Path) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
}

async fn setup(python: &Path) -> (Server, MockProvider, Proxy) {
    let dir = tempfile::tempdir().unwrap();
    write_pki(dir.path());
    let server = Server::start(python, dir.path());
    let mock = MockProvider::start(Style::Standard).await;
    let config = format!(
        r#"
[store]
kind = "memory"

[providers.svc]
type = "oauth2"
grant = "client_credentials"
token_url = "{token_url}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
client_auth = "basic"

[[routes]]
prefix = "/test.Echo/"
upstream = "https://127.0.0.1:{port}/test.Echo/"
provider = "svc"
ca_file = "ca.pem"
"#,
        token_url = mock.token_url(),
        port = server.port,
    );
    let proxy = start_proxy_in(&config, dir).await;
    (server, mock, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_and_streaming_calls_carry_the_token_both_ways() {
    let Some(python) = grpc_python() else { return };
    let (server, mock, proxy) = setup(&python).await;
    let got = calls(
        &python,
        &proxy,
        &["unary", "server_stream", "client_stream", "bidi", "large"],
    )
    .await;
    for call in &got {
        assert_eq!(call["status"], "OK", "{call}");
        assert!(
            call["token"].as_str().is_some_and(|t| !t.is_empty()),
            "{call}"
        );
    }
    assert_eq!(got[0]["echoed"], "hello");
    assert_eq!(got[1]["sizes"], serde_json::json!(vec![100000; 5]));
    // 10 messages of 1000, 2000, … 10000 bytes.
    assert_eq!(got[2]["counted"], "10 55000");
    assert_eq!(got[3]["rounds"], 20);
    assert_eq!(got[3]["intact"], true, "{}", got[3]);
    assert_eq!(got[4]["rounds"], 2);
    assert_eq!(got[4]["intact"], true, "{}", got[4]);
    // One token for all of them.
    assert_eq!(mock.token_request_count(), 1);
    assert!(server.seen().iter().all(|l| l.starts_with("ACCEPTED ")));

    // The metrics know the protocol and the gRPC statuses: the five calls,
    // and a call to no route (answered UNIMPLEMENTED by the proxy).
    let got = calls(&python, &proxy, &["unrouted"]).await;
    assert_eq!(got[0]["status"], "UNIMPLEMENTED", "{}", got[0]);
    let text = support::client()
        .get(proxy.url("/_authproxy/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for series in [
        r#"authproxy_upstream_responses_total{route="/test.Echo/",protocol="h2"} 5"#,
        r#"authproxy_grpc_responses_total{route="/test.Echo/",grpc_status="0"} 5"#,
    ] {
        assert!(text.contains(series), "{series} not in\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_renews_the_token_and_replays_a_unary_call() {
    let Some(python) = grpc_python() else { return };
    let (server, mock, proxy) = setup(&python).await;
    let first = calls(&python, &proxy, &["unary"]).await;
    assert_eq!(first[0]["status"], "OK", "{}", first[0]);
    let old = first[0]["token"].as_str().unwrap().to_string();
    server.seen();
    // The server stops taking that token (revoked, say).
    let refused = proxy.dir.path().join("refused");
    std::fs::write(&refused, format!("{old}\n")).unwrap();

    let again = calls(&python, &proxy, &["unary"]).await;
    assert_eq!(again[0]["status"], "OK", "{}", again[0]);
    assert_eq!(again[0]["echoed"], "hello");
    let new = again[0]["token"].as_str().unwrap();
    assert_ne!(new, old);
    assert_eq!(mock.token_request_count(), 2);
    assert_eq!(
        server.seen(),
        [format!("REFUSED {old}"), format!("ACCEPTED {new}")]
    );

    // A streaming call refused: renewed, but not replayed (its request
    // was not read to its end when the answer came); the client gets
    // UNAUTHENTICATED, and the next call the new token.
    std::fs::write(&refused, format!("{old}\n{new}\n")).unwrap();
    let streamed = calls(&python, &proxy, &["bidi", "unary"]).await;
    assert_eq!(streamed[0]["status"], "UNAUTHENTICATED", "{}", streamed[0]);
    assert_eq!(streamed[1]["status"], "OK", "{}", streamed[1]);
    assert_eq!(mock.token_request_count(), 3);
}
