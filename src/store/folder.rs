//! The file store's folder: who else may write it. Whoever may write the
//! folder can replace the token file (rename over it) or plant files
//! where the store writes, so the store refuses a folder that every user
//! may write (no sticky bit) or that another user owns, and warns about
//! one that its group may write.

use std::fs::{self, DirBuilder};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

/// What the folder's owner and mode say.
pub(super) enum Verdict {
    /// Only this process's user (and root) may write it.
    Private,
    /// Others may write it, but cannot replace this user's files.
    Warn(String),
    /// Others may replace the tokens: refused.
    Refuse(String),
}

/// The folder a store file lives in.
pub(super) fn of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Creates the folder (and missing parents) `0700`, as the proxy's own.
pub(super) fn create(dir: &Path) -> std::io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Judges `dir` as it is now. A folder that does not exist yet is judged
/// by the nearest existing one above it: if every user may write that,
/// any of them could create the store folder before the proxy does.
pub(super) fn inspect(dir: &Path) -> Verdict {
    let euid = rustix::process::geteuid().as_raw();
    match fs::metadata(dir) {
        Ok(meta) => judge(dir, meta.mode(), meta.uid(), euid),
        Err(_) => {
            let mut above = dir.parent();
            while let Some(parent) = above {
                let parent = if parent.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    parent
                };
                if let Ok(meta) = fs::metadata(parent) {
                    let mode = meta.mode();
                    if mode & 0o002 != 0 && mode & 0o1000 == 0 {
                        return Verdict::Refuse(format!(
                            "token store folder {} does not exist yet, and {} above it may be written by every local user (mode {:04o}, no sticky bit): any of them could create it first and replace the tokens. Create {} yourself (mkdir -m 700) or choose another store.path",
                            dir.display(),
                            parent.display(),
                            mode & 0o7777,
                            dir.display()
                        ));
                    }
                    return Verdict::Private;
                }
                above = parent.parent();
            }
            Verdict::Private
        }
    }
}

fn judge(dir: &Path, mode: u32, owner: u32, euid: u32) -> Verdict {
    let shown = mode & 0o7777;
    let d = dir.display();
    if owner != euid && owner != 0 {
        return Verdict::Refuse(format!(
            "token store folder {d} belongs to uid {owner}, not to this process's user (uid {euid}): that user could replace the tokens. Fix: chown {euid} {d} (and chmod 700 {d}), or choose another store.path"
        ));
    }
    if mode & 0o002 != 0 {
        if mode & 0o1000 == 0 {
            return Verdict::Refuse(format!(
                "token store folder {d} may be written by every local user (mode {shown:04o}, no sticky bit): any of them could replace the tokens. Fix: chmod 700 {d}, or choose another store.path (the proxy creates a missing folder 0700)"
            ));
        }
        return Verdict::Warn(format!(
            "token store folder {d} may be written by every local user (mode {shown:04o}; the sticky bit keeps them from replacing the proxy's files, but not from creating their own): keep the store in a private folder, e.g. chmod 700 {d}"
        ));
    }
    if mode & 0o020 != 0 {
        return Verdict::Warn(format!(
            "token store folder {d} may be written by its group (mode {shown:04o}): members of that group could replace the tokens. If the folder is a shared volume (a Kubernetes fsGroup volume is 2775), keep the store in a subfolder the proxy creates 0700 (store.path = \"{}/tokens.json\"); else chmod g-w {d}",
            dir.join("authproxy").display()
        ));
    }
    Verdict::Private
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn verdict(mode: u32, owner: u32, euid: u32) -> &'static str {
        match judge(Path::new("/s"), mode, owner, euid) {
            Verdict::Private => "private",
            Verdict::Warn(_) => "warn",
            Verdict::Refuse(_) => "refuse",
        }
    }

    #[test]
    fn modes_and_owners() {
        assert_eq!(verdict(0o40700, 1000, 1000), "private");
        assert_eq!(verdict(0o40755, 0, 1000), "private");
        assert_eq!(verdict(0o40777, 1000, 1000), "refuse");
        assert_eq!(verdict(0o41777, 0, 1000), "warn");
        assert_eq!(verdict(0o42775, 0, 1000), "warn");
        assert_eq!(verdict(0o40770, 1000, 1000), "warn");
        assert_eq!(verdict(0o40700, 1001, 1000), "refuse");
        assert_eq!(verdict(0o40700, 1001, 0), "refuse");
    }

    #[test]
    fn a_missing_folder_under_a_world_writable_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        fs::create_dir(&open).unwrap();
        fs::set_permissions(&open, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(inspect(&open.join("a/b")), Verdict::Refuse(_)));
        fs::set_permissions(&open, fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(matches!(inspect(&open.join("a/b")), Verdict::Private));
        create(&open.join("a/b")).unwrap();
        let mode = fs::metadata(open.join("a")).unwrap().mode() & 0o777;
        assert_eq!(mode & 0o077, 0, "created private: {mode:o}");
    }
}
