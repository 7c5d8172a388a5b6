//! The runtime of one OAuth2 provider: the current token (read lock-free on
//! every request), single-flight renewal, re-authentication after a 401,
//! and durable hand-off of every new token to the store.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use http::{HeaderName, HeaderValue};
use serde::Serialize;

use crate::clock::unix_now;
use crate::config::{Grant, OAuth2Config};
use crate::oauth;
use crate::oauth::token::jwt_exp;
use crate::oauth::{TokenClient, TokenError, TokenRequest, TokenSet};
use crate::secret::Secret;
use crate::store::{RenewalLease, StoredToken, TokenStore};
use crate::telemetry::metrics::{Metrics, ReauthLabels, TokenLabels};

/// Why a renewal was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// No token yet, or within `refresh_before` of expiry.
    Stale,
    /// Upstream said `401` + `X-API-Expired`.
    Expired,
    /// Upstream said `401` + `X-API-Revoked`: drop everything, log in again.
    Revoked,
    /// A plain `401` on an oauth2 route (treated like expired).
    Unauthorized,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Stale => "stale",
            Trigger::Expired => "expired",
            Trigger::Revoked => "revoked",
            Trigger::Unauthorized => "unauthorized",
        }
    }
}

/// Why no token can be injected. Cloned to every waiter of a failed renewal.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CredentialError {
    /// The token endpoint is down or answered nonsense (retry later).
    #[error("{0}")]
    TokenEndpoint(TokenError),
    /// The grant was refused or no grant is left to try (log in again).
    #[error("{0}")]
    Reauthentication(String),
    /// Implicit grant without a usable token.
    #[error("no token; log in at {login_url}")]
    LoginRequired { login_url: String },
    /// Waited too long for another request's renewal.
    #[error("timed out after {0:.0}s waiting for the token renewal in progress")]
    WaitTimeout(f64),
    /// A shared store (and its cross-replica lock) is unreachable, and the
    /// renewal is not safe without it.
    #[error("renewal refused: {0}; a single-use refresh token is not spent without the cross-replica lock")]
    StoreUnavailable(String),
}

/// The token in use, swapped whole. `generation` tells a 401 for an old
/// token from one for the current token.
pub struct TokenState {
    pub generation: u64,
    access: Option<(Secret, HeaderValue)>,
    refresh: Option<Secret>,
    pub expires_at: Option<u64>,
    obtained_at: u64,
    token_type: Option<String>,
}

impl TokenState {
    /// The ready-made header value (marked sensitive).
    pub fn header_value(&self) -> Option<&HeaderValue> {
        self.access.as_ref().map(|(_, v)| v)
    }

    pub fn has_refresh(&self) -> bool {
        self.refresh.is_some()
    }

    /// There is an access token and it is not known to be expired.
    pub fn usable(&self, now: u64) -> bool {
        self.access.is_some() && self.expires_at.is_none_or(|e| now < e)
    }

    /// Usable and not within the renewal window before expiry. The window
    /// is at most half the token's lifetime, so a short-lived token with a
    /// long `refresh_before` is not renewed on every request.
    fn fresh(&self, now: u64, refresh_before: Duration) -> bool {
        match (self.access.is_some(), self.expires_at) {
            (false, _) => false,
            (true, None) => true,
            (true, Some(exp)) => {
                let lifetime = exp.saturating_sub(self.obtained_at);
                let window = refresh_before.as_secs().min(lifetime / 2);
                now.saturating_add(window) < exp
            }
        }
    }
}

/// A failed renewal remembered so waiters and the next few requests get the
/// same answer instead of starting a retry storm.
struct Failure {
    error: CredentialError,
    until: Instant,
}

/// What `/_authproxy/status` shows. Never a secret.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RenewalStats {
    pub renewals: u64,
    pub token_requests: u64,
    pub last_renewal_at: Option<u64>,
    pub last_renewal_outcome: Option<&'static str>,
    pub last_renewal_reason: Option<&'static str>,
    pub last_error_code: Option<String>,
    pub last_error_message: Option<String>,
    pub store_error: Option<String>,
}

