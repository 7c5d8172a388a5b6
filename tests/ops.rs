//! Operations, as an operator drives them: readiness and `health
//! --ready`, `health` finding the proxy from its config, `reload` (CLI and
//! endpoint), the config watch (an edit in place, a rename over the file,
//! Kubernetes' `..data` symlink swap; a bad edit keeps the running
//! config), the systemd notify protocol, metrics in both text formats,
//! `check`'s exit codes and the CLI's surface (completions, `--version`,
//! help, man pages).
//!
//! Waiting is polling with a bound, never a sleep standing in for a
//! signal.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use support::{client, run_cli, Echo, ProxyProcess};

const TOKEN: &str = "inbound-token-0123456789abcdef";
const SECRET: &str = "secret-value-4f1e9a";

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// `authproxy <args>` on the blocking pool (the proxies and upstreams of
/// the test run on this runtime meanwhile).
async fn cli(args: &[&str], envs: &[(&str, &str)], cwd: &Path) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let envs: Vec<(String, String)> = envs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let cwd = cwd.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        run_cli(&args, &envs, &cwd)
    })
    .await
    .unwrap()
}

/// A config for the client commands that says where `proxy` listens (the
/// proxy itself was started on port 0) and its inbound token.
fn client_config(dir: &Path, proxy: &ProxyProcess, token: Option<&str>) -> PathBuf {
    let token = token
        .map(|t| format!("inbound_token = \"{t}\"\n"))
        .unwrap_or_default();
    write(
        dir,
        "client.toml",
        &format!("[server]\nlisten = \"{}\"\n{token}", proxy.addr),
    )
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Polls `what` every 20 ms until it holds; fails (with the proxy's log)
/// after 30 s. The bound only keeps a broken build from hanging.
async fn until<F, Fut>(proxy: &ProxyProcess, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within 30 s; log:\n{}",
            proxy.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn status_of(url: String) -> u16 {
    match client().get(url).send().await {
        Ok(r) => r.status().as_u16(),
        Err(_) => 0,
    }
}

async fn metrics_text(proxy: &ProxyProcess, token: Option<&str>) -> String {
    let mut r = client().get(proxy.url("/_authproxy/metrics"));
    if let Some(t) = token {
        r = r.header("proxy-authorization", format!("Bearer {t}"));
    }
    r.send().await.unwrap().text().await.unwrap()
}

/// The value of the sample `line_start` (name and labels) in `text`.
fn sample(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
}

fn reloads(text: &str, outcome: &str) -> f64 {
    sample(
        text,
        &format!("authproxy_config_reloads_total{{outcome=\"{outcome}\"}}"),
    )
    .unwrap_or_else(|| panic!("no reload count for {outcome}:\n{text}"))
}

fn implicit_and_static(echo: &Echo) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
inbound_token = "{TOKEN}"
[store]
kind = "memory"
[providers.ready]
type = "oauth2"
grant = "implicit"
authorize_url = "https://ready.example/authorize"
client_id = "ready-app"
[providers.fixed]
type = "static"
headers = {{ Authorization = "Token fixed-token-1" }}
[[routes]]
prefix = "/ready/"
upstream = "{0}/"
provider = "ready"
[[routes]]
prefix = "/fixed/"
upstream = "{0}/"
provider = "fixed"
"#,
        echo.url()
    )
}

/// Readiness follows the providers: an implicit-grant provider without a
/// token (`login_required`) makes the proxy not ready, named in the answer;
/// once a token is pasted it is ready. `health` stays 200 throughout and
/// needs no token; `health --ready` sends the config's inbound token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_follows_the_providers_and_health_ready_says_so() {
    let echo = Echo::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "authproxy.toml", &implicit_and_static(&echo));
    let proxy = ProxyProcess::start(&config, &[]);
    let c = client();
    let auth = format!("Bearer {TOKEN}");

    let r = c
        .get(proxy.url("/_authproxy/ready"))
        .header("proxy-authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let text = r.text().await.unwrap();
    assert!(
        text.ends_with('\n'),
        "JSON answers end in a newline: {text:?}"
    );
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        body,
        json!({"status": "not_ready", "providers": {"ready": "login_required"}})
    );
    let r = c.get(proxy.url("/_authproxy/ready")).send().await.unwrap();
    assert_eq!(r.status(), 401, "ready needs the inbound token");
    let r = c.get(proxy.url("/_authproxy/health")).send().await.unwrap();
    assert_eq!(r.status(), 200, "liveness is not readiness");
    assert_eq!(r.text().await.unwrap(), "{\"status\":\"ok\"}\n");

    let with_token = client_config(dir.path(), &proxy, Some(TOKEN));
    let (code, out, err) = cli(
        &["health", "--config", path_str(&with_token)],
        &[],
        dir.path(),
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("ok: "), "{out}");
    let (code, out, err) = cli(
        &["health", "--ready", "--config", path_str(&with_token)],
        &[],
        dir.path(),
    )
    .await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("not ready") && err.contains("ready (login_required)"),
        "{err}"
    );
    // The token comes from the config: without it, the proxy says 401.
    let no_token = write(
        dir.path(),
        "no-token.toml",
        &format!("[server]\nlisten = \"{}\"\n", proxy.addr),
    );
    let (code, _, err) = cli(
        &["health", "--ready", "--config", path_str(&no_token)],
        &[],
        dir.path(),
    )
    .await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("401"), "{err}");

    let pasted = c
        .post(proxy.url("/_authproxy/tokens/ready"))
        .header("proxy-authorization", &auth)
        .json(&json!({"access_token": "pasted-access-1", "expires_in": 3600}))
        .send()
        .await
        .unwrap();
    assert_eq!(pasted.status(), 200);
    let r = c
        .get(proxy.url("/_authproxy/ready"))
        .header("proxy-authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "{\"status\":\"ready\"}\n");
    // $AUTHPROXY_CONFIG, as the container probes use it.
    let (code, out, err) = cli(
        &["health", "--ready"],
        &[("AUTHPROXY_CONFIG", path_str(&with_token))],
        dir.path(),
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("ready: "), "{out}");
    proxy.signal("TERM");
    assert_eq!(proxy.wait().0, Some(0));
}

