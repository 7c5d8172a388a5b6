//! Text from elsewhere (a remote server, a request header) made safe to
//! put into our own messages and logs: [`sanitize`] for text that cannot
//! hold a secret, [`ProviderText`] + [`Scrubber`] for text that can.

use std::collections::HashSet;
use std::fmt;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use zeroize::Zeroize;

use crate::secret::Secret;

/// Keeps text printable (control characters become spaces) and at most
/// `max` characters long (`…` marks a cut).
pub fn sanitize(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max)
        .collect();
    if text.chars().count() > max {
        out.push('…');
    }
    out
}

/// At most this many characters of a remote server's text are shown
/// (the spec's limit), the cut marked with `…`.
pub const PROVIDER_TEXT_MAX: usize = 200;

/// What a cut-out secret is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Of a remote text, at most this many bytes are kept to be scrubbed
/// (error pages can be large; only the first 200 characters that survive
/// scrubbing are ever shown).
const RAW_MAX: usize = 16 * 1024;

/// A secret echoed in part is still cut out when at least this many bytes
/// of it appear in a row (a token quoted shortened, or split by a line
/// break). Shorter secrets are cut out where they appear whole.
const PARTIAL_MIN: usize = 10;

/// Text a remote server chose: an OAuth `error_description`, an error code
/// it made up, an error page. Servers often repeat what they were sent (the
/// refresh token, the client secret, the request body), so this text has no
/// way out until it is scrubbed: [`ProviderText::scrub`] cuts out every
/// secret of a [`Scrubber`] and keeps at most [`PROVIDER_TEXT_MAX`]
/// characters. Before that, `Display` shows a placeholder and `Debug` only
/// the length.
#[derive(Clone, PartialEq, Eq)]
pub struct ProviderText(State);

#[derive(Clone, PartialEq, Eq)]
enum State {
    /// As received; a [`Secret`], as it may hold some (zeroed on drop).
    Raw {
        text: Secret,
        truncated: bool,
    },
    Scrubbed(String),
}

impl ProviderText {
    /// Remote text as received (its first [`RAW_MAX`] bytes).
    pub fn new(text: &str) -> ProviderText {
        let mut end = text.len().min(RAW_MAX);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        ProviderText(State::Raw {
            text: Secret::new(&text[..end]),
            truncated: end < text.len(),
        })
    }

    /// The text with every secret of `scrubber` cut out, printable, at most
    /// `max` characters. Scrubbing scrubbed text changes nothing.
    pub fn scrub(&self, scrubber: &Scrubber, max: usize) -> ProviderText {
        match &self.0 {
            State::Raw { text, truncated } => ProviderText(State::Scrubbed(scrubber.scrub(
                text.expose(),
                *truncated,
                max,
            ))),
            State::Scrubbed(_) => self.clone(),
        }
    }

    /// The text with every secret of `scrubber` cut out, and still not
    /// shown: for a layer that knows some of the secrets (the token client
    /// knows the assertions it made for one request) before the layer that
    /// knows the rest scrubs it.
    pub fn cut(&self, scrubber: &Scrubber) -> ProviderText {
        match &self.0 {
            State::Raw { text, truncated } => ProviderText(State::Raw {
                text: Secret::new(scrubber.scrub(text.expose(), *truncated, RAW_MAX)),
                truncated: *truncated,
            }),
            State::Scrubbed(_) => self.clone(),
        }
    }

    /// The text, once scrubbed; `None` before.
    pub fn shown(&self) -> Option<&str> {
        match &self.0 {
            State::Scrubbed(t) => Some(t),
            State::Raw { .. } => None,
        }
    }
}

impl fmt::Display for ProviderText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.shown().unwrap_or("[provider text not shown]"))
    }
}

impl fmt::Debug for ProviderText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            State::Scrubbed(t) => f.debug_tuple("ProviderText").field(t).finish(),
            State::Raw { text, .. } => write!(
                f,
                "ProviderText(<{} bytes, not scrubbed>)",
                text.expose().len()
            ),
        }
    }
}

/// Percent-encoding as RFC 3986 leaves unreserved characters alone.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The secrets a remote text must not show, each in the forms it may take
/// in an echo: as is, form-URL-encoded (`+` for space), percent-encoded
/// (upper and lower case hex), JSON-escaped (also with `\/` and `\uXXXX`
/// as PHP and Python write them).
#[derive(Default)]
pub struct Scrubber {
    needles: Vec<Secret>,
}