pub struct OAuthProvider {
    name: String,
    cfg: OAuth2Config,
    fingerprint: String,
    client: TokenClient,
    store: Arc<dyn TokenStore>,
    metrics: Arc<Metrics>,
    login_url: String,
    current: ArcSwapOption<TokenState>,
    renew_lock: tokio::sync::Mutex<()>,
    /// Renewal attempts finished so far; a waiter that sees it move knows a
    /// renewal happened while it waited.
    attempts: AtomicU64,
    next_generation: AtomicU64,
    failure: Mutex<Option<Failure>>,
    stats: Mutex<RenewalStats>,
    token_request_log: Mutex<Vec<(&'static str, String)>>,
}

/// How long after a failed renewal the same error is answered without a new
/// token request.
const TRANSIENT_COOLDOWN: Duration = Duration::from_secs(2);
const REFUSED_COOLDOWN: Duration = Duration::from_secs(30);

impl OAuthProvider {
    /// Builds the runtime, taking tokens from the store unless the config's
    /// seeds (or the identity they belong to) changed since they were stored.
    pub fn new(
        name: &str,
        cfg: OAuth2Config,
        client: TokenClient,
        store: Arc<dyn TokenStore>,
        metrics: Arc<Metrics>,
        login_url: String,
    ) -> OAuthProvider {
        let fingerprint = identity_fingerprint(&cfg);
        let provider = OAuthProvider {
            name: name.to_string(),
            fingerprint,
            client,
            store,
            metrics,
            login_url,
            current: ArcSwapOption::empty(),
            renew_lock: tokio::sync::Mutex::new(()),
            attempts: AtomicU64::new(0),
            next_generation: AtomicU64::new(1),
            failure: Mutex::new(None),
            stats: Mutex::new(RenewalStats::default()),
            token_request_log: Mutex::new(Vec::new()),
            cfg,
        };
        let initial = match provider.store.load(name) {
            Some(stored) if stored.seed_fingerprint == provider.fingerprint => {
                tracing::info!(provider = name, "using tokens from the store");
                Some((
                    stored.access_token,
                    stored.refresh_token,
                    stored.expires_at,
                    stored.obtained_at,
                    stored.token_type,
                ))
            }
            stored => {
                if stored.is_some() {
                    tracing::info!(
                        provider = name,
                        "config seeds changed since the store was written; using the config's"
                    );
                }
                let access = provider.cfg.seed_access_token.clone();
                let refresh = provider.cfg.seed_refresh_token.clone();
                if access.is_some() || refresh.is_some() {
                    let expires_at = access.as_ref().and_then(|a| jwt_exp(a.expose()));
                    Some((access, refresh, expires_at, unix_now(), None))
                } else {
                    None
                }
            }
        };
        if let Some((access, refresh, expires_at, obtained_at, token_type)) = initial {
            let state = provider.make_state(access, refresh, expires_at, obtained_at, token_type);
            provider.current.store(Some(Arc::new(state)));
        }
        provider
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn config(&self) -> &OAuth2Config {
        &self.cfg
    }

    pub fn header_name(&self) -> &HeaderName {
        &self.cfg.header
    }

    pub fn login_url(&self) -> &str {
        &self.login_url
    }

    pub fn current(&self) -> Option<Arc<TokenState>> {
        self.current.load_full()
    }

    fn make_state(
        &self,
        access: Option<Secret>,
        refresh: Option<Secret>,
        expires_at: Option<u64>,
        obtained_at: u64,
        token_type: Option<String>,
    ) -> TokenState {
        let scheme = self
            .cfg
            .scheme
            .clone()
            .or_else(|| token_type.clone())
            .unwrap_or_else(|| "Bearer".into());
        let access = access.and_then(|a| {
            let text = if scheme.is_empty() {
                a.expose().to_string()
            } else {
                format!("{scheme} {}", a.expose())
            };
            match HeaderValue::from_str(&text) {
                Ok(mut v) => {
                    v.set_sensitive(true);
                    Some((a, v))
                }
                Err(_) => {
                    tracing::error!(provider = %self.name, "token is not a valid header value; ignoring it");
                    None
                }
            }
        });
        TokenState {
            generation: self.next_generation.fetch_add(1, Ordering::Relaxed),
            access,
            refresh,
            expires_at,
            obtained_at,
            token_type,
        }
    }

    /// A token fit to inject now, renewing first if needed. The common case
    /// is one atomic load.
    pub async fn token(&self) -> Result<Arc<TokenState>, CredentialError> {
        let now = unix_now();
        if let Some(t) = self.current.load_full() {
            if t.fresh(now, self.cfg.refresh_before) {
                return Ok(t);
            }
            if self.cfg.grant == Grant::Implicit && t.usable(now) {
                return Ok(t);
            }
        }
        if self.cfg.grant == Grant::Implicit {
            return Err(self.login_required());
        }
        self.renew(Trigger::Stale, None).await
    }

    /// Called after the upstream answered 401 to a request that carried the
    /// token of generation `used`. If that token was already replaced, the
    /// current one is returned without a new token request.
    pub async fn renew_after_401(
        &self,
        used: u64,
        trigger: Trigger,
    ) -> Result<Arc<TokenState>, CredentialError> {
        if self.cfg.grant == Grant::Implicit {
            let cur = self.current.load_full();
            if let Some(c) = cur
                .as_ref()
                .filter(|c| c.generation != used && c.usable(unix_now()))
            {
                return Ok(c.clone());
            }
            if cur.as_ref().is_some_and(|c| c.generation == used) {
                tracing::warn!(provider = %self.name, reason = trigger.as_str(), "implicit-grant token refused by the upstream; a new login is needed");
                self.current.store(None);
            }
            return Err(self.login_required());
        }
        // Already replaced (the common case in a storm): replay with the
        // current token without queueing on the renewal lock.
        if let Some(c) = self.current.load_full() {
            if c.generation != used && c.usable(unix_now()) {
                return Ok(c);
            }
        }
        self.renew(trigger, Some(used)).await
    }

    fn login_required(&self) -> CredentialError {
        CredentialError::LoginRequired {
            login_url: self.login_url.clone(),
        }
    }

    fn wait_bound(&self) -> Duration {
        // Two grants (refresh, then primary), each with its retries.
        self.cfg.token_timeout * 8 + Duration::from_secs(20)
    }

    async fn renew(
        &self,
        trigger: Trigger,
        used: Option<u64>,
    ) -> Result<Arc<TokenState>, CredentialError> {
        let seen_attempts = self.attempts.load(Ordering::Acquire);
        let bound = self.wait_bound();
        let _guard = tokio::time::timeout(bound, self.renew_lock.lock())
            .await
            .map_err(|_| CredentialError::WaitTimeout(bound.as_secs_f64()))?;

        // Re-check under the lock: whoever held it may have done our work.
        let now = unix_now();
        let cur = self.current.load_full();
        if let Some(c) = &cur {
            let done = match used {
                None => c.fresh(now, self.cfg.refresh_before),
                Some(g) => c.generation != g && c.usable(now),
            };
            if done {
                return Ok(c.clone());
            }
        }
        let usable_fallback = || {
            cur.as_ref()
                .filter(|c| trigger == Trigger::Stale && c.usable(now))
                .cloned()
        };
        if self.attempts.load(Ordering::Acquire) != seen_attempts {
            // A renewal finished while we waited and gave nothing usable:
            // share its error rather than trying again ourselves.
            if let Some(f) = self.failure.lock().unwrap().as_ref() {
                return usable_fallback().ok_or_else(|| f.error.clone());
            }
        }
        if let Some(f) = self.failure.lock().unwrap().as_ref() {
            if Instant::now() < f.until {
                return usable_fallback().ok_or_else(|| f.error.clone());
            }
        }

        // Shared stores: take the cross-replica lease, then look whether
        // another replica already renewed (its token is then ours too).
        let mut lease = match self.store.lease(&self.name).await {
            Ok(lease) => lease,
            Err(e) if self.cfg.grant == Grant::RefreshToken => {
                // Fail closed: refreshing a single-use token without the
                // lease could spend it twice and lock the account out.
                let error = CredentialError::StoreUnavailable(e.to_string());
                // Redis store: make the refusal visible in the metrics too.
                // Counted as a token request that was not sent, with its
                // reason as the outcome (there is no separate metric).
                self.metrics
                    .token_requests
                    .get_or_create(&TokenLabels {
                        provider: self.name.clone(),
                        grant: "refresh_token".to_string(),
                        outcome: "refused_store_unavailable".to_string(),
                    })
                    .inc();
                self.record_failure(trigger, &error, TRANSIENT_COOLDOWN);
                return usable_fallback().ok_or(error);
            }
            Err(e) => {
                tracing::warn!(provider = %self.name, error = %e, "renewing without the cross-replica lease (a second login is harmless for this grant)");
                None
            }
        };
        let mut renew_from = cur.clone();
        if lease.is_some() {
            if let Some(adopted) = self.adopt_from_store().await {
                let done = match used {
                    None => adopted.fresh(now, self.cfg.refresh_before),
                    Some(_) => adopted.usable(now),
                };
                if done {
                    if let Some(l) = lease.take() {
                        l.release().await;
                    }
                    return Ok(adopted);
                }
                renew_from = Some(adopted);
            }
        }

        if trigger != Trigger::Stale {
            self.metrics
                .reauthentications
                .get_or_create(&ReauthLabels {
                    provider: self.name.clone(),
                    reason: trigger.as_str().to_string(),
                })
                .inc();
        }
        let result = self
            .run_grants(trigger, renew_from.as_deref(), &mut lease)
            .await;
        if let Some(l) = lease.take() {
            l.release().await;
        }
        self.attempts.fetch_add(1, Ordering::Release);
        let mut stats = self.stats.lock().unwrap();
        stats.last_renewal_at = Some(unix_now());
        stats.last_renewal_reason = Some(trigger.as_str());
        match result {
            Ok(state) => {
                *self.failure.lock().unwrap() = None;
                stats.renewals += 1;
                stats.last_renewal_outcome = Some("ok");
                drop(stats);
                tracing::info!(provider = %self.name, reason = trigger.as_str(), generation = state.generation, expires_at = ?state.expires_at, "token renewed");
                Ok(state)
            }
            Err(error) => {
                drop(stats);
                let refused = matches!(error, CredentialError::Reauthentication(_));
                let cooldown = if refused {
                    REFUSED_COOLDOWN
                } else {
                    TRANSIENT_COOLDOWN
                };
                self.record_failure(trigger, &error, cooldown);
                usable_fallback().ok_or(error)
            }
        }
    }

    /// Refresh grant if there is a refresh token (and the trigger allows
    /// it), else or on failure the primary grant where there is one.
    async fn run_grants(
        &self,
        trigger: Trigger,
        cur: Option<&TokenState>,
        lease: &mut Option<Box<dyn RenewalLease>>,
    ) -> Result<Arc<TokenState>, CredentialError> {
        let mut refresh = cur.and_then(|c| c.refresh.clone());
        if trigger == Trigger::Revoked {
            tracing::warn!(provider = %self.name, "upstream says the token is revoked; discarding access and refresh tokens");
            self.current.store(None);
            refresh = None;
        }
        let mut refresh_error = None;
        if let Some(rt) = refresh {
            match self.grant(Some(&rt)).await {
                Ok(set) => return Ok(self.accept(set, lease.as_mut()).await),
                Err(e) => {
                    if e.is_grant_refused() {
                        // A refused refresh token is dead; never send it again.
                        self.drop_refresh_token();
                    }
                    tracing::warn!(provider = %self.name, error = %e, "refresh grant failed");
                    refresh_error = Some(e);
                }
            }
        }
        if !self.cfg.grant.has_primary() {
            return Err(match refresh_error {
                Some(e) if !e.is_grant_refused() => CredentialError::TokenEndpoint(e),
                Some(e) => CredentialError::Reauthentication(format!(
                    "refresh token refused ({e}); set a new refresh_token seed in the config and reload"
                )),
                None => CredentialError::Reauthentication(
                    "no refresh token left; set a new refresh_token seed in the config and reload".into(),
                ),
            });
        }
        if refresh_error.is_some() {
            tracing::info!(provider = %self.name, grant = self.cfg.grant.as_str(), "falling back to the primary grant");
        }
        match self.grant(None).await {
            Ok(set) => Ok(self.accept(set, lease.as_mut()).await),
            Err(e) if e.is_grant_refused() => Err(CredentialError::Reauthentication(format!(
                "{} grant refused: {e}",
                self.cfg.grant.as_str()
            ))),
            Err(e) => Err(CredentialError::TokenEndpoint(e)),
        }
    }

    /// One grant, with its retries: the refresh grant with `refresh`, else
    /// the primary grant. Every try is counted in the metrics.
    async fn grant(&self, refresh: Option<&Secret>) -> Result<TokenSet, TokenError> {
        let kind = match refresh {
            None => self.cfg.grant.as_str(),
            Some(_) => "refresh_token",
        };
        let observe = |r: &Result<TokenSet, TokenError>| {
            self.stats.lock().unwrap().token_requests += 1;
            let outcome = match r {
                Ok(_) => "ok".to_string(),
                Err(e) => e.code(),
            };
            self.metrics
                .token_requests
                .get_or_create(&TokenLabels {
                    provider: self.name.clone(),
                    grant: kind.to_string(),
                    outcome: outcome.clone(),
                })
                .inc();
            self.token_request_log.lock().unwrap().push((kind, outcome));
        };
        match token_request(&self.cfg, refresh) {
            Ok(request) => self.client.request(&request, &observe).await,
            Err(e) => {
                let failed = Err(e);
                observe(&failed);
                failed
            }
        }
    }

    fn drop_refresh_token(&self) {
        if let Some(c) = self.current.load_full() {
            let state = self.make_state(
                c.access.as_ref().map(|(s, _)| s.clone()),
                None,
                c.expires_at,
                c.obtained_at,
                c.token_type.clone(),
            );
            self.current.store(Some(Arc::new(state)));
        }
    }

    /// Makes a new token durable, then current. A store failure is logged
    /// and reported, but the token is still used: the provider already
    /// considers it issued, and the store retries the write later.
    async fn accept(
        &self,
        set: TokenSet,
        lease: Option<&mut Box<dyn RenewalLease>>,
    ) -> Arc<TokenState> {
        let record = StoredToken::new(&set, &self.fingerprint);
        let saved = match lease {
            Some(lease) => lease.save(record).await,
            None => self.store.save(&self.name, record).await,
        };
        match saved {
            Ok(()) => self.stats.lock().unwrap().store_error = None,
            Err(e) => {
                self.metrics.store_write_failures.inc();
                tracing::error!(provider = %self.name, error = %e, "TOKEN STORE WRITE FAILED: the new token is only in memory; a restart now would lose it. Retrying in the background");
                self.stats.lock().unwrap().store_error = Some(e.to_string());
            }
        }
        let state = Arc::new(self.make_state(
            Some(set.access_token),
            set.refresh_token,
            set.expires_at,
            set.obtained_at,
            set.token_type,
        ));
        self.current.store(Some(state.clone()));
        state
    }

    /// Takes the store's record as the current token if it differs from
    /// ours (another replica renewed). Returns the adopted state.
    async fn adopt_from_store(&self) -> Option<Arc<TokenState>> {
        let record = match self.store.reread(&self.name).await {
            Ok(Some(r)) => r,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(provider = %self.name, error = %e, "cannot re-read the shared store");
                return None;
            }
        };
        if record.seed_fingerprint != self.fingerprint {
            return None;
        }
        let cur = self.current.load_full();
        let same = cur.as_ref().is_some_and(|c| {
            c.access.as_ref().map(|(a, _)| a) == record.access_token.as_ref()
                && c.refresh == record.refresh_token
        });
        if same {
            return None;
        }
        let state = Arc::new(self.make_state(
            record.access_token,
            record.refresh_token,
            record.expires_at,
            record.obtained_at,
            record.token_type,
        ));
        tracing::info!(provider = %self.name, generation = state.generation, "using a token another replica obtained");
        self.current.store(Some(state.clone()));
        Some(state)
    }

