//! Request bodies kept for a replay, and the one budget they all share
//! (`server.max_buffered_bytes`).
//!
//! Every buffered body holds a [`Charge`] on the [`BufferBudget`] for as
//! long as any copy of it lives; dropping the last copy gives the bytes
//! back. A body that does not fit streams without replay instead.
//!
//! Where the bytes live: in memory while all buffers together hold less
//! than a sixteenth of the budget (16 MiB of the default 256 MiB), in one
//! shared, unlinked temp file beyond that, as nginx keeps request bodies
//! beyond `client_body_buffer_size` in temp files. Without it, 200
//! clients that each send 1 MiB - 1 of a 1 MiB body and stop held 200 MiB
//! of the proxy's memory (220 MB RSS measured) for as long as they liked.
//! The file is opened once at start (one file descriptor, however many
//! bodies spill), in a private folder (0700) under `$TMPDIR`, with
//! `O_TMPFILE` where the file system has it (never a name), else created
//! exclusively (0600) and unlinked at once. It is cut into 64 KiB blocks;
//! a body takes blocks as it grows and gives them back when dropped (the
//! file system is told they are free again, so the file holds no more
//! disk, or tmpfs memory, than the bodies alive). Without a writable
//! `$TMPDIR` nothing spills, and the budget is the in-memory share alone.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

mod buffered;
mod writer;

pub use buffered::Buffered;
pub use writer::{BufferWriter, Refused};

/// The spill file's unit of allocation.
const BLOCK: u64 = 64 * 1024;

/// Spill-file writes at once (each on a thread of the blocking pool): a
/// flood of stalled bodies must not grow the pool by a thread per body
/// (200 of them: 55 threads without this limit, 15 with it).
const SPILL_WRITES: usize = 4;

/// The part of the budget kept in memory: 1 / MEMORY_SHARE of it.
const MEMORY_SHARE: u64 = 16;

/// Where a buffer puts the bytes it is given.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Memory,
    File,
}

/// What the budget reports to the metrics.
#[derive(Clone, Default)]
pub struct BufferMetrics {
    /// Bytes received and kept in memory by replay buffers.
    pub memory: Gauge,
    /// Bytes received and kept in the spill file.
    pub file: Gauge,
    /// Bodies that streamed without replay because the budget was in use.
    pub refused: Counter,
}

/// All replay buffers together hold at most `limit` bytes.
pub struct BufferBudget {
    limit: u64,
    memory_limit: u64,
    state: Mutex<Usage>,
    spill: Option<Spill>,
    metrics: BufferMetrics,
    /// Spill-file writes at once (each on a thread of the blocking pool).
    writes: tokio::sync::Semaphore,
}

#[derive(Default)]
struct Usage {
    /// Bytes charged, in memory and in the file.
    total: u64,
    /// Of which in memory.
    memory: u64,
    /// Blocks of the file given back, reused first.
    free_blocks: Vec<u32>,
    /// Blocks ever used: the next new one.
    next_block: u32,
}

struct Spill {
    file: Arc<File>,
    /// Removed when the budget is dropped (at exit).
    dir: tempfile::TempDir,
}

impl BufferBudget {
    /// A budget of `limit` bytes whose buffers spill into a private folder
    /// under `$TMPDIR`. When that cannot be made, nothing spills: logged,
    /// and the budget shrinks to its in-memory share.
    pub fn new(limit: u64, metrics: BufferMetrics) -> BufferBudget {
        let budget = Self::with_spill_dir(limit, metrics, Some(&std::env::temp_dir()));
        tracing::info!(
            max_buffered_bytes = budget.limit,
            in_memory_bytes = budget.memory_limit.min(budget.limit),
            spill_folder = %budget.describe(),
            "request bodies kept for replays"
        );
        budget
    }

    /// As [`BufferBudget::new`], with the spill file under `dir` (`None`:
    /// nothing spills).
    pub fn with_spill_dir(limit: u64, metrics: BufferMetrics, dir: Option<&Path>) -> BufferBudget {
        let memory_limit = limit / MEMORY_SHARE;
        let spill = match dir.map(open_spill) {
            None => None,
            Some(Ok(spill)) => Some(spill),
            Some(Err((path, e))) => {
                tracing::warn!(
                    folder = %path.display(),
                    error = %e,
                    memory_bytes = memory_limit,
                    "cannot create a spill file for request bodies kept for replay; \
                     they are held in memory only, and at most the in-memory share of \
                     server.max_buffered_bytes (set TMPDIR to a writable folder to fix)"
                );
                None
            }
        };
        let limit = if spill.is_some() { limit } else { memory_limit };
        BufferBudget {
            limit,
            memory_limit,
            state: Mutex::new(Usage::default()),
            spill,
            metrics,
            writes: tokio::sync::Semaphore::new(SPILL_WRITES),
        }
    }