/// Without `--url`, `health` and `reload` go to the listen address of the
/// config (a wildcard address means loopback); nothing listening there is
/// said in plain words; a config that cannot be read is an error of its
/// own (exit 64), not a silent fallback to port 8080.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_commands_find_the_proxy_and_say_plainly_when_it_is_not_there() {
    let dir = tempfile::tempdir().unwrap();
    let closed = support::ClosedPort::new();
    let port = closed.port();
    let refused =
        format!("nothing listens on 127.0.0.1:{port} (connection refused): is authproxy running?");
    for listen in [format!("127.0.0.1:{port}"), format!("0.0.0.0:{port}")] {
        // Everything but [server] is left unread: a secret the probe's
        // environment lacks does not matter.
        let config = write(
            dir.path(),
            "authproxy.toml",
            &format!(
                "[server]\nlisten = \"{listen}\"\ninbound_token = \"{TOKEN}\"\n\
                 [providers.p]\ntype = \"static\"\nheaders = {{ A = \"${{NOT_IN_THIS_ENVIRONMENT}}\" }}\n"
            ),
        );
        for args in [
            vec!["health", "--config", path_str(&config)],
            vec!["health", "--ready", "--config", path_str(&config)],
            vec!["reload", "--config", path_str(&config)],
        ] {
            let (code, out, err) = cli(&args, &[], dir.path()).await;
            assert_eq!(code, 1, "{args:?}: {out}{err}");
            assert!(err.contains(&refused), "{args:?}: {err}");
        }
    }
    let broken = write(dir.path(), "broken.toml", "[server\nlisten = 1\n");
    let missing = dir.path().join("missing.toml");
    for config in [&broken, &missing] {
        for cmd in ["health", "reload"] {
            let (code, out, err) = cli(&[cmd, "--config", path_str(config)], &[], dir.path()).await;
            assert_eq!(code, 64, "{cmd} {config:?}: {out}{err}");
            assert!(err.contains("cannot tell where the proxy listens"), "{err}");
            assert!(err.contains(path_str(config)), "names the file: {err}");
        }
    }
    drop(closed);
}

