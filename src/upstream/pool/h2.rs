//! HTTP/2 connections of a pool: shared by many requests at once (a
//! `SendRequest` per stream is a clone), where HTTP/1.1 gives each request
//! a connection of its own.
//!
//! With `http2 = "auto"` on https the first connection tells, by ALPN,
//! whether the origin speaks HTTP/2; until it is made, other requests wait
//! for it rather than each opening one (64 clients arriving at once would
//! otherwise open 64 connections, each then used for one stream). An
//! origin that chose HTTP/1.1 is remembered and its connection goes to the
//! HTTP/1.1 idle list. With `"always"` every connection is HTTP/2 (h2c
//! prior knowledge on http).
//!
//! Another connection is opened when every one has [`STREAMS_PER_CONN`]
//! requests in flight, up to the pool's limit; past that requests queue
//! on the least busy one (hyper waits for the server's
//! `MAX_CONCURRENT_STREAMS` to leave room).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use http::header::{self, HeaderMap, HeaderName};
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use http_body::Body as _;
use hyper::client::conn::http2::SendRequest;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::Connection as _;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::{oneshot, Notify};
use tower::ServiceExt;

use super::{Checkout, Counted, Grant, Pool, PooledBody};
use crate::upstream::egress::Dialer;
use crate::upstream::UpstreamError;

/// Requests in flight on one connection before another is opened: the
/// stream limit RFC 9113 §6.5.2 asks servers to allow at least (nginx
/// allows 128, Go 250); the server's own limit is not exposed by hyper.
const STREAMS_PER_CONN: usize = 100;

/// Sends of one request refused before they reached a connection (it
/// closed or went away meanwhile), each followed by a new connection.
const MAX_RESENDS: usize = 3;

/// The HTTP/2 side of a pool.
pub(in crate::upstream) struct H2 {
    /// Dials with ALPN `h2` (and `http/1.1` for auto), or plain TCP (h2c).
    connector: HttpsConnector<Dialer>,
    /// `"always"`: every connection is HTTP/2, whatever ALPN says.
    prior_knowledge: bool,
    /// `http` or `https`, and the origin's authority: the `:scheme` and
    /// `:authority` of every request.
    scheme: Scheme,
    authority: http::uri::Authority,
    state: Mutex<State>,
    /// `state.speaks_h1`, read without the lock: such an origin's requests
    /// go straight to the HTTP/1.1 pool.
    speaks_h1: AtomicBool,
    /// Wakes the requests waiting for the first connection.
    made: Notify,
}

#[derive(Default)]
struct State {
    /// Auto mode found the origin speaking HTTP/1.1.
    speaks_h1: bool,
    conns: Vec<H2Conn>,
    /// A connection is being made by some request.
    connecting: bool,
    next_id: u64,
}

struct H2Conn {
    id: u64,
    sender: SendRequest<Body>,
    streams: Arc<AtomicUsize>,
}

/// One request's stream on a connection: counted while its response body
/// lives.
pub(super) struct StreamGuard(Arc<AtomicUsize>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

enum Pick {
    Use(SendRequest<Body>, StreamGuard, u64),
    /// This request makes the next connection.
    Connect,
    /// Another request is making the first connection.
    Wait,
    H1,
}

/// Resets `connecting` if the request making a connection gives up.
struct Connecting<'a>(&'a H2);

impl Drop for Connecting<'_> {
    fn drop(&mut self) {
        self.0.lock().connecting = false;
        self.0.made.notify_waiters();
    }
}

