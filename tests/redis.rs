//! The Redis token store, against a real `redis-server` (started by the
//! tests on a loopback port, no persistence): several proxy processes
//! sharing one single-use refresh chain, a replica killed while holding the
//! renewal lock, Redis restarted or missing; plus the store's lock, fencing
//! and change feed driven directly.
//!
//! Without `redis-server` the tests fail, unless
//! `AUTHPROXY_TEST_ALLOW_MISSING=redis-server` lets them skip (never under
//! `CI`).

mod support;

use std::net::SocketAddr;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use authproxy::secret::Secret;
use authproxy::store::{RedisStore, StoreError, TokenStore};
use serde_json::Value;
use support::providers::{MockProvider, Style, CLIENT_ID};
use support::redis_server::{access_of, quick_options, token, RedisServer};
use support::{get_text, storm, write_config, Echo, ProxyProcess};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

const REDIS_PASSWORD: &str = "redis-pass-SECRET-9";

fn replica_config(token_url: &str, api: &str, seed: &str, extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"

[store]
kind = "redis"
url = "${{REDIS_URL}}"

[providers.one]
type = "oauth2"
grant = "refresh_token"
token_url = "{token_url}"
body = "json"
client_id = "{CLIENT_ID}"
refresh_token = "{seed}"

[[routes]]
prefix = "/one/"
upstream = "{api}/api/"
provider = "one"
{extra}
"#
    )
}

async fn status_json(p: &ProxyProcess) -> Value {
    let (code, text) = get_text(p.url("/_authproxy/status")).await;
    assert_eq!(code, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

/// Polls an async condition every 50 ms until it holds or `timeout` passes.
async fn until<F, Fut>(timeout: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn refresh_tokens_used(mock: &MockProvider) -> Vec<String> {
    mock.token_requests()
        .iter()
        .map(|r| r.fields.get("refresh_token").cloned().unwrap_or_default())
        .collect()
}

/// Three replicas, one single-use refresh chain, 300 requests at once,
/// twice: from a cold start (only the seed) and after every access token
/// expired at the provider (each replica sees 401s). Each time exactly one
/// refresh request, no reuse, every request answered 200. The Redis
/// password never shows in logs or status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_storm_across_replicas_makes_one_token_request() {
    let Some(redis) = RedisServer::start_with_password(REDIS_PASSWORD) else {
        return;
    };
    let mock = MockProvider::start(Style::OneCloud).await;
    mock.issue_seed("seed-S");
    // A real token endpoint takes a while; the storm piles up meanwhile.
    mock.set(|s| s.token_delay = Duration::from_millis(200));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &replica_config(&mock.token_url(), &mock.base(), "seed-S", ""),
    );
    let url = redis.url();
    let envs = [("REDIS_URL", url.as_str())];
    let replicas: Vec<ProxyProcess> = (0..3)
        .map(|_| ProxyProcess::start(&config, &envs))
        .collect();

    let statuses = storm(&replicas, 300, "cold").await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(
        mock.token_request_count(),
        1,
        "one refresh for the cold start"
    );

    mock.expire_all();
    let statuses = storm(&replicas, 300, "expired").await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let requests = mock.token_requests();
    assert_eq!(requests.len(), 2, "one refresh for the storm: {requests:?}");
    assert!(requests.iter().all(|r| r.status == 200), "{requests:?}");
    assert!(
        !mock.reuse_detected(),
        "a spent refresh token was sent again"
    );
    let used = refresh_tokens_used(&mock);
    assert_eq!(used[0], "seed-S");
    assert!(
        used[1].starts_with("rt-1-"),
        "the rotated token was used: {used:?}"
    );

    let adopted = replicas
        .iter()
        .filter(|r| r.log().contains("using a token another replica obtained"))
        .count();
    assert!(
        adopted >= 2,
        "the other replicas took the winner's token over"
    );
    for r in &replicas {
        let status = status_json(r).await;
        let text = status.to_string();
        assert!(!text.contains(REDIS_PASSWORD), "{text}");
        let kind = status["store"]["kind"].as_str().unwrap();
        assert!(
            kind.contains(&format!("127.0.0.1:{}", redis.port)),
            "{kind}"
        );
        assert!(status["store"]["error"].is_null(), "{text}");
        assert!(
            !r.log().contains(REDIS_PASSWORD),
            "log leaks the redis password"
        );
    }
    // Tokens live in Redis, under the default prefix.
    let mut conn = redis.connection();
    let version: u64 = redis::cmd("HGET")
        .arg("authproxy:token:one")
        .arg("version")
        .query(&mut conn)
        .unwrap();
    assert!(version >= 2, "{version}");
}

/// A TCP relay in front of the token endpoint: while `forward` is off it
/// swallows requests and never answers (the token request hangs, and
/// nothing reaches the provider, so no refresh token is spent).
struct Relay {
    addr: SocketAddr,
    forward: Arc<AtomicBool>,
    held: Arc<AtomicUsize>,
}

impl Relay {
    async fn start(target: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let forward = Arc::new(AtomicBool::new(false));
        let held = Arc::new(AtomicUsize::new(0));
        let (f, h) = (forward.clone(), held.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if f.load(Ordering::SeqCst) {
                    tokio::spawn(async move {
                        if let Ok(mut out) = TcpStream::connect(target).await {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                        }
                    });
                } else {
                    h.fetch_add(1, Ordering::SeqCst);
                    // Read and drop until the peer goes away.
                    tokio::spawn(async move {
                        let mut buf = [0u8; 4096];
                        while let Ok(n) = inbound.read(&mut buf).await {
                            if n == 0 {
                                break;
                            }
                        }
                    });
                }
            }
        });
        Relay {
            addr,
            forward,
            held,
        }
    }
}

