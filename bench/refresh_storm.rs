//! Refresh-storm benchmark: N requests find the access token expired at
//! the same moment; the proxy must make exactly one token request and
//! answer all N.
//!
//! ```text
//! cargo bench --bench refresh_storm     # N = 1, 100, 1000, 10000; markdown table
//! cargo test --all-targets              # quick smoke: N = 1 and N = 50 (< 10 s)
//! ```
//!
//! Per N: the OneCloud mock provider of `authproxy::demo::mocks` (JSON
//! token endpoint with single-use rotating refresh tokens, plus an API
//! that answers a plain 401 to an expired token) and the proxy (`AppState::new` + `authproxy::run`, a
//! `refresh_token`-grant provider, memory store) start on 127.0.0.1. One
//! request warms the proxy (the seed refresh token is spent), a client
//! process opens N connections, the mock expires every access token, and
//! the client sends one `GET` on each connection at once. Measured: token
//! requests made during the storm (must be 1), whether all N got a 200, the
//! time until the last one answered.
//!
//! Layout: the client always runs as a child process (this binary with
//! `--storm-client`), so its N sockets do not count against the proxy's
//! file-descriptor limit. The mock runs in-process when the open-files
//! limit allows about 3 N descriptors (proxy inbound N, proxy to mock and
//! mock inbound up to N each); otherwise (e.g. N = 10000 with a hard limit
//! of 20000 that cannot be raised) it runs as a child process too
//! (`--mock-server`), and the table says so. Under `--bench` the binary
//! first re-executes itself through `sh -c 'ulimit -n 65536 …'` to raise
//! the soft limit as far as the hard limit allows.
//!
//! Every loop is bounded, every wait has a timeout, all traffic stays on
//! 127.0.0.1, and the child processes exit when their stdin closes.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use authproxy::config::interpolate::ProcessEnv;
use authproxy::demo::mocks::{MockProvider, Style, CLIENT_ID};
use authproxy::{AppState, Config};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

const SEED_REFRESH: &str = "rt-seed";
/// Storm sizes and token endpoint latencies (ms). A real token endpoint is
/// not instant: 20 ms keeps the renewal in flight while the storm arrives;
/// with 500 ms every request of the storm gets its 401 before the new
/// token exists, so all N wait for the renewal and are replayed.
const FULL_CASES: [(usize, u64); 6] = [
    (1, 20),
    (100, 20),
    (1000, 20),
    (10_000, 20),
    (1000, 500),
    (10_000, 500),
];
const SMOKE_CASES: [(usize, u64); 2] = [(1, 20), (50, 20)];
const WANT_NOFILE: u64 = 65_536;
const REEXEC_MARK: &str = "AUTHPROXY_BENCH_NOFILE_RAISED";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("--mock-server") => {
            let ms = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(20);
            return mock_server_main(Duration::from_millis(ms));
        }
        Some("--storm-client") => {
            let addr = args.get(2).and_then(|a| a.parse().ok());
            let n = args.get(3).and_then(|a| a.parse().ok());
            let secs = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(60);
            return match (addr, n) {
                (Some(addr), Some(n)) => client_main(addr, n, Duration::from_secs(secs)),
                _ => {
                    eprintln!("usage: --storm-client ADDR N [TIMEOUT_SECS]");
                    ExitCode::FAILURE
                }
            };
        }
        _ => {}
    }
    let full = args.iter().any(|a| a == "--bench");
    if full {
        if let Some(code) = reexec_with_more_files(&args) {
            return code;
        }
    }
    authproxy::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (cases, timeout): (&[(usize, u64)], Duration) = if full {
        (&FULL_CASES, Duration::from_secs(120))
    } else {
        (&SMOKE_CASES, Duration::from_secs(8))
    };
    let nofile = open_files_limit();
    let started = Instant::now();
    let mut outcomes = Vec::new();
    for &(n, latency_ms) in cases {
        let latency = Duration::from_millis(latency_ms);
        let outcome = match storm(&rt, n, latency, nofile, timeout) {
            Ok(o) => o,
            Err(e) => Outcome::failed(n, latency, e),
        };
        if full {
            eprintln!(
                "N={n}, token latency {latency_ms} ms: {}",
                outcome.summary()
            );
        } else {
            println!(
                "refresh_storm smoke N={n}, token latency {latency_ms} ms: {}",
                outcome.summary()
            );
        }
        outcomes.push(outcome);
    }
    rt.shutdown_timeout(Duration::from_secs(2));
    let all_good = outcomes.iter().all(Outcome::good);
    if full {
        println!("{}", table(&outcomes, nofile, started.elapsed()));
    } else {
        assert!(
            all_good,
            "refresh storm smoke failed: every storm must make exactly one token request and answer every request with 200"
        );
    }
    if all_good {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

// ---------------------------------------------------------------- mock

/// The library's OneCloud mock (the one the tests and the demo use): JSON
/// refresh grant at `/api/v1/oauth/token`, every refresh token works once
/// (a reused one revokes the chain), any other path is the API (200 for a
/// valid token, a plain 401 otherwise), `/_mock/*` controls it. Here it
/// only counts API requests (no per-request record), as it shares the CPU
/// with the proxy.
fn start_mock(listener: TcpListener, latency: Duration) -> MockProvider {
    let mock = MockProvider::start_on(listener, Style::OneCloud);
    mock.set(|s| {
        s.token_delay = latency;
        s.record_api = false;
    });
    mock.issue_seed(SEED_REFRESH);
    mock
}

/// Binds 127.0.0.1:0 with a deep accept queue (the kernel caps it at
/// `net.core.somaxconn`), so a connection burst is not met by SYN drops
/// and one-second retransmits.
fn listen_loopback() -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    socket.listen(4096)
}

