//! Single-flight renewal: one renewal at a time per provider (others wait
//! and share its outcome), the cross-replica lease of shared stores, the
//! refresh grant with the primary grant as fallback, and the durable
//! hand-off of every new token to the store before it is used.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use url::Url;

use super::rotation::Rotation;
use super::status::error_code;
use super::{token_request, CredentialError, OAuthProvider, TokenState, Trigger};
use crate::clock::unix_now;
use crate::config::Grant;
use crate::oauth::{TokenError, TokenSet};
use crate::secret::Secret;
use crate::store::RenewalLease;
use crate::telemetry::metrics::{ReauthLabels, TokenLabels};

/// A failed renewal remembered so waiters and the next few requests get the
/// same answer instead of starting a retry storm.
pub(super) struct Failure {
    pub(super) error: CredentialError,
    pub(super) until: Instant,
}

/// How long after a failed renewal the same error is answered without a new
/// token request.
pub(super) const TRANSIENT_COOLDOWN: Duration = Duration::from_secs(2);
pub(super) const REFUSED_COOLDOWN: Duration = Duration::from_secs(30);

impl OAuthProvider {
    fn wait_bound(&self) -> Duration {
        // Two grants (refresh, then primary), each with its retries.
        self.cfg.token_timeout * 8 + Duration::from_secs(20)
    }

    pub(super) async fn renew(
        &self,
        trigger: Trigger,
        used: Option<u64>,
    ) -> Result<Arc<TokenState>, CredentialError> {
        let seen_attempts = self.attempts.load(Ordering::Acquire);
        let bound = self.wait_bound();
        let _guard = tokio::time::timeout(bound, self.renew_lock.lock())
            .await
            .map_err(|_| CredentialError::WaitTimeout(bound.as_secs_f64()))?;
        let result = self.renew_locked(trigger, used, seen_attempts).await;
        match self.take_skipped_sync().await {
            Some(adopted) => Ok(adopted),
            None => result,
        }
    }