/// Replica A takes the renewal lock and dies (`kill -9`) in the middle of
/// its token request. Replica B waits for the lease to run out, takes
/// over, and refreshes exactly once with the unspent seed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_killed_holding_the_lock_is_taken_over_after_the_lease() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mock = MockProvider::start(Style::OneCloud).await;
    mock.issue_seed("seed-K");
    let relay = Relay::start(mock.addr).await;
    let token_url = format!("http://{}/api/v1/oauth/token", relay.addr);
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &replica_config(&token_url, &mock.base(), "seed-K", ""),
    );
    let url = redis.url();
    let envs = [("REDIS_URL", url.as_str())];
    let a = ProxyProcess::start(&config, &envs);
    let b = ProxyProcess::start(&config, &envs);

    let doomed = tokio::spawn(get_text(a.url("/one/doomed")));
    let mut conn = redis.connection();
    let holding = until(Duration::from_secs(10), || {
        let locked = redis::cmd("EXISTS")
            .arg("authproxy:lock:one")
            .query::<bool>(&mut conn)
            .unwrap_or(false);
        let held = relay.held.load(Ordering::SeqCst) > 0;
        async move { locked && held }
    })
    .await;
    assert!(holding, "replica A never took the lock; log:\n{}", a.log());
    let a_log = a.kill9();
    let _ = doomed.await;
    relay.forward.store(true, Ordering::SeqCst);

    let started = Instant::now();
    let (code, body) = get_text(b.url("/one/after")).await;
    let waited = started.elapsed();
    assert_eq!(code, 200, "{body}\nB's log:\n{}", b.log());
    assert!(
        waited >= Duration::from_secs(2),
        "B waited for the dead replica's lease ({waited:?})"
    );
    // The log is written behind the requests: poll for the line.
    let took_over = support::eventually(Duration::from_secs(10), || {
        b.log()
            .contains("took the renewal lock after another replica")
    })
    .await;
    assert!(took_over, "B did not take the lock over; log:\n{}", b.log());
    let requests = mock.token_requests();
    assert_eq!(requests.len(), 1, "{requests:?}\nA's log:\n{a_log}");
    assert_eq!(requests[0].status, 200);
    assert_eq!(refresh_tokens_used(&mock), vec!["seed-K".to_string()]);
    assert!(!mock.reuse_detected());
}

