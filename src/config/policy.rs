//! `routes[].allow`: a route's request policy, method + path globs,
//! compiled once per config and matched without allocating.
//!
//! An entry is `METHOD PATH`: the method as sent (case-sensitive, `*` for
//! any), the path relative to the route's prefix (`/invoices/**` on route
//! `/billing/` matches `/billing/invoices/…`), whether or not the route
//! strips its prefix. In the path, `*` matches within one segment (never
//! an empty one: `GET /customers/*` does not match `/customers/`), `**` as a
//! whole segment matches any number of segments, none included. Request
//! paths are compared segment by segment after percent-decoding each
//! segment (`/%69nvoices` is `/invoices`), so an encoding cannot slip past
//! an entry; a segment that holds an encoded slash or backslash (`%2F`,
//! `%5C`, also double-encoded) matches nothing, as upstreams disagree on
//! whether it separates segments. Dot segments never get here (refused
//! with 400 before routing). The request to the route's bare prefix
//! (`/billing`) is matched as `/`.

use std::fmt;

use http::Method;
use percent_encoding::percent_decode;

/// A compiled `allow` list.
#[derive(Clone, PartialEq)]
pub struct Policy {
    rules: Box<[Rule]>,
}

#[derive(Clone, PartialEq)]
struct Rule {
    /// `None`: any method.
    method: Option<Method>,
    segments: Box<[Seg]>,
    /// As written in the config, for `check` and error messages.
    written: Box<str>,
}

#[derive(Clone, PartialEq)]
enum Seg {
    /// `**`: any number of segments.
    Any,
    /// Exact bytes (decoded).
    Literal(Box<[u8]>),
    /// Pieces between `*`s: `report-*.pdf` is `["report-", ".pdf"]`.
    Wild(Box<[Box<[u8]>]>),
}

impl Policy {
    /// Compiles the entries of one `allow` list. The error says which
    /// entry (by index) and what to write instead.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Policy, (usize, String)> {
        if entries.is_empty() {
            return Err((
                0,
                "is empty, which refuses every request; list what the route may do, e.g. allow = [\"GET /invoices/**\"], or remove the route".into(),
            ));
        }
        let rules = entries
            .iter()
            .enumerate()
            .map(|(i, e)| Rule::parse(e.as_ref()).map_err(|m| (i, m)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Policy {
            rules: rules.into_boxed_slice(),
        })
    }

    /// Whether some entry allows `method` on `rest`, the request path after
    /// the route's prefix (`""` or starting with `/`), before the query.
    pub fn allows(&self, method: &Method, rest: &str) -> bool {
        let rest = if rest.is_empty() { "/" } else { rest };
        if !rest.starts_with('/') || has_encoded_separator(rest) {
            return false;
        }
        self.rules.iter().any(|r| {
            r.method.as_ref().is_none_or(|m| m == method) && matches_path(&r.segments, rest)
        })
    }

    /// The entries as written.
    pub fn entries(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| &*r.written)
    }
}

impl fmt::Debug for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.entries()).finish()
    }
}

impl Rule {
    fn parse(entry: &str) -> Result<Rule, String> {
        let example = "write it as METHOD and path, e.g. \"GET /invoices/**\" or \"* /status\"";
        let trimmed = entry.trim();
        let Some((method, path)) = trimmed.split_once([' ', '\t']) else {
            return Err(format!("`{entry}` has no path; {example}"));
        };
        let path = path.trim();
        if path.contains([' ', '\t']) {
            return Err(format!(
                "`{entry}` has more than a method and a path; encode spaces in the path as %20"
            ));
        }
        let method = parse_method(method)?;
        if !path.starts_with('/') {
            return Err(format!(
                "path `{path}` must start with `/` (it is relative to the route's prefix); {example}"
            ));
        }
        if path.contains(['?', '#']) {
            return Err(format!(
                "path `{path}` has a query or fragment; the policy matches the path only, remove it"
            ));
        }
        let mut segments = Vec::new();
        for raw in path[1..].split('/') {
            segments.push(parse_segment(raw, path)?);
        }
        Ok(Rule {
            method,
            segments: segments.into_boxed_slice(),
            written: format!("{} {path}", method_text(trimmed)).into_boxed_str(),
        })
    }
}

