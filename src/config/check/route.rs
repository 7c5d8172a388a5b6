//! `[[routes]]`.

use std::collections::BTreeMap;

use super::Checker;
use crate::config::raw::RawRoute;
use crate::config::types::*;

impl Checker<'_> {
    pub(super) fn route(
        &mut self,
        key: &str,
        r: RawRoute,
        providers: &BTreeMap<String, ProviderConfig>,
        forward_proxy: bool,
    ) -> Option<RouteConfig> {
        let host = r
            .host
            .as_deref()
            .and_then(|h| self.route_host(key, h, forward_proxy));
        let prefix = match r.prefix.as_deref() {
            // A host route matches the whole host unless told otherwise.
            None if r.host.is_some() => Some(PathPrefix::parse("/").expect("`/` is a prefix")),
            None => {
                self.err(
                    format!("{key}.prefix"),
                    "is required; e.g. prefix = \"/api/\"",
                );
                None
            }
            Some(p) => match PathPrefix::parse(p) {
                Ok(prefix) => Some(prefix),
                Err(problem) => {
                    self.err(format!("{key}.prefix"), format!("`{p}` {problem}"));
                    None
                }
            },
        };
        let fix_http = format!("allow_http = true on {key} if the network is trusted");
        let default_upstream = host.as_ref().map(|h| match h.port {
            443 => format!("https://{}/", h.host),
            port => format!("https://{}:{port}/", h.host),
        });
        let upstream = match r.upstream.as_deref().or(default_upstream.as_deref()) {
            None if r.host.is_some() => None,
            None => {
                self.err(
                    format!("{key}.upstream"),
                    "is required; e.g. upstream = \"https://api.example/v1/\"",
                );
                None
            }
            Some(u) => {
                let url = self.url(
                    &format!("{key}.upstream"),
                    u,
                    r.allow_http.unwrap_or(false),
                    &fix_http,
                );
                match url {
                    Some(url) if url.query().is_some() || url.fragment().is_some() => {
                        self.err(
                            format!("{key}.upstream"),
                            "must not have a query string or fragment; the client's query is forwarded as is",
                        );
                        None
                    }
                    other => other,
                }
            }
        };
        if let Some(name) = &r.provider {
            if !providers.contains_key(name) {
                let known: Vec<&str> = providers.keys().map(String::as_str).collect();
                self.err(
                    format!("{key}.provider"),
                    format!(
                        "unknown provider `{name}`; define [providers.{name}] or use one of: {}",
                        if known.is_empty() {
                            "(none defined)".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
            }
        }
        if r.allow_browsers.is_some() && r.provider.is_none() {
            self.err(
                format!("{key}.allow_browsers"),
                "applies only to routes with a provider (browser requests to a pass-through route are never refused); remove it or add a provider",
            );
        }
        let ca_file = r.ca_file.map(|p| self.base_dir.join(p));
        if let Some(path) = &ca_file {
            if !path.is_file() {
                self.err(
                    format!("{key}.ca_file"),
                    format!("file {} does not exist; give a PEM file of CA certificates (relative to the config file)", path.display()),
                );
            }
        }
        let max_upstream_connections = r
            .max_upstream_connections
            .unwrap_or(RouteConfig::DEFAULT_MAX_UPSTREAM_CONNECTIONS);
        if !(1..=65_536).contains(&max_upstream_connections) {
            self.err(
                format!("{key}.max_upstream_connections"),
                "must be between 1 and 65536; e.g. 256",
            );
        }
        let http2 = match r.http2.as_deref().map(|t| (t, Http2Mode::parse(t))) {
            None => Http2Mode::Auto,
            Some((_, Some(mode))) => mode,
            Some((text, None)) => {
                self.err(
                    format!("{key}.http2"),
                    format!(
                        "`{}` is not one of \"auto\" (HTTP/2 when an https upstream offers it), \"always\" (also h2c to an http upstream), \"never\"",
                        crate::text::sanitize(text, 40)
                    ),
                );
                Http2Mode::Auto
            }
        };
        let allow =
            r.allow.as_deref().and_then(|entries| {
                match crate::config::policy::Policy::parse(entries) {
                    Ok(policy) => Some(policy),
                    Err((_, problem)) if entries.is_empty() => {
                        self.err(format!("{key}.allow"), problem);
                        None
                    }
                    Err((i, problem)) => {
                        self.err(format!("{key}.allow[{i}]"), problem);
                        None
                    }
                }
            });
        let client_identity = self.client_identity(key, r.client_cert, r.client_key);
        Some(RouteConfig {
            prefix: prefix?,
            upstream: upstream?,
            provider: r.provider,
            strip_prefix: r.strip_prefix.unwrap_or(true),
            ca_file,
            allow_browsers: r.allow_browsers.unwrap_or(false),
            max_upstream_connections: max_upstream_connections.clamp(1, 65_536),
            http2,
            allow,
            client_identity,
            host,
        })
    }

    /// `routes[].host`: `name` or `name:port` (443 when not given).
    fn route_host(&mut self, key: &str, text: &str, forward_proxy: bool) -> Option<Authority> {
        if !forward_proxy {
            self.err(
                format!("{key}.host"),
                "host routes serve forward-proxy requests (CONNECT, absolute-form); set [forward_proxy] enabled = true, or use a prefix route",
            );
        }
        match Authority::parse_with_default(text, 443) {
            Ok(a) => Some(a),
            Err(problem) => {
                self.err(
                    format!("{key}.host"),
                    format!("`{text}` {problem}; write the API's host name as clients use it, e.g. host = \"api.vendor.example\" (or \"api.vendor.example:8443\")"),
                );
                None
            }
        }
    }
}
