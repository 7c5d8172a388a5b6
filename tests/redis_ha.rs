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
use authproxy::store::{Owner, RedisOptions, RedisStore, StoreError, StoredToken, TokenStore};
use support::redis_server::RedisServer;

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
        let replica = RedisServer::start_args(&replicaof(primary.port))?;
        let conf = format!(
            "sentinel monitor {MASTER} 127.0.0.1 {port} 2\n\
             sentinel down-after-milliseconds {MASTER} 1000\n\
             sentinel failover-timeout {MASTER} 2000\n\
             sentinel parallel-syncs {MASTER} 1",
            port = primary.port
        );
        let sentinels = (0..3)
            .map(|_| RedisServer::start_sentinel(&conf))
            .collect::<Option<Vec<_>>>()?;
        let ha = Ha {
            nodes: vec![primary, replica],
            sentinels,
        };
        let first = ha.nodes[0].port;
        ha.wait_ready(first);
        Some(ha)
    }

    /// The primary the sentinels name (the first that answers).
    fn named_primary(&self) -> Option<u16> {
        self.sentinels.iter().find_map(|s| {
            let addr: Option<(String, String)> = sync_query(
                s.port,
                redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(MASTER),
            )?;
            addr?.1.parse().ok()
        })
    }

    /// Until every sentinel names `primary` and knows the replica and the
    /// other sentinels, and the replica is in sync (bounded: 30 s).
    fn wait_ready(&self, primary: u16) {
        let ok = poll(Duration::from_secs(30), || {
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
                get("port") == primary.to_string()
                    && get("num-slaves") != "0"
                    && get("num-other-sentinels") == "2"
                    && !get("flags").contains("down")
            });
            let info: Option<String> = sync_query(primary, redis::cmd("INFO").arg("replication"));
            let synced = info.is_some_and(|i| {
                info_field(&i, "role").as_deref() == Some("master")
                    && info_field(&i, "slave0").is_some_and(|s| s.contains("state=online"))
            });
            sentinels_agree && synced
        });
        assert!(
            ok,
            "sentinels and replica not ready around primary {primary}: {}",
            self.logs()
        );
    }

    fn node(&mut self, port: u16) -> &mut RedisServer {
        self.nodes.iter_mut().find(|n| n.port == port).unwrap()
    }

    /// `kill -9` of the primary; waits (bounded: 30 s) for the sentinels
    /// to name another one, and answers its port and the time that took.
    fn kill_primary(&mut self) -> (u16, u16, Duration) {
        let old = self.named_primary().expect("a primary");
        let killed_at = Instant::now();
        self.node(old).kill();
        let mut new = None;
        let ok = poll(Duration::from_secs(30), || {
            new = self.named_primary().filter(|p| *p != old);
            new.is_some()
        });
        assert!(ok, "no failover within 30 s: {}", self.logs());
        (old, new.unwrap(), killed_at.elapsed())
    }

    /// The killed node back, as a replica of the new primary, in sync.
    fn rejoin(&mut self, old: u16, new: u16) {
        self.node(old).restart_with(Some(replicaof(new)));
        self.wait_ready(new);
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

fn quick() -> RedisOptions {
    RedisOptions {
        lease_ttl: Duration::from_millis(600),
        lease_wait: Duration::from_millis(1500),
        op_timeout: Duration::from_secs(2),
        heartbeat: Duration::from_secs(1),
        min_replicas: None,
        replica_timeout: Duration::from_millis(300),
    }
}

fn token(access: &str) -> StoredToken {
    StoredToken {
        access_token: Some(Secret::new(access)),
        refresh_token: Some(Secret::new(format!("r-{access}"))),
        expires_at: Some(4_000_000_000),
        token_type: None,
        obtained_at: 1,
        owner: Owner::Fingerprint("fp".into()),
    }
}

fn access_of(t: Option<StoredToken>) -> String {
    t.and_then(|t| t.access_token)
        .map(|a| a.expose().to_string())
        .unwrap_or_default()
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
    let a = RedisStore::open_target(&target, "fence:", None, quick()).unwrap();
    let b = RedisStore::open_target(&target, "fence:", None, quick()).unwrap();
    let _feed_a = a.subscribe();
    let _feed_b = b.subscribe();
    a.save("p", token("t1")).await.unwrap();

    let mut lease_a = a.lease("p").await.unwrap().unwrap();
    let (old, new, _) = ha.kill_primary();
    ha.rejoin(old, new);

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
    let store = RedisStore::open(&Secret::new(primary.url()), "durable:", None, quick()).unwrap();
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
