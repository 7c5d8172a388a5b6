//! Credentials a route injects: fixed headers ([`static_headers`]) or an
//! OAuth2 token kept fresh by a provider runtime ([`oauth2`]).

pub mod oauth2;
pub mod static_headers;

use std::sync::Arc;

pub use oauth2::{CredentialError, OAuthProvider, Trigger};
pub use static_headers::StaticHeaders;

/// One provider's credential, as used on the request path.
pub enum Credential {
    Static(StaticHeaders),
    OAuth2(Arc<OAuthProvider>),
}
