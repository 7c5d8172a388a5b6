//! A string that must never be printed: tokens, passwords, client secrets,
//! header values that carry credentials.

use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A secret value. `Debug` prints `Secret([redacted])`; there is no `Display`,
/// so it cannot end up in a format string by accident. Read it with
/// [`Secret::expose`] at the one place that needs the real bytes.
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

    /// A one-way fingerprint (hex SHA-256 with a domain prefix), used to notice
    /// that a seed in the config changed without keeping the seed itself.
    pub fn fingerprint(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(b"authproxy-seed-v1\0");
        hasher.update(self.0.as_bytes());
        let digest = hasher.finalize();
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret)
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
    fn fingerprint_is_stable_and_hides_value() {
        let a = Secret::new("seed-1").fingerprint();
        assert_eq!(a, Secret::new("seed-1").fingerprint());
        assert_ne!(a, Secret::new("seed-2").fingerprint());
        assert!(!a.contains("seed"));
        assert_eq!(a.len(), 64);
    }
}
