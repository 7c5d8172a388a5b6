//! Which node is the primary (Redis Sentinel, asked again after every
//! failed command), how many replicas must hold a write before it counts
//! (`WAIT`), and what `check --probe` reports about both.

use std::sync::atomic::Ordering;
use std::time::Duration;

use ::redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use ::redis::{Client, Cmd, ConnectionAddr, FromRedisValue, RedisResult, TlsMode};

use super::conn::{connection_manager, Primary};
use super::{scrub, Shared};
use crate::config::{RedisTarget, SentinelConfig};
use crate::store::StoreError;

/// A client that asks `cfg`'s sentinels for the primary. Built afresh for
/// every lookup: lookups are rare (start, after a failed command), and a
/// fresh one never reuses a connection from another runtime.
pub(super) fn sentinel_client(cfg: &SentinelConfig) -> RedisResult<SentinelClient> {
    let nodes = cfg.sentinels.iter().map(|(host, port)| {
        if cfg.tls {
            ConnectionAddr::TcpTls {
                host: host.clone(),
                port: *port,
                insecure: false,
                tls_params: None,
            }
        } else {
            ConnectionAddr::Tcp(host.clone(), *port)
        }
    });
    let mut b = SentinelClientBuilder::new(nodes, &cfg.master_name, SentinelServerType::Master)?
        .set_client_to_redis_db(cfg.db);
    if cfg.tls {
        b = b
            .set_client_to_redis_tls_mode(TlsMode::Secure)
            .set_client_to_sentinel_tls_mode(TlsMode::Secure);
    }
    if let Some(user) = &cfg.username {
        b = b.set_client_to_redis_username(user);
    }
    if let Some(pw) = &cfg.password {
        b = b.set_client_to_redis_password(pw.expose());
    }
    if let Some(pw) = &cfg.sentinel_password {
        b = b.set_client_to_sentinel_password(pw.expose());
    }
    b.build()
}

/// `host:port/db` of the sentinels, for messages.
pub(super) fn describe_sentinels(cfg: &SentinelConfig) -> String {
    let list: Vec<String> = cfg
        .sentinels
        .iter()
        .map(|(h, p)| {
            if h.contains(':') {
                format!("[{h}]:{p}")
            } else {
                format!("{h}:{p}")
            }
        })
        .collect();
    format!(
        "sentinel {} via {} db {}",
        cfg.master_name,
        list.join(","),
        cfg.db
    )
}

