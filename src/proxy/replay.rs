//! oauth2 routes: inject the current token, and when the upstream answers
//! 401 (with `X-API-Expired`, `X-API-Revoked`, or plain with
//! `refresh_on_401`) renew the token once and replay the request with the
//! new one, if its body was small enough to keep. A plain 401 that a
//! renewal did not cure does not renew that new token again. With DPoP,
//! every send carries a new proof, and an upstream's nonce demand is met
//! by one more send.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use http::header::{HeaderMap, HeaderName, WWW_AUTHENTICATE};
use http::{Response, StatusCode};
use http_body_util::BodyExt;

use super::forward::{set_latency, Forward};
use super::outbody::{declared_length, prepare_body, OutBody};
use super::ProxyResponse;
use crate::credentials::oauth2::TokenState;
use crate::credentials::{OAuthProvider, Trigger};
use crate::error::ProxyError;
use crate::http::body::Buffered;
use crate::oauth::dpop::{asks_for_nonce, DPOP};
use crate::telemetry::metrics::ProviderLabels;
use crate::telemetry::AccessInfo;
use crate::upstream::PooledBody;

const X_API_EXPIRED: HeaderName = HeaderName::from_static("x-api-expired");
const X_API_REVOKED: HeaderName = HeaderName::from_static("x-api-revoked");

/// The provider's current token (fetched or renewed first if it must be),
/// put into `headers`; why it was renewed goes to the access log.
pub(super) async fn current_token(
    provider: &OAuthProvider,
    headers: &mut HeaderMap,
    info: &mut AccessInfo,
) -> Result<Arc<TokenState>, ProxyError> {
    let (token, renewed_for) = provider
        .token_for_request()
        .await
        .map_err(|e| ProxyError::credential(provider.name(), e))?;
    info.renewal = renewed_for.map(Trigger::as_str);
    put_token(provider, &token, headers)?;
    Ok(token)
}

/// The token renewed after the upstream refused `token` (`trigger`), put
/// into `headers` for the replay.
pub(super) async fn renewed_token(
    provider: &OAuthProvider,
    token: &TokenState,
    trigger: Trigger,
    headers: &mut HeaderMap,
) -> Result<Arc<TokenState>, ProxyError> {
    let renewed = provider
        .renew_after_401(token.generation, trigger)
        .await
        .map_err(|e| ProxyError::credential(provider.name(), e))?;
    put_token(provider, &renewed, headers)?;
    Ok(renewed)
}

fn put_token(
    provider: &OAuthProvider,
    token: &TokenState,
    headers: &mut HeaderMap,
) -> Result<(), ProxyError> {
    let value = token
        .header_value()
        .ok_or_else(|| ProxyError::Internal("renewed token has no access token".into()))?;
    headers.insert(provider.header_name().clone(), value.clone());
    Ok(())
}