fn reload_config(echo: &Echo, routes: &[&str], extra_server: &str) -> String {
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ninbound_token = \"{TOKEN}\"\nwatch_config = false\n{extra_server}\n\
         [store]\nkind = \"memory\"\n"
    );
    for r in routes {
        text.push_str(&format!(
            "[[routes]]\nprefix = \"/{r}/\"\nupstream = \"{}/\"\n",
            echo.url()
        ));
    }
    text
}

/// `authproxy reload` and `POST /_authproxy/reload` apply a good config and
/// refuse a bad one with its errors (scrubbed of the secrets it
/// interpolated), keeping the running config; the outcome is counted in
/// the metrics. The endpoint changes state: inbound token, no browsers,
/// no form posts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_command_and_endpoint_apply_good_and_refuse_bad_configs() {
    let echo = Echo::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "authproxy.toml",
        &reload_config(&echo, &["a"], ""),
    );
    let env = [("SECRET_VALUE", SECRET)];
    let proxy = ProxyProcess::start(&config, &env);
    let client_cfg = client_config(dir.path(), &proxy, Some(TOKEN));
    let c = client();
    let auth = format!("Bearer {TOKEN}");
    let auth_get = |path: &str| {
        c.get(proxy.url(path))
            .header("proxy-authorization", &auth)
            .send()
    };
    let text = metrics_text(&proxy, Some(TOKEN)).await;
    assert_eq!(reloads(&text, "success"), 0.0, "{text}");
    assert_eq!(reloads(&text, "failure"), 0.0, "{text}");
    let started = sample(
        &text,
        "authproxy_config_last_reload_success_timestamp_seconds ",
    )
    .unwrap();
    assert!(started > 1.7e9, "{text}");
    assert_eq!(auth_get("/b/x").await.unwrap().status(), 404);

    write(
        dir.path(),
        "authproxy.toml",
        &reload_config(&echo, &["a", "b"], ""),
    );
    let (code, out, err) = cli(
        &["reload", "--config", path_str(&client_cfg)],
        &[],
        dir.path(),
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.starts_with("reloaded: "), "{out}");
    assert_eq!(
        auth_get("/b/x").await.unwrap().status(),
        200,
        "applied when the command returns"
    );
    let text = metrics_text(&proxy, Some(TOKEN)).await;
    assert_eq!(reloads(&text, "success"), 1.0, "{text}");
    assert_eq!(
        sample(&text, "authproxy_config_last_reload_successful "),
        Some(1.0)
    );

    // A wrong type on a key whose value came from a secret: the error
    // names the key, never the value.
    write(
        dir.path(),
        "authproxy.toml",
        &reload_config(&echo, &["a", "b", "c"], "max_headers = \"${SECRET_VALUE}\""),
    );
    let (code, out, err) = cli(
        &["reload", "--config", path_str(&client_cfg)],
        &[],
        dir.path(),
    )
    .await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("refused") && err.contains("server.max_headers"),
        "{err}"
    );
    assert!(!err.contains(SECRET) && !out.contains(SECRET), "{out}{err}");
    let r = c
        .post(proxy.url("/_authproxy/reload"))
        .header("proxy-authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["x-authproxy-error"], "reload_refused");
    let text = r.text().await.unwrap();
    assert!(text.ends_with('\n') && !text.contains(SECRET), "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"], "reload_refused");
    assert_eq!(body["errors"][0]["key"], "server.max_headers", "{body}");
    assert_eq!(
        auth_get("/b/x").await.unwrap().status(),
        200,
        "running config kept"
    );
    assert_eq!(auth_get("/c/x").await.unwrap().status(), 404);
    let text = metrics_text(&proxy, Some(TOKEN)).await;
    assert_eq!(reloads(&text, "failure"), 2.0, "{text}");
    assert_eq!(
        sample(&text, "authproxy_config_last_reload_successful "),
        Some(0.0)
    );

    // Who may ask.
    let post = || c.post(proxy.url("/_authproxy/reload"));
    assert_eq!(post().send().await.unwrap().status(), 401);
    let browser = post()
        .header("proxy-authorization", &auth)
        .header("sec-fetch-site", "same-origin")
        .send()
        .await
        .unwrap();
    assert_eq!(browser.status(), 403);
    assert_eq!(browser.headers()["x-authproxy-error"], "forbidden_browser");
    let form = post()
        .header("proxy-authorization", &auth)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("a=1")
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 400);
    let get = auth_get("/_authproxy/reload").await.unwrap();
    assert_eq!(get.status(), 405);

    // Fixed again, through the endpoint with a JSON body.
    write(
        dir.path(),
        "authproxy.toml",
        &reload_config(&echo, &["a", "c"], ""),
    );
    let r = post()
        .header("proxy-authorization", &auth)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"status": "reloaded", "warnings": []})
    );
    assert_eq!(auth_get("/c/x").await.unwrap().status(), 200);
    assert_eq!(auth_get("/b/x").await.unwrap().status(), 404);
    // A [server] change is reported: it needs a restart.
    write(
        dir.path(),
        "authproxy.toml",
        &reload_config(&echo, &["a"], "drain_timeout = \"5s\""),
    );
    let (code, out, err) = cli(
        &["reload", "--config", path_str(&client_cfg)],
        &[],
        dir.path(),
    )
    .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("warning: [server] settings changed"), "{out}");
    let log = proxy.log();
    assert!(log.contains("reload refused"), "{log}");
    assert!(!log.contains(SECRET), "{log}");
    proxy.signal("TERM");
    assert_eq!(proxy.wait().0, Some(0));
}

