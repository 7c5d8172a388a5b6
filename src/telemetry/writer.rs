//! Where log lines go: a shared buffer that a writer thread empties to
//! stderr in batches.
//!
//! Why not `tracing_appender::non_blocking`: it sends every line through a
//! channel whose receiver spins (`sched_yield`) and then writes once per
//! line. Under load that cost more CPU than proxying the request did (two
//! `sched_yield`, a futex wake and a `write(2)` per request). Here a line
//! costs one uncontended mutex lock and a copy; the writer thread wakes
//! when the buffer stops being empty, gathers for [`LINGER`], and writes
//! everything in one `write(2)`.
//!
//! A stalled stderr (a full pipe nobody reads) must not stall requests,
//! `/health` included: once [`MAX_PENDING`] bytes are waiting, new lines
//! are dropped and counted (`authproxy_log_lines_dropped_total`, see
//! [`LINES_DROPPED`]), and one warning says so when dropping starts.
//! Warnings and errors are written at once, not after the linger.

use std::io::Write;
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// How long the writer gathers lines after the first one arrives.
pub const LINGER: Duration = Duration::from_millis(50);
/// Write early once this much is waiting.
const HIGH_WATER: usize = 64 * 1024;
/// Lines are dropped (rather than make loggers wait) beyond this.
pub const MAX_PENDING: usize = 4 * 1024 * 1024;

/// Log lines dropped because the output could not keep up, in this
/// process (registered as `authproxy_log_lines_dropped_total`).
pub static LINES_DROPPED: LazyLock<Counter> = LazyLock::new(Counter::default);

#[derive(Default)]
struct Pending {
    buf: Vec<u8>,
    /// A warning or error is waiting: write without lingering.
    urgent: bool,
    closed: bool,
    /// A line was dropped since the writer last took the buffer.
    dropping: bool,
    /// The current run of drops has been warned about.
    warned: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    /// Wakes the writer thread.
    work: Condvar,
    /// Bytes waiting beyond which lines are dropped.
    max_pending: usize,
    dropped: Counter,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // A panic while holding this lock cannot leave the buffer in a
        // state worse than "some bytes of a line"; keep logging.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn append(&self, line: &[u8], urgent: bool) {
        let mut p = self.lock();
        if p.buf.len() >= self.max_pending {
            p.dropping = true;
            drop(p);
            self.dropped.inc();
            return;
        }
        let was_empty = p.buf.is_empty();
        let below_high = p.buf.len() < HIGH_WATER;
        p.buf.extend_from_slice(line);
        let crossed_high = below_high && p.buf.len() >= HIGH_WATER;
        let newly_urgent = urgent && !p.urgent;
        p.urgent |= urgent;
        drop(p);
        // Notifying costs a syscall: only when the writer has a reason to
        // change what it is waiting for.
        if was_empty || crossed_high || newly_urgent {
            self.work.notify_one();
        }
    }
}

/// The `MakeWriter` handed to the fmt subscriber.
#[derive(Clone)]
pub struct BatchWriter {
    shared: Arc<Shared>,
}

/// Flushes what is pending and stops the writer thread when dropped: keep
/// it alive for as long as the process logs.
pub struct FlushGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the writer thread for `out`, gathering lines for `linger`
/// ([`LINGER`] outside tests).
pub fn spawn<W: Write + Send + 'static>(
    out: W,
    linger: Duration,
) -> std::io::Result<(BatchWriter, FlushGuard)> {
    spawn_with(out, linger, MAX_PENDING, LINES_DROPPED.clone())
}

/// As [`spawn`], dropping lines beyond `max_pending` waiting bytes and
/// counting them in `dropped`.
fn spawn_with<W: Write + Send + 'static>(
    out: W,
    linger: Duration,
    max_pending: usize,
    dropped: Counter,
) -> std::io::Result<(BatchWriter, FlushGuard)> {
    let shared = Arc::new(Shared {
        pending: Mutex::default(),
        work: Condvar::new(),
        max_pending,
        dropped,
    });
    let for_thread = shared.clone();
    let thread = std::thread::Builder::new()
        .name("authproxy-log".into())
        .spawn(move || write_loop(&for_thread, out, linger))?;
    Ok((
        BatchWriter {
            shared: shared.clone(),
        },
        FlushGuard {
            shared,
            thread: Some(thread),
        },
    ))
}

