//! A request body that says when it has been sent in full, so the
//! upstream's time to answer is measured from then: a slow upload to a
//! healthy upstream is not a timeout.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::sync::oneshot;

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
