//! The SigV4 canonical-request builder: client paths, queries and header
//! values are untrusted input.
//!
//! Input: lines. Line 1 is a path, line 2 a query (without `?`), every
//! further line a header `name:value`. A first byte of `S` selects S3's
//! rules. Checked besides "no panic":
//! * the canonical query is sorted by name, then value; each pair has one
//!   `=`; it holds only unreserved characters, `%XY` (upper-case hex),
//!   `=` and `&`; computing it again from itself gives it back;
//! * an S3 path as sent holds only unreserved characters, `/` and `%XY`,
//!   and rewriting it again changes nothing;
//! * the canonical URI (not S3) starts with `/`, has no empty, `.` or
//!   `..` segment but a trailing one, and only unreserved characters, `/`
//!   and `%XY`; S3's is the path as sent;
//! * URI encoding is undone by percent-decoding;
//! * header values in canonical form have no leading, trailing or double
//!   spaces and no tabs;
//! * the whole signature can be made (through the same path the proxy
//!   takes) whenever the path and query form a valid request target.
#![no_main]

use authproxy::config::AwsSigV4Config;
use authproxy::credentials::aws_sigv4::{canonical, AwsSigV4};
use authproxy::secret::Secret;
use libfuzzer_sys::fuzz_target;

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

/// Only unreserved characters, the `extra` ones, and `%XY` with upper-case
/// hex digits.
fn well_encoded(s: &str, extra: &[u8]) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hexd = |c: u8| c.is_ascii_digit() || (b'A'..=b'F').contains(&c);
            if i + 2 >= b.len() || !hexd(b[i + 1]) || !hexd(b[i + 2]) {
                return false;
            }
            i += 3;
        } else if unreserved(b[i]) || extra.contains(&b[i]) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

fuzz_target!(|data: &[u8]| {
    let (s3, data) = match data.split_first() {
        Some((b'S', rest)) => (true, rest),
        _ => (false, data),
    };
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let path = lines.next().unwrap_or("");
    let query = lines.next().unwrap_or("");
    let headers: Vec<(&str, &str)> = lines.filter_map(|l| l.split_once(':')).collect();

    // Canonical query.
    let cq = canonical::canonical_query(query);
    assert!(well_encoded(&cq, b"=&"), "{cq:?}");
    let pairs: Vec<(&str, &str)> = if cq.is_empty() {
        Vec::new()
    } else {
        cq.split('&')
            .map(|p| {
                let mut it = p.split('=');
                let pair = (it.next().unwrap(), it.next().expect("an `=`"));
                assert!(it.next().is_none(), "two `=` in {p:?}");
                pair
            })
            .collect()
    };
    assert!(pairs.windows(2).all(|w| w[0] <= w[1]), "not sorted: {cq:?}");
    assert_eq!(canonical::canonical_query(&cq), cq, "not idempotent");

    // S3 paths as sent.
    let sp = canonical::s3_path(path);
    assert!(well_encoded(&sp, b"/"), "{sp:?}");
    assert_eq!(canonical::s3_path(&sp), sp, "not idempotent");

    // Canonical URIs.
    let cu = canonical::canonical_uri(path, false);
    assert!(cu.starts_with('/'), "{cu:?}");
    assert!(well_encoded(&cu, b"/"), "{cu:?}");
    let inner = cu.trim_start_matches('/');
    let inner = inner.strip_suffix('/').unwrap_or(inner);
    if !inner.is_empty() {
        for seg in inner.split('/') {
            assert!(!seg.is_empty() && seg != "." && seg != "..", "{cu:?}");
        }
    }
    if !path.is_empty() {
        assert_eq!(canonical::canonical_uri(path, true), path);
    }

    // Encoding round trip.
    let mut enc = String::new();
    canonical::uri_encode(&mut enc, data, false);
    let dec: Vec<u8> = percent_encoding::percent_decode(enc.as_bytes()).collect();
    assert_eq!(dec, data);

    // Header values.
    let ch = canonical::canonical_headers(headers.iter().map(|(n, v)| (*n, v.as_bytes())));
    assert!(ch.windows(2).all(|w| w[0].0 < w[1].0), "names sorted, once");
    for (_, v) in &ch {
        for part in v.split(|b| *b == b',') {
            assert!(!part.contains(&b'\t'), "{v:?}");
            assert!(!part.windows(2).any(|w| w == b"  "), "{v:?}");
        }
    }

    // The proxy's path: target from the route, then sign.
    let signer = AwsSigV4::new(&AwsSigV4Config {
        access_key_id: Secret::new("AKIDEXAMPLE"),
        secret_access_key: Secret::new("secret"),
        session_token: None,
        region: "us-east-1".into(),
        service: if s3 { "s3".into() } else { "service".into() },
        unsigned_payload: false,
    });
    let target = format!("{}?{query}", if path.starts_with('/') { path } else { "/" });
    if let Ok(uri) = target.parse::<http::Uri>() {
        let signed_target = signer.upstream_target(uri.path(), uri.query());
        let uri: http::Uri = signed_target
            .parse()
            .expect("a canonical target is a valid URI");
        let mut map = http::HeaderMap::new();
        map.insert(
            http::header::HOST,
            http::HeaderValue::from_static("example.com"),
        );
        for (n, v) in &headers {
            if let (Ok(n), Ok(v)) = (
                http::HeaderName::from_bytes(n.as_bytes()),
                http::HeaderValue::from_str(v),
            ) {
                map.append(n, v);
            }
        }
        signer.sign(
            "GET",
            uri.path(),
            uri.query(),
            &mut map,
            canonical::EMPTY_SHA256,
            1_440_938_160,
        );
        assert!(map.contains_key(http::header::AUTHORIZATION));
    }
});
