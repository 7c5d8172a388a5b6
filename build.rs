//! Puts the git commit the binary is built from into `AUTHPROXY_COMMIT`
//! (`--version`, `authproxy_build_info`): `git rev-parse --short=12 HEAD`
//! when the source is a git checkout and git is installed, else
//! `unknown` (a source tarball, a vendored crate).

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

/// Whether this crate is the top of a git checkout: a source tarball
/// unpacked inside some other repository must not take that one's commit.
fn own_checkout() -> bool {
    let Some(top) = git(&["rev-parse", "--show-toplevel"]) else {
        return false;
    };
    let here = std::fs::canonicalize(env!("CARGO_MANIFEST_DIR"));
    here.is_ok() && std::fs::canonicalize(top).ok() == here.ok()
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // `AUTHPROXY_COMMIT` set by whoever builds (a packager without the git
    // history) wins.
    println!("cargo:rerun-if-env-changed=AUTHPROXY_COMMIT");
    let commit = match std::env::var("AUTHPROXY_COMMIT") {
        Ok(c) if !c.trim().is_empty() => c.trim().to_string(),
        _ if !own_checkout() => "unknown".into(),
        _ => git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into()),
    };
    // Build again when HEAD moves: HEAD itself (a checkout) and the log of
    // HEAD (a commit on the branch), both in this worktree's git folder.
    for file in ["HEAD", "logs/HEAD"] {
        if let Some(path) = git(&["rev-parse", "--git-path", file]) {
            let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path);
            if path.exists() {
                println!("cargo:rerun-if-changed={}", path.display());
            }
        }
    }
    println!("cargo:rustc-env=AUTHPROXY_COMMIT={commit}");
}
