//! The canonical request of Signature Version 4: how AWS spells a request
//! before hashing it. Pure functions over untrusted input (the client's
//! path, query and headers), fuzzed by `fuzz/fuzz_targets/fuzz_sigv4.rs`.
//!
//! The rules, from AWS's "Create a signed AWS API request" and checked
//! against AWS's published test suite (`tests/sigv4.rs`) and botocore:
//! - URI encoding: every byte but the unreserved `A-Z a-z 0-9 - _ . ~` as
//!   `%XY` with upper-case hex (`/` kept in paths).
//! - Canonical URI, every service but S3: the path as sent, with dot
//!   segments resolved and empty segments dropped, then URI-encoded (so a
//!   path that is already percent-encoded is encoded a second time: `%20`
//!   becomes `%2520`). S3: the path as sent, neither normalised nor
//!   encoded again — which is why the proxy first rewrites an S3 path into
//!   its canonical encoding ([`s3_path`]), so what is sent and what is
//!   signed are the same bytes.
//! - Canonical query: each `name=value` decoded (`+` is a space, as in
//!   forms) and URI-encoded, a missing `=` read as an empty value, sorted
//!   by name, then value. The proxy sends the query in this form too, so
//!   an upstream that re-encodes what it got computes the same.
//! - Headers: names lower-cased, values with surrounding whitespace cut
//!   and inner runs of spaces made one, repeated headers joined by `,` in
//!   their order, sorted by name.

use std::borrow::Cow;

use percent_encoding::percent_decode;

/// The empty body's SHA-256, hex.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

/// Appends `bytes` URI-encoded the AWS way; `/` is kept when `keep_slash`.
pub fn uri_encode(out: &mut String, bytes: &[u8], keep_slash: bool) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if unreserved(b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
}

/// The canonical URI of `path` (as sent on the wire, starting with `/`).
pub fn canonical_uri(path: &str, s3: bool) -> String {
    if s3 {
        return if path.is_empty() {
            "/".into()
        } else {
            path.into()
        };
    }
    let normalized = remove_dot_segments(path);
    let mut out = String::with_capacity(normalized.len() + 8);
    uri_encode(&mut out, normalized.as_bytes(), true);
    out
}

/// RFC 3986 §5.2.4, and empty segments dropped, as AWS (and botocore's
/// `normalize_url_path`) do for every service but S3.
fn remove_dot_segments(path: &str) -> String {
    if path.is_empty() {
        return "/".into();
    }
    let mut kept: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                kept.pop();
            }
            s => kept.push(s),
        }
    }
    // Always absolute, as AWS computes it: a path the signer gets without
    // its `/` (none reaches it from the proxy, which sends origin-form
    // paths) must not be signed as a relative one.
    let mut out = String::with_capacity(path.len() + 1);
    out.push('/');
    out.push_str(&kept.join("/"));
    if path.ends_with('/') && !kept.is_empty() {
        out.push('/');
    }
    out
}

/// An S3 path as it is sent and signed: decoded, then URI-encoded with `/`
/// kept. S3 reads the object key the same way (`%2F` is a `/` of the key).
pub fn s3_path(path: &str) -> Cow<'_, str> {
    let canonical = path.bytes().all(|b| unreserved(b) || b == b'/');
    if canonical {
        return Cow::Borrowed(path);
    }
    let decoded: Vec<u8> = percent_decode(path.as_bytes()).collect();
    let mut out = String::with_capacity(decoded.len() * 3);
    uri_encode(&mut out, &decoded, true);
    Cow::Owned(out)
}

/// The canonical query string of the `query` the client sent (without
/// `?`); empty when there is none.
pub fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (name, value) = p.split_once('=').unwrap_or((p, ""));
            (reencode(name), reencode(value))
        })
        .collect();
    pairs.sort_unstable();
    let mut out = String::with_capacity(query.len() + 16);
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(name);
        out.push('=');
        out.push_str(value);
    }
    out
}

/// A query name or value form-decoded (`+` is a space), then URI-encoded.
fn reencode(part: &str) -> String {
    let spaced: Cow<'_, [u8]> = if part.contains('+') {
        Cow::Owned(
            part.bytes()
                .map(|b| if b == b'+' { b' ' } else { b })
                .collect(),
        )
    } else {
        Cow::Borrowed(part.as_bytes())
    };
    let decoded: Cow<'_, [u8]> = percent_decode(&spaced).into();
    let mut out = String::with_capacity(decoded.len() + 8);
    uri_encode(&mut out, &decoded, false);
    out
}

/// A header value in canonical form: whitespace around it cut, inner runs
/// of whitespace made one space. (Bytes beyond ASCII pass unchanged.)
pub fn trim_all(out: &mut Vec<u8>, value: &[u8]) {
    let mut words = value
        .split(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c))
        .filter(|w| !w.is_empty());
    if let Some(first) = words.next() {
        out.extend_from_slice(first);
        for w in words {
            out.push(b' ');
            out.extend_from_slice(w);
        }
    }
}

