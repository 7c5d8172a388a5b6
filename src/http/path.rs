//! Rules for request paths that hold for every request, whatever it is for.

use percent_encoding::percent_decode_str;

/// True when any segment of the path is `.` or `..`, also when written with
/// percent-encoding (`%2e`, `%2E`, double-encoded `%252e`) or with a
/// backslash or encoded slash as the separator: upstream servers differ in
/// which of those they normalise, so none of them may pass.
pub fn has_dot_segment(path: &str) -> bool {
    // A dot segment needs a `.`, an encoded one a `%`: most paths have neither.
    if !path.bytes().any(|b| b == b'.' || b == b'%') {
        return false;
    }
    let mut current = std::borrow::Cow::Borrowed(path);
    // Decode a bounded number of times to catch double encoding.
    for _ in 0..4 {
        // `..;x` counts too: Tomcat and Jetty drop path parameters first.
        if current
            .split(['/', '\\'])
            .map(|seg| seg.split(';').next().unwrap_or(seg))
            .any(|seg| seg == "." || seg == "..")
        {
            return true;
        }
        if !current.contains('%') {
            // Nothing left to decode (the common case: no allocation).
            return false;
        }
        let decoded = percent_decode_str(&current)
            .decode_utf8_lossy()
            .into_owned();
        if decoded == current.as_ref() {
            return false;
        }
        current = std::borrow::Cow::Owned(decoded);
    }
    // Still changing after several rounds: nobody encodes a path like that.
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments() {
        for bad in [
            "/a/../b",
            "/a/./b",
            "/..",
            "/a/%2e%2e/b",
            "/a/%2E%2E/b",
            "/a/.%2e/b",
            "/a/%252e%252e/b",
            "/a/..%2fb",
            "/a/..%5cb",
            "/a\\..\\b",
            "/a/%2e/b",
            "/a/..;/b",
            "/a/..;jsessionid=x/b",
        ] {
            assert!(has_dot_segment(bad), "{bad} should be refused");
        }
        for good in ["/a/b", "/a/..b", "/a/b..", "/a/.hidden", "/a/%2e%2ex", "/"] {
            assert!(!has_dot_segment(good), "{good} should pass");
        }
    }
}
