//! AWS Signature Version 4 on every request (`type = "aws_sigv4"`).
//!
//! What is signed: `host` (the upstream's), `x-amz-date`,
//! `x-amz-content-sha256`, `x-amz-security-token` (with a session token),
//! and of the client's headers `content-type`, `content-md5` and every
//! other `x-amz-*` (S3 requires all `x-amz-*` signed: metadata, ACLs,
//! checksums, `x-amz-target` of the JSON APIs). Other headers are not:
//! AWS does not ask for them, and proxies on the way may change them
//! (`user-agent`, `accept-encoding`). The client's `Authorization`,
//! `X-Amz-Date`, `X-Amz-Content-Sha256` and `X-Amz-Security-Token` are
//! replaced.
//!
//! The signing key (four HMACs) is derived once per UTC day and kept.
//! The clock used is the host's plus a correction learnt from the
//! upstream: when it refuses a request (401/403) and its `Date` is more
//! than five minutes away from the time signed, the difference is kept
//! and the request is signed again and replayed once (what the AWS SDKs
//! do on `RequestTimeTooSkewed`); the proxy's aws flow (src/proxy/) does that.

pub mod canonical;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ring::hmac;
use zeroize::Zeroizing;

use crate::config::AwsSigV4Config;
use crate::secret::Secret;

pub use canonical::EMPTY_SHA256;

pub const X_AMZ_DATE: HeaderName = HeaderName::from_static("x-amz-date");
pub const X_AMZ_CONTENT_SHA256: HeaderName = HeaderName::from_static("x-amz-content-sha256");
pub const X_AMZ_SECURITY_TOKEN: HeaderName = HeaderName::from_static("x-amz-security-token");
/// The payload hash of a body that is not hashed (S3 only).
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
/// A client's own aws-chunked upload with unsigned chunks and a trailing
/// checksum (current AWS SDKs for S3): its framing is kept and the value
/// is signed as it is.
pub const STREAMING_UNSIGNED_TRAILER: &str = "STREAMING-UNSIGNED-PAYLOAD-TRAILER";
/// Larger than this, a clock difference explains a refusal.
pub const MAX_SKEW_SECONDS: u64 = 300;

pub struct AwsSigV4 {
    access_key_id: Secret,
    secret_access_key: Secret,
    session_token: Option<HeaderValue>,
    region: String,
    service: String,
    s3: bool,
    unsigned_payload: bool,
    /// The day (`YYYYMMDD`) and the signing key derived for it.
    key: Mutex<Option<([u8; 8], hmac::Key)>>,
    /// Seconds to add to the host's clock (learnt from the upstream).
    skew: AtomicI64,
}

/// One request's signature, with the steps that led to it (the test suite
/// checks each).
pub struct Signature {
    pub canonical_request: Vec<u8>,
    pub string_to_sign: String,
    /// The `Authorization` value.
    pub authorization: Zeroizing<String>,
}

impl AwsSigV4 {
    pub fn new(cfg: &AwsSigV4Config) -> AwsSigV4 {
        let session_token = cfg.session_token.as_ref().map(|t| {
            let mut v = HeaderValue::from_str(t.expose()).expect("checked header value");
            v.set_sensitive(true);
            v
        });
        AwsSigV4 {
            access_key_id: cfg.access_key_id.clone(),
            secret_access_key: cfg.secret_access_key.clone(),
            session_token,
            region: cfg.region.clone(),
            service: cfg.service.clone(),
            s3: matches!(cfg.service.as_str(), "s3" | "s3-outposts"),
            unsigned_payload: cfg.unsigned_payload,
            key: Mutex::new(None),
            skew: AtomicI64::new(0),
        }
    }

    /// S3's rules: the path is neither normalised nor encoded twice.
    pub fn is_s3(&self) -> bool {
        self.s3
    }

