//! `[store]`.

use url::Url;

use super::Checker;
use crate::config::raw::RawStore;
use crate::config::types::StoreConfig;
use crate::secret::Secret;

impl Checker<'_> {
    pub(super) fn store(&mut self, raw: RawStore) -> StoreConfig {
        let kind = raw.kind.as_deref().unwrap_or("file");
        match kind {
            "file" => {
                if raw.url.is_some() {
                    self.err("store.url", "is only used with kind = \"redis\"; remove it");
                }
                let path = raw.path.unwrap_or_else(|| "state/tokens.json".into());
                StoreConfig::File {
                    path: self.base_dir.join(path),
                }
            }
            "memory" => {
                if raw.path.is_some() || raw.url.is_some() {
                    self.err(
                        "store",
                        "kind = \"memory\" takes no path or url; remove them (tokens are lost on restart)",
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
                            Ok(parsed) if matches!(parsed.scheme(), "redis" | "rediss") => {}
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
}