fn watched_config(echo: &Echo, routes: &[&str]) -> String {
    let mut text = "[server]\nlisten = \"127.0.0.1:0\"\n[store]\nkind = \"memory\"\n".to_string();
    for r in routes {
        text.push_str(&format!(
            "[[routes]]\nprefix = \"/{r}/\"\nupstream = \"{}/\"\n",
            echo.url()
        ));
    }
    text
}

/// The watch (on by default) picks up an edit in place and a new file
/// renamed over the config (how editors save); a bad edit is refused and
/// counted, and the running config keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reloads_edits_and_renames_and_keeps_serving_through_a_bad_edit() {
    let echo = Echo::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = write(dir.path(), "authproxy.toml", &watched_config(&echo, &["a"]));
    let proxy = ProxyProcess::start(&config, &[]);

    // In place: the same inode, truncated and written.
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&config)
            .unwrap();
        f.write_all(watched_config(&echo, &["a", "b"]).as_bytes())
            .unwrap();
    }
    until(&proxy, "edit in place applied", || async {
        status_of(proxy.url("/b/x")).await == 200
    })
    .await;

    // Renamed over: a new inode.
    let tmp = write(
        dir.path(),
        ".authproxy.toml.swp",
        &watched_config(&echo, &["a", "b", "c"]),
    );
    std::fs::rename(&tmp, &config).unwrap();
    until(&proxy, "rename over applied", || async {
        status_of(proxy.url("/c/x")).await == 200
    })
    .await;

    // A bad edit: refused, counted, the running config kept.
    write(
        dir.path(),
        "authproxy.toml",
        "[[routes]]\nprefix = \"/x/\"\nupstream = \"http://127.0.0.1:9/\"\nbogus = 1\n",
    );
    until(&proxy, "bad edit refused", || async {
        reloads(&metrics_text(&proxy, None).await, "failure") == 1.0
    })
    .await;
    assert_eq!(
        status_of(proxy.url("/c/x")).await,
        200,
        "running config kept"
    );
    assert!(
        proxy.log().contains("routes[0].bogus"),
        "the log says why:\n{}",
        proxy.log()
    );

    // Fixed: applied again.
    let tmp = write(
        dir.path(),
        ".authproxy.toml.swp",
        &watched_config(&echo, &["d"]),
    );
    std::fs::rename(&tmp, &config).unwrap();
    until(&proxy, "fixed config applied", || async {
        status_of(proxy.url("/d/x")).await == 200
    })
    .await;
    assert_eq!(status_of(proxy.url("/a/x")).await, 404);
    let text = metrics_text(&proxy, None).await;
    assert_eq!(
        reloads(&text, "success"),
        3.0,
        "one reload per change:\n{text}"
    );
    proxy.signal("TERM");
    assert_eq!(proxy.wait().0, Some(0));
}

