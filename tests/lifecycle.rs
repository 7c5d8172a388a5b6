//! The process's life: signals from the moment it says it listens, and
//! the drain at shutdown, upgraded connections included.

mod support;

use std::time::Duration;

use support::{client, Echo, ProxyProcess};

/// "listening on" means every signal handler is in place: a SIGHUP sent
/// the moment that line appears is a reload, not the default action
/// (which ends the process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_right_after_listening_reloads_instead_of_ending_the_process() {
    let echo = Echo::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("authproxy.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[store]\nkind = \"memory\"\n\
             [[routes]]\nprefix = \"/e/\"\nupstream = \"{}/\"\n",
            echo.url()
        ),
    )
    .unwrap();
    // `start` returns as soon as the "listening on" line is read.
    let proxy = ProxyProcess::start(&path, &[("RUST_LOG", "info")]);
    proxy.signal("HUP");
    let reloaded = support::eventually(Duration::from_secs(30), || {
        proxy.log().contains("config reloaded")
    })
    .await;
    assert!(reloaded, "no reload after SIGHUP:\n{}", proxy.log());
    let r = client()
        .get(proxy.url("/_authproxy/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    proxy.signal("TERM");
    let (code, log) = tokio::task::spawn_blocking(move || proxy.wait())
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{log}");
}
