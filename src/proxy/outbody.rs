//! A request body on its way out: kept in a replay buffer (read in full
//! first, so it can be sent again, and sent with its head in one write)
//! or streamed once, and why it was not kept.

use std::sync::Arc;

use axum::body::Body;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use http::header::{self, HeaderMap};
use http_body::Body as _;
use http_body_util::BodyExt;

use crate::error::ProxyError;
use crate::http::body::{body_timed_out, is_body_limit, BoxError, Buffered};
use crate::http::buffer::{BufferBudget, BufferWriter, Refused};

/// A request body that can be sent again (kept in a buffer) or only once.
pub(super) enum OutBody {
    Buffered(Buffered),
    Stream(Body, NotKept),
}

/// Why a request body streams rather than being kept for a replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NotKept {
    /// Over `server.max_replay_body` (or the buffering limit of its route).
    TooLarge,
    /// All replay buffers together hold `server.max_buffered_bytes`.
    BudgetInUse,
}

impl NotKept {
    pub(super) fn reason(self) -> &'static str {
        match self {
            NotKept::TooLarge => "it is larger than server.max_replay_body",
            NotKept::BudgetInUse => {
                "the replay buffers of other requests hold server.max_buffered_bytes"
            }
        }
    }
}

/// The request's `Content-Length`, if it has a valid one.
pub(super) fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Buffers a body up to `limit` bytes so it can be replayed; a larger one
/// (by its `declared` length, or found while reading), or one the buffer
/// budget has no room for, streams on unbuffered.
pub(super) async fn prepare_body(
    body: Body,
    declared: Option<u64>,
    limit: u64,
    max_body: Option<u64>,
    budget: &Arc<BufferBudget>,
) -> Result<OutBody, ProxyError> {
    prepare_body_hashed(body, declared, limit, max_body, budget, None).await
}

/// As [`prepare_body`], feeding every byte kept to `digest` on the way
/// (the body's hash for an AWS signature, without reading it twice).
pub(super) async fn prepare_body_hashed(
    body: Body,
    declared: Option<u64>,
    limit: u64,
    max_body: Option<u64>,
    budget: &Arc<BufferBudget>,
    mut digest: Option<&mut ring::digest::Context>,
) -> Result<OutBody, ProxyError> {
    if body.is_end_stream() {
        return Ok(OutBody::Buffered(Buffered::default()));
    }
    if declared.is_some_and(|n| n > limit) {
        return Ok(OutBody::Stream(body, NotKept::TooLarge));
    }
    let Some(mut buf) = budget.writer(declared) else {
        tracing::debug!("request body not kept for a replay: server.max_buffered_bytes is in use");
        return Ok(OutBody::Stream(body, NotKept::BudgetInUse));
    };
    let mut body = body;
    loop {
        match body.frame().await {
            None => break,
            Some(Err(e)) if is_body_limit(&e) => {
                return Err(ProxyError::PayloadTooLarge {
                    limit: max_body.unwrap_or(0),
                })
            }
            Some(Err(e)) => {
                return Err(match body_timed_out(&e) {
                    Some(seconds) => ProxyError::RequestTimeout { seconds },
                    None => ProxyError::BadRequest(format!("reading the request body failed: {e}")),
                })
            }
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    if buf.len() + data.len() as u64 > limit {
                        // Too big to keep: send what we have, then the rest.
                        return Ok(stream_rest(buf, data, body, NotKept::TooLarge));
                    }
                    if let Some(d) = digest.as_deref_mut() {
                        d.update(&data);
                    }
                    if let Err(Refused(data)) = buf.push(data).await {
                        tracing::debug!(
                            "request body not kept for a replay: server.max_buffered_bytes is in use"
                        );
                        return Ok(stream_rest(buf, data, body, NotKept::BudgetInUse));
                    }
                }
            }
        }
    }
    Ok(OutBody::Buffered(buf.finish()))
}

/// What was buffered, then `next`, then the rest of `body`, sent once.
fn stream_rest(buf: BufferWriter, next: Bytes, body: Body, why: NotKept) -> OutBody {
    let kept = buf.finish().into_data_stream().map_err(BoxError::from);
    let next = futures_util::stream::once(std::future::ready(Ok::<_, BoxError>(next)));
    let rest = TryStreamExt::map_err(body.into_data_stream(), BoxError::from);
    OutBody::Stream(Body::from_stream(kept.chain(next).chain(rest)), why)
}
