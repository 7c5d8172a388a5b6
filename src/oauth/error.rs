//! RFC 6749 §5.2 error codes and the typed failure of a token request.

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

    /// A short code for status and metrics.
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
