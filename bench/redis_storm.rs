//! Redis store benchmark: a refresh storm across replicas, and what the
//! Redis store costs per request in steady state.
//!
//! ```text
//! cargo bench --bench redis_storm     # full run, markdown tables
//! cargo test --all-targets            # quick smoke (3 replicas, 60 requests; < 15 s)
//! ```
//!
//! Needs `redis-server` (Debian package `redis-server`); without it the
//! run is skipped with a message, except under `CI`, where it fails.
//!
//! 1. Storm: a real `redis-server` (loopback, no persistence), the
//!    OneCloud mock of `authproxy::demo::mocks` (single-use refresh
//!    tokens, 20 ms per token request) and R proxy processes sharing the
//!    Redis store. One
//!    request per replica warms them up; then the provider expires every
//!    access token and N requests go out at once, spread over the replicas.
//!    Measured: token requests during the storm (must be 1), whether all N
//!    got a 200, whether a spent refresh token was reused, time until the
//!    last answer.
//! 2. Steady state: one proxy with the file store and one with the Redis
//!    store, token fresh; 32 client tasks send K requests in total to each.
//!    Measured: throughput, p50/p99 latency, and the commands Redis
//!    processed meanwhile (from `INFO commandstats`, without the change
//!    feed's `PING`s), which must be 0.
//!
//! The proxies are the release binary (`CARGO_BIN_EXE_authproxy`) with the
//! access log off; mock, client and Redis run on the same machine, so the
//! numbers compare the stores rather than measure the proxy alone. Every
//! wait is bounded and all traffic stays on 127.0.0.1.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use authproxy::demo::mocks::{MockProvider, Style, CLIENT_ID};
use support::redis_server::{self, RedisServer};
use support::ProxyProcess;

const LOG: &str = "info,authproxy::access=warn";
const STEADY_CONCURRENCY: usize = 32;

struct StormRow {
    replicas: usize,
    requests: usize,
    token_requests: usize,
    all_ok: bool,
    reuse: bool,
    elapsed: Duration,
}

struct SteadyRow {
    store: &'static str,
    requests: usize,
    all_ok: bool,
    per_sec: f64,
    p50: Duration,
    p99: Duration,
    redis_commands: Option<u64>,
}

fn main() -> ExitCode {
    let full = std::env::args().any(|a| a == "--bench");
    if !redis_server::available() {
        return ExitCode::SUCCESS;
    }
    authproxy::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (storms, steady): (&[(usize, usize)], usize) = if full {
        (&[(3, 300), (3, 1000), (5, 300), (5, 1000)], 20_000)
    } else {
        (&[(3, 60)], 300)
    };
    let storm_rows: Vec<StormRow> = storms
        .iter()
        .map(|&(r, n)| rt.block_on(storm(r, n)))
        .collect();
    let steady_rows = vec![
        rt.block_on(steady_state("file", steady)),
        rt.block_on(steady_state("redis", steady)),
    ];
    rt.shutdown_timeout(Duration::from_secs(2));

    let good = storm_rows
        .iter()
        .all(|s| s.token_requests == 1 && s.all_ok && !s.reuse)
        && steady_rows
            .iter()
            .all(|s| s.all_ok && s.redis_commands.unwrap_or(0) == 0);
    if full {
        println!("{}", tables(&storm_rows, &steady_rows));
    } else {
        for s in &storm_rows {
            println!(
                "redis_storm smoke: {} replicas, {} requests: {} token request(s), all 200: {}, reuse: {}, {:.0} ms",
                s.replicas,
                s.requests,
                s.token_requests,
                s.all_ok,
                s.reuse,
                s.elapsed.as_secs_f64() * 1e3
            );
        }
        for s in &steady_rows {
            println!(
                "redis_storm smoke: steady {} store: {} requests, all 200: {}, redis commands: {:?}",
                s.store, s.requests, s.all_ok, s.redis_commands
            );
        }
        assert!(
            good,
            "redis storm smoke failed: one token request per storm, every request 200, no Redis command per request"
        );
    }
    if good {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn config(store: &str, mock: &MockProvider, seed: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"

{store}

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

const REDIS_STORE: &str = "[store]\nkind = \"redis\"\nurl = \"${REDIS_URL}\"";

fn start_proxies(dir: &Path, text: &str, n: usize, redis_url: &str) -> Vec<ProxyProcess> {
    let path = dir.join("authproxy.toml");
    std::fs::write(&path, text).unwrap();
    let envs = [("REDIS_URL", redis_url), ("RUST_LOG", LOG)];
    (0..n).map(|_| ProxyProcess::start(&path, &envs)).collect()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(STEADY_CONCURRENCY)
        .build()
        .unwrap()
}

async fn storm(replicas: usize, n: usize) -> StormRow {
    let redis = RedisServer::start().expect("redis-server");
    let mock = MockProvider::start(Style::OneCloud).await;
    mock.issue_seed("seed-B");
    mock.set(|s| s.token_delay = Duration::from_millis(20));
    let dir = tempfile::tempdir().unwrap();
    let proxies = start_proxies(
        dir.path(),
        &config(REDIS_STORE, &mock, "seed-B"),
        replicas,
        &redis.url(),
    );
    let c = client();
    for (i, p) in proxies.iter().enumerate() {
        let r = c.get(p.url(&format!("/one/warm{i}"))).send().await;
        assert_eq!(r.map(|r| r.status().as_u16()).ok(), Some(200), "warm-up");
    }
    let before = mock.token_request_count();
    mock.expire_all();
    let started = Instant::now();
    let requests = (0..n).map(|i| {
        let url = proxies[i % replicas].url(&format!("/one/storm/{i}"));
        let c = c.clone();
        tokio::spawn(async move {
            c.get(url)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        })
    });
    let statuses = futures_util::future::join_all(requests).await;
    let elapsed = started.elapsed();
    StormRow {
        replicas,
        requests: n,
        token_requests: mock.token_request_count() - before,
        all_ok: statuses.iter().all(|s| matches!(s, Ok(200))),
        reuse: mock.reuse_detected(),
        elapsed,
    }
}

/// Commands Redis processed so far, by name (from `INFO commandstats`).
fn command_counts(redis: &RedisServer) -> HashMap<String, u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut redis.connection())
        .unwrap();
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
        })
        .collect()
}

