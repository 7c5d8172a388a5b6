//! The accept loop: HTTP/1.1 (keep-alive, upgrades) and HTTP/2 with prior
//! knowledge (h2c) from clients, graceful shutdown with a bounded drain.
//!
//! Generic over what answers a request (a plain function of the request and
//! its connection's [`Activity`]), so this module knows nothing about the
//! app; the function's future is a concrete type, neither boxed nor called
//! through a vtable.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, TcpStream};

use super::drain::{Drain, Entered};
use super::head_timeout::{Activity, HeadDeadline, Tracked};
use super::load::{Load, Unit};

/// The server's own limits (from `[server]` in the config).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request head (431 beyond); also HTTP/2's header list size.
    pub max_header_bytes: usize,
    /// Most header fields in a request head (431 beyond).
    pub max_headers: usize,
    /// Time a client has to send a request head (see [`super::head_timeout`]).
    pub header_read_timeout: Duration,
    /// How long in-flight requests may take to finish after the stop.
    pub drain_timeout: Duration,
    /// Most connections (and HTTP/2 streams beyond a connection's first)
    /// at once; see [`super::load`].
    pub max_connections: usize,
    /// Where the server counts connections and requests (for the metrics).
    pub counts: super::load::Counts,
}

/// HTTP/2 flow control: what a client may send that the proxy has not
/// read yet, per stream and per connection. A stream's data waits in these
/// windows until its body is read (into a replay buffer, or on to the
/// upstream), so one connection holds at most 1 MiB unread whatever its
/// streams do (hyper's default for the connection, a quarter of it per
/// stream, written down here because they bound memory; no adaptive
/// growth).
const H2_STREAM_WINDOW: u32 = 256 * 1024;
const H2_CONNECTION_WINDOW: u32 = 1024 * 1024;
/// Streams in flight per HTTP/2 connection (hyper's default).
const H2_MAX_STREAMS: u32 = 200;

/// Serves `service` on `listener` until `shutdown` resolves, then stops
/// accepting and waits up to `limits.drain_timeout` for in-flight requests
/// to finish.
///
/// `service` answers one request; it gets the request's connection
/// [`Activity`] and must call [`Activity::begin`] and attach the guard to
/// its answer ([`super::head_timeout::InFlight::attach`]).
pub async fn serve<S, F, B>(
    listener: TcpListener,
    service: S,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: &Limits,
) where
    S: Fn(Request<Incoming>, &Arc<Activity>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Tracked<B>>, Infallible>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let drain = limits.drain_timeout;
    let mut h1 = http1::Builder::new();
    h1
        // Slow-loris defence is ours, cheaper per request (head_timeout).
        .header_read_timeout(None)
        // A head larger than this, or with more fields, is answered 431.
        .max_buf_size(limits.max_header_bytes)
        .max_headers(limits.max_headers)
        .keep_alive(true);
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes as u32)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .initial_connection_window_size(H2_CONNECTION_WINDOW)
        .adaptive_window(false)
        .max_concurrent_streams(H2_MAX_STREAMS);
    let protocols = Arc::new(Protocols { h1, h2 });
    let drain_signal = Drain::default();
    let load = Load::new(limits.max_connections, limits.counts.clone());
    let mut accept_errors = AcceptErrors::default();
    // The loop below polls its stop each time it wakes, once or twice per
    // accepted connection. The caller's future (two signal streams, in
    // `authproxy run`) costs about 800 instructions a poll; a oneshot that
    // a task of its own fires costs a few dozen.
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(());
    });
    loop {
        if load.is_full() {
            // Full: new connections wait in the listen backlog until one
            // closes, rather than being accepted without a slot.
            tokio::select! {
                () = load.room() => {}
                _ = &mut stopped => break,
            }
            continue;
        }
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        accept_errors.failed(e).await;
                        continue;
                    }
                };
                accept_errors.succeeded();
                let _ = stream.set_nodelay(true);
                let connection = serve_connection(
                    stream,
                    peer,
                    load.connection(),
                    load.clone(),
                    service.clone(),
                    protocols.clone(),
                    drain_signal.enter(),
                    limits.header_read_timeout,
                );
                // `map`: an `async move` block would hold the connection's
                // future twice (captured, and again while awaited).
                tokio::spawn(connection.map(|ended| {
                    if let Err(e) = ended {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                }));
            }
            _ = &mut stopped => break,
        }
    }
    drop(listener);
    tracing::info!(
        drain_seconds = drain.as_secs_f64(),
        "shutting down: no new connections, draining in-flight requests"
    );
    tokio::select! {
        () = drain_signal.start() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(drain) => tracing::warn!("drain time is up; closing remaining connections"),
    }
}

