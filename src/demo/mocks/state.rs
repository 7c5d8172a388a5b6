//! A mock provider's state: the tokens it issued and what became of them,
//! the record of every request, the knobs tests and benchmarks turn, the
//! counters they read; and the types they are made of.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{implicit, onecloud, rips, standard};
use crate::clock::unix_now;

/// The provider styles of the spec's table that have a token endpoint or
/// an authorize endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// JSON-only token endpoint (password and refresh grants), JWT access
    /// tokens with `exp`, `expires_in` sometimes there and sometimes not;
    /// the API answers 401 with `X-API-Expired` or `X-API-Revoked`.
    Rips,
    /// JSON-only refresh grant; each refresh token works once and the
    /// answer carries the next; a reused one revokes its whole chain. The
    /// API answers a plain 401.
    OneCloud,
    /// RFC 6749: form bodies; client_credentials, password and
    /// refresh_token grants; client authentication by HTTP Basic or in the
    /// body; `expires_in` as a string.
    Standard,
    /// ReadyCloud's implicit grant: the authorize endpoint sends the
    /// browser back with the token in the URL fragment.
    Implicit,
}

impl Style {
    /// Path of the token endpoint (`Implicit`: of the authorize endpoint).
    pub fn token_path(self) -> &'static str {
        match self {
            Style::Rips => rips::TOKEN_PATH,
            Style::OneCloud => onecloud::TOKEN_PATH,
            Style::Standard => standard::TOKEN_PATH,
            Style::Implicit => implicit::AUTHORIZE_PATH,
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Style::Rips => "rips",
            Style::OneCloud => "onecloud",
            Style::Standard => "standard",
            Style::Implicit => "readycloud",
        }
    }

    pub(super) fn credential(self) -> &'static str {
        match self {
            Style::Rips => "OAuth2 bearer (password grant) accepted",
            Style::OneCloud => "OAuth2 bearer (rotating refresh token) accepted",
            Style::Standard => "OAuth2 bearer (RFC 6749 token endpoint) accepted",
            Style::Implicit => "OAuth2 bearer (implicit grant) accepted",
        }
    }
}

/// The client a fresh mock knows.
pub const CLIENT_ID: &str = "client-7";
pub const CLIENT_SECRET: &str = "client-secret-SECRET-1";
/// The resource owner a fresh mock knows (password grant).
pub const USERNAME: &str = "user@example.test";
pub const PASSWORD: &str = "pass-SECRET-2";

/// Which client authentications the standard endpoint takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuthRule {
    /// HTTP Basic or `client_id` + `client_secret` in the body (RFC 6749
    /// §2.3.1), one of them per request.
    Either,
    /// HTTP Basic only (`client_secret_basic`).
    Basic,
    /// In the body only (`client_secret_post`).
    Body,
}

/// Whether a RIPS token answer carries `expires_in` (the JWT's `exp` always
/// says when the token ends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiresIn {
    Always,
    Never,
    /// Odd-numbered tokens without, even-numbered ones with.
    Alternate,
}

/// One token (or authorize) request as the endpoint received it.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub content_type: String,
    pub authorization: Option<String>,
    /// The decoded body fields (JSON object or form; the query of an
    /// authorize request).
    pub fields: BTreeMap<String, String>,
    pub status: u16,
}

impl TokenRequest {
    pub fn grant_type(&self) -> &str {
        self.fields
            .get("grant_type")
            .map(String::as_str)
            .unwrap_or("")
    }
}

/// One hit on the mock API.
#[derive(Debug, Clone)]
pub struct ApiHit {
    pub token: Option<String>,
    pub status: u16,
    pub body_sha256: String,
    pub method: String,
}

#[derive(Debug, Clone)]
pub(super) struct Access {
    pub exp: u64,
    pub revoked: bool,
    pub forced_expired: bool,
    /// The refresh-token chain it came from (0: none).
    pub family: u64,
    /// The API took it at least once.
    pub used: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RefreshState {
    Live,
    /// Used once (single-use styles).
    Spent,
    Revoked,
}

#[derive(Debug, Clone)]
pub(super) struct Refresh {
    pub family: u64,
    pub state: RefreshState,
    /// Single-use styles: when it was spent and what its answer carried.
    pub spent: Option<Spent>,
}

/// A spent refresh token's rotation, for the grace window.
#[derive(Debug, Clone)]
pub(super) struct Spent {
    pub at: Instant,
    /// The tokens its answer carried (superseded if the grace is used).
    pub next_refresh: String,
    pub next_access: String,
    /// The grace was used once already.
    pub regraced: bool,
}

/// Counters for benchmarks (also served as JSON at `GET /_mock/stats`).
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// Token answers with `invalid_grant`.
    pub token_refused: u64,
    pub api_ok: u64,
    pub api_401: u64,
    /// Connections accepted (when served by [`MockProvider::start_on`]).
    pub connections: u64,
}

/// When replays reach the API, counted from the newest token.
#[derive(Debug, Default)]
pub(super) struct ReplayClock {
    pub issued_at: Option<Instant>,
    /// API paths that got a 401 (so their next 200 is a replay).
    pub refused_paths: HashSet<String>,
    pub after_token: Vec<Duration>,
}

