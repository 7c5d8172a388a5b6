//! The Redis store with high availability, against real servers from
//! Debian's packages started by the tests on loopback ports: one primary,
//! one replica, three `redis-sentinel`s. Failovers are real (`kill -9` of
//! the primary, the sentinels elect the replica); a replica that does not
//! acknowledge is a real stopped process (`SIGSTOP`).
//!
//! Without `redis-server` / `redis-sentinel` the tests fail, unless
//! `AUTHPROXY_TEST_ALLOW_MISSING=redis-server,redis-sentinel` lets them
//! skip (never under `CI`).

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use authproxy::config::{RedisTarget, SentinelConfig};
use authproxy::secret::Secret;
use authproxy::store::{RedisStore, StoreError, TokenStore};
use support::providers::{MockProvider, Style, CLIENT_ID};
use support::redis_server::{access_of, quick_options, token, RedisServer};
use support::{client, get_text, storm, write_config, ProxyProcess};

const MASTER: &str = "mymaster";

/// A primary, a replica and three sentinels (quorum 2). The sentinels
/// call a primary down after 1 s without an answer.
struct Ha {
    nodes: Vec<RedisServer>,
    sentinels: Vec<RedisServer>,
}

fn replicaof(port: u16) -> Vec<String> {
    vec!["--replicaof".into(), "127.0.0.1".into(), port.to_string()]
}

fn sync_query<T: redis::FromRedisValue>(port: u16, cmd: &mut redis::Cmd) -> Option<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/0")).ok()?;
    let mut conn = client
        .get_connection_with_timeout(Duration::from_millis(500))
        .ok()?;
    cmd.query(&mut conn).ok()
}

fn info_field(info: &str, name: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
        .map(|v| v.trim().to_string())
}