    /// Where bodies beyond the in-memory share go, if anywhere.
    pub fn describe(&self) -> String {
        match &self.spill {
            Some(s) => format!("{}", s.dir.path().display()),
            None => "(nowhere: memory only)".into(),
        }
    }

    /// Starts a buffer for a body of `declared` bytes (reserved at once),
    /// or of unknown length (reserved as it grows). `None` when the
    /// declared length does not fit: the body should stream without replay.
    pub fn writer(self: &Arc<Self>, declared: Option<u64>) -> Option<BufferWriter> {
        let mut charge = Charge {
            budget: self.clone(),
            memory: 0,
            file: 0,
            blocks: Vec::new(),
            held_memory: 0,
            held_file: 0,
        };
        let mode = match declared {
            None | Some(0) => Mode::Memory,
            Some(n) => match self.reserve(&mut charge, n) {
                Some(mode) => mode,
                None => {
                    self.metrics.refused.inc();
                    return None;
                }
            },
        };
        Some(BufferWriter::new(
            charge,
            mode,
            !matches!(declared, Some(n) if n > 0),
        ))
    }

    /// Reserves `n` more bytes for `charge`: in memory if the share has
    /// room, else in the file (whole blocks). `None`: the budget is full.
    fn reserve(&self, charge: &mut Charge, n: u64) -> Option<Mode> {
        let mut usage = self.lock();
        if usage.memory + n <= self.memory_limit && usage.total + n <= self.limit {
            usage.memory += n;
            usage.total += n;
            charge.memory += n;
            return Some(Mode::Memory);
        }
        drop(usage);
        self.reserve_file(charge, n).then_some(Mode::File)
    }

    /// Reserves `n` more bytes in the file (whole blocks).
    fn reserve_file(&self, charge: &mut Charge, n: u64) -> bool {
        if self.spill.is_none() {
            return false;
        }
        let blocks = n.div_ceil(BLOCK) * BLOCK;
        let mut usage = self.lock();
        if usage.total + blocks > self.limit {
            return false;
        }
        usage.total += blocks;
        charge.file += blocks;
        true
    }

    /// One more block of the file for a body that already holds the bytes.
    fn take_block(&self) -> u32 {
        let mut usage = self.lock();
        match usage.free_blocks.pop() {
            Some(b) => b,
            None => {
                usage.next_block += 1;
                usage.next_block - 1
            }
        }
    }

    fn release(&self, charge: &mut Charge) {
        let blocks = std::mem::take(&mut charge.blocks);
        {
            let mut usage = self.lock();
            usage.memory -= charge.memory;
            usage.total -= charge.memory + charge.file;
            usage.free_blocks.extend_from_slice(&blocks);
        }
        self.metrics.memory.dec_by(charge.held_memory as i64);
        self.metrics.file.dec_by(charge.held_file as i64);
        if let Some(spill) = &self.spill {
            // Tells the file system the blocks are free (a metadata
            // update, quick): the file holds no more disk, or tmpfs
            // memory, than the bodies alive. Best effort.
            for b in blocks {
                let _ = rustix::fs::fallocate(
                    &*spill.file,
                    rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
                    u64::from(b) * BLOCK,
                    BLOCK,
                );
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Usage> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn file(&self) -> Option<&Arc<File>> {
        self.spill.as_ref().map(|s| &s.file)
    }
}

fn open_spill(tmp: &Path) -> Result<Spill, (PathBuf, io::Error)> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("authproxy-bodies-")
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(tmp)
        .map_err(|e| (tmp.to_path_buf(), e))?;
    // O_TMPFILE where supported, else an exclusive 0600 file unlinked at
    // once: the bodies never have a name another process could open.
    let file = tempfile::tempfile_in(dir.path()).map_err(|e| (dir.path().to_path_buf(), e))?;
    Ok(Spill {
        file: Arc::new(file),
        dir,
    })
}

/// What one buffered body holds of the budget; given back when dropped.
struct Charge {
    budget: Arc<BufferBudget>,
    /// Bytes reserved in memory.
    memory: u64,
    /// Bytes reserved in the file (whole blocks).
    file: u64,
    /// Blocks of the file in use (at most `file / BLOCK`).
    blocks: Vec<u32>,
    /// Bytes received and kept, in memory and in the file (the metrics).
    held_memory: u64,
    held_file: u64,
}

impl Drop for Charge {
    fn drop(&mut self) {
        let budget = self.budget.clone();
        budget.release(self);
    }
}

#[cfg(test)]
mod tests;
