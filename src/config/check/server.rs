//! `[server]`.

use std::time::Duration;

use url::Url;

use super::{parse_listen, Checker, DEFAULT_LISTEN};
use crate::config::raw::RawServer;
use crate::config::types::ServerConfig;
use crate::config::units;
use crate::secret::Secret;

impl Checker<'_> {
    pub(super) fn server(&mut self, raw: RawServer) -> ServerConfig {
        let listen = match raw.listen {
            None => DEFAULT_LISTEN,
            Some(text) => match parse_listen(&text) {
                Some(addr) => addr,
                None => {
                    self.err(
                        "server.listen",
                        format!("`{text}` is not an address; write it like \"127.0.0.1:8080\" or \"[::1]:8080\""),
                    );
                    DEFAULT_LISTEN
                }
            },
        };
        let inbound_token = raw.inbound_token.map(Secret::new);
        if let Some(t) = &inbound_token {
            if t.expose().len() < 16 {
                self.err(
                    "server.inbound_token",
                    "is shorter than 16 characters; use a long random value (e.g. `openssl rand -hex 32`)",
                );
            }
            if t.expose().chars().any(|c| c.is_control() || c == ' ') {
                self.err(
                    "server.inbound_token",
                    "contains spaces or control characters; use a plain random token",
                );
            }
        }
        let allow_remote_unauthenticated = raw.allow_remote_unauthenticated.unwrap_or(false);
        if !listen.ip().is_loopback() && inbound_token.is_none() && !allow_remote_unauthenticated {
            self.err(
                "server.listen",
                format!(
                    "`{listen}` is not a loopback address and no server.inbound_token is set: anyone who can reach it could use your credentials. Set server.inbound_token, listen on 127.0.0.1, or (only if a network policy protects it) set server.allow_remote_unauthenticated = true"
                ),
            );
        }
        let max_replay_body = match raw.max_replay_body {
            None => 1 << 20,
            Some(v) => match units::parse_size(&v) {
                Ok(n) => n,
                Err(problem) => {
                    self.err(
                        "server.max_replay_body",
                        format!("size `{v}` {problem}; write it like \"1MiB\" or \"512KiB\""),
                    );
                    1 << 20
                }
            },
        };
        let upstream_timeout = self.duration(
            "server.upstream_timeout",
            raw.upstream_timeout,
            Duration::from_secs(30),
        );
        let connect_timeout = self.duration(
            "server.connect_timeout",
            raw.connect_timeout,
            Duration::from_secs(10),
        );
        let drain_timeout = self.duration(
            "server.drain_timeout",
            raw.drain_timeout,
            Duration::from_secs(30),
        );
        if upstream_timeout.is_zero() {
            self.err(
                "server.upstream_timeout",
                "must be more than 0; e.g. \"30s\"",
            );
        }
        let allowed_origins = raw.allowed_origins.unwrap_or_default();
        for (i, o) in allowed_origins.iter().enumerate() {
            if Url::parse(o)
                .map(|u| u.origin().ascii_serialization() != *o)
                .unwrap_or(true)
            {
                self.err(
                    format!("server.allowed_origins[{i}]"),
                    format!("`{o}` is not an origin; write it like \"https://app.example:8443\" (scheme, host, port; no path)"),
                );
            }
        }
        let max_header_bytes = match raw.max_header_bytes {
            None => 64 * 1024,
            Some(v) => match units::parse_size(&v) {
                Ok(n) if (8192..=16 << 20).contains(&n) => n as usize,
                Ok(_) => {
                    self.err(
                        "server.max_header_bytes",
                        format!("`{v}` is out of range; use 8KiB to 16MiB"),
                    );
                    64 * 1024
                }
                Err(problem) => {
                    self.err(
                        "server.max_header_bytes",
                        format!("size `{v}` {problem}; write it like \"64KiB\""),
                    );
                    64 * 1024
                }
            },
        };
        let max_headers = raw.max_headers.unwrap_or(100);
        if !(1..=10_000).contains(&max_headers) {
            self.err(
                "server.max_headers",
                "must be between 1 and 10000; e.g. 100",
            );
        }
        let header_read_timeout = self.duration(
            "server.header_read_timeout",
            raw.header_read_timeout,
            Duration::from_secs(30),
        );
        let max_request_body = raw
            .max_request_body
            .and_then(|v| match units::parse_size(&v) {
                Ok(n) => Some(n),
                Err(problem) => {
                    self.err(
                        "server.max_request_body",
                        format!("size `{v}` {problem}; write it like \"100MiB\""),
                    );
                    None
                }
            });
        let upstream_idle_timeout = self.duration(
            "server.upstream_idle_timeout",
            raw.upstream_idle_timeout,
            Duration::from_secs(60),
        );
        if header_read_timeout.is_zero() || upstream_idle_timeout.is_zero() {
            self.err(
                "server",
                "header_read_timeout and upstream_idle_timeout must be more than 0",
            );
        }
        let body_read_timeout = self.duration(
            "server.body_read_timeout",
            raw.body_read_timeout,
            Duration::from_secs(60),
        );
        if body_read_timeout.is_zero() {
            self.err(
                "server.body_read_timeout",
                "must be more than 0; e.g. \"60s\"",
            );
        }
        let tunnel_idle_timeout = self.duration(
            "server.tunnel_idle_timeout",
            raw.tunnel_idle_timeout,
            Duration::from_secs(3600),
        );
        if tunnel_idle_timeout.is_zero() {
            self.err(
                "server.tunnel_idle_timeout",
                "must be more than 0; e.g. \"1h\"",
            );
        }
        let max_connections = raw.max_connections;
        if max_connections.is_some_and(|n| !(1..=1_000_000).contains(&n)) {
            self.err(
                "server.max_connections",
                "must be between 1 and 1000000; e.g. 4096",
            );
        }
        let max_buffered_bytes = match raw.max_buffered_bytes {
            None => DEFAULT_MAX_BUFFERED_BYTES,
            Some(v) => match units::parse_size(&v) {
                Ok(n) => n,
                Err(problem) => {
                    self.err(
                        "server.max_buffered_bytes",
                        format!("size `{v}` {problem}; write it like \"256MiB\""),
                    );
                    DEFAULT_MAX_BUFFERED_BYTES
                }
            },
        };
        let allowed_hosts = raw
            .allowed_hosts
            .unwrap_or_default()
            .into_iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        let egress = self.egress(raw.egress_proxy, raw.no_proxy);
        ServerConfig {
            listen,
            inbound_token,
            allow_remote_unauthenticated,
            max_replay_body,
            upstream_timeout,
            connect_timeout,
            drain_timeout,
            allowed_origins,
            allowed_hosts,
            max_header_bytes,
            max_headers: max_headers.clamp(1, 10_000),
            header_read_timeout,
            max_request_body,
            upstream_idle_timeout,
            body_read_timeout,
            tunnel_idle_timeout,
            max_connections: max_connections.map(|n| n.clamp(1, 1_000_000)),
            max_buffered_bytes,
            watch_config: raw.watch_config.unwrap_or(true),
            egress,
        }
    }
}

/// `server.max_buffered_bytes` when not set.
const DEFAULT_MAX_BUFFERED_BYTES: u64 = 256 << 20;