/// Redis dies and comes back empty (no persistence). Meanwhile requests are
/// served from memory, a renewal is refused (fail closed) and status and
/// metrics say why; afterwards the replicas write their tokens back, and the
/// next refresh uses the newest refresh token: none was lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_loses_no_token() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let mock = MockProvider::start(Style::OneCloud).await;
    mock.issue_seed("seed-R");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &replica_config(&mock.token_url(), &mock.base(), "seed-R", ""),
    );
    let url = redis.url();
    let envs = [("REDIS_URL", url.as_str())];
    let replicas: Vec<ProxyProcess> = (0..3)
        .map(|_| ProxyProcess::start(&config, &envs))
        .collect();
    for (i, r) in replicas.iter().enumerate() {
        let (code, body) = get_text(r.url(&format!("/one/warm{i}"))).await;
        assert_eq!(code, 200, "{body}");
    }
    assert_eq!(mock.token_request_count(), 1);

    redis.kill();
    for r in &replicas {
        let down = until(Duration::from_secs(15), || async {
            !status_json(r).await["store"]["error"].is_null()
        })
        .await;
        assert!(down, "status does not report redis down");
        let (code, body) = get_text(r.url("/one/while-down")).await;
        assert_eq!(code, 200, "tokens in memory are still served: {body}");
    }

    // Every access token expires: renewal needs the lock, which is gone.
    mock.expire_all();
    let (code, body) = get_text(replicas[0].url("/one/expired-while-down")).await;
    assert_eq!(code, 502, "{body}");
    assert!(body.contains("renewal refused"), "{body}");
    assert_eq!(
        mock.token_request_count(),
        1,
        "nothing spent without the lock"
    );
    let status = status_json(&replicas[0]).await;
    assert_eq!(
        status["providers"]["one"]["last_error"]["code"], "store_unavailable",
        "{status}"
    );
    assert!(
        status["store"]["error"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{status}"
    );
    let (_, metrics) = get_text(replicas[0].url("/_authproxy/metrics")).await;
    assert!(
        metrics.contains("outcome=\"refused_store_unavailable\""),
        "{metrics}"
    );

    redis.restart();
    for r in &replicas {
        let up = until(Duration::from_secs(20), || async {
            status_json(r).await["store"]["error"].is_null()
        })
        .await;
        assert!(up, "replica did not recover; log:\n{}", r.log());
    }
    // The replicas wrote the token they had in memory back.
    let mut conn = redis.connection();
    let stored: Option<String> = redis::cmd("HGET")
        .arg("authproxy:token:one")
        .arg("token")
        .query(&mut conn)
        .unwrap();
    let stored: Value = serde_json::from_str(&stored.expect("token written back")).unwrap();
    let live = mock.live_refresh_tokens();
    assert_eq!(live.len(), 1);
    assert_eq!(stored["refresh_token"], live[0].as_str());

    for (i, r) in replicas.iter().enumerate() {
        let ok = until(Duration::from_secs(15), || async {
            get_text(r.url(&format!("/one/recovered{i}"))).await.0 == 200
        })
        .await;
        assert!(ok, "replica {i} did not recover; log:\n{}", r.log());
    }
    let requests = mock.token_requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert!(requests.iter().all(|r| r.status == 200), "{requests:?}");
    assert!(!mock.reuse_detected());
}

/// Redis is not there when the proxy starts: it starts anyway, serves
/// static routes, refuses to spend the single-use refresh token, says why,
/// and works as soon as Redis is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_without_redis_then_recover() {
    if !support::redis_server::available() {
        return;
    }
    // Held (bound, not listening) until Redis starts on it: the proxy's
    // connections are refused meanwhile, and no other test's Redis can
    // take the port.
    let reserved = support::ClosedPort::new();
    let port = reserved.port();
    let mock = MockProvider::start(Style::OneCloud).await;
    mock.issue_seed("seed-D");
    let echo = Echo::start().await;
    let extra = format!(
        r#"
[providers.plain]
type = "static"
headers = {{ "X-Api-Key" = "k-123" }}

[[routes]]
prefix = "/plain/"
upstream = "{}/"
provider = "plain"
"#,
        echo.url()
    );
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &replica_config(&mock.token_url(), &mock.base(), "seed-D", &extra),
    );
    let url = format!("redis://127.0.0.1:{port}/0");
    let proxy = ProxyProcess::start(&config, &[("REDIS_URL", url.as_str())]);
    assert!(
        proxy.log().contains("UNREACHABLE AT START"),
        "{}",
        proxy.log()
    );

    let (code, body) = get_text(proxy.url("/plain/x")).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(echo.last().header("x-api-key"), Some("k-123"));
    let (code, body) = get_text(proxy.url("/one/x")).await;
    assert_eq!(code, 502, "{body}");
    assert!(body.contains("renewal refused"), "{body}");
    assert_eq!(mock.token_request_count(), 0);
    let status = status_json(&proxy).await;
    assert!(
        status["store"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("unreachable")),
        "{status}"
    );

    let _redis = RedisServer::start_with(Some(reserved), None).unwrap();
    let ok = until(Duration::from_secs(30), || async {
        get_text(proxy.url("/one/y")).await.0 == 200
    })
    .await;
    assert!(ok, "no recovery; log:\n{}", proxy.log());
    assert_eq!(mock.token_request_count(), 1);
    let clear = until(Duration::from_secs(15), || async {
        status_json(&proxy).await["store"]["error"].is_null()
    })
    .await;
    assert!(clear, "{}", status_json(&proxy).await);
}