impl Scrubber {
    pub fn new() -> Scrubber {
        Scrubber::default()
    }

    /// Adds a secret (an empty one is ignored).
    pub fn add(&mut self, secret: &Secret) {
        let raw = secret.expose();
        if raw.is_empty() {
            return;
        }
        let form: String = url::form_urlencoded::byte_serialize(raw.as_bytes()).collect();
        let percent = utf8_percent_encode(raw, COMPONENT).to_string();
        let mut quoted = serde_json::to_string(raw).unwrap_or_default();
        let json = quoted
            .strip_prefix('"')
            .and_then(|j| j.strip_suffix('"'))
            .unwrap_or("")
            .to_string();
        quoted.zeroize();
        let ascii_json = json_ascii(&json);
        let candidates = [
            lower_hex(&form),
            lower_hex(&percent),
            json.replace('/', "\\/"),
            ascii_json.replace('/', "\\/"),
            form,
            percent,
            json,
            ascii_json,
        ];
        self.needles.push(secret.clone());
        for mut c in candidates {
            if !c.is_empty() && !self.needles.iter().any(|n| n.expose() == c) {
                self.needles.push(Secret::new(c));
            } else {
                c.zeroize();
            }
        }
    }

    pub fn add_all<'a>(&mut self, secrets: impl IntoIterator<Item = &'a Secret>) {
        for s in secrets {
            self.add(s);
        }
    }

    /// `text` without any secret (each run of cut-out bytes becomes
    /// [`REDACTED`]), control characters as spaces, at most `max`
    /// characters (`…` marks a cut and counts). `truncated`: `text` is the
    /// start of a longer text, so a secret may begin at its very end.
    pub fn scrub(&self, text: &str, truncated: bool, max: usize) -> String {
        let bytes = text.as_bytes();
        let mut cut = vec![false; bytes.len()];
        let mut grams: HashSet<&[u8]> = HashSet::new();
        for needle in &self.needles {
            let n = needle.expose().as_bytes();
            if n.len() >= PARTIAL_MIN {
                grams.extend(n.windows(PARTIAL_MIN));
            } else {
                let mut from = 0;
                while let Some(at) = find(&bytes[from..], n) {
                    cut[from + at..from + at + n.len()].fill(true);
                    from += at + 1;
                }
            }
            if truncated {
                // The text ends inside an echo of this secret?
                let longest = n.len().min(bytes.len());
                if let Some(l) = (1..longest).rev().find(|&l| bytes.ends_with(&n[..l])) {
                    cut[bytes.len() - l..].fill(true);
                }
            }
        }
        if bytes.len() >= PARTIAL_MIN {
            for (i, w) in bytes.windows(PARTIAL_MIN).enumerate() {
                if grams.contains(w) {
                    cut[i..i + PARTIAL_MIN].fill(true);
                }
            }
        }
        // A run that begins or ends with white space (a secret such as
        // `Token abc` matched from its space) keeps the space: the words
        // around it stay apart.
        let mut i = 0;
        while i < bytes.len() {
            if !cut[i] {
                i += 1;
                continue;
            }
            let start = i;
            while i < bytes.len() && cut[i] {
                i += 1;
            }
            let run = &mut cut[start..i];
            let lead = bytes[start..i]
                .iter()
                .take_while(|b| b.is_ascii_whitespace())
                .count();
            let trail = bytes[start..i]
                .iter()
                .rev()
                .take_while(|b| b.is_ascii_whitespace())
                .count();
            if lead < run.len() {
                let len = run.len();
                run[..lead].fill(false);
                run[len - trail..].fill(false);
            }
        }
        let mut out = String::with_capacity(text.len().min(max * 4));
        let mut in_cut = false;
        for (i, c) in text.char_indices() {
            if cut[i..i + c.len_utf8()].iter().any(|&b| b) {
                if !in_cut {
                    out.push_str(REDACTED);
                }
                in_cut = true;
                continue;
            }
            in_cut = false;
            out.push(if c.is_control() { ' ' } else { c });
        }
        cap(out.trim(), max)
    }
}

/// At most `max` characters, `…` (counted) marking a cut.
fn cap(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Percent-escapes with lower-case hex digits.
fn lower_hex(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len());
    let mut rest = encoded;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let esc = rest.get(at..at + 3).unwrap_or(&rest[at..]);
        out.push_str(&esc.to_ascii_lowercase());
        rest = &rest[at + esc.len()..];
    }
    out.push_str(rest);
    out
}

