//! The accept loop: HTTP/1.1 (keep-alive, upgrades) and HTTP/2 with prior
//! knowledge (h2c) from clients, graceful shutdown with a bounded drain.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::config::ServerConfig;
use crate::head_timeout::HeadDeadline;
use crate::service::App;

/// Serves `app` on `listener` until `shutdown` resolves, then stops
/// accepting and waits up to `drain` for in-flight requests to finish.
pub async fn serve(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()>,
    limits: &ServerConfig,
) {
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
        .max_header_list_size(limits.max_header_bytes as u32);
    let protocols = Arc::new(Protocols { h1, h2 });
    let drain_signal = Drain::default();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let connection = serve_connection(
                    stream,
                    app.clone(),
                    protocols.clone(),
                    drain_signal.enter(),
                    limits.header_read_timeout,
                );
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
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
/// connection in one more state machine for the connection's whole life,
/// about 550 instructions per request (1.5%).
async fn serve_connection(
    mut stream: TcpStream,
    app: App,
    protocols: Arc<Protocols>,
    entered: Entered,
    head_timeout: Duration,
) -> Result<(), hyper::Error> {
    // The opening counts against the head deadline; a drain that starts
    // meanwhile closes the connection at once, as nothing was asked yet.
    let opening = tokio::select! {
        opening = tokio::time::timeout(head_timeout, read_opening(&mut stream)) => opening,
        () = entered.draining() => return Ok(()),
    };
    let Ok(Ok((opening, is_h2))) = opening else {
        return Ok(());
    };
    let (io, activity) = HeadDeadline::new(stream, opening, is_h2, head_timeout);
    let io = TokioIo::new(io);
    let service = hyper::service::service_fn(move |req| app.serve(req, &activity));
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

/// Graceful shutdown for every open connection: at the start of a drain
/// each is asked to finish its current request and close.
///
/// hyper-util's `GracefulShutdown` polls a watch channel's `changed()` on
/// every poll of every connection, which takes the channel's waiter lock
/// each time (about 650 instructions per proxied request, 1.6% of the CPU).
/// Here a connection registers its task's waker once and then reads one
/// atomic flag per poll.
#[derive(Default)]
struct Drain {
    inner: Arc<DrainInner>,
}

#[derive(Default)]
struct DrainInner {
    draining: AtomicBool,
    /// Connections not yet ended, counted from their creation (before
    /// their first poll).
    live: AtomicUsize,
    /// Wakers of the polled connections.
    open: Mutex<Slots>,
    /// Notified whenever a connection ends.
    ended: Notify,
    /// Notified when the drain starts (for connections not yet watched).
    started: Notify,
}

/// A live connection, counted until this is dropped.
struct Entered {
    drain: Arc<DrainInner>,
}

impl Entered {
    /// From now on the connection is asked to finish when the drain starts.
    fn watch<C: DrainableConnection>(self, conn: Pin<Box<C>>) -> Watched<C> {
        Watched {
            conn,
            entered: self,
            slot: None,
            shutting_down: false,
        }
    }

    /// Resolves once the drain has started.
    async fn draining(&self) {
        loop {
            let started = self.drain.started.notified();
            tokio::pin!(started);
            // Registered before checking, so a start in between is not missed.
            started.as_mut().enable();
            if self.drain.draining.load(Ordering::SeqCst) {
                return;
            }
            started.await;
        }
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        self.drain.live.fetch_sub(1, Ordering::SeqCst);
        self.drain.ended.notify_waiters();
    }
}

impl Drain {
    /// Counts a new connection as live from its acceptance.
    fn enter(&self) -> Entered {
        self.inner.live.fetch_add(1, Ordering::SeqCst);
        Entered {
            drain: self.inner.clone(),
        }
    }

    /// Asks every connection to close after its current request and
    /// resolves once all of them have ended.
    async fn start(self) {
        self.inner.draining.store(true, Ordering::SeqCst);
        self.inner.started.notify_waiters();
        let wakers: Vec<Waker> = {
            let open = self.inner.open.lock().unwrap_or_else(|e| e.into_inner());
            open.wakers.iter().flatten().cloned().collect()
        };
        for w in wakers {
            w.wake();
        }
        loop {
            let ended = self.inner.ended.notified();
            tokio::pin!(ended);
            // Registered before checking, so an end in between is not missed.
            ended.as_mut().enable();
            if self.inner.live.load(Ordering::SeqCst) == 0 {
                return;
            }
            ended.await;
        }
    }
}

/// Waker slots, reused through a free list (connections come and go).
#[derive(Default)]
struct Slots {
    wakers: Vec<Option<Waker>>,
    free: Vec<usize>,
}

impl Slots {
    fn insert(&mut self, waker: Waker) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.wakers[i] = Some(waker);
                i
            }
            None => {
                self.wakers.push(Some(waker));
                self.wakers.len() - 1
            }
        }
    }

    fn remove(&mut self, slot: usize) {
        self.wakers[slot] = None;
        self.free.push(slot);
    }
}

/// What [`Drain`] needs from a connection.
trait DrainableConnection: Future {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S> DrainableConnection for http1::UpgradeableConnection<I, S>
where
    Self: Future,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::ResBody: 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        http1::UpgradeableConnection::graceful_shutdown(self)
    }
}

impl<I, S, E> DrainableConnection for http2::Connection<I, S, E>
where
    Self: Future,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S::ResBody: http_body::Body + 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, S::ResBody>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        http2::Connection::graceful_shutdown(self)
    }
}

struct Watched<C> {
    conn: Pin<Box<C>>,
    entered: Entered,
    slot: Option<usize>,
    shutting_down: bool,
}

impl<C: DrainableConnection> Future for Watched<C> {
    type Output = C::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let this = &mut *self;
        if !this.shutting_down {
            if this.slot.is_none() {
                // A spawned task keeps its waker, so registering once is enough.
                let drain = &this.entered.drain;
                let mut open = drain.open.lock().unwrap_or_else(|e| e.into_inner());
                this.slot = Some(open.insert(cx.waker().clone()));
            }
            // Read after registering: a drain that started in between has
            // either seen our waker or is seen here.
            if this.entered.drain.draining.load(Ordering::SeqCst) {
                this.shutting_down = true;
                this.conn.as_mut().graceful_shutdown();
            }
        }
        this.conn.as_mut().poll(cx)
    }
}

impl<C> Drop for Watched<C> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            let drain = &self.entered.drain;
            let mut open = drain.open.lock().unwrap_or_else(|e| e.into_inner());
            open.remove(slot);
        }
        // Dropping `entered` next ends the connection's count.
    }
}

#[cfg(test)]
mod tests {
    use super::{read_opening, Slots, H2_PREFACE};
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

    #[test]
    fn slots_are_reused_after_removal() {
        let mut slots = Slots::default();
        let a = slots.insert(std::task::Waker::noop().clone());
        let b = slots.insert(std::task::Waker::noop().clone());
        assert_ne!(a, b);
        slots.remove(a);
        assert_eq!(slots.wakers.iter().flatten().count(), 1);
        assert_eq!(slots.insert(std::task::Waker::noop().clone()), a);
        assert_eq!(slots.wakers.len(), 2);
    }
}