/// Serves one connection carried inside another (the TLS stream inside a
/// `CONNECT` tunnel), HTTP/2 when `http2` (chosen in ALPN), else HTTP/1.1,
/// with the limits of the listen address's connections; a drain that
/// starts closes it gracefully like those. Its head deadline is hyper's
/// (the stream is not a socket [`HeadDeadline`] can watch): one timer per
/// request, on this path only.
pub async fn serve_inner<I, S, F, B>(
    io: I,
    http2: bool,
    service: S,
    limits: &Limits,
    entered: Entered,
) -> Result<(), hyper::Error>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: Fn(Request<Incoming>) -> F + Send + 'static,
    F: Future<Output = Result<Response<B>, Infallible>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let io = TokioIo::new(io);
    let service = hyper::service::service_fn(service);
    if http2 {
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_header_list_size(limits.max_header_bytes as u32)
            .initial_stream_window_size(H2_STREAM_WINDOW)
            .initial_connection_window_size(H2_CONNECTION_WINDOW)
            .adaptive_window(false)
            .max_concurrent_streams(H2_MAX_STREAMS);
        let conn = h2.serve_connection(io, service);
        entered.watch(Box::pin(conn)).await
    } else {
        let mut h1 = http1::Builder::new();
        h1.timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(limits.max_header_bytes)
            .max_headers(limits.max_headers)
            .keep_alive(true);
        let conn = h1.serve_connection(io, service).with_upgrades();
        entered.watch(Box::pin(conn)).await
    }
}

/// Failed `accept(2)` calls, for a bounded backoff and a quiet log.
#[derive(Default)]
struct AcceptErrors {
    /// Backoff before the next try, doubled per failure in a row.
    backoff: Duration,
    last_logged: Option<std::time::Instant>,
    /// Failures since the last line in the log.
    unlogged: u64,
}

impl AcceptErrors {
    /// Out of file descriptors or memory (`EMFILE`, `ENFILE`, `ENOBUFS`,
    /// `ENOMEM`): connections closing give them back, so wait (10 ms,
    /// doubling to 1 s) instead of spinning on a listener that stays
    /// readable; one line in the log per 10 s at most. Other errors
    /// (`ECONNABORTED`: the client left before it was accepted) concern
    /// one connection only: go on at once.
    async fn failed(&mut self, e: std::io::Error) {
        use rustix::io::Errno;
        let exhausted = matches!(
            Errno::from_io_error(&e),
            Some(Errno::MFILE | Errno::NFILE | Errno::NOBUFS | Errno::NOMEM)
        );
        if !exhausted {
            tracing::debug!(error = %e, "accept failed");
            return;
        }
        self.unlogged += 1;
        let now = std::time::Instant::now();
        if self
            .last_logged
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10))
        {
            tracing::warn!(
                error = %e,
                failures = self.unlogged,
                "accept failed: out of file descriptors or memory; backing off until connections close (server.max_connections may be above what the limits allow)"
            );
            self.last_logged = Some(now);
            self.unlogged = 0;
        }
        self.backoff = (self.backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
        tokio::time::sleep(self.backoff).await;
    }

    fn succeeded(&mut self) {
        self.backoff = Duration::ZERO;
    }
}

