//! The command line: `run` (default), `check [--probe]`, `demo`, `ca`, `health`,
//! `login`, `reload`, `completions`, one file each (and a hidden `man` for
//! the packages). `health`, `login` and `reload` talk to a running proxy
//! ([`local`]).

mod ca;
mod check;
mod completions;
mod demo;
mod health;
mod local;
mod login;
mod reload;
mod run;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};

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

/// `--version`: the package version and the git commit (build.rs).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("AUTHPROXY_COMMIT"),
    ")"
);

/// The variable `--config` falls back to.
const CONFIG_ENV: &str = "AUTHPROXY_CONFIG";

#[derive(Debug, Parser)]
#[command(
    name = "authproxy",
    version = VERSION,
    about = "Local reverse proxy that injects API credentials and keeps OAuth2 tokens fresh",
    after_help = "Without a subcommand, authproxy serves (`authproxy run`). \
                  The contract (config keys, endpoints, signals) is SPEC.md, in docs/ \
                  of the source and in /usr/share/doc/authproxy/ of the package."
)]
pub struct Cli {
    /// Config file of `run` when no subcommand is given (also taken before a subcommand that has --config) [default: $AUTHPROXY_CONFIG, else config/authproxy.toml]
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Log format of `run` when no subcommand is given (also taken before `run`, `demo`, `check` or `health`) [default: text]
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// `--config`, on the subcommands that read a config.
#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Config file [default: $AUTHPROXY_CONFIG, else config/authproxy.toml]
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
}

