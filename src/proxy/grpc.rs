//! gRPC through the proxy (`content-type: application/grpc…`): `te:
//! trailers` forwarded, `grpc-timeout` bounding the wait for the answer,
//! and on oauth2 routes `grpc-status: 16` (UNAUTHENTICATED) taken as a
//! `401`: one renewal, and one replay of a call whose request was read to
//! its end within `server.max_replay_body` by the time the answer came.
//!
//! The request body streams (a bidirectional call may wait for answers
//! before it sends more): what passes is copied aside up to the replay
//! limit, rather than read in full first as [`super::outbody::prepare_body`]
//! does. A unary call's request has passed in full by the time its server
//! answers, so it is the one that gets replayed.
//!
//! A trailers-only answer (the status in the response head, no body) is
//! seen before anything goes to the client, and replayed. A status in
//! trailers after a response head is seen when the body ends, after the
//! head went out: then the token is renewed for the next call.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::Response;
use http_body::{Frame, SizeHint};

use super::forward::{set_latency, Forward};
use super::outbody::{NotKept, OutBody};
use super::ProxyResponse;
use crate::credentials::oauth2::TokenState;
use crate::credentials::{OAuthProvider, Trigger};
use crate::error::ProxyError;
use crate::http::body::{BoxError, ResponseBody};
use crate::http::headers::GRPC_STATUS;
use crate::telemetry::metrics::ProviderLabels;
use crate::telemetry::AccessInfo;
use crate::upstream::PooledBody;

const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
const UNAUTHENTICATED: &[u8] = b"16";

/// Whether the client asked for `TE: trailers` (which hop-by-hop
/// stripping removes; gRPC needs it forwarded).
pub fn wants_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .any(|t| {
            let t = t.split(|b| *b == b';').next().unwrap_or_default();
            t.trim_ascii().eq_ignore_ascii_case(b"trailers")
        })
}

pub(super) fn put_te_trailers(headers: &mut HeaderMap) {
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
}

/// The call's deadline from `grpc-timeout` (gRPC over HTTP/2: 1 to 8
/// digits and a unit, H M S m u n), if it has a valid one.
pub fn timeout(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(GRPC_TIMEOUT)?.as_bytes();
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b"H" => Duration::from_secs(n * 3600),
        b"M" => Duration::from_secs(n * 60),
        b"S" => Duration::from_secs(n),
        b"m" => Duration::from_millis(n),
        b"u" => Duration::from_micros(n),
        b"n" => Duration::from_nanos(n),
        _ => return None,
    })
}

fn says_unauthenticated(headers: &HeaderMap) -> bool {
    headers
        .get(GRPC_STATUS)
        .is_some_and(|v| v.as_bytes().trim_ascii() == UNAUTHENTICATED)
}

/// The request body as it streams to the upstream, copied aside while it
/// fits the replay limit.
struct Tee {
    body: Body,
    kept: Arc<Mutex<Kept>>,
    limit: u64,
}

#[derive(Default)]
struct Kept {
    chunks: Vec<Bytes>,
    len: u64,
    /// The body ended with everything in `chunks`.
    complete: bool,
    /// Larger than the limit, or failed: not replayable.
    lost: bool,
}

impl Kept {
    fn body(&self) -> Option<Bytes> {
        if !self.complete || self.lost {
            return None;
        }
        let mut all = Vec::with_capacity(self.len as usize);
        for c in &self.chunks {
            all.extend_from_slice(c);
        }
        Some(Bytes::from(all))
    }
}

