//! Configuration: read the TOML, expand `${...}`, deserialize into the raw
//! structs ([`raw`]), then check everything into a [`Config`] of checked
//! types. Every error names the key path and the fix.

pub mod interpolate;
pub mod raw;
pub mod units;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use url::Url;

use crate::routes::PathPrefix;
use crate::secret::Secret;
use interpolate::{Env, ProcessEnv};
use raw::{RawConfig, RawProvider, RawRoute, RawServer, RawStore};

/// The default config path when neither `--config` nor `$AUTHPROXY_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "config/authproxy.toml";

/// A checked configuration. Built only by [`Config::load`] / [`Config::from_str`].
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file this came from (empty for in-memory configs).
    pub file: PathBuf,
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub providers: BTreeMap<String, ProviderConfig>,
    pub routes: Vec<RouteConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub inbound_token: Option<Secret>,
    pub allow_remote_unauthenticated: bool,
    /// Request bodies up to this size are buffered so they can be replayed.
    pub max_replay_body: u64,
    /// Time allowed for the upstream to send its response head.
    pub upstream_timeout: Duration,
    pub connect_timeout: Duration,
    /// How long in-flight requests may take to finish after SIGTERM/SIGINT.
    pub drain_timeout: Duration,
    pub allowed_origins: Vec<String>,
    pub allowed_hosts: Vec<String>,
    /// Largest request head a client may send (431 beyond).
    pub max_header_bytes: usize,
    /// Most header fields in a request head (431 beyond).
    pub max_headers: usize,
    /// Time a client has to send its request head (slow-loris defence).
    pub header_read_timeout: Duration,
    /// Largest request body (413 beyond); `None` = no limit (bodies stream).
    pub max_request_body: Option<u64>,
    /// Longest pause inside an upstream's response body before it is cut.
    pub upstream_idle_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StoreConfig {
    File { path: PathBuf },
    Memory,
    Redis { url: Secret, key_prefix: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: ProviderKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ProviderKind {
    Static(StaticConfig),
    OAuth2(Box<OAuth2Config>),
}

impl ProviderKind {
    /// The credential kind as shown by `check` and `status`.
    pub fn label(&self) -> String {
        match self {
            ProviderKind::Static(_) => "static".into(),
            ProviderKind::OAuth2(o) => format!("oauth2/{}", o.grant.as_str()),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct StaticConfig {
    /// Header name and the full value to inject (a secret).
    pub headers: Vec<(HeaderName, Secret)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    Password,
    ClientCredentials,
    RefreshToken,
    Implicit,
}

impl Grant {
    pub fn as_str(self) -> &'static str {
        match self {
            Grant::Password => "password",
            Grant::ClientCredentials => "client_credentials",
            Grant::RefreshToken => "refresh_token",
            Grant::Implicit => "implicit",
        }
    }

    /// Whether this grant can obtain a token without any stored state
    /// (the "primary grant" of the spec).
    pub fn has_primary(self) -> bool {
        matches!(self, Grant::Password | Grant::ClientCredentials)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEncoding {
    Form,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// `client_id` / `client_secret` in the request body.
    Body,
    /// HTTP Basic with the url-encoded client id and secret (RFC 6749 §2.3.1).
    Basic,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OAuth2Config {
    pub grant: Grant,
    pub token_url: Option<Url>,
    pub authorize_url: Option<Url>,
    pub body: BodyEncoding,
    pub client_id: Option<Secret>,
    pub client_secret: Option<Secret>,
    pub client_auth: ClientAuth,
    pub username: Option<Secret>,
    pub password: Option<Secret>,
    pub scope: Option<String>,
    pub extra: Vec<(String, Secret)>,
    pub refresh_before: Duration,
    pub header: HeaderName,
    /// Prefix of the injected value (`scheme` key); `None` means "from the
    /// token response's `token_type`, `Bearer` by default"; `Some("")` means
    /// the bare token.
    pub scheme: Option<String>,
    pub refresh_on_401: bool,
    pub seed_refresh_token: Option<Secret>,
    pub seed_access_token: Option<Secret>,
    pub redirect_uri: Option<Url>,
    pub token_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    pub prefix: PathPrefix,
    pub upstream: Url,
    pub provider: Option<String>,
    pub strip_prefix: bool,
    pub ca_file: Option<PathBuf>,
}

/// One problem with the config, tied to the key it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    /// Dotted key path, e.g. `providers.rips.token_url` or `routes[2].prefix`.
    pub key: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// Why a config could not be loaded. Messages never contain secret values:
/// everything substituted from `${...}` is scrubbed from them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    Read {
        file: PathBuf,
        reason: String,
    },
    Syntax {
        file: PathBuf,
        message: String,
    },
    Keys {
        file: PathBuf,
        errors: Vec<KeyError>,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { file, reason } => write!(
                f,
                "cannot read config file {}: {reason} (pass --config PATH or set AUTHPROXY_CONFIG)",
                file.display()
            ),
            ConfigError::Syntax { file, message } => {
                write!(
                    f,
                    "config file {} is not valid TOML: {message}",
                    file.display()
                )
            }
            ConfigError::Keys { file, errors } => {
                write!(
                    f,
                    "config file {} has {} error(s):",
                    file.display(),
                    errors.len()
                )?;
                for e in errors {
                    write!(f, "\n  {}: {}", e.key, e.message)?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Reads and checks the config file at `path`, resolving `${NAME}` from
    /// the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            file: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Self::parse(&text, path, &ProcessEnv)
    }

    /// Checks config text as if it were read from `path` (relative paths
    /// resolve against `path`'s folder).
    pub fn parse(text: &str, path: &Path, env: &dyn Env) -> Result<Config, ConfigError> {
        let base_dir = path
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                }
            })
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let file = path.to_path_buf();
        let mut table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            file: file.clone(),
            message: e.message().to_string() + &span_hint(text, e.span()),
        })?;

        let mut substituted = Vec::new();
        let mut errors = Vec::new();
        interpolate_table(
            &mut table,
            "",
            env,
            &base_dir,
            &mut substituted,
            &mut errors,
        );
        let scrub = Scrubber::new(substituted);
        if !errors.is_empty() {
            return Err(ConfigError::Keys {
                file,
                errors: scrub.errors(errors),
            });
        }

        let raw: RawConfig =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let key = e.path().to_string();
                // `message()`, not `to_string()`: toml's Display appends
                // "\nin `table`\n", which splits our one-line
                // "key: problem; fix" messages; the key path is ours already.
                let inner = e.into_inner().message().to_string();
                let message = if inner.starts_with("unknown field") {
                    format!("{inner}; remove it or fix its spelling")
                } else {
                    inner
                };
                ConfigError::Keys {
                    file: file.clone(),
                    errors: scrub.errors(vec![KeyError { key, message }]),
                }
            })?;

        let mut checker = Checker {
            base_dir: &base_dir,
            errors: Vec::new(),
        };
        let config = checker.config(raw, file.clone());
        if checker.errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Keys {
                file,
                errors: scrub.errors(checker.errors),
            })
        }
    }

    /// The provider a route uses, if any.
    pub fn provider(&self, name: &str) -> Option<&ProviderConfig> {
        self.providers.get(name)
    }
}

