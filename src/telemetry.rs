//! Logging setup. Secrets cannot reach the logs through us (they are
//! [`crate::secret::Secret`]s and sensitive header values); the filter also
//! keeps the HTTP libraries' own debug output, which can show header
//! details, at `info` unless asked for by name.

use std::time::Instant;

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tracing_subscriber::EnvFilter;

use crate::metrics::{RequestLabels, RouteLabels};
use crate::proxy::AccessInfo;
use crate::runtime::AppState;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Keeps the log writer thread alive; drop it last (it flushes).
pub type LogGuard = Option<tracing_appender::non_blocking::WorkerGuard>;

/// Installs the global subscriber. `RUST_LOG` as usual, default `info`.
/// Lines are formatted on the request's thread and written by a writer
/// thread through a buffer flushed whenever the queue is empty: under load
/// many lines share one write(2), and no request waits on stderr. The queue
/// blocks rather than drops when full.
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
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        // The default queue (128k lines) is allocated and touched up front:
        // ~4 MiB of idle RSS. 8k lines absorb any burst a flush cannot.
        .buffered_lines_limit(8192)
        .thread_name("authproxy-log")
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stderr(),
        ));
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

/// One line per request: method, path without query, route, status,
/// latencies. No headers, no query strings, no bodies.
pub async fn access_log(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let response = next.run(req).await;
    let info = response.extensions().get::<AccessInfo>();
    let error = response
        .headers()
        .get("x-authproxy-error")
        .and_then(|v| v.to_str().ok());
    let route = info
        .map(|i| i.route.clone())
        .unwrap_or_else(|| NO_ROUTE.clone());
    let status = response.status().as_u16();
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            route: route.clone(),
            status,
        })
        .inc();
    if let Some(latency) = info.and_then(|i| i.upstream_latency) {
        state
            .metrics
            .upstream_latency
            .get_or_create(&RouteLabels { route })
            .observe(latency.as_secs_f64());
    }
    tracing::info!(
        target: "authproxy::access",
        method = %method,
        path = %path,
        route = info.map(|i| &*i.route),
        status = response.status().as_u16(),
        upstream_ms = info.and_then(|i| i.upstream_latency).map(|d| d.as_secs_f64() * 1000.0),
        total_ms = started.elapsed().as_secs_f64() * 1000.0,
        replayed = info.is_some_and(|i| i.replayed),
        error,
        "request"
    );
    response
}
