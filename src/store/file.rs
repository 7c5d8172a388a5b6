//! A JSON file of every provider's tokens, replaced atomically on each
//! write: temp file in the same folder, fsync, rename, fsync the folder.
//! A crash leaves either the old or the new file, never half of one, so a
//! single-use refresh token that the provider already rotated is never lost.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::folder::{self, Verdict};
use super::record::{Codec, RecordError, RecordIn, RecordOut};
use super::seal::{FingerprintKey, Sealer};
use super::{StoreError, StoredToken, TokenStore};
use crate::secret::{Secret, SecretBuf, SecretKey};

/// Format 2 keeps the store's fingerprint key and, when encrypted, a key
/// check value; its records may be sealed. Format 1 (authproxy 0.1) had
/// neither: it is read, and written as 2 at the next write. (Version 0.1
/// refuses a format-2 file rather than misread it: it would not know the
/// keyed fingerprints and take the config's seeds over the stored tokens.)
const FORMAT_VERSION: u32 = 2;
const LEGACY_VERSION: u32 = 1;

#[derive(Deserialize)]
struct FileIn {
    version: u32,
    #[serde(default)]
    fingerprint_key: Option<Secret>,
    #[serde(default)]
    key_check: Option<String>,
    #[serde(default)]
    providers: BTreeMap<String, RecordIn>,
}

#[derive(Serialize)]
struct FileOut<'a> {
    version: u32,
    fingerprint_key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_check: Option<&'a str>,
    providers: BTreeMap<&'a str, RecordOut<'a>>,
}

pub struct FileStore {
    path: PathBuf,
    codec: Codec,
    /// Written with the file when it is encrypted.
    key_check: Option<String>,
    /// The newest tokens of every provider; the file is this, serialised.
    tokens: Mutex<BTreeMap<String, StoredToken>>,
    /// Serialises whole-file writes so two providers renewing at once
    /// cannot rename an older snapshot over a newer one.
    write_lock: tokio::sync::Mutex<()>,
    /// Set while the newest tokens are only in memory.
    pending: Mutex<Option<String>>,
    /// Providers whose record is in plain text on disk although a key is
    /// set (a store from before the key): the next write seals them.
    plain_on_disk: Mutex<BTreeSet<String>>,
    warnings: Vec<String>,
}