// ---------------------------------------------------------------------------
// The store itself, in process.
// ---------------------------------------------------------------------------

fn open(redis: &RedisServer, prefix: &str) -> RedisStore {
    RedisStore::open(&Secret::new(redis.url()), prefix, None, quick_options()).unwrap()
}

/// One holder at a time; the lock is extended past its TTL while held;
/// a waiter gets it as soon as it is released and sees the holder's token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_is_single_flight_extended_and_handed_over() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let a = open(&redis, "t1:");
    let b = open(&redis, "t1:");
    let mut la = a.lease("p").await.unwrap().expect("a shared store leases");
    let waiter = tokio::spawn(async move {
        let lease = b.lease("p").await;
        (b, lease)
    });
    // Hold it for longer than its TTL: the keeper extends it every third
    // of the TTL, which shows as the lock's remaining time (PTTL) going up.
    // Four extensions come more than one TTL after the lock was taken; all
    // the while the lock keeps its owner and the waiter waits.
    let mut conn = redis.connection();
    let lock = |conn: &mut redis::Connection| -> (Option<String>, i64) {
        redis::pipe()
            .cmd("GET")
            .arg("t1:lock:p")
            .cmd("PTTL")
            .arg("t1:lock:p")
            .query(conn)
            .unwrap()
    };
    let (owner, mut last) = lock(&mut conn);
    assert!(owner.is_some(), "the lease has no lock in redis");
    let mut extensions = 0;
    for _ in 0..1000 {
        if extensions == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        let (now_owner, ttl) = lock(&mut conn);
        assert_eq!(now_owner, owner, "the lock expired or changed hands");
        assert!(!waiter.is_finished(), "the lock was taken twice");
        if ttl > last {
            extensions += 1;
        }
        last = ttl;
    }
    assert_eq!(extensions, 4, "the keeper stopped extending the lock");
    la.save(token("from-a")).await.unwrap();
    la.release().await;
    let (b, lb) = waiter.await.unwrap();
    let lb = lb.unwrap().unwrap();
    assert_eq!(access_of(b.reread("p").await.unwrap()), "from-a");
    lb.release().await;
    // Released: free again at once.
    let again = a.lease("p").await.unwrap().unwrap();
    again.release().await;
}

/// A waiter gives up after `lease_wait` with an error that says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_wait_is_bounded() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let a = open(&redis, "t2:");
    let b = open(&redis, "t2:");
    let la = a.lease("p").await.unwrap().unwrap();
    let started = Instant::now();
    let err = b.lease("p").await.err().expect("must time out");
    assert!(started.elapsed() >= Duration::from_millis(1400));
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(err.to_string().contains("gave up waiting"), "{err}");
    la.release().await;
}

