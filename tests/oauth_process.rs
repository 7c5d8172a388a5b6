//! OAuth2 behaviour that only shows across real processes: durability of
//! rotated refresh tokens through `kill -9`, seeds changed in the config,
//! secrets kept out of logs, and `check --probe`.

mod support;

use std::path::Path;

use support::providers::{MockProvider, Style, CLIENT_ID, CLIENT_SECRET, PASSWORD, USERNAME};
use support::{client, ProxyProcess};

fn onecloud_config(mock: &MockProvider, seed: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"

[store]
path = "state/tokens.json"

[providers.one]
type = "oauth2"
grant = "refresh_token"
token_url = "{}"
body = "json"
client_id = "{CLIENT_ID}"
refresh_token = "${{ONE_SEED}}"

[[routes]]
prefix = "/one/"
upstream = "{}/api/"
provider = "one"
"#,
        mock.token_url(),
        mock.base()
    )
    .replace("${ONE_SEED}", seed)
}

async fn status_of(proxy: &ProxyProcess, path: &str) -> u16 {
    client()
        .get(proxy.url(path))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// kill -9 right after a rotation: the restarted proxy must use the rotated
/// refresh token (the old ones are spent; sending one would revoke the chain).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_survives_kill_9() {
    let mock = MockProvider::start(Style::OneCloud).await;
    mock.issue_seed("seed-A");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("authproxy.toml");
    std::fs::write(&config, onecloud_config(&mock, "seed-A")).unwrap();

    for round in 0..3 {
        let proxy = ProxyProcess::start(&config, &[]);
        mock.expire_all();
        assert_eq!(status_of(&proxy, &format!("/one/r{round}")).await, 200);
        // The answer is out, so the rotation was persisted before it: crash now.
        proxy.kill9();
    }
    let proxy = ProxyProcess::start(&config, &[]);
    mock.expire_all();
    assert_eq!(status_of(&proxy, "/one/final").await, 200);
    assert!(
        !mock.reuse_detected(),
        "a spent refresh token was sent again"
    );
    let used: Vec<String> = mock
        .token_requests()
        .iter()
        .map(|r| r.fields["refresh_token"].clone())
        .collect();
    assert_eq!(used.len(), 4);
    assert!(mock.token_requests().iter().all(|r| r.status == 200));
    assert_eq!(used[0], "seed-A", "the seed is used only the first time");
    drop(proxy);
}

/// `TOKIO_WORKER_THREADS=1` runs everything on one thread (the current-
/// thread scheduler): token requests, rotations, the store write, a
/// concurrent burst and a clean SIGTERM all still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_thread_runtime_serves_renews_and_stops() {
    let mock = MockProvider::start(Style::OneCloud).await;
    mock.issue_seed("seed-A");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("authproxy.toml");
    std::fs::write(&config, onecloud_config(&mock, "seed-A")).unwrap();
    let proxy = ProxyProcess::start(&config, &[("TOKIO_WORKER_THREADS", "1")]);
    assert_eq!(status_of(&proxy, "/one/first").await, 200);
    mock.expire_all();
    let burst: Vec<_> = (0..50)
        .map(|i| {
            let url = proxy.url(&format!("/one/burst{i}"));
            tokio::spawn(async move { client().get(url).send().await.unwrap().status() })
        })
        .collect();
    for r in burst {
        assert_eq!(r.await.unwrap(), 200);
    }
    assert_eq!(mock.token_requests().len(), 2, "seed, then one rotation");
    assert!(!mock.reuse_detected());
    proxy.signal("TERM");
    let (code, log) = proxy.wait();
    assert_eq!(code, Some(0), "log:\n{log}");
    // The rotated chain was persisted: a restart continues it.
    let proxy = ProxyProcess::start(&config, &[("TOKIO_WORKER_THREADS", "1")]);
    mock.expire_all();
    assert_eq!(status_of(&proxy, "/one/after-restart").await, 200);
    assert_eq!(mock.token_requests().len(), 3);
    assert!(!mock.reuse_detected());
}

/// A new seed in the config wins over the store; an unchanged one does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_seed_in_config_wins_over_store() {
    let mock = MockProvider::start(Style::OneCloud).await;
    mock.issue_seed("seed-A");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("authproxy.toml");
    std::fs::write(&config, onecloud_config(&mock, "seed-A")).unwrap();
    let proxy = ProxyProcess::start(&config, &[]);
    assert_eq!(status_of(&proxy, "/one/a").await, 200);
    let (code, _) = {
        proxy.signal("TERM");
        proxy.wait()
    };
    assert_eq!(code, Some(0));

    // The operator bootstraps again with a fresh seed from the console.
    mock.issue_seed("seed-B");
    std::fs::write(&config, onecloud_config(&mock, "seed-B")).unwrap();
    let proxy = ProxyProcess::start(&config, &[]);
    mock.expire_all();
    assert_eq!(status_of(&proxy, "/one/b").await, 200);
    let used: Vec<String> = mock
        .token_requests()
        .iter()
        .map(|r| r.fields["refresh_token"].clone())
        .collect();
    assert_eq!(used, vec!["seed-A".to_string(), "seed-B".to_string()]);
    // The store does not keep the seed itself, only a fingerprint.
    let store = std::fs::read_to_string(dir.path().join("state/tokens.json")).unwrap();
    assert!(!store.contains("seed-B"));
    drop(proxy);
}

