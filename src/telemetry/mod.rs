//! What the proxy tells its operators: logging setup (here), the access
//! log line ([`access`]) and the per-request record ([`request`]), the
//! batched log writer ([`writer`]), and Prometheus metrics ([`metrics`]).
//!
//! Secrets cannot reach the logs through us (they are
//! [`crate::secret::Secret`]s and sensitive header values); the filter also
//! keeps the HTTP libraries' own debug output, which can show header
//! details, at `info` unless asked for by name.

pub mod access;
pub mod metrics;
pub mod request;
pub mod writer;

use tracing_subscriber::EnvFilter;

pub use metrics::{Metrics, RouteMetrics};
pub use request::{record_request, AccessInfo, RouteTag};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Keeps the log writer thread alive; drop it last (it flushes).
pub type LogGuard = Option<writer::FlushGuard>;

/// Installs the global subscriber. `RUST_LOG` as usual, default `info`.
/// Lines are formatted on the request's thread and written to stderr in
/// batches by a writer thread (see [`writer`]): no request waits
/// on stderr, and under load many lines share one write(2).
pub fn init(format: LogFormat) -> LogGuard {
    let spec = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    let mut filter = EnvFilter::try_new(&spec).unwrap_or_else(|_| EnvFilter::new("info"));
    for noisy in ["hyper", "hyper_util", "reqwest", "rustls", "h2"] {
        if !spec.contains(noisy) {
            filter =
                filter.add_directive(format!("{noisy}=info").parse().expect("static directive"));
        }
    }
    // Colours only on a terminal: log files and container logs get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) = match writer::spawn(std::io::stderr(), writer::LINGER) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("authproxy: cannot start the log writer thread: {e}");
            return None;
        }
    };
    access::install(writer.clone(), format == LogFormat::Json);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    let installed = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    installed.ok().map(|()| guard)
}
