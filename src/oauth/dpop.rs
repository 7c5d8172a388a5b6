//! DPoP (RFC 9449): sender-constrained tokens. A provider with `dpop =
//! true` has one P-256 key; every token request and every proxied request
//! carries a fresh proof signed with it (a JWS with the public key in its
//! header, bound to the method and URL, and on resource requests to the
//! access token by `ath`). Servers may demand a nonce of theirs in the
//! proof: the latest one per server is remembered here.
//!
//! A proof is signed on every proxied request, so what does not change is
//! made once per key: the base64url JOSE header (with the JWK) and the
//! key's thumbprint. What is left per request is the claims, one SHA-256
//! and one ECDSA signature (ring's).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::HeaderValue;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::jwt::random_jti;
use crate::secret::{Secret, SecretBuf};

/// The `DPoP` request and response header names.
pub const DPOP: http::HeaderName = http::HeaderName::from_static("dpop");
pub const DPOP_NONCE: http::HeaderName = http::HeaderName::from_static("dpop-nonce");

/// Servers remembered per provider; past this the memory starts over (a
/// provider talks to its token endpoint and a few upstreams).
const MAX_SERVERS: usize = 64;

/// A nonce longer than this is not kept (oidc-provider's are 43 chars).
const MAX_NONCE: usize = 1024;

/// A provider's DPoP key: P-256, ES256. Cheap to clone; never printed.
#[derive(Clone)]
pub struct DpopKey {
    inner: Arc<KeyInner>,
}

struct KeyInner {
    pair: EcdsaKeyPair,
    /// The PKCS#8 document, base64url, as the store keeps it.
    stored: Secret,
    /// `base64url({"typ":"dpop+jwt","alg":"ES256","jwk":{…}})` and a dot.
    header_dot: String,
    /// The JWK SHA-256 thumbprint (RFC 7638), a token's `cnf.jkt`.
    thumbprint: String,
}

impl DpopKey {
    /// A new random key.
    pub fn generate() -> DpopKey {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("the system random generator works");
        let stored = Secret::new(URL_SAFE_NO_PAD.encode(pkcs8.as_ref()));
        Self::from_stored(&stored).expect("a key ring made reads back")
    }

    /// The key as [`DpopKey::stored`] wrote it. The error quotes nothing.
    pub fn from_stored(stored: &Secret) -> Result<DpopKey, String> {
        let der = Zeroizing::new(
            URL_SAFE_NO_PAD
                .decode(stored.expose())
                .map_err(|_| "the stored DPoP key is not base64url".to_string())?,
        );
        let pair =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &SystemRandom::new())
                .map_err(|_| "the stored DPoP key is not a P-256 PKCS#8 key".to_string())?;
        // The uncompressed point: 0x04, x, y (32 bytes each).
        let point = pair.public_key().as_ref();
        let (x, y) = (
            URL_SAFE_NO_PAD.encode(&point[1..33]),
            URL_SAFE_NO_PAD.encode(&point[33..65]),
        );
        // RFC 7638 §3.2: the required members, in lexicographic order, no
        // whitespace.
        let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let thumbprint = URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()));
        let header = format!(
            r#"{{"typ":"dpop+jwt","alg":"ES256","jwk":{{"kty":"EC","crv":"P-256","x":"{x}","y":"{y}"}}}}"#
        );
        let mut header_dot = URL_SAFE_NO_PAD.encode(header.as_bytes());
        header_dot.push('.');
        Ok(DpopKey {
            inner: Arc::new(KeyInner {
                pair,
                stored: stored.clone(),
                header_dot,
                thumbprint,
            }),
        })
    }

    /// The private key as the store keeps it (PKCS#8, base64url).
    pub fn stored(&self) -> &Secret {
        &self.inner.stored
    }

    /// The JWK thumbprint (RFC 7638) a bound token names in `cnf.jkt`.
    pub fn thumbprint(&self) -> &str {
        &self.inner.thumbprint
    }

    /// A proof (RFC 9449 §4.2) for `htm` `htu` at `now`; `htu` has no query
    /// or fragment. `ath` ([`ath`] of the access token) on resource
    /// requests, `nonce` the server's nonce. A sensitive header value.
    pub fn proof(
        &self,
        htm: &str,
        htu: &str,
        ath: Option<&str>,
        nonce: Option<&str>,
        now: u64,
    ) -> HeaderValue {
        let mut claims = serde_json::json!({
            "jti": random_jti(),
            "htm": htm,
            "htu": htu,
            "iat": now,
        });
        if let Some(ath) = ath {
            claims["ath"] = ath.into();
        }
        if let Some(nonce) = nonce {
            claims["nonce"] = nonce.into();
        }
        let claims = serde_json::to_vec(&claims).expect("JSON serializes");
        let mut out = SecretBuf::with_capacity(512);
        out.extend(self.inner.header_dot.as_bytes());
        out.extend(URL_SAFE_NO_PAD.encode(claims).as_bytes());
        let signature = self
            .inner
            .pair
            .sign(&SystemRandom::new(), out.as_slice())
            .expect("ECDSA signing does not fail with the system generator");
        out.extend(b".");
        out.extend(URL_SAFE_NO_PAD.encode(signature.as_ref()).as_bytes());
        let mut value =
            HeaderValue::from_bytes(out.as_slice()).expect("base64url and dots are a header value");
        value.set_sensitive(true);
        value
    }
}