fn span_hint(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!(" (line {line})")
        }
        None => String::new(),
    }
}

/// Replaces values that came from `${...}` in error messages, so a wrong
/// type on a secret key cannot echo the secret.
struct Scrubber(Vec<String>);

impl Scrubber {
    fn new(mut values: Vec<String>) -> Self {
        // Longest first, so a value that contains another is replaced whole.
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.retain(|v| v.len() >= 3);
        Scrubber(values)
    }

    fn text(&self, s: &str) -> String {
        let mut out = s.to_string();
        for v in &self.0 {
            out = out.replace(v.as_str(), "[redacted]");
            // serde quotes a wrongly typed value with escapes (`\"`, `\\`,
            // `\n`): scrub that spelling too (found by fuzzing).
            let escaped = format!("{v:?}");
            let escaped = &escaped[1..escaped.len() - 1];
            if escaped != v {
                out = out.replace(escaped, "[redacted]");
            }
        }
        out
    }

    fn errors(&self, errors: Vec<KeyError>) -> Vec<KeyError> {
        errors
            .into_iter()
            .map(|e| KeyError {
                key: e.key,
                message: self.text(&e.message),
            })
            .collect()
    }
}

fn join_key(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

fn interpolate_table(
    table: &mut toml::Table,
    parent: &str,
    env: &dyn Env,
    base_dir: &Path,
    substituted: &mut Vec<String>,
    errors: &mut Vec<KeyError>,
) {
    for (key, value) in table.iter_mut() {
        let path = join_key(parent, key);
        interpolate_value(value, &path, env, base_dir, substituted, errors);
    }
}

fn interpolate_value(
    value: &mut toml::Value,
    path: &str,
    env: &dyn Env,
    base_dir: &Path,
    substituted: &mut Vec<String>,
    errors: &mut Vec<KeyError>,
) {
    match value {
        toml::Value::String(s) => match interpolate::interpolate(s, env, base_dir, substituted) {
            Ok(expanded) => *s = expanded,
            Err(e) => errors.push(KeyError {
                key: path.to_string(),
                message: e.to_string(),
            }),
        },
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let p = format!("{path}[{i}]");
                interpolate_value(item, &p, env, base_dir, substituted, errors);
            }
        }
        toml::Value::Table(t) => interpolate_table(t, path, env, base_dir, substituted, errors),
        _ => {}
    }
}

