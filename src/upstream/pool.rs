//! Keep-alive connections to one upstream origin.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use futures_util::FutureExt;
use http::{Request, Response, StatusCode, Uri};
use hyper::client::conn::http1::SendRequest;
use hyper_rustls::HttpsConnector;
use tokio::sync::oneshot;
use tower::ServiceExt;

use super::egress::{AbsoluteForm, Dialer};
use super::UpstreamError;

mod body;
pub(super) mod h2;

pub use body::PooledBody;

/// Idle connections kept per pool (at most its limit); more are closed.
const MAX_IDLE: usize = 256;
/// An idle connection older than this is closed rather than reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest read from an upstream connection, and the largest
/// response head it may send (Envoy's default limit is 60 KiB; hyper's
/// own is its largest read, 408 KiB, and inexact: a head that comes in
/// one read is not measured).
///
/// hyper doubles its read size while reads fill it, up to 408 KiB by
/// default, and a connection keeps its buffer while it idles in the pool.
/// With 64 KiB answers the reads settled at 128 KiB: at 64 connections,
/// 8.6 of 16.7 MB of heap at the peak (massif), and a peak RSS of 32-35
/// MiB against nginx's 21. At 80 KiB, a 64 KiB body and its head still
/// come in one read (the same 40.8k instructions and 2 writes per
/// request) and the peak is 27-28 MiB; at 64 KiB the body is split in two,
/// 46.3k instructions and 3 writes.
const MAX_READ: usize = 80 * 1024;

/// Keep-alive connections to one upstream origin, at most `limit` of them
/// (idle, busy and being made; `routes[].max_upstream_connections`).
/// A request that finds none idle and the limit reached waits for one:
/// a connection given back goes to the oldest waiter, and so does the
/// room left by one that closed.
pub struct Pool {
    connector: HttpsConnector<Dialer>,
    /// `scheme://host:port`: what the connector dials.
    origin: Uri,
    /// An http upstream reached through the egress proxy.
    absolute_form: Option<AbsoluteForm>,
    /// Upstreams that may speak HTTP/2 (`routes[].http2`).
    h2: Option<h2::H2>,
    shared: Arc<Shared>,
}

struct Shared {
    limit: usize,
    state: Mutex<State>,
}

struct State {
    /// Most recently used last: reused first, so surplus connections age
    /// out at the front.
    idle: VecDeque<Idle>,
    /// Connections that exist or are being made: each holds a [`Slot`].
    open: usize,
    /// Requests waiting for a connection, oldest first.
    waiters: VecDeque<oneshot::Sender<Grant>>,
}

struct Idle {
    conn: Conn,
    since: Instant,
}

/// What a waiting request is handed: a connection to use, or the room to
/// make one.
enum Grant {
    Conn(Conn),
    Slot(Slot),
}

/// One of a pool's `limit` connections. It lives in the connection's
/// socket ([`Counted`]), so it is given back when the socket closes, also
/// after an upgrade handed the socket to a tunnel; then it goes to the
/// oldest waiter, else the count goes down.
struct Slot {
    /// Weak: idle connections live in the pool's state, and would keep it
    /// alive (with their sockets) after a reload dropped the pool.
    shared: Weak<Shared>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.upgrade() {
            shared.give(Grant::Slot(Slot {
                shared: Arc::downgrade(&shared),
            }));
        }
    }
}

impl Slot {
    /// Ends this guard without giving the slot back (it was handed on, or
    /// counted down, by the caller).
    fn forget(mut self) {
        self.shared = Weak::new();
    }
}

/// One keep-alive connection and its answer timer. The timer lives as
/// long as the connection: moving an armed timer's deadline later is an
/// atomic store, while a new timer per request costs a registration in
/// the timer wheel and a removal.
struct Conn {
    sender: SendRequest<Body>,
    timer: Pin<Box<tokio::time::Sleep>>,
}

