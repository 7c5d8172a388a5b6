//! The cryptography of the stores, all from `ring`: records sealed with
//! AES-256-GCM under `store.encryption_key` ([`Sealer`]), a key check
//! value that tells a wrong key before any record is read, and the keyed
//! identity fingerprint ([`FingerprintKey`]).

use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use super::Identity;
use crate::secret::{Secret, SecretKey};

/// Associated data of the key check value (see [`Sealer::key_check`]).
const KEY_CHECK_AAD: &[u8] = b"authproxy-key-check-v1";
/// Prefix of every record's associated data (the record's slot follows).
const RECORD_AAD: &[u8] = b"authproxy-record-v1\0";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Seals and opens records with the store's key.
///
/// Each seal draws a fresh random 96-bit nonce. Random nonces are safe for
/// up to 2^32 messages under one key (NIST SP 800-38D §8.3: collision
/// probability below 2^-32); a store writes once per token renewal, so
/// even one write a second would take 136 years to get there.
pub struct Sealer {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl Sealer {
    pub fn new(key: &SecretKey) -> Sealer {
        let unbound =
            UnboundKey::new(&AES_256_GCM, key.expose()).expect("a 32-byte key is an AES-256 key");
        Sealer {
            key: LessSafeKey::new(unbound),
            rng: SystemRandom::new(),
        }
    }

    /// `base64(nonce ‖ ciphertext ‖ tag)` of `plaintext`, bound to `aad`:
    /// it opens only with the same associated data, so a record cannot be
    /// moved to another provider's slot.
    fn seal_with(&self, plaintext: &[u8], aad: &[u8]) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .expect("the system random generator works");
        let mut out = Vec::with_capacity(NONCE_LEN + plaintext.len() + AES_256_GCM.tag_len());
        out.extend_from_slice(&nonce);
        let mut sealed =
            Zeroizing::new(Vec::with_capacity(plaintext.len() + AES_256_GCM.tag_len()));
        sealed.extend_from_slice(plaintext);
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut *sealed,
            )
            .expect("records are far below AES-GCM's size limit");
        out.extend_from_slice(&sealed);
        B64.encode(out)
    }

    /// The plaintext of [`Sealer::seal_with`]'s output, if this key and
    /// `aad` open it (else the key is wrong or the text was changed).
    fn open_with(&self, sealed: &str, aad: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let bytes = B64.decode(sealed.trim()).ok()?;
        if bytes.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return None;
        }
        let nonce = Nonce::try_assume_unique_for_key(&bytes[..NONCE_LEN]).ok()?;
        let mut buf = Zeroizing::new(bytes[NONCE_LEN..].to_vec());
        let len = self
            .key
            .open_in_place(nonce, Aad::from(aad), &mut buf[..])
            .ok()?
            .len();
        buf.truncate(len);
        Some(buf)
    }

    pub(super) fn seal_record(&self, plaintext: &[u8], slot: &str) -> String {
        self.seal_with(plaintext, &record_aad(slot))
    }

    pub(super) fn open_record(&self, sealed: &str, slot: &str) -> Option<Zeroizing<Vec<u8>>> {
        self.open_with(sealed, &record_aad(slot))
    }

    /// A value kept with the store that only this key opens: checked at
    /// start, so a wrong key is found before any record is read (and not
    /// taken for "no tokens stored").
    pub(super) fn key_check(&self) -> String {
        self.seal_with(b"", KEY_CHECK_AAD)
    }

    pub(super) fn opens_key_check(&self, check: &str) -> bool {
        self.open_with(check, KEY_CHECK_AAD).is_some()
    }
}

fn record_aad(slot: &str) -> Vec<u8> {
    let mut aad = RECORD_AAD.to_vec();
    aad.extend_from_slice(slot.as_bytes());
    aad
}

/// The store's random key for identity fingerprints: HMAC-SHA-256 over
/// the identity digest, so two stores never hold the same fingerprint for
/// the same password and no table computed in advance applies. (Whoever
/// reads the store reads this key too; against a reader, the records'
/// encryption is what protects them.)
#[derive(Clone)]
pub struct FingerprintKey(SecretKey);