/// The passwords of a sentinel setup, to scrub from error text.
pub(super) fn sentinel_secrets(cfg: &SentinelConfig) -> Vec<String> {
    [&cfg.password, &cfg.sentinel_password]
        .into_iter()
        .flatten()
        .map(|s| s.expose().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Asks the sentinels for the primary (which the redis crate checks with
/// `ROLE` before answering). Bounded by `bound`.
pub(super) async fn resolve(
    cfg: &SentinelConfig,
    bound: Duration,
) -> Result<(Client, String), String> {
    let mut sc = sentinel_client(cfg).map_err(|e| e.to_string())?;
    match tokio::time::timeout(bound, sc.async_get_client()).await {
        Ok(Ok(client)) => {
            let addr = client.get_connection_info().addr().to_string();
            Ok((client, addr))
        }
        Ok(Err(e)) => Err(format!("sentinels name no reachable primary: {e}")),
        Err(_) => Err(format!("sentinels gave no primary within {bound:.0?}")),
    }
}

/// How a write went with the replicas.
pub(super) enum Acked {
    /// As many replicas as wanted (or none wanted) hold it.
    Enough,
    /// Only `acked` of `wanted` did within `store.replica_timeout`.
    Short { acked: i64, wanted: u32 },
}

impl Shared {
    /// Asks the sentinels for the primary again and switches to it when
    /// it moved (or, with `fresh`, when the connection is stuck on a
    /// non-I/O error). Without sentinels, does nothing.
    pub(super) async fn follow_primary(&self, fresh: bool) -> Result<(), String> {
        let Some(cfg) = &self.sentinels else {
            return Ok(());
        };
        // One lookup at a time: a burst of failed commands during a
        // failover asks the sentinels once, not once per command.
        let _one = self.resolving.lock().await;
        let (client, addr) = resolve(cfg, self.opts.op_timeout)
            .await
            .map_err(|e| scrub(&e, &self.redact))?;
        self.install(client, addr, fresh);
        Ok(())
    }

    /// Makes `client` at `addr` the primary, unless it already is (and
    /// `fresh` is false).
    pub(super) fn install(&self, client: Client, addr: String, fresh: bool) {
        let mut slot = self.primary.lock().unwrap();
        let before = slot.as_ref().map(|p| p.addr.clone());
        if before.as_deref() == Some(addr.as_str()) && !fresh {
            return;
        }
        let conn = match connection_manager(&client, &self.opts) {
            Ok(conn) => conn,
            Err(e) => {
                tracing::error!(error = %scrub(&e, &self.redact), "cannot set up a client for the redis primary");
                return;
            }
        };
        match before {
            Some(old) if old != addr => {
                self.failovers.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(store = %self.endpoint, from = %old, to = %addr, "redis primary moved (failover); following it")
            }
            None => tracing::info!(store = %self.endpoint, primary = %addr, "redis primary found"),
            _ => {}
        }
        *slot = Some(Primary { client, conn, addr });
    }

    /// Replicas that must acknowledge a write: `store.min_replicas`, else
    /// 1 behind Sentinel or when the primary reported replicas, else 0.
    pub(super) fn wanted_replicas(&self) -> u32 {
        self.opts.min_replicas.unwrap_or(
            if self.sentinels.is_some() || self.replicas_seen.load(Ordering::Relaxed) {
                1
            } else {
                0
            },
        )
    }

    /// Runs one write script (`EVAL`) and, in the same pipeline, so on the
    /// same connection, `WAIT`s for the wanted replicas. Answers the
    /// script's answer and whether enough replicas hold the write.
    pub(super) async fn write_waited<T: FromRedisValue + Send + 'static>(
        &self,
        eval: Cmd,
    ) -> Result<(T, Acked), StoreError> {
        let wanted = self.wanted_replicas();
        let wait_ms = self.opts.replica_timeout.as_millis().max(1) as u64;
        if wanted == 0 {
            let answer: T = self
                .call(|mut c| async move { eval.query_async(&mut c).await })
                .await?;
            return Ok((answer, Acked::Enough));
        }
        let (answer, acked): (T, i64) = self
            .call(|mut c| async move {
                let mut pipe = ::redis::pipe();
                pipe.add_command(eval).cmd("WAIT").arg(wanted).arg(wait_ms);
                pipe.query_async(&mut c).await
            })
            .await?;
        if acked >= i64::from(wanted) {
            Ok((answer, Acked::Enough))
        } else {
            Ok((answer, Acked::Short { acked, wanted }))
        }
    }

    /// The error of a write that too few replicas acknowledged.
    pub(super) fn not_durable(&self, provider: &str, acked: i64, wanted: u32) -> StoreError {
        StoreError::NotDurable(format!(
            "newest token of {provider} is on the redis primary but only {acked} of {wanted} replica(s) acknowledged it within {:.0?} (store.min_replicas, store.replica_timeout); kept in memory and written again; no refresh of a single-use token until they do",
            self.opts.replica_timeout
        ))
    }

    /// Whether the primary reports connected replicas (`INFO replication`).
    pub(super) async fn note_replicas(&self) {
        let info: Result<String, StoreError> = self
            .call(|mut c| async move {
                ::redis::cmd("INFO")
                    .arg("replication")
                    .query_async(&mut c)
                    .await
            })
            .await;
        if let Ok(info) = info {
            if connected_replicas(&info) > 0 {
                self.replicas_seen.store(true, Ordering::Relaxed);
            }
        }
    }
}

/// `connected_slaves` of an `INFO replication` answer.
pub(super) fn connected_replicas(info: &str) -> u64 {
    info.lines()
        .find_map(|l| l.strip_prefix("connected_slaves:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// `check --probe`: what the store would talk to, read only (`ROLE`,
/// `INFO replication`, `SENTINEL` queries; nothing is written). One line
/// per finding; `Err` when no primary answers.
pub async fn probe(target: &RedisTarget, bound: Duration) -> Result<Vec<String>, String> {
    let mut lines = Vec::new();
    let (client, redact) = match target {
        RedisTarget::Url(url) => {
            let (endpoint, _, redact) = super::names::describe_url(url.expose());
            let client = Client::open(url.expose()).map_err(|e| scrub(&e, &redact))?;
            lines.push(format!("redis {endpoint}"));
            (client, redact)
        }
        RedisTarget::Sentinel(cfg) => {
            let redact = sentinel_secrets(cfg);
            lines.push(describe_sentinels(cfg));
            for (host, port) in &cfg.sentinels {
                let one = SentinelConfig {
                    sentinels: vec![(host.clone(), *port)],
                    ..cfg.clone()
                };
                let answer = ask_sentinel(&one, bound).await;
                lines.push(match answer {
                    Ok(text) => format!("  sentinel {host}:{port}: {text}"),
                    Err(e) => format!("  sentinel {host}:{port}: {}", scrub(&e, &redact)),
                });
            }
            let (client, addr) = resolve(cfg, bound).await.map_err(|e| scrub(&e, &redact))?;
            lines.push(format!("  primary (checked with ROLE): {addr}"));
            (client, redact)
        }
    };
    let role = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        ::redis::cmd("INFO")
            .arg("replication")
            .query_async::<String>(&mut conn)
            .await
    };
    let info = match tokio::time::timeout(bound, role).await {
        Ok(Ok(info)) => info,
        Ok(Err(e)) => return Err(scrub(&e, &redact)),
        Err(_) => return Err(format!("no answer within {bound:.0?}")),
    };
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
            .unwrap_or("?")
            .trim()
            .to_string()
    };
    lines.push(format!(
        "  role {}, {} connected replica(s)",
        field("role"),
        connected_replicas(&info)
    ));
    for l in info.lines().filter(|l| {
        l.strip_prefix("slave")
            .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
    }) {
        if let Some((_, v)) = l.split_once(':') {
            lines.push(format!("    replica {}", v.trim()));
        }
    }
    Ok(lines)
}

/// One sentinel's view: the primary it names and how many replicas and
/// other sentinels it knows.
async fn ask_sentinel(one: &SentinelConfig, bound: Duration) -> Result<String, String> {
    let work = async {
        let mut sc = sentinel_client(one)?;
        let client = sc.async_get_sentinel_client().await?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let addr: Option<(String, String)> = ::redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(&one.master_name)
            .query_async(&mut conn)
            .await?;
        let master: Vec<String> = ::redis::cmd("SENTINEL")
            .arg("master")
            .arg(&one.master_name)
            .query_async(&mut conn)
            .await
            .unwrap_or_default();
        Ok::<_, ::redis::RedisError>((addr, master))
    };
    match tokio::time::timeout(bound, work).await {
        Ok(Ok((Some((host, port)), master))) => {
            let get = |k: &str| {
                master
                    .chunks(2)
                    .find(|kv| kv.first().map(String::as_str) == Some(k))
                    .and_then(|kv| kv.get(1).cloned())
                    .unwrap_or_else(|| "?".into())
            };
            Ok(format!(
                "primary {host}:{port}, {} replica(s), {} other sentinel(s), quorum {}",
                get("num-slaves"),
                get("num-other-sentinels"),
                get("quorum")
            ))
        }
        Ok(Ok((None, _))) => Err(format!("does not monitor `{}`", one.master_name)),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {bound:.0?}")),
    }
}