/// Where a request gets its connection.
enum Checkout {
    Idle(Conn),
    /// No idle one, and room for one more: make it.
    Connect(Slot),
    /// The limit is reached: wait to be handed one.
    Wait(oneshot::Receiver<Grant>),
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn checkout(self: &Arc<Self>, now: Instant) -> Checkout {
        // Closed by the upstream or too old: dropped after the lock is
        // released (a connection's socket gives its slot back, and that
        // takes the lock).
        let mut stale = Vec::new();
        let mut state = self.lock();
        let found = loop {
            match state.idle.pop_back() {
                None => break None,
                Some(c)
                    if !c.conn.sender.is_closed()
                        && now.saturating_duration_since(c.since) < IDLE_TIMEOUT =>
                {
                    break Some(c.conn)
                }
                Some(c) => stale.push(c),
            }
        };
        let out = match found {
            Some(conn) => Checkout::Idle(conn),
            None if state.open < self.limit => {
                state.open += 1;
                Checkout::Connect(Slot {
                    shared: Arc::downgrade(self),
                })
            }
            None => {
                let (tx, rx) = oneshot::channel();
                // Waiters that gave up (timed out) are dropped here, so the
                // queue does not grow while the limit stays reached.
                if state.waiters.len() >= 16 {
                    state.waiters.retain(|w| !w.is_closed());
                }
                state.waiters.push_back(tx);
                Checkout::Wait(rx)
            }
        };
        drop(state);
        drop(stale);
        out
    }

    /// A connection coming back, or the room a closed one left: to the
    /// oldest waiter that still waits, else to the idle list or the count.
    fn give(&self, mut grant: Grant) {
        let max_idle = MAX_IDLE.min(self.limit);
        loop {
            let waiter = {
                let mut state = self.lock();
                match state.waiters.pop_front() {
                    Some(w) => w,
                    None => {
                        match grant {
                            Grant::Conn(conn) if state.idle.len() < max_idle => {
                                state.idle.push_back(Idle {
                                    conn,
                                    since: Instant::now(),
                                });
                            }
                            // Dropped: its socket closes and gives the slot
                            // back (without this lock held).
                            Grant::Conn(conn) => {
                                drop(state);
                                drop(conn);
                            }
                            Grant::Slot(slot) => {
                                state.open -= 1;
                                slot.forget();
                            }
                        }
                        return;
                    }
                }
            };
            match waiter.send(grant) {
                Ok(()) => return,
                // That one gave up: the next.
                Err(back) => grant = back,
            }
        }
    }
}

impl Pool {
    pub(super) fn new(
        connector: HttpsConnector<Dialer>,
        origin: Uri,
        absolute_form: Option<AbsoluteForm>,
        h2: Option<h2::H2>,
        limit: usize,
    ) -> Pool {
        Pool {
            connector,
            origin,
            absolute_form,
            h2,
            shared: Arc::new(Shared {
                limit: limit.max(1),
                state: Mutex::new(State {
                    idle: VecDeque::new(),
                    open: 0,
                    waiters: VecDeque::new(),
                }),
            }),
        }
    }

