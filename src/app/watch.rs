//! The config watch (`server.watch_config`, on by default): a change to
//! the config file or to a `${file:…}` it reads reloads the config.
//!
//! The folders holding those files are watched, not the files: editors
//! save by writing a new file and renaming it over the old one, and
//! Kubernetes updates a mounted ConfigMap or Secret by swapping the
//! folder's `..data` symlink to a new folder in one rename; a watch on the
//! file itself would follow the old inode and see neither. A symlinked
//! file's real folder is watched too (edits made there).
//!
//! Events only say "something in this folder changed". After a quiet
//! [`QUIET`] (bounded by [`MOST_WAIT`], so a folder that never settles
//! still reloads within 2 s), each file's content is compared with what
//! the running config was loaded from (SHA-256 of what was read), and only
//! a difference reloads: the token store written beside the config, a
//! `touch`, or a rewrite with the same bytes do nothing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::Notify;

use super::reload::Trigger;
use super::state::AppState;
use crate::config::SourceFile;

/// How long the folders must stay quiet before the files are compared:
/// a rename-over is several events, a Kubernetes swap about five.
const QUIET: Duration = Duration::from_millis(300);
/// Longest wait from the first event to the comparison, however busy the
/// folders are.
const MOST_WAIT: Duration = Duration::from_secs(1);

/// Watches the running config's files until the process ends; returns at
/// once (with a warning) if the system cannot watch.
pub async fn watch_config(state: Arc<AppState>) {
    let events = Arc::new(Notify::new());
    let on_event = events.clone();
    // Called on notify's own thread. An error (the kernel's event queue
    // overflowed) may hide a change: compare the files as for an event.
    let mut watcher = match notify::recommended_watcher(move |_: notify::Result<notify::Event>| {
        on_event.notify_one()
    }) {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the config files; reload with SIGHUP or `authproxy reload`");
            return;
        }
    };
    let mut sources = state.reloads.sources();
    let mut watched = BTreeSet::new();
    loop {
        let files = sources.borrow_and_update().clone();
        watch_folders(&mut watcher, &mut watched, &files);
        tokio::select! {
            () = events.notified() => {}
            changed = sources.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        }
        settle(&events).await;
        // The files as of now (a reload by another trigger may have
        // replaced them meanwhile).
        let files = sources.borrow().clone();
        let changed = tokio::task::spawn_blocking(move || files.iter().any(SourceFile::changed))
            .await
            .unwrap_or(false);
        if changed {
            // Logged, counted and told to systemd by the reload itself.
            let _ = state.reload_file(Trigger::Watch).await;
        }
    }
}

/// Waits until no event came for [`QUIET`], or [`MOST_WAIT`] has passed.
async fn settle(events: &Notify) {
    let deadline = tokio::time::Instant::now() + MOST_WAIT;
    loop {
        let until = (tokio::time::Instant::now() + QUIET).min(deadline);
        tokio::select! {
            () = events.notified() => {
                if tokio::time::Instant::now() >= deadline {
                    return;
                }
            }
            () = tokio::time::sleep_until(until) => return,
        }
    }
}

/// The folders to watch for `files`: each one's folder, and for a
/// symlink also its target's folder.
fn folders(files: &[SourceFile]) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for f in files {
        out.insert(folder_of(&f.path));
        if let Ok(real) = std::fs::canonicalize(&f.path) {
            out.insert(folder_of(&real));
        }
    }
    out
}

fn folder_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Makes the watched folders those of `files`.
fn watch_folders(
    watcher: &mut impl Watcher,
    watched: &mut BTreeSet<PathBuf>,
    files: &[SourceFile],
) {
    let wanted = folders(files);
    for gone in watched.difference(&wanted) {
        // A folder that was removed is no longer watched anyway.
        let _ = watcher.unwatch(gone);
    }
    for new in wanted.difference(watched) {
        if let Err(e) = watcher.watch(new, RecursiveMode::NonRecursive) {
            tracing::warn!(folder = %new.display(), error = %e, "cannot watch this folder: changes to the config files in it are not picked up by themselves (reload with SIGHUP or `authproxy reload`)");
        }
    }
    *watched = wanted;
}
