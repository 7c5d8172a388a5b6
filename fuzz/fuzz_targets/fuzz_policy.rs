//! The `allow` glob parser and matcher (`routes[].allow`), against a naive
//! reference implementation.
//!
//! Input: lines. The last line is a request, `METHOD PATH`; every other
//! line is an `allow` entry. Checked besides "no panic":
//! * `Policy::allows` agrees with a reference matcher written here the
//!   obvious way (every segment percent-decoded into a list, `**` tried
//!   at every split, `*` within a segment by recursion);
//! * `* /**` allows every path that has no encoded separator;
//! * an entry that parses is shown as `METHOD PATH` and parses again to
//!   a policy that decides the same.
#![no_main]

use authproxy::config::policy::Policy;
use http::Method;
use libfuzzer_sys::fuzz_target;
use percent_encoding::percent_decode;

#[derive(Debug)]
enum Seg {
    Any,
    Pattern(Vec<u8>),
}

fn parse_entry(entry: &str) -> (Option<String>, Vec<Seg>) {
    let entry = entry.trim();
    let (method, path) = entry.split_once([' ', '\t']).unwrap();
    let path = path.trim();
    let segs = path[1..]
        .split('/')
        .map(|s| {
            if s == "**" {
                Seg::Any
            } else {
                Seg::Pattern(percent_decode(s.as_bytes()).collect())
            }
        })
        .collect();
    ((method != "*").then(|| method.to_string()), segs)
}

/// `*` matches any run of bytes (this is within one segment already).
fn wild(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| wild(rest, &s[i..])),
        Some((c, rest)) => s.first() == Some(c) && wild(rest, &s[1..]),
    }
}

fn seg_matches(p: &[u8], s: &[u8]) -> bool {
    if p.contains(&b'*') {
        !s.is_empty() && wild(p, s)
    } else {
        p == s
    }
}

fn path_matches(p: &[Seg], s: &[Vec<u8>]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((Seg::Any, rest)) => (0..=s.len()).any(|i| path_matches(rest, &s[i..])),
        Some((Seg::Pattern(pat), rest)) => {
            !s.is_empty() && seg_matches(pat, &s[0]) && path_matches(rest, &s[1..])
        }
    }
}

fn encoded_separator(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    path.contains('\\')
        || ["%2f", "%5c", "%252f", "%255c"]
            .iter()
            .any(|e| lower.contains(e))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines: Vec<&str> = text.split('\n').collect();
    let request = lines.pop().unwrap_or("");
    let Some((method, path)) = request.split_once(' ') else {
        return;
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return;
    };
    // Bounded work for the exponential reference.
    if path.len() > 200 || lines.iter().any(|l| l.len() > 100) || lines.len() > 8 {
        return;
    }
    let everything = Policy::parse(&["* /**"]).unwrap();
    if path.starts_with('/') && !encoded_separator(path) {
        assert!(everything.allows(&method, path), "{path:?}");
    }
    let Ok(policy) = Policy::parse(&lines) else {
        return;
    };
    let got = policy.allows(&method, path);
    let rel = if path.is_empty() { "/" } else { path };
    let expected = rel.starts_with('/')
        && !encoded_separator(rel)
        && lines.iter().any(|entry| {
            let (m, segs) = parse_entry(entry);
            let path_segs: Vec<Vec<u8>> = rel[1..]
                .split('/')
                .map(|s| percent_decode(s.as_bytes()).collect())
                .collect();
            m.is_none_or(|m| m == method.as_str()) && path_matches(&segs, &path_segs)
        });
    assert_eq!(got, expected, "{lines:?} {method} {path:?}");
    let shown: Vec<&str> = policy.entries().collect();
    let again = Policy::parse(&shown).expect("shown entries parse");
    assert_eq!(again.allows(&method, path), got);
});
