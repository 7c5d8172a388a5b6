//! A JSON file of every provider's tokens, replaced atomically on each
//! write: temp file in the same folder, fsync, rename, fsync the folder.
//! A crash leaves either the old or the new file, never half of one, so a
//! single-use refresh token that the provider already rotated is never lost.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::{StoreError, StoredToken, TokenStore};

const FORMAT_VERSION: u32 = 1;

#[derive(Serialize, Deserialize, Default)]
struct FileContent {
    version: u32,
    providers: BTreeMap<String, StoredToken>,
}

pub struct FileStore {
    path: PathBuf,
    /// The newest tokens of every provider; the file is this, serialised.
    tokens: Mutex<BTreeMap<String, StoredToken>>,
    /// Serialises whole-file writes so two providers renewing at once
    /// cannot rename an older snapshot over a newer one.
    write_lock: tokio::sync::Mutex<()>,
    /// Set while the newest tokens are only in memory.
    pending: Mutex<Option<String>>,
}

impl FileStore {
    /// Opens (or prepares to create) the store. A file that exists but
    /// cannot be parsed is an error, never a silent reset.
    pub fn open(path: &Path) -> Result<FileStore, StoreError> {
        let display = path.display().to_string();
        let tokens = match fs::read(path) {
            Ok(bytes) => {
                let content: FileContent =
                    serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                        path: display.clone(),
                        reason: format!(
                            "not a valid token store ({} bytes; {})",
                            bytes.len(),
                            describe_json_error(&e)
                        ),
                    })?;
                if content.version != FORMAT_VERSION {
                    return Err(StoreError::Corrupt {
                        path: display,
                        reason: format!(
                            "format version {} is not supported (expected {FORMAT_VERSION})",
                            content.version
                        ),
                    });
                }
                content.providers
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                return Err(StoreError::Read {
                    path: display,
                    reason: e.to_string(),
                })
            }
        };
        Ok(FileStore {
            path: path.to_path_buf(),
            tokens: Mutex::new(tokens),
            write_lock: tokio::sync::Mutex::new(()),
            pending: Mutex::new(None),
        })
    }

    async fn write_snapshot(&self) -> Result<(), StoreError> {
        let _guard = self.write_lock.lock().await;
        let content = FileContent {
            version: FORMAT_VERSION,
            providers: self.tokens.lock().unwrap().clone(),
        };
        let bytes = serde_json::to_vec_pretty(&content).expect("token store serialises");
        let path = self.path.clone();
        let result = tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        let mut pending = self.pending.lock().unwrap();
        match result {
            Ok(()) => {
                *pending = None;
                Ok(())
            }
            Err(e) => {
                let err = StoreError::Write {
                    path: self.path.display().to_string(),
                    reason: e.to_string(),
                };
                *pending = Some(err.to_string());
                Err(err)
            }
        }
    }
}

fn describe_json_error(e: &serde_json::Error) -> String {
    // serde_json's messages can quote input; keep only position and class.
    format!(
        "{:?} error at line {} column {}",
        e.classify(),
        e.line(),
        e.column()
    )
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir)?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "tokens.json".into());
    let tmp = dir.join(format!(".{file_name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        // The mode above only applies to new files; make sure of it.
        f.set_permissions(fs::Permissions::from_mode(0o600))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, path)?;
        // The rename is durable only once the folder entry is.
        File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

impl TokenStore for FileStore {
    fn load(&self, provider: &str) -> Option<StoredToken> {
        self.tokens.lock().unwrap().get(provider).cloned()
    }

    fn save<'a>(
        &'a self,
        provider: &'a str,
        token: StoredToken,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.tokens
            .lock()
            .unwrap()
            .insert(provider.to_string(), token);
        Box::pin(self.write_snapshot())
    }

    fn flush(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            if self.pending.lock().unwrap().is_some() {
                self.write_snapshot().await
            } else {
                Ok(())
            }
        })
    }

    fn pending_error(&self) -> Option<String> {
        self.pending.lock().unwrap().clone()
    }

    fn describe(&self) -> String {
        format!("file {}", self.path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn token(access: &str) -> StoredToken {
        StoredToken {
            access_token: Some(Secret::new(access)),
            refresh_token: Some(Secret::new("r")),
            expires_at: Some(10),
            token_type: None,
            obtained_at: 1,
            seed_fingerprint: "fp".into(),
        }
    }

    #[tokio::test]
    async fn round_trip_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/tokens.json");
        let store = FileStore::open(&path).unwrap();
        store.save("a", token("one")).await.unwrap();
        store.save("b", token("two")).await.unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = FileStore::open(&path).unwrap();
        assert_eq!(
            again.load("a").unwrap().access_token.unwrap().expose(),
            "one"
        );
        assert_eq!(
            again.load("b").unwrap().access_token.unwrap().expose(),
            "two"
        );
        // No temp files left behind.
        let names: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        fs::write(
            &path,
            b"{\"version\":1,\"providers\":{\"a\":{\"access_token\":\"sec",
        )
        .unwrap();
        let err = FileStore::open(&path).err().unwrap().to_string();
        assert!(err.contains("tokens.json"), "{err}");
        assert!(!err.contains("sec\""), "{err}");
    }

    #[tokio::test]
    async fn failed_write_stays_pending_until_flushed() {
        // A regular file where the folder should be makes every write fail,
        // even for root (permission bits would not).
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("state");
        let path = blocker.join("tokens.json");
        let store = FileStore::open(&path).unwrap();
        fs::write(&blocker, b"not a folder").unwrap();
        assert!(store.save("a", token("one")).await.is_err());
        assert!(store.pending_error().unwrap().contains("state"));
        assert_eq!(
            store.load("a").unwrap().access_token.unwrap().expose(),
            "one"
        );
        fs::remove_file(&blocker).unwrap();
        store.flush().await.unwrap();
        assert!(store.pending_error().is_none());
        assert_eq!(
            FileStore::open(&path)
                .unwrap()
                .load("a")
                .unwrap()
                .access_token
                .unwrap()
                .expose(),
            "one"
        );
    }
}