/// A replica whose lock vanished (expired while it was cut off) must not
/// overwrite a token another replica wrote since; with nobody having
/// written, its write still lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_write_after_a_lost_lease() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let a = open(&redis, "t3:");
    let b = open(&redis, "t3:");
    let mut conn = redis.connection();

    let mut la = a.lease("q").await.unwrap().unwrap();
    let _: i64 = redis::cmd("DEL").arg("t3:lock:q").query(&mut conn).unwrap();
    let mut lb = b.lease("q").await.unwrap().unwrap();
    lb.save(token("newer")).await.unwrap();
    lb.release().await;
    let err = la.save(token("older")).await.unwrap_err();
    assert!(matches!(err, StoreError::LeaseLost(_)), "{err}");
    la.release().await;
    assert_eq!(access_of(b.reread("q").await.unwrap()), "newer");
    // The refused token is kept in memory, but loses to the newer one.
    a.flush().await.unwrap();
    assert_eq!(access_of(b.reread("q").await.unwrap()), "newer");
    assert_eq!(access_of(a.load("q")), "newer");
    assert_eq!(a.pending_error(), None);

    let mut la = a.lease("r").await.unwrap().unwrap();
    let _: i64 = redis::cmd("DEL").arg("t3:lock:r").query(&mut conn).unwrap();
    la.save(token("solo")).await.unwrap();
    la.release().await;
    assert_eq!(access_of(b.reread("r").await.unwrap()), "solo");
}

/// A write by one replica reaches the others through the change feed,
/// without them asking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_reach_other_replicas() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let a = open(&redis, "t4:");
    let b = open(&redis, "t4:");
    let mut changes = a.subscribe().expect("a shared store has a change feed");
    // The feed announces nothing written before it is connected.
    assert!(
        until(Duration::from_secs(10), || async {
            a.pending_error().is_none()
        })
        .await
    );
    b.save("s", token("x1")).await.unwrap();
    let name = tokio::time::timeout(Duration::from_secs(5), changes.recv())
        .await
        .expect("change announced")
        .unwrap();
    assert_eq!(name, "s");
    assert_eq!(access_of(a.load("s")), "x1");
    // Past a few heartbeats (PING on the subscribed connection; nothing
    // else in this test sends PING) the feed is still up and delivers.
    let mut conn = redis.connection();
    let pings = |conn: &mut redis::Connection| -> u64 {
        let stats: String = redis::cmd("INFO").arg("commandstats").query(conn).unwrap();
        stats
            .lines()
            .find_map(|l| l.strip_prefix("cmdstat_ping:calls="))
            .and_then(|v| v.split(',').next()?.parse().ok())
            .unwrap_or(0)
    };
    let before = pings(&mut conn);
    let mut beats = 0;
    for _ in 0..1500 {
        if beats >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(a.pending_error(), None);
        beats = pings(&mut conn) - before;
    }
    assert!(beats >= 3, "{beats} heartbeats seen");
    let subscribers: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut conn)
        .unwrap();
    assert!(
        subscribers.contains(" cmd=ping "),
        "the heartbeat is not on the subscribed connection: {subscribers}"
    );
    b.save("s", token("x2")).await.unwrap();
    let name = tokio::time::timeout(Duration::from_secs(5), changes.recv())
        .await
        .expect("change announced")
        .unwrap();
    assert_eq!(name, "s");
    assert_eq!(access_of(a.load("s")), "x2");
    // A store opened later starts with what is stored.
    let c = open(&redis, "t4:");
    assert_eq!(access_of(c.load("s")), "x2");
}

/// Redis down: the lease is refused quickly (never a long hang), a write
/// stays pending, and both recover when Redis is back (the pending write
/// is restored since Redis came back empty).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fails_fast_and_recovers() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let a = open(&redis, "t5:");
    a.save("p", token("before")).await.unwrap();
    redis.kill();
    let err = a.lease("p").await.err().expect("no lease without redis");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    // Refused because the connection failed, not because a timer ran out
    // (the store's own bound, the lease wait, the client's timeouts).
    let text = err.to_string();
    assert!(text.contains("unreachable"), "{text}");
    for slow in ["no answer within", "gave up waiting", "timed out"] {
        assert!(!text.contains(slow), "{text}");
    }
    assert!(a.save("p", token("during")).await.is_err());
    assert!(a.pending_error().is_some());
    assert_eq!(access_of(a.load("p")), "during");

    redis.restart();
    let flushed = until(Duration::from_secs(15), || async {
        a.flush().await.is_ok()
    })
    .await;
    assert!(flushed);
    assert_eq!(a.pending_error(), None);
    let b = open(&redis, "t5:");
    assert_eq!(access_of(b.load("p")), "during");
    let l = a.lease("p").await.unwrap().unwrap();
    l.release().await;
}
