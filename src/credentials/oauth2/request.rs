//! The identity a provider's tokens belong to.

use crate::config::OAuth2Config;
use crate::secret::Secret;
use crate::store::Identity;

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
