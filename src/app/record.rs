//! The access-log record of one request, written when the request is over:
//! when its answer's body is dropped (sent in full, or cut), or, if no
//! answer was ever made, when the request's future is dropped because the
//! client went away (status 499).
//!
//! [`Record`] is made when the request arrives and lives in the request's
//! future; the answer's body ([`Logged`]) takes it over and counts the
//! bytes it hands to the connection. Nothing is copied: the counts are
//! the lengths of the frames going by.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, Uri};
use http_body::{Frame, SizeHint};

use super::runtime::Runtime;
use crate::http::body::BoxError;
use crate::telemetry::{self, AccessInfo, Outcome, RequestLine};

/// What the log line of one request needs.
pub struct Record {
    pub(super) runtime: Arc<Runtime>,
    method: Method,
    /// Shares its bytes with the request's.
    uri: Uri,
    started: Instant,
    pub(super) request_id: HeaderValue,
    client: SocketAddr,
    pub(super) info: AccessInfo,
    /// The request came with a body (not known to be empty from its head).
    pub(super) request_body: bool,
    /// How the answer went, once there is one.
    answer: Option<Answer>,
}

struct Answer {
    status: StatusCode,
    bytes_out: u64,
    /// The body reached its end (or has none by definition).
    ended: bool,
    /// The body failed on the upstream's side.
    upstream_failed: bool,
}

impl Record {
    /// Boxed: the record travels with the request's future and then with
    /// its answer, which hyper and the layers above move by value several
    /// times per request; a box moves as one pointer. (Unboxed, its 336
    /// bytes made each move of the answer twice as long.)
    pub fn new(
        runtime: Arc<Runtime>,
        method: Method,
        uri: Uri,
        request_id: HeaderValue,
        client: SocketAddr,
        started: Instant,
    ) -> Box<Record> {
        Box::new(Record {
            runtime,
            method,
            uri,
            started,
            request_id,
            client,
            info: AccessInfo::default(),
            request_body: false,
            answer: None,
        })
    }
}

impl Drop for Record {
    fn drop(&mut self) {
        let outcome = match &self.answer {
            None => Outcome {
                status: 499,
                bytes_out: 0,
                aborted: None,
            },
            Some(a) => Outcome {
                status: a.status.as_u16(),
                bytes_out: a.bytes_out,
                aborted: match (a.ended, a.upstream_failed) {
                    (true, _) => None,
                    (false, true) => Some("upstream"),
                    (false, false) => Some("client"),
                },
            },
        };
        let route = self
            .info
            .route
            .as_ref()
            .map(|r| self.runtime.route_metrics(r.index));
        telemetry::record_request(
            &self.runtime.metrics,
            route,
            &RequestLine {
                method: &self.method,
                // A CONNECT's target is its authority (there is no path).
                path: match (&self.method, self.uri.authority()) {
                    (&Method::CONNECT, Some(a)) => a.as_str(),
                    _ => self.uri.path(),
                },
                request_id: &self.request_id,
                client: self.client,
            },
            &self.info,
            &outcome,
            self.started,
        );
    }
}

/// An answer's body that counts what it hands on and writes its request's
/// log line when dropped.
pub struct Logged<B> {
    body: B,
    record: Box<Record>,
}

impl<B: http_body::Body> Logged<B> {
    /// `record` is answered with `status`; a body that is empty already,
    /// or that has none by definition (an answer to `HEAD`, `1xx`, `204`,
    /// `304`), counts as ended.
    pub fn new(body: B, mut record: Box<Record>, status: StatusCode) -> Logged<B> {
        let no_body = record.method == Method::HEAD
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        record.answer = Some(Answer {
            status,
            bytes_out: 0,
            ended: no_body || body.is_end_stream(),
            upstream_failed: false,
        });
        Logged { body, record }
    }
}

impl<B> http_body::Body for Logged<B>
where
    B: http_body::Body<Data = Bytes, Error = BoxError> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let (Poll::Ready(frame), Some(answer)) = (&polled, this.record.answer.as_mut()) {
            match frame {
                Some(Ok(f)) => {
                    if let Some(data) = f.data_ref() {
                        answer.bytes_out += data.len() as u64;
                    } else if let Some(code) = f.trailers_ref().and_then(telemetry::grpc_status) {
                        this.record.info.grpc_status = Some(code);
                    }
                    answer.ended |= this.body.is_end_stream();
                }
                Some(Err(_)) => answer.upstream_failed = true,
                None => answer.ended = true,
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