/// Polls `cond` every 50 ms until it holds or `timeout` passes.
fn poll(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Ha {
    fn start() -> Option<Ha> {
        Self::start_with_replicas(1)
    }

    fn start_with_replicas(n: usize) -> Option<Ha> {
        let found = Command::new("redis-sentinel")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !support::require_tool(
            "redis-sentinel",
            found,
            "apt-get install redis-sentinel (.ci/run installs it)",
        ) {
            return None;
        }
        let primary = RedisServer::start()?;
        let port = primary.port;
        let mut nodes = vec![primary];
        for _ in 0..n {
            nodes.push(RedisServer::start_args(&replicaof(port))?);
        }
        let conf = format!(
            "sentinel monitor {MASTER} 127.0.0.1 {port} 2\n\
             sentinel down-after-milliseconds {MASTER} 1000\n\
             sentinel failover-timeout {MASTER} 2000\n\
             sentinel parallel-syncs {MASTER} 1"
        );
        let sentinels = (0..3)
            .map(|_| RedisServer::start_sentinel(&conf))
            .collect::<Option<Vec<_>>>()?;
        let ha = Ha { nodes, sentinels };
        ha.wait_ready();
        Some(ha)
    }

    /// The primary every sentinel names, if they agree and that node says
    /// it is a primary.
    fn agreed_primary(&self) -> Option<u16> {
        let mut named = self.sentinels.iter().map(|s| {
            let addr: Option<Option<(String, String)>> = sync_query(
                s.port,
                redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(MASTER),
            );
            addr.flatten()
                .and_then(|(_, port)| port.parse::<u16>().ok())
        });
        let first = named.next().flatten()?;
        if !named.all(|p| p == Some(first)) {
            return None;
        }
        let info: String = sync_query(first, redis::cmd("INFO").arg("replication"))?;
        (info_field(&info, "role").as_deref() == Some("master")).then_some(first)
    }

    /// Until every sentinel names the same primary, knows the replicas and
    /// the other sentinels, and every replica is in sync with it (bounded:
    /// 60 s). Answers that primary. A spontaneous failover meanwhile (a
    /// loaded machine can miss `down-after-milliseconds`) is waited out.
    fn wait_ready(&self) -> u16 {
        let replicas = self.nodes.len() - 1;
        let mut ready = None;
        let ok = poll(Duration::from_secs(60), || {
            let Some(primary) = self.agreed_primary() else {
                return false;
            };
            let sentinels_agree = self.sentinels.iter().all(|s| {
                let fields: Option<Vec<String>> =
                    sync_query(s.port, redis::cmd("SENTINEL").arg("master").arg(MASTER));
                let Some(fields) = fields else { return false };
                let get = |k: &str| {
                    fields
                        .chunks(2)
                        .find(|kv| kv[0] == k)
                        .map(|kv| kv[1].clone())
                        .unwrap_or_default()
                };
                get("num-slaves") != "0"
                    && get("num-other-sentinels") == "2"
                    && !get("flags").contains("down")
            });
            let info: Option<String> = sync_query(primary, redis::cmd("INFO").arg("replication"));
            let synced = info.is_some_and(|i| {
                (0..replicas).all(|k| {
                    info_field(&i, &format!("slave{k}")).is_some_and(|s| s.contains("state=online"))
                })
            });
            if sentinels_agree && synced {
                ready = Some(primary);
            }
            ready.is_some()
        });
        assert!(ok, "sentinels and replicas not ready: {}", self.logs());
        ready.unwrap()
    }

    fn node(&mut self, port: u16) -> &mut RedisServer {
        self.nodes.iter_mut().find(|n| n.port == port).unwrap()
    }

    /// `kill -9` of the primary (the one all sentinels name, in sync):
    /// (its port, the kill time).
    fn kill_primary_nowait(&mut self) -> (u16, Instant) {
        let old = self.wait_ready();
        let killed_at = Instant::now();
        self.node(old).kill();
        (old, killed_at)
    }

    /// Waits (bounded: 30 s) until the sentinels agree on a primary other
    /// than `old`: (its port, time since the kill).
    fn finish_failover(&self, old: u16, killed_at: Instant) -> (u16, Duration) {
        let mut new = None;
        let ok = poll(Duration::from_secs(30), || {
            new = self.agreed_primary().filter(|p| *p != old);
            new.is_some()
        });
        assert!(ok, "no failover within 30 s: {}", self.logs());
        (new.unwrap(), killed_at.elapsed())
    }

    /// `kill -9` of the primary; waits for the failover: (old, new, time).
    fn kill_primary(&mut self) -> (u16, u16, Duration) {
        let (old, killed_at) = self.kill_primary_nowait();
        let (new, took) = self.finish_failover(old, killed_at);
        (old, new, took)
    }

    /// The killed node back, as a replica of the primary now, in sync.
    fn rejoin(&mut self, old: u16) -> u16 {
        let primary = self
            .agreed_primary()
            .unwrap_or_else(|| self.wait_ready_without(old));
        self.node(old).restart_with(Some(replicaof(primary)));
        self.wait_ready()
    }

    /// The primary the sentinels agree on while `down` is still down.
    fn wait_ready_without(&self, down: u16) -> u16 {
        let mut found = None;
        let ok = poll(Duration::from_secs(30), || {
            found = self.agreed_primary().filter(|p| *p != down);
            found.is_some()
        });
        assert!(ok, "no primary: {}", self.logs());
        found.unwrap()
    }

    fn sentinel_config(&self) -> SentinelConfig {
        SentinelConfig {
            sentinels: self
                .sentinels
                .iter()
                .map(|s| ("127.0.0.1".to_string(), s.port))
                .collect(),
            master_name: MASTER.into(),
            db: 0,
            username: None,
            password: None,
            sentinel_password: None,
            tls: false,
        }
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for s in self.sentinels.iter().chain(&self.nodes) {
            let log = s.log();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            out.push_str(&format!(
                "\n--- {} ---\n{}",
                s.port,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            ));
        }
        out
    }
}

fn stored_record(port: u16, key: &str) -> String {
    sync_query::<Option<String>>(port, redis::cmd("HGET").arg(key).arg("token"))
        .flatten()
        .unwrap_or_default()
}

/// A replica that held the lease on the old primary does not write over
/// the token another replica wrote on the new one; the store follows the
/// primary the sentinels name, and the winner's token reaches the loser
/// through the new primary's change feed. Without following the primary
/// the loser's store stays on the dead node and never sees `t2`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fencing_survives_a_failover_and_the_store_follows_the_primary() {
    let Some(mut ha) = Ha::start() else { return };
    let target = RedisTarget::Sentinel(ha.sentinel_config());
    let a = RedisStore::open_target(&target, "fence:", None, quick_options()).unwrap();
    let b = RedisStore::open_target(&target, "fence:", None, quick_options()).unwrap();
    let _feed_a = a.subscribe();
    let _feed_b = b.subscribe();
    a.save("p", token("t1")).await.unwrap();

    let mut lease_a = a.lease("p").await.unwrap().unwrap();
    let (old, _, _) = ha.kill_primary();
    let new = ha.rejoin(old);

    // b renews on the new primary once a's lock there has run out (the
    // sentinels take over 1 s to call the primary down; the lock lives
    // 600 ms without being extended).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut lease_b = loop {
        match b.lease("p").await {
            Ok(Some(l)) => break l,
            Ok(None) => unreachable!(),
            Err(e) => assert!(Instant::now() < deadline, "b never got the lease: {e}"),
        }
    };
    lease_b.save(token("t2")).await.unwrap();
    lease_b.release().await;
    assert_eq!(b.primary(), Some(format!("127.0.0.1:{new}")));

    // a's write from its old lease: refused, however many tries it takes
    // to find the new primary.
    let mut last = Ok(());
    for _ in 0..5 {
        last = lease_a.save(token("ta")).await;
        if matches!(last, Err(StoreError::LeaseLost(_))) {
            break;
        }
    }
    assert!(matches!(last, Err(StoreError::LeaseLost(_))), "{last:?}");
    let stored = stored_record(new, "fence:token:p");
    assert!(stored.contains("\"t2\""), "{stored}");
    assert!(!stored.contains("\"ta\""), "{stored}");
    // And a takes the winner's token from the new primary.
    let ok = poll(Duration::from_secs(10), || access_of(a.load("p")) == "t2");
    assert!(ok, "a still has {}", access_of(a.load("p")));
    assert_eq!(a.primary(), Some(format!("127.0.0.1:{new}")));
    assert!(a.failovers() >= 1);
    assert!(a.pending_error().is_none(), "{:?}", a.pending_error());
}