/// A folder as the kubelet writes a mounted ConfigMap or Secret: the
/// files live in a timestamped folder, `..data` points at it, and each
/// name is a symlink through `..data`.
struct K8sVolume {
    dir: PathBuf,
    version: u32,
}

impl K8sVolume {
    fn new(dir: PathBuf, files: &[(&str, &str)]) -> K8sVolume {
        std::fs::create_dir_all(&dir).unwrap();
        let mut volume = K8sVolume { dir, version: 0 };
        volume.update(files);
        for (name, _) in files {
            std::os::unix::fs::symlink(format!("..data/{name}"), volume.dir.join(name)).unwrap();
        }
        volume
    }

    /// The kubelet's atomic update: a new timestamped folder, a
    /// `..data_tmp` symlink to it renamed over `..data`, the old folder
    /// removed.
    fn update(&mut self, files: &[(&str, &str)]) {
        let old = format!("..2026_01_01_00_00_0{}", self.version);
        self.version += 1;
        let new = format!("..2026_01_01_00_00_0{}", self.version);
        std::fs::create_dir(self.dir.join(&new)).unwrap();
        for (name, content) in files {
            std::fs::write(self.dir.join(&new).join(name), content).unwrap();
        }
        std::os::unix::fs::symlink(&new, self.dir.join("..data_tmp")).unwrap();
        std::fs::rename(self.dir.join("..data_tmp"), self.dir.join("..data")).unwrap();
        if self.version > 1 {
            std::fs::remove_dir_all(self.dir.join(old)).unwrap();
        }
    }
}

/// Kubernetes updates a mounted Secret and ConfigMap by swapping the
/// `..data` symlink: a changed `${file:}` secret reaches the requests, a
/// changed config is applied, and a bad secret (a CR/LF inside a header
/// value) is refused while the last good one stays in use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_follows_kubernetes_symlink_swaps_of_configmap_and_secret() {
    let echo = Echo::start().await;
    let root = tempfile::tempdir().unwrap();
    let secrets_dir = root.path().join("secrets");
    let mut secrets = K8sVolume::new(secrets_dir.clone(), &[("TOKEN", "one\n")]);
    let config_text = |routes: &[&str]| {
        let mut text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[store]\nkind = \"memory\"\n\
             [providers.api]\ntype = \"static\"\nheaders = {{ Authorization = \"Token ${{file:{}/TOKEN}}\" }}\n",
            secrets_dir.display()
        );
        for r in routes {
            text.push_str(&format!(
                "[[routes]]\nprefix = \"/{r}/\"\nupstream = \"{}/\"\nprovider = \"api\"\n",
                echo.url()
            ));
        }
        text
    };
    let mut configmap = K8sVolume::new(
        root.path().join("config"),
        &[("authproxy.toml", &config_text(&["k"]))],
    );
    let config = root.path().join("config/authproxy.toml");
    let proxy = ProxyProcess::start(&config, &[]);
    let injected = |path: &'static str| {
        let echo = echo.clone();
        let url = proxy.url(path);
        async move {
            let status = status_of(url).await;
            (status == 200)
                .then(|| echo.last().header("authorization").map(String::from))
                .flatten()
        }
    };
    assert_eq!(injected("/k/x").await.as_deref(), Some("Token one"));

    secrets.update(&[("TOKEN", "two\n")]);
    until(&proxy, "new secret in use", || async {
        injected("/k/x").await.as_deref() == Some("Token two")
    })
    .await;

    configmap.update(&[("authproxy.toml", &config_text(&["k", "k2"]))]);
    until(&proxy, "new ConfigMap applied", || async {
        status_of(proxy.url("/k2/x")).await == 200
    })
    .await;

    // A header value with a line break inside: refused, the last good
    // secret stays.
    secrets.update(&[("TOKEN", "three\r\nX-Injected: 1\n")]);
    until(&proxy, "bad secret refused", || async {
        reloads(&metrics_text(&proxy, None).await, "failure") == 1.0
    })
    .await;
    assert_eq!(injected("/k2/x").await.as_deref(), Some("Token two"));
    let log = proxy.log();
    assert!(log.contains("providers.api.headers.Authorization"), "{log}");
    assert!(
        !log.contains("three"),
        "the bad value is not logged:\n{log}"
    );

    // And fixed.
    secrets.update(&[("TOKEN", "four\n")]);
    until(&proxy, "fixed secret in use", || async {
        injected("/k/x").await.as_deref() == Some("Token four")
    })
    .await;
    proxy.signal("TERM");
    assert_eq!(proxy.wait().0, Some(0));
}

