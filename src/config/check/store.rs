//! `[store]`.

use url::Url;

use super::Checker;
use crate::config::raw::RawStore;
use crate::config::types::{
    is_loopback_host, RedisTarget, RedisTimings, SentinelConfig, StoreConfig,
};
use crate::secret::{Secret, SecretKey};

impl Checker<'_> {
    pub(super) fn store(&mut self, raw: RawStore) -> StoreConfig {
        let kind = raw.kind.as_deref().unwrap_or("file");
        let encryption_key = raw
            .encryption_key
            .as_deref()
            .and_then(|text| self.encryption_key(text));
        if kind != "redis" {
            for key in redis_only_keys(&raw) {
                self.err(
                    format!("store.{key}"),
                    "is only used with kind = \"redis\"; remove it",
                );
            }
        }
        match kind {
            "file" => {
                let path = raw.path.unwrap_or_else(|| "state/tokens.json".into());
                StoreConfig::File {
                    path: self.base_dir.join(path),
                    encryption_key,
                }
            }
            "memory" => {
                if raw.path.is_some() {
                    self.err(
                        "store.path",
                        "kind = \"memory\" takes no path; remove it (tokens are lost on restart)",
                    );
                }
                if raw.encryption_key.is_some() {
                    self.err(
                        "store.encryption_key",
                        "kind = \"memory\" keeps nothing at rest; remove it",
                    );
                }
                StoreConfig::Memory
            }
            "redis" => {
                if raw.path.is_some() {
                    self.err("store.path", "is only used with kind = \"file\"; remove it");
                }
                let target = self.redis_target(&raw);
                let timings = self.redis_timings(&raw);
                StoreConfig::Redis {
                    target,
                    key_prefix: raw.key_prefix.unwrap_or_else(|| "authproxy:".into()),
                    encryption_key,
                    timings,
                }
            }
            other => {
                self.err(
                    "store.kind",
                    format!("unknown store kind `{other}`; use \"file\", \"memory\" or \"redis\""),
                );
                StoreConfig::Memory
            }
        }
    }

    /// `store.url`, or `store.sentinels` + `store.master_name` (with
    /// `db`, `username`, `password`, `sentinel_password`, `tls`).
    fn redis_target(&mut self, raw: &RawStore) -> RedisTarget {
        let sentinel_keys = [
            ("master_name", raw.master_name.is_some()),
            ("db", raw.db.is_some()),
            ("username", raw.username.is_some()),
            ("password", raw.password.is_some()),
            ("sentinel_password", raw.sentinel_password.is_some()),
            ("tls", raw.tls.is_some()),
        ];
        let Some(list) = &raw.sentinels else {
            for (key, set) in sentinel_keys {
                if set {
                    self.err(
                        format!("store.{key}"),
                        "is only used with store.sentinels (with store.url, put the database, user, password and rediss:// in the URL); remove it or switch to sentinels",
                    );
                }
            }
            return RedisTarget::Url(self.redis_url(raw));
        };
        if raw.url.is_some() {
            self.err(
                "store.url",
                "store.url and store.sentinels are two ways to find the primary; keep one (sentinels follow failovers)",
            );
        }
        if list.is_empty() {
            self.err(
                "store.sentinels",
                "is empty; list the sentinels like [\"10.0.0.1:26379\", \"10.0.0.2:26379\"]",
            );
        }
        let tls = raw.tls == Some(true);
        let mut sentinels = Vec::new();
        for (i, entry) in list.iter().enumerate() {
            match parse_host_port(entry) {
                Some((host, port)) => {
                    if !tls && !host_is_loopback(&host) && raw.allow_insecure != Some(true) {
                        self.err(
                            format!("store.sentinels[{i}]"),
                            format!("`{host}` is not loopback and store.tls is not set: tokens and passwords would cross the network in clear text; set store.tls = true, or store.allow_insecure = true if the network in between is private"),
                        );
                    }
                    sentinels.push((host, port));
                }
                None => self.err(
                    format!("store.sentinels[{i}]"),
                    format!("`{entry}` is not host:port; write it like \"10.0.0.1:26379\""),
                ),
            }
        }
        let master_name = match raw.master_name.as_deref() {
            Some(name) if !name.is_empty() && !name.contains(char::is_whitespace) => {
                name.to_string()
            }
            _ => {
                self.err(
                    "store.master_name",
                    "is required with store.sentinels: the name the sentinels monitor (`sentinel monitor <name> …`), e.g. master_name = \"mymaster\"",
                );
                String::new()
            }
        };
        let db = raw.db.unwrap_or(0);
        if db < 0 {
            self.err("store.db", "must be 0 or more (the database number)");
        }
        RedisTarget::Sentinel(SentinelConfig {
            sentinels,
            master_name,
            db: db.max(0),
            username: raw.username.clone(),
            password: raw.password.clone().map(Secret::new),
            sentinel_password: raw.sentinel_password.clone().map(Secret::new),
            tls,
        })
    }

    fn redis_url(&mut self, raw: &RawStore) -> Secret {
        let Some(u) = &raw.url else {
            self.err("store.url", "is required with kind = \"redis\"; e.g. url = \"redis://127.0.0.1:6379/0\", or list store.sentinels and store.master_name");
            return Secret::default();
        };
        match Url::parse(u) {
            Ok(parsed) if matches!(parsed.scheme(), "redis" | "rediss") => {
                let loopback = parsed.host().is_some_and(redis_host_is_loopback);
                if parsed.scheme() == "redis" && !loopback && raw.allow_insecure != Some(true) {
                    self.err(
                        "store.url",
                        "plain redis:// to a host that is not loopback would send the tokens and the Redis password in clear text; use rediss:// (TLS), or set store.allow_insecure = true if the network in between is private",
                    );
                }
            }
            Ok(parsed) if parsed.scheme().starts_with("redis+sentinel") => self.err(
                "store.url",
                "sentinel URLs are written as keys here: store.sentinels = [\"host1:26379\", …] and store.master_name = \"mymaster\" (plus store.db, store.password, store.tls)",
            ),
            _ => self.err(
                "store.url",
                "is not a redis URL; write it like \"redis://127.0.0.1:6379/0\" or \"rediss://host:6380/0\"",
            ),
        }
        Secret::new(u.clone())
    }

    fn redis_timings(&mut self, raw: &RawStore) -> RedisTimings {
        let d = RedisTimings::default();
        let replica_timeout = self.duration(
            "store.replica_timeout",
            raw.replica_timeout.clone(),
            d.replica_timeout,
        );
        let lease_ttl = self.duration("store.lease_ttl", raw.lease_ttl.clone(), d.lease_ttl);
        let lease_wait = self.duration("store.lease_wait", raw.lease_wait.clone(), d.lease_wait);
        if replica_timeout.is_zero() {
            self.err(
                "store.replica_timeout",
                "must be more than 0 (0 would make WAIT block forever); e.g. \"2s\"",
            );
        }
        if lease_ttl < std::time::Duration::from_millis(300) {
            self.err(
                "store.lease_ttl",
                "must be at least \"300ms\": the lease is extended every third of it, over the network; e.g. \"10s\"",
            );
        }
        if lease_wait.is_zero() {
            self.err(
                "store.lease_wait",
                "must be more than 0; e.g. \"30s\" (how long a renewal waits for another replica's)",
            );
        }
        // The write and its acknowledgement happen under the lease: a
        // lease shorter than the wait for replicas would run out first.
        if !replica_timeout.is_zero() && lease_ttl <= replica_timeout {
            self.err(
                "store.lease_ttl",
                format!("must be longer than store.replica_timeout ({replica_timeout:?}): the write and the replicas' acknowledgement happen while the lease is held"),
            );
        }
        RedisTimings {
            min_replicas: raw.min_replicas,
            replica_timeout,
            lease_ttl,
            lease_wait,
        }
    }

    fn encryption_key(&mut self, text: &str) -> Option<SecretKey> {
        match SecretKey::parse(text) {
            Ok(key) => Some(key),
            Err(problem) => {
                self.err(
                    "store.encryption_key",
                    format!("{problem}; it must be 32 random bytes written as base64 or 64 hex digits, read from a file: `openssl rand -base64 32 > store.key` and encryption_key = \"${{file:store.key}}\""),
                );
                None
            }
        }
    }
}