async fn steady_state(store: &'static str, total: usize) -> SteadyRow {
    let redis = RedisServer::start().expect("redis-server");
    let mock = MockProvider::start(Style::OneCloud).await;
    mock.issue_seed("seed-T");
    let dir = tempfile::tempdir().unwrap();
    let store_cfg = match store {
        "file" => "[store]\nkind = \"file\"\npath = \"state/tokens.json\"",
        _ => REDIS_STORE,
    };
    let proxies = start_proxies(
        dir.path(),
        &config(store_cfg, &mock, "seed-T"),
        1,
        &redis.url(),
    );
    let proxy = &proxies[0];
    let c = client();
    // Warm up: the token is fetched, connections are open.
    for i in 0..STEADY_CONCURRENCY {
        let r = c.get(proxy.url(&format!("/one/warm{i}"))).send().await;
        assert_eq!(r.map(|r| r.status().as_u16()).ok(), Some(200), "warm-up");
    }
    let before = command_counts(&redis);
    let started = Instant::now();
    let per_task = total / STEADY_CONCURRENCY;
    let tasks = (0..STEADY_CONCURRENCY).map(|t| {
        let c = c.clone();
        let base = proxy.url("/one/steady/");
        tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_task);
            let mut ok = true;
            for i in 0..per_task {
                let t0 = Instant::now();
                let r = c.get(format!("{base}{t}-{i}")).send().await;
                ok &= match r {
                    Ok(r) => r.status() == 200 && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                latencies.push(t0.elapsed());
            }
            (ok, latencies)
        })
    });
    let mut all_ok = true;
    let mut latencies = Vec::with_capacity(total);
    for r in futures_util::future::join_all(tasks).await {
        let (ok, l) = r.unwrap();
        all_ok &= ok;
        latencies.extend(l);
    }
    let elapsed = started.elapsed();
    let after = command_counts(&redis);
    let redis_commands = (store == "redis").then(|| {
        after
            .iter()
            .filter(|(name, _)| !matches!(name.as_str(), "ping" | "info"))
            .map(|(name, calls)| calls - before.get(name).copied().unwrap_or(0))
            .sum()
    });
    latencies.sort();
    let pick = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q) as usize];
    SteadyRow {
        store,
        requests: latencies.len(),
        all_ok: all_ok && mock.token_request_count() == 1,
        per_sec: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: pick(0.5),
        p99: pick(0.99),
        redis_commands,
    }
}

fn tables(storms: &[StormRow], steady: &[SteadyRow]) -> String {
    let mut out = String::new();
    out.push_str("### Refresh storm across replicas (Redis store, single-use refresh tokens)\n\n");
    out.push_str("| replicas | requests | token requests | all 200 | reuse detected | time to answer all |\n");
    out.push_str("|---:|---:|---:|:---:|:---:|---:|\n");
    for s in storms {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.0} ms |\n",
            s.replicas,
            s.requests,
            s.token_requests,
            if s.all_ok { "yes" } else { "NO" },
            if s.reuse { "YES" } else { "no" },
            s.elapsed.as_secs_f64() * 1e3
        ));
    }
    out.push_str(&format!(
        "\n### Steady state, fresh token ({STEADY_CONCURRENCY} concurrent clients)\n\n"
    ));
    out.push_str(
        "| store | requests | all 200 | requests/s | p50 | p99 | Redis commands during the run |\n",
    );
    out.push_str("|---|---:|:---:|---:|---:|---:|---:|\n");
    for s in steady {
        out.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.2} ms | {:.2} ms | {} |\n",
            s.store,
            s.requests,
            if s.all_ok { "yes" } else { "NO" },
            s.per_sec,
            s.p50.as_secs_f64() * 1e3,
            s.p99.as_secs_f64() * 1e3,
            s.redis_commands.map_or("–".to_string(), |n| n.to_string())
        ));
    }
    out
}