    /// Called when a shared store says another replica wrote this
    /// provider's token: take it without a token request.
    pub async fn sync_from_store(&self) {
        let _guard = self.renew_lock.lock().await;
        if self.adopt_from_store().await.is_some() {
            *self.failure.lock().unwrap() = None;
        }
    }

    fn record_failure(&self, trigger: Trigger, error: &CredentialError, cooldown: Duration) {
        let mut stats = self.stats.lock().unwrap();
        stats.last_renewal_at = Some(unix_now());
        stats.last_renewal_reason = Some(trigger.as_str());
        stats.last_renewal_outcome = Some("error");
        stats.last_error_code = Some(error_code(error));
        stats.last_error_message = Some(error.to_string());
        *self.failure.lock().unwrap() = Some(Failure {
            error: error.clone(),
            until: Instant::now() + cooldown,
        });
        tracing::error!(provider = %self.name, reason = trigger.as_str(), error = %error, "token renewal failed");
    }

    /// Stores a token obtained outside the token endpoint (implicit-grant
    /// login, or pasted by hand).
    pub async fn set_token(
        &self,
        access: Secret,
        expires_in: Option<u64>,
        refresh: Option<Secret>,
    ) -> Result<(), TokenError> {
        crate::oauth::token::check_header_safe(access.expose(), "access_token")?;
        if let Some(r) = &refresh {
            crate::oauth::token::check_header_safe(r.expose(), "refresh_token")?;
        }
        let now = unix_now();
        let expires_at = expires_in
            .map(|s| now.saturating_add(s))
            .or_else(|| jwt_exp(access.expose()));
        let refresh = refresh.or_else(|| self.current.load_full().and_then(|c| c.refresh.clone()));
        let set = TokenSet {
            access_token: access,
            refresh_token: refresh,
            expires_at,
            token_type: None,
            obtained_at: now,
        };
        let _guard = self.renew_lock.lock().await;
        *self.failure.lock().unwrap() = None;
        self.accept(set, None).await;
        let mut stats = self.stats.lock().unwrap();
        stats.renewals += 1;
        stats.last_renewal_at = Some(now);
        stats.last_renewal_outcome = Some("ok");
        stats.last_renewal_reason = Some("login");
        Ok(())
    }