/// `--mock-server [LATENCY_MS]`: serve the mock until stdin closes.
fn mock_server_main(latency: Duration) -> ExitCode {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let listener = match listen_loopback() {
            Ok(l) => l,
            Err(e) => {
                eprintln!("mock: cannot listen: {e}");
                std::process::exit(1);
            }
        };
        println!("MOCK_ADDR {}", listener.local_addr().expect("bound"));
        let _ = std::io::stdout().flush();
        let _mock = start_mock(listener, latency);
        std::thread::spawn(|| {
            let mut sink = String::new();
            while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {
                sink.clear();
            }
            std::process::exit(0);
        });
        std::future::pending::<()>().await;
    });
    ExitCode::SUCCESS
}

// -------------------------------------------------------------- client

/// `--storm-client ADDR N`: open N connections to ADDR, say `READY`, wait
/// for a line on stdin, send one GET on each at once, print `RESULT {json}`.
fn client_main(addr: SocketAddr, n: usize, timeout: Duration) -> ExitCode {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let streams = match rt.block_on(connect_all(addr, n)) {
        Ok(s) => s,
        Err(e) => {
            println!("FAILED connecting: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (gate_tx, gate_rx) = tokio::sync::watch::channel(None::<Instant>);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, mut stream) in streams.into_iter().enumerate() {
        let mut gate = gate_rx.clone();
        let request =
            format!("GET /api/items/{i} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        tasks.spawn_on(
            async move {
                let start = match gate.wait_for(Option::is_some).await {
                    Ok(v) => v.expect("checked"),
                    Err(_) => return Err("gate closed".to_string()),
                };
                let exchange = async {
                    stream.write_all(request.as_bytes()).await?;
                    let mut buf = Vec::with_capacity(512);
                    stream.read_to_end(&mut buf).await?;
                    Ok::<_, std::io::Error>(buf)
                };
                let answer = tokio::time::timeout(timeout, exchange).await;
                let elapsed = start.elapsed();
                match answer {
                    Ok(Ok(buf)) if buf.starts_with(b"HTTP/1.1 200 ") => Ok(elapsed),
                    Ok(Ok(buf)) => Err(format!(
                        "answer: {:?}",
                        String::from_utf8_lossy(&buf[..buf.len().min(120)])
                    )),
                    Ok(Err(e)) => Err(format!("i/o: {e}")),
                    Err(_) => Err(format!("no answer within {}s", timeout.as_secs())),
                }
            },
            rt.handle(),
        );
    }
    println!("READY");
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    if std::io::stdin().read_line(&mut line).unwrap_or(0) == 0 {
        return ExitCode::FAILURE;
    }
    let _ = gate_tx.send(Some(Instant::now()));
    let mut latencies = Vec::with_capacity(n);
    let mut errors = 0usize;
    let mut first_error = None;
    rt.block_on(async {
        while let Some(r) = tasks.join_next().await {
            match r {
                Ok(Ok(d)) => latencies.push(d),
                Ok(Err(e)) => {
                    errors += 1;
                    first_error.get_or_insert(e);
                }
                Err(e) => {
                    errors += 1;
                    first_error.get_or_insert(format!("task: {e}"));
                }
            }
        }
    });
    latencies.sort();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i].as_secs_f64() * 1000.0
    };
    let result = json!({
        "ok": latencies.len(),
        "failed": errors,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": pct(1.0),
        "first_error": first_error,
    });
    println!("RESULT {result}");
    let _ = std::io::stdout().flush();
    ExitCode::SUCCESS
}