impl H2 {
    pub(in crate::upstream) fn new(
        connector: HttpsConnector<Dialer>,
        prior_knowledge: bool,
        origin: &Uri,
    ) -> H2 {
        H2 {
            connector,
            prior_knowledge,
            scheme: origin.scheme().cloned().unwrap_or(Scheme::HTTP),
            authority: origin
                .authority()
                .cloned()
                .expect("an upstream origin has an authority"),
            state: Mutex::new(State::default()),
            speaks_h1: AtomicBool::new(false),
            made: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Auto mode found the origin speaking HTTP/1.1.
    pub(super) fn speaks_h1(&self) -> bool {
        self.speaks_h1.load(Ordering::Relaxed)
    }

    fn learn_h1(&self) {
        self.lock().speaks_h1 = true;
        self.speaks_h1.store(true, Ordering::Relaxed);
    }

    fn pick(&self, limit: usize) -> Pick {
        let mut state = self.lock();
        if state.speaks_h1 {
            return Pick::H1;
        }
        state.conns.retain(|c| !c.sender.is_closed());
        let best = state
            .conns
            .iter()
            .min_by_key(|c| c.streams.load(Ordering::Relaxed));
        match best {
            Some(c)
                if c.streams.load(Ordering::Relaxed) < STREAMS_PER_CONN
                    || state.connecting
                    || state.conns.len() >= limit =>
            {
                c.streams.fetch_add(1, Ordering::Relaxed);
                Pick::Use(c.sender.clone(), StreamGuard(c.streams.clone()), c.id)
            }
            None if state.connecting => Pick::Wait,
            _ => {
                state.connecting = true;
                Pick::Connect
            }
        }
    }

    /// A connection that refused a request (it is closing, or went away)
    /// takes no more.
    fn forget(&self, id: u64) {
        self.lock().conns.retain(|c| c.id != id);
    }
}

/// What [`Pool::send_h2`] did: answered, or handed the request back for
/// HTTP/1.1 (an upgrade, or an origin that chose HTTP/1.1).
pub(super) enum Sent {
    Done(Result<Response<PooledBody>, UpstreamError>),
    UseH1(Request<Body>),
}

impl Pool {
    /// Sends `req` on a shared HTTP/2 connection, by `deadline` as
    /// [`Pool::send`] does.
    pub(super) async fn send_h2(
        self: &Arc<Self>,
        h2: &H2,
        mut req: Request<Body>,
        timeout: Duration,
        body_sent: &mut Option<oneshot::Receiver<()>>,
        mut deadline: tokio::time::Instant,
    ) -> Sent {
        if req.headers().contains_key(header::UPGRADE) {
            // hyper's HTTP/2 client has no upgrades (RFC 8441 aside).
            return Sent::UseH1(req);
        }
        let mut resends = 0;
        loop {
            let (mut sender, guard, id) = match h2.pick(self.shared.limit) {
                Pick::H1 => return Sent::UseH1(req),
                Pick::Use(sender, guard, id) => (sender, guard, id),
                Pick::Wait => {
                    let made = h2.made.notified();
                    // Made (or given up) between the pick and now.
                    let connecting = h2.lock().connecting;
                    if connecting && tokio::time::timeout_at(deadline, made).await.is_err() {
                        return Sent::Done(Err(UpstreamError::Timeout));
                    }
                    continue;
                }
                Pick::Connect => {
                    let connecting = Connecting(h2);
                    let made = tokio::time::timeout_at(deadline, self.connect_h2(h2)).await;
                    drop(connecting);
                    match made {
                        Err(_) => return Sent::Done(Err(UpstreamError::Timeout)),
                        Ok(Err(e)) => return Sent::Done(Err(e)),
                        Ok(Ok(())) => continue,
                    }
                }
            };
            prepare(h2, &mut req);
            // A bodyless request refused unprocessed can be sent again:
            // its head is kept for that.
            let head = req.body().is_end_stream().then(|| {
                let mut copy = Request::new(());
                *copy.method_mut() = req.method().clone();
                *copy.uri_mut() = req.uri().clone();
                *copy.version_mut() = req.version();
                *copy.headers_mut() = req.headers().clone();
                copy
            });
            let answer = sender.try_send_request(req);
            let expired = async {
                if let Some(sent) = body_sent.as_mut() {
                    let _ = sent.await;
                    deadline = tokio::time::Instant::now() + timeout;
                }
                tokio::time::sleep_until(deadline).await;
            };
            let answer = tokio::select! {
                answer = answer => answer,
                () = expired => return Sent::Done(Err(UpstreamError::Timeout)),
            };
            match answer {
                Ok(response) => {
                    let response = response.map(|inner| PooledBody::h2(inner, guard));
                    return Sent::Done(Ok(response));
                }
                Err(mut e) => match e.take_message() {
                    // Never reached the connection (closed, or went away
                    // with GOAWAY meanwhile): another one takes it.
                    Some(unsent) if resends < MAX_RESENDS => {
                        resends += 1;
                        h2.forget(id);
                        req = unsent;
                    }
                    None if resends < MAX_RESENDS && refused_unprocessed(e.error()) => {
                        let Some(head) = head else {
                            return Sent::Done(Err(UpstreamError::Http(e.into_error())));
                        };
                        tracing::debug!(
                            "upstream refused an HTTP/2 stream unprocessed; sending it again"
                        );
                        resends += 1;
                        h2.forget(id);
                        req = head.map(|()| Body::empty());
                    }
                    _ => return Sent::Done(Err(UpstreamError::Http(e.into_error()))),
                },
            }
        }
    }

    /// Makes a connection for `h2` in one of the pool's slots: HTTP/2 goes
    /// to the shared list, HTTP/1.1 (ALPN chose it, auto mode) to the idle
    /// list for the caller to take.
    async fn connect_h2(self: &Arc<Self>, h2: &H2) -> Result<(), UpstreamError> {
        let slot = match self.shared.checkout(std::time::Instant::now()) {
            Checkout::Connect(slot) => slot,
            Checkout::Idle(conn) => {
                // An HTTP/1.1 connection (auto mode learnt it): back for
                // the HTTP/1.1 path.
                self.shared.give(Grant::Conn(conn));
                h2.learn_h1();
                return Ok(());
            }
            Checkout::Wait(rx) => match rx.await {
                Ok(Grant::Slot(slot)) => slot,
                Ok(Grant::Conn(conn)) => {
                    self.shared.give(Grant::Conn(conn));
                    h2.learn_h1();
                    return Ok(());
                }
                Err(_) => return Err(UpstreamError::Timeout),
            },
        };
        let io = h2
            .connector
            .clone()
            .oneshot(self.origin.clone())
            .await
            .map_err(UpstreamError::Connect)?;
        let negotiated_h2 = io.connected().is_negotiated_h2();
        let io = Counted { io, _slot: slot };
        if !negotiated_h2 && !h2.prior_knowledge {
            let conn = Pool::handshake_h1(io).await?;
            h2.learn_h1();
            self.shared.give(Grant::Conn(conn));
            return Ok(());
        }
        if !negotiated_h2 && h2.scheme == Scheme::HTTPS {
            return Err(UpstreamError::Connect(
                "the upstream did not offer HTTP/2 in ALPN (routes[].http2 = \"always\"); set http2 = \"auto\""
                    .into(),
            ));
        }
        let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
        builder.timer(TokioTimer::new());
        let (sender, conn) = builder.handshake(io).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream HTTP/2 connection ended with an error");
            }
        });
        let mut state = h2.lock();
        state.next_id += 1;
        let id = state.next_id;
        state.conns.push(H2Conn {
            id,
            sender,
            streams: Arc::new(AtomicUsize::new(0)),
        });
        Ok(())
    }
}

