//! `authproxy completions <shell>`: a completion script made from the
//! command definition itself; and the hidden `authproxy man --out-dir`,
//! which writes the man pages the Debian package ships.

use std::path::Path;
use std::process::ExitCode;

use clap::Command;

pub(super) fn completions(shell: clap_complete::Shell, cmd: &mut Command) -> ExitCode {
    let mut out = std::io::stdout().lock();
    clap_complete::generate(shell, cmd, "authproxy", &mut out);
    ExitCode::SUCCESS
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