/// Opens `n` connections, at most 200 connects in flight at a time.
async fn connect_all(addr: SocketAddr, n: usize) -> Result<Vec<TcpStream>, String> {
    let mut streams = Vec::with_capacity(n);
    let mut remaining = n;
    while remaining > 0 {
        let batch = remaining.min(200);
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..batch {
            set.spawn(tokio::time::timeout(
                Duration::from_secs(10),
                TcpStream::connect(addr),
            ));
        }
        while let Some(r) = set.join_next().await {
            match r {
                Ok(Ok(Ok(s))) => {
                    let _ = s.set_nodelay(true);
                    streams.push(s);
                }
                Ok(Ok(Err(e))) => return Err(format!("connect: {e}")),
                Ok(Err(_)) => return Err("connect timed out".into()),
                Err(e) => return Err(format!("connect task: {e}")),
            }
        }
        remaining -= batch;
    }
    Ok(streams)
}

// -------------------------------------------------------------- driver

/// A child process of this binary, talking line by line.
struct ChildProc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl ChildProc {
    fn spawn(args: &[String]) -> Result<ChildProc, String> {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("spawn {args:?}: {e}"))?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(ChildProc {
            stdin: child.stdin.take(),
            child,
            lines,
        })
    }

    /// The rest of the first line starting with `prefix`.
    fn expect(&self, prefix: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => {
                    return Ok(line[prefix.len()..].trim().to_string())
                }
                Ok(line) if line.starts_with("FAILED") => return Err(line),
                Ok(_) => continue,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!("no `{prefix}` line within {}s", timeout.as_secs()))
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(format!("child exited before saying `{prefix}`"))
                }
            }
        }
    }

    fn say(&mut self, line: &str) -> Result<(), String> {
        let stdin = self.stdin.as_mut().ok_or("stdin closed")?;
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .map_err(|e| format!("writing to child: {e}"))
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 exchange (`Connection: close`): status and body.
async fn http_raw(addr: SocketAddr, method: &str, path: &str) -> Result<(u16, String), String> {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| format!("{method} {path}: no answer within 10s"))?
        .map_err(|e| format!("{method} {path}: {e}"))?;
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{method} {path}: bad answer {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// Mock in this process, client as a child process.
    MockInProcess,
    /// Mock and client as child processes (open-files limit too low).
    MockChild,
}

/// Held for its `Drop`: the in-process mock stops with the runtime, the
/// child process is stopped.
#[allow(dead_code)]
enum MockRun {
    InProcess(MockProvider),
    Child(ChildProc),
}

#[derive(Default)]
struct Outcome {
    n: usize,
    token_latency: Duration,
    layout: Option<Layout>,
    token_requests: u64,
    token_refused: u64,
    ok: u64,
    failed: u64,
    total: Duration,
    p50_ms: f64,
    p99_ms: f64,
    api_401: u64,
    api_ok: u64,
    upstream_connections: u64,
    /// Replays (200 after a 401) seen by the mock, and when, counted from
    /// the moment it issued the new token.
    replays: u64,
    replay_first_ms: f64,
    replay_p50_ms: f64,
    replay_last_ms: f64,
    /// The same burst again with the token still valid (no renewal).
    baseline: Option<Baseline>,
    error: Option<String>,
}

struct Baseline {
    ok: u64,
    total: Duration,
    p50_ms: f64,
    token_requests: u64,
}

impl Outcome {
    fn failed(n: usize, token_latency: Duration, error: String) -> Outcome {
        Outcome {
            n,
            token_latency,
            error: Some(error),
            ..Outcome::default()
        }
    }

    fn good(&self) -> bool {
        self.error.is_none()
            && self.token_requests == 1
            && self.token_refused == 0
            && self.ok == self.n as u64
            && self.failed == 0
            && self
                .baseline
                .as_ref()
                .is_some_and(|b| b.ok == self.n as u64 && b.token_requests == 0)
    }

    fn summary(&self) -> String {
        match &self.error {
            Some(e) if self.ok == 0 => format!("ERROR {e}"),
            _ => format!(
                "token requests {}, {}/{} answered 200 in {:.1} ms (p50 {:.1} ms, p99 {:.1} ms), upstream: {} x 401, {} x 200, {} connections; {} replays {:.1}..{:.1} ms after the new token (p50 {:.1}); same burst with a valid token: {}{}",
                self.token_requests,
                self.ok,
                self.n,
                self.total.as_secs_f64() * 1000.0,
                self.p50_ms,
                self.p99_ms,
                self.api_401,
                self.api_ok,
                self.upstream_connections,
                self.replays,
                self.replay_first_ms,
                self.replay_last_ms,
                self.replay_p50_ms,
                self.baseline
                    .as_ref()
                    .map(|b| format!(
                        "{}/{} in {:.1} ms (p50 {:.1} ms), {} token requests",
                        b.ok,
                        self.n,
                        b.total.as_secs_f64() * 1000.0,
                        b.p50_ms,
                        b.token_requests
                    ))
                    .unwrap_or_else(|| "-".into()),
                self.error
                    .as_ref()
                    .map(|e| format!("; first error: {e}"))
                    .unwrap_or_default()
            ),
        }
    }
}

fn proxy_config(mock: SocketAddr) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"

[store]
kind = "memory"

[providers.storm]
type = "oauth2"
grant = "refresh_token"
token_url = "http://{mock}{token_path}"
body = "json"
client_id = "{CLIENT_ID}"
refresh_token = "{SEED_REFRESH}"

[[routes]]
prefix = "/api/"
upstream = "http://{mock}/api/"
provider = "storm"
"#,
        token_path = Style::OneCloud.token_path(),
    )
}

