//! `authproxy completions <shell>`: a completion script made from the
//! command definition itself; and the hidden `authproxy man --out-dir`,
//! which writes the man pages the Debian package ships.

use std::path::Path;
use std::process::ExitCode;

use clap::Command;

pub(super) fn completions(shell: clap_complete::Shell, cmd: Command) -> ExitCode {
    use std::io::Write;
    // Made in memory first: clap_complete panics when a write fails (a
    // closed pipe, `authproxy completions bash | head`).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut visible(cmd), "authproxy", &mut script);
    let _ = std::io::stdout().lock().write_all(&script);
    ExitCode::SUCCESS
}

/// `cmd` without its hidden subcommands, which clap_complete would offer
/// (its scripts ignore `hide` on subcommands).
fn visible(cmd: Command) -> Command {
    Command::new("authproxy")
        .version(super::VERSION)
        .args(cmd.get_arguments().cloned())
        .subcommands(cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned())
}

/// `authproxy.1`, and `authproxy-<subcommand>.1` for each visible one.
pub(super) fn man_pages(dir: &Path, cmd: Command) -> ExitCode {
    let result = std::fs::create_dir_all(dir).and_then(|()| clap_mangen::generate_to(cmd, dir));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("authproxy man: cannot write into {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}
