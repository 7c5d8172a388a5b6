//! Path checks and the route table.
//!
//! Input: lines. The last line is a request target as a client sends it
//! (`/path?query`, parsed by `http::Uri` like the server does). Every other
//! line is a route `PREFIX<TAB>UPSTREAM[<TAB>nostrip]`; a line without a tab
//! is a prefix routed to `http://127.0.0.1:9000/base/`. Every line is also
//! fed to `has_dot_segment` and `PathPrefix::parse` as a whole.
//!
//! Checked besides "no panic":
//! * `has_dot_segment(p) == false` ⇒ no segment of p, split on `/` and `\`,
//!   is `.` or `..`, after any number of percent-decoding rounds;
//! * prefixes match on whole segments: the matched part equals the prefix
//!   (without trailing `/`) and is followed by nothing or `/`;
//! * `lookup` returns the longest matching prefix;
//! * `upstream_uri` of a path and query taken from a valid request URI
//!   parses as an `http::Uri`, with the route's scheme and authority.
#![no_main]

use authproxy::config::{PathPrefix, RouteConfig};
use authproxy::http::path::has_dot_segment;
use authproxy::proxy::routes::RouteTable;
use libfuzzer_sys::fuzz_target;
use url::Url;

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

fn percent_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'%' && i + 2 < input.len() {
            if let (Some(h), Some(l)) = (hex(input[i + 1]), hex(input[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

/// The reference: decode until nothing changes (at most 16 rounds) and look
/// at every stage.
fn really_has_dot_segment(path: &str) -> bool {
    let mut current = path.as_bytes().to_vec();
    for _ in 0..16 {
        if current
            .split(|b| *b == b'/' || *b == b'\\')
            .any(|seg| seg == b"." || seg == b"..")
        {
            return true;
        }
        let next = percent_decode(&current);
        if next == current {
            return false;
        }
        current = next;
    }
    true
}

fn check_path(p: &str) {
    if !has_dot_segment(p) {
        assert!(
            !really_has_dot_segment(p),
            "has_dot_segment({p:?}) is false but a segment decodes to `.` or `..`"
        );
    }
}

/// What the config checker accepts as an upstream.
fn acceptable_upstream(u: &Url) -> bool {
    matches!(u.scheme(), "http" | "https")
        && u.host().is_some()
        && u.username().is_empty()
        && u.password().is_none()
        && u.query().is_none()
        && u.fragment().is_none()
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines: Vec<&str> = text.split('\n').collect();
    let target = lines.pop().unwrap_or("/");

    let mut configs = Vec::new();
    for line in &lines {
        check_path(line);
        if PathPrefix::parse(line).is_ok() {
            assert!(line.starts_with('/'));
            assert!(!has_dot_segment(line));
        }
        let mut fields = line.split('\t');
        let prefix_text = fields.next().unwrap_or("");
        check_path(prefix_text);
        let upstream_text = fields.next().unwrap_or("http://127.0.0.1:9000/base/");
        let strip_prefix = fields.next() != Some("nostrip");
        let Ok(prefix) = PathPrefix::parse(prefix_text) else {
            continue;
        };
        let Ok(upstream) = Url::parse(upstream_text) else {
            continue;
        };
        if !acceptable_upstream(&upstream) {
            continue;
        }
        // Duplicate prefixes are a config error.
        if configs.iter().any(|c: &RouteConfig| c.prefix == prefix) {
            continue;
        }
        configs.push(RouteConfig {
            strip_prefix,
            ..RouteConfig::pass_through(prefix, upstream)
        });
    }
    let table = RouteTable::new(&configs);

    check_path(target);
    let Ok(uri) = target.parse::<http::Uri>() else {
        return;
    };
    let path = uri.path();
    let query = uri.query();
    check_path(path);
    if has_dot_segment(path) {
        return; // the proxy refuses these before the lookup
    }
    // `OPTIONS * HTTP/1.1` (asterisk-form) reaches the proxy with path `*`;
    // the root route once built `https://host*` from it. The proxy now
    // refuses targets that are not paths (400) before the lookup.
    if !path.starts_with('/') {
        return;
    }

    // Whole segments, for every prefix.
    let mut best: Option<usize> = None;
    for c in &configs {
        if let Some(rest) = c.prefix.strip(path) {
            assert!(
                rest.is_empty() || rest.starts_with('/') || c.prefix.as_str() == "/",
                "prefix {:?} strips {path:?} to {rest:?}",
                c.prefix.as_str()
            );
            let matched = &path[..path.len() - rest.len()];
            let want = c.prefix.as_str().trim_end_matches('/');
            assert_eq!(
                matched,
                want,
                "prefix {:?} matched {matched:?} of {path:?}",
                c.prefix.as_str()
            );
            best = Some(best.map_or(matched.len(), |b: usize| b.max(matched.len())));
        }
    }
    let hit = table.lookup(path);
    assert_eq!(hit.is_some(), best.is_some(), "lookup({path:?}) disagrees");
    let Some(route) = hit else {
        return;
    };
    let rest = route.prefix.strip(path).unwrap();
    assert_eq!(
        Some(path.len() - rest.len()),
        best,
        "lookup({path:?}) chose {:?}, not the longest prefix",
        route.prefix.as_str()
    );

    // `url` parses upstream hosts that `http::Uri` refuses (e.g.
    // `https://h*exa`ple/`); the config check now refuses them, so they
    // never reach a route table.
    if format!("{}://{}/", route.upstream.scheme(), route.authority)
        .parse::<http::Uri>()
        .is_err()
    {
        return;
    }
    let out = route.upstream_uri(path, query);
    let parsed: http::Uri = match out.parse() {
        Ok(u) => u,
        Err(e) => panic!(
            "upstream_uri({path:?}, {query:?}) via {:?} -> {:?} = {out:?} is not a URI: {e}",
            route.prefix.as_str(),
            route.upstream.as_str()
        ),
    };
    assert_eq!(
        parsed.scheme_str(),
        Some(route.upstream.scheme()),
        "{out:?}"
    );
    assert_eq!(
        parsed.authority().map(|a| a.as_str()),
        Some(route.authority.as_str()),
        "upstream_uri({path:?}, {query:?}) = {out:?} goes to another authority"
    );
    assert_eq!(parsed.query(), query, "{out:?}");
});
