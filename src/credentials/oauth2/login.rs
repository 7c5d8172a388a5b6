//! A person's login for the grants that need one: the authorization code
//! (with its PKCE verifier) exchanged after the browser came back, and the
//! device flow of RFC 8628 (started once per provider at a time, polled in
//! the background at the server's interval, `+5 s` on `slow_down`, stopped
//! on `access_denied`, `expired_token` or when the code's lifetime is over).
//! The tokens either gives are stored like any renewal's, and renewed with
//! the refresh token from then on.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use url::Url;

use super::{request_for, CredentialError, OAuthProvider, Trigger};
use crate::clock::{rfc3339, unix_now};
use crate::config::Grant;
use crate::oauth::device::SLOW_DOWN_STEP;
use crate::oauth::{self, DeviceAuthorization, TokenError, TokenSet};
use crate::secret::Secret;
use crate::telemetry::metrics::{LoginLabels, TokenLabels};

/// After a device flow ended without tokens, requests do not start a new
/// one for this long.
const REQUEST_RESTART_PAUSE: Duration = Duration::from_secs(60);

/// What a person is to do to complete a device flow. Not a secret: it is
/// shown to whoever may log in (the device code, which is, is not here).
#[derive(Debug, Clone, PartialEq)]
pub struct DevicePrompt {
    pub verification_uri: String,
    pub verification_uri_complete: Option<String>,
    pub user_code: String,
    /// Unix time the device code expires.
    pub expires_at: u64,
}

impl DevicePrompt {
    /// `{"verification_uri", "verification_uri_complete"?, "user_code",
    /// "expires_in", "expires_at"}`, `expires_in` from now.
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "verification_uri": self.verification_uri,
            "user_code": self.user_code,
            "expires_in": self.expires_at.saturating_sub(unix_now()),
            "expires_at": rfc3339(self.expires_at),
        });
        if let Some(c) = &self.verification_uri_complete {
            v["verification_uri_complete"] = Value::String(c.clone());
        }
        v
    }
}

/// The device flow of a provider: none yet, one in progress, or how the
/// last one ended.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceFlowState {
    Idle,
    Pending(DevicePrompt),
    /// `outcome` is `ok`, `denied`, `expired` or `error`.
    Finished {
        outcome: &'static str,
        at: u64,
        message: Option<String>,
    },
}

impl DeviceFlowState {
    /// For `/_authproxy/status`: `null` when no flow was started.
    pub fn to_json(&self) -> Value {
        match self {
            DeviceFlowState::Idle => Value::Null,
            DeviceFlowState::Pending(p) => {
                let mut v = p.to_json();
                v["state"] = json!("pending");
                v
            }
            DeviceFlowState::Finished {
                outcome,
                at,
                message,
            } => json!({"state": outcome, "finished_at": rfc3339(*at), "message": message}),
        }
    }
}

/// How one poll of the token endpoint ended.
enum Poll {
    Tokens(TokenSet),
    Pending,
    SlowDown,
    /// Finished without tokens: outcome and message.
    Stop(&'static str, String),
}

impl OAuthProvider {
    /// Lets the provider start tasks that hold it weakly (device polling).
    pub fn bind(self: &Arc<Self>) {
        let _ = self.me.set(Arc::downgrade(self));
    }

    /// The device flow in progress or last finished.
    pub fn device_state(&self) -> DeviceFlowState {
        let mut state = self.device.lock().unwrap();
        if let DeviceFlowState::Pending(p) = &*state {
            if p.expires_at <= unix_now() {
                *state = DeviceFlowState::Finished {
                    outcome: "expired",
                    at: p.expires_at,
                    message: Some("the user code expired before anyone approved it".into()),
                };
            }
        }
        state.clone()
    }

    /// Whether a request may start a device flow: not within a minute of
    /// one that was refused, expired or failed (its outcome stays in
    /// status; `authproxy login` starts a new one at any time).
    fn may_start_device(&self) -> bool {
        match self.device_state() {
            DeviceFlowState::Finished { outcome, at, .. } if outcome != "ok" => {
                unix_now() >= at + REQUEST_RESTART_PAUSE.as_secs()
            }
            _ => true,
        }
    }

