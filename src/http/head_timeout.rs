//! The slow-loris defence (`server.header_read_timeout`): from the moment a
//! connection waits for a request head (after accepting, and after each
//! answer) the client has that long to send the whole head; otherwise the
//! connection is closed, with a `408` if part of a head had arrived. An
//! idle keep-alive connection is closed the same way.
//!
//! Why not hyper's own `header_read_timeout`: it allocates, registers and
//! removes a new timer for every request; replacing it saved about 700
//! instructions per small request (1.8%, callgrind: 39.4k to 38.7k). Here
//! each connection owns one timer, created at accept; moving its deadline
//! later is an atomic store.
//!
//! How the two halves meet: the service marks each request it is handed
//! (the head has been read) with an [`InFlight`] guard that lives until
//! the answer's body is dropped. The connection's socket is wrapped in
//! [`HeadDeadline`], which enforces the deadline on reads only while no
//! request is in flight. After a `101 Switching Protocols` the connection
//! is no longer HTTP and the deadline no longer applies.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::drain::{Drain, Entered};
use super::load::{Load, Unit};

/// Sent when the time runs out in the middle of a head: our usual JSON
/// error (`request_timeout`), written here as bytes because hyper never
/// saw a request to answer.
const REQUEST_TIMEOUT: &[u8] = b"HTTP/1.1 408 Request Timeout\r\n\
    connection: close\r\n\
    content-type: application/json\r\n\
    x-authproxy-error: request_timeout\r\n\
    content-length: 99\r\n\
    \r\n\
    {\"error\":\"request_timeout\",\"message\":\"no complete request head within server.header_read_timeout\"}\n";

/// Most bytes read from a client at once while a request is in flight
/// (reading its body). hyper reads into the connection's buffer, as much
/// as it has room for, and doubles that buffer (up to twice
/// `max_header_bytes`, 128 KiB by default) whenever a read fills it; a
/// stalled upload then holds it all. 200 connections stalled near the end
/// of a 1 MiB body held 31 MB of buffers that way (debug build, RssAnon).
///
/// One byte short of 16 KiB: a read of 16 KiB would fill hyper's 16 KiB
/// buffer and double it, one byte less never does, so the buffer stays at
/// 16 KiB, as it did with the 8 KiB reads this replaced, while a body
/// takes about half as many reads. Measured (release build, 64
/// connections, 64 KiB POSTs): 11.5 `recvfrom` per request with 8 KiB
/// reads, 6.8 with this, 4.4 with 16 KiB; RSS grown by 200 uploads
/// stalled one byte short of 64 KiB: 20.8 MB, 21.3 MB, 26.4 MB.
const BODY_READ: usize = 16 * 1024 - 1;

/// What one connection's requests tell its socket wrapper; also the
/// server's drain, for work that outlives the connection's HTTP.
pub struct Activity {
    /// Requests handed to the service and not yet answered in full.
    in_flight: AtomicUsize,
    /// Requests handed to the service so far: a new count means a new wait
    /// for a head, with a fresh deadline.
    started: AtomicU64,
    /// A `101` answer went out: the rest of the connection is not HTTP.
    upgraded: AtomicBool,
    drain: Drain,
    /// The server's connection count, for HTTP/2 streams beyond the first.
    load: Load,
    http2: bool,
    /// The client's address, for the access log (known at accept, kept
    /// here rather than looked up per request).
    peer: SocketAddr,
}

impl Activity {
    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// Counts an upgraded connection's tunnel (which outlives the HTTP
    /// connection it came from) as live for the server's drain until the
    /// returned guard is dropped.
    pub fn enter_drain(&self) -> Entered {
        self.drain.enter()
    }