/// A write that the replica does not acknowledge (the replica is
/// stopped): the store says it is not durable, refuses to start another
/// renewal, writes again once the replica is back, and the replica then
/// holds the token. Without `WAIT` the second save is `Ok` at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_write_fails_closed_until_the_replica_has_it() {
    let Some(primary) = RedisServer::start() else {
        return;
    };
    let Some(replica) = RedisServer::start_args(&replicaof(primary.port)) else {
        return;
    };
    let ok = poll(Duration::from_secs(30), || {
        sync_query::<String>(primary.port, redis::cmd("INFO").arg("replication"))
            .and_then(|i| info_field(&i, "slave0"))
            .is_some_and(|s| s.contains("state=online"))
    });
    assert!(ok, "replica not in sync");
    // min_replicas left to its default: 1, as the primary has a replica.
    let store = RedisStore::open(
        &Secret::new(primary.url()),
        "durable:",
        None,
        quick_options(),
    )
    .unwrap();
    store.save("p", token("t1")).await.unwrap();
    assert!(store.pending_error().is_none());

    replica.signal("STOP");
    let saved = store.save("p", token("t2")).await;
    assert!(matches!(saved, Err(StoreError::NotDurable(_))), "{saved:?}");
    let pending = store.pending_error().unwrap_or_default();
    assert!(pending.contains("not durable"), "{pending}");
    // The token is in use here (answered by load) but no renewal starts.
    assert_eq!(access_of(store.load("p")), "t2");
    let lease = store.lease("p").await;
    assert!(
        matches!(lease, Err(StoreError::NotDurable(_))),
        "{:?}",
        lease.err()
    );
    assert!(!stored_record(replica.port, "durable:token:p").contains("\"t2\""));

    replica.signal("CONT");
    let deadline = Instant::now() + Duration::from_secs(15);
    while store.pending_error().is_some() {
        assert!(Instant::now() < deadline, "{:?}", store.pending_error());
        let _ = store.flush().await;
    }
    let on_replica = stored_record(replica.port, "durable:token:p");
    assert!(on_replica.contains("\"t2\""), "{on_replica}");
    let lease = store.lease("p").await.unwrap().unwrap();
    lease.release().await;
}