/// The method part of an entry as written (for display).
fn method_text(entry: &str) -> &str {
    entry.split([' ', '\t']).next().unwrap_or("")
}

fn parse_method(text: &str) -> Result<Option<Method>, String> {
    if text == "*" {
        return Ok(None);
    }
    let upper = text.to_ascii_uppercase();
    const STANDARD: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
    ];
    if upper != text && STANDARD.contains(&upper.as_str()) {
        return Err(format!(
            "method `{text}`: methods are case-sensitive; write `{upper}`"
        ));
    }
    Method::from_bytes(text.as_bytes())
        .map(Some)
        .map_err(|_| format!("`{text}` is not an HTTP method; write e.g. GET, POST, or * for any"))
}

fn parse_segment(raw: &str, path: &str) -> Result<Seg, String> {
    if raw == "**" {
        return Ok(Seg::Any);
    }
    if raw.contains("**") {
        return Err(format!(
            "path `{path}`: `**` must be a whole segment (`/a/**/b`), not part of one (`{raw}`); use `*` within a segment"
        ));
    }
    let decoded: Vec<u8> = percent_decode(raw.as_bytes()).collect();
    if decoded.contains(&b'/') || decoded.contains(&b'\\') || raw.contains('\\') {
        return Err(format!(
            "path `{path}`: segment `{raw}` holds an encoded slash or a backslash, which no request can match; split it into segments"
        ));
    }
    if decoded == b"." || decoded == b".." {
        return Err(format!(
            "path `{path}`: `.` and `..` segments never reach a route (such requests are refused with 400); remove them"
        ));
    }
    if !decoded.contains(&b'*') {
        return Ok(Seg::Literal(decoded.into_boxed_slice()));
    }
    Ok(Seg::Wild(
        decoded
            .split(|b| *b == b'*')
            .map(|p| p.to_vec().into_boxed_slice())
            .collect(),
    ))
}

/// An encoded slash or backslash, once or twice encoded, or a raw
/// backslash: such paths match no entry.
fn has_encoded_separator(path: &str) -> bool {
    let b = path.as_bytes();
    if b.contains(&b'\\') {
        return true;
    }
    if !b.contains(&b'%') {
        return false;
    }
    let lower = |i: usize| b.get(i).map(u8::to_ascii_lowercase);
    (0..b.len()).any(|i| {
        b[i] == b'%'
            && ((lower(i + 1) == Some(b'2') && lower(i + 2) == Some(b'f'))
                || (lower(i + 1) == Some(b'5') && lower(i + 2) == Some(b'c'))
                || (lower(i + 1) == Some(b'2')
                    && lower(i + 2) == Some(b'5')
                    && ((lower(i + 3) == Some(b'2') && lower(i + 4) == Some(b'f'))
                        || (lower(i + 3) == Some(b'5') && lower(i + 4) == Some(b'c')))))
    })
}

/// The segments of `path` (which starts with `/`), walked by position so
/// that `**` can back up without a list of them.
#[derive(Clone, Copy)]
struct Cursor<'a> {
    path: &'a str,
    /// Start of the current segment; past the end when none is left.
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn done(&self) -> bool {
        self.pos > self.path.len()
    }

    fn segment(&self) -> &'a str {
        let rest = &self.path[self.pos..];
        rest.find('/').map_or(rest, |i| &rest[..i])
    }

    fn next(self) -> Cursor<'a> {
        Cursor {
            path: self.path,
            pos: self.pos + self.segment().len() + 1,
        }
    }
}

