//! A record's JSON, as the file and Redis stores write it: the token
//! fields in plain text, or, with `store.encryption_key`, `{"sealed":
//! "<base64>"}` holding that same JSON sealed to the record's slot (the
//! provider's name in the file, the key in Redis). The one place where
//! tokens are serialized, on purpose.

use serde::ser::Error as _;
use serde::{Deserialize, Serialize, Serializer};

use super::seal::{FingerprintKey, Sealer};
use super::{Owner, RotationIntent, StoredToken};
use crate::secret::{Secret, SecretBuf};

/// How one store writes and reads its records.
pub(super) struct Codec {
    pub(super) fingerprint: FingerprintKey,
    pub(super) sealer: Option<Sealer>,
}

/// A record as read: sealed or in plain text.
pub(super) struct Decoded {
    pub(super) token: StoredToken,
    pub(super) sealed: bool,
}

/// Why a record could not be read. Never quotes it.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum RecordError {
    /// Sealed, and no key is configured.
    NoKey,
    /// Sealed, and the key does not open it (another key, or changed).
    WontOpen,
    /// Not a record (a field missing or of the wrong type).
    Invalid(String),
}

impl std::fmt::Display for RecordError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordError::NoKey => f.write_str("the record is encrypted and store.encryption_key is not set"),
            RecordError::WontOpen => f.write_str("the record does not open with store.encryption_key (another key, or it was changed)"),
            RecordError::Invalid(why) => write!(f, "not a token record ({why})"),
        }
    }
}

/// The fields of a record, written in this order.
#[derive(Serialize)]
struct PlainOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "expose")]
    access_token: Option<&'a Secret>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "expose")]
    refresh_token: Option<&'a Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_type: Option<&'a str>,
    obtained_at: u64,
    seed_fingerprint: String,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "expose")]
    dpop_key: Option<&'a Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rotation: Option<IntentJson>,
}

/// An open rotation as written: the keyed hash, never the token.
#[derive(Serialize, Deserialize)]
struct IntentJson {
    refresh_hash: String,
    started_at: u64,
}

/// The one `Serialize` of a secret: into a store record.
fn expose<S: Serializer>(secret: &Option<&Secret>, s: S) -> Result<S::Ok, S::Error> {
    match secret {
        Some(secret) => s.serialize_str(secret.expose()),
        None => s.serialize_none(),
    }
}

#[derive(Serialize)]
struct SealedOut {
    sealed: String,
}

/// A record on its way into a store: serializes as [`Codec`] says.
pub(super) struct RecordOut<'a> {
    pub(super) codec: &'a Codec,
    pub(super) token: &'a StoredToken,
    pub(super) slot: &'a str,
}

impl Serialize for RecordOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let t = self.token;
        let plain = PlainOut {
            access_token: t.access_token.as_ref(),
            refresh_token: t.refresh_token.as_ref(),
            expires_at: t.expires_at,
            token_type: t.token_type.as_deref(),
            obtained_at: t.obtained_at,
            seed_fingerprint: match &t.owner {
                Owner::Identity(identity) => self.codec.fingerprint.fingerprint(identity),
                Owner::Fingerprint(stored) => stored.clone(),
            },
            dpop_key: t.dpop_key.as_ref(),
            rotation: t.rotation.as_ref().map(|r| IntentJson {
                refresh_hash: r.refresh_hash.clone(),
                started_at: r.started_at,
            }),
        };
        match &self.codec.sealer {
            None => plain.serialize(s),
            Some(sealer) => {
                let mut json = SecretBuf::with_capacity(512);
                serde_json::to_writer(&mut json, &plain).map_err(S::Error::custom)?;
                SealedOut {
                    sealed: sealer.seal_record(json.as_slice(), self.slot),
                }
                .serialize(s)
            }
        }
    }
}

impl Codec {
    /// The JSON of one record (Redis keeps one per key).
    pub(super) fn encode(&self, token: &StoredToken, slot: &str) -> SecretBuf {
        let mut out = SecretBuf::with_capacity(512);
        serde_json::to_writer(
            &mut out,
            &RecordOut {
                codec: self,
                token,
                slot,
            },
        )
        .expect("a token record serializes");
        out
    }

    /// Reads the JSON of one record.
    pub(super) fn decode(&self, json: &[u8], slot: &str) -> Result<Decoded, RecordError> {
        let record: RecordIn = serde_json::from_slice(json)
            .map_err(|e| RecordError::Invalid(format!("{:?} error", e.classify())))?;
        self.open(record, slot)
    }

    /// A record parsed from a store: opened if sealed, checked.
    pub(super) fn open(&self, record: RecordIn, slot: &str) -> Result<Decoded, RecordError> {
        let Some(sealed) = &record.sealed else {
            return record.into_token().map(|token| Decoded {
                token,
                sealed: false,
            });
        };
        let sealer = self.sealer.as_ref().ok_or(RecordError::NoKey)?;
        let json = sealer
            .open_record(sealed, slot)
            .ok_or(RecordError::WontOpen)?;
        let inner: RecordIn = serde_json::from_slice(&json)
            .map_err(|e| RecordError::Invalid(format!("sealed {:?} error", e.classify())))?;
        if inner.sealed.is_some() {
            return Err(RecordError::Invalid("sealed twice".into()));
        }
        inner.into_token().map(|token| Decoded {
            token,
            sealed: true,
        })
    }
}

