//! Keep-alive connections to one upstream origin, and the response body
//! that gives its connection back.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use futures_util::FutureExt;
use http::{Request, Response, StatusCode, Uri};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::sync::oneshot;
use tower::ServiceExt;

use super::UpstreamError;

/// Idle connections kept per pool; more are closed when they come back.
const MAX_IDLE: usize = 256;
/// An idle connection older than this is closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Keep-alive connections to one upstream origin.
pub struct Pool {
    connector: HttpsConnector<HttpConnector>,
    /// `scheme://host:port`: what the connector dials.
    origin: Uri,
    /// Most recently used last: reused first, so surplus connections age
    /// out at the front.
    idle: Mutex<VecDeque<Idle>>,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// One keep-alive connection and its answer timer. The timer lives as
/// long as the connection: moving an armed timer's deadline later is an
/// atomic store, while a new timer per request costs a registration in
/// the timer wheel and a removal.
struct Conn {
    sender: SendRequest<Body>,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl Pool {
    pub(super) fn new(connector: HttpsConnector<HttpConnector>, origin: Uri) -> Pool {
        Pool {
            connector,
            origin,
            idle: Mutex::new(VecDeque::new()),
        }
    }

    /// Sends `req` (its URI in origin form) on a pooled connection, or a new
    /// one. A pooled connection that turns out to be closed before the
    /// request was written is dropped and the request tried on another.
    ///
    /// The upstream gets `timeout` to connect and answer with a response
    /// head; with `body_sent` given, the answer's clock starts once the
    /// request body has been sent (a slow upload is not a slow upstream).
    pub async fn send(
        self: &Arc<Self>,
        mut req: Request<Body>,
        timeout: Duration,
        mut body_sent: Option<oneshot::Receiver<()>>,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        // A request that says `Connection: close` is the last on its
        // connection (RFC 9112 §9.6), whatever the upstream answers: the
        // forwarder sends it after a body the upstream may have misread
        // (CL.0), and whatever else arrives on that connection is no answer
        // to anyone's next request.
        let close_after = says_close(req.headers());
        let now = tokio::time::Instant::now();
        let mut deadline = now + timeout;
        loop {
            let (mut conn, reused) = match self.checkout(now.into_std()) {
                Some(c) => (c, true),
                // Boxed: connecting (DNS, TCP, TLS, handshake) is rare and its
                // state large; unboxed it would size every request's future.
                None => {
                    let connect = tokio::time::timeout_at(deadline, self.connect());
                    let conn = Box::pin(connect)
                        .await
                        .map_err(|_| UpstreamError::Timeout)??;
                    (conn, false)
                }
            };
            // A reused connection may still be finishing its last response;
            // one the upstream closed fails here.
            let ready = match conn.sender.ready().now_or_never() {
                Some(ready) => ready,
                None => tokio::time::timeout_at(deadline, conn.sender.ready())
                    .await
                    .map_err(|_| UpstreamError::Timeout)?,
            };
            if ready.is_err() && reused {
                continue;
            }
            let answer = conn.sender.try_send_request(req);
            let timer = &mut conn.timer;
            let expired = async {
                if let Some(sent) = body_sent.as_mut() {
                    let _ = sent.await;
                    deadline = tokio::time::Instant::now() + timeout;
                }
                timer.as_mut().reset(deadline);
                timer.as_mut().await;
            };
            let answer = tokio::select! {
                answer = answer => answer,
                () = expired => return Err(UpstreamError::Timeout),
            };
            match answer {
                Ok(response) => {
                    // After a protocol switch the connection is no longer HTTP.
                    let reusable =
                        response.status() != StatusCode::SWITCHING_PROTOCOLS && !close_after;
                    let owner = reusable.then(|| (conn, self.clone()));
                    return Ok(response.map(|inner| PooledBody { inner, owner }));
                }
                Err(mut e) => match e.take_message() {
                    // Never written: safe to send again on another connection.
                    Some(unsent) if reused => req = unsent,
                    _ => return Err(UpstreamError::Http(e.into_error())),
                },
            }
        }
    }

    fn checkout(&self, now: Instant) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(c) = idle.pop_back() {
            if !c.conn.sender.is_closed() && now.saturating_duration_since(c.since) < IDLE_TIMEOUT {
                return Some(c.conn);
            }
        }
        None
    }

    fn put_back(&self, conn: Conn) {
        if conn.sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while idle.front().is_some_and(|c| {
            now.duration_since(c.since) >= IDLE_TIMEOUT || c.conn.sender.is_closed()
        }) {
            idle.pop_front();
        }
        if idle.len() < MAX_IDLE {
            idle.push_back(Idle { conn, since: now });
        }
    }

    async fn connect(&self) -> Result<Conn, UpstreamError> {
        let io = self
            .connector
            .clone()
            .oneshot(self.origin.clone())
            .await
            .map_err(UpstreamError::Connect)?;
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .handshake(io)
            .await?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(Conn {
            sender,
            // Armed (and so registered) only when a request first waits.
            timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
        })
    }
}

fn says_close(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
}

/// An upstream response body that gives its connection back to the pool
/// once read to the end. A body dropped early takes the connection with it
/// (it still has unread bytes).
pub struct PooledBody {
    inner: Incoming,
    owner: Option<(Conn, Arc<Pool>)>,
}

impl PooledBody {
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
