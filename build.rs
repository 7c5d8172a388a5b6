//! Puts the git commit the binary is built from into `AUTHPROXY_COMMIT`
//! (`--version`, `authproxy_build_info`): `git rev-parse --short=12 HEAD`
//! when the source is a git checkout and git is installed, else
//! `unknown` (a source tarball, a vendored crate).
//!
//! Release builds of the binary on Linux lay out its code by
//! `build/link-order.txt` (see `build/link-order.sh`): the code a starting
//! proxy runs sits together, which took idle RSS from 10.4 to 6.2 MiB
//! (bench/results.md).
//! That needs lld (rustc's own, or a system `ld.lld`); without it, or with
//! `AUTHPROXY_LINK_ORDER=0`, the binary links as usual.

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
    link_order();
}

/// The linker arguments that lay out start-up code by `build/link-order.txt`,
/// for release builds of the binary (tests, examples and debug builds link
/// as usual). The ordering is lld's: rustc links x86_64 Linux with its own
/// lld since 1.90; elsewhere, an `ld.lld` on the PATH is used. GNU ld
/// before 2.43 cannot order symbols, so without lld nothing is added.
fn link_order() {
    let order = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("build/link-order.txt");
    println!("cargo:rerun-if-changed={}", order.display());
    println!("cargo:rerun-if-env-changed=AUTHPROXY_LINK_ORDER");
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    let off = std::env::var("AUTHPROXY_LINK_ORDER").is_ok_and(|v| v == "0");
    if !release || !linux || off || !order.exists() {
        return;
    }
    if !rustc_links_with_lld() && !on_path("ld.lld") {
        println!(
            "cargo:warning=no lld: linking without build/link-order.txt \
             (idle RSS about 4 MiB higher; install lld or Rust 1.90+)"
        );
        return;
    }
    println!("cargo:rustc-link-arg-bins=-fuse-ld=lld");
    println!(
        "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
        order.display()
    );
    // Names the build no longer has (the file is older than the code) are
    // skipped, not errors.
    println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
}

/// rustc 1.90 and later link x86_64-unknown-linux-gnu with the lld they
/// ship (`-fuse-ld=lld` finds it without a system lld).
fn rustc_links_with_lld() -> bool {
    if std::env::var("TARGET").ok().as_deref() != Some("x86_64-unknown-linux-gnu") {
        return false;
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = Command::new(rustc).arg("--version").output() else {
        return false;
    };
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .split('.')
        .map(|n| n.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (1, 90)
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}
