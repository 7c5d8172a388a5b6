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

/// The `grpc-status` in a gRPC answer's head or trailers.
pub fn grpc_status(headers: &http::HeaderMap) -> Option<u16> {
    let v = headers.get(crate::http::headers::GRPC_STATUS)?;
    std::str::from_utf8(v.as_bytes()).ok()?.trim().parse().ok()
}
pub use request::{
    record_request, request_id, AccessInfo, Outcome, RequestLine, RouteTag, X_REQUEST_ID,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Reports a failure of a command (a config error, an address it cannot
/// listen on, a store it cannot open) on stderr, in the format of
/// `--log-format`: `authproxy: <message>` as text, or one JSON object like
/// every other line (`timestamp`, `level`, `message`, `target`, and
/// `fields`' entries). Once logging is set up ([`init`]) it goes through
/// the log instead, in order with the lines before it.
pub fn report_error(format: LogFormat, message: &str, fields: Option<serde_json::Value>) {
    use std::io::Write as _;
    if tracing::dispatcher::has_been_set() {
        match &fields {
            Some(f) => tracing::error!(target: "authproxy", details = %f, "{message}"),
            None => tracing::error!(target: "authproxy", "{message}"),
        }
        return;
    }
    let line = match format {
        LogFormat::Text => format!("authproxy: {message}\n"),
        LogFormat::Json => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            let mut timestamp = crate::clock::rfc3339(now.as_secs());
            timestamp.pop();
            let mut object = serde_json::json!({
                "timestamp": format!("{timestamp}.{:06}Z", now.subsec_micros()),
                "level": "ERROR",
                "message": message,
            });
            if let Some(serde_json::Value::Object(extra)) = fields {
                for (k, v) in extra {
                    object[k] = v;
                }
            }
            object["target"] = "authproxy".into();
            format!("{object}\n")
        }
    };
    // Nowhere left to report a failing stderr.
    let _ = std::io::stderr().write_all(line.as_bytes());
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
            report_error(
                format,
                &format!("cannot start the log writer thread: {e}"),
                None,
            );
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
