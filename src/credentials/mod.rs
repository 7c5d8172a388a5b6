//! Credentials a route injects: one module per kind, all behind the one
//! [`Credential`] enum the proxy matches on (exhaustively, so a new kind
//! cannot be forgotten on the request path).
//!
//! Two shapes of kind:
//! - fixed request parts, built once at load and applied as they are:
//!   [`static_headers`], [`basic`] (HTTP Basic) and [`query`] (query
//!   parameters);
//! - kinds with a runtime, asked for what to inject on each request:
//!   [`oauth2`] (a token kept fresh, renewed after a 401) and
//!   [`aws_sigv4`] (each request signed, with its date and body hash).
//!
//! What is sent to token endpoints is not here but in [`crate::oauth`],
//! which knows the protocol only.

pub mod aws_sigv4;
pub mod basic;
pub mod oauth2;
pub mod query;
pub mod static_headers;

use std::sync::Arc;

pub use aws_sigv4::AwsSigV4;
pub use basic::BasicAuth;
pub use oauth2::{CredentialError, OAuthProvider, Trigger};
pub use query::QueryParams;
pub use static_headers::StaticHeaders;

use crate::config::ProviderKind;

/// One provider's credential, as used on the request path.
pub enum Credential {
    /// Fixed headers, replacing the client's values of the same names.
    Static(StaticHeaders),
    /// `Authorization: Basic …`, replacing the client's.
    Basic(BasicAuth),
    /// Query parameters, replacing the client's of the same names.
    Query(QueryParams),
    /// AWS Signature Version 4 on each request.
    AwsSigV4(Box<AwsSigV4>),
    /// An OAuth2 provider runtime: its current token goes into its header.
    OAuth2(Arc<OAuthProvider>),
}

impl Credential {
    /// The `type` as written in the config.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Credential::Static(_) => "static",
            Credential::Basic(_) => "basic",
            Credential::Query(_) => "query",
            Credential::AwsSigV4(_) => "aws_sigv4",
            Credential::OAuth2(_) => "oauth2",
        }
    }

    /// The credential of a kind that needs no runtime state from outside
    /// (everything but oauth2, which needs the store and token client).
    pub fn fixed(kind: &ProviderKind) -> Option<Credential> {
        Some(match kind {
            ProviderKind::Static(s) => Credential::Static(StaticHeaders::new(s)),
            ProviderKind::Basic(b) => Credential::Basic(BasicAuth::new(b)),
            ProviderKind::Query(q) => Credential::Query(QueryParams::new(q)),
            ProviderKind::AwsSigV4(a) => Credential::AwsSigV4(Box::new(AwsSigV4::new(a))),
            ProviderKind::OAuth2(_) => return None,
        })
    }
}
