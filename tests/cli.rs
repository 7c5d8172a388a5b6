//! The `authproxy` binary as users run it: `check`, `run` (startup refusal,
//! serving, SIGTERM drain), the default config path and `health`. Secrets
//! come from environment variables and must never show up in any output.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use tokio::sync::{mpsc, Notify};

use support::{client, run_cli, Echo, ProxyProcess};

const RICLOUD_TOKEN: &str = "ricloud-secret-5b8e2f";
const RIPS_EMAIL: &str = "robot-secret@rips.example";
const RIPS_PASSWORD: &str = "rips-password-secret-9c4d";
const CLIENT_ID: &str = "client-id-secret-1a7f";

/// The secret environment every test passes to the binary.
fn secret_env() -> Vec<(&'static str, &'static str)> {
    vec![
        ("RICLOUD_TOKEN", RICLOUD_TOKEN),
        ("RIPS_EMAIL", RIPS_EMAIL),
        ("RIPS_PASSWORD", RIPS_PASSWORD),
        ("RIPS_CLIENT_ID", CLIENT_ID),
    ]
}

/// Secret values, also each part of a secret around a CR/LF.
const SECRETS: [&str; 4] = [RICLOUD_TOKEN, RIPS_EMAIL, RIPS_PASSWORD, CLIENT_ID];

fn assert_no_secret(what: &str, text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "secret `{s}` appears in {what}:\n{text}");
    }
}

/// A valid config: Token route, header-pair route, OAuth2 password route
/// (never contacted by `check` without `--probe`) and a pass-through route,
/// all to `upstream`.
fn good_config(upstream: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"

[store]
kind = "memory"

[providers.ricloud]
type = "static"
headers = {{ Authorization = "Token ${{RICLOUD_TOKEN}}" }}

[providers.rips_plain]
type = "static"
headers = {{ "X-API-Email" = "${{RIPS_EMAIL}}", "X-API-Password" = "${{RIPS_PASSWORD}}" }}

[providers.rips]
type = "oauth2"
grant = "password"
token_url = "{upstream}/oauth/v2/auth/tokens"
body = "json"
client_id = "${{RIPS_CLIENT_ID}}"
username = "${{RIPS_EMAIL}}"
password = "${{RIPS_PASSWORD}}"

[[routes]]
prefix = "/ricloud/"
upstream = "{upstream}/ricloud/v1/"
provider = "ricloud"

[[routes]]
prefix = "/rips-plain/"
upstream = "{upstream}/rips/"
provider = "rips_plain"

[[routes]]
prefix = "/rips/"
upstream = "{upstream}/rips/api/"
provider = "rips"

[[routes]]
prefix = "/open/"
upstream = "{upstream}/"
"#
    )
}

/// Writes `text` as `authproxy.toml` in a new temp folder.
fn write_config(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("authproxy.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// `authproxy check --config <path>` with the secret env plus `extra`.
fn check(path: &Path, extra: &[(&str, &str)]) -> (i32, String, String) {
    let mut env = secret_env();
    env.extend_from_slice(extra);
    run_cli(
        &["check", "--config", path.to_str().unwrap()],
        &env,
        path.parent().unwrap(),
    )
}

/// Runs the binary like [`run_cli`] but kills it (and fails) if it is still
/// running after `timeout`: for commands that must refuse to start.
fn run_cli_bounded(args: &[&str], envs: &[(&str, &str)], timeout: Duration) -> (i32, String) {
    let child = Command::new(support::binary())
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(timeout) {
        Ok(out) => {
            let out = out.unwrap();
            (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("authproxy {args:?} was still running after {timeout:?}");
        }
    }
}

/// The route table row for `prefix` in `check` output, split into columns.
fn route_row<'a>(stdout: &'a str, prefix: &str) -> Vec<&'a str> {
    stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cols| cols.first() == Some(&prefix))
        .unwrap_or_else(|| panic!("no route row for {prefix}:\n{stdout}"))
}