    /// The activity of a connection carried inside this one (a `CONNECT`
    /// tunnel's): the same drain and load. Its socket is not a
    /// [`HeadDeadline`]; its server sets a head timeout of its own.
    pub fn inner(&self, http2: bool) -> Arc<Activity> {
        Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            upgraded: AtomicBool::new(false),
            drain: self.drain.clone(),
            load: self.load.clone(),
            http2,
            peer: self.peer,
        })
    }

    /// Called when the service is handed a request: its head is complete.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.started.fetch_add(1, Ordering::Relaxed);
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.load.counts().request_started(before == 0);
        // An HTTP/2 stream beyond the connection's first may hold an
        // upstream connection of its own: it counts as load too.
        let (unit, refused) = if self.http2 && before > 0 {
            match self.load.stream() {
                Some(unit) => (Some(unit), false),
                None => (None, true),
            }
        } else {
            (None, false)
        };
        InFlight {
            activity: self.clone(),
            upgrading: false,
            _unit: unit,
            refused,
        }
    }
}

impl InFlight {
    /// The request's connection.
    pub fn activity(&self) -> &Activity {
        &self.activity
    }

    /// An HTTP/2 stream that came in past `max_connections` +
    /// [`HEADROOM`](super::load::HEADROOM): it must not be forwarded.
    pub fn over_limit(&self) -> bool {
        self.refused
    }
}

/// One request from the moment its head was read until its answer's body
/// is dropped (sent in full, or abandoned with the connection).
pub struct InFlight {
    activity: Arc<Activity>,
    upgrading: bool,
    /// The stream's own unit of load (HTTP/2 beyond the first stream).
    _unit: Option<Unit>,
    refused: bool,
}

impl InFlight {
    /// Wraps the answer's body, which carries the guard from now on.
    pub fn attach<B>(mut self, status: StatusCode, body: B) -> Tracked<B> {
        self.upgrading = status == StatusCode::SWITCHING_PROTOCOLS;
        Tracked { body, _guard: self }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.upgrading {
            self.activity.upgraded.store(true, Ordering::Release);
        }
        let before = self.activity.in_flight.fetch_sub(1, Ordering::AcqRel);
        // An upgraded connection stays active while its tunnel lives: it
        // turns idle when the connection goes (`Activity`'s drop).
        self.activity
            .load
            .counts()
            .request_ended(before == 1 && !self.upgrading);
    }
}

impl Drop for Activity {
    fn drop(&mut self) {
        if self.upgraded.load(Ordering::Acquire) {
            self.load.counts().connection_idle();
        }
    }
}

impl InFlight {
    /// As [`InFlight::attach`] for the `2xx` answer to a `CONNECT`: the
    /// rest of the connection is a tunnel, not HTTP (no head deadline).
    pub fn attach_tunnel<B>(mut self, body: B) -> Tracked<B> {
        self.upgrading = true;
        Tracked { body, _guard: self }
    }
}

/// An answer's body that ends its request's [`InFlight`] when dropped.
pub struct Tracked<B> {
    body: B,
    _guard: InFlight,
}

impl<B: http_body::Body + Unpin> http_body::Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A client socket whose reads fail once a request head is overdue.
pub struct HeadDeadline {
    stream: TcpStream,
    /// The connection's unit of load: given back when the socket closes,
    /// which for an upgraded connection is when its tunnel ends.
    _unit: Unit,
    /// Read before hyper took over; not yet handed to it.
    opening: Bytes,
    activity: Arc<Activity>,
    timeout: Duration,
    timer: Pin<Box<Sleep>>,
    /// The [`Activity::started`] count the deadline was set for.
    armed_for: Option<u64>,
    /// Bytes arrived since the deadline was set: part of a head.
    partial_head: bool,
    /// The client speaks HTTP/2: no HTTP/1.1 `408` for it.
    http2: bool,
    expired: bool,
}

