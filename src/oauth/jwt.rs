//! Signed JWTs in the JWS compact serialization (RFC 7515 §7.1): what a
//! client assertion, a JWT-bearer grant assertion and (later) a DPoP proof
//! are made of.
//!
//! The signatures are `ring`'s (already in the tree for rustls), not a JWT
//! crate: `jsonwebtoken` 10 and later sign with aws-lc-rs or the RustCrypto
//! crates only, which would be a second crypto stack. What is left to do
//! here is base64url and two dots.
//!
//! Keys come as PEM: RSA in PKCS#8 or PKCS#1, EC P-256 in PKCS#8 or SEC1.
//! A [`PrivateKey`] never prints; its DER is zeroed once `ring` has parsed
//! it (`ring`'s own key schedule is not zeroed, see the README).

use std::fmt;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use crate::secret::{Secret, SecretBuf};

/// A JWS signature algorithm (RFC 7518 §3.1), of those providers ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    /// HMAC SHA-256 with a shared secret (`client_secret_jwt`).
    Hs256,
    /// RSASSA-PKCS1-v1_5 SHA-256.
    Rs256,
    /// RSASSA-PSS SHA-256 (MGF1 SHA-256, salt 32 bytes).
    Ps256,
    /// ECDSA P-256 SHA-256, the signature as `r || s` (64 bytes).
    Es256,
}

impl Alg {
    pub fn parse(text: &str) -> Option<Alg> {
        match text {
            "HS256" => Some(Alg::Hs256),
            "RS256" => Some(Alg::Rs256),
            "PS256" => Some(Alg::Ps256),
            "ES256" => Some(Alg::Es256),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Alg::Hs256 => "HS256",
            Alg::Rs256 => "RS256",
            Alg::Ps256 => "PS256",
            Alg::Es256 => "ES256",
        }
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of key a [`PrivateKey`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa,
    /// EC on P-256, the only curve ES256 uses.
    EcP256,
}

impl KeyKind {
    /// The algorithm to sign with when none is configured.
    pub fn default_alg(self) -> Alg {
        match self {
            KeyKind::Rsa => Alg::Rs256,
            KeyKind::EcP256 => Alg::Es256,
        }
    }

    pub fn fits(self, alg: Alg) -> bool {
        matches!(
            (self, alg),
            (KeyKind::Rsa, Alg::Rs256 | Alg::Ps256) | (KeyKind::EcP256, Alg::Es256)
        )
    }

    pub fn describe(self) -> &'static str {
        match self {
            KeyKind::Rsa => "an RSA key",
            KeyKind::EcP256 => "an EC P-256 key",
        }
    }
}

enum KeyPairs {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
}

/// An RSA or EC P-256 private key, parsed. Cheap to clone; never printed.
/// Two keys are equal when their public halves are.
#[derive(Clone)]
pub struct PrivateKey {
    pair: Arc<KeyPairs>,
}

/// The SEC1 `namedCurve` of P-256 (RFC 5480 §2.1.1.1: secp256r1).
const P256_OID: &str = "1.2.840.10045.3.1.7";

impl PrivateKey {
    /// Reads the first private key of a PEM text. The error says what is
    /// wrong with it, never any of its content.
    pub fn from_pem(text: &str) -> Result<PrivateKey, String> {
        if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
            return Err("is an encrypted private key, which is not supported; store it decrypted where only the proxy can read it (`openssl pkey -in key.pem -out plain.pem`)".into());
        }
        // The parser's own errors can quote a line of the input: not shown.
        let der = PrivateKeyDer::from_pem_slice(text.as_bytes()).map_err(|_| {
            "holds no PEM private key (expected -----BEGIN PRIVATE KEY-----, -----BEGIN RSA PRIVATE KEY----- or -----BEGIN EC PRIVATE KEY-----)".to_string()
        })?;
        let der = Zeroizing::new(der);
        let pair = match &*der {
            PrivateKeyDer::Pkcs8(p) => {
                let bytes = p.secret_pkcs8_der();
                match RsaKeyPair::from_pkcs8(bytes) {
                    Ok(rsa) => KeyPairs::Rsa(rsa),
                    Err(rsa_err) => match EcdsaKeyPair::from_pkcs8(
                        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                        bytes,
                        &SystemRandom::new(),
                    ) {
                        Ok(ec) => KeyPairs::Ec(ec),
                        Err(_) => {
                            return Err(format!(
                                "is a PKCS#8 key that is neither a usable RSA key ({}) nor an EC P-256 key; use RSA (2048 bits or more) or EC P-256",
                                rsa_err
                            ))
                        }
                    },
                }
            }
            PrivateKeyDer::Pkcs1(p) => {
                KeyPairs::Rsa(RsaKeyPair::from_der(p.secret_pkcs1_der()).map_err(|e| {
                    format!(
                        "is an RSA key that cannot be used ({}); RSA keys need 2048 to 8192 bits",
                        e
                    )
                })?)
            }
            PrivateKeyDer::Sec1(p) => KeyPairs::Ec(sec1_p256(p.secret_sec1_der())?),
            _ => {
                return Err(
                    "is a kind of private key that is not supported; use RSA or EC P-256".into(),
                )
            }
        };
        Ok(PrivateKey {
            pair: Arc::new(pair),
        })
    }