fn proxy_config(ha: &Ha, token_url: &str, api: &str) -> String {
    let sentinels: Vec<String> = ha
        .sentinels
        .iter()
        .map(|s| format!("\"127.0.0.1:{}\"", s.port))
        .collect();
    format!(
        r#"
[server]
listen = "127.0.0.1:0"

[store]
kind = "redis"
sentinels = [{sentinels}]
master_name = "{MASTER}"
replica_timeout = "1s"

[providers.one]
type = "oauth2"
grant = "refresh_token"
token_url = "{token_url}"
body = "json"
client_id = "{CLIENT_ID}"
refresh_token = "seed-S"

[[routes]]
prefix = "/one/"
upstream = "{api}/api/"
provider = "one"
"#,
        sentinels = sentinels.join(", ")
    )
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

/// Three proxy processes on one single-use rotating chain (the OneCloud
/// mock with reuse detection), behind Sentinel (a primary, two replicas,
/// three sentinels). Ten times: every access token expires, a refresh
/// storm starts, and the primary is killed with `kill -9` — at the moment
/// the refresh request reaches the provider (its answer then arrives
/// while no primary answers), before the storm, or right after the
/// provider answered. Each time: every request is answered 200 or a
/// clean 502, exactly one refresh per expiry across the three proxies,
/// no refresh token is ever sent twice, and the chain goes on on the new
/// primary. Prints the failover time the clients saw (kill until every
/// proxy serves again) and the requests that failed meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_storms_through_ten_failovers_keep_one_chain() {
    let Some(mut ha) = Ha::start_with_replicas(2) else {
        return;
    };
    let mock = MockProvider::start(Style::OneCloud).await;
    mock.issue_seed("seed-S");
    mock.set(|s| s.token_delay = Duration::from_millis(300));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &proxy_config(&ha, &mock.token_url(), &mock.base()),
    );
    let proxies: Vec<ProxyProcess> = (0..3).map(|_| ProxyProcess::start(&config, &[])).collect();
    let statuses = storm(&proxies, 60, "cold").await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(mock.token_request_count(), 1);

    const ROUNDS: usize = 10;
    let test_deadline = Instant::now() + Duration::from_secs(600);
    let mut seen_by_clients = Vec::new();
    let mut sentinel_switch = Vec::new();
    // The storms, and the probes that follow every 9 requests until all
    // three proxies serve again.
    let (mut storm_failed, mut storm_answered) = (0usize, 0usize);
    let (mut failed, mut answered) = (0usize, 0usize);
    for round in 0..ROUNDS {
        assert!(Instant::now() < test_deadline, "over 10 minutes");
        mock.expire_all();
        let before = mock.token_request_count();
        let hits_before = mock.state.lock().unwrap().token_hits;
        let (kill_at, old, new, switch) = match round % 3 {
            // Before the storm: it meets a dead primary.
            1 => {
                let (old, kill_at) = ha.kill_primary_nowait();
                let statuses = storm(&proxies, 60, &format!("r{round}")).await;
                let (new, took) = ha.finish_failover(old, kill_at);
                check_statuses(&statuses, &mut storm_failed, &mut storm_answered);
                (kill_at, old, new, took)
            }
            kind => {
                let tag = format!("r{round}");
                let storm_task = {
                    let urls: Vec<String> = (0..60)
                        .map(|i| proxies[i % 3].url(&format!("/one/{tag}/{i}")))
                        .collect();
                    tokio::spawn(async move {
                        let c = client();
                        let all = urls.into_iter().map(|u| {
                            let c = c.clone();
                            async move {
                                c.get(u)
                                    .send()
                                    .await
                                    .map(|r| r.status().as_u16())
                                    .unwrap_or(0)
                            }
                        });
                        futures_util::future::join_all(all).await
                    })
                };
                // 0: the refresh request has reached the provider (its
                // answer comes 300 ms later); 2: the provider answered.
                let reached_deadline = Instant::now() + Duration::from_secs(20);
                let reached = loop {
                    let reached = {
                        let s = mock.state.lock().unwrap();
                        if kind == 0 {
                            s.token_hits > hits_before
                        } else {
                            s.token_requests.len() > before
                        }
                    };
                    if reached || Instant::now() > reached_deadline {
                        break reached;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                };
                assert!(reached, "round {round}: no refresh request");
                let (old, kill_at) = ha.kill_primary_nowait();
                let statuses = storm_task.await.unwrap();
                let (new, took) = ha.finish_failover(old, kill_at);
                check_statuses(&statuses, &mut storm_failed, &mut storm_answered);
                (kill_at, old, new, took)
            }
        };
        sentinel_switch.push(switch);
        // Every proxy serves again: the chain goes on on the new primary.
        let mut probe = 0;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            probe += 1;
            let statuses = storm(&proxies, 9, &format!("r{round}p{probe}")).await;
            let ok = statuses.iter().all(|s| *s == 200);
            check_statuses(&statuses, &mut failed, &mut answered);
            if ok {
                seen_by_clients.push(kill_at.elapsed());
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: proxies do not serve again on primary {new}: {statuses:?}\n{}",
                proxies
                    .iter()
                    .map(|p| p.log())
                    .collect::<Vec<_>>()
                    .join("\n----\n")
            );
        }
        assert!(
            !mock.reuse_detected(),
            "round {round}: a spent refresh token was sent again"
        );
        assert_eq!(
            mock.token_request_count() - before,
            1,
            "round {round}: one refresh per expiry: {:?}",
            mock.token_requests()
        );
        ha.rejoin(old);
    }
    assert!(mock.token_requests().iter().all(|r| r.status == 200));
    assert_eq!(mock.token_request_count(), ROUNDS + 1);
    // The window this is about was hit: a token answer that arrived while
    // no primary answered, kept in memory and written after the failover.
    let unwritten = proxies
        .iter()
        .map(|p| p.log().matches("TOKEN STORE WRITE FAILED").count())
        .sum::<usize>();
    assert!(unwritten >= 1, "no write ever met a dead primary");
    seen_by_clients.sort();
    sentinel_switch.sort();
    eprintln!(
        "{ROUNDS} failovers: sentinels switched after p50 {:?} / max {:?}; clients served again after p50 {:?} / max {:?}; storms: {storm_failed} of {storm_answered} requests answered 502, probes after them: {failed} of {answered}; none unanswered; {unwritten} token writes met a dead primary",
        percentile(&sentinel_switch, 50),
        sentinel_switch.last().unwrap(),
        percentile(&seen_by_clients, 50),
        seen_by_clients.last().unwrap(),
    );
}

