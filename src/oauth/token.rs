//! The token a provider hands out, and parsing of token endpoint answers
//! (RFC 6749 §5.1 plus the quirks of real providers).

use base64::Engine;
use serde::Deserialize;
use zeroize::Zeroize;

use super::error::{OAuthErrorCode, TokenError};
use crate::secret::Secret;
use crate::text::{sanitize, ProviderText};

/// A token answer, checked. Held behind `Arc` and swapped whole.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenSet {
    pub access_token: Secret,
    pub refresh_token: Option<Secret>,
    /// Seconds since the epoch; `None` when the provider gave no lifetime.
    pub expires_at: Option<u64>,
    /// Normalised: `bearer` in any case becomes `Bearer`.
    pub token_type: Option<String>,
    pub obtained_at: u64,
}

#[derive(Deserialize)]
struct RawTokenAnswer {
    access_token: Option<serde_json::Value>,
    refresh_token: Option<serde_json::Value>,
    expires_in: Option<serde_json::Value>,
    token_type: Option<serde_json::Value>,
    error: Option<serde_json::Value>,
    error_description: Option<serde_json::Value>,
}

/// Parses a 2xx token endpoint body. `previous_refresh` is kept when the
/// answer carries no new refresh token (RFC 6749 §6 allows that).
pub fn parse_token_answer(
    body: &[u8],
    now: u64,
    previous_refresh: Option<&Secret>,
) -> Result<TokenSet, TokenError> {
    let raw: RawTokenAnswer = serde_json::from_slice(body).map_err(|_| {
        TokenError::BadResponse(format!(
            "body is not a JSON object ({} bytes{})",
            body.len(),
            if body.trim_ascii_start().starts_with(b"<") {
                ", looks like HTML"
            } else {
                ""
            }
        ))
    })?;
    if let Some(code) = raw.error.as_ref().and_then(|e| e.as_str()) {
        return Err(TokenError::OAuth {
            status: 200,
            code: OAuthErrorCode::parse(code),
            description: raw
                .error_description
                .as_ref()
                .and_then(|d| d.as_str())
                .map(ProviderText::new),
        });
    }
    let access = match raw.access_token {
        Some(serde_json::Value::String(s)) if !s.is_empty() => s,
        Some(_) => {
            return Err(TokenError::BadResponse(
                "`access_token` is empty or not a string".into(),
            ))
        }
        None => {
            return Err(TokenError::BadResponse(
                "no `access_token` in the answer".into(),
            ))
        }
    };
    check_header_safe(&access, "access_token")?;
    let refresh_token = match raw.refresh_token {
        Some(serde_json::Value::String(s)) if !s.is_empty() => Some(Secret::new(s)),
        _ => previous_refresh.cloned(),
    };
    let expires_in = match raw.expires_in {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Number(n)) => n.as_f64(),
        Some(serde_json::Value::String(s)) => s.trim().parse::<f64>().ok(),
        Some(_) => None,
    }
    .filter(|v| v.is_finite() && *v >= 0.0)
    .map(|v| v as u64);
    let expires_at = match expires_in {
        Some(secs) => Some(now.saturating_add(secs)),
        None => jwt_exp(&access),
    };
    let token_type = raw
        .token_type
        .as_ref()
        .and_then(|t| t.as_str())
        .map(normalize_token_type);
    Ok(TokenSet {
        access_token: Secret::new(access),
        refresh_token,
        expires_at,
        token_type,
        obtained_at: now,
    })
}

/// Parses an error answer (any non-2xx with an RFC 6749 body).
pub fn parse_error_answer(status: u16, body: &[u8]) -> Option<TokenError> {
    let raw: RawTokenAnswer = serde_json::from_slice(body).ok()?;
    let code = raw.error.as_ref()?.as_str()?;
    Some(TokenError::OAuth {
        status,
        code: OAuthErrorCode::parse(code),
        description: raw
            .error_description
            .as_ref()
            .and_then(|d| d.as_str())
            .map(ProviderText::new),
    })
}

/// The text of an error answer that is not RFC 6749 JSON (a gateway's or
/// framework's error page): markup dropped, white space collapsed. `None`
/// when nothing readable is left.
pub fn error_page_text(body: &[u8]) -> Option<ProviderText> {
    let text = String::from_utf8_lossy(body);
    let mut plain = String::with_capacity(text.len().min(4096));
    let mut in_tag = false;
    let mut space = false;
    for c in text.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                space = true;
            }
            _ if in_tag => {}
            c if c.is_whitespace() || c.is_control() => space = true,
            c => {
                if space && !plain.is_empty() {
                    plain.push(' ');
                }
                space = false;
                plain.push(c);
            }
        }
    }
    let text = (!plain.is_empty()).then(|| ProviderText::new(&plain));
    // It may hold what the request carried.
    plain.zeroize();
    text
}