/// JSON text with every non-ASCII character as `\uXXXX` (UTF-16).
fn json_ascii(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_and_length() {
        assert_eq!(sanitize("a\r\nb", 10), "a  b");
        assert_eq!(sanitize("abcdef", 3), "abc…");
        assert_eq!(sanitize("abc", 3), "abc");
    }

    fn scrubber(secrets: &[&str]) -> Scrubber {
        let mut s = Scrubber::new();
        for x in secrets {
            s.add(&Secret::new(*x));
        }
        s
    }

    fn scrub(secrets: &[&str], text: &str) -> String {
        ProviderText::new(text)
            .scrub(&scrubber(secrets), PROVIDER_TEXT_MAX)
            .to_string()
    }

    #[test]
    fn secrets_are_cut_out_whole_and_in_part() {
        let rt = "rt-1-3c6ef372fe94f82b";
        assert_eq!(
            scrub(&[rt], &format!("refresh token {rt} is not valid")),
            "refresh token [redacted] is not valid"
        );
        // Quoted shortened, or broken by a line: the pieces of 10+ bytes go.
        assert_eq!(
            scrub(&[rt], "token rt-1-3c6ef37… expired"),
            "token [redacted]… expired"
        );
        assert_eq!(
            scrub(&[rt], "token rt-1-3c6ef3\n72fe94f82b"),
            "token [redacted] [redacted]"
        );
        // A short secret is cut out where it appears whole.
        assert_eq!(
            scrub(&["pw1"], "wrong pw1, pw1!"),
            "wrong [redacted], [redacted]!"
        );
        // A secret that begins with a space does not glue words together.
        assert_eq!(
            scrub(&["Token tok-SECRET-1"], "see also tok-SECRET-1 here"),
            "see also [redacted] here"
        );
        assert_eq!(scrub(&[""], "nothing"), "nothing");
    }

    #[test]
    fn encoded_echoes_are_cut_out() {
        let secret = "a/b+c&d=é \"q\"\\z";
        for echo in [
            "a%2Fb%2Bc%26d%3D%C3%A9+%22q%22%5Cz",   // form body
            "a%2fb%2bc%26d%3d%c3%a9+%22q%22%5cz",   // lower-case hex
            "a%2Fb%2Bc%26d%3D%C3%A9%20%22q%22%5Cz", // percent-encoded
            r#"a/b+c&d=é \"q\"\\z"#,                // JSON-escaped
            r#"a\/b+c&d=\u00e9 \"q\"\\z"#,          // PHP / Python style
        ] {
            let out = scrub(&[secret], &format!("got {echo}."));
            assert_eq!(out, "got [redacted].", "{echo}");
        }
    }

    #[test]
    fn at_most_200_characters_on_a_char_boundary() {
        let long = "é".repeat(300);
        let out = scrub(&["x-SECRET-123"], &format!("{long} x-SECRET-123"));
        assert_eq!(out.chars().count(), PROVIDER_TEXT_MAX);
        assert!(out.ends_with('…'));
        // The cap comes after scrubbing: no prefix of a secret is left at
        // the cut.
        let text = format!("{} secret-SECRET-0123456789", "a".repeat(185));
        let out = scrub(&["secret-SECRET-0123456789"], &text);
        assert!(out.ends_with(" [redacted]"), "{out}");
    }

    #[test]
    fn a_secret_cut_off_by_the_raw_limit_is_still_removed() {
        let secret = "tail-SECRET-0123456789";
        let text = format!("{}{secret}", "x".repeat(RAW_MAX - 4));
        let kept = ProviderText::new(&text);
        let s = scrubber(&[secret]);
        let State::Raw {
            text: raw,
            truncated,
        } = &kept.0
        else {
            unreachable!()
        };
        assert!(truncated);
        assert!(raw.expose().ends_with("tail"));
        assert!(s
            .scrub(raw.expose(), true, 2 * RAW_MAX)
            .ends_with("x[redacted]"));
    }

    #[test]
    fn unscrubbed_text_has_no_way_out() {
        let t = ProviderText::new("refresh token rt-SECRET-1 is not valid");
        assert_eq!(t.shown(), None);
        assert!(!t.to_string().contains("rt-SECRET-1"));
        assert!(!format!("{t:?}").contains("rt-SECRET-1"));
        let shown = t.scrub(&scrubber(&["rt-SECRET-1"]), 200);
        assert_eq!(shown.shown(), Some("refresh token [redacted] is not valid"));
        assert_eq!(shown.scrub(&Scrubber::new(), 5), shown, "scrubbed once");
    }
}
