//! Token endpoint answers: `parse_token_answer`, `parse_error_answer`,
//! `jwt_exp`.
//!
//! Input: the response body, as is.
//!
//! Checked besides "no panic":
//! * on Ok, the access token is non-empty visible ASCII (0x21..=0x7e): it
//!   goes into a header;
//! * on Ok, the header value the proxy builds from it (`<token_type> <token>`,
//!   `Bearer` when the answer has no token_type) is a valid header value;
//! * a kept refresh token is the new one or the previous one;
//! * error messages (they are logged) contain no control characters.
#![no_main]

use authproxy::oauth::token::{jwt_exp, parse_error_answer, parse_token_answer};
use authproxy::secret::Secret;
use libfuzzer_sys::fuzz_target;

fn no_controls(what: &str, text: &str) {
    assert!(
        !text.chars().any(|c| c.is_control()),
        "{what} contains a control character: {text:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    let previous = Secret::new("previous-refresh-token");
    for (now, prev) in [(1_700_000_000u64, None), (u64::MAX - 5, Some(&previous))] {
        match parse_token_answer(data, now, prev) {
            Ok(set) => {
                let token = set.access_token.expose();
                assert!(!token.is_empty(), "empty access token accepted");
                assert!(
                    token.bytes().all(|b| (0x21..=0x7e).contains(&b)),
                    "access token {token:?} is not visible ASCII"
                );
                assert_eq!(set.obtained_at, now);
                if let Some(r) = &set.refresh_token {
                    assert!(!r.is_empty(), "empty refresh token kept");
                }
                if set.refresh_token.is_none() {
                    assert!(prev.is_none(), "previous refresh token dropped");
                }
                let scheme = set.token_type.as_deref().unwrap_or("Bearer");
                let value = if scheme.is_empty() {
                    token.to_string()
                } else {
                    format!("{scheme} {token}")
                };
                assert!(
                    http::HeaderValue::from_str(&value).is_ok(),
                    "token answer accepted, but `{value}` is not a valid header value \
                     (token_type {:?})",
                    set.token_type
                );
            }
            Err(e) => no_controls("parse_token_answer error", &e.to_string()),
        }
    }
    for status in [400u16, 401, 503] {
        if let Some(e) = parse_error_answer(status, data) {
            no_controls("parse_error_answer error", &e.to_string());
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = jwt_exp(text);
        // A JWT inside an answer is the usual case; also try the text as one.
        let _ = jwt_exp(text.trim());
    }
});
