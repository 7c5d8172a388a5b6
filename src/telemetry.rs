//! Logging setup. Secrets cannot reach the logs through us (they are
//! [`crate::secret::Secret`]s and sensitive header values); the filter also
//! keeps the HTTP libraries' own debug output, which can show header
//! details, at `info` unless asked for by name.

use std::time::Instant;

use std::sync::Arc;

use http::{Method, Response};
use tracing_subscriber::EnvFilter;

use crate::metrics::RequestLabels;
use crate::proxy::AccessInfo;
use crate::runtime::Runtime;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Keeps the log writer thread alive; drop it last (it flushes).
pub type LogGuard = Option<crate::logwriter::FlushGuard>;

/// Installs the global subscriber. `RUST_LOG` as usual, default `info`.
/// Lines are formatted on the request's thread and written to stderr in
/// batches by a writer thread (see [`crate::logwriter`]): no request waits
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
    let (writer, guard) = match crate::logwriter::spawn(std::io::stderr(), crate::logwriter::LINGER)
    {
        Ok(w) => w,
        Err(e) => {
            eprintln!("authproxy: cannot start the log writer thread: {e}");
            return None;
        }
    };
    crate::accesslog::install(writer.clone(), format == LogFormat::Json);
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

/// The route label of requests that matched no route (local endpoints too).
static NO_ROUTE: std::sync::LazyLock<Arc<str>> = std::sync::LazyLock::new(|| Arc::from("-"));

/// Counts a finished request and writes its access-log line.
pub fn record_request<B>(
    runtime: &Runtime,
    method: &Method,
    path: &str,
    info: Option<&AccessInfo>,
    response: &Response<B>,
    started: Instant,
) {
    let error = response
        .headers()
        .get("x-authproxy-error")
        .and_then(|v| v.to_str().ok());
    let status = response.status().as_u16();
    let upstream_latency = info.and_then(|i| i.upstream_latency);
    match info {
        Some(i) => {
            let handles = runtime.route_metrics(i.route_index);
            handles.count(&runtime.metrics, status);
            if let Some(latency) = upstream_latency {
                handles.observe_latency(latency);
            }
        }
        None => {
            runtime
                .metrics
                .requests
                .get_or_create(&RequestLabels {
                    route: NO_ROUTE.clone(),
                    status,
                })
                .inc();
        }
    }
    crate::accesslog::write(&crate::accesslog::Entry {
        method: method.as_str(),
        path,
        route: info.map_or(&*NO_ROUTE, |i| &i.route),
        status,
        upstream_us: upstream_latency.map(|d| d.as_micros() as u64),
        total_us: started.elapsed().as_micros() as u64,
        replayed: info.is_some_and(|i| i.replayed),
        error,
    });
}
