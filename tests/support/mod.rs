//! Shared test fixtures: the proxy in-process or as a real process, an echo
//! upstream that records what it received, and small HTTP helpers. Every
//! server binds 127.0.0.1:0.
#![allow(dead_code)]

pub mod egress_proxy;
pub mod oidc;
pub mod providers;
pub mod tls;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use authproxy::{AppState, Config};
use axum::body::Body;
use axum::Router;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// The proxy running in this process on a loopback port.
pub struct Proxy {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    pub dir: tempfile::TempDir,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Proxy {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Stops accepting and waits for the drain to finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Starts the proxy from config text (written into a temp folder, so
/// relative paths resolve there). `listen` is replaced by 127.0.0.1:0.
pub async fn start_proxy(config: &str) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    start_proxy_in(config, dir).await
}

pub async fn start_proxy_in(config: &str, dir: tempfile::TempDir) -> Proxy {
    authproxy::install_crypto_provider();
    let path = dir.path().join("authproxy.toml");
    std::fs::write(&path, config).unwrap();
    let config = Config::load(&path).unwrap_or_else(|e| panic!("test config invalid: {e}"));
    let state = AppState::new(config).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(authproxy::run(state.clone(), listener, async {
        let _ = rx.await;
    }));
    Proxy {
        addr,
        state,
        dir,
        shutdown: Some(tx),
        task: Some(task),
    }
}

/// A plain HTTP client: no proxy from the environment, no redirects followed.
pub fn client() -> reqwest::Client {
    authproxy::install_crypto_provider();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// GETs `url` and parses the answer as JSON (status endpoints and the like).
/// A GET's status and body; status 0 (and the error) when it got no answer.
pub async fn get_text(url: String) -> (u16, String) {
    match client().get(url).send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        }
        Err(e) => (0, e.to_string()),
    }
}

/// `n` concurrent GETs of `/one/<tag>/<i>` spread over `proxies`; their
/// statuses (0: no answer).
pub async fn storm(proxies: &[ProxyProcess], n: usize, tag: &str) -> Vec<u16> {
    let c = client();
    let requests = (0..n).map(|i| {
        let url = proxies[i % proxies.len()].url(&format!("/one/{tag}/{i}"));
        let c = c.clone();
        tokio::spawn(async move {
            c.get(url)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        })
    });
    let mut statuses = Vec::new();
    for r in futures_util::future::join_all(requests).await {
        statuses.push(r.unwrap());
    }
    statuses
}

/// Writes `text` as `authproxy.toml` in `dir`; its path.
pub fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("authproxy.toml");
    std::fs::write(&path, text).unwrap();
    path
}

pub async fn get_json(client: &reqwest::Client, url: String) -> serde_json::Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

/// Serves `router` on 127.0.0.1:0 for the rest of the test.
pub async fn serve(router: Router) -> SocketAddr {
    authproxy::demo::mocks::serve(router).await
}

// The echo upstream lives with the mock providers in the library (their
// APIs answer the same way).
pub use authproxy::demo::mocks::echo::hex;
#[allow(unused_imports)]
pub use authproxy::demo::mocks::{echo_response, record, Echo, Recorded};

pub fn sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Deterministic pseudo-random bytes (xorshift), for bodies with checksums.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn body_of(bytes: Vec<u8>) -> Body {
    Body::from(bytes)
}

/// The authproxy binary built for these tests.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_authproxy"))
}

