//! The command line: `run` (default), `check [--probe]`, `demo`, `health`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::config::{Config, ProviderKind, StoreConfig, DEFAULT_CONFIG_PATH};
use crate::credentials::OAuthProvider;
use crate::oauth::TokenClient;
use crate::runtime::AppState;
use crate::telemetry::{self, LogFormat};

/// Prints to stdout, ignoring a closed pipe (`authproxy check | head`)
/// instead of panicking like `println!`.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Exit code for a bad config or bad usage (sysexits EX_USAGE).
pub const EXIT_CONFIG: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "authproxy",
    version,
    about = "Local reverse proxy that injects API credentials and keeps OAuth2 tokens fresh"
)]
pub struct Cli {
    /// Config file [default: $AUTHPROXY_CONFIG, else config/authproxy.toml]
    #[arg(long, global = true, env = "AUTHPROXY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format
    #[arg(long, global = true, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve (the default)
    Run,
    /// Validate config and secrets, print the route table; exit 0 or 1
    Check {
        /// Also run the primary grant of each oauth2 provider once (the token is neither stored nor printed)
        #[arg(long)]
        probe: bool,
    },
    /// Mock APIs of every provider style on loopback, with the proxy in front
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: String,
    },
    /// Exit 0 if the proxy answers /_authproxy/health (for container health checks)
    Health {
        /// [default: derived from the config's listen address, else http://127.0.0.1:8080/_authproxy/health]
        #[arg(long)]
        url: Option<String>,
    },
}

/// Entry point used by `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // `TOKIO_WORKER_THREADS=1` asks for one thread: the current-thread
    // scheduler does that without the work-stealing machinery (atomics and
    // cross-thread wake-ups on every task switch).
    let one_thread = std::env::var("TOKIO_WORKER_THREADS").is_ok_and(|v| v.trim() == "1");
    let mut builder = if one_thread {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("authproxy: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let config_path = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
    crate::install_crypto_provider();
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => runtime.block_on(run(&config_path, cli.log_format)),
        Command::Check { probe } => runtime.block_on(check(&config_path, probe)),
        Command::Demo { listen } => runtime.block_on(crate::demo::run(&listen, cli.log_format)),
        Command::Health { url } => runtime.block_on(health(url, &config_path)),
    }
}

