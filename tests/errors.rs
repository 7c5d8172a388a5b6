//! Our own error answers: the JSON body `{"error", "message"}` and the
//! `X-Authproxy-Error` header for the client, the same code in the access
//! log line.

mod support;

use support::{client, Echo, ProxyProcess};

fn config(echo: &Echo) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\
         [store]\nkind = \"memory\"\n\
         [[routes]]\nprefix = \"/e/\"\nupstream = \"{}/\"\n",
        echo.url()
    )
}

/// Each kind of our own answer (a proxied path without a route, a request
/// the guard refuses, an unknown local endpoint) tells the client its code
/// in the body and the header, and the access log line has the same code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_codes_reach_client_and_access_log() {
    let echo = Echo::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("authproxy.toml");
    std::fs::write(&path, config(&echo)).unwrap();
    let proxy = ProxyProcess::start(&path, &[("RUST_LOG", "info")]);
    let c = client();

    let cases = [
        (c.get(proxy.url("/nowhere")), "/nowhere", 404, "no_route"),
        (
            c.get(proxy.url("/e/x"))
                .header("origin", "https://evil.example"),
            "/e/x",
            403,
            "forbidden_origin",
        ),
        (
            c.get(proxy.url("/_authproxy/nothing-here")),
            "/_authproxy/nothing-here",
            404,
            "no_route",
        ),
    ];
    let mut expected_lines = Vec::new();
    for (request, path, status, code) in cases {
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), status, "{path}");
        assert_eq!(r.headers()["x-authproxy-error"], code, "{path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], code, "{path}");
        assert!(body["message"].is_string(), "{path}: {body}");
        expected_lines.push((path, format!("status={status}"), format!("error={code}")));
    }
    assert_eq!(echo.count(), 0);

    proxy.signal("TERM");
    let (code, log) = tokio::task::spawn_blocking(move || proxy.wait())
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{log}");
    for (path, status, error) in expected_lines {
        let line = log
            .lines()
            .find(|l| l.contains("authproxy::access") && l.contains(&format!("path={path} ")))
            .unwrap_or_else(|| panic!("no access line for {path}:\n{log}"));
        assert!(line.contains(&status), "{line}");
        assert!(line.ends_with(&error), "{line}");
    }
}
