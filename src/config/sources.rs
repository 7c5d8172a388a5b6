//! The files a config load read: the config file itself and every
//! `${file:…}`, each with a digest of exactly the bytes that were read.
//! The config watch (`server.watch_config`) compares these digests with
//! the files' content now to tell a real change from an event that changed
//! nothing (a touch, a write of the same bytes, another file in the
//! folder).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// One file a load read (or tried to read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// As the config named it (relative `${file:}` paths joined to the
    /// config's folder); not resolved, so a symlink swap behind it counts.
    pub path: PathBuf,
    /// SHA-256 of the content read; `None` when it could not be read (a
    /// file that appears later is then a change).
    pub digest: Option<[u8; 32]>,
    kind: Kind,
}

/// How the file is read: each kind by the same function as the load, so
/// that "what the load read" and "what is there now" agree on files it
/// refused (too large, not UTF-8, a FIFO).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Config,
    FileRef,
}

impl SourceFile {
    pub(super) fn new(kind: Kind, path: &Path, content: Option<&str>) -> SourceFile {
        SourceFile {
            path: path.to_path_buf(),
            digest: content.map(digest),
            kind,
        }
    }

    /// Whether the file's content now differs from what the load read.
    /// Reads the file: blocking.
    pub fn changed(&self) -> bool {
        self.now().digest != self.digest
    }

    /// This file with its content now.
    pub fn now(&self) -> SourceFile {
        let content = match self.kind {
            Kind::Config => super::read_config(&self.path).ok(),
            Kind::FileRef => super::interpolate::read_bounded(&self.path).ok(),
        };
        SourceFile::new(
            self.kind,
            &self.path,
            content.as_deref().map(|c| c.as_str()),
        )
    }
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// Adds `new` to `list` unless a file of that path is listed already.
pub(super) fn add(list: &mut Vec<SourceFile>, new: SourceFile) {
    if !list.iter().any(|f| f.path == new.path) {
        list.push(new);
    }
}
