//! Reading a body into its buffer: memory first, then blocks of the file.

use std::io;
use std::os::unix::fs::FileExt;

use bytes::{Bytes, BytesMut};

use super::buffered::{Buffered, Stored};
use super::{Charge, Mode, BLOCK};

/// A body being read into a buffer (see [`BufferBudget::writer`]): its
/// first bytes in memory, the rest (once the in-memory share is used up)
/// in blocks of the file.
///
/// Kept in memory are copies of exactly the bytes received, not the
/// chunks hyper handed over: those share allocations with hyper's read
/// buffer, and kept, they held about half as much again as the body.
pub struct BufferWriter {
    charge: Charge,
    /// A body of declared length: one buffer of that size.
    whole: Option<BytesMut>,
    /// A body of unknown length: one copy per chunk.
    chunks: Vec<Bytes>,
    /// Blocks of the file and the bytes in each, in order.
    blocks: Vec<(u32, u32)>,
    len: u64,
    /// Of `len`, the bytes in the file.
    file_len: u64,
    mode: Mode,
    /// Of unknown length: the charge grows with each chunk.
    growing: bool,
}

/// The chunk that did not fit (the budget is full, or the file could not
/// be written): stream it, after what was kept, and the rest.
pub struct Refused(pub Bytes);

impl BufferWriter {
    /// `growing`: of unknown length (else `charge` holds it all already).
    pub(super) fn new(charge: Charge, mode: Mode, growing: bool) -> BufferWriter {
        BufferWriter {
            charge,
            whole: None,
            chunks: Vec::new(),
            blocks: Vec::new(),
            len: 0,
            file_len: 0,
            mode,
            growing,
        }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keeps `chunk`. Refused when the budget has no room for it (only a
    /// body of unknown length grows) or the spill file failed.
    pub async fn push(&mut self, chunk: Bytes) -> Result<(), Refused> {
        if chunk.is_empty() {
            return Ok(());
        }
        let n = chunk.len() as u64;
        if self.growing && !self.grow(n) {
            self.charge.budget.metrics.refused.inc();
            return Err(Refused(chunk));
        }
        match self.mode {
            Mode::Memory if self.growing => self.chunks.push(Bytes::copy_from_slice(&chunk)),
            Mode::Memory => {
                let reserved = self.charge.memory as usize;
                self.whole
                    .get_or_insert_with(|| BytesMut::with_capacity(reserved))
                    .extend_from_slice(&chunk);
            }
            Mode::File => {
                if let Err(e) = self.write(chunk.clone()).await {
                    tracing::warn!(error = %e, "writing a request body to the spill file failed; it streams without replay");
                    return Err(Refused(chunk));
                }
                self.file_len += n;
            }
        }
        let metrics = &self.charge.budget.metrics;
        match self.mode {
            Mode::Memory => {
                self.charge.held_memory += n;
                metrics.memory.inc_by(n as i64);
            }
            Mode::File => {
                self.charge.held_file += n;
                metrics.file.inc_by(n as i64);
            }
        }
        self.len += n;
        Ok(())
    }

    /// Reserves room for `n` more bytes of a body of unknown length: in
    /// memory while the share has room, then in the file for good.
    fn grow(&mut self, n: u64) -> bool {
        let budget = self.charge.budget.clone();
        match self.mode {
            Mode::Memory => match budget.reserve(&mut self.charge, n) {
                Some(mode) => {
                    self.mode = mode;
                    true
                }
                None => false,
            },
            Mode::File => {
                // The last block may have room left.
                let room = self.charge.file - self.file_len;
                n <= room || budget.reserve_file(&mut self.charge, n - room)
            }
        }
    }

    /// Appends `chunk` to the body's blocks: one blocking write task per
    /// chunk, whatever blocks it spans.
    async fn write(&mut self, mut chunk: Bytes) -> io::Result<()> {
        let budget = self.charge.budget.clone();
        let Some(file) = budget.file().cloned() else {
            return Err(io::Error::other("no spill file"));
        };
        let mut pieces: Vec<(u64, Bytes)> = Vec::with_capacity(2);
        while !chunk.is_empty() {
            let (block, filled) = match self.blocks.last() {
                Some(&(block, filled)) if u64::from(filled) < BLOCK => (block, filled),
                _ => {
                    let b = budget.take_block();
                    self.charge.blocks.push(b);
                    self.blocks.push((b, 0));
                    (b, 0)
                }
            };
            let take = (BLOCK - u64::from(filled)).min(chunk.len() as u64) as usize;
            pieces.push((
                u64::from(block) * BLOCK + u64::from(filled),
                chunk.split_to(take),
            ));
            if let Some(last) = self.blocks.last_mut() {
                last.1 = filled + take as u32;
            }
        }
        let _permit = budget.writes.acquire().await.map_err(io::Error::other)?;
        tokio::task::spawn_blocking(move || {
            for (offset, bytes) in pieces {
                file.write_all_at(&bytes, offset)?;
            }
            Ok(())
        })
        .await
        .map_err(io::Error::other)?
    }

    /// The buffered body, ready to be sent (and sent again).
    pub fn finish(mut self) -> Buffered {
        if let Some(whole) = self.whole.take() {
            self.chunks.push(whole.freeze());
        }
        let file = match self.file_len {
            0 => None,
            _ => self.charge.budget.file().cloned(),
        };
        Buffered::new(Stored {
            memory: self.chunks,
            blocks: self.blocks,
            file,
            len: self.len,
            _charge: self.charge,
        })
    }
}
