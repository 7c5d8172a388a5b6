//! The store's URL as shown (never its password), error text scrubbed of
//! it, and key patterns.

/// `host:port/db` and whether TLS is used, plus the credentials to scrub
/// from error messages. Parsed leniently: the config already checked it.
pub(super) fn describe_url(url: &str) -> (String, bool, Vec<String>) {
    let Ok(parsed) = url::Url::parse(url) else {
        return ("(unparsable url)".into(), false, Vec::new());
    };
    let host = parsed.host_str().unwrap_or("localhost");
    let port = parsed.port().unwrap_or(6379);
    let db = parsed.path().trim_start_matches('/');
    let db = if db.is_empty() { "0" } else { db };
    let mut redact = Vec::new();
    if let Some(password) = parsed.password().filter(|p| !p.is_empty()) {
        redact.push(password.to_string());
        let decoded = percent_encoding::percent_decode_str(password)
            .decode_utf8_lossy()
            .into_owned();
        if decoded != password {
            redact.push(decoded);
        }
    }
    (
        format!("{host}:{port}/{db}"),
        parsed.scheme() == "rediss",
        redact,
    )
}

/// An error's text with any credential from the URL cut out.
pub(super) fn scrub(e: &dyn std::fmt::Display, redact: &[String]) -> String {
    let mut text = e.to_string();
    for secret in redact {
        text = text.replace(secret.as_str(), "[redacted]");
    }
    text
}

/// `\`-escapes glob characters so a prefix matches only itself in `SCAN`.
pub(super) fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_never_shows_credentials() {
        let (endpoint, tls, redact) =
            describe_url("rediss://user:p%40ss-SECRET@cache.example:6380/2");
        assert_eq!(endpoint, "cache.example:6380/2");
        assert!(tls);
        let text = scrub(
            &"AUTH failed for user with p@ss-SECRET and p%40ss-SECRET",
            &redact,
        );
        assert!(!text.contains("SECRET"), "{text}");
        assert!(text.contains("for user with"), "{text}");
        let (endpoint, tls, _) = describe_url("redis://127.0.0.1");
        assert_eq!(endpoint, "127.0.0.1:6379/0");
        assert!(!tls);
    }

    #[test]
    fn glob_characters_in_the_prefix_are_escaped() {
        assert_eq!(glob_escape("a*b?[c]\\:"), "a\\*b\\?\\[c\\]\\\\:");
    }
}