/// Whether the upstream refused a stream before any processing, so that
/// sending it again elsewhere is safe (RFC 9113 §8.7): `REFUSED_STREAM`,
/// or a graceful GOAWAY whose last stream was before this one.
fn refused_unprocessed(e: &hyper::Error) -> bool {
    let Some(e) = std::error::Error::source(e).and_then(|s| s.downcast_ref::<h2::Error>()) else {
        return false;
    };
    let reason = e.reason();
    (e.is_reset() && reason == Some(h2::Reason::REFUSED_STREAM))
        || (e.is_go_away() && e.is_remote() && reason == Some(h2::Reason::NO_ERROR))
}

/// The request as HTTP/2 sends it: absolute URI (`:scheme`,
/// `:authority`), no `Host`, none of the connection-specific headers HTTP/2
/// forbids (RFC 9113 §8.2.2).
fn prepare(h2: &H2, req: &mut Request<Body>) {
    *req.version_mut() = Version::HTTP_2;
    let path = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(h2.scheme.clone());
    parts.authority = Some(h2.authority.clone());
    parts.path_and_query = Some(path);
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
    req.headers_mut().remove(header::HOST);
    strip_h2_forbidden(req.headers_mut());
}

/// Removes the headers HTTP/2 forbids in a request: `Connection` (and what
/// it names), `Keep-Alive`, `Proxy-Connection`, `Transfer-Encoding`,
/// `Upgrade`, and `TE` unless it is `trailers` (RFC 9113 §8.2.2).
pub(in crate::upstream) fn strip_h2_forbidden(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    let te_ok = headers
        .get_all(header::TE)
        .iter()
        .all(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    if !te_ok {
        headers.remove(header::TE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn forbidden_connection_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("x-hop, close"));
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_h2_forbidden(&mut h);
        let left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(left, ["te", "x-kept"]);
        h.insert(header::TE, HeaderValue::from_static("gzip"));
        strip_h2_forbidden(&mut h);
        assert!(!h.contains_key(header::TE));
    }
}