/// Turns raw structs into checked ones, collecting every error instead of
/// stopping at the first, so one `check` run shows them all.
struct Checker<'a> {
    base_dir: &'a Path,
    errors: Vec<KeyError>,
}

const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080);

impl Checker<'_> {
    fn err(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(KeyError {
            key: key.into(),
            message: message.into(),
        });
    }

    fn config(&mut self, raw: RawConfig, file: PathBuf) -> Config {
        let server = self.server(raw.server);
        let store = self.store(raw.store);
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
            if let Some(route) = self.route(&key, r, &providers) {
                if let Some(j) = routes.iter().position(|o| o.prefix == route.prefix) {
                    self.err(
                        format!("{key}.prefix"),
                        format!(
                            "duplicate prefix `{}` (also routes[{j}].prefix); each prefix may appear once",
                            route.prefix
                        ),
                    );
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

    fn server(&mut self, raw: RawServer) -> ServerConfig {
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
        let allowed_hosts = raw
            .allowed_hosts
            .unwrap_or_default()
            .into_iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
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
        }
    }

    fn store(&mut self, raw: RawStore) -> StoreConfig {
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

    fn provider(&mut self, key: &str, p: RawProvider) -> Option<ProviderKind> {
        let kind = match p.kind.as_deref() {
            Some(k) => k.to_string(),
            None => {
                self.err(
                    format!("{key}.type"),
                    "is missing; set type = \"static\" or type = \"oauth2\"",
                );
                return None;
            }
        };
        match kind.as_str() {
            "static" => self.static_provider(key, p).map(ProviderKind::Static),
            "oauth2" => self
                .oauth2_provider(key, p)
                .map(|o| ProviderKind::OAuth2(Box::new(o))),
            other => {
                self.err(
                    format!("{key}.type"),
                    format!("unknown provider type `{other}`; use \"static\" or \"oauth2\""),
                );
                None
            }
        }
    }

    fn static_provider(&mut self, key: &str, p: RawProvider) -> Option<StaticConfig> {
        let oauth_keys: [(&str, bool); 20] = [
            ("grant", p.grant.is_some()),
            ("token_url", p.token_url.is_some()),
            ("authorize_url", p.authorize_url.is_some()),
            ("body", p.body.is_some()),
            ("client_id", p.client_id.is_some()),
            ("client_secret", p.client_secret.is_some()),
            ("client_auth", p.client_auth.is_some()),
            ("username", p.username.is_some()),
            ("password", p.password.is_some()),
            ("scope", p.scope.is_some()),
            ("refresh_before", p.refresh_before.is_some()),
            ("header", p.header.is_some()),
            ("scheme", p.scheme.is_some()),
            ("refresh_token", p.refresh_token.is_some()),
            ("access_token", p.access_token.is_some()),
            ("extra", p.extra.is_some()),
            ("refresh_on_401", p.refresh_on_401.is_some()),
            ("allow_http", p.allow_http.is_some()),
            ("redirect_uri", p.redirect_uri.is_some()),
            ("token_timeout", p.token_timeout.is_some()),
        ];
        for (name, present) in oauth_keys {
            if present {
                self.err(
                    format!("{key}.{name}"),
                    "is an oauth2 setting and does nothing with type = \"static\"; remove it or set type = \"oauth2\"",
                );
            }
        }
        let headers = match p.headers {
            Some(h) if !h.is_empty() => h,
            _ => {
                self.err(
                    format!("{key}.headers"),
                    "is required for type = \"static\"; e.g. headers = { Authorization = \"Token ${MY_TOKEN}\" }",
                );
                return None;
            }
        };
        let mut out = Vec::new();
        for (name, value) in headers {
            let hkey = format!("{key}.headers.{name}");
            let Some(header) = self.header_name(&hkey, &name) else {
                continue;
            };
            if self.header_value_ok(&hkey, &value) {
                out.push((header, Secret::new(value)));
            }
        }
        Some(StaticConfig { headers: out })
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

    fn oauth2_provider(&mut self, key: &str, p: RawProvider) -> Option<OAuth2Config> {
        if p.headers.is_some() {
            self.err(
                format!("{key}.headers"),
                "is a static-provider setting; for oauth2 use `header` and `scheme` to say where the token goes",
            );
        }
        let grant = match p.grant.as_deref() {
            Some("password") => Grant::Password,
            Some("client_credentials") => Grant::ClientCredentials,
            Some("refresh_token") => Grant::RefreshToken,
            Some("implicit") => Grant::Implicit,
            Some(other) => {
                self.err(
                    format!("{key}.grant"),
                    format!("unknown grant `{other}`; use \"password\", \"client_credentials\", \"refresh_token\" or \"implicit\""),
                );
                return None;
            }
            None => {
                self.err(
                    format!("{key}.grant"),
                    "is required for type = \"oauth2\"; use \"password\", \"client_credentials\", \"refresh_token\" or \"implicit\"",
                );
                return None;
            }
        };
        let allow_http = p.allow_http.unwrap_or(false);
        let fix_http = format!("allow_http = true on {key} if the network is trusted");
        let g = grant.as_str();

        // Which keys each grant needs and which it cannot use.
        let need = |k: &str| -> bool {
            match (grant, k) {
                (Grant::Implicit, "authorize_url" | "client_id") => true,
                (Grant::Implicit, _) => false,
                (_, "token_url") => true,
                (Grant::Password, "username" | "password") => true,
                (Grant::ClientCredentials, "client_id") => true,
                (Grant::RefreshToken, "refresh_token") => true,
                _ => false,
            }
        };
        let forbidden = |k: &str| -> bool {
            match grant {
                Grant::Implicit => matches!(
                    k,
                    "token_url"
                        | "body"
                        | "client_secret"
                        | "client_auth"
                        | "username"
                        | "password"
                        | "refresh_token"
                        | "extra"
                        | "token_timeout"
                ),
                Grant::ClientCredentials | Grant::RefreshToken => {
                    matches!(
                        k,
                        "username" | "password" | "authorize_url" | "redirect_uri"
                    )
                }
                Grant::Password => matches!(k, "authorize_url" | "redirect_uri"),
            }
        };
        let present: [(&str, bool); 10] = [
            ("token_url", p.token_url.is_some()),
            ("authorize_url", p.authorize_url.is_some()),
            ("client_id", p.client_id.is_some()),
            ("username", p.username.is_some()),
            ("password", p.password.is_some()),
            ("refresh_token", p.refresh_token.is_some()),
            ("body", p.body.is_some()),
            ("client_secret", p.client_secret.is_some()),
            ("client_auth", p.client_auth.is_some()),
            ("redirect_uri", p.redirect_uri.is_some()),
        ];
        let extra_present = [
            ("extra", p.extra.is_some()),
            ("token_timeout", p.token_timeout.is_some()),
        ];
        for (k, is) in present.iter().chain(extra_present.iter()) {
            if *is && forbidden(k) {
                self.err(
                    format!("{key}.{k}"),
                    format!("is not used by grant = \"{g}\"; remove it (or change the grant)"),
                );
            } else if !*is && need(k) {
                self.err(
                    format!("{key}.{k}"),
                    format!("is required for grant = \"{g}\""),
                );
            }
        }

        let token_url = p
            .token_url
            .as_deref()
            .filter(|_| !forbidden("token_url"))
            .and_then(|u| self.url(&format!("{key}.token_url"), u, allow_http, &fix_http));
        let authorize_url = p
            .authorize_url
            .as_deref()
            .filter(|_| !forbidden("authorize_url"))
            .and_then(|u| self.url(&format!("{key}.authorize_url"), u, allow_http, &fix_http));
        let redirect_uri = p.redirect_uri.as_deref().and_then(|u| match Url::parse(u) {
            Ok(url) => Some(url),
            Err(e) => {
                self.err(
                    format!("{key}.redirect_uri"),
                    format!("`{u}` is not a valid URL ({e})"),
                );
                None
            }
        });
        let body = match p.body.as_deref() {
            None | Some("form") => BodyEncoding::Form,
            Some("json") => BodyEncoding::Json,
            Some(other) => {
                self.err(
                    format!("{key}.body"),
                    format!("unknown body encoding `{other}`; use \"form\" (RFC 6749) or \"json\""),
                );
                BodyEncoding::Form
            }
        };
        let client_auth = match p.client_auth.as_deref() {
            None | Some("body") => ClientAuth::Body,
            Some("basic") => ClientAuth::Basic,
            Some(other) => {
                self.err(
                    format!("{key}.client_auth"),
                    format!("unknown client_auth `{other}`; use \"body\" or \"basic\""),
                );
                ClientAuth::Body
            }
        };
        if client_auth == ClientAuth::Basic && p.client_id.is_none() {
            self.err(
                format!("{key}.client_id"),
                "is required with client_auth = \"basic\"",
            );
        }
        let header = match p.header.as_deref() {
            None => http::header::AUTHORIZATION,
            Some(h) => self.header_name(&format!("{key}.header"), h)?,
        };
        let scheme = p.scheme;
        if let Some(s) = scheme.as_deref().filter(|s| !s.is_empty()) {
            self.header_value_ok(&format!("{key}.scheme"), s);
        }
        let refresh_before = self.duration(
            &format!("{key}.refresh_before"),
            p.refresh_before,
            Duration::from_secs(60),
        );
        let token_timeout = self.duration(
            &format!("{key}.token_timeout"),
            p.token_timeout,
            Duration::from_secs(15),
        );
        let mut extra = Vec::new();
        for (k, v) in p.extra.unwrap_or_default() {
            const RESERVED: [&str; 8] = [
                "grant_type",
                "client_id",
                "client_secret",
                "username",
                "password",
                "refresh_token",
                "scope",
                "code",
            ];
            if RESERVED.contains(&k.as_str()) {
                self.err(
                    format!("{key}.extra.{k}"),
                    format!("`{k}` is set by authproxy itself; use the provider's own `{k}` key instead"),
                );
            } else {
                extra.push((k, Secret::new(v)));
            }
        }
        let seed_access_token = p.access_token.map(Secret::new);
        if let Some(t) = &seed_access_token {
            self.header_value_ok(&format!("{key}.access_token"), t.expose());
        }
        let nonempty = |v: Option<String>| v.filter(|s| !s.is_empty()).map(Secret::new);
        Some(OAuth2Config {
            grant,
            token_url,
            authorize_url,
            body,
            client_id: nonempty(p.client_id),
            client_secret: nonempty(p.client_secret),
            client_auth,
            username: nonempty(p.username),
            password: nonempty(p.password),
            scope: p.scope.filter(|s| !s.is_empty()),
            extra,
            refresh_before,
            header,
            scheme,
            refresh_on_401: p.refresh_on_401.unwrap_or(true),
            seed_refresh_token: nonempty(p.refresh_token),
            seed_access_token: seed_access_token.filter(|s| !s.is_empty()),
            redirect_uri,
            token_timeout,
        })
    }

    fn route(
        &mut self,
        key: &str,
        r: RawRoute,
        providers: &BTreeMap<String, ProviderConfig>,
    ) -> Option<RouteConfig> {
        let prefix = match r.prefix.as_deref() {
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
        let upstream = match r.upstream.as_deref() {
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
        let ca_file = r.ca_file.map(|p| self.base_dir.join(p));
        if let Some(path) = &ca_file {
            if !path.is_file() {
                self.err(
                    format!("{key}.ca_file"),
                    format!("file {} does not exist; give a PEM file of CA certificates (relative to the config file)", path.display()),
                );
            }
        }
        Some(RouteConfig {
            prefix: prefix?,
            upstream: upstream?,
            provider: r.provider,
            strip_prefix: r.strip_prefix.unwrap_or(true),
            ca_file,
        })
    }
}

/// Accepts `ip:port`, `[v6]:port` and `localhost:port`.
fn parse_listen(text: &str) -> Option<SocketAddr> {
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

/// Loopback hosts may use plain http: traffic never leaves the machine.
pub fn is_loopback_host(host: url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(d) => {
            let d = d.to_ascii_lowercase();
            d == "localhost" || d.ends_with(".localhost")
        }
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    }
}

#[cfg(test)]
mod tests;