    /// The device flow a person can complete now, if one is pending.
    pub fn device_prompt(&self) -> Option<DevicePrompt> {
        match self.device_state() {
            DeviceFlowState::Pending(p) => Some(p),
            _ => None,
        }
    }

    /// `login_required` for a request that found no token: a device-code
    /// provider starts its device flow (or names the pending one) so the
    /// answer can say what to do.
    pub(super) async fn login_required_now(&self) -> CredentialError {
        if self.cfg.grant == Grant::DeviceCode && self.may_start_device() {
            if let Err(e) = self.start_device().await {
                return e;
            }
        }
        self.login_required()
    }

    /// Starts a device flow, or returns the pending one (one per provider
    /// at a time): asks the device authorization endpoint for a code and
    /// polls the token endpoint in the background until the person
    /// approved, refused, or the code expired.
    pub async fn start_device(&self) -> Result<DevicePrompt, CredentialError> {
        if self.cfg.grant != Grant::DeviceCode {
            return Err(CredentialError::Reauthentication(format!(
                "provider {} uses grant = \"{}\"; a device flow is only for grant = \"device_code\"",
                self.name,
                self.cfg.grant.as_str()
            )));
        }
        let _one = self.device_start.lock().await;
        if let Some(p) = self.device_prompt() {
            return Ok(p);
        }
        let device_url = self.device_authorization_url().await?;
        let token_url = self.token_url().await?;
        let request = request_for(&self.cfg, &device_url, oauth::Grant::DeviceAuthorization);
        let auth = match self.client.device_authorization(&request).await {
            Ok(a) => a,
            Err(e) => {
                let e = e.scrub(&self.scrubber(None));
                tracing::error!(provider = %self.name, error = %e, "device authorization request failed");
                self.count_login("error");
                return Err(CredentialError::TokenEndpoint(e));
            }
        };
        let prompt = DevicePrompt {
            verification_uri: auth.verification_uri.to_string(),
            verification_uri_complete: auth
                .verification_uri_complete
                .as_ref()
                .map(|u| u.to_string()),
            user_code: auth.user_code.clone(),
            expires_at: unix_now() + auth.expires_in,
        };
        tracing::info!(provider = %self.name, verification_uri = %prompt.verification_uri, user_code = %prompt.user_code, expires_in = auth.expires_in, "device login started: the user is to enter the code at the verification URI");
        *self.device.lock().unwrap() = DeviceFlowState::Pending(prompt.clone());
        match (
            self.me.get().cloned(),
            tokio::runtime::Handle::try_current(),
        ) {
            (Some(me), Ok(handle)) => {
                handle.spawn(poll_device(me, auth, token_url));
            }
            _ => tracing::error!(provider = %self.name, "no runtime to poll the device flow in"),
        }
        Ok(prompt)
    }

    /// One poll with the device code.
    async fn poll_once(&self, token_url: &Url, device_code: &Secret) -> Poll {
        let request = request_for(&self.cfg, token_url, oauth::Grant::DeviceCode(device_code));
        let result = self
            .client
            .request(&request, &|r| self.observe("device_code", r))
            .await;
        let e = match result {
            Ok(set) => return Poll::Tokens(set),
            Err(e) => {
                let mut scrubber = self.scrubber(None);
                scrubber.add(device_code);
                e.scrub(&scrubber)
            }
        };
        let code = match &e {
            TokenError::OAuth { code, .. } => code.standard(),
            _ => None,
        };
        match code {
            Some("authorization_pending") => Poll::Pending,
            Some("slow_down") => Poll::SlowDown,
            Some("access_denied") => Poll::Stop("denied", format!("the user refused: {e}")),
            Some("expired_token") => Poll::Stop(
                "expired",
                format!("the user code expired before anyone approved it: {e}"),
            ),
            // The client retried what passes already; try again next round.
            _ if e.is_transient() => {
                tracing::warn!(provider = %self.name, error = %e, "device flow poll failed; polling on");
                Poll::Pending
            }
            _ => Poll::Stop("error", e.to_string()),
        }
    }