impl FingerprintKey {
    pub fn random() -> FingerprintKey {
        FingerprintKey(SecretKey::random())
    }

    /// As kept in a store: 64 hex digits.
    pub(super) fn parse(text: &str) -> Option<FingerprintKey> {
        let text = text.trim();
        (text.len() == 64)
            .then(|| SecretKey::parse(text).ok())
            .flatten()
            .map(FingerprintKey)
    }

    pub(super) fn to_hex(&self) -> Secret {
        self.0.to_hex()
    }

    /// The fingerprint a store writes for `identity` (hex).
    pub fn fingerprint(&self, identity: &Identity) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA256, self.0.expose());
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(b"authproxy-identity-v2\0");
        ctx.update(identity.digest());
        ctx.sign()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

impl FingerprintKey {
    /// What a rotation intent records of the refresh token it spends:
    /// HMAC-SHA-256 under this key (hex), so the store never holds the
    /// token in clear outside its record, and a hash cannot be tested
    /// against guesses without the key.
    pub fn token_hash(&self, token: &Secret) -> String {
        let key = hmac::Key::new(hmac::HMAC_SHA256, self.0.expose());
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(b"authproxy-refresh-v1\0");
        ctx.update(token.expose().as_bytes());
        ctx.sign()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

impl std::fmt::Debug for FingerprintKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FingerprintKey([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SecretKey {
        SecretKey::parse(&format!("{n:02x}").repeat(32)).unwrap()
    }

    #[test]
    fn records_open_only_with_their_key_and_slot() {
        let sealer = Sealer::new(&key(1));
        let sealed = sealer.seal_record(b"{\"refresh_token\":\"r\"}", "one");
        assert!(!sealed.contains("refresh"));
        assert_eq!(
            sealer.open_record(&sealed, "one").unwrap().as_slice(),
            b"{\"refresh_token\":\"r\"}"
        );
        assert!(sealer.open_record(&sealed, "two").is_none(), "moved record");
        assert!(Sealer::new(&key(2)).open_record(&sealed, "one").is_none());
        // A fresh nonce every time.
        assert_ne!(
            sealed,
            sealer.seal_record(b"{\"refresh_token\":\"r\"}", "one")
        );
        // Any changed byte is refused.
        let mut bytes = B64.decode(&sealed).unwrap();
        bytes[NONCE_LEN] ^= 1;
        assert!(sealer.open_record(&B64.encode(bytes), "one").is_none());
        assert!(sealer.open_record("not base64!", "one").is_none());
    }

    #[test]
    fn key_check_tells_the_right_key() {
        let check = Sealer::new(&key(1)).key_check();
        assert!(Sealer::new(&key(1)).opens_key_check(&check));
        assert!(!Sealer::new(&key(2)).opens_key_check(&check));
    }

    #[test]
    fn token_hashes_are_keyed_and_never_the_token() {
        let t = Secret::new("rt-SECRET-1");
        let a = FingerprintKey::random();
        let h = a.token_hash(&t);
        assert_eq!(h.len(), 64);
        assert!(!h.contains("SECRET"));
        assert_eq!(h, a.token_hash(&t));
        assert_ne!(h, a.token_hash(&Secret::new("rt-SECRET-2")));
        assert_ne!(h, FingerprintKey::random().token_hash(&t));
    }

    #[test]
    fn fingerprints_depend_on_the_store_key() {
        let id = Identity::of(&["password", "https://id.example/token", "pw"]);
        let a = FingerprintKey::random();
        let b = FingerprintKey::random();
        assert_eq!(a.fingerprint(&id), a.fingerprint(&id));
        assert_ne!(a.fingerprint(&id), b.fingerprint(&id));
        assert_ne!(a.fingerprint(&id), id.legacy_fingerprint());
        let again = FingerprintKey::parse(a.to_hex().expose()).unwrap();
        assert_eq!(again.fingerprint(&id), a.fingerprint(&id));
        assert!(FingerprintKey::parse("abc").is_none());
    }
}