    /// Sends `req` (its URI in origin form) on a pooled connection, or a new
    /// one. A pooled connection that turns out to be closed before the
    /// request was written is dropped and the request tried on another.
    ///
    /// The upstream gets `timeout` to connect and answer with a response
    /// head, the wait for a connection (at the pool's limit) included;
    /// with `body_sent` given, the answer's clock starts once the request
    /// body has been sent (a slow upload is not a slow upstream). Not an
    /// `async fn`, so that the future holds `req` once ("Future sizes").
    pub fn send(
        self: &Arc<Self>,
        mut req: Request<Body>,
        timeout: Duration,
        mut body_sent: Option<oneshot::Receiver<()>>,
    ) -> impl std::future::Future<Output = Result<Response<PooledBody>, UpstreamError>> + '_ {
        // A request that says `Connection: close` is the last on its
        // connection (RFC 9112 §9.6), whatever the upstream answers: the
        // forwarder sends it after a body the upstream may have misread
        // (CL.0), and whatever else arrives on that connection is no answer
        // to anyone's next request.
        let close_after = says_close(req.headers());
        if let Some(form) = &self.absolute_form {
            form.apply(&mut req);
        }
        let now = tokio::time::Instant::now();
        let mut deadline = now + timeout;
        async move {
            if let Some(h2) = self.h2.as_ref().filter(|h2| !h2.speaks_h1()) {
                // Boxed: only HTTP/2 routes carry its state.
                match Box::pin(self.send_h2(h2, req, timeout, &mut body_sent, deadline)).await {
                    h2::Sent::Done(answer) => return answer,
                    h2::Sent::UseH1(back) => req = back,
                }
            }
            loop {
                let (mut conn, reused) = match self.shared.checkout(now.into_std()) {
                    Checkout::Idle(c) => (c, true),
                    Checkout::Connect(slot) => (self.connect_by(slot, deadline).await?, false),
                    // Boxed: waiting is rare, and its state would size every
                    // request's future.
                    Checkout::Wait(rx) => {
                        match Box::pin(tokio::time::timeout_at(deadline, rx)).await {
                            Ok(Ok(Grant::Conn(c))) => (c, true),
                            Ok(Ok(Grant::Slot(slot))) => {
                                (self.connect_by(slot, deadline).await?, false)
                            }
                            // Timed out (a grant sent meanwhile is dropped with the
                            // channel, and passed on); or the pool is gone.
                            Ok(Err(_)) | Err(_) => return Err(UpstreamError::Timeout),
                        }
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
                        let refused = self.absolute_form.as_ref();
                        if let Some(e) = refused.and_then(|f| f.refused(response.status())) {
                            return Err(UpstreamError::Connect(e.into()));
                        }
                        // After a protocol switch the connection is no longer HTTP.
                        let reusable =
                            response.status() != StatusCode::SWITCHING_PROTOCOLS && !close_after;
                        let owner = reusable.then(|| (conn, self.clone()));
                        return Ok(response.map(|inner| PooledBody {
                            inner,
                            owner,
                            _stream: None,
                        }));
                    }
                    Err(mut e) => match e.take_message() {
                        // Never written: safe to send again on another connection.
                        Some(unsent) if reused => req = unsent,
                        _ => return Err(UpstreamError::Http(e.into_error())),
                    },
                }
            }
        }
    }

    fn put_back(&self, conn: Conn) {
        if conn.sender.is_closed() {
            return;
        }
        self.shared.give(Grant::Conn(conn));
    }

    /// Makes a new connection in `slot` by `deadline`. Boxed: connecting
    /// (DNS, TCP, TLS, handshake) is rare and its state large; unboxed it
    /// would size every request's future.
    async fn connect_by(
        &self,
        slot: Slot,
        deadline: tokio::time::Instant,
    ) -> Result<Conn, UpstreamError> {
        Box::pin(tokio::time::timeout_at(deadline, self.connect(slot)))
            .await
            .map_err(|_| UpstreamError::Timeout)?
    }

    async fn connect(&self, slot: Slot) -> Result<Conn, UpstreamError> {
        let io = self
            .connector
            .clone()
            .oneshot(self.origin.clone())
            .await
            .map_err(UpstreamError::Connect)?;
        Pool::handshake_h1(Counted { io, _slot: slot }).await
    }

    async fn handshake_h1(io: Counted<Io>) -> Result<Conn, UpstreamError> {
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .max_buf_size(MAX_READ)
            .max_header_size(MAX_READ)
            .handshake(io)
            .await?;
        // `map`: an `async move` block would hold the 2.4 KB future twice.
        tokio::spawn(conn.with_upgrades().map(|ended| {
            if let Err(e) = ended {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        }));
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

/// An upstream socket, plain or TLS, direct or through the egress proxy.
type Io = hyper_rustls::MaybeHttpsStream<hyper_util::rt::TokioIo<tokio::net::TcpStream>>;

/// An upstream socket that holds one of its pool's slots while it is open.
struct Counted<T> {
    io: T,
    _slot: Slot,
}

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for Counted<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for Counted<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