impl PartialEq for DpopKey {
    fn eq(&self, other: &Self) -> bool {
        self.inner.thumbprint == other.inner.thumbprint
    }
}

impl fmt::Debug for DpopKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The thumbprint is public (it is in every token bound to the key).
        write!(f, "DpopKey(jkt {}, [redacted])", self.inner.thumbprint)
    }
}

/// `ath` (RFC 9449 §4.2): base64url(SHA-256(access token)).
pub fn ath(access_token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(access_token.as_bytes()))
}

/// A provider's DPoP state: its key and the latest nonce of each server.
/// The key changes only when another replica's token (bound to its key)
/// is taken from a shared store.
#[derive(Debug)]
pub struct Dpop {
    key: Mutex<DpopKey>,
    nonces: Mutex<HashMap<String, String>>,
}

impl Dpop {
    pub fn new(key: DpopKey) -> Dpop {
        Dpop {
            key: Mutex::new(key),
            nonces: Mutex::default(),
        }
    }

    /// The key new tokens are bound to.
    pub fn key(&self) -> DpopKey {
        self.key.lock().unwrap().clone()
    }

    pub fn set_key(&self, key: DpopKey) {
        *self.key.lock().unwrap() = key;
    }

    /// A proof with the current key for `htm` `url` (query and fragment
    /// dropped) with the latest nonce of `url`'s server: for token requests.
    pub fn proof_for(&self, htm: &str, url: &url::Url, now: u64) -> HeaderValue {
        let origin = url.origin().ascii_serialization();
        let mut htu = url.clone();
        htu.set_query(None);
        htu.set_fragment(None);
        self.proof_with(&self.key(), htm, &origin, htu.as_str(), None, now)
    }

    /// A proof signed by `key` (the one the token was bound to) for `htm`
    /// `htu` (already without query and fragment) with the latest nonce of
    /// `origin` (`scheme://host[:port]`).
    pub fn proof_with(
        &self,
        key: &DpopKey,
        htm: &str,
        origin: &str,
        htu: &str,
        ath: Option<&str>,
        now: u64,
    ) -> HeaderValue {
        let nonce = self.nonces.lock().unwrap().get(origin).cloned();
        key.proof(htm, htu, ath, nonce.as_deref(), now)
    }

    /// Remembers the `DPoP-Nonce` of an answer from `origin`, if it has a
    /// valid one. Whether it had one that is new.
    pub fn note_nonce(&self, origin: &str, headers: &http::HeaderMap) -> bool {
        let Some(nonce) = headers
            .get(DPOP_NONCE)
            .and_then(|v| nonce_value(v.as_bytes()))
        else {
            return false;
        };
        let mut nonces = self.nonces.lock().unwrap();
        if nonces.get(origin).is_some_and(|n| n == nonce) {
            return false;
        }
        if nonces.len() >= MAX_SERVERS && !nonces.contains_key(origin) {
            nonces.clear();
        }
        nonces.insert(origin.to_string(), nonce.to_string());
        true
    }
}

