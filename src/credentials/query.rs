//! Query-parameter keys (`?api_key=…`): the configured parameters are added
//! to every upstream request's query, replacing any the client sent under
//! the same names. Built once at load time.
//!
//! Replacing must hold however the client spells a name: a name is the
//! client's "same" when it equals a configured one after percent-decoding
//! (`api%5Fkey`), after form-decoding (`+` as a space), or in another ASCII
//! case (`API_KEY`: some frameworks look names up without case). `;` counts
//! as a separator too, as some servers split on it. Everything else in the
//! client's query stays as it was, byte for byte and in order; ours go
//! last, each value percent-encoded once with the WHATWG component
//! percent-encode set (what `encodeURIComponent` leaves alone stays).

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use zeroize::Zeroizing;

use crate::config::QueryConfig;

/// The WHATWG URL standard's component percent-encode set.
const COMPONENT: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'/')
    .add(b':')
    .add(b';')
    .add(b'=')
    .add(b'@')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'|')
    .add(b'$')
    .add(b'%')
    .add(b'&')
    .add(b'+')
    .add(b',');

pub struct QueryParams {
    /// The configured names, as written.
    names: Vec<Box<[u8]>>,
    /// `name=value&…`, encoded, ready to append (holds the secrets).
    encoded: Zeroizing<String>,
}

impl QueryParams {
    pub fn new(cfg: &QueryConfig) -> QueryParams {
        let mut encoded = Zeroizing::new(String::new());
        for (name, value) in &cfg.params {
            if !encoded.is_empty() {
                encoded.push('&');
            }
            encoded.extend(utf8_percent_encode(name, COMPONENT));
            encoded.push('=');
            encoded.extend(utf8_percent_encode(value.expose(), COMPONENT));
        }
        QueryParams {
            names: cfg
                .params
                .iter()
                .map(|(n, _)| n.as_bytes().into())
                .collect(),
            encoded,
        }
    }

    /// The configured parameter names (for `status` and `check`).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names
            .iter()
            .map(|n| std::str::from_utf8(n).unwrap_or("?"))
    }

    /// The upstream query for the client's `query`: the client's
    /// parameters of our names removed, ours appended.
    pub fn rewrite(&self, query: Option<&str>) -> Zeroizing<String> {
        let query = query.unwrap_or("");
        let mut out = Zeroizing::new(String::with_capacity(query.len() + self.encoded.len() + 1));
        if !query.split(['&', ';']).any(|p| self.is_ours(p)) {
            // The common case: the client sent none of them.
            out.push_str(query);
        } else {
            let mut first = true;
            for piece in query.split('&') {
                let kept = if piece.contains(';') {
                    let mut kept = String::new();
                    for sub in piece.split(';').filter(|s| !self.is_ours(s)) {
                        if !kept.is_empty() {
                            kept.push(';');
                        }
                        kept.push_str(sub);
                    }
                    if kept.is_empty() {
                        continue;
                    }
                    std::borrow::Cow::Owned(kept)
                } else if self.is_ours(piece) {
                    continue;
                } else {
                    std::borrow::Cow::Borrowed(piece)
                };
                if !first {
                    out.push('&');
                }
                first = false;
                out.push_str(&kept);
            }
        }
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(&self.encoded);
        out
    }

    /// Whether one `name[=value]` piece names one of our parameters.
    fn is_ours(&self, piece: &str) -> bool {
        if piece.is_empty() {
            return false;
        }
        let name = piece.split('=').next().unwrap_or(piece).as_bytes();
        self.names
            .iter()
            .any(|ours| decoded_eq(name, ours, false) || decoded_eq(name, ours, true))
    }
}

/// `raw` percent-decoded (and with `+` as a space when `plus`) equals
/// `target`, ignoring ASCII case; without allocating.
fn decoded_eq(raw: &[u8], target: &[u8], plus: bool) -> bool {
    let mut i = 0;
    let mut t = target.iter();
    while i < raw.len() {
        let b = match raw[i] {
            b'%' if i + 2 < raw.len() => match (hex(raw[i + 1]), hex(raw[i + 2])) {
                (Some(h), Some(l)) => {
                    i += 2;
                    h << 4 | l
                }
                _ => b'%',
            },
            b'+' if plus => b' ',
            b => b,
        };
        i += 1;
        match t.next() {
            Some(&want) if want.eq_ignore_ascii_case(&b) => {}
            _ => return false,
        }
    }
    t.next().is_none()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn params(pairs: &[(&str, &str)]) -> QueryParams {
        QueryParams::new(&QueryConfig {
            params: pairs
                .iter()
                .map(|(n, v)| (n.to_string(), Secret::new(*v)))
                .collect(),
        })
    }

    #[test]
    fn appended_and_encoded_once() {
        let p = params(&[("api_key", "s3cr/t+&=ü x")]);
        assert_eq!(&*p.rewrite(None), "api_key=s3cr%2Ft%2B%26%3D%C3%BC%20x");
        assert_eq!(&*p.rewrite(Some("")), "api_key=s3cr%2Ft%2B%26%3D%C3%BC%20x");
        assert_eq!(
            &*p.rewrite(Some("q=a+b&x=%7e")),
            "q=a+b&x=%7e&api_key=s3cr%2Ft%2B%26%3D%C3%BC%20x"
        );
    }

    #[test]
    fn the_clients_same_names_are_removed_however_spelled() {
        let p = params(&[("api_key", "K"), ("sig", "S")]);
        for (client, kept) in [
            ("api_key=evil", ""),
            ("api%5Fkey=evil&a=1", "a=1"),
            ("API_KEY=evil&a=1", "a=1"),
            ("a=1&api_key&b=%20", "a=1&b=%20"),
            ("a=1&&api_key=x&&b", "a=1&&&b"),
            ("a=1;api_key=evil;b=2&c", "a=1;b=2&c"),
            ("api_key=1;sig=2&c=3", "c=3"),
            ("api%5fkey=evil", ""),
            ("api_ke%79=evil", ""),
            ("api_keyx=fine", "api_keyx=fine"),
            ("xapi_key=fine", "xapi_key=fine"),
        ] {
            let expected = if kept.is_empty() {
                "api_key=K&sig=S".to_string()
            } else {
                format!("{kept}&api_key=K&sig=S")
            };
            assert_eq!(&*p.rewrite(Some(client)), &expected, "{client}");
        }
        // `+` as a space, for a name with a space.
        let p = params(&[("api key", "K")]);
        assert_eq!(&*p.rewrite(Some("api+key=x&api%20key=y")), "api%20key=K");
    }

    #[test]
    fn decoding_handles_truncated_escapes() {
        assert!(decoded_eq(b"a%", b"a%", false));
        assert!(decoded_eq(b"a%4", b"a%4", false));
        assert!(decoded_eq(b"%41", b"a", false));
        assert!(!decoded_eq(b"%41", b"ab", false));
        assert!(decoded_eq(b"%zz", b"%zz", false));
    }
}