    /// The renewal itself, with the renewal lock held.
    async fn renew_locked(
        &self,
        trigger: Trigger,
        used: Option<u64>,
        seen_attempts: u64,
    ) -> Result<Arc<TokenState>, CredentialError> {
        // Re-check under the lock: whoever held it may have done our work.
        let now = unix_now();
        let cur = self.current.load_full();
        // An interrupted rotation is retried however fresh the token looks.
        let force = trigger == Trigger::Interrupted;
        if let Some(c) = cur.as_ref().filter(|_| !force) {
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
                .filter(|c| trigger.before_use() && c.usable(now))
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
            // After a final refusal with no refresh token and no primary
            // grant left, nothing can be tried until a new credential
            // arrives (reload, pasted token, login).
            let nothing_left = matches!(
                f.error,
                CredentialError::Reauthentication(_) | CredentialError::LoginRequired { .. }
            ) && !self.cfg.grant.has_primary()
                && !cur.as_ref().is_some_and(|c| c.has_refresh());
            if Instant::now() < f.until || nothing_left {
                return usable_fallback().ok_or_else(|| f.error.clone());
            }
        }

        // The token endpoint, discovered first if need be (a failure is
        // recorded by discovery).
        let token_url = match self.token_url().await {
            Ok(url) => url,
            Err(error) => {
                self.attempts.fetch_add(1, Ordering::Release);
                return usable_fallback().ok_or(error);
            }
        };

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
                        outcome: e.refusal_outcome().to_string(),
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
                // Another replica wrote: that write ended the rotation.
                let done = force
                    || match used {
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

        if force && !self.rotation_still_open(renew_from.as_ref()) {
            // Finished meanwhile (a request's renewal, another replica).
            if let Some(l) = lease.take() {
                l.release().await;
            }
            return renew_from.ok_or_else(|| CredentialError::Reauthentication("no token".into()));
        }
        self.metrics
            .reauthentications
            .get_or_create(&ReauthLabels {
                provider: self.name.clone(),
                reason: trigger.as_str().to_string(),
            })
            .inc();
        let result = self
            .run_grants(trigger, renew_from.as_deref(), &mut lease, &token_url)
            .await;
        if matches!(
            result,
            Err(CredentialError::Reauthentication(_) | CredentialError::LoginRequired { .. })
        ) {
            self.fail_closed(lease.as_mut()).await;
        }
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
                stats.rotation_interrupted_at = None;
                stats.renewals += 1;
                stats.last_renewal_outcome = Some("ok");
                drop(stats);
                tracing::info!(provider = %self.name, reason = trigger.as_str(), generation = state.generation, expires_at = state.expires_at, "token renewed");
                Ok(state)
            }
            Err(error) => {
                drop(stats);
                let refused = matches!(
                    error,
                    CredentialError::Reauthentication(_) | CredentialError::LoginRequired { .. }
                );
                let cooldown = if refused {
                    REFUSED_COOLDOWN
                } else {
                    TRANSIENT_COOLDOWN
                };
                self.record_failure(trigger, &error, cooldown);
                if refused {
                    // The refused token is gone (fail_closed): no fallback.
                    return Err(error);
                }
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
        token_url: &Url,
    ) -> Result<Arc<TokenState>, CredentialError> {
        let mut refresh = cur.and_then(|c| c.refresh.clone());
        if trigger == Trigger::XApiRevoked {
            tracing::warn!(provider = %self.name, "upstream says the token is revoked; discarding access and refresh tokens");
            self.current.store(None);
            refresh = None;
        }
        let mut refresh_error = None;
        // The refused token's rotation was interrupted: why, in words.
        let mut lost = None;
        if let (Some(rt), Some(cur)) = (refresh, cur) {
            let rotation = self.begin_rotation(cur, &rt, lease.as_mut()).await?;
            match self.grant(token_url, Some(&rt)).await {
                Ok(set) => return Ok(self.accept(set, lease.as_mut(), trigger).await),
                Err(e) => {
                    if e.is_grant_refused() {
                        // A refused refresh token is dead; never send it again.
                        self.drop_refresh_token();
                        if let Rotation::Interrupted(at) = rotation {
                            lost = Some(self.rotation_lost(at, &e));
                        }
                    }
                    tracing::warn!(provider = %self.name, error = %e, "refresh grant failed");
                    refresh_error = Some(e);
                }
            }
        }
        if self.cfg.grant.needs_login() {
            // A person logs in again; until then requests are told where.
            return Err(match refresh_error {
                Some(e) if !e.is_grant_refused() => CredentialError::TokenEndpoint(e),
                _ => {
                    tracing::warn!(provider = %self.name, "no refresh token left (or it was refused); a new login is needed");
                    self.login_required()
                }
            });
        }
        if !self.cfg.grant.has_primary() {
            return Err(match refresh_error {
                Some(e) if !e.is_grant_refused() => CredentialError::TokenEndpoint(e),
                Some(e) => CredentialError::Reauthentication(lost.unwrap_or_else(|| {
                    format!("refresh token refused ({e}); set a new refresh_token seed in the config and reload")
                })),
                None => CredentialError::Reauthentication(
                    "no refresh token left; set a new refresh_token seed in the config and reload".into(),
                ),
            });
        }
        if refresh_error.is_some() {
            tracing::info!(provider = %self.name, grant = self.cfg.grant.as_str(), "falling back to the primary grant");
        }
        match self.grant(token_url, None).await {
            Ok(set) => Ok(self.accept(set, lease.as_mut(), trigger).await),
            Err(e) if e.is_grant_refused() => Err(CredentialError::Reauthentication(format!(
                "{} grant refused: {e}",
                self.cfg.grant.as_str()
            ))),
            Err(e) => Err(CredentialError::TokenEndpoint(e)),
        }
    }

    /// One grant, with its retries: the refresh grant with `refresh`, else
    /// the primary grant. Every try is counted in the metrics.
    async fn grant(
        &self,
        token_url: &Url,
        refresh: Option<&Secret>,
    ) -> Result<TokenSet, TokenError> {
        let kind = match refresh {
            None => self.cfg.grant.as_str(),
            Some(_) => "refresh_token",
        };
        let observe = |r: &Result<TokenSet, TokenError>| {
            self.stats.lock().unwrap().token_requests += 1;
            let outcome = match r {
                Ok(_) => "ok".to_string(),
                Err(e) => e.outcome().into_owned(),
            };
            self.metrics
                .token_requests
                .get_or_create(&TokenLabels {
                    provider: self.name.clone(),
                    grant: kind.to_string(),
                    outcome,
                })
                .inc();
        };
        let result = match token_request(&self.cfg, token_url, refresh, self.dpop.as_ref()) {
            Ok(request) => self.client.request(&request, &observe).await,
            Err(e) => {
                let failed = Err(e);
                observe(&failed);
                failed
            }
        };
        // The one place a token endpoint's text comes out: scrubbed of
        // every secret, the refresh token just sent included (it may be
        // dropped as dead a moment later).
        result.map_err(|e| e.scrub(&self.scrubber(refresh)))
    }

    fn record_failure(&self, trigger: Trigger, error: &CredentialError, cooldown: Duration) {
        let mut stats = self.stats.lock().unwrap();
        stats.last_renewal_at = Some(unix_now());
        stats.last_renewal_reason = Some(trigger.as_str());
        stats.last_renewal_outcome = Some("error");
        let refused = matches!(
            error,
            CredentialError::Reauthentication(_) | CredentialError::LoginRequired { .. }
        );
        stats.last_error_code = Some(match stats.rotation_interrupted_at {
            Some(_) if refused => "rotation_interrupted".into(),
            _ => error_code(error),
        });
        stats.last_error_message = Some(error.to_string());
        *self.failure.lock().unwrap() = Some(Failure {
            error: error.clone(),
            until: Instant::now() + cooldown,
        });
        tracing::error!(provider = %self.name, reason = trigger.as_str(), error = %error, "token renewal failed");
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use super::super::{OAuthProvider, Trigger};
    use crate::config::interpolate::ProcessEnv;
    use crate::config::{Config, ProviderKind};
    use crate::oauth::client::RetryPolicy;
    use crate::oauth::TokenClient;
    use crate::secret::Secret;
    use crate::store::{MemoryStore, Owner, StoredToken, TokenStore};
    use crate::telemetry::Metrics;

    fn provider(store: Arc<MemoryStore>) -> OAuthProvider {
        let text = "[store]\nkind = \"memory\"\n\
            [providers.p]\ntype = \"oauth2\"\ngrant = \"refresh_token\"\n\
            token_url = \"http://127.0.0.1:9/token\"\n\
            refresh_token = \"ours-refresh\"\naccess_token = \"ours\"\n\
            [[routes]]\nprefix = \"/p/\"\nupstream = \"http://127.0.0.1:9/\"\nprovider = \"p\"\n";
        let config = Config::parse(text, Path::new("x.toml"), &ProcessEnv).unwrap();
        let ProviderKind::OAuth2(cfg) = &config.providers["p"].kind else {
            unreachable!()
        };
        OAuthProvider::new(
            "p",
            (**cfg).clone(),
            TokenClient::new(RetryPolicy::default()).unwrap(),
            store,
            Arc::new(Metrics::default()),
            "/_authproxy/login/p".into(),
        )
    }

    fn access(p: &OAuthProvider) -> String {
        let current = p.current().unwrap();
        current.access.as_ref().unwrap().0.expose().to_string()
    }

    /// The change feed must not queue behind a renewal (which can take
    /// minutes); the token it announced is taken over when the renewal
    /// ends instead.
    #[tokio::test]
    async fn a_change_announced_during_a_renewal_waits_for_its_end_not_for_its_lock() {
        let store = Arc::new(MemoryStore::default());
        let p = provider(store.clone());
        assert_eq!(access(&p), "ours");

        // A renewal is in progress, and another replica writes a token.
        let renewal = p.renew_lock.lock().await;
        let theirs = StoredToken {
            access_token: Some(Secret::new("theirs")),
            refresh_token: Some(Secret::new("theirs-refresh")),
            expires_at: None,
            token_type: None,
            obtained_at: 0,
            owner: Owner::Identity(p.identity.clone()),
            dpop_key: None,
            rotation: None,
        };
        store.save("p", theirs).await.unwrap();
        // Before the fix this waited for the lock held above, forever:
        // the watchdog fails the test instead of hanging it.
        tokio::time::timeout(Duration::from_secs(120), p.sync_from_store())
            .await
            .expect("the change follower waited for the renewal lock");
        assert_eq!(access(&p), "ours", "not taken over under another's lock");

        // The renewal ends (here: refused, a revoked token and no primary
        // grant; no token request is made) and takes the announced token.
        drop(renewal);
        let generation = p.current().unwrap().generation;
        let renewed = p
            .renew(Trigger::XApiRevoked, Some(generation))
            .await
            .unwrap();
        assert_eq!(renewed.access.as_ref().unwrap().0.expose(), "theirs");
        assert_eq!(access(&p), "theirs");
    }
}
