//! RFC 6749 §5.2 error codes and the typed failure of a token request.
//!
//! Text the token endpoint chose (an `error_description`, an error code
//! it made up, an error page) is kept as [`ProviderText`]: it may repeat
//! the secrets the request carried, and this layer does not know them all
//! (the provider runtime does: it holds the tokens). It shows nothing of
//! that text until [`TokenError::scrub`] was called with them.

use std::borrow::Cow;
use std::fmt;

use crate::text::{ProviderText, Scrubber, PROVIDER_TEXT_MAX};

/// An error code the provider made up is shown at most this long.
const OTHER_CODE_MAX: usize = 64;

/// The `error` field of a token endpoint's error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OAuthErrorCode {
    InvalidRequest,
    InvalidClient,
    /// The grant (password, refresh token, ...) is wrong, expired or revoked:
    /// asking again with the same grant cannot succeed.
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope,
    /// Another code of the standards (`STANDARD_CODES`).
    Standard(&'static str),
    /// A code the provider made up: its text, like any provider text, is
    /// shown only once scrubbed.
    Other(ProviderText),
}

impl OAuthErrorCode {
    pub fn parse(code: &str) -> Self {
        match code {
            "invalid_request" => Self::InvalidRequest,
            "invalid_client" => Self::InvalidClient,
            "invalid_grant" => Self::InvalidGrant,
            "unauthorized_client" => Self::UnauthorizedClient,
            "unsupported_grant_type" => Self::UnsupportedGrantType,
            "invalid_scope" => Self::InvalidScope,
            other => match STANDARD_CODES.iter().find(|c| **c == other) {
                Some(c) => Self::Standard(c),
                None => Self::Other(ProviderText::new(other)),
            },
        }
    }

    /// The code, if it is one of the standards' (`STANDARD_CODES`).
    pub fn standard(&self) -> Option<&'static str> {
        Some(match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::Standard(c) => c,
            Self::Other(_) => return None,
        })
    }

    fn scrub(&self, scrubber: &Scrubber) -> Self {
        match self {
            Self::Other(text) => Self::Other(text.scrub(scrubber, OTHER_CODE_MAX)),
            known => known.clone(),
        }
    }

    fn cut(&self, scrubber: &Scrubber) -> Self {
        match self {
            Self::Other(text) => Self::Other(text.cut(scrubber)),
            known => known.clone(),
        }
    }
}

impl fmt::Display for OAuthErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.standard(), self) {
            (Some(code), _) => f.write_str(code),
            (None, Self::Other(text)) => text.fmt(f),
            (None, _) => unreachable!("only Other has no standard code"),
        }
    }
}

/// ` (text)` / `: text` for provider text that was scrubbed, else nothing.
fn shown(text: &Option<ProviderText>, before: &str, after: &str) -> String {
    match text.as_ref().and_then(ProviderText::shown) {
        Some(t) if !t.is_empty() => format!("{before}{t}{after}"),
        _ => String::new(),
    }
}

/// The error codes a token endpoint may answer with by the standards
/// (RFC 6749 §5.2 and §4.1.2.1, RFC 7523, RFC 8628 device flow, RFC 9449
/// DPoP). Only these, of the codes a provider chooses, become metric label
/// values.
const STANDARD_CODES: [&str; 14] = [
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
    "access_denied",
    "server_error",
    "temporarily_unavailable",
    "authorization_pending",
    "slow_down",
    "expired_token",
    "use_dpop_nonce",
    "invalid_dpop_proof",
];

/// Why a token request failed. What the provider wrote is [`ProviderText`]
/// and appears in `Display` only after [`TokenError::scrub`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TokenError {
    #[error("token endpoint refused the grant: {code}{}", shown(.description, " (", ")"))]
    OAuth {
        status: u16,
        code: OAuthErrorCode,
        description: Option<ProviderText>,
    },
    #[error("token endpoint answered HTTP {status}{}", shown(.body, ": ", ""))]
    Status {
        status: u16,
        retry_after: Option<u64>,
        /// The text of an error page that is not an RFC 6749 answer.
        body: Option<ProviderText>,
    },
    #[error(
        "token endpoint answered with a redirect (HTTP {status}); redirects are never followed"
    )]
    Redirect { status: u16 },
    #[error("token endpoint unreachable: {0}")]
    Network(String),
    #[error("token endpoint did not answer within {0:.1}s")]
    Timeout(f64),
    #[error("token endpoint answer is unusable: {0}")]
    BadResponse(String),
    #[error("{0}")]
    NotConfigured(&'static str),
}

impl TokenError {
    /// Worth another try with the same grant: a passing fault, not a refusal.
    /// A DPoP server wants its nonce in the proof (RFC 9449 §8).
    pub fn is_use_dpop_nonce(&self) -> bool {
        matches!(self, TokenError::OAuth { code, .. } if code.standard() == Some("use_dpop_nonce"))
    }