    pub fn kind(&self) -> KeyKind {
        match *self.pair {
            KeyPairs::Rsa(_) => KeyKind::Rsa,
            KeyPairs::Ec(_) => KeyKind::EcP256,
        }
    }

    /// The public half, as ring encodes it (RSAPublicKey DER, or the
    /// uncompressed EC point).
    pub fn public_key_bytes(&self) -> &[u8] {
        match &*self.pair {
            KeyPairs::Rsa(k) => k.public().as_ref(),
            KeyPairs::Ec(k) => k.public_key().as_ref(),
        }
    }
}

/// A SEC1 `ECPrivateKey` (RFC 5915) on P-256, whose structure `sec1`
/// decodes; ring takes the private scalar and the public point.
fn sec1_p256(der: &[u8]) -> Result<EcdsaKeyPair, String> {
    let key = sec1::EcPrivateKey::try_from(der)
        .map_err(|_| "is not a valid SEC1 EC private key (-----BEGIN EC PRIVATE KEY-----)")?;
    if let Some(curve) = key.parameters.and_then(|p| p.named_curve()) {
        if curve.to_string() != P256_OID {
            return Err(format!(
                "is an EC key on the curve {curve}, not P-256; ES256 needs a P-256 key"
            ));
        }
    }
    let public = key.public_key.ok_or(
        "is a SEC1 EC key without its public key; convert it with `openssl pkey -in key.pem -out pkcs8.pem`",
    )?;
    EcdsaKeyPair::from_private_key_and_public_key(
        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        key.private_key,
        public,
        &SystemRandom::new(),
    )
    .map_err(|e| format!("is an EC key that cannot be used ({e})"))
}

impl PartialEq for PrivateKey {
    fn eq(&self, other: &Self) -> bool {
        self.kind() == other.kind() && self.public_key_bytes() == other.public_key_bytes()
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrivateKey({:?}, [redacted])", self.kind())
    }
}

/// What signs: a private key, or the HMAC key made of a client secret.
#[derive(Clone)]
enum Key {
    Private(PrivateKey),
    /// The secret itself is kept for equality (compared in constant time).
    Hmac(ring::hmac::Key, Secret),
}

/// A key with the algorithm it signs with and the `kid` that names it.
#[derive(Clone)]
pub struct Signer {
    key: Key,
    alg: Alg,
    kid: Option<String>,
    /// More header parameters (e.g. `x5t`, `x5t#S256`).
    header: Vec<(String, String)>,
}

impl Signer {
    /// A signer with a private key. `alg` must fit the key
    /// ([`KeyKind::fits`]); the config check makes sure it does.
    pub fn private(key: PrivateKey, alg: Alg, kid: Option<String>) -> Result<Signer, String> {
        if !key.kind().fits(alg) {
            return Err(format!("{alg} cannot sign with {}", key.kind().describe()));
        }
        Ok(Signer {
            key: Key::Private(key),
            alg,
            kid,
            header: Vec::new(),
        })
    }

    /// Adds a header parameter to every JWT this signs (RFC 7515 §4.1:
    /// `x5t` / `x5t#S256` name the key by its certificate's thumbprint,
    /// which Microsoft Entra requires).
    pub fn with_header(mut self, name: &str, value: String) -> Signer {
        self.header.push((name.to_string(), value));
        self
    }

    /// The extra header parameters.
    pub fn header_params(&self) -> &[(String, String)] {
        &self.header
    }

