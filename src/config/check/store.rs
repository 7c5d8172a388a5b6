//! `[store]`.

use url::Url;

use super::Checker;
use crate::config::raw::RawStore;
use crate::config::types::{is_loopback_host, StoreConfig};
use crate::secret::{Secret, SecretKey};

impl Checker<'_> {
    pub(super) fn store(&mut self, raw: RawStore) -> StoreConfig {
        let kind = raw.kind.as_deref().unwrap_or("file");
        let encryption_key = raw
            .encryption_key
            .as_deref()
            .and_then(|text| self.encryption_key(text));
        if raw.allow_insecure.is_some() && kind != "redis" {
            self.err(
                "store.allow_insecure",
                "is only used with kind = \"redis\"; remove it",
            );
        }
        match kind {
            "file" => {
                if raw.url.is_some() {
                    self.err("store.url", "is only used with kind = \"redis\"; remove it");
                }
                let path = raw.path.unwrap_or_else(|| "state/tokens.json".into());
                StoreConfig::File {
                    path: self.base_dir.join(path),
                    encryption_key,
                }
            }
            "memory" => {
                if raw.path.is_some() || raw.url.is_some() {
                    self.err(
                        "store",
                        "kind = \"memory\" takes no path or url; remove them (tokens are lost on restart)",
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
                let url = match raw.url {
                    Some(u) => {
                        match Url::parse(&u) {
                            Ok(parsed) if matches!(parsed.scheme(), "redis" | "rediss") => {
                                let loopback = parsed.host().is_some_and(redis_host_is_loopback);
                                if parsed.scheme() == "redis"
                                    && !loopback
                                    && raw.allow_insecure != Some(true)
                                {
                                    self.err(
                                        "store.url",
                                        "plain redis:// to a host that is not loopback would send the tokens and the Redis password in clear text; use rediss:// (TLS), or set store.allow_insecure = true if the network in between is private",
                                    );
                                }
                            }
                            _ => self.err(
                                "store.url",
                                "is not a redis URL; write it like \"redis://127.0.0.1:6379/0\" or \"rediss://host:6380/0\"",
                            ),
                        }
                        Secret::new(u)
                    }
                    None => {
                        self.err("store.url", "is required with kind = \"redis\"; e.g. url = \"redis://127.0.0.1:6379/0\"");
                        Secret::default()
                    }
                };
                StoreConfig::Redis {
                    url,
                    key_prefix: raw.key_prefix.unwrap_or_else(|| "authproxy:".into()),
                    encryption_key,
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