fn stat(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn storm(
    rt: &tokio::runtime::Runtime,
    n: usize,
    latency: Duration,
    nofile: Option<u64>,
    timeout: Duration,
) -> Result<Outcome, String> {
    let budget = nofile.unwrap_or(1024);
    let need = 256 + n as u64;
    let layout = if budget >= need + 2 * n as u64 {
        Layout::MockInProcess
    } else if budget >= need + 512 {
        Layout::MockChild
    } else {
        return Err(format!(
            "open-files limit {budget} is too low for N={n} (raise it with `ulimit -n`)"
        ));
    };

    // The mock provider.
    let (mock_addr, _mock) = match layout {
        Layout::MockInProcess => {
            let listener = rt
                .block_on(async { listen_loopback() })
                .map_err(|e| format!("mock listen: {e}"))?;
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            let mock = rt.block_on(async { start_mock(listener, latency) });
            (addr, MockRun::InProcess(mock))
        }
        Layout::MockChild => {
            let child =
                ChildProc::spawn(&["--mock-server".to_string(), latency.as_millis().to_string()])?;
            let addr = child
                .expect("MOCK_ADDR ", Duration::from_secs(20))?
                .parse()
                .map_err(|e| format!("mock address: {e}"))?;
            (addr, MockRun::Child(child))
        }
    };

    // The proxy, in this process.
    let config = Config::parse(
        &proxy_config(mock_addr),
        Path::new("refresh_storm.toml"),
        &ProcessEnv,
    )
    .map_err(|e| format!("proxy config: {e}"))?;
    let state = AppState::new(config).map_err(|e| format!("proxy state: {e}"))?;
    let listener = rt
        .block_on(async { listen_loopback() })
        .map_err(|e| format!("proxy listen: {e}"))?;
    let proxy_addr = listener.local_addr().map_err(|e| e.to_string())?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let proxy = rt.spawn(authproxy::run(state, listener, async {
        let _ = stop_rx.await;
    }));

    let result = (|| {
        // Warm: the first request obtains the first token.
        let (status, body) = rt.block_on(http_raw(proxy_addr, "GET", "/api/warm"))?;
        if status != 200 {
            return Err(format!("warm-up request got {status}: {body}"));
        }
        let mock_stats = || -> Result<Value, String> {
            let (_, body) = rt.block_on(http_raw(mock_addr, "GET", "/_mock/stats"))?;
            serde_json::from_str(&body).map_err(|e| format!("mock stats: {e}"))
        };
        let before = mock_stats()?;
        let expire = || -> Result<(), String> {
            let (status, _) = rt.block_on(http_raw(mock_addr, "POST", "/_mock/expire"))?;
            if status != 200 {
                return Err(format!("mock expire got {status}"));
            }
            Ok(())
        };
        let (result, total) = burst(proxy_addr, n, timeout, expire)?;
        let after = mock_stats()?;
        let delta = |k: &str| stat(&after, k).saturating_sub(stat(&before, k));
        let f = |k: &str| result.get(k).and_then(Value::as_f64).unwrap_or(0.0);

        // The same burst with the token now valid: what N concurrent
        // requests cost without a renewal.
        let (base, base_total) = burst(proxy_addr, n, timeout, || Ok(()))?;
        let after_base = mock_stats()?;
        let baseline = Baseline {
            ok: stat(&base, "ok"),
            total: base_total,
            p50_ms: base["p50_ms"].as_f64().unwrap_or(0.0),
            token_requests: stat(&after_base, "token_requests")
                .saturating_sub(stat(&after, "token_requests")),
        };
        Ok(Outcome {
            n,
            token_latency: latency,
            layout: Some(layout),
            baseline: Some(baseline),
            token_requests: delta("token_requests"),
            token_refused: delta("token_refused"),
            ok: stat(&result, "ok"),
            failed: stat(&result, "failed"),
            total,
            p50_ms: f("p50_ms"),
            p99_ms: f("p99_ms"),
            api_401: delta("api_401"),
            api_ok: delta("api_ok"),
            // Minus the two control connections (expire, stats after).
            upstream_connections: delta("connections").saturating_sub(2),
            replays: stat(&after, "replays"),
            replay_first_ms: after["replay_first_ms"].as_f64().unwrap_or(0.0),
            replay_p50_ms: after["replay_p50_ms"].as_f64().unwrap_or(0.0),
            replay_last_ms: after["replay_last_ms"].as_f64().unwrap_or(0.0),
            error: result
                .get("first_error")
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    })();

    let _ = stop_tx.send(());
    rt.block_on(async {
        if tokio::time::timeout(Duration::from_secs(5), proxy)
            .await
            .is_err()
        {
            eprintln!("proxy did not stop within 5s");
        }
    });
    result
}

/// Starts a client process with `n` connections open to the proxy, runs
/// `before_go` (e.g. expiring the tokens), lets the client fire, and returns
/// its result and the time until its last answer.
fn burst(
    proxy_addr: SocketAddr,
    n: usize,
    timeout: Duration,
    before_go: impl FnOnce() -> Result<(), String>,
) -> Result<(Value, Duration), String> {
    let mut client = ChildProc::spawn(&[
        "--storm-client".to_string(),
        proxy_addr.to_string(),
        n.to_string(),
        timeout.as_secs().to_string(),
    ])?;
    client.expect("READY", Duration::from_secs(60))?;
    before_go()?;
    let wall = Instant::now();
    client.say("GO")?;
    let result = client.expect("RESULT ", timeout + Duration::from_secs(15))?;
    let wall = wall.elapsed();
    let result: Value = serde_json::from_str(&result).map_err(|e| format!("client result: {e}"))?;
    // The client's own clock stops at its last answer; `wall` also
    // includes passing the GO and RESULT lines.
    let last = result["max_ms"].as_f64().unwrap_or(f64::MAX) / 1000.0;
    Ok((result, Duration::from_secs_f64(last).min(wall)))
}

// --------------------------------------------------------------- setup

/// The soft open-files limit, from /proc/self/limits.
fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

fn hard_open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(4)?.parse().ok()
}

/// Re-runs this binary through `sh -c 'ulimit -n …'` when the soft limit
/// is below what N = 10000 wants and could be raised. Returns the child's
/// exit code, or `None` to carry on in this process.
fn reexec_with_more_files(args: &[String]) -> Option<ExitCode> {
    if std::env::var_os(REEXEC_MARK).is_some() {
        return None;
    }
    let soft = open_files_limit()?;
    let hard = hard_open_files_limit().unwrap_or(soft);
    if soft >= WANT_NOFILE || soft >= hard {
        return None;
    }
    let exe = std::env::current_exe().ok()?;
    let script = format!(
        "ulimit -n {WANT_NOFILE} 2>/dev/null || ulimit -n \"$(ulimit -Hn)\" 2>/dev/null; exec \"$0\" \"$@\""
    );
    let status = Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .arg(exe)
        .args(&args[1..])
        .env(REEXEC_MARK, "1")
        .status()
        .ok()?;
    Some(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn table(outcomes: &[Outcome], nofile: Option<u64>, elapsed: Duration) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "\n### Refresh storm ({} cores, open-files limit {}, run took {:.1} s)\n\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        nofile.map(|n| n.to_string()).unwrap_or_else(|| "?".into()),
        elapsed.as_secs_f64()
    ));
    out.push_str("| N | token endpoint latency | mock | token requests | all 200 | time to all answered | p50 | p99 | same burst, token valid: all answered / p50 | upstream 401s | upstream conns opened | replays reach the API after the new token: first / p50 / last | note |\n");
    out.push_str("|---:|---:|---|---:|:---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
    for o in outcomes {
        let layout = match o.layout {
            Some(Layout::MockInProcess) => "in-process",
            Some(Layout::MockChild) => "child process",
            None => "-",
        };
        let note = match (&o.error, o.token_refused) {
            (Some(e), _) => e.replace('|', "/"),
            (None, 0) => String::new(),
            (None, r) => format!("{r} refresh token(s) refused"),
        };
        out.push_str(&format!(
            "| {} | {} ms | {} | {} | {} ({}/{}) | {:.1} ms | {:.1} ms | {:.1} ms | {} | {} | {} | {:.1} / {:.1} / {:.1} ms | {} |\n",
            o.n,
            o.token_latency.as_millis(),
            layout,
            o.token_requests,
            if o.good() { "yes" } else { "**no**" },
            o.ok,
            o.n,
            o.total.as_secs_f64() * 1000.0,
            o.p50_ms,
            o.p99_ms,
            o.baseline
                .as_ref()
                .map(|b| format!(
                    "{:.1} ms / {:.1} ms{}",
                    b.total.as_secs_f64() * 1000.0,
                    b.p50_ms,
                    if b.ok == o.n as u64 { "" } else { " (not all 200)" }
                ))
                .unwrap_or_else(|| "-".into()),
            o.api_401,
            o.upstream_connections,
            o.replay_first_ms,
            o.replay_p50_ms,
            o.replay_last_ms,
            note
        ));
    }
    out
}