    pub fn is_transient(&self) -> bool {
        match self {
            TokenError::Network(_) | TokenError::Timeout(_) => true,
            TokenError::Status { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            TokenError::OAuth { status, code, .. } => {
                // Some servers put an RFC 6749 body on a 5xx ("temporarily_unavailable").
                *status >= 500 || code.standard() == Some("temporarily_unavailable")
            }
            TokenError::Redirect { .. }
            | TokenError::BadResponse(_)
            | TokenError::NotConfigured(_) => false,
        }
    }

    /// The grant itself was refused (wrong password, spent or revoked
    /// refresh token): never retry it.
    pub fn is_grant_refused(&self) -> bool {
        matches!(
            self,
            TokenError::OAuth {
                code: OAuthErrorCode::InvalidGrant
                    | OAuthErrorCode::InvalidClient
                    | OAuthErrorCode::UnauthorizedClient,
                ..
            }
        ) || matches!(
            self,
            TokenError::Status {
                status: 400 | 401 | 403,
                ..
            }
        )
    }

    /// The code as a metric label value (`outcome`): [`Self::code`], except
    /// that an error code the provider made up becomes `other`, so a
    /// provider cannot grow the number of series without bound.
    pub fn outcome(&self) -> Cow<'static, str> {
        match self {
            TokenError::OAuth { code, .. } => Cow::Borrowed(code.standard().unwrap_or("other")),
            // A status is three digits: bounded.
            TokenError::Status { status, .. } => Cow::Owned(format!("http_{status}")),
            TokenError::Redirect { .. } => Cow::Borrowed("redirect"),
            TokenError::Network(_) => Cow::Borrowed("network"),
            TokenError::Timeout(_) => Cow::Borrowed("timeout"),
            TokenError::BadResponse(_) => Cow::Borrowed("bad_response"),
            TokenError::NotConfigured(_) => Cow::Borrowed("not_configured"),
        }
    }

    /// This error with the secrets of `scrubber` cut out of the provider's
    /// text, which stays unshown until [`TokenError::scrub`].
    pub fn cut(&self, scrubber: &Scrubber) -> TokenError {
        let text = |t: &Option<ProviderText>| t.as_ref().map(|t| t.cut(scrubber));
        match self {
            TokenError::OAuth {
                status,
                code,
                description,
            } => TokenError::OAuth {
                status: *status,
                code: code.cut(scrubber),
                description: text(description),
            },
            TokenError::Status {
                status,
                retry_after,
                body,
            } => TokenError::Status {
                status: *status,
                retry_after: *retry_after,
                body: text(body),
            },
            other => other.clone(),
        }
    }

    /// This error with every secret of `scrubber` cut out of the provider's
    /// text, which is then shown (at most [`PROVIDER_TEXT_MAX`]
    /// characters).
    pub fn scrub(&self, scrubber: &Scrubber) -> TokenError {
        let text =
            |t: &Option<ProviderText>| t.as_ref().map(|t| t.scrub(scrubber, PROVIDER_TEXT_MAX));
        match self {
            TokenError::OAuth {
                status,
                code,
                description,
            } => TokenError::OAuth {
                status: *status,
                code: code.scrub(scrubber),
                description: text(description),
            },
            TokenError::Status {
                status,
                retry_after,
                body,
            } => TokenError::Status {
                status: *status,
                retry_after: *retry_after,
                body: text(body),
            },
            other => other.clone(),
        }
    }

    /// A short code for status (the provider's own, if it gave one; a
    /// made-up one shows once scrubbed).
    pub fn code(&self) -> String {
        match self {
            TokenError::OAuth { code, .. } => code.to_string(),
            TokenError::Status { status, .. } => format!("http_{status}"),
            TokenError::Redirect { .. } => "redirect".into(),
            TokenError::Network(_) => "network".into(),
            TokenError::Timeout(_) => "timeout".into(),
            TokenError::BadResponse(_) => "bad_response".into(),
            TokenError::NotConfigured(_) => "not_configured".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oauth(code: &str) -> TokenError {
        TokenError::OAuth {
            status: 400,
            code: OAuthErrorCode::parse(code),
            description: None,
        }
    }

    #[test]
    fn metric_outcomes_are_bounded() {
        for code in STANDARD_CODES {
            assert_eq!(oauth(code).outcome(), code);
        }
        for made_up in [
            "account_locked_7f3a",
            "INVALID_GRANT",
            "invalid_grant ",
            "",
            "x\ny",
        ] {
            assert_eq!(oauth(made_up).outcome(), "other", "{made_up:?}");
            // Status still shows what the provider said, once scrubbed.
            let shown = oauth(made_up).scrub(&Scrubber::new()).code();
            assert_eq!(shown, made_up.replace('\n', " ").trim(), "{made_up:?}");
        }
        let status = TokenError::Status {
            status: 503,
            retry_after: None,
            body: None,
        };
        assert_eq!(status.outcome(), "http_503");
        assert_eq!(TokenError::Timeout(1.0).outcome(), "timeout");
        assert_eq!(TokenError::Network("x".into()).outcome(), "network");
        assert_eq!(TokenError::Redirect { status: 302 }.outcome(), "redirect");
        assert_eq!(
            TokenError::BadResponse("x".into()).outcome(),
            "bad_response"
        );
        assert_eq!(TokenError::NotConfigured("x").outcome(), "not_configured");
    }

    #[test]
    fn provider_text_shows_only_scrubbed() {
        let seed = crate::secret::Secret::new("seed-SECRET-1234");
        let mut scrubber = Scrubber::new();
        scrubber.add(&seed);
        let e = TokenError::OAuth {
            status: 400,
            code: OAuthErrorCode::parse("bad_seed-SECRET-1234"),
            description: Some(ProviderText::new(
                "refresh token seed-SECRET-1234 is not valid",
            )),
        };
        assert_eq!(
            e.to_string(),
            "token endpoint refused the grant: [provider text not shown]"
        );
        assert!(!format!("{e:?}").contains("SECRET"));
        let e = e.scrub(&scrubber);
        assert_eq!(
            e.to_string(),
            "token endpoint refused the grant: bad_[redacted] (refresh token [redacted] is not valid)"
        );
        let page = TokenError::Status {
            status: 503,
            retry_after: None,
            body: Some(ProviderText::new("Service Unavailable: seed-SECRET-1234")),
        };
        assert_eq!(page.to_string(), "token endpoint answered HTTP 503");
        assert_eq!(
            page.scrub(&scrubber).to_string(),
            "token endpoint answered HTTP 503: Service Unavailable: [redacted]"
        );
    }
}
