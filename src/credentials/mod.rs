//! Credentials a route injects: one module per kind, all behind the one
//! [`Credential`] enum the proxy matches on (exhaustively, so a new kind
//! cannot be forgotten on the request path).
//!
//! Two shapes of kind:
//! - fixed request parts, built once at load and applied as they are:
//!   [`static_headers`] (and, to come, `basic` and `query`);
//! - kinds with a runtime, asked for what to inject on each request:
//!   [`oauth2`] (a token kept fresh, renewed after a 401; to come:
//!   `aws_sigv4`, which signs each request).
//!
//! What is sent to token endpoints is not here but in [`crate::oauth`],
//! which knows the protocol only.

pub mod oauth2;
pub mod static_headers;

use std::sync::Arc;

pub use oauth2::{CredentialError, OAuthProvider, Trigger};
pub use static_headers::StaticHeaders;

/// One provider's credential, as used on the request path.
pub enum Credential {
    /// Fixed headers, replacing the client's values of the same names.
    Static(StaticHeaders),
    /// An OAuth2 provider runtime: its current token goes into its header.
    OAuth2(Arc<OAuthProvider>),
}
