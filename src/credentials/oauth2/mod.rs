//! The runtime of one OAuth2 provider: the current token (read lock-free on
//! every request), single-flight renewal, re-authentication after a 401,
//! and durable hand-off of every new token to the store.
//!
//! Split by concern: the token in use ([`state`]), single-flight renewal
//! ([`renew`]), the hand-off of tokens to and from the store
//! ([`handoff`]), a rotation interrupted by a crash ([`rotation`]), what `/_authproxy/status`
//! shows ([`status`]), stored records in an older form ([`upgrade`]), the
//! DPoP key and proofs ([`dpop`]), the token request a provider makes and
//! whose tokens they are ([`request`]), and
//! the secrets a token endpoint's text is scrubbed of before anyone sees it
//! ([`scrub`]), the endpoints of an `issuer` ([`discover`]), and the logins
//! of a person (authorization code exchange, device flow: [`login`]).

mod discover;
mod dpop;
mod grants;
mod handoff;
mod login;
mod renew;
mod request;
mod rotation;
mod scrub;
mod state;
mod status;
mod upgrade;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use arc_swap::ArcSwapOption;
use http::HeaderName;
use url::Url;

use crate::clock::unix_now;
use crate::config::{Grant, OAuth2Config};
use crate::oauth::token::jwt_exp;
use crate::oauth::{
    DiscoveryError, Dpop, DpopKey, Metadata, TlsSettings, TokenClient, TokenError, TokenSet,
};
use crate::secret::Secret;
use crate::store::{Identity, Owner, OwnerMatch, RenewalLease, StoredToken, TokenStore};
use crate::telemetry::metrics::Metrics;

use grants::{request_for, token_request};
pub use login::{DeviceFlowState, DevicePrompt};
use renew::Failure;
use request::identity_of;
pub use scrub::configured_secrets;
pub use state::TokenState;
pub use status::RenewalStats;

/// Why a renewal was asked for (logs, status' `last_renewal_reason`, the
/// reauthentication metric and the access log say it with [`Trigger::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// No access token yet (first use, or after one was dropped).
    Initial,
    /// The token is within `refresh_before` of its expiry.
    Proactive,
    /// The token's expiry has passed.
    Expired,
    /// Upstream said `401` + `X-API-Expired`.
    XApiExpired,
    /// Upstream said `401` + `X-API-Revoked`: drop everything, log in again.
    XApiRevoked,
    /// At start, a rotation interrupted within `rotation_grace` is retried.
    Interrupted,
    /// A plain `401` on an oauth2 route (treated like expired, unless a
    /// renewal after a plain `401` did not cure the last one).
    Unauthorized,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Initial => "initial",
            Trigger::Proactive => "proactive",
            Trigger::Expired => "expired",
            Trigger::XApiExpired => "x_api_expired",
            Trigger::XApiRevoked => "x_api_revoked",
            Trigger::Interrupted => "interrupted_rotation",
            Trigger::Unauthorized => "unauthorized",
        }
    }

    /// Found before use (by time), rather than told by the upstream.
    pub fn before_use(self) -> bool {
        matches!(
            self,
            Trigger::Initial | Trigger::Proactive | Trigger::Expired
        )
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
    /// A grant that needs a person's login (implicit, authorization code,
    /// device code) has no usable token; `device` is the device flow the
    /// person is to complete.
    #[error("no token; log in at {login_url}")]
    LoginRequired {
        login_url: String,
        device: Option<Box<DevicePrompt>>,
    },
    /// Waited too long for another request's renewal.
    #[error("timed out after {0:.0}s waiting for the token renewal in progress")]
    WaitTimeout(f64),
    /// A shared store (and its cross-replica lock) is unreachable, and the
    /// renewal is not safe without it.
    #[error("renewal refused: {0}; a single-use refresh token is not spent without the cross-replica lock")]
    StoreUnavailable(String),
    /// The issuer's metadata (and so the token endpoint) could not be had.
    #[error("{0}")]
    Discovery(DiscoveryError),
}