struct Protocols {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
}

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves one client connection: HTTP/2 if it opens with the preface,
/// HTTP/1.1 otherwise.
///
/// The protocol is told from the first bytes here, and those bytes are
/// handed to hyper through [`HeadDeadline`], rather than by hyper-util's
/// `auto` server: that one wraps the socket in one more reader and its
/// connection in one more state machine for the connection's whole life;
/// doing without it saved about 400 instructions per request (1.0%,
/// callgrind: 38.7k to 38.3k).
#[allow(clippy::too_many_arguments)]
async fn serve_connection<S, F, B>(
    mut stream: TcpStream,
    peer: std::net::SocketAddr,
    unit: Unit,
    load: Load,
    service: S,
    protocols: Arc<Protocols>,
    entered: Entered,
    head_timeout: Duration,
) -> Result<(), hyper::Error>
where
    S: Fn(Request<Incoming>, &Arc<Activity>) -> F + Send + 'static,
    F: Future<Output = Result<Response<Tracked<B>>, Infallible>> + Send + 'static,
    B: http_body::Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    // The opening counts against the head deadline: the connection's one
    // timer starts here and goes on into `HeadDeadline` (a timer of its
    // own for this read, as `tokio::time::timeout` makes, cost 0.6k to
    // 1.1k instructions per connection, callgrind's connection-per-request
    // rows at 1 and 64 connections). Polled only when the read waits, so a
    // request already in the socket registers nothing yet. A drain that
    // starts meanwhile closes the connection at once, as nothing was
    // asked yet.
    let mut deadline = Box::pin(tokio::time::sleep(head_timeout));
    let opening = tokio::select! {
        biased;
        opening = read_opening(&mut stream) => opening,
        () = deadline.as_mut() => return Ok(()),
        () = entered.draining() => return Ok(()),
    };
    let Ok((opening, is_h2)) = opening else {
        return Ok(());
    };
    let (io, activity) = HeadDeadline::new(
        stream,
        peer,
        unit,
        load,
        opening,
        is_h2,
        (deadline, head_timeout),
        entered.drain(),
    );
    let io = TokioIo::new(io);
    let service = hyper::service::service_fn(move |req| service(req, &activity));
    if is_h2 {
        let conn = protocols.h2.serve_connection(io, service);
        entered.watch(Box::pin(conn)).await
    } else {
        let conn = protocols.h1.serve_connection(io, service).with_upgrades();
        entered.watch(Box::pin(conn)).await
    }
}

/// Reads the first bytes of a connection, until they are the HTTP/2
/// preface or cannot become it (an HTTP/1.1 request line decides at the
/// first byte). Whatever arrived in that read is kept for hyper, so a
/// typical request head is read with one syscall as before.
async fn read_opening(stream: &mut (impl AsyncRead + Unpin)) -> std::io::Result<(Bytes, bool)> {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        if stream.read_buf(&mut buf).await? == 0 {
            // Closed early: hyper sees what there is, then the end.
            return Ok((buf.freeze(), false));
        }
        let n = buf.len().min(H2_PREFACE.len());
        if buf[..n] != H2_PREFACE[..n] {
            return Ok((buf.freeze(), false));
        }
        if n == H2_PREFACE.len() {
            return Ok((buf.freeze(), true));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{read_opening, H2_PREFACE};
    use futures_util::FutureExt;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn opening_in_pieces_is_told_apart() {
        // The preface arriving in two reads, then a frame: HTTP/2, and every
        // byte read is kept for hyper.
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(&H2_PREFACE[..10]).await.unwrap();
        let mut opening = Box::pin(read_opening(&mut server));
        assert!(
            opening.as_mut().now_or_never().is_none(),
            "decided on 10 bytes"
        );
        client.write_all(&H2_PREFACE[10..]).await.unwrap();
        client.write_all(b"frame").await.unwrap();
        let (bytes, h2) = opening.await.unwrap();
        assert!(h2);
        assert!(bytes.starts_with(H2_PREFACE), "{bytes:?}");

        // HTTP/1.1 is decided at the first byte that differs, without
        // waiting for 24 bytes.
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(b"GET /").await.unwrap();
        let (bytes, h2) = read_opening(&mut server).await.unwrap();
        assert!(!h2);
        assert_eq!(&bytes[..], b"GET /");

        // `PRI` that turns out not to be the preface is HTTP/1.1 too.
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(b"PRI * HTTP/1.1\r\n").await.unwrap();
        assert!(!read_opening(&mut server).await.unwrap().1);

        // Closed before deciding: what came is handed on, as HTTP/1.1.
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(b"PRI").await.unwrap();
        drop(client);
        let (bytes, h2) = read_opening(&mut server).await.unwrap();
        assert!(!h2);
        assert_eq!(&bytes[..], b"PRI");
    }
}