/// `redis://` is not a special scheme to the URL parser: an IPv4 address
/// comes back as a domain name, so it is parsed here.
fn redis_host_is_loopback(host: url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(name) => match name.parse::<std::net::IpAddr>() {
            Ok(ip) => ip.is_loopback(),
            Err(_) => is_loopback_host(host),
        },
        other => is_loopback_host(other),
    }
}

/// The `[store]` keys that only the Redis store reads, where set.
fn redis_only_keys(raw: &RawStore) -> Vec<&'static str> {
    [
        ("url", raw.url.is_some()),
        ("allow_insecure", raw.allow_insecure.is_some()),
        ("sentinels", raw.sentinels.is_some()),
        ("master_name", raw.master_name.is_some()),
        ("db", raw.db.is_some()),
        ("username", raw.username.is_some()),
        ("password", raw.password.is_some()),
        ("sentinel_password", raw.sentinel_password.is_some()),
        ("tls", raw.tls.is_some()),
        ("min_replicas", raw.min_replicas.is_some()),
        ("replica_timeout", raw.replica_timeout.is_some()),
        ("lease_ttl", raw.lease_ttl.is_some()),
        ("lease_wait", raw.lease_wait.is_some()),
    ]
    .into_iter()
    .filter_map(|(key, set)| set.then_some(key))
    .collect()
}

/// `host:port`, `[v6]:port`; the port is required (sentinels listen on
/// 26379 by convention, not by default).
fn parse_host_port(entry: &str) -> Option<(String, u16)> {
    let (host, port) = entry.trim().rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/' || c == '@') {
        return None;
    }
    Some((host.to_string(), port))
}

fn host_is_loopback(host: &str) -> bool {
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}
