//! The checked configuration: what the rest of the proxy reads. Built only
//! by [`super::Config::load`] / [`super::Config::parse`], so every value here
//! has passed its checks.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::HeaderName;
use url::Url;

pub use super::client_tls::{ClientIdentity, ClientTls};
pub use super::egress::{EgressConfig, NoProxy, ProxyEndpoint};
pub use super::forward::{ForwardProxyConfig, TunnelPattern};
pub use crate::http::authority::{Authority, Host};
pub use crate::oauth::{BodyEncoding, ClientAuth, GrantAssertion, Signer};
use crate::secret::{Secret, SecretKey};

/// A checked configuration. Built only by [`Config::load`] / [`Config::parse`].
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file this came from (empty for in-memory configs).
    pub file: PathBuf,
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub providers: BTreeMap<String, ProviderConfig>,
    pub routes: Vec<RouteConfig>,
    pub forward_proxy: ForwardProxyConfig,
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
    /// Longest pause inside a client's request body before it is cut (408).
    pub body_read_timeout: Duration,
    /// Longest silence (both directions) of a blind `CONNECT` tunnel or an
    /// upgraded connection before both sides are closed.
    pub tunnel_idle_timeout: Duration,
    /// Most client connections at once (`None`: the default, 4096); never
    /// more than the file-descriptor limit allows (see `app::limits`).
    pub max_connections: Option<usize>,
    /// All replay buffers together hold at most this many bytes.
    pub max_buffered_bytes: u64,
    /// Reload when the config file or a `${file:}` it reads changes.
    pub watch_config: bool,
    /// `egress_proxy` and `no_proxy`: which proxy outbound connections use.
    pub egress: EgressConfig,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StoreConfig {
    File {
        path: PathBuf,
        /// Seals every record (`store.encryption_key`).
        encryption_key: Option<SecretKey>,
    },
    Memory,
    Redis {
        /// Where the primary is: one URL, or asked of Redis Sentinel.
        target: RedisTarget,
        key_prefix: String,
        encryption_key: Option<SecretKey>,
        /// Replication acknowledgement and lease timings.
        timings: RedisTimings,
    },
}

/// Where the Redis store finds its primary.
#[derive(Debug, Clone, PartialEq)]
pub enum RedisTarget {
    /// `store.url`: one endpoint (a single node, or a managed Redis whose
    /// primary fails over behind one name).
    Url(Secret),
    /// `store.sentinels` + `store.master_name`: the sentinels are asked for
    /// the primary at start and again after every failed command.
    Sentinel(SentinelConfig),
}

