//! What a DPoP server sends back that authproxy reads: the
//! `WWW-Authenticate` challenges of a `401` (`challenges`,
//! `asks_for_nonce`) and a `DPoP-Nonce` value (`nonce_value`). Both come
//! from any upstream a route points at.
//!
//! Input: the header value, as bytes.
//!
//! Checked besides "no panic" (the parser walks indexes by hand):
//! * every scheme and param name is a non-empty token (RFC 9110 §5.6.2);
//! * a param value is a piece of the input;
//! * `asks_for_nonce` is true only if the input names `use_dpop_nonce`
//!   and the `DPoP` scheme;
//! * an accepted nonce is 1 to 1024 NQCHARs (RFC 9449 §8.1): it goes into
//!   the proofs' JSON and no header can be split by it.
#![no_main]

use authproxy::oauth::dpop::{asks_for_nonce, challenges, nonce_value};
use libfuzzer_sys::fuzz_target;

fn is_token(s: &[u8]) -> bool {
    !s.is_empty()
        && s.iter()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b))
}

fn within(part: &[u8], whole: &[u8]) -> bool {
    let (start, end) = (part.as_ptr() as usize, part.as_ptr() as usize + part.len());
    let (lo, hi) = (
        whole.as_ptr() as usize,
        whole.as_ptr() as usize + whole.len(),
    );
    part.is_empty() || (lo <= start && end <= hi)
}

fuzz_target!(|data: &[u8]| {
    for (n, (scheme, name, value)) in challenges(data).enumerate() {
        assert!(n <= data.len(), "more params than bytes");
        assert!(is_token(scheme), "scheme {scheme:?}");
        assert!(is_token(name), "name {name:?}");
        assert!(within(value, data), "value outside the input");
    }
    if let Ok(value) = http::HeaderValue::from_bytes(data) {
        if asks_for_nonce([&value]) {
            let lower = data.to_ascii_lowercase();
            assert!(data.windows(14).any(|w| w == b"use_dpop_nonce"));
            assert!(lower.windows(4).any(|w| w == b"dpop"));
        }
    }
    if let Some(nonce) = nonce_value(data) {
        assert!(!nonce.is_empty() && nonce.len() <= 1024);
        assert!(nonce
            .bytes()
            .all(|b| matches!(b, 0x21 | 0x23..=0x5b | 0x5d..=0x7e)));
    }
});