impl FileStore {
    /// Opens (or prepares to create) the store. A file that exists but
    /// cannot be parsed is an error, never a silent reset; so is an
    /// encrypted file without its key, or with another key. A folder that
    /// others may write is refused (see [`folder`]).
    pub fn open(path: &Path, key: Option<&SecretKey>) -> Result<FileStore, StoreError> {
        let shown = path.display().to_string();
        let mut warnings = Vec::new();
        match folder::inspect(&folder::of(path)) {
            Verdict::Refuse(why) => return Err(StoreError::Unsafe(why)),
            Verdict::Warn(why) => {
                tracing::warn!(store = %shown, "{why}");
                warnings.push(why);
            }
            Verdict::Private => {}
        }
        let sealer = key.map(Sealer::new);
        let corrupt = |reason: String| StoreError::Corrupt {
            path: shown.clone(),
            reason,
        };
        let content = match fs::read(path) {
            Ok(bytes) => {
                let bytes = Zeroizing::new(bytes);
                let content: FileIn = serde_json::from_slice(&bytes).map_err(|e| {
                    corrupt(format!(
                        "not a valid token store ({} bytes; {})",
                        bytes.len(),
                        describe_json_error(&e)
                    ))
                })?;
                if content.version != FORMAT_VERSION && content.version != LEGACY_VERSION {
                    return Err(corrupt(format!(
                        "format version {} is not supported (expected {LEGACY_VERSION} or {FORMAT_VERSION})",
                        content.version
                    )));
                }
                Some(content)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(StoreError::Read {
                    path: shown,
                    reason: e.to_string(),
                })
            }
        };
        let Some(content) = content else {
            return Ok(FileStore::new(
                path,
                sealer,
                FingerprintKey::random(),
                BTreeMap::new(),
                BTreeSet::new(),
                warnings,
            ));
        };
        match (&content.key_check, &sealer) {
            (Some(_), None) => return Err(StoreError::Key(format!(
                "token store {shown} is encrypted: set store.encryption_key to the key it was written with (the store is left as it is)"
            ))),
            (Some(check), Some(s)) if !s.opens_key_check(check) => return Err(StoreError::Key(format!(
                "store.encryption_key does not open token store {shown}: it was written with another key. Set the key it was written with; the store is left as it is (moving it away would lose its refresh tokens)"
            ))),
            (None, _) if content.providers.values().any(RecordIn::is_sealed) => {
                return Err(corrupt("it holds encrypted records but no key check value".into()))
            }
            _ => {}
        }
        let fingerprint = match &content.fingerprint_key {
            Some(hex) => FingerprintKey::parse(hex.expose())
                .ok_or_else(|| corrupt("its fingerprint_key is not 64 hex digits".into()))?,
            None => FingerprintKey::random(),
        };
        let codec = Codec {
            fingerprint,
            sealer,
        };
        let mut tokens = BTreeMap::new();
        let mut plain = BTreeSet::new();
        for (name, record) in content.providers {
            let decoded = codec.open(record, &name).map_err(|e| match e {
                RecordError::WontOpen => StoreError::Key(format!(
                    "the record of provider {name} in token store {shown} does not open with store.encryption_key (changed, or moved from another provider's place); the store is left as it is"
                )),
                other => corrupt(format!("provider {name}: {other}")),
            })?;
            if !decoded.sealed && codec.sealer.is_some() {
                plain.insert(name.clone());
            }
            tokens.insert(name, decoded.token);
        }
        if !plain.is_empty() {
            tracing::warn!(store = %shown, "token store {shown} is not encrypted yet: it is encrypted at the next write (at start, for the providers in the config)");
        }
        let Codec {
            fingerprint,
            sealer,
        } = codec;
        Ok(FileStore::new(
            path,
            sealer,
            fingerprint,
            tokens,
            plain,
            warnings,
        ))
    }

    fn new(
        path: &Path,
        sealer: Option<Sealer>,
        fingerprint: FingerprintKey,
        tokens: BTreeMap<String, StoredToken>,
        plain_on_disk: BTreeSet<String>,
        warnings: Vec<String>,
    ) -> FileStore {
        FileStore {
            path: path.to_path_buf(),
            key_check: sealer.as_ref().map(Sealer::key_check),
            codec: Codec {
                fingerprint,
                sealer,
            },
            tokens: Mutex::new(tokens),
            write_lock: tokio::sync::Mutex::new(()),
            pending: Mutex::new(None),
            plain_on_disk: Mutex::new(plain_on_disk),
            warnings,
        }
    }

    /// The whole file, in a buffer zeroed when dropped.
    fn snapshot(&self) -> SecretBuf {
        let tokens = self.tokens.lock().unwrap();
        let fingerprint_key = self.codec.fingerprint.to_hex();
        let content = FileOut {
            version: FORMAT_VERSION,
            fingerprint_key: fingerprint_key.expose(),
            key_check: self.key_check.as_deref(),
            providers: tokens
                .iter()
                .map(|(name, token)| {
                    (
                        name.as_str(),
                        RecordOut {
                            codec: &self.codec,
                            token,
                            slot: name,
                        },
                    )
                })
                .collect(),
        };
        let mut bytes = SecretBuf::with_capacity(4096);
        serde_json::to_writer_pretty(&mut bytes, &content).expect("token store serialises");
        bytes
    }

