//! HTTP Basic (RFC 7617): `Authorization: Basic base64(user-id ":"
//! password)`, the UTF-8 bytes of both, built once at load time.

use base64::Engine;
use http::{header, HeaderMap, HeaderValue};

use crate::config::BasicConfig;

pub struct BasicAuth {
    value: HeaderValue,
}

impl BasicAuth {
    pub fn new(cfg: &BasicConfig) -> BasicAuth {
        // Zeroed when dropped; the `HeaderValue` copy cannot be.
        let plain = zeroize::Zeroizing::new(format!(
            "{}:{}",
            cfg.username.expose(),
            cfg.password.expose()
        ));
        let encoded = zeroize::Zeroizing::new(format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(plain.as_bytes())
        ));
        let mut value = HeaderValue::from_str(&encoded).expect("base64 is a valid header value");
        value.set_sensitive(true);
        BasicAuth { value }
    }

    /// Replaces the client's `Authorization`.
    pub fn apply(&self, headers: &mut HeaderMap) {
        headers.insert(header::AUTHORIZATION, self.value.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    #[test]
    fn rfc_7617_examples() {
        // RFC 7617 §2 and §2.1 (the UTF-8 example).
        for (user, password, expected) in [
            (
                "Aladdin",
                "open sesame",
                "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==",
            ),
            ("test", "123\u{a3}", "Basic dGVzdDoxMjPCow=="),
        ] {
            let auth = BasicAuth::new(&BasicConfig {
                username: Secret::new(user),
                password: Secret::new(password),
            });
            let mut headers = HeaderMap::new();
            headers.insert(
                header::AUTHORIZATION,
                HeaderValue::from_static("Bearer client"),
            );
            auth.apply(&mut headers);
            assert_eq!(headers.get_all(header::AUTHORIZATION).iter().count(), 1);
            let value = headers.get(header::AUTHORIZATION).unwrap();
            assert_eq!(value, expected);
            assert!(value.is_sensitive());
        }
    }
}