#[derive(Debug, Clone, PartialEq)]
pub struct SentinelConfig {
    /// `host:port` of each sentinel, as written.
    pub sentinels: Vec<(String, u16)>,
    pub master_name: String,
    pub db: i64,
    /// ACL user and password of the data nodes (`store.username`, `store.password`).
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// `store.sentinel_password`: the sentinels' own `requirepass`.
    pub sentinel_password: Option<Secret>,
    /// `store.tls`: TLS to the sentinels and the data nodes.
    pub tls: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RedisTimings {
    /// `store.min_replicas`; `None`: 1 when the primary reports replicas
    /// (always behind Sentinel), else 0.
    pub min_replicas: Option<u32>,
    pub replica_timeout: Duration,
    pub lease_ttl: Duration,
    pub lease_wait: Duration,
}

impl Default for RedisTimings {
    fn default() -> Self {
        RedisTimings {
            min_replicas: None,
            replica_timeout: Duration::from_secs(2),
            lease_ttl: Duration::from_secs(10),
            lease_wait: Duration::from_secs(30),
        }
    }
}

impl StoreConfig {
    /// `file`, `memory` or `redis`, as written in `store.kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreConfig::File { .. } => "file",
            StoreConfig::Memory => "memory",
            StoreConfig::Redis { .. } => "redis",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ProviderConfig {
    pub name: String,
    pub kind: ProviderKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ProviderKind {
    Static(StaticConfig),
    Basic(BasicConfig),
    Query(QueryConfig),
    AwsSigV4(AwsSigV4Config),
    OAuth2(Box<OAuth2Config>),
}

impl ProviderKind {
    /// The credential kind as shown by `check` and `status`.
    pub fn label(&self) -> String {
        match self {
            ProviderKind::Static(_) => "static".into(),
            ProviderKind::Basic(_) => "basic".into(),
            ProviderKind::Query(_) => "query".into(),
            ProviderKind::AwsSigV4(a) => format!("aws_sigv4/{}", a.service),
            ProviderKind::OAuth2(o) => format!("oauth2/{}", o.grant.as_str()),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct StaticConfig {
    /// Header name and the full value to inject (a secret).
    pub headers: Vec<(HeaderName, Secret)>,
}

/// `type = "basic"`: HTTP Basic (RFC 7617). Checked: the username has no
/// `:`, neither has control characters.
#[derive(Debug, Clone, PartialEq)]
pub struct BasicConfig {
    pub username: Secret,
    pub password: Secret,
}

/// `type = "query"`: query parameters added to every upstream request.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryConfig {
    /// Name (as written, not encoded) and value (a secret), in name order.
    pub params: Vec<(String, Secret)>,
}

/// `type = "aws_sigv4"`: AWS Signature Version 4 on every request.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsSigV4Config {
    pub access_key_id: Secret,
    pub secret_access_key: Secret,
    /// Temporary credentials (STS): sent as `X-Amz-Security-Token`.
    pub session_token: Option<Secret>,
    pub region: String,
    pub service: String,
    /// Bodies larger than `max_replay_body` go out as `UNSIGNED-PAYLOAD`
    /// (S3 accepts that); without it they are refused with 413.
    pub unsigned_payload: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    Password,
    ClientCredentials,
    RefreshToken,
    Implicit,
    /// RFC 7523 §2.1: a signed assertion is the grant.
    JwtBearer,
    /// RFC 6749 §4.1 with PKCE (RFC 7636): a browser login, then the
    /// refresh token.
    AuthorizationCode,
    /// RFC 8628: the user approves on another device, the proxy polls.
    DeviceCode,
}

impl Grant {
    pub fn as_str(self) -> &'static str {
        match self {
            Grant::Password => "password",
            Grant::ClientCredentials => "client_credentials",
            Grant::RefreshToken => "refresh_token",
            Grant::Implicit => "implicit",
            Grant::JwtBearer => "jwt_bearer",
            Grant::AuthorizationCode => "authorization_code",
            Grant::DeviceCode => "device_code",
        }
    }

    /// Whether this grant can obtain a token without any stored state
    /// (the "primary grant" of the spec).
    pub fn has_primary(self) -> bool {
        matches!(
            self,
            Grant::Password | Grant::ClientCredentials | Grant::JwtBearer
        )
    }

    /// A person logs in to obtain the first token (and again when the
    /// refresh token is refused): implicit, authorization code, device code.
    pub fn needs_login(self) -> bool {
        matches!(
            self,
            Grant::Implicit | Grant::AuthorizationCode | Grant::DeviceCode
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct OAuth2Config {
    pub grant: Grant,
    pub token_url: Option<Url>,
    pub authorize_url: Option<Url>,
    /// `grant = "device_code"`: where a device flow starts (RFC 8628 §3.1).
    pub device_authorization_url: Option<Url>,
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
    /// `rotation_grace`: how long the provider still takes a spent refresh
    /// token once more (its reuse interval / grace period); zero: never.
    /// Within it, a rotation interrupted by a crash is retried at start.
    pub rotation_grace: Duration,
    /// `issuer`, as written: the endpoints not given are taken from its
    /// metadata (discovery).
    pub issuer: Option<String>,
    /// Plain http to a host that is not loopback is allowed (configured
    /// and discovered endpoints alike).
    pub allow_http: bool,
    /// Signs client assertions: HS256 with the client secret
    /// (`client_secret_jwt`) or the private key (`private_key_jwt`).
    pub client_assertion: Option<Signer>,
    /// The assertions' `aud`, when not the token endpoint URL.
    pub assertion_audience: Option<String>,
    /// `grant = "jwt_bearer"`: what its assertion is made of.
    pub jwt_bearer: Option<GrantAssertion>,
    /// TLS to the token and discovery endpoints: `ca_file`, `client_cert`.
    pub tls: ClientTls,
    /// `dpop`: sender-constrained tokens (RFC 9449).
    pub dpop: bool,
}

/// `routes[].http2`: the protocol of upstream connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Http2Mode {
    /// HTTP/2 when an https upstream offers it in ALPN; HTTP/1.1 to http
    /// upstreams.
    #[default]
    Auto,
    /// HTTP/2 only: ALPN `h2` on https, h2c prior knowledge on http.
    Always,
    /// HTTP/1.1 only.
    Never,
}

impl Http2Mode {
    pub fn parse(text: &str) -> Option<Http2Mode> {
        match text {
            "auto" => Some(Http2Mode::Auto),
            "always" => Some(Http2Mode::Always),
            "never" => Some(Http2Mode::Never),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteConfig {
    pub prefix: PathPrefix,
    pub upstream: Url,
    pub provider: Option<String>,
    pub strip_prefix: bool,
    pub ca_file: Option<PathBuf>,
    /// Whether browser requests (Fetch Metadata) may use this route's
    /// credential; only routes with a provider have the key.
    pub allow_browsers: bool,
    /// Connections to the upstream (idle and busy) this route keeps at most.
    pub max_upstream_connections: usize,
    /// `http2`: whether upstream connections speak HTTP/2.
    pub http2: Http2Mode,
    /// `allow`: the request policy, compiled; `None` lets everything through.
    pub allow: Option<super::policy::Policy>,
    /// `client_cert` + `client_key`: presented to the upstream (mTLS).
    pub client_identity: Option<ClientIdentity>,
    /// A host route (forward-proxy mode): matched on the `CONNECT` or
    /// absolute-form target `host:port` (port 443 unless written), then
    /// on `prefix`.
    pub host: Option<Authority>,
}

impl RouteConfig {
    /// Connections per route to one upstream when the config does not say.
    pub const DEFAULT_MAX_UPSTREAM_CONNECTIONS: usize = 256;

    /// A pass-through route with every optional key at its default, as the
    /// checker builds it when the table names only `prefix` and
    /// `upstream` (tests and fuzz targets start from it).
    pub fn pass_through(prefix: PathPrefix, upstream: Url) -> RouteConfig {
        RouteConfig {
            prefix,
            upstream,
            provider: None,
            strip_prefix: true,
            ca_file: None,
            allow_browsers: false,
            max_upstream_connections: Self::DEFAULT_MAX_UPSTREAM_CONNECTIONS,
            http2: Http2Mode::Auto,
            client_identity: None,
            allow: None,
            host: None,
        }
    }
}

/// A checked route prefix. `/api/` and `/api` are the same prefix; it matches
/// `/api`, `/api/` and `/api/…`, never `/apix`.
#[derive(Clone)]
pub struct PathPrefix {
    /// Without trailing slash, except the root prefix `/`.
    normalized: String,
    written: String,
}

impl PathPrefix {
    pub fn parse(text: &str) -> Result<PathPrefix, String> {
        if !text.starts_with('/') {
            return Err("must start with `/`, e.g. \"/api/\"".into());
        }
        if text.contains(['?', '#']) {
            return Err("must be a path only (no `?` or `#`)".into());
        }
        if text.chars().any(|c| c.is_control() || c == ' ') {
            return Err("must not contain spaces or control characters".into());
        }
        if crate::http::path::has_dot_segment(text) {
            return Err("must not contain `.` or `..` segments".into());
        }
        if text.starts_with("/_authproxy") && PathPrefix::segment_match("/_authproxy", text) {
            return Err("is reserved for authproxy's own endpoints; choose another prefix".into());
        }
        let trimmed = text.trim_end_matches('/');
        let normalized = if trimmed.is_empty() {
            "/".to_string()
        } else {
            trimmed.to_string()
        };
        Ok(PathPrefix {
            normalized,
            written: text.to_string(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.written
    }

    fn segment_match(prefix: &str, path: &str) -> bool {
        path.starts_with(prefix)
            && (path.len() == prefix.len() || path.as_bytes()[prefix.len()] == b'/')
    }

    /// The rest of `path` after this prefix (`""` or starting with `/`), if
    /// the prefix matches on whole segments.
    pub fn strip<'a>(&self, path: &'a str) -> Option<&'a str> {
        if self.normalized == "/" {
            return Some(path);
        }
        if Self::segment_match(&self.normalized, path) {
            Some(&path[self.normalized.len()..])
        } else {
            None
        }
    }

    /// The prefix without its trailing `/` (`"/"` for the root): the
    /// part of a path it matches, up to a segment boundary.
    pub fn normalized(&self) -> &str {
        &self.normalized
    }

    /// How specific the prefix is: the longer, the more.
    pub fn depth(&self) -> usize {
        self.normalized.len()
    }
}

// Equal when they match the same paths: `/api` == `/api/`.
impl PartialEq for PathPrefix {
    fn eq(&self, other: &Self) -> bool {
        self.normalized == other.normalized
    }
}

impl Eq for PathPrefix {}

impl fmt::Display for PathPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.written)
    }
}

impl fmt::Debug for PathPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PathPrefix({:?})", self.written)
    }
}

/// Loopback hosts may use plain http: traffic never leaves the machine.
pub use crate::http::host::is_loopback_host;