    async fn write_snapshot(&self) -> Result<(), StoreError> {
        let _guard = self.write_lock.lock().await;
        let bytes = self.snapshot();
        let path = self.path.clone();
        let result = tokio::task::spawn_blocking(move || write_atomically(&path, bytes.as_slice()))
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        let mut pending = self.pending.lock().unwrap();
        match result {
            Ok(()) => {
                *pending = None;
                let mut plain = self.plain_on_disk.lock().unwrap();
                if !plain.is_empty() {
                    plain.clear();
                    tracing::info!(store = %self.path.display(), "token store encrypted: every record is sealed now");
                }
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

/// Replaces the file at `path` with `bytes`: the folder is created `0700`
/// if missing and checked again (it may have appeared since the start);
/// the temp file gets a random name and is created exclusively (`O_CREAT
/// | O_EXCL`, which also never follows a symlink, so nothing planted under
/// any name is written through or reused), `0600`; then fsync, rename,
/// fsync the folder.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = folder::of(path);
    folder::create(&dir)?;
    if let Verdict::Refuse(why) = folder::inspect(&dir) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            why,
        ));
    }
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "tokens.json".into());
    // Removed by its drop if anything below fails.
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{file_name}."))
        .suffix(".tmp")
        .rand_bytes(12)
        .permissions(fs::Permissions::from_mode(0o600))
        .tempfile_in(&dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    // The rename is durable only once the folder entry is.
    File::open(&dir)?.sync_all()
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

    fn fingerprint_key(&self) -> Option<FingerprintKey> {
        Some(self.codec.fingerprint.clone())
    }

    fn needs_rewrite(&self, provider: &str) -> bool {
        self.plain_on_disk.lock().unwrap().contains(provider)
    }

    fn encrypted(&self) -> bool {
        self.codec.sealer.is_some() && self.plain_on_disk.lock().unwrap().is_empty()
    }

    fn warnings(&self) -> Vec<String> {
        self.warnings.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Owner;

    fn token(access: &str) -> StoredToken {
        StoredToken {
            access_token: Some(Secret::new(access)),
            refresh_token: Some(Secret::new("r")),
            expires_at: Some(10),
            token_type: None,
            obtained_at: 1,
            owner: Owner::Fingerprint("fp".into()),
            dpop_key: None,
            rotation: None,
        }
    }

    #[tokio::test]
    async fn round_trip_and_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/tokens.json");
        let store = FileStore::open(&path, None).unwrap();
        store.save("a", token("one")).await.unwrap();
        store.save("b", token("two")).await.unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = FileStore::open(&path, None).unwrap();
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
        let err = FileStore::open(&path, None).err().unwrap().to_string();
        assert!(err.contains("tokens.json"), "{err}");
        assert!(!err.contains("sec\""), "{err}");
    }

    /// Sealed records are bound to their provider: one swapped into
    /// another's place (to have its token sent to the other's upstream)
    /// does not open, and the store refuses to start rather than reset.
    #[tokio::test]
    async fn swapped_sealed_records_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        let key = SecretKey::random();
        let store = FileStore::open(&path, Some(&key)).unwrap();
        store.save("a", token("token-of-a")).await.unwrap();
        store.save("b", token("token-of-b")).await.unwrap();
        assert!(store.encrypted());
        let text = fs::read_to_string(&path).unwrap();
        assert!(!text.contains("token-of"), "{text}");
        let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let a = v["providers"]["a"].take();
        v["providers"]["a"] = v["providers"]["b"].take();
        v["providers"]["b"] = a;
        let swapped = serde_json::to_vec(&v).unwrap();
        fs::write(&path, &swapped).unwrap();
        let err = FileStore::open(&path, Some(&key))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("provider a") && err.contains("tokens.json"),
            "{err}"
        );
        assert_eq!(fs::read(&path).unwrap(), swapped, "left as it was");
    }

    #[tokio::test]
    async fn failed_write_stays_pending_until_flushed() {
        // A regular file where the folder should be makes every write fail,
        // even for root (permission bits would not).
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("state");
        let path = blocker.join("tokens.json");
        let store = FileStore::open(&path, None).unwrap();
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
            FileStore::open(&path, None)
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