/// Under systemd (`NOTIFY_SOCKET`): `READY=1` once serving, `RELOADING=1`
/// (with `MONOTONIC_USEC`) and `READY=1` around each reload, good or bad,
/// and `STOPPING=1` at shutdown, in that order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_is_told_ready_reloading_and_stopping_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    // One datagram per message, read on a thread of its own; each step
    // below waits for the messages of the one before.
    let (tx, rx) = std::sync::mpsc::channel::<Vec<String>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = socket.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if tx.send(text.lines().map(String::from).collect()).is_err() {
                return;
            }
        }
    });
    let next = || {
        rx.recv_timeout(Duration::from_secs(30))
            .expect("a notify message within 30 s")
    };
    let good =
        "[server]\nlisten = \"127.0.0.1:0\"\nwatch_config = false\n[store]\nkind = \"memory\"\n\
                [[routes]]\nprefix = \"/a/\"\nupstream = \"http://127.0.0.1:9/\"\n";
    let config = write(dir.path(), "authproxy.toml", good);
    let proxy = ProxyProcess::start(&config, &[("NOTIFY_SOCKET", path_str(&socket_path))]);

    let m = next();
    assert_eq!(m[0], "READY=1", "{m:?}");
    assert!(m[1].starts_with("STATUS=serving on 127.0.0.1:"), "{m:?}");

    for (config_text, outcome) in [(good, "config reloaded"), ("[server\n", "refused")] {
        write(dir.path(), "authproxy.toml", config_text);
        proxy.signal("HUP");
        let m = next();
        assert_eq!(m[0], "RELOADING=1", "{m:?}");
        let usec = m[1]
            .strip_prefix("MONOTONIC_USEC=")
            .unwrap_or_else(|| panic!("{m:?}"));
        assert!(usec.parse::<u64>().unwrap() > 0, "{m:?}");
        let m = next();
        assert_eq!(m[0], "READY=1", "{m:?}");
        assert!(
            m[1].starts_with("STATUS=") && m[1].contains(outcome),
            "{m:?}"
        );
    }

    proxy.signal("TERM");
    let m = next();
    assert_eq!(m[0], "STOPPING=1", "{m:?}");
    let (code, log) = proxy.wait();
    assert_eq!(code, Some(0), "{log}");
    assert!(rx.try_recv().is_err(), "nothing after STOPPING=1");
}

/// `check`: 0 for a good config, 64 for a config error, 1 when a probe
/// fails (here: nothing listens at the token endpoint).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let closed = support::ClosedPort::new();
    let good = write(
        dir.path(),
        "good.toml",
        &format!(
            "[store]\nkind = \"memory\"\n[providers.cc]\ntype = \"oauth2\"\ngrant = \"client_credentials\"\n\
             token_url = \"http://127.0.0.1:{}/token\"\nclient_id = \"id\"\nclient_secret = \"s\"\n\
             [[routes]]\nprefix = \"/a/\"\nupstream = \"http://127.0.0.1:9/\"\nprovider = \"cc\"\n",
            closed.port()
        ),
    );
    let bad = write(dir.path(), "bad.toml", "[[routes]]\nprefix = \"/a/\"\n");
    let (code, out, err) = cli(&["check", "--config", path_str(&good)], &[], dir.path()).await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = cli(&["check", "--config", path_str(&bad)], &[], dir.path()).await;
    assert_eq!(code, 64, "{out}{err}");
    assert!(err.contains("routes[0].upstream"), "{err}");
    let (code, out, err) = cli(
        &["check", "--probe", "--config", path_str(&good)],
        &[],
        dir.path(),
    )
    .await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("probe cc: FAILED"), "{out}");
    // The flag may also come before the subcommand (as before).
    let (code, out, err) = cli(&["--config", path_str(&good), "check"], &[], dir.path()).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("good.toml: OK"), "{out}");
}

