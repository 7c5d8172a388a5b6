//! Turns the raw structs into checked ones ([`Checker`]), one file per
//! table: [`server`], [`store`], [`provider`] (its client authentication
//! in [`client_auth`]; and [`kinds`]: the credential kinds built once at
//! load), [`route`], [`forward`], and TLS material in [`tls`].

mod client_auth;
mod egress;
mod forward;
mod kinds;
mod provider;
mod route;
mod server;
mod store;
mod tls;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use url::Url;

use super::error::KeyError;
use super::interpolate::Env;
use super::raw::RawConfig;
use super::types::*;
use super::units;

/// Turns raw structs into checked ones, collecting every error instead of
/// stopping at the first, so one `check` run shows them all.
pub(super) struct Checker<'a> {
    base_dir: &'a Path,
    /// For `server.egress_proxy = "env"`.
    env: &'a dyn Env,
    pub(super) errors: Vec<KeyError>,
}

pub(super) const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);

impl<'a> Checker<'a> {
    pub(super) fn new(base_dir: &'a Path, env: &'a dyn Env) -> Checker<'a> {
        Checker {
            base_dir,
            env,
            errors: Vec::new(),
        }
    }

    fn err(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(KeyError {
            key: key.into(),
            message: message.into(),
        });
    }

    pub(super) fn config(&mut self, raw: RawConfig, file: PathBuf) -> Config {
        let server = self.server(raw.server);
        let store = self.store(raw.store);
        let forward_proxy = self.forward_proxy(raw.forward_proxy, &store);
        let mut providers = BTreeMap::new();
        for (name, p) in raw.providers {
            let key = format!("providers.{name}");
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                self.err(
                    &key,
                    "provider names may use only letters, digits, `_` and `-` (they appear in URLs such as /_authproxy/login/<name>)",
                );
                continue;
            }
            if let Some(kind) = self.provider(&key, p) {
                providers.insert(name.clone(), ProviderConfig { name, kind });
            }
        }
        let mut routes: Vec<RouteConfig> = Vec::new();
        for (i, r) in raw.routes.into_iter().enumerate() {
            let key = format!("routes[{i}]");
            if let Some(route) = self.route(&key, r, &providers, forward_proxy.enabled) {
                if let Some(j) = routes
                    .iter()
                    .position(|o| o.prefix == route.prefix && o.host == route.host)
                {
                    match &route.host {
                        None => self.err(
                            format!("{key}.prefix"),
                            format!(
                                "duplicate prefix `{}` (also routes[{j}].prefix); each prefix may appear once",
                                route.prefix
                            ),
                        ),
                        Some(host) => self.err(
                            format!("{key}.host"),
                            format!(
                                "duplicate host route `{host}` with prefix `{}` (also routes[{j}]); each host and prefix may appear once",
                                route.prefix
                            ),
                        ),
                    }
                }
                routes.push(route);
            }
        }
        if routes.is_empty() && self.errors.is_empty() {
            self.err(
                "routes",
                "no routes configured; add at least one [[routes]] table with `prefix` and `upstream`",
            );
        }
        Config {
            file,
            server,
            store,
            providers,
            routes,
            forward_proxy,
        }
    }

    fn duration(&mut self, key: &str, value: Option<String>, default: Duration) -> Duration {
        match value {
            None => default,
            Some(v) => {
                match units::parse_duration(&v) {
                    Ok(d) => d,
                    Err(problem) => {
                        self.err(
                        key,
                        format!("duration `{v}` {problem}; write it like \"30s\", \"5m\" or \"250ms\""),
                    );
                        default
                    }
                }
            }
        }
    }

    fn url(&mut self, key: &str, text: &str, allow_http: bool, fix_http: &str) -> Option<Url> {
        let url = match Url::parse(text) {
            Ok(u) => u,
            Err(e) => {
                self.err(key, format!("`{text}` is not a valid URL ({e}); write it like \"https://api.example/v1/\""));
                return None;
            }
        };
        match url.scheme() {
            "https" => {}
            "http" if allow_http || url.host().map(is_loopback_host).unwrap_or(false) => {}
            "http" => {
                self.err(
                    key,
                    format!("`{text}` uses plain http to a non-loopback host, which would send credentials in clear text; use https, or set {fix_http}"),
                );
                return None;
            }
            other => {
                self.err(key, format!("scheme `{other}` is not supported; use https"));
                return None;
            }
        }
        if url.host().is_none() {
            self.err(key, format!("`{text}` has no host"));
            return None;
        }
        if !url.username().is_empty() || url.password().is_some() {
            self.err(
                key,
                "must not contain user:password@; put credentials in a provider",
            );
            return None;
        }
        // The url crate accepts hosts the HTTP stack cannot send to (found
        // by fuzzing: "https://h*exa`ple/"); refuse them here, not at the
        // first request.
        if format!("{}://{}/", url.scheme(), url.authority())
            .parse::<http::Uri>()
            .is_err()
        {
            self.err(
                key,
                format!("`{text}` has a host that is not valid in an HTTP request; check for stray characters"),
            );
            return None;
        }
        Some(url)
    }

    fn header_name(&mut self, key: &str, name: &str) -> Option<HeaderName> {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(h) if !crate::http::headers::is_hop_by_hop(&h) && h != http::header::HOST => Some(h),
            Ok(_) => {
                self.err(
                    key,
                    format!("`{name}` is a hop-by-hop or Host header and cannot be injected; use an end-to-end header"),
                );
                None
            }
            Err(_) => {
                self.err(key, format!("`{name}` is not a valid HTTP header name"));
                None
            }
        }
    }

    /// Header values must be visible ASCII / spaces / tabs only: a CR or LF
    /// from an environment variable would split the request.
    fn header_value_ok(&mut self, key: &str, value: &str) -> bool {
        if value.chars().any(|c| c.is_control() && c != '\t') {
            self.err(
                key,
                "contains a control character (CR, LF or similar) after ${...} expansion; check the variable or file it comes from (a trailing newline in a file is trimmed, others are not)",
            );
            return false;
        }
        if HeaderValue::from_str(value).is_err() {
            self.err(
                key,
                "is not a valid HTTP header value (non-ASCII characters?)",
            );
            return false;
        }
        true
    }
}

/// Accepts `ip:port`, `[v6]:port` and `localhost:port`.
pub(super) fn parse_listen(text: &str) -> Option<SocketAddr> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(addr);
    }
    let (host, port) = text.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    if host.eq_ignore_ascii_case("localhost") {
        return Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port));
    }
    None
}
