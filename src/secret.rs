//! Values that must never be printed: tokens, passwords, client secrets,
//! header values that carry credentials ([`Secret`]), keys
//! ([`SecretKey`]), and buffers that hold them on their way out of the
//! process ([`SecretBuf`]). All of them zero their memory when dropped.

use std::fmt;

use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

/// A secret value. `Debug` prints `Secret([redacted])`; there is no `Display`,
/// so it cannot end up in a format string by accident. Read it with
/// [`Secret::expose`] at the one place that needs the real bytes.
///
/// Nor does it serialize: a struct holding one cannot be turned into JSON
/// (a log field, a status answer) by accident. The stores write secrets
/// deliberately, field by field.
///
/// ```compile_fail
/// let s = authproxy::secret::Secret::new("hunter2");
/// let _ = serde_json::to_string(&s);
/// ```
///
/// Its bytes are zeroed when it is dropped. Copies made elsewhere (a
/// `HeaderValue`, hyper's and reqwest's buffers) are not: see the README's
/// Security section.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The real value. Call sites are the places where a secret leaves the
    /// process on purpose (a header, a token request, the store file).
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Compares without leaking the value's content or length through
    /// timing: the SHA-256 digests of both sides, always 32 bytes, are
    /// compared in constant time (`subtle` compares slices of different
    /// lengths by returning early, which would tell the length).
    pub fn ct_eq(&self, other: &[u8]) -> bool {
        let expected = Sha256::digest(self.0.as_bytes());
        let presented = Sha256::digest(other);
        expected.as_slice().ct_eq(presented.as_slice()).into()
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
    }
}

/// 32 secret bytes: a key. Zeroed on drop, compared in constant time,
/// never printed.
#[derive(Clone)]
pub struct SecretKey([u8; 32]);

impl SecretKey {
    /// A key from a file or variable: 64 hex digits, or base64 (standard
    /// or URL-safe, padded or not) of 32 bytes. Surrounding whitespace is
    /// ignored. The error says what is wrong, never the value.
    pub fn parse(text: &str) -> Result<SecretKey, String> {
        let text = text.trim();
        let mut bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut out = Vec::with_capacity(32);
            for pair in text.as_bytes().chunks(2) {
                let hex = |b: u8| (b as char).to_digit(16).unwrap_or(0) as u8;
                out.push(hex(pair[0]) << 4 | hex(pair[1]));
            }
            out
        } else {
            let engines = [
                &base64::engine::general_purpose::STANDARD,
                &base64::engine::general_purpose::STANDARD_NO_PAD,
                &base64::engine::general_purpose::URL_SAFE,
                &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            ];
            match engines.iter().find_map(|e| e.decode(text).ok()) {
                Some(bytes) => bytes,
                None => {
                    return Err(format!(
                        "is neither 64 hex digits nor base64 ({} characters)",
                        text.chars().count()
                    ))
                }
            }
        };
        let key = <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
            format!(
                "is {} bytes long, a key must be exactly 32 bytes",
                bytes.len()
            )
        });
        bytes.zeroize();
        key.map(SecretKey)
    }

    /// A fresh random key, straight from the operating system's
    /// generator (`getrandom`, through `ring`).
    pub fn random() -> SecretKey {
        use ring::rand::SecureRandom;
        let mut key = SecretKey([0; 32]);
        ring::rand::SystemRandom::new()
            .fill(&mut key.0)
            .expect("the system random generator works");
        key
    }

    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }

    /// Hex, for a store that keeps the key itself (the fingerprint key).
    pub fn to_hex(&self) -> Secret {
        let mut out = String::with_capacity(64);
        for b in self.0 {
            out.push(char::from_digit((b >> 4) as u32, 16).unwrap_or('0'));
            out.push(char::from_digit((b & 15) as u32, 16).unwrap_or('0'));
        }
        Secret(out)
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl PartialEq for SecretKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for SecretKey {}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey([redacted])")
    }
}

/// A growing byte buffer for text that holds secrets (a token request
/// body, a store record before it is written or sealed). Unlike a `Vec`,
/// it zeroes the old allocation when it grows, and its content when
/// dropped; [`SecretBuf::into_bytes`] hands it to an HTTP client as
/// `Bytes` that zero it when the client drops them.
#[derive(Default)]
pub struct SecretBuf(Vec<u8>);

impl SecretBuf {
    pub fn with_capacity(n: usize) -> SecretBuf {
        SecretBuf(Vec::with_capacity(n))
    }

    pub fn extend(&mut self, data: &[u8]) {
        let needed = self.0.len() + data.len();
        if needed > self.0.capacity() {
            let mut bigger = Vec::with_capacity(needed.max(self.0.capacity() * 2).max(64));
            bigger.extend_from_slice(&self.0);
            std::mem::swap(&mut self.0, &mut bigger);
            bigger.zeroize();
        }
        self.0.extend_from_slice(data);
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The content as `Bytes` without a copy; zeroed when the last clone
    /// of those `Bytes` is dropped.
    pub fn into_bytes(self) -> bytes::Bytes {
        bytes::Bytes::from_owner(self)
    }
}

impl AsRef<[u8]> for SecretBuf {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl std::io::Write for SecretBuf {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.extend(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for SecretBuf {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for SecretBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBuf([redacted; {} bytes])", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret([redacted])");
        assert!(!format!("{:?}", Some(&s)).contains("hunter2"));
    }

    #[test]
    fn constant_time_compare() {
        let s = Secret::new("abc");
        assert!(s.ct_eq(b"abc"));
        assert!(!s.ct_eq(b"abd"));
        assert!(!s.ct_eq(b"ab"));
        assert!(!s.ct_eq(b"abcd"));
        assert!(!s.ct_eq(b""));
        assert!(Secret::new("").ct_eq(b""));
    }

    #[test]
    fn keys_parse_from_hex_and_base64_only_at_32_bytes() {
        let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
        let k = SecretKey::parse(&format!("  {hex}\n")).unwrap();
        assert_eq!(k.expose()[1], 0x11);
        assert_eq!(k.to_hex().expose(), hex);
        let b64 = base64::engine::general_purpose::STANDARD.encode(k.expose());
        assert_eq!(SecretKey::parse(&b64).unwrap(), k);
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(k.expose());
        assert_eq!(SecretKey::parse(&url).unwrap(), k);
        let short = base64::engine::general_purpose::STANDARD.encode([7u8; 16]);
        let err = SecretKey::parse(&short).err().unwrap();
        assert!(err.contains("16 bytes"), "{err}");
        assert!(!err.contains(&short), "{err}");
        let err = SecretKey::parse("not a key!").err().unwrap();
        assert!(err.contains("neither"), "{err}");
        assert_eq!(format!("{k:?}"), "SecretKey([redacted])");
        assert_ne!(SecretKey::random(), SecretKey::random());
    }

    #[test]
    fn secret_buf_grows_and_converts_without_losing_bytes() {
        use std::io::Write;
        let mut buf = SecretBuf::with_capacity(1);
        for i in 0..100u8 {
            buf.write_all(&[i; 3]).unwrap();
        }
        assert_eq!(buf.len(), 300);
        assert_eq!(buf.as_slice()[299], 99);
        assert_eq!(format!("{buf:?}"), "SecretBuf([redacted; 300 bytes])");
        let bytes = buf.into_bytes();
        assert_eq!(bytes.len(), 300);
        assert_eq!(bytes[150], 50);
    }
}