    /// Runs the primary grant once without storing or using the token
    /// (`authproxy check --probe`).
    pub async fn probe(cfg: &OAuth2Config, client: &TokenClient) -> Result<TokenSet, TokenError> {
        client.request(&token_request(cfg, None)?, &|_| {}).await
    }

    pub fn stats(&self) -> RenewalStats {
        let mut s = self.stats.lock().unwrap().clone();
        if s.store_error.is_none() {
            s.store_error = self.store.pending_error();
        }
        s
    }

    /// Token requests made so far, as (grant, outcome) pairs: for metrics.
    pub fn token_requests(&self) -> Vec<(&'static str, String)> {
        self.token_request_log.lock().unwrap().clone()
    }

    /// `ok`, `expiring`, `login_required` or `error`.
    pub fn state(&self) -> &'static str {
        let now = unix_now();
        let cur = self.current.load_full();
        let failed = self.failure.lock().unwrap().is_some();
        match cur {
            Some(c) if c.fresh(now, self.cfg.refresh_before) && !failed => "ok",
            Some(c) if c.usable(now) => "expiring",
            _ if self.cfg.grant == Grant::Implicit => "login_required",
            _ if failed => "error",
            // Nothing obtained yet, nothing failed: the first request will
            // run the grant.
            _ => "ok",
        }
    }
}

