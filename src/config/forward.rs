//! `[forward_proxy]` as checked: the local CA's files and the hosts
//! tunnelled blind.

use std::path::PathBuf;

use crate::http::authority::split_port;
use crate::http::authority::{Authority, Host};

/// `[forward_proxy]`: `CONNECT` and absolute-form requests for the host
/// routes (TLS terminated with a leaf certificate of the local CA) and
/// the `tunnel` hosts (spliced blind).
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardProxyConfig {
    pub enabled: bool,
    /// The local CA's certificate (PEM); made on first start with `ca_key`.
    pub ca_cert: PathBuf,
    /// Its private key (PKCS#8 PEM, 0600).
    pub ca_key: PathBuf,
    /// Hosts tunnelled blind: no TLS termination, no credential.
    pub tunnel: Vec<TunnelPattern>,
}

/// One `forward_proxy.tunnel` entry: `host`, `*.suffix`, each with
/// `:port` (443 when not given) or `:*` (any port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelPattern {
    host: TunnelHost,
    /// `None`: any port.
    port: Option<u16>,
    written: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TunnelHost {
    Exact(Host),
    /// `*.example.org`: names below `example.org`, not itself.
    Below(String),
}

impl TunnelPattern {
    pub fn parse(text: &str) -> Result<TunnelPattern, String> {
        let (host_text, port) = match text.strip_suffix(":*") {
            Some(h) => (h, None),
            None => {
                let (h, p) = split_port(text).map_err(|e| format!("`{text}` {e}"))?;
                (h, Some(p.unwrap_or(443)))
            }
        };
        let host = match host_text.strip_prefix("*.") {
            Some(rest) => match Host::parse(rest) {
                Ok(Host::Name(n)) => TunnelHost::Below(n),
                Ok(Host::Ip(_)) => {
                    return Err(format!("`{text}`: `*.` goes before a name, not an address"))
                }
                Err(e) => return Err(format!("`{text}` {e}")),
            },
            None => TunnelHost::Exact(Host::parse(host_text).map_err(|e| format!("`{text}` {e}"))?),
        };
        Ok(TunnelPattern {
            host,
            port,
            written: text.to_string(),
        })
    }

    pub fn matches(&self, target: &Authority) -> bool {
        if self.port.is_some_and(|p| p != target.port) {
            return false;
        }
        match (&self.host, &target.host) {
            (TunnelHost::Exact(h), t) => h == t,
            (TunnelHost::Below(suffix), Host::Name(n)) => n
                .strip_suffix(suffix.as_str())
                .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')),
            (TunnelHost::Below(_), Host::Ip(_)) => false,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.written
    }
}