/// Runs `authproxy <args>` to completion with a clean environment plus `envs`.
pub fn run_cli(args: &[&str], envs: &[(&str, &str)], cwd: &Path) -> (i32, String, String) {
    let out = Command::new(binary())
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(envs.iter().copied())
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The proxy as a real process. Its stderr (the log) is collected; the
/// listening address is read from the "listening on" line.
pub struct ProxyProcess {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl ProxyProcess {
    /// Starts `authproxy run --config <config>` and waits (bounded) for it
    /// to listen. The config should say `listen = "127.0.0.1:0"`.
    pub fn start(config: &Path, envs: &[(&str, &str)]) -> ProxyProcess {
        let config = config.to_str().expect("utf-8 path");
        Self::spawn(&["run", "--config", config], envs)
    }

    /// Starts `authproxy <args>` and waits (bounded) for its "listening on" line.
    pub fn spawn(args: &[&str], envs: &[(&str, &str)]) -> ProxyProcess {
        let mut command = Command::new(binary());
        command.args(args);
        Self::spawn_command(command, envs)
    }

    /// As [`ProxyProcess::spawn`], exec'd by `sh` after the shell command
    /// `prelude` (e.g. `ulimit -Sn 256`); the process id is the proxy's.
    pub fn spawn_after(prelude: &str, args: &[&str], envs: &[(&str, &str)]) -> ProxyProcess {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("{prelude} && exec \"$0\" \"$@\""))
            .arg(binary())
            .args(args);
        Self::spawn_command(command, envs)
    }

    fn spawn_command(mut command: Command, envs: &[(&str, &str)]) -> ProxyProcess {
        let mut child = command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(
                "RUST_LOG",
                std::env::var("TEST_PROXY_LOG").unwrap_or_else(|_| "debug".into()),
            )
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log: Arc<Mutex<String>> = Arc::default();
        let (tx, rx) = std::sync::mpsc::channel::<Option<SocketAddr>>();
        let log2 = log.clone();
        let reader = std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(pos) = line.find("listening on ") {
                    // Text, or a JSON line (`…","address":…`).
                    let addr = line[pos + 13..]
                        .split(|c: char| c.is_whitespace() || c == '"' || c == ',')
                        .next()
                        .and_then(|a| a.parse().ok());
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
                let mut l = log2.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
            if let Some(tx) = tx.take() {
                let _ = tx.send(None);
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Some(addr)) => addr,
            other => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "proxy did not start ({other:?}); log:\n{}",
                    log.lock().unwrap()
                );
            }
        };
        ProxyProcess {
            child,
            addr,
            log,
            reader: Some(reader),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits (bounded) for the process to exit; returns its exit code and log.
    pub fn wait(mut self) -> (Option<i32>, String) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                if let Some(r) = self.reader.take() {
                    let _ = r.join();
                }
                let log = self.log.lock().unwrap().clone();
                return (status.code(), log);
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("proxy did not exit in time");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill9(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let log = self.log.lock().unwrap().clone();
        log
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes.
pub async fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A real `redis-server` for the shared-store tests (tests/redis.rs).
pub mod redis_server;

/// The variable that lets tests whose external tool is missing be skipped
/// instead of failing: a comma-separated list of tool names, e.g.
/// `AUTHPROXY_TEST_ALLOW_MISSING=redis-server,chromium`.
pub const ALLOW_MISSING: &str = "AUTHPROXY_TEST_ALLOW_MISSING";

/// Whether a test may go on with `tool` (`found` says whether it is
/// installed). A missing tool fails the test, naming how to install it: a
/// test that skips itself silently reports `ok` for something that never
/// ran. Only when [`ALLOW_MISSING`] lists the tool is the test skipped, with
/// a message; under `CI` it never is (.ci/run installs the tools).
pub fn require_tool(tool: &str, found: bool, install: &str) -> bool {
    if found {
        return true;
    }
    let allowed = std::env::var(ALLOW_MISSING).unwrap_or_default();
    let allowed = allowed.split(',').any(|t| t.trim() == tool);
    if allowed && std::env::var_os("CI").is_none() {
        eprintln!("SKIPPED: {tool} is not installed and {ALLOW_MISSING} lists it");
        return false;
    }
    panic!(
        "this test needs {tool}, which is not installed: {install}; \
         or set {ALLOW_MISSING}={tool} to skip the tests that need it \
         (ignored under CI)"
    );
}

/// A loopback port held by a socket that is bound but not listening:
/// connecting to it is refused, and no other socket can bind it while this
/// lives (unlike "bind port 0, read the port, close", which leaves the port
/// to whoever binds next). For "nothing listens there" tests.
pub struct ClosedPort {
    socket: tokio::net::TcpSocket,
    pub addr: SocketAddr,
}

impl ClosedPort {
    pub fn new() -> ClosedPort {
        // No SO_REUSEADDR (TcpSocket does not set it): a bind by anyone
        // else, redis-server's included, conflicts with this one.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket.local_addr().unwrap();
        ClosedPort { socket, addr }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Frees the port for a server the test starts on it next.
    pub fn release(self) -> u16 {
        let port = self.port();
        drop(self.socket);
        port
    }
}

impl Default for ClosedPort {
    fn default() -> Self {
        Self::new()
    }
}