    /// Counts a token request by outcome (as the renewals' are).
    pub(super) fn observe(&self, grant: &str, r: &Result<TokenSet, TokenError>) {
        self.stats.lock().unwrap().token_requests += 1;
        let outcome = match r {
            Ok(_) => "ok".to_string(),
            Err(e) => e.outcome().into_owned(),
        };
        self.metrics
            .token_requests
            .get_or_create(&TokenLabels {
                provider: self.name.clone(),
                grant: grant.to_string(),
                outcome,
            })
            .inc();
    }

    fn count_login(&self, outcome: &str) {
        self.metrics
            .logins
            .get_or_create(&LoginLabels {
                provider: self.name.clone(),
                grant: self.cfg.grant.as_str().to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    fn finish_device(&self, outcome: &'static str, message: Option<String>) {
        self.count_login(outcome);
        *self.device.lock().unwrap() = DeviceFlowState::Finished {
            outcome,
            at: unix_now(),
            message,
        };
    }

    /// The callback of an authorization-code login: exchanges `code` with
    /// the PKCE `verifier` and the same `redirect_uri` as the authorize
    /// request, and stores the tokens.
    pub async fn exchange_code(
        &self,
        code: &Secret,
        verifier: &Secret,
        redirect_uri: &str,
    ) -> Result<(), CredentialError> {
        let token_url = self.token_url().await?;
        let request = request_for(
            &self.cfg,
            &token_url,
            oauth::Grant::AuthorizationCode {
                code,
                verifier,
                redirect_uri,
            },
        );
        let result = self
            .client
            .request(&request, &|r| self.observe("authorization_code", r))
            .await;
        match result {
            Ok(set) => {
                self.accept_login(set).await;
                self.count_login("ok");
                Ok(())
            }
            Err(e) => {
                let mut scrubber = self.scrubber(None);
                scrubber.add_all([code, verifier]);
                let e = e.scrub(&scrubber);
                self.count_login("error");
                tracing::error!(provider = %self.name, error = %e, "authorization code exchange failed");
                Err(CredentialError::TokenEndpoint(e))
            }
        }
    }

    /// Makes a login's tokens current and durable, as a renewal would.
    async fn accept_login(&self, set: TokenSet) {
        let _guard = self.renew_lock.lock().await;
        *self.failure.lock().unwrap() = None;
        let state = self.accept(set, None, Trigger::Initial).await;
        self.take_skipped_sync().await;
        self.attempts.fetch_add(1, Ordering::Release);
        let mut stats = self.stats.lock().unwrap();
        stats.renewals += 1;
        stats.last_renewal_at = Some(unix_now());
        stats.last_renewal_outcome = Some("ok");
        stats.last_renewal_reason = Some("login");
        drop(stats);
        tracing::info!(provider = %self.name, grant = self.cfg.grant.as_str(), generation = state.generation, "login completed; tokens stored");
    }
}

/// Polls until the flow ends or the provider is gone (a reload replaced
/// it). Bounded by the code's lifetime; each round waits the interval
/// first (RFC 8628 §3.5: no poll before it).
async fn poll_device(me: Weak<OAuthProvider>, auth: DeviceAuthorization, token_url: Url) {
    let deadline = Instant::now() + Duration::from_secs(auth.expires_in);
    let mut interval = auth.interval;
    loop {
        tokio::time::sleep(interval).await;
        let Some(p) = me.upgrade() else {
            return;
        };
        if Instant::now() >= deadline {
            tracing::warn!(provider = %p.name, "device login expired: nobody approved the user code in time");
            p.finish_device(
                "expired",
                Some("the user code expired before anyone approved it".into()),
            );
            return;
        }
        match p.poll_once(&token_url, &auth.device_code).await {
            Poll::Tokens(set) => {
                p.accept_login(set).await;
                p.finish_device("ok", None);
                return;
            }
            Poll::Pending => {}
            Poll::SlowDown => {
                interval += SLOW_DOWN_STEP;
                tracing::info!(provider = %p.name, interval_s = interval.as_secs(), "device flow: the server asks to slow down");
            }
            Poll::Stop(outcome, message) => {
                tracing::warn!(provider = %p.name, outcome, message = %message, "device login ended without tokens");
                p.finish_device(outcome, Some(message));
                return;
            }
        }
    }
}