/// A record as found in a store (plain or sealed).
#[derive(Deserialize)]
pub(super) struct RecordIn {
    #[serde(default)]
    access_token: Option<Secret>,
    #[serde(default)]
    refresh_token: Option<Secret>,
    #[serde(default)]
    expires_at: Option<u64>,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    obtained_at: u64,
    #[serde(default)]
    seed_fingerprint: Option<String>,
    #[serde(default)]
    sealed: Option<String>,
    #[serde(default)]
    dpop_key: Option<Secret>,
    #[serde(default)]
    rotation: Option<IntentJson>,
}

impl RecordIn {
    pub(super) fn is_sealed(&self) -> bool {
        self.sealed.is_some()
    }

    fn into_token(self) -> Result<StoredToken, RecordError> {
        let fingerprint = self
            .seed_fingerprint
            .ok_or_else(|| RecordError::Invalid("no seed_fingerprint".into()))?;
        Ok(StoredToken {
            access_token: self.access_token,
            refresh_token: self.refresh_token,
            expires_at: self.expires_at,
            token_type: self.token_type,
            obtained_at: self.obtained_at,
            owner: Owner::Fingerprint(fingerprint),
            dpop_key: self.dpop_key,
            rotation: self.rotation.map(|r| RotationIntent {
                refresh_hash: r.refresh_hash,
                started_at: r.started_at,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::SecretKey;
    use crate::store::{Identity, OwnerMatch};

    fn token(identity: &Identity) -> StoredToken {
        StoredToken {
            access_token: Some(Secret::new("at-SECRET")),
            refresh_token: Some(Secret::new("rt-SECRET")),
            expires_at: Some(10),
            token_type: Some("Bearer".into()),
            obtained_at: 5,
            owner: Owner::Identity(identity.clone()),
            dpop_key: Some(Secret::new("dpop-SECRET")),
            rotation: Some(RotationIntent {
                refresh_hash: "ab12".into(),
                started_at: 4,
            }),
        }
    }

    fn codec(key: Option<u8>) -> Codec {
        Codec {
            fingerprint: FingerprintKey::random(),
            sealer: key
                .map(|n| Sealer::new(&SecretKey::parse(&format!("{n:02x}").repeat(32)).unwrap())),
        }
    }

    #[test]
    fn plain_round_trip_keeps_the_fields_and_keys_the_fingerprint() {
        let id = Identity::of(&["a", "b"]);
        let c = codec(None);
        let json = c.encode(&token(&id), "one");
        let text = std::str::from_utf8(json.as_slice()).unwrap();
        assert!(text.contains("\"refresh_token\":\"rt-SECRET\""), "{text}");
        assert!(text.contains("\"dpop_key\":\"dpop-SECRET\""), "{text}");
        assert!(
            text.contains("\"rotation\":{\"refresh_hash\":\"ab12\",\"started_at\":4}"),
            "{text}"
        );
        assert!(!text.contains(&id.legacy_fingerprint()), "{text}");
        let back = c.decode(json.as_slice(), "one").unwrap();
        assert!(!back.sealed);
        assert_eq!(back.token.dpop_key, token(&id).dpop_key);
        assert!(back.token.same_tokens(&token(&id)));
        assert_eq!(
            back.token.owner_match(&id, Some(&c.fingerprint)),
            OwnerMatch::Same
        );
        assert_eq!(
            back.token
                .owner_match(&Identity::of(&["a", "c"]), Some(&c.fingerprint)),
            OwnerMatch::Other
        );
    }

    #[test]
    fn sealed_records_hide_everything_and_stay_in_their_slot() {
        let id = Identity::of(&["a"]);
        let c = codec(Some(1));
        let json = c.encode(&token(&id), "one");
        let text = std::str::from_utf8(json.as_slice()).unwrap();
        assert!(
            !text.contains("SECRET")
                && !text.contains("fingerprint")
                && !text.contains("refresh_hash"),
            "{text}"
        );
        let back = c.decode(json.as_slice(), "one").unwrap();
        assert!(back.sealed && back.token.same_tokens(&token(&id)));
        assert_eq!(
            c.decode(json.as_slice(), "two").err(),
            Some(RecordError::WontOpen)
        );
        assert_eq!(
            codec(Some(2)).decode(json.as_slice(), "one").err(),
            Some(RecordError::WontOpen)
        );
        assert_eq!(
            codec(None).decode(json.as_slice(), "one").err(),
            Some(RecordError::NoKey)
        );
        // A plain record still reads with a key set (before its next write).
        let plain = codec(None).encode(&token(&id), "one");
        assert!(!c.decode(plain.as_slice(), "one").unwrap().sealed);
    }

    #[test]
    fn legacy_records_are_recognised() {
        let id = Identity::of(&["refresh_token", "seed"]);
        let json = format!(
            r#"{{"refresh_token":"r","obtained_at":1,"seed_fingerprint":"{}"}}"#,
            id.legacy_fingerprint()
        );
        let c = codec(None);
        let back = c.decode(json.as_bytes(), "one").unwrap();
        assert_eq!(
            back.token.owner_match(&id, Some(&c.fingerprint)),
            OwnerMatch::Legacy
        );
        let err = c
            .decode(br#"{"refresh_token":"r-SECRET"}"#, "one")
            .err()
            .unwrap();
        assert!(!err.to_string().contains("SECRET"));
    }
}
