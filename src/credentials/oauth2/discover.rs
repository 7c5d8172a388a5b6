//! A provider with an `issuer`: its endpoints from the issuer's metadata.
//!
//! Discovery runs in the background when the runtime is built (at start and
//! on every reload), with the token client's retries; a discovery that
//! still fails is tried again in the background with a growing pause (5 s
//! doubling to 5 min, at most [`BACKGROUND_ROUNDS`] rounds, about 30 min),
//! and by any request that needs the token endpoint (at most one every
//! [`super::renew`]'s cooldown). Until an endpoint the provider needs is
//! known, its state is `error` and its requests get `502` with the reason.
//! A provider whose endpoints are all configured does not wait for
//! discovery; a failure then is only a warning.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use url::Url;

use super::renew::{Failure, REFUSED_COOLDOWN, TRANSIENT_COOLDOWN};
use super::status::error_code;
use super::{CredentialError, OAuthProvider};
use crate::config::Grant;
use crate::oauth::{DiscoveryError, Metadata};

/// Background rounds after the first failure: 5 s, 10 s, … 5 min, then 5
/// min each; requests keep trying after that.
const BACKGROUND_ROUNDS: u32 = 12;
const FIRST_PAUSE: Duration = Duration::from_secs(5);
const MAX_PAUSE: Duration = Duration::from_secs(300);

impl OAuthProvider {
    /// The discovered endpoints, if discovery has succeeded.
    pub fn discovered(&self) -> Option<Arc<Metadata>> {
        self.endpoints.load_full()
    }

    /// Whether the provider cannot work without discovery: an endpoint its
    /// grant uses is not configured.
    fn needs_discovery(&self) -> bool {
        self.cfg.issuer.is_some()
            && match self.cfg.grant {
                Grant::Implicit => self.cfg.authorize_url.is_none(),
                Grant::AuthorizationCode => {
                    self.cfg.token_url.is_none() || self.cfg.authorize_url.is_none()
                }
                Grant::DeviceCode => {
                    self.cfg.token_url.is_none() || self.cfg.device_authorization_url.is_none()
                }
                _ => self.cfg.token_url.is_none(),
            }
    }

    /// The token endpoint: the configured one, else the discovered one,
    /// discovering now if need be.
    pub(super) async fn token_url(&self) -> Result<Url, CredentialError> {
        if let Some(url) = &self.cfg.token_url {
            return Ok(url.clone());
        }
        let metadata = match self.discovered() {
            Some(m) => m,
            None => self.discover().await.map_err(CredentialError::Discovery)?,
        };
        if let Some(url) = &metadata.token_endpoint {
            return Ok(url.clone());
        }
        let error = DiscoveryError {
            issuer: metadata.issuer.clone(),
            tried: vec![(
                metadata.issuer.clone(),
                "the metadata names no token_endpoint; set token_url".into(),
            )],
            transient: false,
        };
        self.record_discovery_failure(&error);
        Err(CredentialError::Discovery(error))
    }

    /// The device authorization endpoint (device_code grant): configured,
    /// else discovered.
    pub async fn device_authorization_url(&self) -> Result<Url, CredentialError> {
        if let Some(url) = &self.cfg.device_authorization_url {
            return Ok(url.clone());
        }
        let metadata = match self.discovered() {
            Some(m) => m,
            None => self.discover().await.map_err(CredentialError::Discovery)?,
        };
        metadata.device_authorization_endpoint.clone().ok_or_else(|| {
            CredentialError::Reauthentication(format!(
                "the metadata of {} names no device_authorization_endpoint; set device_authorization_url",
                metadata.issuer
            ))
        })
    }

    /// The authorize endpoint (implicit and authorization-code grants):
    /// configured, else discovered.
    pub async fn authorize_url(&self) -> Result<Url, CredentialError> {
        if let Some(url) = &self.cfg.authorize_url {
            return Ok(url.clone());
        }
        let metadata = match self.discovered() {
            Some(m) => m,
            None => self.discover().await.map_err(CredentialError::Discovery)?,
        };
        metadata.authorization_endpoint.clone().ok_or_else(|| {
            CredentialError::Reauthentication(format!(
                "the metadata of {} names no authorization_endpoint; set authorize_url",
                metadata.issuer
            ))
        })
    }

    /// Fetches the issuer's metadata once (callers at the same time share
    /// one fetch) and keeps it. A failure is shown in status, as `error`
    /// when the provider needs the endpoints.
    pub async fn discover(&self) -> Result<Arc<Metadata>, DiscoveryError> {
        let Some(issuer) = &self.cfg.issuer else {
            return Err(DiscoveryError {
                issuer: String::new(),
                tried: vec![(String::new(), "no issuer is configured".into())],
                transient: false,
            });
        };
        let started = self.discoveries.load(Ordering::Acquire);
        let _guard = self.discovery_lock.lock().await;
        // Someone else discovered while we waited: theirs is as new.
        if self.discoveries.load(Ordering::Acquire) != started {
            if let Some(m) = self.discovered() {
                return Ok(m);
            }
        }
        let result = self
            .client
            .discover(issuer, self.cfg.allow_http, self.cfg.token_timeout)
            .await;
        self.discoveries.fetch_add(1, Ordering::AcqRel);
        match result {
            Ok(metadata) => {
                let metadata = Arc::new(metadata);
                self.endpoints.store(Some(metadata.clone()));
                let mut failure = self.failure.lock().unwrap();
                if failure
                    .as_ref()
                    .is_some_and(|f| matches!(f.error, CredentialError::Discovery(_)))
                {
                    *failure = None;
                }
                Ok(metadata)
            }
            Err(e) => {
                if self.needs_discovery() {
                    self.record_discovery_failure(&e);
                } else {
                    tracing::warn!(provider = %self.name, error = %e, "discovery failed; the configured endpoints are used");
                }
                Err(e)
            }
        }
    }

    /// At start and on reload: discover in the background, and keep trying
    /// (bounded) while it fails. Needs a tokio runtime; without one (a
    /// runtime built outside of it) the first request discovers.
    pub fn spawn_discovery(self: &Arc<Self>) {
        if self.cfg.issuer.is_none() {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.discovering.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(self);
        handle.spawn(async move {
            let mut pause = FIRST_PAUSE;
            for _ in 0..=BACKGROUND_ROUNDS {
                // Stops once the provider is gone (a reload replaced it).
                let Some(provider) = weak.upgrade() else {
                    return;
                };
                if provider.discover().await.is_ok() {
                    break;
                }
                drop(provider);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(MAX_PAUSE);
            }
            if let Some(provider) = weak.upgrade() {
                provider.discovering.store(false, Ordering::Release);
            }
        });
    }

    /// A discovery that failed while the provider needs its endpoints:
    /// state `error`, shown in status, shared with requests for a while.
    pub(super) fn record_discovery_failure(&self, e: &DiscoveryError) {
        let error = CredentialError::Discovery(e.clone());
        let mut stats = self.stats.lock().unwrap();
        stats.last_error_code = Some(error_code(&error));
        stats.last_error_message = Some(error.to_string());
        drop(stats);
        let cooldown = if e.transient {
            TRANSIENT_COOLDOWN
        } else {
            REFUSED_COOLDOWN
        };
        *self.failure.lock().unwrap() = Some(Failure {
            error,
            until: Instant::now() + cooldown,
        });
        tracing::error!(provider = %self.name, error = %e, "discovery failed; no token can be had until the issuer's metadata is");
    }
}