/// Classic wildcard matching, with `**` as the star and segments as the
/// characters: greedy, backing up to the last `**` on a mismatch.
fn matches_path(pattern: &[Seg], path: &str) -> bool {
    let mut p = 0;
    let mut s = Cursor { path, pos: 1 };
    let mut star: Option<(usize, Cursor<'_>)> = None;
    loop {
        if !s.done() {
            if let Some(Seg::Any) = pattern.get(p) {
                star = Some((p, s));
                p += 1;
                continue;
            }
            if pattern
                .get(p)
                .is_some_and(|seg| segment_matches(seg, s.segment()))
            {
                p += 1;
                s = s.next();
                continue;
            }
            if let Some((sp, ss)) = star {
                let ss = ss.next();
                star = Some((sp, ss));
                p = sp + 1;
                s = ss;
                continue;
            }
            return false;
        }
        return pattern[p..].iter().all(|seg| matches!(seg, Seg::Any));
    }
}

fn segment_matches(pattern: &Seg, segment: &str) -> bool {
    match pattern {
        Seg::Any => true,
        Seg::Literal(lit) => {
            if !segment.contains('%') {
                return segment.as_bytes() == &**lit;
            }
            let mut decoded = percent_decode(segment.as_bytes());
            lit.iter().all(|b| decoded.next() == Some(*b)) && decoded.next().is_none()
        }
        Seg::Wild(pieces) => {
            if segment.is_empty() {
                return false;
            }
            if !segment.contains('%') {
                return wild_matches(pieces, segment.as_bytes());
            }
            // Decoded into a stack buffer; a longer segment (rare) into a Vec.
            let mut buf = [0u8; 256];
            let mut n = 0;
            let mut decoded = percent_decode(segment.as_bytes());
            for b in decoded.by_ref() {
                if n == buf.len() {
                    let mut v = buf.to_vec();
                    v.push(b);
                    v.extend(decoded);
                    return wild_matches(pieces, &v);
                }
                buf[n] = b;
                n += 1;
            }
            wild_matches(pieces, &buf[..n])
        }
    }
}

/// `pieces` are the parts between `*`s (at least two); the first must be a
/// prefix, the last a suffix, the rest found in order between them.
fn wild_matches(pieces: &[Box<[u8]>], s: &[u8]) -> bool {
    let (Some(first), Some(last)) = (pieces.first(), pieces.last()) else {
        return false;
    };
    if s.len() < first.len() + last.len() || !s.starts_with(first) || !s.ends_with(last) {
        return false;
    }
    let mut middle = &s[first.len()..s.len() - last.len()];
    for piece in &pieces[1..pieces.len() - 1] {
        if piece.is_empty() {
            continue;
        }
        match middle.windows(piece.len()).position(|w| w == &**piece) {
            Some(i) => middle = &middle[i + piece.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(entries: &[&str]) -> Policy {
        Policy::parse(entries).unwrap()
    }

    #[test]
    fn methods_and_segments() {
        let p = policy(&["GET /invoices/**", "POST /invoices", "GET /customers/*"]);
        let get = Method::GET;
        let post = Method::POST;
        assert!(p.allows(&get, "/invoices"));
        assert!(p.allows(&get, "/invoices/"));
        assert!(p.allows(&get, "/invoices/42"));
        assert!(p.allows(&get, "/invoices/42/lines/7"));
        assert!(p.allows(&post, "/invoices"));
        assert!(!p.allows(&post, "/invoices/42"));
        assert!(!p.allows(&Method::DELETE, "/invoices/42"));
        assert!(p.allows(&get, "/customers/7"));
        assert!(!p.allows(&get, "/customers/"));
        assert!(!p.allows(&get, "/customers"));
        assert!(!p.allows(&get, "/customers/7/orders"));
        assert!(!p.allows(&get, "/invoicesx"));
        assert!(!p.allows(&get, "/"));
        assert!(!p.allows(&get, ""));
    }

    #[test]
    fn any_method_root_and_bare_prefix() {
        let p = policy(&["* /", "* /status"]);
        assert!(p.allows(&Method::PATCH, "/"));
        assert!(p.allows(&Method::GET, ""), "the bare prefix is `/`");
        assert!(p.allows(&Method::from_bytes(b"PROPFIND").unwrap(), "/status"));
        assert!(!p.allows(&Method::GET, "/status/x"));
        let all = policy(&["GET /**"]);
        assert!(all.allows(&Method::GET, ""));
        assert!(all.allows(&Method::GET, "/a/b//c/"));
    }

    #[test]
    fn double_star_in_the_middle_backs_up() {
        let p = policy(&["GET /a/**/z/*.pdf"]);
        assert!(p.allows(&Method::GET, "/a/z/x.pdf"));
        assert!(p.allows(&Method::GET, "/a/b/z/c/z/x.pdf"));
        assert!(!p.allows(&Method::GET, "/a/b/z/c/x.pdf"));
        assert!(!p.allows(&Method::GET, "/a/z/.pdf/x"));
        let p = policy(&["GET /**/x/**"]);
        assert!(p.allows(&Method::GET, "/x"));
        assert!(p.allows(&Method::GET, "/q/w/x/e"));
        assert!(!p.allows(&Method::GET, "/q/w/e"));
    }

    #[test]
    fn wildcards_within_a_segment() {
        let p = policy(&["GET /r/report-*.pdf", "GET /m/*a*b*"]);
        assert!(p.allows(&Method::GET, "/r/report-1.pdf"));
        assert!(p.allows(&Method::GET, "/r/report-.pdf"));
        assert!(!p.allows(&Method::GET, "/r/report-1.pdfx"));
        assert!(!p.allows(&Method::GET, "/r/report.pdf"));
        assert!(p.allows(&Method::GET, "/m/ab"));
        assert!(p.allows(&Method::GET, "/m/xxaxxbxx"));
        assert!(!p.allows(&Method::GET, "/m/ba"));
    }

    #[test]
    fn encoded_paths() {
        let p = policy(&["GET /invoices/*", "GET /files/a%20b"]);
        // Decoded before comparing: an encoding cannot dodge an entry...
        assert!(p.allows(&Method::GET, "/%69nvoices/1"));
        assert!(p.allows(&Method::GET, "/files/a%20b"));
        assert!(p.allows(&Method::GET, "/files/a%20%62"));
        assert!(p.allows(&Method::GET, "/invoices/%2A"));
        // ...and an encoded separator matches nothing.
        for path in [
            "/invoices/a%2Fb",
            "/invoices%2Fadmin",
            "/invoices/a%2fb",
            "/invoices/a%5Cb",
            "/invoices/a%252Fb",
            "/invoices/a\\b",
            "/invoices%2F..%2Fadmin",
        ] {
            assert!(!p.allows(&Method::GET, path), "{path}");
        }
        // A long encoded segment takes the slow path.
        let long = format!("/w/{}", "%41".repeat(300));
        assert!(policy(&["GET /w/A*"]).allows(&Method::GET, &long));
    }

    #[test]
    fn bad_entries_name_the_fix() {
        let err = |e: &str| Policy::parse(&[e]).unwrap_err().1;
        assert!(err("GET").contains("no path"), "{}", err("GET"));
        assert!(err("get /x").contains("write `GET`"));
        assert!(err("GET x").contains("must start with `/`"));
        assert!(err("GET /x?y=1").contains("query"));
        assert!(err("GET /a**").contains("whole segment"));
        assert!(err("GET /a/../b").contains("`..`"));
        assert!(err("GET /a%2Fb").contains("encoded slash"));
        assert!(err("GET /a b").contains("more than a method"));
        assert!(err("G(T /a").contains("not an HTTP method"));
        assert!(Policy::parse::<&str>(&[]).unwrap_err().1.contains("empty"));
        assert_eq!(Policy::parse(&["GET /a", "bad"]).unwrap_err().0, 1);
        assert_eq!(
            policy(&["  GET   /a/** "]).entries().collect::<Vec<_>>(),
            ["GET /a/**"]
        );
    }
}