fn load(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("authproxy: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

async fn run(path: &Path, format: LogFormat) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let _log = telemetry::init(format);
    let listen = config.server.listen;
    let state = match AppState::new(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("authproxy: {e}");
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("authproxy: cannot listen on {listen}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    tracing::info!(address = %addr, config = %path.display(), store = %state.store.describe(), "listening on {addr}");
    tokio::spawn(reload_on_sighup(state.clone(), path.to_path_buf()));
    crate::run(state, listener, shutdown_signal()).await;
    tracing::info!("stopped");
    ExitCode::SUCCESS
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}

/// SIGHUP: load the config again; a bad one is logged and the old one kept.
async fn reload_on_sighup(state: Arc<AppState>, path: PathBuf) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        match Config::load(&path) {
            Err(e) => {
                tracing::error!(error = %e, "reload refused: config has errors; keeping the running config")
            }
            Ok(config) => {
                if config.server != state.runtime().config.server {
                    tracing::warn!(
                        "[server] settings changed; they take effect at the next restart"
                    );
                }
                match state.reload(config) {
                    Ok(()) => tracing::info!(config = %path.display(), "config reloaded"),
                    Err(e) => {
                        tracing::error!(error = %e, "reload refused; keeping the running config")
                    }
                }
            }
        }
    }
}

async fn check(path: &Path, probe: bool) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    say!("config {}: OK", path.display());
    let s = &config.server;
    say!(
        "listen {}{}; inbound token {}",
        s.listen,
        if s.listen.ip().is_loopback() {
            " (loopback)"
        } else {
            ""
        },
        if s.inbound_token.is_some() {
            "required"
        } else {
            "not set"
        }
    );
    match &config.store {
        StoreConfig::File { path } => match crate::store::FileStore::open(path) {
            Ok(_) => say!(
                "store file {} (readable or not yet created)",
                path.display()
            ),
            Err(e) => {
                eprintln!("authproxy: {e}");
                return ExitCode::FAILURE;
            }
        },
        StoreConfig::Memory => say!("store memory (tokens are lost on restart)"),
        StoreConfig::Redis { key_prefix, .. } => say!("store redis (key prefix {key_prefix})"),
    }
    say!();
    say!("{:<20} {:<28} DETAILS", "PROVIDER", "KIND");
    for (name, p) in &config.providers {
        let details = match &p.kind {
            ProviderKind::Static(st) => format!(
                "injects {}",
                st.headers
                    .iter()
                    .map(|(h, _)| h.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            ProviderKind::OAuth2(o) => {
                let url = o.token_url.as_ref().or(o.authorize_url.as_ref());
                format!(
                    "{} into {}",
                    url.map(|u| format!("{}{}", u.origin().ascii_serialization(), u.path()))
                        .unwrap_or_default(),
                    o.header.as_str()
                )
            }
        };
        say!("{:<20} {:<28} {}", name, p.kind.label(), details);
    }
    say!();
    say!(
        "{:<24} {:<44} {:<16} CREDENTIAL",
        "PREFIX",
        "UPSTREAM",
        "PROVIDER"
    );
    for r in &config.routes {
        let kind = r
            .provider
            .as_ref()
            .and_then(|p| config.providers.get(p))
            .map(|p| p.kind.label())
            .unwrap_or_else(|| "pass-through".into());
        say!(
            "{:<24} {:<44} {:<16} {}{}",
            r.prefix.as_str(),
            r.upstream.as_str(),
            r.provider.as_deref().unwrap_or("-"),
            kind,
            if r.strip_prefix { "" } else { " (prefix kept)" }
        );
    }
    if !probe {
        return ExitCode::SUCCESS;
    }
    say!();
    let client = match TokenClient::new(Default::default()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("authproxy: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut failed = false;
    for (name, p) in &config.providers {
        let ProviderKind::OAuth2(o) = &p.kind else {
            continue;
        };
        if !o.grant.has_primary() {
            say!(
                "probe {name}: skipped ({} grant; probing would spend {})",
                o.grant.as_str(),
                if o.grant == crate::config::Grant::RefreshToken {
                    "a single-use refresh token"
                } else {
                    "a browser login"
                }
            );
            continue;
        }
        match OAuthProvider::probe(o, &client).await {
            Ok(t) => say!(
                "probe {name}: ok ({} grant; token obtained{}{})",
                o.grant.as_str(),
                t.expires_at
                    .map(|e| format!(", expires in {}s", e.saturating_sub(t.obtained_at)))
                    .unwrap_or_default(),
                if t.refresh_token.is_some() {
                    ", with refresh token"
                } else {
                    ""
                }
            ),
            Err(e) => {
                failed = true;
                say!("probe {name}: FAILED [{}] {e}", e.code());
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

async fn health(url: Option<String>, config_path: &Path) -> ExitCode {
    let url = url.unwrap_or_else(|| {
        let port = Config::load(config_path)
            .map(|c| c.server.listen.port())
            .unwrap_or(8080);
        format!("http://127.0.0.1:{port}/_authproxy/health")
    });
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("authproxy health: {e}");
            return ExitCode::FAILURE;
        }
    };
    match client.get(&url).send().await {
        Ok(r) if r.status().is_success() => {
            say!("ok: {url}");
            ExitCode::SUCCESS
        }
        Ok(r) => {
            eprintln!("unhealthy: {url} answered {}", r.status());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("unhealthy: {url}: {e}");
            ExitCode::FAILURE
        }
    }
}