/// Every status is 200 or 502; counts the 502s.
fn check_statuses(statuses: &[u16], failed: &mut usize, answered: &mut usize) {
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 502),
        "{statuses:?}"
    );
    *answered += statuses.len();
    *failed += statuses.iter().filter(|s| **s == 502).count();
}

/// `check --probe` asks every sentinel and the primary and reports what it
/// sees — the primary, its replica, the other sentinels — and writes
/// nothing (the primary holds no key afterwards).
#[test]
fn check_probe_reports_the_topology_without_writing() {
    let Some(ha) = Ha::start() else { return };
    let dir = tempfile::tempdir().unwrap();
    let sentinels: Vec<String> = ha
        .sentinels
        .iter()
        .map(|s| format!("\"127.0.0.1:{}\"", s.port))
        .collect();
    let config = write_config(
        dir.path(),
        &format!(
            "[store]\nkind = \"redis\"\nsentinels = [{}]\nmaster_name = \"{MASTER}\"\n\
             [providers.s]\ntype = \"static\"\nheaders = {{ Authorization = \"Token x\" }}\n\
             [[routes]]\nprefix = \"/s/\"\nupstream = \"http://127.0.0.1:9/\"\nprovider = \"s\"\n",
            sentinels.join(", ")
        ),
    );
    let out = Command::new(support::binary())
        .args(["check", "--probe", "--config", config.to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let primary = ha.wait_ready();
    assert!(
        stdout.contains(&format!("primary (checked with ROLE): 127.0.0.1:{primary}")),
        "{stdout}"
    );
    assert!(
        stdout.contains("role master, 1 connected replica(s)"),
        "{stdout}"
    );
    let replica = ha.nodes.iter().find(|n| n.port != primary).unwrap().port;
    assert!(stdout.contains(&format!("port={replica}")), "{stdout}");
    for s in &ha.sentinels {
        assert!(
            stdout.contains(&format!(
                "sentinel 127.0.0.1:{}: primary 127.0.0.1:{primary}, 1 replica(s), 2 other sentinel(s), quorum 2",
                s.port
            )),
            "{stdout}"
        );
    }
    let keys: u64 = sync_query(primary, &mut redis::cmd("DBSIZE")).unwrap();
    assert_eq!(keys, 0, "the probe wrote to the primary");
}

/// One proxy, a primary and a replica (`store.url`, `min_replicas` left
/// to its default). The replica is stopped while a refresh is in flight:
/// the new token is used, status and metrics say the store is not
/// durable, and the next expiry starts no refresh (502, counted as
/// `refused_store_not_durable`) — until the replica is back, has the
/// token, and the chain goes on without a reuse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_fails_closed_while_the_replica_does_not_acknowledge() {
    let Some(primary) = RedisServer::start() else {
        return;
    };
    let Some(replica) = RedisServer::start_args(&replicaof(primary.port)) else {
        return;
    };
    let ok = poll(Duration::from_secs(30), || {
        sync_query::<String>(primary.port, redis::cmd("INFO").arg("replication"))
            .and_then(|i| info_field(&i, "slave0"))
            .is_some_and(|s| s.contains("state=online"))
    });
    assert!(ok, "replica not in sync");
    let mock = MockProvider::start(Style::OneCloud).await;
    mock.issue_seed("seed-S");
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
[store]
kind = "redis"
url = "{url}"
replica_timeout = "500ms"
[providers.one]
type = "oauth2"
grant = "refresh_token"
token_url = "{token_url}"
body = "json"
client_id = "{CLIENT_ID}"
refresh_token = "seed-S"
[[routes]]
prefix = "/one/"
upstream = "{api}/api/"
provider = "one"
"#,
        url = primary.url(),
        token_url = mock.token_url(),
        api = mock.base()
    );
    let config = write_config(dir.path(), &text);
    let proxy = ProxyProcess::start(&config, &[]);
    assert_eq!(get_text(proxy.url("/one/cold")).await.0, 200);
    assert_eq!(mock.token_request_count(), 1);

    // The replica stops while the refresh request is at the provider.
    mock.expire_all();
    mock.set(|s| s.token_delay = Duration::from_millis(300));
    let hits = mock.state.lock().unwrap().token_hits;
    let request = tokio::spawn(get_text(proxy.url("/one/during")));
    let deadline = Instant::now() + Duration::from_secs(20);
    while mock.state.lock().unwrap().token_hits == hits {
        assert!(Instant::now() < deadline, "no refresh request");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    replica.signal("STOP");
    assert_eq!(request.await.unwrap().0, 200, "the new token is used");
    let (_, status) = get_text(proxy.url("/_authproxy/status")).await;
    assert!(status.contains("not durable"), "{status}");
    let (_, metrics) = get_text(proxy.url("/_authproxy/metrics")).await;
    assert!(
        metrics.contains("authproxy_store_write_failures_total 1"),
        "{metrics}"
    );

    // The next expiry: no refresh from a token a failover could take back.
    mock.expire_all();
    let (code, body) = get_text(proxy.url("/one/refused")).await;
    assert_eq!(code, 502, "{body}");
    assert!(body.contains("not durable"), "{body}");
    assert_eq!(mock.token_request_count(), 2, "no refresh was started");
    let (_, metrics) = get_text(proxy.url("/_authproxy/metrics")).await;
    assert!(
        metrics.contains("outcome=\"refused_store_not_durable\""),
        "{metrics}"
    );

    replica.signal("CONT");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = get_text(proxy.url("/one/after")).await;
        if code == 200 {
            break;
        }
        assert_eq!(code, 502, "{body}");
        assert!(Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(mock.token_request_count(), 3);
    assert!(!mock.reuse_detected());
    let (_, status) = get_text(proxy.url("/_authproxy/status")).await;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert!(status["store"]["error"].is_null(), "{status}");
}