fn normalize_token_type(t: &str) -> String {
    if t.eq_ignore_ascii_case("bearer") {
        "Bearer".to_string()
    } else {
        sanitize(t, 32)
    }
}

/// A token goes into a header: visible ASCII only, or it could split the
/// request (or be refused by the HTTP library at the worst moment).
pub fn check_header_safe(token: &str, what: &str) -> Result<(), TokenError> {
    if token.bytes().all(|b| (0x21..0x7f).contains(&b)) {
        Ok(())
    } else {
        Err(TokenError::BadResponse(format!(
            "`{what}` contains characters that are not allowed in an HTTP header"
        )))
    }
}

/// The `exp` claim of a JWT, read without verifying the signature: we only
/// need to know when the provider will stop accepting it.
pub fn jwt_exp(token: &str) -> Option<u64> {
    let mut parts = token.split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    match claims.get("exp")? {
        serde_json::Value::Number(n) => n.as_f64().filter(|v| *v >= 0.0).map(|v| v as u64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(exp: u64) -> String {
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.sig",
            e.encode(br#"{"alg":"HS256","typ":"JWT"}"#),
            e.encode(format!(r#"{{"sub":"u","exp":{exp}}}"#))
        )
    }

    #[test]
    fn expires_in_number_or_string() {
        let t =
            parse_token_answer(br#"{"access_token":"a","expires_in":3600}"#, 1000, None).unwrap();
        assert_eq!(t.expires_at, Some(4600));
        let t =
            parse_token_answer(br#"{"access_token":"a","expires_in":"60"}"#, 1000, None).unwrap();
        assert_eq!(t.expires_at, Some(1060));
        let t = parse_token_answer(br#"{"access_token":"a"}"#, 1000, None).unwrap();
        assert_eq!(t.expires_at, None);
    }

    #[test]
    fn jwt_exp_fallback() {
        let token = jwt(5000);
        let body = format!(r#"{{"access_token":"{token}","token_type":"BEARER"}}"#);
        let t = parse_token_answer(body.as_bytes(), 1000, None).unwrap();
        assert_eq!(t.expires_at, Some(5000));
        assert_eq!(t.token_type.as_deref(), Some("Bearer"));
        assert_eq!(jwt_exp("not.a-jwt"), None);
        assert_eq!(jwt_exp("a.b.c.d"), None);
    }

    #[test]
    fn keeps_old_refresh_token() {
        let old = Secret::new("r1");
        let t = parse_token_answer(br#"{"access_token":"a"}"#, 0, Some(&old)).unwrap();
        assert_eq!(t.refresh_token, Some(old.clone()));
        let t = parse_token_answer(
            br#"{"access_token":"a","refresh_token":"r2"}"#,
            0,
            Some(&old),
        )
        .unwrap();
        assert_eq!(t.refresh_token.unwrap().expose(), "r2");
    }

    #[test]
    fn rejects_bad_answers() {
        assert!(matches!(
            parse_token_answer(b"<html>oops</html>", 0, None),
            Err(TokenError::BadResponse(m)) if m.contains("HTML")
        ));
        assert!(matches!(
            parse_token_answer(br#"{"token_type":"bearer"}"#, 0, None),
            Err(TokenError::BadResponse(_))
        ));
        assert!(matches!(
            parse_token_answer(b"{\"access_token\":\"a\\r\\nX-Evil: 1\"}", 0, None),
            Err(TokenError::BadResponse(_))
        ));
        assert!(matches!(
            parse_token_answer(br#"{"error":"invalid_grant"}"#, 0, None),
            Err(TokenError::OAuth {
                code: OAuthErrorCode::InvalidGrant,
                ..
            })
        ));
    }

    #[test]
    fn error_answers() {
        let e = parse_error_answer(
            400,
            br#"{"error":"invalid_grant","error_description":"used\nup"}"#,
        )
        .unwrap();
        assert!(e.is_grant_refused());
        assert!(!e.is_transient());
        assert_eq!(
            e.scrub(&crate::text::Scrubber::new()).to_string(),
            "token endpoint refused the grant: invalid_grant (used up)"
        );
        assert!(parse_error_answer(500, b"nope").is_none());
    }

    #[test]
    fn error_pages_as_text() {
        let shown = |body: &[u8]| {
            error_page_text(body).map(|t| t.scrub(&crate::text::Scrubber::new(), 200).to_string())
        };
        assert_eq!(
            shown(b"<html><head><title>502 Bad Gateway</title></head>\r\n<body><h1>Bad\tGateway</h1><hr>nginx</body></html>").as_deref(),
            Some("502 Bad Gateway Bad Gateway nginx")
        );
        assert_eq!(
            shown(b"upstream  trouble\n").as_deref(),
            Some("upstream trouble")
        );
        assert_eq!(shown(b"<html></html>"), None);
        assert_eq!(shown(b""), None);
    }
}
