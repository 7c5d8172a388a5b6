//! The response body that gives its upstream connection back to the pool.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;

use super::{h2, Conn, Pool};

/// An upstream response body that gives its connection back to the pool
/// once read to the end. A body dropped early takes the connection with it
/// (it still has unread bytes).
pub struct PooledBody {
    pub(super) inner: Incoming,
    pub(super) owner: Option<(Conn, Arc<Pool>)>,
    /// An HTTP/2 stream, counted on its shared connection while it lives.
    pub(super) _stream: Option<h2::StreamGuard>,
}

impl PooledBody {
    pub(super) fn h2(inner: Incoming, stream: h2::StreamGuard) -> PooledBody {
        PooledBody {
            inner,
            owner: None,
            _stream: Some(stream),
        }
    }

    fn release(&mut self) {
        if let Some((conn, pool)) = self.owner.take() {
            pool.put_back(conn);
        }
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // Bodies the server never polls (empty ones) end here.
        if http_body::Body::is_end_stream(&self.inner) {
            self.release();
        }
    }
}

impl http_body::Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.release(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.release(),
            Poll::Ready(Some(Err(_))) => self.owner = None,
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