/// A mock's state and knobs. Tests change knobs with [`MockProvider::set`].
pub struct MockState {
    pub style: Style,
    pub(super) access: HashMap<String, Access>,
    /// Every refresh token ever issued, with what became of it.
    pub(super) refresh: HashMap<String, Refresh>,
    families: u64,
    counter: u64,
    /// A spent single-use refresh token was presented (OneCloud).
    pub reuse_detected: bool,
    /// OneCloud: how long a spent refresh token is taken once more, while
    /// the tokens its answer carried are unused (Auth0's reuse interval,
    /// Okta's grace period, Cognito's `RetryGracePeriodSeconds`); zero:
    /// never (reuse detection at once).
    pub rotation_grace: Duration,
    /// Spent refresh tokens taken again within `rotation_grace`.
    pub grace_reuses: u64,
    /// Every token request (authorize request for `Implicit`) answered.
    pub token_requests: Vec<TokenRequest>,
    /// Token requests that arrived (counted before any injected delay).
    pub token_hits: usize,
    /// Statuses the next token requests fail with, in order.
    pub fail_queue: VecDeque<u16>,
    /// Status every token request fails with (after `fail_queue`).
    pub fail_always: Option<u16>,
    /// Sent as `Retry-After` with injected failures.
    pub retry_after: Option<u64>,
    /// Body to answer 200 with instead of a token (garbage tests).
    pub answer_override: Option<String>,
    pub token_delay: Duration,
    /// Lifetime of new access tokens, seconds.
    pub ttl: u64,
    pub api_hits: Vec<ApiHit>,
    /// The API answers 401 + X-API-Expired whatever the token.
    pub api_always_expired: bool,
    pub client_id: String,
    pub client_secret: String,
    pub username: String,
    pub password: String,
    /// Standard style only.
    pub client_auth: ClientAuthRule,
    /// RIPS style only.
    pub expires_in: ExpiresIn,
    /// Record every API request (hashing its body) and echo it back; off,
    /// the API only counts and answers a few bytes (benchmarks, where the
    /// mock shares the CPU with the proxy).
    pub record_api: bool,
    /// The API's echo includes the request headers (the credential among
    /// them); the demo turns this off.
    pub echo_headers: bool,
    /// `"api"` in the API's answers.
    pub name: String,
    pub counters: Counters,
    pub(super) replays: ReplayClock,
}

impl MockState {
    pub(super) fn new(style: Style) -> MockState {
        MockState {
            style,
            access: HashMap::new(),
            refresh: HashMap::new(),
            families: 0,
            counter: 0,
            reuse_detected: false,
            rotation_grace: Duration::ZERO,
            grace_reuses: 0,
            token_requests: Vec::new(),
            token_hits: 0,
            fail_queue: VecDeque::new(),
            fail_always: None,
            retry_after: None,
            answer_override: None,
            token_delay: Duration::ZERO,
            ttl: 3600,
            api_hits: Vec::new(),
            api_always_expired: false,
            client_id: CLIENT_ID.into(),
            client_secret: CLIENT_SECRET.into(),
            username: USERNAME.into(),
            password: PASSWORD.into(),
            client_auth: ClientAuthRule::Either,
            expires_in: ExpiresIn::Alternate,
            record_api: true,
            echo_headers: true,
            name: style.name().into(),
            counters: Counters::default(),
            replays: ReplayClock::default(),
        }
    }

    /// A number for the next token (1, 2, ...).
    pub(super) fn next(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    /// A new refresh-token chain.
    pub(super) fn new_family(&mut self) -> u64 {
        self.families += 1;
        self.families
    }

    /// When a token issued now expires.
    pub(super) fn expiry(&self) -> u64 {
        unix_now() + self.ttl
    }

    /// Registers a new access token.
    pub(super) fn add_access(&mut self, token: &str, exp: u64, family: u64) {
        self.access.insert(
            token.to_string(),
            Access {
                exp,
                revoked: false,
                forced_expired: false,
                family,
                used: false,
            },
        );
        self.replays.issued_at = Some(Instant::now());
    }

    pub(super) fn add_refresh(&mut self, token: &str, family: u64) {
        self.refresh.insert(
            token.to_string(),
            Refresh {
                family,
                state: RefreshState::Live,
                spent: None,
            },
        );
    }

    /// Revokes every token of a refresh-token chain.
    pub(super) fn revoke_family(&mut self, family: u64) {
        for r in self.refresh.values_mut().filter(|r| r.family == family) {
            if r.state == RefreshState::Live {
                r.state = RefreshState::Revoked;
            }
        }
        for a in self.access.values_mut().filter(|a| a.family == family) {
            a.revoked = true;
        }
    }

    pub(super) fn stats(&self) -> Value {
        let mut replays = self.replays.after_token.clone();
        replays.sort();
        let ms = |d: Option<&Duration>| d.map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0);
        json!({
            "token_requests": self.token_hits,
            "token_refused": self.counters.token_refused,
            "api_ok": self.counters.api_ok,
            "api_401": self.counters.api_401,
            "connections": self.counters.connections,
            "replays": replays.len(),
            "replay_first_ms": ms(replays.first()),
            "replay_p50_ms": ms(replays.get(replays.len() / 2)),
            "replay_last_ms": ms(replays.last()),
        })
    }
}