impl Forward<'_> {
    pub(super) async fn send_oauth(
        self,
        provider: &Arc<OAuthProvider>,
        mut headers: HeaderMap,
        body: Body,
        info: &mut AccessInfo,
    ) -> Result<ProxyResponse, ProxyError> {
        let token = current_token(provider, &mut headers, info).await?;

        let limit = self.fwd.config.server.max_replay_body;
        let body = prepare_body(
            body,
            declared_length(&headers),
            limit,
            self.fwd.config.server.max_request_body,
            &self.fwd.buffers,
        )
        .await?;
        let (first_body, replay_body) = match body {
            OutBody::Buffered(b) => (OutBody::Buffered(b.again()), Ok(b)),
            OutBody::Stream(s, why) => (OutBody::Stream(s, why), Err(why)),
        };

        let started = Instant::now();
        let again = replay_body.as_ref().ok();
        let response = self
            .send_proved(provider, &token, &mut headers, first_body, again)
            .await?;
        set_latency(info, started);
        if response.status() != StatusCode::UNAUTHORIZED {
            token.note_accepted();
            return Ok(self.finish(response));
        }
        if provider.dpop().is_some() && asks_for_nonce(response.headers().get_all(WWW_AUTHENTICATE))
        {
            // A nonce demand the retry could not meet (the body was not
            // kept, or the nonce was refused again) is not about the
            // token: renewing would not help. The next request carries
            // the nonce.
            return Ok(self.finish(response));
        }
        let trigger = if response.headers().contains_key(X_API_REVOKED) {
            Trigger::XApiRevoked
        } else if response.headers().contains_key(X_API_EXPIRED) {
            Trigger::XApiExpired
        } else if !provider.config().refresh_on_401 {
            return Ok(self.finish(response));
        } else if !token.renews_on_plain_401() {
            // A renewal after a plain 401 did not cure the last one: this
            // path refuses whatever the token, and renewing again would
            // only spend (single-use) refresh tokens.
            tracing::debug!(
                provider = provider.name(),
                "plain 401 to a token a renewal did not help; returned as is"
            );
            return Ok(self.finish(response));
        } else {
            Trigger::Unauthorized
        };
        tracing::info!(
            provider = provider.name(),
            reason = trigger.as_str(),
            "upstream answered 401; renewing the credential"
        );
        info.renewal = Some(trigger.as_str());

        let replay_body = match replay_body {
            Ok(b) => b,
            Err(why) => {
                // The body streamed and is gone: renew for the next request
                // and hand this 401 back.
                if let Err(e) = provider.renew_after_401(token.generation, trigger).await {
                    tracing::warn!(provider = provider.name(), error = %e, "renewal after 401 failed");
                }
                tracing::info!(
                    provider = provider.name(),
                    reason = why.reason(),
                    "request body was not kept for a replay; returning the 401"
                );
                return Ok(self.finish(response));
            }
        };
        drain(response).await;
        let renewed = renewed_token(provider, &token, trigger, &mut headers).await?;
        let started = Instant::now();
        let response = self
            .send_proved(
                provider,
                &renewed,
                &mut headers,
                OutBody::Buffered(replay_body.again()),
                Some(&replay_body),
            )
            .await;
        set_latency(info, started);
        info.replayed = true;
        self.fwd
            .metrics
            .replays
            .get_or_create(&ProviderLabels {
                provider: provider.name().to_string(),
            })
            .inc();
        // A second 401 goes back to the client as it is; after a renewal on
        // a plain 401 it also means that 401 was not about the token.
        let response = response?;
        if response.status() != StatusCode::UNAUTHORIZED {
            renewed.note_accepted();
        } else if trigger == Trigger::Unauthorized {
            renewed.note_not_cured();
        }
        Ok(self.finish(response))
    }
}

impl Forward<'_> {
    /// Sends with a fresh DPoP proof for `token` when the provider uses
    /// DPoP (RFC 9449 §7), and remembers the upstream's `DPoP-Nonce`. A
    /// `401` asking for a nonce (`WWW-Authenticate: DPoP
    /// error="use_dpop_nonce"`) that brought a new one is sent once more,
    /// with a new proof carrying it, if the body was kept (`again`).
    pub(super) async fn send_proved(
        &self,
        provider: &OAuthProvider,
        token: &TokenState,
        headers: &mut HeaderMap,
        body: OutBody,
        again: Option<&Buffered>,
    ) -> Result<Response<PooledBody>, ProxyError> {
        let Some(dpop) = provider.dpop() else {
            return self.send(headers.clone(), body).await;
        };
        let origin = self.route.origin();
        let htu = format!("{origin}{}", self.uri.path());
        let prove = |headers: &mut HeaderMap| {
            if let Some(proof) = provider.dpop_proof(token, self.method.as_str(), origin, &htu) {
                headers.insert(DPOP, proof);
            }
        };
        prove(headers);
        let response = self.send(headers.clone(), body).await?;
        let new_nonce = dpop.note_nonce(origin, response.headers());
        let retry = response.status() == StatusCode::UNAUTHORIZED
            && new_nonce
            && asks_for_nonce(response.headers().get_all(WWW_AUTHENTICATE));
        let Some(again) = again.filter(|_| retry) else {
            return Ok(response);
        };
        tracing::debug!(
            provider = provider.name(),
            "upstream asked for a DPoP nonce; sending again with it"
        );
        drain(response).await;
        prove(headers);
        let response = self
            .send(headers.clone(), OutBody::Buffered(again.again()))
            .await?;
        dpop.note_nonce(origin, response.headers());
        Ok(response)
    }
}

/// Reads a small 401 body so the upstream connection can be reused; gives
/// up quietly on a large or slow one (the connection is then dropped).
pub(super) async fn drain(response: Response<PooledBody>) {
    let body = http_body_util::Limited::new(response.into_body(), 64 * 1024);
    let _ = tokio::time::timeout(Duration::from_secs(2), body.collect()).await;
}