    /// HS256 with a shared secret (RFC 7523 §2.2 `client_secret_jwt`: the
    /// client secret's bytes are the HMAC key).
    pub fn hmac(secret: &Secret, kid: Option<String>) -> Signer {
        Signer {
            key: Key::Hmac(
                ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.expose().as_bytes()),
                secret.clone(),
            ),
            alg: Alg::Hs256,
            kid,
            header: Vec::new(),
        }
    }

    pub fn alg(&self) -> Alg {
        self.alg
    }

    pub fn kid(&self) -> Option<&str> {
        self.kid.as_deref()
    }

    /// `header` (with `alg`, and `kid` if any, added) and `claims`, signed,
    /// in the compact serialization. The result is a secret: whoever holds
    /// it can use it until it expires.
    pub fn sign(&self, mut header: Map<String, Value>, claims: &Value) -> Secret {
        header.insert("alg".into(), self.alg.as_str().into());
        if let Some(kid) = &self.kid {
            header.insert("kid".into(), kid.clone().into());
        }
        for (name, value) in &self.header {
            header.insert(name.clone(), value.clone().into());
        }
        let header = serde_json::to_vec(&header).expect("a JSON map serializes");
        let claims = Zeroizing::new(serde_json::to_vec(claims).expect("JSON serializes"));
        let mut out = SecretBuf::with_capacity(1024);
        out.extend(URL_SAFE_NO_PAD.encode(header).as_bytes());
        out.extend(b".");
        out.extend(Zeroizing::new(URL_SAFE_NO_PAD.encode(&*claims)).as_bytes());
        let signature = self.signature(out.as_slice());
        out.extend(b".");
        out.extend(URL_SAFE_NO_PAD.encode(signature).as_bytes());
        let text = std::str::from_utf8(out.as_slice()).expect("base64 and dots are ASCII");
        Secret::new(text)
    }

    /// The JWS signature of the signing input (RFC 7515 §5.1).
    fn signature(&self, input: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match (&self.key, self.alg) {
            (Key::Hmac(key, _), _) => ring::hmac::sign(key, input).as_ref().to_vec(),
            (Key::Private(key), alg) => match (&*key.pair, alg) {
                (KeyPairs::Ec(pair), _) => pair
                    .sign(&rng, input)
                    .expect("ECDSA signing does not fail with the system generator")
                    .as_ref()
                    .to_vec(),
                (KeyPairs::Rsa(pair), alg) => {
                    let padding: &'static dyn signature::RsaEncoding = match alg {
                        Alg::Ps256 => &signature::RSA_PSS_SHA256,
                        _ => &signature::RSA_PKCS1_SHA256,
                    };
                    let mut sig = vec![0; pair.public().modulus_len()];
                    pair.sign(padding, &rng, input, &mut sig)
                        .expect("RSA signing does not fail with a buffer of the modulus' size");
                    sig
                }
            },
        }
    }
}

impl PartialEq for Signer {
    fn eq(&self, other: &Self) -> bool {
        let same_key = match (&self.key, &other.key) {
            (Key::Private(a), Key::Private(b)) => a == b,
            (Key::Hmac(_, a), Key::Hmac(_, b)) => a.ct_eq(b.expose().as_bytes()),
            _ => false,
        };
        same_key && self.alg == other.alg && self.kid == other.kid && self.header == other.header
    }
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = match &self.key {
            Key::Private(k) => format!("{:?}", k.kind()),
            Key::Hmac(..) => "Hmac".to_string(),
        };
        f.debug_struct("Signer")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .field("header", &self.header)
            .field("key", &format_args!("{key}([redacted])"))
            .finish()
    }
}

/// A random `jti` (RFC 7519 §4.1.7): 128 bits from the system generator,
/// base64url. Unique in practice across every request ever made.
pub fn random_jti() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system random generator works");
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The header and claims of a compact JWS, decoded, without any check of
/// the signature (tests and diagnostics look at what was sent).
pub fn decode_unverified(jwt: &str) -> Option<(Value, Value)> {
    let mut parts = jwt.split('.');
    let (header, claims, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let decode = |part: &str| -> Option<Value> {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok()
    };
    Some((decode(header)?, decode(claims)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algs_parse_by_their_jose_names_only() {
        for alg in [Alg::Hs256, Alg::Rs256, Alg::Ps256, Alg::Es256] {
            assert_eq!(Alg::parse(alg.as_str()), Some(alg));
        }
        assert_eq!(Alg::parse("rs256"), None);
        assert_eq!(Alg::parse("none"), None);
        assert_eq!(Alg::parse("EdDSA"), None);
        assert!(KeyKind::Rsa.fits(Alg::Ps256));
        assert!(!KeyKind::Rsa.fits(Alg::Es256));
        assert!(!KeyKind::EcP256.fits(Alg::Hs256));
    }

    #[test]
    fn hmac_tokens_carry_alg_and_kid() {
        let signer = Signer::hmac(&Secret::new("s3cret"), Some("k1".into()));
        let mut header = Map::new();
        header.insert("typ".into(), "JWT".into());
        let jwt = signer.sign(header, &serde_json::json!({"iss": "me"}));
        let (header, claims) = decode_unverified(jwt.expose()).unwrap();
        assert_eq!(header["alg"], "HS256");
        assert_eq!(header["kid"], "k1");
        assert_eq!(header["typ"], "JWT");
        assert_eq!(claims["iss"], "me");
        assert!(!format!("{signer:?}").contains("s3cret"));
    }

    #[test]
    fn key_errors_never_quote_the_key() {
        let garbage = "-----BEGIN PRIVATE KEY-----\nTOPSECRETBYTES\n-----END PRIVATE KEY-----\n";
        let err = PrivateKey::from_pem(garbage).unwrap_err();
        assert!(!err.contains("TOPSECRET"), "{err}");
        let err = PrivateKey::from_pem("TOPSECRET not pem").unwrap_err();
        assert!(
            !err.contains("TOPSECRET") && err.contains("BEGIN PRIVATE KEY"),
            "{err}"
        );
        let err = PrivateKey::from_pem(
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        )
        .unwrap_err();
        assert!(err.contains("encrypted"), "{err}");
    }

    #[test]
    fn random_jtis_differ() {
        let a = random_jti();
        assert_eq!(a.len(), 22);
        assert_ne!(a, random_jti());
    }
}