/// `check` on a good config exits 0 and prints each route's prefix,
/// upstream, provider and credential kind, without any secret value.
#[test]
fn check_good_config_prints_route_table() {
    let (_dir, path) = write_config(&good_config("http://127.0.0.1:9"));
    let (code, stdout, stderr) = check(&path, &[]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert_eq!(
        route_row(&stdout, "/ricloud/"),
        [
            "/ricloud/",
            "http://127.0.0.1:9/ricloud/v1/",
            "ricloud",
            "static"
        ]
    );
    assert_eq!(
        route_row(&stdout, "/rips-plain/"),
        [
            "/rips-plain/",
            "http://127.0.0.1:9/rips/",
            "rips_plain",
            "static"
        ]
    );
    assert_eq!(
        route_row(&stdout, "/rips/"),
        [
            "/rips/",
            "http://127.0.0.1:9/rips/api/",
            "rips",
            "oauth2/password"
        ]
    );
    assert_eq!(
        route_row(&stdout, "/open/"),
        ["/open/", "http://127.0.0.1:9/", "-", "pass-through"]
    );
    assert_no_secret("check stdout", &stdout);
    assert_no_secret("check stderr", &stderr);
}

/// `check` says which credential routes take browser requests.
#[test]
fn check_shows_allow_browsers() {
    let text = good_config("http://127.0.0.1:9").replacen(
        "provider = \"ricloud\"\n",
        "provider = \"ricloud\"\nallow_browsers = true\n",
        1,
    );
    assert!(text.contains("allow_browsers"), "{text}");
    let (_dir, path) = write_config(&text);
    let (code, stdout, stderr) = check(&path, &[]);
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");
    let row = route_row(&stdout, "/ricloud/").join(" ");
    assert!(row.ends_with("static (browsers allowed)"), "{row}");
    let row = route_row(&stdout, "/rips/").join(" ");
    assert!(!row.contains("browsers"), "{row}");
}

/// One bad config for `check`: what is wrong, the config text, extra
/// environment, and what stderr must name.
struct BadCase {
    name: &'static str,
    config: String,
    env: Vec<(&'static str, &'static str)>,
    culprits: Vec<&'static str>,
}

/// Bad configs each exit 64 (EX_USAGE) with stderr naming the culprit
/// (variable name or key path) and containing no secret.
#[test]
fn check_bad_configs_exit_64_naming_the_culprit() {
    let good = good_config("http://127.0.0.1:9");
    let cases = [
        BadCase {
            name: "missing env variable",
            config: good.replace("${RIPS_PASSWORD}", "${RIPS_PASSWORD_UNSET}"),
            env: vec![],
            culprits: vec![
                "RIPS_PASSWORD_UNSET",
                "providers.rips_plain.headers.X-API-Password",
            ],
        },
        BadCase {
            name: "unknown key",
            config: good.replace("[store]", "[store]\npaht = \"x.json\""),
            env: vec![],
            culprits: vec!["store.paht: unknown field `paht`", "fix its spelling"],
        },
        BadCase {
            name: "unknown provider",
            config: good.replace("provider = \"ricloud\"", "provider = \"ricluod\""),
            env: vec![],
            culprits: vec!["routes[0].provider", "ricluod"],
        },
        BadCase {
            name: "duplicate prefix",
            config: good.replace("prefix = \"/open/\"", "prefix = \"/ricloud\""),
            env: vec![],
            culprits: vec!["routes[3].prefix", "duplicate prefix"],
        },
        BadCase {
            name: "CR/LF in a header value",
            config: good.replace("${RIPS_PASSWORD}", "${RIPS_CRLF}"),
            env: vec![(
                "RIPS_CRLF",
                "crlf-secret-part\r\nX-Injected: crlf-tail-secret",
            )],
            culprits: vec![
                "providers.rips_plain.headers.X-API-Password",
                "control character",
            ],
        },
    ];
    for BadCase {
        name,
        config,
        env,
        culprits,
    } in cases
    {
        let (_dir, path) = write_config(&config);
        let (code, stdout, stderr) = check(&path, &env);
        assert_eq!(code, 64, "{name}: stdout:\n{stdout}\nstderr:\n{stderr}");
        for c in culprits {
            assert!(
                stderr.contains(c),
                "{name}: stderr does not name `{c}`:\n{stderr}"
            );
        }
        // One problem per line: `key: what is wrong; the fix`.
        for line in stderr.lines().skip(1) {
            assert!(
                line.starts_with("  ") && line.contains(": "),
                "{name}: stray line `{line}`:\n{stderr}"
            );
        }
        assert_no_secret(name, &stderr);
        assert_no_secret(name, &stdout);
        for part in ["crlf-secret-part", "crlf-tail-secret"] {
            assert!(
                !stderr.contains(part),
                "{name}: secret part in stderr:\n{stderr}"
            );
        }
    }
}

/// `run` on a non-loopback address without `inbound_token` refuses to start
/// (exit 64) and says which settings to change.
#[test]
fn run_refuses_open_relay() {
    let text = good_config("http://127.0.0.1:9").replace("127.0.0.1:0", "0.0.0.0:0");
    let (_dir, path) = write_config(&text);
    let mut env = secret_env();
    env.push(("RUST_LOG", "debug"));
    let (code, stderr) = run_cli_bounded(
        &["run", "--config", path.to_str().unwrap()],
        &env,
        Duration::from_secs(30),
    );
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("server.listen"), "{stderr}");
    assert!(stderr.contains("inbound_token"), "{stderr}");
    assert_no_secret("stderr", &stderr);
}

