//! A buffered body, sent (and sent again) from memory and the file.

use std::fs::File;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::task::JoinHandle;

use super::{Charge, BLOCK};

/// A body's bytes, shared by its copies; its charge on the budget is
/// given back when the last copy is dropped.
pub(super) struct Stored {
    /// The body's first bytes.
    pub(super) memory: Vec<Bytes>,
    /// The rest: blocks of `file` and the bytes in each.
    pub(super) blocks: Vec<(u32, u32)>,
    pub(super) file: Option<Arc<File>>,
    pub(super) len: u64,
    pub(super) _charge: Charge,
}

/// A request body read in full, sent from memory and the spill file.
/// [`Buffered::again`] sends it once more, for a replay; the budget is
/// charged until the last copy is dropped.
#[derive(Default)]
pub struct Buffered {
    stored: Option<Arc<Stored>>,
    /// The next piece to send: memory chunks, then file blocks.
    next: usize,
    remaining: u64,
    /// A block being read from the file.
    reading: Option<JoinHandle<io::Result<Bytes>>>,
}

impl Buffered {
    pub(super) fn new(stored: Stored) -> Buffered {
        Buffered {
            remaining: stored.len,
            stored: Some(Arc::new(stored)),
            next: 0,
            reading: None,
        }
    }

    /// The whole body from its start, sharing the bytes.
    pub fn again(&self) -> Buffered {
        Buffered {
            stored: self.stored.clone(),
            next: 0,
            remaining: self.len(),
            reading: None,
        }
    }

    pub fn len(&self) -> u64 {
        self.stored.as_ref().map_or(0, |s| s.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl http_body::Body for Buffered {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        if let Some(reading) = &mut this.reading {
            let read = ready!(Pin::new(reading).poll(cx));
            this.reading = None;
            let bytes = read.map_err(io::Error::other)??;
            this.remaining -= bytes.len() as u64;
            return Poll::Ready(Some(Ok(Frame::data(bytes))));
        }
        let Some(stored) = &this.stored else {
            return Poll::Ready(None);
        };
        let i = this.next;
        if let Some(bytes) = stored.memory.get(i) {
            this.next += 1;
            this.remaining -= bytes.len() as u64;
            return Poll::Ready(Some(Ok(Frame::data(bytes.clone()))));
        }
        let Some(&(block, len)) = stored.blocks.get(i - stored.memory.len()) else {
            return Poll::Ready(None);
        };
        this.next += 1;
        let Some(file) = stored.file.clone() else {
            return Poll::Ready(Some(Err(io::Error::other("spill file missing"))));
        };
        this.reading = Some(tokio::task::spawn_blocking(move || {
            let mut buf = vec![0; len as usize];
            file.read_exact_at(&mut buf, u64::from(block) * BLOCK)?;
            Ok(Bytes::from(buf))
        }));
        // Polls the read just started, registering the waker.
        Pin::new(this).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}