/// The CLI's surface: completions for bash, zsh and fish; `--version`
/// with the commit; help on every flag and no flag where it does nothing;
/// usage errors exit 64 like config errors; man pages.
#[test]
fn cli_surface() {
    use clap::CommandFactory;
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    for (shell, marker) in [
        ("bash", "_authproxy()"),
        ("zsh", "#compdef authproxy"),
        ("fish", "complete -c authproxy"),
    ] {
        let (code, out, err) = run_cli(&["completions", shell], &[], cwd);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains(marker), "{shell}: {out}");
        // fish names long flags without their dashes (`-l probe`).
        let flags: [&str; 2] = if shell == "fish" {
            ["-l ready", "-l probe"]
        } else {
            ["--ready", "--probe"]
        };
        for word in ["health", "reload", "completions"].into_iter().chain(flags) {
            assert!(out.contains(word), "{shell} completes {word}");
        }
        assert!(
            !out.contains("out-dir"),
            "{shell}: the hidden man command is not offered"
        );
    }

    let (code, out, _) = run_cli(&["--version"], &[], cwd);
    assert_eq!(code, 0);
    let commit = out
        .trim()
        .strip_prefix(concat!(
            "authproxy ",
            env!("CARGO_PKG_VERSION"),
            " (commit "
        ))
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{out}"));
    let git = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    match git {
        Ok(o) if o.status.success() => {
            assert_eq!(commit, String::from_utf8_lossy(&o.stdout).trim(), "{out}")
        }
        _ => assert_eq!(commit, "unknown", "{out}"),
    }

    // Every flag of every command says what it does.
    let mut cmd = authproxy::cli::Cli::command();
    cmd.build();
    let mut missing = Vec::new();
    for sub in std::iter::once(&cmd).chain(cmd.get_subcommands()) {
        for arg in sub.get_arguments() {
            if arg.get_help().is_none() && !["help", "version"].contains(&arg.get_id().as_str()) {
                missing.push(format!("{} {}", sub.get_name(), arg.get_id()));
            }
        }
    }
    assert!(missing.is_empty(), "flags without help: {missing:?}");
    let (_, help, _) = run_cli(&["demo", "--help"], &[], cwd);
    assert!(!help.contains("--config"), "demo reads no config:\n{help}");
    let (_, help, _) = run_cli(&["check", "--help"], &[], cwd);
    assert!(help.contains("64 the config has errors"), "{help}");
    let (code, _, err) = run_cli(&["health", "--bogus"], &[], cwd);
    assert_eq!(code, 64, "{err}");
    let (code, out, err) = run_cli(&["--config", "x.toml", "completions", "fish"], &[], cwd);
    assert_eq!(code, 0, "{err}");
    assert!(!out.is_empty());
    assert!(
        err.contains("--config does nothing for `completions`; ignored"),
        "{err}"
    );

    let (code, _, err) = run_cli(&["man", "--out-dir", "man"], &[], cwd);
    assert_eq!(code, 0, "{err}");
    for page in [
        "authproxy.1",
        "authproxy-check.1",
        "authproxy-health.1",
        "authproxy-reload.1",
    ] {
        let text = std::fs::read_to_string(cwd.join("man").join(page)).unwrap();
        assert!(text.contains(".TH"), "{page}");
    }
}