/// A full run at debug level: no token, password or secret in the log, and
/// the store file is private.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_hold_no_secret_and_store_is_private() {
    let rips = MockProvider::start(Style::Rips).await;
    let std_mock = MockProvider::start(Style::Standard).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("authproxy.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = "127.0.0.1:0"
[providers.rips]
type = "oauth2"
grant = "password"
token_url = "{}"
body = "json"
client_id = "{CLIENT_ID}"
username = "${{RIPS_USER}}"
password = "${{RIPS_PASSWORD}}"
[providers.std]
type = "oauth2"
grant = "client_credentials"
token_url = "{}"
client_id = "{CLIENT_ID}"
client_secret = "${{STD_SECRET}}"
client_auth = "basic"
[[routes]]
prefix = "/rips/"
upstream = "{}/api/"
provider = "rips"
[[routes]]
prefix = "/std/"
upstream = "{}/v1/"
provider = "std"
"#,
            rips.token_url(),
            std_mock.token_url(),
            rips.base(),
            std_mock.base()
        ),
    )
    .unwrap();
    let proxy = ProxyProcess::start(
        &config,
        &[
            ("RIPS_USER", USERNAME),
            ("RIPS_PASSWORD", PASSWORD),
            ("STD_SECRET", CLIENT_SECRET),
        ],
    );
    assert_eq!(status_of(&proxy, "/rips/a").await, 200);
    rips.expire_all();
    assert_eq!(status_of(&proxy, "/rips/b").await, 200);
    rips.revoke_all();
    assert_eq!(status_of(&proxy, "/rips/c").await, 200);
    assert_eq!(status_of(&proxy, "/std/d").await, 200);
    let status = client()
        .get(proxy.url("/_authproxy/status"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    proxy.signal("TERM");
    let (code, log) = proxy.wait();
    assert_eq!(code, Some(0));

    let mut secrets: Vec<String> = vec![PASSWORD.into(), CLIENT_SECRET.into()];
    for hit in rips.api_hits().iter().chain(std_mock.api_hits().iter()) {
        secrets.extend(hit.token.clone());
    }
    for r in rips.token_requests() {
        secrets.extend(r.fields.get("refresh_token").cloned());
    }
    for secret in &secrets {
        // JWTs: their signature part is unique enough to look for on its own.
        let needle = secret.rsplit('.').next().unwrap();
        assert!(!log.contains(needle), "log leaks a secret:\n{log}");
        assert!(!status.contains(needle), "status leaks a secret: {status}");
    }
    assert!(
        log.contains("token renewed"),
        "the log does describe renewals"
    );
    let store = dir.path().join("state/tokens.json");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&store).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// `check --probe` runs each primary grant once, prints no token, skips
/// refresh-token and implicit providers, and fails on a refused grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_probe_reports_each_provider() {
    let rips = MockProvider::start(Style::Rips).await;
    let one = MockProvider::start(Style::OneCloud).await;
    one.issue_seed("seed-1");
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
[providers.rips]
type = "oauth2"
grant = "password"
token_url = "{}"
body = "json"
client_id = "{CLIENT_ID}"
username = "{USERNAME}"
password = "${{RIPS_PASSWORD}}"
[providers.one]
type = "oauth2"
grant = "refresh_token"
token_url = "{}"
body = "json"
client_id = "{CLIENT_ID}"
refresh_token = "seed-1"
[providers.ready]
type = "oauth2"
grant = "implicit"
authorize_url = "https://readycloud.example/authorize"
client_id = "app"
[[routes]]
prefix = "/rips/"
upstream = "{}/api/"
provider = "rips"
"#,
        rips.token_url(),
        one.token_url(),
        rips.base()
    );
    let config = write(dir.path(), "authproxy.toml", &text);
    let config_arg = config.to_str().unwrap().to_string();
    let args = ["check", "--probe", "--config", config_arg.as_str()];
    let (code, out, err) = tokio::task::spawn_blocking({
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let cwd = dir.path().to_path_buf();
        move || {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            support::run_cli(&a, &[("RIPS_PASSWORD", PASSWORD)], &cwd)
        }
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("probe rips: ok"), "{out}");
    assert!(out.contains("probe one: skipped"), "{out}");
    assert!(out.contains("probe ready: skipped"), "{out}");
    assert_eq!(
        one.token_request_count(),
        0,
        "the single-use refresh token was not spent"
    );
    assert_eq!(rips.token_request_count(), 1);
    let token = rips.state.lock().unwrap().api_hits.len();
    assert_eq!(token, 0);
    assert!(!out.contains(PASSWORD) && !err.contains(PASSWORD));
    assert!(!out.contains("eyJ"), "no JWT printed: {out}");

    // A wrong password: exit 1 with the typed error.
    let (code, out, _) = tokio::task::spawn_blocking({
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let cwd = dir.path().to_path_buf();
        move || {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            support::run_cli(&a, &[("RIPS_PASSWORD", "wrong-password")], &cwd)
        }
    })
    .await
    .unwrap();
    assert_eq!(code, 1);
    assert!(out.contains("probe rips: FAILED [invalid_grant]"), "{out}");
    assert!(!out.contains("wrong-password"));
}