/// A `DPoP-Nonce` value (RFC 9449 §8.1: `nonce = 1*NQCHAR`, printable
/// ASCII without `"` and `\`), or `None`.
pub fn nonce_value(value: &[u8]) -> Option<&str> {
    let ok = !value.is_empty()
        && value.len() <= MAX_NONCE
        && value
            .iter()
            .all(|b| matches!(b, 0x21 | 0x23..=0x5b | 0x5d..=0x7e));
    if ok {
        std::str::from_utf8(value).ok()
    } else {
        None
    }
}

/// Whether `WWW-Authenticate` values hold a `DPoP` challenge with
/// `error="use_dpop_nonce"` (RFC 9449 §9).
pub fn asks_for_nonce<'a>(values: impl IntoIterator<Item = &'a HeaderValue>) -> bool {
    values.into_iter().any(|v| {
        challenges(v.as_bytes()).any(|(scheme, name, value)| {
            scheme.eq_ignore_ascii_case(b"dpop")
                && name.eq_ignore_ascii_case(b"error")
                && value == b"use_dpop_nonce"
        })
    })
}

/// The auth-params of a `WWW-Authenticate` value (RFC 9110 §11.6.1), as
/// (scheme, name, value) with quoted-string values unquoted (an escaped
/// character keeps its backslash: only the codes above are compared).
/// Malformed parts end the walk; never panics.
pub fn challenges(value: &[u8]) -> impl Iterator<Item = (&[u8], &[u8], &[u8])> {
    let mut p = Parser {
        s: value,
        i: 0,
        scheme: &[],
    };
    std::iter::from_fn(move || p.next_param())
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    scheme: &'a [u8],
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn skip_ws_commas(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.i += 1;
        }
    }

    fn token(&mut self) -> &'a [u8] {
        let start = self.i;
        while self.peek().is_some_and(is_tchar) {
            self.i += 1;
        }
        &self.s[start..self.i]
    }

    /// The next auth-param; a token that is not followed by `=` starts a
    /// new challenge (or is a token68, which is skipped).
    fn next_param(&mut self) -> Option<(&'a [u8], &'a [u8], &'a [u8])> {
        loop {
            self.skip_ws_commas();
            self.peek()?;
            let name = self.token();
            if name.is_empty() {
                return None;
            }
            self.skip_ws();
            if self.peek() != Some(b'=') {
                // A scheme; a token68 may follow it.
                self.scheme = name;
                self.skip_ws();
                let before = self.i;
                let t = self.token();
                let mut j = self.i;
                while self.s.get(j) == Some(&b'=') {
                    j += 1;
                }
                let mut k = j;
                while matches!(self.s.get(k), Some(b' ' | b'\t')) {
                    k += 1;
                }
                if !t.is_empty() && j > self.i && matches!(self.s.get(k), None | Some(b',')) {
                    self.i = k; // token68
                } else {
                    self.i = before;
                }
                continue;
            }
            if self.scheme.is_empty() {
                return None;
            }
            // `name =`: a param of the current scheme.
            self.i += 1;
            self.skip_ws();
            let value = if self.peek() == Some(b'"') {
                self.i += 1;
                let from = self.i;
                loop {
                    match self.peek() {
                        None => return None,
                        Some(b'"') => break,
                        Some(b'\\') => self.i += 2,
                        Some(_) => self.i += 1,
                    }
                }
                let v = &self.s[from..self.i.min(self.s.len())];
                self.i += 1;
                v
            } else {
                self.token()
            };
            self.skip_ws();
            match self.peek() {
                None | Some(b',') => {}
                Some(_) => return None,
            }
            return Some((self.scheme, name, value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    #[test]
    fn nonce_challenges_are_found_among_others() {
        assert!(asks_for_nonce([&hv(
            r#"DPoP error="use_dpop_nonce", error_description="Resource server requires nonce in DPoP proof""#
        )]));
        assert!(asks_for_nonce([&hv(
            r#"Bearer realm="x", error="invalid_token", DPoP algs="ES256 PS256", error=use_dpop_nonce"#
        )]));
        assert!(asks_for_nonce([
            &hv("Basic realm=\"a\""),
            &hv("dpop error=\"use_dpop_nonce\"")
        ]));
        assert!(!asks_for_nonce([&hv(
            r#"Bearer error="use_dpop_nonce", DPoP algs="ES256""#
        )]));
        assert!(!asks_for_nonce([&hv(r#"DPoP error="invalid_token""#)]));
        assert!(!asks_for_nonce([&hv(r#"Negotiate abc==, DPoP"#)]));
        assert!(asks_for_nonce([&hv(
            r#"Negotiate abc==, DPoP error="use_dpop_nonce""#
        )]));
        assert!(!asks_for_nonce([&hv(r#"DPoP error="use_dpop_nonce"#)]));
    }

    #[test]
    fn nonces_are_nqchars_only() {
        assert_eq!(
            nonce_value(b"eyJ7S_zG.eyJH0-Z.HX4w-7v"),
            Some("eyJ7S_zG.eyJH0-Z.HX4w-7v")
        );
        assert_eq!(nonce_value(b""), None);
        assert_eq!(nonce_value(b"a b"), None);
        assert_eq!(nonce_value(b"a\"b"), None);
        assert_eq!(nonce_value(b"a\\b"), None);
        assert_eq!(nonce_value(&[b'a'; MAX_NONCE + 1]), None);
    }

    #[test]
    fn keys_read_back_from_the_store_with_the_same_thumbprint() {
        let key = DpopKey::generate();
        let again = DpopKey::from_stored(key.stored()).unwrap();
        assert_eq!(key, again);
        assert_eq!(key.thumbprint().len(), 43);
        assert_ne!(key, DpopKey::generate());
        assert!(!format!("{key:?}").contains(key.stored().expose()));
        let err = DpopKey::from_stored(&Secret::new("QUJD")).unwrap_err();
        assert!(!err.contains("QUJD"), "{err}");
    }

    #[test]
    fn nonces_are_remembered_per_server() {
        let dpop = Dpop::new(DpopKey::generate());
        let mut headers = http::HeaderMap::new();
        headers.insert(DPOP_NONCE, hv("n-1"));
        assert!(dpop.note_nonce("https://a.example", &headers));
        assert!(!dpop.note_nonce("https://a.example", &headers));
        let url = url::Url::parse("https://a.example/p?q=1#f").unwrap();
        let proof = dpop.proof_for("GET", &url, 7);
        let (_, claims) = crate::oauth::jwt::decode_unverified(proof.to_str().unwrap()).unwrap();
        assert_eq!(claims["nonce"], "n-1");
        assert_eq!(claims["htu"], "https://a.example/p");
        let other = url::Url::parse("https://b.example/p").unwrap();
        let (_, claims) = crate::oauth::jwt::decode_unverified(
            dpop.proof_for("GET", &other, 7).to_str().unwrap(),
        )
        .unwrap();
        assert!(claims.get("nonce").is_none());
    }

    /// A quick stand-in for `fuzz_dpop` in every test run: inputs made of
    /// the characters the parser cares about never make it panic, and
    /// what it returns is made of tokens.
    #[test]
    fn challenge_parsing_survives_random_input() {
        use rand::Rng;
        let alphabet = b"DPoPBearer error=\"use_dpop_nonce\\, \t=abc";
        let mut rng = rand::rng();
        for _ in 0..20_000 {
            let len = rng.random_range(0..40);
            let input: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect();
            for (scheme, name, _) in challenges(&input) {
                assert!(!scheme.is_empty() && scheme.iter().all(|b| is_tchar(*b)));
                assert!(!name.is_empty() && name.iter().all(|b| is_tchar(*b)));
            }
        }
    }
}