/// `--log-format`, on the subcommands that log.
#[derive(Debug, Args)]
pub struct LogArg {
    /// Log lines on stderr as text, or as JSON objects one per line [default: text]
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve (the default); SIGHUP, `authproxy reload` or a changed config file reload the config
    Run {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        log: LogArg,
    },
    /// Validate the config and its secrets, print the route table
    #[command(
        after_help = "Exit status: 0 the config is good (with --probe: and every probe passed); \
                            64 the config has errors, each named by its key; 1 a probe failed, or the \
                            token store cannot be used (its folder, file or encryption key)."
    )]
    Check {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        log: LogArg,
        /// Also run the primary grant of each oauth2 provider once (the token is neither stored nor printed)
        #[arg(long)]
        probe: bool,
    },
    /// Mock APIs of every provider style on loopback, with the proxy in front; prints curl lines
    Demo {
        /// Address the proxy listens on (the mock APIs take free loopback ports)
        #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
        listen: String,
        #[command(flatten)]
        log: LogArg,
    },
    /// Print the forward-proxy CA's path (stderr) and certificate (stdout, PEM) for clients to trust
    Ca {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        log: LogArg,
    },
    /// Exit 0 if the running proxy answers /_authproxy/health (with --ready: /_authproxy/ready)
    #[command(
        after_help = "The proxy is found at the listen address of the config (server.listen), \
                            unless --url is given. Exit status: 0 healthy (ready); 1 not, or nothing \
                            answers; 64 the config cannot be read."
    )]
    Health {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        log: LogArg,
        /// Ask this proxy instead: its address (http://127.0.0.1:8080) or the full URL to ask
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// Ask for readiness: every provider can inject a credential now (sends the config's inbound_token)
        #[arg(long)]
        ready: bool,
    },
    /// Log in to a provider: print the login URL (authorization_code), or start the
    /// device flow on the running proxy, print the code and wait (device_code; exit 0 logged in, 1 not)
    Login {
        /// The provider's name in the config
        provider: String,
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        log: LogArg,
        /// The running proxy [default: from the config's listen address]
        #[arg(long, value_name = "URL")]
        url: Option<String>,
    },
    /// Ask the running proxy to reload its config (what SIGHUP does), and say how it went
    #[command(
        after_help = "The proxy is found at the listen address of the config; its inbound_token, if set, \
                            is sent. Exit status: 0 the new config is applied; 1 it was refused (the errors \
                            are printed; the running config is kept) or nothing answers; 64 the config \
                            cannot be read."
    )]
    Reload {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Print a shell completion script (e.g. `authproxy completions bash > /etc/bash_completion.d/authproxy`)
    Completions {
        /// The shell to complete in
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages (authproxy.1 and one per subcommand) into a folder; for packaging
    #[command(hide = true)]
    Man {
        /// Folder to write the pages into
        #[arg(long, value_name = "DIR")]
        out_dir: PathBuf,
    },
}

/// The config path: the subcommand's `--config`, the one given before
/// the subcommand, `$AUTHPROXY_CONFIG`, the default; in that order.
fn config_path(own: Option<PathBuf>, top: Option<PathBuf>) -> PathBuf {
    own.or(top)
        .or_else(|| {
            std::env::var_os(CONFIG_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH))
}

/// Whether a config was named (by a flag or the variable) rather than
/// the default taken.
fn config_named(own: &Option<PathBuf>, top: &Option<PathBuf>) -> bool {
    own.is_some() || top.is_some() || std::env::var_os(CONFIG_ENV).is_some_and(|v| !v.is_empty())
}

/// Says that a flag given before a subcommand that has no use for it is
/// ignored (rather than dropping it silently).
fn ignored(flag: &str, given: bool, subcommand: &str) {
    if given {
        eprintln!("authproxy: warning: {flag} does nothing for `{subcommand}`; ignored");
    }
}

/// Parses the command line; usage errors exit 64 (EX_USAGE) like config
/// errors, `--help` and `--version` exit 0.
fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Cli, ExitCode> {
    Cli::try_parse_from(args).map_err(|e| {
        let _ = e.print();
        if e.use_stderr() {
            ExitCode::from(EXIT_CONFIG)
        } else {
            ExitCode::SUCCESS
        }
    })
}

/// Entry point used by `main`.
pub fn main() -> ExitCode {
    let cli = match parse(std::env::args_os()) {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    // Before anything reads a secret; parsing the command line reads none.
    let early_format = cli.log_format.unwrap_or(LogFormat::Text);
    forbid_dumps(early_format);
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
                early_format,
                &format!("cannot start the async runtime: {e}"),
                None,
            );
            return ExitCode::FAILURE;
        }
    };
    crate::install_crypto_provider();
    let Cli {
        config: top_config,
        log_format: top_log,
        command,
    } = cli;
    let command = command.unwrap_or(Command::Run {
        config: ConfigArg { config: None },
        log: LogArg { log_format: None },
    });
    let log_format = |own: Option<LogFormat>| own.or(top_log).unwrap_or(LogFormat::Text);
    match command {
        Command::Run { config, log } => {
            let path = config_path(config.config, top_config);
            runtime.block_on(run::run(&path, log_format(log.log_format)))
        }
        Command::Check { config, log, probe } => {
            let path = config_path(config.config, top_config);
            runtime.block_on(check::check(&path, probe, log_format(log.log_format)))
        }
        Command::Login {
            provider,
            config,
            log,
            url,
        } => {
            let path = config_path(config.config, top_config);
            runtime.block_on(login::login(
                &provider,
                url,
                &path,
                log_format(log.log_format),
            ))
        }
        Command::Ca { config, log } => {
            let path = config_path(config.config, top_config);
            ca::ca(&path, log_format(log.log_format))
        }
        Command::Demo { listen, log } => {
            ignored("--config", top_config.is_some(), "demo");
            runtime.block_on(demo::demo(&listen, log_format(log.log_format)))
        }
        Command::Health {
            config,
            log,
            url,
            ready,
        } => {
            let named = config_named(&config.config, &top_config);
            let path = config_path(config.config, top_config);
            runtime.block_on(health::health(
                url,
                ready,
                &path,
                named,
                log_format(log.log_format),
            ))
        }
        Command::Reload { config } => {
            ignored("--log-format", top_log.is_some(), "reload");
            let path = config_path(config.config, top_config);
            runtime.block_on(reload::reload(&path))
        }
        Command::Completions { shell } => {
            ignored("--config", top_config.is_some(), "completions");
            ignored("--log-format", top_log.is_some(), "completions");
            completions::completions(shell, Cli::command())
        }
        Command::Man { out_dir } => completions::man_pages(&out_dir, Cli::command()),
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