fn write_loop<W: Write>(shared: &Shared, mut out: W, linger: Duration) {
    let mut batch = Vec::with_capacity(HIGH_WATER);
    loop {
        let mut p = shared.lock();
        while p.buf.is_empty() && !p.closed {
            p = shared.work.wait(p).unwrap_or_else(|e| e.into_inner());
        }
        if !p.urgent && !p.closed && p.buf.len() < HIGH_WATER {
            p = shared
                .work
                .wait_timeout_while(p, linger, |p| {
                    !p.urgent && !p.closed && p.buf.len() < HIGH_WATER
                })
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        std::mem::swap(&mut p.buf, &mut batch);
        p.urgent = false;
        let closed = p.closed && p.buf.is_empty();
        // One warning per run of drops; a batch taken without new drops
        // ends the run.
        let warn = p.dropping && !p.warned;
        p.warned = p.dropping;
        p.dropping = false;
        drop(p);
        if warn {
            // Goes through the subscriber (and so into the buffer just
            // emptied), formatted and filtered like every other line.
            tracing::warn!(
                dropped_total = shared.dropped.get(),
                "log output cannot keep up: {} MiB of lines are waiting; dropping new lines until it catches up (counted in authproxy_log_lines_dropped_total)",
                shared.max_pending >> 20
            );
        }
        // stderr failing (closed pipe) is not worth crashing over, and
        // there is nowhere left to report it.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        batch.clear();
        if batch.capacity() > 4 * HIGH_WATER {
            // A burst grew it; do not keep megabytes for idle times.
            batch.shrink_to(HIGH_WATER);
        }
        if closed {
            return;
        }
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.work.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One event's output; tracing-subscriber formats a whole line first and
/// then writes it with one `write_all`.
pub struct LineSink<'a> {
    shared: &'a Shared,
    urgent: bool,
}

impl Write for LineSink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.shared.append(buf, self.urgent);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for BatchWriter {
    type Writer = LineSink<'a>;

    fn make_writer(&'a self) -> LineSink<'a> {
        LineSink {
            shared: &self.shared,
            urgent: false,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> LineSink<'a> {
        LineSink {
            shared: &self.shared,
            // Level order: ERROR < WARN < INFO.
            urgent: *meta.level() <= Level::WARN,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output the test can read.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_arrives_in_order_and_drop_flushes() {
        let out = Captured::default();
        let (writer, guard) = spawn(out.clone(), LINGER).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let w = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..20_000 {
                        let line = format!("t{t} line {i}\n");
                        w.make_writer().write_all(line.as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(guard);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let mut next = [0usize; 4];
        for line in text.lines() {
            let (t, i) = line.split_once(" line ").unwrap();
            let t: usize = t[1..].parse().unwrap();
            assert_eq!(
                i.parse::<usize>().unwrap(),
                next[t],
                "thread {t} out of order"
            );
            next[t] += 1;
        }
        assert_eq!(next, [20_000; 4]);
    }

    #[test]
    fn a_warning_flushes_at_once_with_what_came_before() {
        let out = Captured::default();
        // A linger no test run survives: only the warning can flush.
        let (writer, _guard) = spawn(out.clone(), Duration::from_secs(3600)).unwrap();
        let info = event_metadata(Level::INFO);
        writer
            .make_writer_for(&info)
            .write_all(b"before\n")
            .unwrap();
        let warn = event_metadata(Level::WARN);
        writer
            .make_writer_for(&warn)
            .write_all(b"careful\n")
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while out.0.lock().unwrap().len() < b"before\ncareful\n".len() {
            assert!(std::time::Instant::now() < deadline, "warning not written");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(&*out.0.lock().unwrap(), b"before\ncareful\n");
    }

    /// An output whose writes wait until the test opens its gate, and that
    /// says when the first write started.
    struct Stalled {
        gate: Arc<(Mutex<bool>, Condvar)>,
        started: Option<std::sync::mpsc::Sender<()>>,
        out: Captured,
    }

    impl Write for Stalled {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Some(tx) = self.started.take() {
                let _ = tx.send(());
            }
            let (open, cv) = &*self.gate;
            let mut open = open.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
            self.out.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_output_drops_and_counts_lines_instead_of_blocking_loggers() {
        let out = Captured::default();
        let gate = Arc::new((Mutex::new(false), Condvar::new()));
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let stalled = Stalled {
            gate: gate.clone(),
            started: Some(started_tx),
            out: out.clone(),
        };
        let dropped = Counter::<u64>::default();
        let (writer, guard) = spawn_with(stalled, Duration::ZERO, 1000, dropped.clone()).unwrap();
        writer.make_writer().write_all(b"first\n").unwrap();
        // The writer thread is now stuck writing `first`.
        started_rx.recv().unwrap();

        // 100 lines of 100 bytes against a 1000-byte limit. Before the
        // fix the 11th line blocked until the output moved again, which
        // it never does here: the watchdog below would fire.
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let w = writer.clone();
        std::thread::spawn(move || {
            for i in 0..100 {
                let line = format!("{i:099}\n");
                w.make_writer().write_all(line.as_bytes()).unwrap();
            }
            let _ = done_tx.send(());
        });
        // A deadlock watchdog, not a time limit: 100 appends take
        // microseconds.
        done_rx
            .recv_timeout(Duration::from_secs(120))
            .expect("loggers blocked on a stalled output");
        assert_eq!(dropped.get(), 90, "10 lines fit in 1000 bytes");

        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        drop(guard);
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "first");
        let kept: Vec<String> = (0..10).map(|i| format!("{i:099}")).collect();
        assert_eq!(&lines[1..], &kept[..], "the first 10 are kept, in order");
    }

    fn event_metadata(level: Level) -> tracing::Metadata<'static> {
        tracing::Metadata::new(
            "event",
            "test",
            level,
            None,
            None,
            None,
            tracing::field::FieldSet::new(&[], tracing::callsite::Identifier(&CALLSITE)),
            tracing::metadata::Kind::EVENT,
        )
    }

    struct NoCallsite;
    static CALLSITE: NoCallsite = NoCallsite;
    impl tracing::callsite::Callsite for NoCallsite {
        fn set_interest(&self, _: tracing::subscriber::Interest) {}
        fn metadata(&self) -> &tracing::Metadata<'_> {
            unreachable!("only identifies test metadata")
        }
    }
}
