//! RFC 6749 §5.2 error codes and the typed failure of a token request.

use std::borrow::Cow;
use std::fmt;

use crate::text::sanitize;

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
    Other(String),
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
            other => Self::Other(sanitize(other, 64)),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::Other(s) => s,
        }
    }
}

impl fmt::Display for OAuthErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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

/// Why a token request failed. Nothing here holds a secret: descriptions
/// from the provider are shortened and stripped of control characters.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TokenError {
    #[error("token endpoint refused the grant: {code}{}", .description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    OAuth {
        status: u16,
        code: OAuthErrorCode,
        description: Option<String>,
    },
    #[error("token endpoint answered HTTP {status}")]
    Status {
        status: u16,
        retry_after: Option<u64>,
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
    pub fn is_transient(&self) -> bool {
        match self {
            TokenError::Network(_) | TokenError::Timeout(_) => true,
            TokenError::Status { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            TokenError::OAuth { status, code, .. } => {
                // Some servers put an RFC 6749 body on a 5xx ("temporarily_unavailable").
                *status >= 500 || code.as_str() == "temporarily_unavailable"
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
            TokenError::OAuth { code, .. } => Cow::Borrowed(
                STANDARD_CODES
                    .iter()
                    .find(|c| **c == code.as_str())
                    .copied()
                    .unwrap_or("other"),
            ),
            // A status is three digits: bounded.
            TokenError::Status { status, .. } => Cow::Owned(format!("http_{status}")),
            TokenError::Redirect { .. } => Cow::Borrowed("redirect"),
            TokenError::Network(_) => Cow::Borrowed("network"),
            TokenError::Timeout(_) => Cow::Borrowed("timeout"),
            TokenError::BadResponse(_) => Cow::Borrowed("bad_response"),
            TokenError::NotConfigured(_) => Cow::Borrowed("not_configured"),
        }
    }

    /// A short code for status (the provider's own, if it gave one).
    pub fn code(&self) -> String {
        match self {
            TokenError::OAuth { code, .. } => code.as_str().to_string(),
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
            // Status still shows what the provider said.
            assert_ne!(oauth(made_up).code(), "other");
        }
        let status = TokenError::Status {
            status: 503,
            retry_after: None,
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
}
