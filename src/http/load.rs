//! `server.max_connections`: how much the clients hold of the proxy at
//! once, counted in [`Unit`]s.
//!
//! A unit is a client connection, from accept until its socket closes (an
//! upgraded connection's tunnel keeps it), or an HTTP/2 stream in flight
//! beyond the first of its connection: each may hold an upstream
//! connection, and so a second file descriptor. The accept loop takes a
//! connection only while fewer than `max` units are held; past that, new
//! connections wait in the kernel's listen backlog. Only HTTP/2 streams
//! can push the count past `max`; one that would take it past
//! `max + `[`HEADROOM`] gets no unit and its request is refused
//! (`503 too_many_connections`).
//!
//! [`Counts`] are what the metrics show of it: connections open and
//! active, requests in flight.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

/// How far HTTP/2 streams may take the count past `max_connections`
/// before their requests are refused.
pub const HEADROOM: usize = 64;

/// The units held, shared by the accept loop and every connection.
#[derive(Clone)]
pub struct Load {
    inner: Arc<Inner>,
}

struct Inner {
    live: AtomicUsize,
    max: usize,
    /// Notified when a unit is given back while the count was at or past
    /// `max` (the accept loop waits for it).
    room: Notify,
    counts: Counts,
}

/// One unit of [`Load`], given back when dropped.
pub struct Unit {
    inner: Arc<Inner>,
    /// A client connection's unit (not an HTTP/2 stream's).
    connection: bool,
}

/// What the server holds now, for the metrics; cloning shares the counts.
/// Updated where the state changes (accept, close, a connection's first
/// request in flight and its last one answered), read at scrape time.
#[derive(Clone, Default)]
pub struct Counts {
    inner: Arc<CountsInner>,
}

#[derive(Default)]
struct CountsInner {
    /// Client connections accepted and not yet closed.
    open: AtomicUsize,
    /// Of those, connections with a request in flight (or an upgraded
    /// connection's tunnel).
    active: AtomicUsize,
    /// Requests handed to the service and not yet answered in full.
    requests: AtomicUsize,
}

impl std::fmt::Debug for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counts")
            .field("open", &self.open())
            .field("active", &self.active())
            .field("requests", &self.requests())
            .finish()
    }
}

impl Counts {
    pub fn open(&self) -> usize {
        self.inner.open.load(Ordering::Relaxed)
    }

    /// Connections with a request in flight, or upgraded to a tunnel.
    pub fn active(&self) -> usize {
        self.inner.active.load(Ordering::Relaxed)
    }

    pub fn requests(&self) -> usize {
        self.inner.requests.load(Ordering::Relaxed)
    }

    /// A request was handed to the service; `first` if its connection had
    /// none in flight (it turns active).
    pub(super) fn request_started(&self, first: bool) {
        self.inner.requests.fetch_add(1, Ordering::Relaxed);
        if first {
            self.inner.active.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A request's answer ended; `last` if its connection has none left in
    /// flight (it turns idle).
    pub(super) fn request_ended(&self, last: bool) {
        self.inner.requests.fetch_sub(1, Ordering::Relaxed);
        if last {
            self.connection_idle();
        }
    }

    /// An active connection turned idle, or an upgraded one closed.
    pub(super) fn connection_idle(&self) {
        self.inner.active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Load {
    pub fn new(max: usize, counts: Counts) -> Load {
        Load {
            inner: Arc::new(Inner {
                live: AtomicUsize::new(0),
                max: max.max(1),
                room: Notify::new(),
                counts,
            }),
        }
    }

    /// The counts the metrics read.
    pub fn counts(&self) -> &Counts {
        &self.inner.counts
    }

    /// Units held now.
    pub fn live(&self) -> usize {
        self.inner.live.load(Ordering::Acquire)
    }

    /// Whether `max` units or more are held: no connection is accepted.
    pub fn is_full(&self) -> bool {
        self.live() >= self.inner.max
    }

    /// Resolves once fewer than `max` units are held.
    pub async fn room(&self) {
        loop {
            let room = self.inner.room.notified();
            tokio::pin!(room);
            // Registered before checking, so a unit given back in between
            // is not missed.
            room.as_mut().enable();
            if !self.is_full() {
                return;
            }
            room.await;
        }
    }

    /// A unit for a connection just accepted (after [`Load::room`]).
    pub fn connection(&self) -> Unit {
        self.inner.live.fetch_add(1, Ordering::AcqRel);
        self.inner.counts.inner.open.fetch_add(1, Ordering::Relaxed);
        Unit {
            inner: self.inner.clone(),
            connection: true,
        }
    }

    /// A unit for an HTTP/2 stream beyond its connection's first; `None`
    /// when that would take the count past `max + HEADROOM`.
    pub fn stream(&self) -> Option<Unit> {
        let before = self.inner.live.fetch_add(1, Ordering::AcqRel);
        if before >= self.inner.max + HEADROOM {
            self.inner.live.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Unit {
            inner: self.inner.clone(),
            connection: false,
        })
    }
}

impl Drop for Unit {
    fn drop(&mut self) {
        if self.connection {
            self.inner.counts.inner.open.fetch_sub(1, Ordering::Relaxed);
        }
        let before = self.inner.live.fetch_sub(1, Ordering::AcqRel);
        if before >= self.inner.max {
            self.inner.room.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;

    #[tokio::test]
    async fn connections_wait_for_room_and_streams_stop_at_the_headroom() {
        let load = Load::new(2, Counts::default());
        let a = load.connection();
        assert!(load.room().now_or_never().is_some());
        let _b = load.connection();
        let mut waiting = Box::pin(load.room());
        assert!(waiting.as_mut().now_or_never().is_none(), "full");

        // HTTP/2 streams go past `max`, up to the headroom.
        let streams: Vec<Unit> = (0..HEADROOM).map(|_| load.stream().unwrap()).collect();
        assert_eq!(load.live(), 2 + HEADROOM);
        assert!(load.stream().is_none());
        assert_eq!(load.live(), 2 + HEADROOM);
        drop(streams);
        assert!(waiting.as_mut().now_or_never().is_none(), "still full");

        assert_eq!(load.counts().open(), 2, "streams are not connections");
        drop(a);
        waiting.await;
        assert_eq!(load.live(), 1);
        assert_eq!(load.counts().open(), 1);
    }
}