impl http_body::Body for Tee {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(frame) = &polled {
            let mut kept = this.kept.lock().unwrap_or_else(|e| e.into_inner());
            match frame {
                Some(Ok(f)) => match f.data_ref() {
                    Some(data) if !kept.lost => {
                        kept.len += data.len() as u64;
                        if kept.len > this.limit {
                            kept.lost = true;
                            kept.chunks = Vec::new();
                        } else {
                            kept.chunks.push(data.clone());
                        }
                    }
                    Some(_) => {}
                    // Request trailers are not replayed.
                    None => kept.lost = true,
                },
                Some(Err(_)) => kept.lost = true,
                None => kept.complete = true,
            }
            if this.body.is_end_stream() {
                kept.complete = true;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// An answer's body that renews the token once when its trailers say
/// UNAUTHENTICATED.
struct WatchTrailers {
    body: ResponseBody<PooledBody>,
    renew: Option<Box<dyn FnOnce() + Send>>,
}

impl http_body::Body for WatchTrailers {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &polled {
            if f.trailers_ref().is_some_and(says_unauthenticated) {
                if let Some(renew) = this.renew.take() {
                    renew();
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Forward<'_> {
    /// An oauth2 route's gRPC call: token injected, UNAUTHENTICATED taken
    /// as a `401` (see the module's doc).
    pub(super) async fn send_grpc_oauth(
        self,
        provider: &Arc<OAuthProvider>,
        mut headers: HeaderMap,
        body: Body,
        info: &mut AccessInfo,
    ) -> Result<ProxyResponse, ProxyError> {
        let token = super::replay::current_token(provider, &mut headers, info).await?;
        let kept = Arc::new(Mutex::new(Kept::default()));
        let body = Body::new(Tee {
            body,
            kept: kept.clone(),
            limit: self.fwd.config.server.max_replay_body,
        });
        let started = Instant::now();
        let response = self
            .send_proved(
                provider,
                &token,
                &mut headers,
                OutBody::Stream(body, NotKept::TooLarge),
                None,
            )
            .await?;
        set_latency(info, started);
        if !says_unauthenticated(response.headers()) {
            return Ok(self.finish_watched(provider, &token, response));
        }
        let Some(trigger) = grpc_trigger(provider, &token) else {
            return Ok(self.finish(response));
        };
        tracing::info!(
            provider = provider.name(),
            "upstream answered grpc-status 16 (UNAUTHENTICATED); renewing the credential"
        );
        info.renewal = Some(trigger.as_str());
        let again = kept.lock().unwrap_or_else(|e| e.into_inner()).body();
        let Some(again) = again else {
            if let Err(e) = provider.renew_after_401(token.generation, trigger).await {
                tracing::warn!(provider = provider.name(), error = %e, "renewal after UNAUTHENTICATED failed");
            }
            tracing::info!(
                provider = provider.name(),
                "the call's request was not read to its end within server.max_replay_body when the answer came (a streaming call, or a larger one); returning UNAUTHENTICATED"
            );
            return Ok(self.finish(response));
        };
        super::replay::drain(response).await;
        let renewed = super::replay::renewed_token(provider, &token, trigger, &mut headers).await?;
        let started = Instant::now();
        let response = self
            .send_proved(
                provider,
                &renewed,
                &mut headers,
                OutBody::Stream(Body::from(again), NotKept::TooLarge),
                None,
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
        let response = response?;
        if says_unauthenticated(response.headers()) {
            renewed.note_not_cured();
        } else {
            renewed.note_accepted();
        }
        Ok(self.finish(response))
    }

    /// [`Forward::finish`], renewing the token if the trailers say
    /// UNAUTHENTICATED.
    fn finish_watched(
        self,
        provider: &Arc<OAuthProvider>,
        token: &Arc<TokenState>,
        response: Response<PooledBody>,
    ) -> ProxyResponse {
        let (provider, token) = (provider.clone(), token.clone());
        let renew = move || {
            let Some(trigger) = grpc_trigger(&provider, &token) else {
                return;
            };
            tracing::info!(
                provider = provider.name(),
                "upstream trailers say grpc-status 16 (UNAUTHENTICATED); renewing the credential for the next call"
            );
            tokio::spawn(async move {
                if let Err(e) = provider.renew_after_401(token.generation, trigger).await {
                    tracing::warn!(provider = provider.name(), error = %e, "renewal after UNAUTHENTICATED failed");
                }
            });
        };
        self.finish(response).map(|body| {
            ResponseBody::Local(Body::new(WatchTrailers {
                body,
                renew: Some(Box::new(renew)),
            }))
        })
    }
}

/// What renewal UNAUTHENTICATED calls for: a plain `401`'s, under the same
/// rules (`refresh_on_401`, and not again for a token a renewal after one
/// did not help).
fn grpc_trigger(provider: &OAuthProvider, token: &TokenState) -> Option<Trigger> {
    if !provider.config().refresh_on_401 || !token.renews_on_plain_401() {
        return None;
    }
    Some(Trigger::Unauthorized)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(name: HeaderName, value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_static(value));
        h
    }

    #[test]
    fn grpc_timeout_units() {
        let t = |v| timeout(&with(GRPC_TIMEOUT, v));
        assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(t("2M"), Some(Duration::from_secs(120)));
        assert_eq!(t("3S"), Some(Duration::from_secs(3)));
        assert_eq!(t("250m"), Some(Duration::from_millis(250)));
        assert_eq!(t("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(t("5n"), Some(Duration::from_nanos(5)));
        for bad in ["", "S", "123456789S", "1s", "-1S", "1.5S"] {
            assert_eq!(t(bad), None, "{bad}");
        }
    }

    #[test]
    fn te_trailers_is_found_among_others() {
        assert!(wants_trailers(&with(header::TE, "trailers")));
        assert!(wants_trailers(&with(header::TE, "gzip, Trailers;q=1")));
        assert!(!wants_trailers(&with(header::TE, "gzip")));
        assert!(!wants_trailers(&HeaderMap::new()));
    }
}
