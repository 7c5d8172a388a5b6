//! Body types: request bodies read in full before sending ([`Buffered`])
//! or streamed with a signal at their end ([`SignalOnEnd`]), upstream
//! response bodies with a stall limit ([`IdleTimeout`]), and the body of
//! every answer we give ([`ResponseBody`]).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::IntoResponse;
use bytes::Bytes;
use http::Response;
use http_body::{Frame, SizeHint};
use tokio::sync::oneshot;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

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

/// A request body read in full, kept as the chunks that arrived (no copy
/// into one buffer). Cloning shares the chunks, so the same body can be
/// sent again for a replay.
#[derive(Clone, Default)]
pub struct Buffered {
    chunks: VecDeque<Bytes>,
    len: u64,
}

impl Buffered {
    pub fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.len += chunk.len() as u64;
            self.chunks.push_back(chunk);
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    pub fn into_chunks(self) -> VecDeque<Bytes> {
        self.chunks
    }
}

impl http_body::Body for Buffered {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let chunk = self.chunks.pop_front();
        if let Some(c) = &chunk {
            self.len -= c.len() as u64;
        }
        Poll::Ready(chunk.map(|c| Ok(Frame::data(c))))
    }

    fn is_end_stream(&self) -> bool {
        self.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.len)
    }
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

/// An upstream response body that fails when it pauses longer than
/// `idle`: a response that never ends must not hold a connection forever.
/// Slow clients are fine: time spent waiting for the client to read does
/// not count, only time waiting for the upstream.
///
/// One timer per body, armed at the first wait and moved only when it
/// fires, so a streaming body does not touch the timer wheel per chunk.
pub struct IdleTimeout<B> {
    inner: B,
    idle: std::time::Duration,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Since when we have been waiting on the upstream (the clock runs);
    /// `None` while the client has the data.
    waiting_since: Option<tokio::time::Instant>,
}

#[derive(Debug, thiserror::Error)]
#[error("upstream response body stalled for more than {0:.1}s")]
pub struct BodyStalled(f64);

impl<B> IdleTimeout<B> {
    pub fn new(inner: B, idle: std::time::Duration) -> Self {
        IdleTimeout {
            inner,
            idle,
            timer: None,
            waiting_since: None,
        }
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
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let now = tokio::time::Instant::now();
                // The stall clock starts when we begin waiting on the upstream,
                // not when the client last read.
                let since = *this.waiting_since.get_or_insert(now);
                let deadline = since + this.idle;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                loop {
                    match timer.as_mut().poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(()) if tokio::time::Instant::now() >= deadline => {
                            return Poll::Ready(Some(Err(Box::new(BodyStalled(
                                this.idle.as_secs_f64(),
                            )))));
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

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn buffered_body_yields_its_chunks_in_order_with_an_exact_size() {
        let mut b = Buffered::default();
        b.push(Bytes::from_static(b"ab"));
        b.push(Bytes::new());
        b.push(Bytes::from_static(b"cde"));
        assert_eq!(http_body::Body::size_hint(&b).exact(), Some(5));
        let replay = b.clone();
        let mut first = b;
        let frame = first.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "ab");
        assert_eq!(http_body::Body::size_hint(&first).exact(), Some(3));
        assert!(!http_body::Body::is_end_stream(&first));
        assert_eq!(first.collect().await.unwrap().to_bytes(), "cde");
        assert_eq!(replay.collect().await.unwrap().to_bytes(), "abcde");
        assert!(http_body::Body::is_end_stream(&Buffered::default()));
    }
}