/// A real process serves static-credential and pass-through routes, stops on
/// SIGTERM with exit 0, and its complete debug log contains no secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_then_exits_cleanly_without_logging_secrets() {
    let echo = Echo::start().await;
    let (_dir, path) = write_config(&good_config(&echo.url()));
    let proc = ProxyProcess::start(&path, &secret_env());
    let c = client();

    let r = c
        .get(proc.url("/ricloud/devices?page=2"))
        .header("authorization", "Bearer client-own")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let last = echo.last();
    assert_eq!(last.path, "/ricloud/v1/devices");
    assert_eq!(last.query.as_deref(), Some("page=2"));
    assert_eq!(
        last.headers["authorization"],
        vec![format!("Token {RICLOUD_TOKEN}")]
    );

    let r = c
        .post(proc.url("/rips-plain/scans"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let last = echo.last();
    assert_eq!(last.path, "/rips/scans");
    assert_eq!(last.headers["x-api-email"], vec![RIPS_EMAIL]);
    assert_eq!(last.headers["x-api-password"], vec![RIPS_PASSWORD]);

    let r = c.get(proc.url("/open/plain")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(echo.last().header("authorization"), None);

    let r = c.get(proc.url("/nowhere")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(echo.count(), 3);

    proc.signal("TERM");
    let (code, log) = tokio::task::spawn_blocking(move || proc.wait())
        .await
        .unwrap();
    assert_eq!(code, Some(0), "log:\n{log}");
    assert!(log.contains("listening on"), "log not captured:\n{log}");
    assert!(
        log.contains("/ricloud/devices"),
        "no access log line:\n{log}"
    );
    assert_no_secret("the process log", &log);
}

/// SIGTERM while a slow request is in flight: the request still completes
/// with 200, new connections are refused meanwhile, and the process exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_request() {
    // The upstream reports each arrival and answers only when released.
    let (arrived_tx, mut arrived_rx) = mpsc::unbounded_channel::<()>();
    let release = Arc::new(Notify::new());
    let rel = release.clone();
    let upstream = support::serve(Router::new().route(
        "/slow",
        get(move || {
            let arrived = arrived_tx.clone();
            let release = rel.clone();
            async move {
                let _ = arrived.send(());
                release.notified().await;
                "slow-done"
            }
        }),
    ))
    .await;
    let (_dir, path) = write_config(&good_config(&format!("http://{upstream}")));
    let proc = ProxyProcess::start(&path, &secret_env());
    let addr = proc.addr;

    let in_flight = tokio::spawn(client().get(proc.url("/open/slow")).send());
    tokio::time::timeout(Duration::from_secs(10), arrived_rx.recv())
        .await
        .expect("the request never reached the upstream");

    proc.signal("TERM");
    let draining = support::eventually(Duration::from_secs(10), || {
        proc.log().contains("shutting down")
    })
    .await;
    assert!(draining, "no drain started:\n{}", proc.log());
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting connections while draining"
    );

    release.notify_one();
    let r = in_flight.await.unwrap().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "slow-done");
    let (code, log) = tokio::task::spawn_blocking(move || proc.wait())
        .await
        .unwrap();
    assert_eq!(code, Some(0), "log:\n{log}");
}