/// Headers to sign in canonical form: `(lower-case name, value)` pairs in
/// request order become sorted names, each with its values trimmed and
/// joined by `,` in their order.
pub fn canonical_headers<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> Vec<(String, Vec<u8>)> {
    let mut by_name: Vec<(String, Vec<u8>)> = Vec::new();
    for (name, value) in headers {
        let name = name.trim().to_ascii_lowercase();
        match by_name.iter_mut().find(|(n, _)| *n == name) {
            Some((_, joined)) => {
                joined.push(b',');
                trim_all(joined, value);
            }
            None => {
                let mut joined = Vec::with_capacity(value.len());
                trim_all(&mut joined, value);
                by_name.push((name, joined));
            }
        }
    }
    by_name.sort_by(|a, b| a.0.cmp(&b.0));
    by_name
}

/// The canonical request and the `SignedHeaders` list.
pub fn canonical_request(
    method: &str,
    canonical_uri: &str,
    canonical_query: &str,
    headers: &[(String, Vec<u8>)],
    payload_hash: &str,
) -> (Vec<u8>, String) {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(method.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(canonical_uri.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(canonical_query.as_bytes());
    out.push(b'\n');
    let mut signed = String::new();
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        out.extend_from_slice(value);
        out.push(b'\n');
        if !signed.is_empty() {
            signed.push(';');
        }
        signed.push_str(name);
    }
    out.push(b'\n');
    out.extend_from_slice(signed.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(payload_hash.as_bytes());
    (out, signed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_paths() {
        assert_eq!(canonical_uri("/", false), "/");
        assert_eq!(canonical_uri("", false), "/");
        assert_eq!(canonical_uri("//example//", false), "/example/");
        assert_eq!(canonical_uri("/example/..", false), "/");
        assert_eq!(canonical_uri("/a/./b/../c", false), "/a/c");
        assert_eq!(canonical_uri("/a b/ü", false), "/a%20b/%C3%BC");
        // Already encoded on the wire: encoded again (not S3).
        assert_eq!(
            canonical_uri("/model/anthropic.claude-v2%3A1/invoke", false),
            "/model/anthropic.claude-v2%253A1/invoke"
        );
        assert_eq!(canonical_uri("/a~b/$x", false), "/a~b/%24x");
        // S3: as sent.
        assert_eq!(canonical_uri("/b//k/./x%20y", true), "/b//k/./x%20y");
    }

    #[test]
    fn s3_paths_are_sent_in_canonical_encoding() {
        assert_eq!(s3_path("/bucket/key.txt"), "/bucket/key.txt");
        assert_eq!(
            s3_path("/bucket/a%20b/%c3%bc.txt"),
            "/bucket/a%20b/%C3%BC.txt"
        );
        assert_eq!(s3_path("/bucket/a+b(1)"), "/bucket/a%2Bb%281%29");
        assert_eq!(s3_path("/bucket/%7Ex%2Fy"), "/bucket/~x/y");
        assert!(matches!(s3_path("/b/k"), Cow::Borrowed(_)));
    }

    #[test]
    fn queries() {
        assert_eq!(canonical_query(""), "");
        assert_eq!(canonical_query("b=2&a=1"), "a=1&b=2");
        assert_eq!(canonical_query("a=2&a=1&a"), "a=&a=1&a=2");
        assert_eq!(
            canonical_query("q=a+b&x=%7e&y=a%2bb"),
            "q=a%20b&x=~&y=a%2Bb"
        );
        assert_eq!(canonical_query("%E1%88%B4=1&P=2"), "%E1%88%B4=1&P=2");
        assert_eq!(canonical_query("k=ü/é&&"), "k=%C3%BC%2F%C3%A9");
        assert_eq!(canonical_query("bad=%zz%"), "bad=%25zz%25");
        // Sorted by encoded name, then value.
        assert_eq!(
            canonical_query("a.b=1&a-b=2&a_b=3&A=4"),
            "A=4&a-b=2&a.b=1&a_b=3"
        );
    }

    #[test]
    fn header_values() {
        let h = canonical_headers([
            ("My-Header1", &b"  value1 "[..]),
            ("x-amz-date", b"20150830T123600Z"),
            ("my-header1", b"\"a   b\tc\""),
            ("Host", b"example.amazonaws.com"),
        ]);
        let names: Vec<&str> = h.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["host", "my-header1", "x-amz-date"]);
        assert_eq!(h[1].1, b"value1,\"a b c\"");
        let (creq, signed) = canonical_request("GET", "/", "", &h, EMPTY_SHA256);
        assert_eq!(signed, "host;my-header1;x-amz-date");
        assert!(String::from_utf8(creq)
            .unwrap()
            .ends_with(&format!("\n\nhost;my-header1;x-amz-date\n{EMPTY_SHA256}")));
    }
}
