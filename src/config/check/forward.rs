//! `[forward_proxy]`.

use std::path::{Path, PathBuf};

use super::Checker;
use crate::config::raw::RawForwardProxy;
use crate::config::types::{ForwardProxyConfig, StoreConfig, TunnelPattern};

impl Checker<'_> {
    /// `store` decides where the CA files go by default: the file store's
    /// folder, else `state/` beside the config.
    pub(super) fn forward_proxy(
        &mut self,
        raw: RawForwardProxy,
        store: &StoreConfig,
    ) -> ForwardProxyConfig {
        let enabled = raw.enabled.unwrap_or(false);
        let folder = match store {
            StoreConfig::File { path, .. } => match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            },
            _ => self.base_dir.join("state"),
        };
        let path = |given: Option<String>, default: &str, base: &Path| match given {
            Some(p) => base.join(p),
            None => folder.join(default),
        };
        let ca_cert = path(raw.ca_cert, "ca.pem", self.base_dir);
        let ca_key = path(raw.ca_key, "ca.key", self.base_dir);
        if ca_cert == ca_key {
            self.err(
                "forward_proxy.ca_key",
                "is the same file as ca_cert; give the key a file of its own (e.g. state/ca.key)",
            );
        }
        let mut tunnel = Vec::new();
        for (i, entry) in raw.tunnel.unwrap_or_default().iter().enumerate() {
            match TunnelPattern::parse(entry) {
                Ok(p) => tunnel.push(p),
                Err(problem) => self.err(
                    format!("forward_proxy.tunnel[{i}]"),
                    format!("{problem}; write a host (`api.example.org`), all names below one (`*.example.org`), or an address, with `:port` (443 when not given) or `:*` for any port"),
                ),
            }
        }
        if !enabled && !tunnel.is_empty() {
            self.err(
                "forward_proxy.tunnel",
                "applies only in forward-proxy mode; set [forward_proxy] enabled = true or remove it",
            );
        }
        ForwardProxyConfig {
            enabled,
            ca_cert,
            ca_key,
            tunnel,
        }
    }
}