    pub fn unsigned_payload(&self) -> bool {
        self.unsigned_payload
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    pub fn service(&self) -> &str {
        &self.service
    }

    /// The clock correction in use (seconds; status shows it).
    pub fn skew(&self) -> i64 {
        self.skew.load(Ordering::Relaxed)
    }

    /// Unix seconds to sign with: the host's clock, corrected.
    pub fn now(&self) -> u64 {
        crate::clock::unix_now().saturating_add_signed(self.skew())
    }

    /// After a refusal: whether the upstream's clock (`server`, its `Date`)
    /// is far enough from the time signed (`signed_at`) to explain it. If
    /// so the difference is kept for every later signature.
    pub fn learn_skew(&self, server: u64, signed_at: u64) -> bool {
        if server.abs_diff(signed_at) <= MAX_SKEW_SECONDS {
            return false;
        }
        let host = signed_at.saturating_add_signed(-self.skew());
        let skew = server as i64 - host as i64;
        self.skew.store(skew, Ordering::Relaxed);
        tracing::warn!(
            service = %self.service,
            skew_seconds = skew,
            "the upstream's clock differs from ours by more than {MAX_SKEW_SECONDS} s; signing with its time from now on"
        );
        true
    }

    /// The upstream path and query as sent and signed: an S3 path in its
    /// canonical encoding, the query in canonical form.
    pub fn upstream_target(&self, path: &str, query: Option<&str>) -> String {
        let path = if self.s3 {
            canonical::s3_path(path)
        } else {
            path.into()
        };
        let query = query.map(canonical::canonical_query).unwrap_or_default();
        let mut target = String::with_capacity(path.len() + query.len() + 1);
        target.push_str(&path);
        if !query.is_empty() {
            target.push('?');
            target.push_str(&query);
        }
        target
    }

    /// Signs a request whose `host` header is set and whose path and query
    /// came from [`Self::upstream_target`]: sets `X-Amz-Date`,
    /// `X-Amz-Content-Sha256`, `X-Amz-Security-Token` and `Authorization`
    /// (replacing the client's), at unix time `at`.
    pub fn sign(
        &self,
        method: &str,
        path: &str,
        query: Option<&str>,
        headers: &mut HeaderMap,
        payload_hash: &str,
        at: u64,
    ) {
        let amz_date = amz_date(at);
        headers.remove(header::AUTHORIZATION);
        headers.insert(
            X_AMZ_DATE,
            HeaderValue::from_str(&amz_date).expect("digits and letters"),
        );
        headers.insert(
            X_AMZ_CONTENT_SHA256,
            HeaderValue::from_str(payload_hash).expect("hex or a fixed word"),
        );
        match &self.session_token {
            Some(t) => {
                headers.insert(X_AMZ_SECURITY_TOKEN, t.clone());
            }
            None => {
                headers.remove(X_AMZ_SECURITY_TOKEN);
            }
        }
        let mut names: Vec<&HeaderName> = headers
            .keys()
            .filter(|n| {
                *n == header::HOST
                    || *n == header::CONTENT_TYPE
                    || n.as_str() == "content-md5"
                    || n.as_str().starts_with("x-amz-")
            })
            .collect();
        names.sort_unstable_by(|a, b| a.as_str().cmp(b.as_str()));
        names.dedup();
        let signed = canonical::canonical_headers(names.iter().flat_map(|name| {
            headers
                .get_all(*name)
                .iter()
                .map(move |v| (name.as_str(), v.as_bytes()))
        }));
        let canonical_uri = canonical::canonical_uri(path, self.s3);
        let canonical_query = query.unwrap_or("");
        let signature = self.signature(
            method,
            &canonical_uri,
            canonical_query,
            &signed,
            payload_hash,
            &amz_date,
        );
        let mut value = HeaderValue::from_str(&signature.authorization)
            .expect("ASCII letters, digits, `/=,;-`");
        value.set_sensitive(true);
        headers.insert(header::AUTHORIZATION, value);
    }

    /// The signature of a canonical request made of these parts; `headers`
    /// as [`canonical::canonical_headers`] makes them, `amz_date`
    /// `YYYYMMDDTHHMMSSZ`.
    pub fn signature(
        &self,
        method: &str,
        canonical_uri: &str,
        canonical_query: &str,
        headers: &[(String, Vec<u8>)],
        payload_hash: &str,
        amz_date: &str,
    ) -> Signature {
        let (canonical_request, signed_headers) = canonical::canonical_request(
            method,
            canonical_uri,
            canonical_query,
            headers,
            payload_hash,
        );
        let day = &amz_date[..8];
        let scope = format!("{day}/{}/{}/aws4_request", self.region, self.service);
        let string_to_sign = format!(
            "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
            hex(ring::digest::digest(&ring::digest::SHA256, &canonical_request).as_ref())
        );
        let key = self.signing_key(day);
        let signature = hex(hmac::sign(&key, string_to_sign.as_bytes()).as_ref());
        let authorization = Zeroizing::new(format!(
            "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
            self.access_key_id.expose()
        ));
        Signature {
            canonical_request,
            string_to_sign,
            authorization,
        }
    }

    /// The signing key of `day` (`YYYYMMDD`), derived once per day.
    fn signing_key(&self, day: &str) -> hmac::Key {
        let mut day_bytes = [0u8; 8];
        day_bytes.copy_from_slice(&day.as_bytes()[..8]);
        let mut cached = self.key.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((d, key)) = cached.as_ref() {
            if *d == day_bytes {
                return key.clone();
            }
        }
        let secret = Zeroizing::new(format!("AWS4{}", self.secret_access_key.expose()));
        let step = |key: &[u8], data: &str| {
            hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes())
        };
        let k_date = step(secret.as_bytes(), day);
        let k_region = step(k_date.as_ref(), &self.region);
        let k_service = step(k_region.as_ref(), &self.service);
        let k_signing = step(k_service.as_ref(), "aws4_request");
        let key = hmac::Key::new(hmac::HMAC_SHA256, k_signing.as_ref());
        *cached = Some((day_bytes, key.clone()));
        key
    }
}

