//! The token request of a provider (its grant, client authentication and
//! DPoP), and the identity its tokens belong to.

use url::Url;

use crate::config::{Grant, OAuth2Config};
use crate::oauth::{self, Dpop, TokenError, TokenRequest};
use crate::secret::Secret;
use crate::store::Identity;

/// The token request for the refresh grant with `refresh`, else for the
/// provider's primary grant, at `token_url`.
pub(super) fn token_request<'a>(
    cfg: &'a OAuth2Config,
    token_url: &'a Url,
    refresh: Option<&'a Secret>,
    dpop: Option<&'a Dpop>,
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
    };
    Ok(TokenRequest {
        token_url,
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
        dpop,
    })
}

/// Covers everything that decides whose tokens these are: if any of it
/// changes in the config, stored tokens are not used. (The order and the
/// fields are those of every version so far: records written by older
/// versions are recognised.)
pub(super) fn identity_of(cfg: &OAuth2Config) -> Identity {
    fn opt(s: &Option<Secret>) -> &str {
        s.as_ref().map(Secret::expose).unwrap_or("")
    }
    // A discovered token endpoint is named by its issuer (known before
    // discovery); configs without one give what older versions gave.
    let token_url = match (&cfg.token_url, &cfg.issuer) {
        (Some(url), _) => url.to_string(),
        (None, Some(issuer)) => format!("issuer:{issuer}"),
        (None, None) => String::new(),
    };
    let mut parts = vec![
        cfg.grant.as_str(),
        &token_url,
        opt(&cfg.client_id),
        opt(&cfg.username),
        opt(&cfg.password),
        cfg.scope.as_deref().unwrap_or(""),
        opt(&cfg.seed_refresh_token),
        opt(&cfg.seed_access_token),
    ];
    // Tokens bound to a DPoP key are not Bearer tokens (and the other way
    // round); only added when set, so older records stay recognised.
    if cfg.dpop {
        parts.push("dpop");
    }
    // Whom a JWT-bearer token is for (a grant older versions did not have).
    if let Some(assertion) = &cfg.jwt_bearer {
        parts.push(assertion.issuer.expose());
        parts.push(opt(&assertion.subject));
        parts.push(assertion.scope.as_deref().unwrap_or(""));
    }
    Identity::of(&parts)
}