impl HeadDeadline {
    /// `opening`: bytes already read from `stream` (to tell the protocol),
    /// handed out first; `unit`: the connection's share of `load`;
    /// `drain`: the server's; `peer`: the client's address. `deadline`:
    /// the timer set when the connection was accepted, which the first
    /// head is held to (the opening read counted against it), and the
    /// timeout each later head gets from the moment it is waited for.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        stream: TcpStream,
        peer: SocketAddr,
        unit: Unit,
        load: Load,
        opening: Bytes,
        http2: bool,
        deadline: (Pin<Box<Sleep>>, Duration),
        drain: Drain,
    ) -> (HeadDeadline, Arc<Activity>) {
        let (timer, timeout) = deadline;
        let activity = Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            started: AtomicU64::new(0),
            upgraded: AtomicBool::new(false),
            drain,
            load,
            http2,
            peer,
        });
        let io = HeadDeadline {
            stream,
            _unit: unit,
            opening,
            activity: activity.clone(),
            timeout,
            timer,
            armed_for: None,
            partial_head: false,
            http2,
            expired: false,
        };
        (io, activity)
    }

    fn expire(&mut self) -> io::Error {
        self.expired = true;
        if self.partial_head && !self.http2 {
            // Best effort, as the connection closes next: 250 bytes fit in
            // any socket buffer that is not full already.
            let _ = self.stream.try_write(REQUEST_TIMEOUT);
        }
        timed_out()
    }

    /// Whether the connection waits for a request head. When it has just
    /// started to, the deadline is set and the timer polled once, so that
    /// it wakes the connection's task when it fires.
    fn waiting_for_head(&mut self, cx: &mut Context<'_>) -> bool {
        let activity = &self.activity;
        if activity.in_flight.load(Ordering::Acquire) != 0
            || activity.upgraded.load(Ordering::Acquire)
        {
            return false;
        }
        let started = activity.started.load(Ordering::Relaxed);
        if self.armed_for != Some(started) {
            // The first head keeps the deadline set at accept.
            if self.armed_for.is_some() {
                self.timer.as_mut().reset(Instant::now() + self.timeout);
            }
            self.armed_for = Some(started);
            self.partial_head = false;
            // The timer keeps this waker (the connection's task, which
            // owns this socket) until it fires; later checks read a flag.
            let _ = self.timer.as_mut().poll(cx);
        }
        true
    }
}

impl HeadDeadline {
    /// Reads at most `n` bytes into `buf`.
    fn read_at_most(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
        n: usize,
    ) -> Poll<io::Result<()>> {
        loop {
            std::task::ready!(self.stream.poll_read_ready(cx))?;
            let mut limited = bytes::BufMut::limit(&mut *buf, n);
            match self.stream.try_read_buf(&mut limited) {
                Ok(_) => return Poll::Ready(Ok(())),
                // Readiness was stale (and is now cleared): wait again.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

fn timed_out() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "no complete request head within server.header_read_timeout",
    )
}

impl AsyncRead for HeadDeadline {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.expired {
            return Poll::Ready(Err(timed_out()));
        }
        let waiting_for_head = this.waiting_for_head(cx);
        if !this.opening.is_empty() {
            let n = this.opening.len().min(buf.remaining());
            buf.put_slice(&this.opening.split_to(n));
            this.partial_head |= waiting_for_head;
            return Poll::Ready(Ok(()));
        }
        if !waiting_for_head && buf.remaining() > BODY_READ {
            return this.read_at_most(cx, buf, BODY_READ);
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if waiting_for_head && buf.filled().len() > before {
                    this.partial_head = true;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending if waiting_for_head && this.timer.is_elapsed() => {
                Poll::Ready(Err(this.expire()))
            }
            other => other,
        }
    }
}

impl AsyncWrite for HeadDeadline {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let flushed = Pin::new(&mut this.stream).poll_flush(cx);
        // hyper flushes an answer after dropping its body, and may not
        // read again until the client sends something: the wait for the
        // next head starts here.
        this.waiting_for_head(cx);
        flushed
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::REQUEST_TIMEOUT;

    #[test]
    fn request_timeout_answer_is_our_json_error_with_the_right_length() {
        let text = std::str::from_utf8(REQUEST_TIMEOUT).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 408 "), "{head}");
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(length, body.len());
        assert!(body.ends_with('\n'), "JSON answers end in a newline");
        assert!(REQUEST_TIMEOUT.len() <= 250, "{}", REQUEST_TIMEOUT.len());
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"], "request_timeout");
        assert!(v["message"].is_string());
    }
}