/// `20150830T123600Z` for a Unix time.
pub fn amz_date(unix: u64) -> String {
    let text = crate::clock::rfc3339(unix);
    text.chars().filter(|c| *c != '-' && *c != ':').collect()
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 15) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(service: &str) -> AwsSigV4 {
        AwsSigV4::new(&AwsSigV4Config {
            access_key_id: Secret::new("AKIDEXAMPLE"),
            secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            session_token: None,
            region: "us-east-1".into(),
            service: service.into(),
            unsigned_payload: false,
        })
    }

    #[test]
    fn dates() {
        assert_eq!(amz_date(1_440_938_160), "20150830T123600Z");
    }

    /// AWS's `get-vanilla` case; the whole suite runs in tests/sigv4.rs.
    #[test]
    fn get_vanilla() {
        let s = signer("service");
        let mut headers = HeaderMap::new();
        headers.insert(
            header::HOST,
            HeaderValue::from_static("example.amazonaws.com"),
        );
        headers.insert(header::USER_AGENT, HeaderValue::from_static("not signed"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("client's"));
        s.sign("GET", "/", None, &mut headers, EMPTY_SHA256, 1_440_938_160);
        // The same with x-amz-content-sha256 signed too (the suite's vanilla
        // case does not have it): checked against botocore's SigV4Auth.
        let auth = headers.get(header::AUTHORIZATION).unwrap();
        assert!(auth.is_sensitive());
        assert!(auth.to_str().unwrap().starts_with(
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature="
        ));
        let sig = s.signature(
            "GET",
            "/",
            "",
            &canonical::canonical_headers([
                ("host", &b"example.amazonaws.com"[..]),
                ("x-amz-date", b"20150830T123600Z"),
            ]),
            EMPTY_SHA256,
            "20150830T123600Z",
        );
        assert_eq!(
            &*sig.authorization,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    #[test]
    fn skew_is_learnt_only_when_it_explains_a_refusal() {
        let s = signer("s3");
        assert!(!s.learn_skew(1000, 1200));
        assert_eq!(s.skew(), 0);
        assert!(s.learn_skew(10_000, 6_400));
        assert_eq!(s.skew(), 3_600);
        // Signed with the correction, refused again for another reason.
        assert!(!s.learn_skew(10_050, 10_000));
        assert_eq!(s.skew(), 3_600);
    }
}