/// Without `--config`, `check` reads `config/authproxy.toml` under the
/// working folder; `AUTHPROXY_CONFIG` takes precedence over it.
#[test]
fn default_config_path_and_env_override() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("config")).unwrap();
    std::fs::write(
        dir.path().join("config/authproxy.toml"),
        "[store]\nkind = \"memory\"\n[[routes]]\nprefix = \"/from-default/\"\nupstream = \"http://127.0.0.1:9/\"\n",
    )
    .unwrap();
    std::fs::create_dir(dir.path().join("elsewhere")).unwrap();
    std::fs::write(
        dir.path().join("elsewhere/other.toml"),
        "[store]\nkind = \"memory\"\n[[routes]]\nprefix = \"/from-env/\"\nupstream = \"http://127.0.0.1:9/\"\n",
    )
    .unwrap();

    let (code, stdout, stderr) = run_cli(&["check"], &[], dir.path());
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("config config/authproxy.toml: OK"),
        "{stdout}"
    );
    assert_eq!(route_row(&stdout, "/from-default/")[2], "-");
    assert!(!stdout.contains("/from-env/"), "{stdout}");

    let (code, stdout, stderr) = run_cli(
        &["check"],
        &[("AUTHPROXY_CONFIG", "elsewhere/other.toml")],
        dir.path(),
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("config elsewhere/other.toml: OK"),
        "{stdout}"
    );
    assert_eq!(route_row(&stdout, "/from-env/")[2], "-");
    assert!(!stdout.contains("/from-default/"), "{stdout}");

    // With neither, the error names the default path and how to change it.
    let empty = tempfile::tempdir().unwrap();
    let (code, _, stderr) = run_cli(&["check"], &[], empty.path());
    assert_eq!(code, 64, "{stderr}");
    assert!(stderr.contains("config/authproxy.toml"), "{stderr}");
    assert!(stderr.contains("AUTHPROXY_CONFIG"), "{stderr}");
}

/// `health --url` exits 0 against a running proxy and non-zero against a
/// closed port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_command() {
    let proxy = support::start_proxy(
        "[store]\nkind = \"memory\"\n[[routes]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:9/\"\n",
    )
    .await;
    let url = proxy.url("/_authproxy/health");
    let cwd = proxy.dir.path().to_path_buf();
    let (code, stdout, stderr) =
        tokio::task::spawn_blocking(move || run_cli(&["health", "--url", &url], &[], &cwd))
            .await
            .unwrap();
    assert_eq!(code, 0, "stdout:\n{stdout}\nstderr:\n{stderr}");

    let closed = support::ClosedPort::new();
    let url = format!("http://{}/_authproxy/health", closed.addr);
    let cwd = proxy.dir.path().to_path_buf();
    let (code, _, stderr) =
        tokio::task::spawn_blocking(move || run_cli(&["health", "--url", &url], &[], &cwd))
            .await
            .unwrap();
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains("unhealthy"), "{stderr}");
    proxy.stop().await;
}