/// The token request for the refresh grant with `refresh`, else for the
/// provider's primary grant.
fn token_request<'a>(
    cfg: &'a OAuth2Config,
    refresh: Option<&'a Secret>,
) -> Result<TokenRequest<'a>, TokenError> {
    let token_url = cfg
        .token_url
        .as_ref()
        .ok_or(TokenError::NotConfigured("provider has no token_url"))?;
    let grant = match (refresh, cfg.grant) {
        (Some(token), _) => oauth::Grant::Refresh(token),
        (None, Grant::Password) => oauth::Grant::Password {
            username: cfg
                .username
                .as_ref()
                .ok_or(TokenError::NotConfigured("password grant without username"))?,
            password: cfg
                .password
                .as_ref()
                .ok_or(TokenError::NotConfigured("password grant without password"))?,
        },
        (None, Grant::ClientCredentials) => oauth::Grant::ClientCredentials,
        (None, Grant::RefreshToken) => {
            return Err(TokenError::NotConfigured(
                "grant = \"refresh_token\" has no primary grant; it needs a refresh token",
            ))
        }
        (None, Grant::Implicit) => {
            return Err(TokenError::NotConfigured(
                "implicit grant tokens come from a browser login, not the token endpoint",
            ))
        }
    };
    Ok(TokenRequest {
        token_url,
        grant,
        client_id: cfg.client_id.as_ref(),
        client_secret: cfg.client_secret.as_ref(),
        client_auth: cfg.client_auth,
        body: cfg.body,
        scope: cfg.scope.as_deref(),
        extra: &cfg.extra,
        timeout: cfg.token_timeout,
    })
}

fn error_code(e: &CredentialError) -> String {
    match e {
        CredentialError::TokenEndpoint(t) => t.code(),
        CredentialError::Reauthentication(_) => "reauthentication_failed".into(),
        CredentialError::LoginRequired { .. } => "login_required".into(),
        CredentialError::WaitTimeout(_) => "wait_timeout".into(),
        CredentialError::StoreUnavailable(_) => "store_unavailable".into(),
    }
}

/// Covers everything that decides whose tokens these are: if any of it
/// changes in the config, stored tokens are not used.
fn identity_fingerprint(cfg: &OAuth2Config) -> String {
    let opt = |s: &Option<Secret>| s.as_ref().map(Secret::expose).unwrap_or("").to_string();
    let joined = [
        cfg.grant.as_str().to_string(),
        cfg.token_url
            .as_ref()
            .map(|u| u.to_string())
            .unwrap_or_default(),
        opt(&cfg.client_id),
        opt(&cfg.username),
        opt(&cfg.password),
        cfg.scope.clone().unwrap_or_default(),
        opt(&cfg.seed_refresh_token),
        opt(&cfg.seed_access_token),
    ]
    .join("\u{1f}");
    Secret::new(joined).fingerprint()
}
