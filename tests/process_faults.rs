//! Process-level faults: a store that cannot be written, a corrupt store
//! at start, and a burst of requests across providers while tokens
//! expire, get revoked and the config is reloaded. (`kill -9` in the
//! middle of rotations: tests/crash_rotation.rs.)

mod support;

use std::time::Duration;

use support::providers::{MockProvider, Style, CLIENT_ID, PASSWORD, USERNAME};
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
refresh_token = "{seed}"
[[routes]]
prefix = "/one/"
upstream = "{}/api/"
provider = "one"
"#,
        mock.token_url(),
        mock.base()
    )
}

/// The store folder cannot be written: requests are still served from
/// memory, status and metrics say so, and the token is written as soon as
/// the folder is usable again.
#[tokio::test]
async fn unwritable_store_serves_from_memory_and_writes_later() {
    let mock = MockProvider::start(Style::OneCloud).await;
    mock.issue_seed("seed-w");
    let text = onecloud_config(&mock, "seed-w").replace("listen = \"127.0.0.1:0\"\n", "");
    let proxy = support::start_proxy(&text).await;
    let state = proxy.dir.path().join("state");
    // A file where the folder should be: every write fails, even as root.
    std::fs::write(&state, b"blocker").unwrap();
    let c = client();
    let r = c.get(proxy.url("/one/a")).send().await.unwrap();
    assert_eq!(r.status(), 200, "served with the token held in memory");
    let status = support::get_json(&c, proxy.url("/_authproxy/status")).await;
    let err = status["providers"]["one"]["store_error"].as_str().unwrap();
    assert!(err.contains("tokens.json"), "{status}");
    assert!(status["store"]["error"].is_string());
    let metrics = c
        .get(proxy.url("/_authproxy/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("authproxy_store_write_failures_total 1"),
        "{metrics}"
    );
    // Still works on the in-memory token.
    assert_eq!(
        c.get(proxy.url("/one/b")).send().await.unwrap().status(),
        200
    );

    std::fs::remove_file(&state).unwrap();
    let written = support::eventually(Duration::from_secs(15), || {
        std::fs::read_to_string(state.join("tokens.json")).is_ok_and(|t| t.contains("rt-1-"))
    })
    .await;
    assert!(
        written,
        "the pending token was written once the folder was back"
    );
    // The file appears (rename) a moment before the write reports success
    // and clears the error: poll the status too, bounded.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let status = support::get_json(&c, proxy.url("/_authproxy/status")).await;
        if status["store"]["error"].is_null() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the store error stayed after the write: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A truncated store file stops startup with a message naming the file and
/// what to do; the file is left exactly as it was.
#[test]
fn corrupt_store_file_stops_startup_and_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("state")).unwrap();
    let store = dir.path().join("state/tokens.json");
    let truncated = b"{\"version\":1,\"providers\":{\"one\":{\"refresh_token\":\"rt-9-live";
    std::fs::write(&store, truncated).unwrap();
    std::fs::write(
        dir.path().join("authproxy.toml"),
        "[server]\nlisten = \"127.0.0.1:0\"\n[[routes]]\nprefix = \"/a/\"\nupstream = \"http://127.0.0.1:9/\"\n",
    )
    .unwrap();
    for cmd in ["run", "check"] {
        let (code, _out, err) =
            support::run_cli(&[cmd, "--config", "authproxy.toml"], &[], dir.path());
        assert_eq!(code, 1, "{cmd}: {err}");
        assert!(err.contains("tokens.json"), "{cmd}: names the file: {err}");
        assert!(
            err.contains("Fix or move the file"),
            "{cmd}: says what to do: {err}"
        );
        assert!(!err.contains("rt-9-live"), "{cmd}: no token in the message");
    }
    assert_eq!(std::fs::read(&store).unwrap(), truncated, "never reset");
}

fn burst_config(rips: &MockProvider, one: &MockProvider, extra: &str) -> String {
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
[providers.one]
type = "oauth2"
grant = "refresh_token"
token_url = "{}"
body = "json"
client_id = "{CLIENT_ID}"
refresh_token = "seed-burst"
[[routes]]
prefix = "/rips/"
upstream = "{}/api/"
provider = "rips"
[[routes]]
prefix = "/one/"
upstream = "{}/api/"
provider = "one"
{extra}
"#,
        rips.token_url(),
        one.token_url(),
        rips.base(),
        one.base()
    )
}

/// Hundreds of requests on two providers while their tokens expire and get
/// revoked, with a SIGHUP reload in the middle: every request succeeds (or
/// gets a proper JSON error), and renewals are single flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_across_providers_with_expiry_revocation_and_reload() {
    let rips = MockProvider::start(Style::Rips).await;
    let one = MockProvider::start(Style::OneCloud).await;
    one.issue_seed("seed-burst");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("authproxy.toml");
    std::fs::write(&path, burst_config(&rips, &one, "")).unwrap();
    let proxy = ProxyProcess::start(&path, &[("RUST_LOG", "info")]);
    let c = client();
    assert_eq!(
        c.get(proxy.url("/rips/warm"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(proxy.url("/one/warm")).send().await.unwrap().status(),
        200
    );

    let mut events = 0;
    let mut results = Vec::new();
    for wave in 0..4 {
        match wave {
            0 => rips.expire_all(),
            1 => rips.revoke_all(),
            _ => rips.expire_all(),
        }
        one.expire_all();
        events += 1;
        if wave == 2 {
            std::fs::write(
                &path,
                burst_config(
                    &rips,
                    &one,
                    "[[routes]]\nprefix = \"/extra/\"\nupstream = \"http://127.0.0.1:9/\"\n",
                ),
            )
            .unwrap();
            proxy.signal("HUP");
        }
        let tasks: Vec<_> = (0..150)
            .map(|i| {
                let c = c.clone();
                let url = proxy.url(if i % 2 == 0 {
                    "/rips/item"
                } else {
                    "/one/item"
                });
                tokio::spawn(async move {
                    let r = c.get(url).send().await.unwrap();
                    let status = r.status().as_u16();
                    let body = r.text().await.unwrap();
                    (status, body)
                })
            })
            .collect();
        for t in tasks {
            results.push(t.await.unwrap());
        }
    }
    for (status, body) in &results {
        if *status != 200 {
            let v: serde_json::Value = serde_json::from_str(body)
                .unwrap_or_else(|_| panic!("non-JSON error {status}: {body}"));
            panic!("request failed: {status} {v}");
        }
    }
    // One renewal per expiry/revocation event per provider (+ the first login).
    assert!(
        rips.token_request_count() <= events + 1,
        "rips: {}",
        rips.token_request_count()
    );
    assert!(
        one.token_request_count() <= events + 1,
        "one: {}",
        one.token_request_count()
    );
    assert!(!one.reuse_detected());
    let reloaded = support::eventually(Duration::from_secs(5), || {
        proxy.log().contains("config reloaded")
    })
    .await;
    assert!(reloaded);
    proxy.signal("TERM");
    let (code, log) = tokio::task::spawn_blocking(move || proxy.wait())
        .await
        .unwrap();
    assert_eq!(code, Some(0));
    // Nothing was in flight: the drain ends by itself, not by its timer.
    assert!(log.contains("all connections drained"), "{log}");
    assert!(!log.contains("drain time is up"), "{log}");
}
