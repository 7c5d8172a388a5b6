//! Body types: request bodies read in full before sending ([`Buffered`],
//! in [`super::buffer`]) or streamed with a signal at their end
//! ([`SignalOnEnd`]), request and upstream response bodies with a stall
//! limit ([`IdleTimeout`]), and the body of every answer we give
//! ([`ResponseBody`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::IntoResponse;
use bytes::Bytes;
use http::Response;
use http_body::{Frame, SizeHint};
use tokio::sync::oneshot;

pub use super::buffer::Buffered;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A JSON answer made by the proxy (errors and local endpoints alike):
/// `Content-Type: application/json`, the body one line ending in a
/// newline, so that `curl` output and line-based tools end cleanly.
pub fn json(status: http::StatusCode, value: &serde_json::Value) -> axum::response::Response {
    let mut body = value.to_string().into_bytes();
    body.push(b'\n');
    (
        status,
        [(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// A response body: streamed from an upstream (`U`, behind its stall
/// limit), or made here.
pub enum ResponseBody<U> {
    Upstream(IdleTimeout<U>),
    Local(Body),
}

impl<U> From<Body> for ResponseBody<U> {
    fn from(b: Body) -> Self {
        ResponseBody::Local(b)
    }
}

impl<U> http_body::Body for ResponseBody<U>
where
    U: http_body::Body<Data = Bytes> + Unpin,
    U::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ResponseBody::Upstream(b) => Pin::new(b).poll_frame(cx),
            ResponseBody::Local(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Upstream(b) => b.is_end_stream(),
            ResponseBody::Local(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Upstream(b) => b.size_hint(),
            ResponseBody::Local(b) => b.size_hint(),
        }
    }
}

/// Turns one of our own answers (errors, local endpoints) into a response.
pub fn local<U>(r: impl IntoResponse) -> Response<ResponseBody<U>> {
    r.into_response().map(ResponseBody::Local)
}

/// Whether a failure was a [`http_body_util::Limited`] body tripping its
/// limit (anywhere in the error's cause chain).
pub fn is_body_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// A request body that says when it has been sent in full, so the
/// upstream's time to answer is measured from then: a slow upload to a
/// healthy upstream is not a timeout.
pub struct SignalOnEnd {
    inner: Body,
    done: Option<oneshot::Sender<()>>,
}

impl SignalOnEnd {
    /// Wraps `body`; the receiver resolves when the body ended, failed, or
    /// was dropped (the client library gave up on it).
    pub fn new(body: Body) -> (SignalOnEnd, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        (
            SignalOnEnd {
                inner: body,
                done: Some(tx),
            },
            rx,
        )
    }

    fn signal(&mut self) {
        if let Some(tx) = self.done.take() {
            let _ = tx.send(());
        }
    }
}

impl http_body::Body for SignalOnEnd {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.signal(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.signal(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A body that fails when it pauses longer than `idle`: an upstream
/// response that never ends must not hold a connection forever
/// (`server.upstream_idle_timeout`), nor a client's request body that
/// stops (`server.body_read_timeout`). Only time spent waiting for the
/// body's sender counts, not time its reader (a slow client, a busy
/// upstream) takes to ask for more.
///
/// One timer per body, armed at the first wait and moved only when it
/// fires, so a streaming body does not touch the timer wheel per chunk.
pub struct IdleTimeout<B> {
    inner: B,
    idle: std::time::Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Since when we have been waiting on the sender (the clock runs);
    /// `None` while the reader has the data.
    waiting_since: Option<tokio::time::Instant>,
    /// A client's request body (else an upstream's response body).
    request: bool,
    /// Counts the data bytes that went through (the access log's
    /// `bytes_in`), where asked for.
    counter: Option<Arc<AtomicU64>>,
}

#[derive(Debug, thiserror::Error)]
#[error("upstream response body stalled for more than {0:.1}s")]
pub struct BodyStalled(f64);

/// A client's request body paused for longer than `body_read_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("request body paused for more than {0:.1}s (server.body_read_timeout)")]
pub struct RequestBodyStalled(f64);

/// The seconds of `server.body_read_timeout`, if a failure was a client's
/// request body pausing that long (anywhere in the error's cause chain).
pub fn body_timed_out(e: &(dyn std::error::Error + 'static)) -> Option<f64> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(stalled) = err.downcast_ref::<RequestBodyStalled>() {
            return Some(stalled.0);
        }
        cur = err.source();
    }
    None
}

impl<B> IdleTimeout<B> {
    /// An upstream's response body.
    pub fn new(inner: B, idle: std::time::Duration) -> Self {
        IdleTimeout {
            inner,
            idle,
            timer: None,
            waiting_since: None,
            request: false,
            counter: None,
        }
    }

    /// A client's request body.
    pub fn request(inner: B, idle: std::time::Duration) -> Self {
        IdleTimeout {
            request: true,
            ..Self::new(inner, idle)
        }
    }

    /// Adds the length of every data frame to `counter`.
    pub fn counting(mut self, counter: Arc<AtomicU64>) -> Self {
        self.counter = Some(counter);
        self
    }
}

impl<B> http_body::Body for IdleTimeout<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting_since = None;
                if let (Some(counter), Some(Ok(f))) = (&this.counter, &frame) {
                    if let Some(data) = f.data_ref() {
                        counter.fetch_add(data.len() as u64, Ordering::Relaxed);
                    }
                }
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let now = tokio::time::Instant::now();
                // The stall clock starts when we begin waiting on the sender,
                // not when the reader last read.
                let since = *this.waiting_since.get_or_insert(now);
                let deadline = since + this.idle;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                loop {
                    match timer.as_mut().poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(()) if tokio::time::Instant::now() >= deadline => {
                            let seconds = this.idle.as_secs_f64();
                            return Poll::Ready(Some(Err(if this.request {
                                Box::new(RequestBodyStalled(seconds))
                            } else {
                                Box::new(BodyStalled(seconds))
                            })));
                        }
                        // Fired for an older wait: move it, poll again to register.
                        Poll::Ready(()) => timer.as_mut().reset(deadline),
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
