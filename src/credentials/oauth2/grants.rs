//! The token requests a provider makes: its grant's (or the refresh
//! grant's), and any other with its client authentication.

use url::Url;

use crate::config::{Grant, OAuth2Config};
use crate::oauth::{self, TokenError, TokenRequest};
use crate::secret::Secret;

/// The token request for the refresh grant with `refresh`, else for the
/// provider's primary grant, at `token_url`.
pub(super) fn token_request<'a>(
    cfg: &'a OAuth2Config,
    token_url: &'a Url,
    refresh: Option<&'a Secret>,
) -> Result<TokenRequest<'a>, TokenError> {
    let grant = match (refresh, cfg.grant) {
        (Some(token), _) => oauth::Grant::Refresh(token),
        (None, Grant::Password) => oauth::Grant::Password {
            username: cfg
                .username
                .as_ref()
                .ok_or(TokenError::NotConfigured("password grant without username"))?,
            password: cfg
                .password
                .as_ref()
                .ok_or(TokenError::NotConfigured("password grant without password"))?,
        },
        (None, Grant::ClientCredentials) => oauth::Grant::ClientCredentials,
        (None, Grant::JwtBearer) => oauth::Grant::JwtBearer(cfg.jwt_bearer.as_ref().ok_or(
            TokenError::NotConfigured("jwt_bearer grant without its assertion key"),
        )?),
        (None, Grant::RefreshToken) => {
            return Err(TokenError::NotConfigured(
                "grant = \"refresh_token\" has no primary grant; it needs a refresh token",
            ))
        }
        (None, Grant::Implicit) => {
            return Err(TokenError::NotConfigured(
                "implicit grant tokens come from a browser login, not the token endpoint",
            ))
        }
        (None, Grant::AuthorizationCode | Grant::DeviceCode) => {
            return Err(TokenError::NotConfigured(
                "the first token of this grant comes from a person's login",
            ))
        }
    };
    Ok(request_for(cfg, token_url, grant))
}

/// A request of `grant` at `url` with the provider's client authentication.
pub(super) fn request_for<'a>(
    cfg: &'a OAuth2Config,
    url: &'a Url,
    grant: oauth::Grant<'a>,
) -> TokenRequest<'a> {
    TokenRequest {
        token_url: url,
        grant,
        client_id: cfg.client_id.as_ref(),
        client_secret: cfg.client_secret.as_ref(),
        client_auth: cfg.client_auth,
        assertion_signer: cfg.client_assertion.as_ref(),
        assertion_audience: cfg.assertion_audience.as_deref(),
        body: cfg.body,
        scope: cfg.scope.as_deref(),
        extra: &cfg.extra,
        timeout: cfg.token_timeout,
    }
}
