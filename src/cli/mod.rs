//! The command line: `run` (default), `check [--probe]`, `demo`, `health`,
//! `login`,
//! one file each.

mod check;
mod demo;
mod health;
mod login;
mod run;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::app::EXIT_CONFIG;
use crate::config::{Config, ConfigError, DEFAULT_CONFIG_PATH};
use crate::telemetry::LogFormat;

/// Prints to stdout, ignoring a closed pipe (`authproxy check | head`)
/// instead of panicking like `println!`.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}
use say;

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
        /// Ask /_authproxy/ready instead: exit 0 only when every provider can inject now
        #[arg(long)]
        ready: bool,
    },
    /// Log in to a provider: print the login URL (authorization_code), or start the
    /// device flow on the running proxy, print the code and wait (device_code; exit 0 logged in, 1 not)
    Login {
        provider: String,
        /// The running proxy [default: from the config's listen address]
        #[arg(long)]
        url: Option<String>,
    },
}

/// Entry point used by `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    forbid_dumps(cli.log_format);
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
            crate::telemetry::report_error(
                cli.log_format,
                &format!("cannot start the async runtime: {e}"),
                None,
            );
            return ExitCode::FAILURE;
        }
    };
    let config_path = cli
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
    crate::install_crypto_provider();
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => runtime.block_on(run::run(&config_path, cli.log_format)),
        Command::Check { probe } => {
            runtime.block_on(check::check(&config_path, probe, cli.log_format))
        }
        Command::Demo { listen } => runtime.block_on(demo::demo(&listen, cli.log_format)),
        Command::Health { url, ready } => {
            runtime.block_on(health::health(url, ready, &config_path, cli.log_format))
        }
        Command::Login { provider, url } => {
            runtime.block_on(login::login(&provider, url, &config_path, cli.log_format))
        }
    }
}

/// Makes the process not dumpable, first thing, for every subcommand:
/// `run` and `demo` hold every secret and token; `check` reads the same
/// secrets (and `--probe` obtains tokens); `health` holds none but gains
/// nothing from a core file either, and one rule has no gap. A process
/// that is not dumpable leaves no core file, and other processes of its
/// user can neither ptrace it nor read its `/proc/<pid>/mem` or
/// `environ` (the kernel makes those root's). Only root (CAP_SYS_PTRACE)
/// still can.
fn forbid_dumps(format: LogFormat) {
    use rustix::process::{set_dumpable_behavior, DumpableBehavior};
    if let Err(e) = set_dumpable_behavior(DumpableBehavior::NotDumpable) {
        // Not fatal (e.g. a seccomp filter that refuses prctl): say so.
        crate::telemetry::report_error(
            format,
            &format!("warning: cannot make the process non-dumpable ({e}); a core dump would hold its secrets"),
            None,
        );
    }
}

fn load(path: &Path, format: LogFormat) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        config_error(format, &e);
        ExitCode::from(EXIT_CONFIG)
    })
}

/// A config that cannot be loaded, as text (every key on its own line) or
/// as one JSON object with the keys in `errors`.
pub(crate) fn config_error(format: LogFormat, e: &ConfigError) {
    match (format, e) {
        (LogFormat::Json, ConfigError::Keys { file, errors }) => {
            let list: Vec<serde_json::Value> = errors
                .iter()
                .map(|k| serde_json::json!({"key": k.key, "message": k.message}))
                .collect();
            crate::telemetry::report_error(
                format,
                &format!(
                    "config file {} has {} error(s)",
                    file.display(),
                    errors.len()
                ),
                Some(serde_json::json!({"file": file.display().to_string(), "errors": list})),
            );
        }
        _ => crate::telemetry::report_error(format, &e.to_string(), None),
    }
}