/// Metrics: Prometheus text 0.0.4 unless OpenMetrics is asked for, both
/// read by Prometheus' own parsers (Python `prometheus_client`, from the
/// virtualenv `.ci/validate-deploy.sh` makes), with every family typed
/// (a classic parser saw the counters as untyped before); the new
/// families are there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_negotiate_the_format_and_parse() {
    let echo = Echo::start().await;
    let dir = tempfile::tempdir().unwrap();
    let text = implicit_and_static(&echo).replace(&format!("inbound_token = \"{TOKEN}\"\n"), "");
    let config = write(dir.path(), "authproxy.toml", &text);
    let proxy = ProxyProcess::start(&config, &[]);
    let c = client();
    c.post(proxy.url("/_authproxy/tokens/ready"))
        .json(&json!({"access_token": "pasted-access-2", "expires_in": 3600}))
        .send()
        .await
        .unwrap();
    assert_eq!(status_of(proxy.url("/fixed/x")).await, 200);
    assert_eq!(status_of(proxy.url("/ready/x")).await, 200);

    let prometheus_accept = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let mut bodies = Vec::new();
    for (accept, openmetrics) in [
        (None, false),
        (Some("text/plain;version=0.0.4"), false),
        (Some("application/openmetrics-text"), true),
        (Some(prometheus_accept), true),
    ] {
        let mut r = c.get(proxy.url("/_authproxy/metrics"));
        if let Some(a) = accept {
            r = r.header("accept", a);
        }
        let r = r.send().await.unwrap();
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        let body = r.text().await.unwrap();
        if openmetrics {
            assert!(
                ct.starts_with("application/openmetrics-text; version=1.0.0"),
                "{ct}"
            );
            assert!(body.ends_with("# EOF\n"), "{body}");
        } else {
            assert_eq!(ct, "text/plain; version=0.0.4; charset=utf-8");
            assert!(!body.contains("# EOF"), "{body}");
            assert!(
                body.contains("# TYPE authproxy_requests_total counter\n"),
                "{body}"
            );
        }
        bodies.push((openmetrics, body));
    }
    let text = &bodies[0].1;
    let version = format!(
        "authproxy_build_info{{version=\"{}\",commit=\"",
        env!("CARGO_PKG_VERSION")
    );
    assert!(text.contains(&version), "{text}");
    let expiry = sample(text, "authproxy_token_expiry_seconds{provider=\"ready\"} ").unwrap();
    assert!((3000.0..=3600.0).contains(&expiry), "{text}");
    assert!(
        !text.contains("provider=\"fixed\"} "),
        "static providers have no expiry"
    );
    // The scrape itself is the one request in flight, on an active connection.
    assert_eq!(
        sample(text, "authproxy_inflight_requests "),
        Some(1.0),
        "{text}"
    );
    assert!(
        sample(text, "authproxy_connections{state=\"active\"} ").unwrap() >= 1.0,
        "{text}"
    );
    assert!(
        sample(text, "authproxy_connections{state=\"idle\"} ").is_some(),
        "{text}"
    );
    assert_eq!(reloads(text, "success"), 0.0);

    // Prometheus' own parsers.
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ci-venv/bin/python");
    let found = std::process::Command::new(&python)
        .args(["-c", "import prometheus_client"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !support::require_tool(
        "prometheus_client",
        found,
        "run `bash .ci/validate-deploy.sh` once: it makes target/ci-venv with prometheus-client",
    ) {
        return;
    }
    const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families as classic
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
parse = openmetrics if sys.argv[1] == "om" else classic
print(json.dumps({f.name: [f.type, len(f.samples)] for f in parse(sys.stdin.read())}))
"#;
    for (openmetrics, body) in bodies {
        use std::io::Write;
        let mut child = std::process::Command::new(&python)
            .args(["-c", PARSE, if openmetrics { "om" } else { "classic" }])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "parser refused (openmetrics: {openmetrics}): {}\n{body}",
            String::from_utf8_lossy(&out.stderr)
        );
        let families: Value = serde_json::from_slice(&out.stdout).unwrap();
        for (name, kind) in [
            ("authproxy_requests", "counter"),
            ("authproxy_config_reloads", "counter"),
            ("authproxy_upstream_latency_seconds", "histogram"),
            ("authproxy_build_info", "gauge"),
            ("authproxy_token_expiry_seconds", "gauge"),
            ("authproxy_inflight_requests", "gauge"),
            ("authproxy_connections", "gauge"),
            (
                "authproxy_config_last_reload_success_timestamp_seconds",
                "gauge",
            ),
        ] {
            assert_eq!(
                families[name][0], kind,
                "{name} (openmetrics: {openmetrics}): {families}"
            );
        }
        for (name, v) in families.as_object().unwrap() {
            assert_ne!(
                v[0], "unknown",
                "{name} is untyped (openmetrics: {openmetrics}): {families}"
            );
        }
    }
}
