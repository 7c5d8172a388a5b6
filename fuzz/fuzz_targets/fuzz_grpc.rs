//! The gRPC request headers a client controls and the proxy reads:
//! `grpc-timeout` (which caps the upstream timeout) and `TE` (whose
//! `trailers` is forwarded for gRPC).
//!
//! Input: up to two lines, the first a `grpc-timeout` value, the second a
//! `TE` value (each skipped when not a valid header value).
//!
//! Checked besides "no panic":
//! * a deadline is read only from 1 to 8 ASCII digits and one of the units
//!   H M S m u n (gRPC over HTTP/2), and it is exactly that many units;
//! * `TE` asks for trailers only when one of its comma-separated members,
//!   without parameters and spaces, is `trailers` in any case.
#![no_main]

use std::time::Duration;

use authproxy::proxy::grpc::{timeout, wants_trailers};
use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;

fn expected_timeout(v: &[u8]) -> Option<Duration> {
    let (unit, digits) = v.split_last()?;
    if !(1..=8).contains(&digits.len()) || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = digits.iter().fold(0, |n, d| n * 10 + u64::from(d - b'0'));
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

fn expected_trailers(v: &[u8]) -> bool {
    v.split(|b| *b == b',').any(|member| {
        let token = member.split(|b| *b == b';').next().unwrap_or_default();
        token.trim_ascii().eq_ignore_ascii_case(b"trailers")
    })
}

fuzz_target!(|data: &[u8]| {
    let mut lines = data.splitn(2, |b| *b == b'\n');
    let deadline = lines.next().unwrap_or_default();
    let te = lines.next();
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_bytes(deadline) {
        headers.insert("grpc-timeout", v);
        assert_eq!(
            timeout(&headers),
            expected_timeout(deadline),
            "grpc-timeout {deadline:?}"
        );
    } else {
        assert_eq!(timeout(&headers), None);
    }
    if let Some(te) = te {
        if let Ok(v) = HeaderValue::from_bytes(te) {
            headers.insert(http::header::TE, v);
            assert_eq!(wants_trailers(&headers), expected_trailers(te), "TE {te:?}");
        }
    }
});