pub struct OAuthProvider {
    name: String,
    cfg: OAuth2Config,
    /// Whose tokens this provider's are (see [`Identity`]).
    identity: Identity,
    /// The stored record was taken at start but is not in the current
    /// form (older fingerprint, or plain text while a key is set): see
    /// [`OAuthProvider::upgrade_stored_record`].
    upgrade_pending: AtomicBool,
    /// A rotation interrupted within `rotation_grace` is to be retried at
    /// start (see [`OAuthProvider::resume_interrupted_rotation`]).
    resume_pending: AtomicBool,
    /// The shared token client, or one with this provider's TLS settings.
    client: TokenClient,
    /// What discovery found (see [`discover`]).
    endpoints: ArcSwapOption<Metadata>,
    discovery_lock: tokio::sync::Mutex<()>,
    /// Discoveries finished so far (a waiter that sees it move shares the result).
    discoveries: AtomicU64,
    /// A background discovery loop is running (one at a time).
    discovering: AtomicBool,
    store: Arc<dyn TokenStore>,
    metrics: Arc<Metrics>,
    login_url: String,
    current: ArcSwapOption<TokenState>,
    renew_lock: tokio::sync::Mutex<()>,
    /// A shared store announced a change while the renewal lock was held;
    /// the holder looks at the store before it lets go.
    sync_skipped: AtomicBool,
    /// Renewal attempts finished so far; a waiter that sees it move knows a
    /// renewal happened while it waited.
    attempts: AtomicU64,
    next_generation: AtomicU64,
    failure: Mutex<Option<Failure>>,
    stats: Mutex<RenewalStats>,
    /// The secrets of the whole config, scrubbed from provider text too.
    other_secrets: Mutex<Arc<Vec<Secret>>>,
    /// `dpop = true`: the key tokens are bound to, and servers' nonces.
    dpop: Option<Dpop>,
    /// This provider, for the tasks it starts (a device flow's polling).
    me: OnceLock<Weak<OAuthProvider>>,
    /// The device flow in progress or last finished.
    device: Mutex<DeviceFlowState>,
    /// One device flow start at a time.
    device_start: tokio::sync::Mutex<()>,
}

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
        let identity = identity_of(&cfg);
        let provider = OAuthProvider {
            name: name.to_string(),
            identity,
            upgrade_pending: AtomicBool::new(false),
            resume_pending: AtomicBool::new(false),
            client,
            endpoints: ArcSwapOption::empty(),
            discovery_lock: tokio::sync::Mutex::new(()),
            discoveries: AtomicU64::new(0),
            discovering: AtomicBool::new(false),
            store,
            metrics,
            login_url,
            current: ArcSwapOption::empty(),
            renew_lock: tokio::sync::Mutex::new(()),
            sync_skipped: AtomicBool::new(false),
            attempts: AtomicU64::new(0),
            next_generation: AtomicU64::new(1),
            failure: Mutex::new(None),
            stats: Mutex::new(RenewalStats::default()),
            other_secrets: Mutex::default(),
            dpop: cfg.dpop.then(|| Dpop::new(DpopKey::generate())),
            me: OnceLock::new(),
            device: Mutex::new(DeviceFlowState::Idle),
            device_start: tokio::sync::Mutex::new(()),
            cfg,
        };
        let key = provider.store.fingerprint_key();
        let stored = provider
            .store
            .load(name)
            .map(|s| (s.owner_match(&provider.identity, key.as_ref()), s));
        let initial = match stored {
            Some((owner @ (OwnerMatch::Same | OwnerMatch::Legacy), stored)) => {
                tracing::info!(provider = name, "using tokens from the store");
                if owner == OwnerMatch::Legacy {
                    // An older version wrote it. Its tokens are ours (the
                    // refresh token may be newer than the config's seed,
                    // which was then spent): keep them, write the record
                    // again in the current form.
                    tracing::info!(provider = name, "the stored record is from an older version (unkeyed fingerprint); it is written again with a keyed one");
                }
                if owner == OwnerMatch::Legacy || provider.store.needs_rewrite(name) {
                    provider.upgrade_pending.store(true, Ordering::Release);
                }
                // The stored tokens are bound to the stored key.
                provider.adopt_dpop_key(stored.dpop_key.as_ref());
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
        provider.note_open_rotation();
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

    /// A token fit to inject now, renewing first if needed. The common case
    /// is one atomic load.
    pub async fn token(&self) -> Result<Arc<TokenState>, CredentialError> {
        self.token_for_request().await.map(|(t, _)| t)
    }

    /// As [`Self::token`], with the reason when the token had to be renewed
    /// first (by this request or one it waited for).
    pub async fn token_for_request(
        &self,
    ) -> Result<(Arc<TokenState>, Option<Trigger>), CredentialError> {
        let now = unix_now();
        let current = self.current.load_full();
        if let Some(t) = &current {
            if t.fresh(now, self.cfg.refresh_before) {
                return Ok((t.clone(), None));
            }
            if self.cfg.grant.needs_login() && !t.has_refresh() && t.usable(now) {
                return Ok((t.clone(), None));
            }
        }
        // Without a refresh token a login grant has nothing to renew with.
        if self.cfg.grant.needs_login()
            && !self.current.load_full().is_some_and(|c| c.has_refresh())
        {
            return Err(self.login_required_now().await);
        }
        let trigger = match &current {
            Some(t) if t.usable(now) => Trigger::Proactive,
            Some(t) if t.header_value().is_some() => Trigger::Expired,
            _ => Trigger::Initial,
        };
        self.renew(trigger, None).await.map(|t| (t, Some(trigger)))
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

    pub(super) fn login_required(&self) -> CredentialError {
        CredentialError::LoginRequired {
            login_url: self.login_url.clone(),
            device: self.device_prompt().map(Box::new),
        }
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
        self.accept(set, None, Trigger::Initial).await;
        self.take_skipped_sync().await;
        let mut stats = self.stats.lock().unwrap();
        stats.rotation_interrupted_at = None;
        stats.renewals += 1;
        stats.last_renewal_at = Some(now);
        stats.last_renewal_outcome = Some("ok");
        stats.last_renewal_reason = Some("login");
        Ok(())
    }

    /// After a final refusal: the access token is not injected again (each
    /// request would cost the upstream a call for a certain 401), in memory
    /// nor after a restart, so the store forgets it too. A refresh token
    /// that was not refused is kept.
    ///
    /// Not written when a shared store announced another replica's token
    /// meanwhile: that one is newer, and is taken over before the renewal
    /// lock goes ([`Self::take_skipped_sync`]).
    pub(super) async fn fail_closed(&self, lease: Option<&mut Box<dyn RenewalLease>>) {
        let refresh = self.current.load_full().and_then(|c| c.refresh.clone());
        let now = unix_now();
        if !self.sync_skipped.load(Ordering::Acquire) {
            let record = StoredToken {
                access_token: None,
                refresh_token: refresh.clone(),
                expires_at: None,
                token_type: None,
                obtained_at: now,
                owner: Owner::Identity(self.identity.clone()),
                dpop_key: self.dpop_key_record(),
                rotation: None,
            };
            let saved = match lease {
                Some(lease) => lease.save(record).await,
                None => self.store.save(&self.name, record).await,
            };
            if let Err(e) = saved {
                tracing::warn!(provider = %self.name, error = %e, "cannot record the refusal in the token store; after a restart the refused token may be tried once more");
            }
        }
        let state = self.make_state(None, refresh, None, now, None);
        self.current.store(Some(Arc::new(state)));
    }

    /// Runs the primary grant once without storing or using the token
    /// (`authproxy check --probe`), at the token endpoint `token_url`
    /// (configured or discovered), with the client [`client_for`] makes.
    /// The provider's text in an error is scrubbed of the provider's
    /// secrets and `others` (see [`configured_secrets`]).
    pub async fn probe(
        cfg: &OAuth2Config,
        client: &TokenClient,
        token_url: &Url,
        others: &[Secret],
    ) -> Result<TokenSet, TokenError> {
        // A key of its own: the probe's token is not kept.
        let dpop = cfg.dpop.then(|| Dpop::new(DpopKey::generate()));
        let result = match token_request(cfg, token_url, None, dpop.as_ref()) {
            Ok(request) => client.request(&request, &|_| {}).await,
            Err(e) => Err(e),
        };
        result.map_err(|e| e.scrub(&scrub::config_scrubber(cfg, others)))
    }

    /// The issuer's metadata, fetched once without a provider runtime
    /// (`authproxy check`); `None` without an issuer.
    pub async fn discover_once(
        cfg: &OAuth2Config,
        client: &TokenClient,
    ) -> Option<Result<Metadata, DiscoveryError>> {
        let issuer = cfg.issuer.as_ref()?;
        Some(
            client
                .discover(issuer, cfg.allow_http, cfg.token_timeout)
                .await,
        )
    }
}

/// The token client of a provider: the shared one, or, with `ca_file` or a
/// client certificate, one of its own.
pub fn client_for(cfg: &OAuth2Config, shared: &TokenClient) -> Result<TokenClient, String> {
    if cfg.tls.is_default() {
        return Ok(shared.clone());
    }
    shared.with_tls(&TlsSettings {
        extra_roots: &cfg.tls.extra_roots,
        identity_pem: cfg.tls.identity.as_ref().map(|i| i.pem()),
    })
}
