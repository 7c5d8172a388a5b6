//! aws_sigv4 routes: hash the body while it is buffered (up to
//! `max_replay_body`, through the replay buffers and their budget), sign,
//! send; after a `401`/`403` whose `Date` shows the upstream's clock more
//! than five minutes from the time signed, sign again with its time and
//! replay once.
//!
//! A body that cannot be hashed before the request starts (larger than
//! `max_replay_body`, or every replay buffer in use) goes out as
//! `UNSIGNED-PAYLOAD` when the provider allows it (S3), else the request is
//! refused (`413`, or `503` while the buffers are in use) without
//! contacting the upstream.

use std::time::Instant;

use axum::body::Body;
use http::header::{self, HeaderMap};
use http::StatusCode;

use super::forward::{set_latency, Forward};
use super::outbody::{declared_length, prepare_body_hashed, NotKept, OutBody};
use super::replay::drain;
use super::ProxyResponse;
use crate::credentials::aws_sigv4::{
    self, AwsSigV4, STREAMING_UNSIGNED_TRAILER, UNSIGNED_PAYLOAD, X_AMZ_CONTENT_SHA256,
};
use crate::error::ProxyError;
use crate::telemetry::AccessInfo;

impl Forward<'_> {
    pub(super) async fn send_aws(
        self,
        signer: &AwsSigV4,
        provider: &str,
        mut headers: HeaderMap,
        body: Body,
        info: &mut AccessInfo,
    ) -> Result<ProxyResponse, ProxyError> {
        let server = &self.fwd.config.server;
        let client_hash = headers.get(X_AMZ_CONTENT_SHA256).map(|v| v.as_bytes());
        // The client's own aws-chunked upload with unsigned chunks (current
        // SDKs for S3 PutObject): its framing stays, its value is signed.
        let chunked_unsigned = client_hash == Some(STREAMING_UNSIGNED_TRAILER.as_bytes());
        if client_hash.is_some_and(|h| h.starts_with(b"STREAMING-")) && !chunked_unsigned {
            return Err(ProxyError::BadRequest(format!(
                "x-amz-content-sha256 {}: the body's chunks are signed with the client's own credentials, which the proxy cannot sign again; configure the client for unsigned payloads (e.g. boto3 `payload_signing_enabled = False`, or a plain PUT)",
                String::from_utf8_lossy(client_hash.unwrap_or_default())
            )));
        }
        let mut digest =
            (!chunked_unsigned).then(|| ring::digest::Context::new(&ring::digest::SHA256));
        let body = prepare_body_hashed(
            body,
            declared_length(&headers),
            server.max_replay_body,
            server.max_request_body,
            &self.fwd.buffers,
            digest.as_mut(),
        )
        .await?;
        let (first, replay, payload_hash) = match body {
            OutBody::Buffered(b) => {
                let hash = match digest {
                    Some(d) => aws_sigv4::hex(d.finish().as_ref()),
                    None => STREAMING_UNSIGNED_TRAILER.to_string(),
                };
                (OutBody::Buffered(b.again()), Some(b), hash)
            }
            OutBody::Stream(s, why) => {
                let hash = if chunked_unsigned {
                    STREAMING_UNSIGNED_TRAILER
                } else if signer.unsigned_payload() {
                    UNSIGNED_PAYLOAD
                } else {
                    return Err(match why {
                        NotKept::TooLarge => ProxyError::TooLargeToSign {
                            provider: provider.to_string(),
                            limit: server.max_replay_body,
                        },
                        NotKept::BudgetInUse => ProxyError::Busy {
                            provider: provider.to_string(),
                            detail: "every replay buffer is in use (server.max_buffered_bytes), and this route must read the body in full to sign it; retry shortly, or set unsigned_payload = true on the provider if the service accepts UNSIGNED-PAYLOAD (S3)".into(),
                        },
                    });
                };
                (OutBody::Stream(s, why), None, hash.to_string())
            }
        };

        let method = self.method.as_str();
        let (path, query) = (self.uri.path(), self.uri.query());
        let signed_at = signer.now();
        signer.sign(method, path, query, &mut headers, &payload_hash, signed_at);
        let started = Instant::now();
        let response = self.send(headers.clone(), first).await?;
        set_latency(info, started);
        if !matches!(
            response.status(),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        ) {
            return Ok(self.finish(response));
        }
        let Some(replay) = replay else {
            return Ok(self.finish(response));
        };
        let server_time = response
            .headers()
            .get(header::DATE)
            .and_then(|d| d.to_str().ok())
            .and_then(|d| httpdate::parse_http_date(d).ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs());
        if !server_time.is_some_and(|t| signer.learn_skew(t, signed_at)) {
            // Refused for another reason than the time: a new date would
            // not change the answer.
            return Ok(self.finish(response));
        }
        drain(response).await;
        signer.sign(
            method,
            path,
            query,
            &mut headers,
            &payload_hash,
            signer.now(),
        );
        let started = Instant::now();
        let response = self.send(headers, OutBody::Buffered(replay)).await;
        set_latency(info, started);
        info.replayed = true;
        Ok(self.finish(response?))
    }
}
