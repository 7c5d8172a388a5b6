//! The OAuth 2.0 wire protocol, and nothing about proxying, stores or the
//! proxy's configuration: the token type and the parsing of token answers
//! and JWTs ([`token`]), RFC 6749 error codes ([`error`]), the token
//! endpoint client with bounded retries ([`client`]), which takes a
//! description of one request ([`TokenRequest`], [`request`]), signed JWTs ([`jwt`]),
//! RFC 7523 assertions ([`assertion`]), the device authorization answer
//! of RFC 8628 ([`device`]) and authorization server discovery
//! ([`discovery`]).

pub mod assertion;
pub mod client;
pub mod device;
pub mod discovery;
pub mod error;
pub mod jwt;
pub mod request;
pub mod token;

pub use assertion::GrantAssertion;
pub use client::{BodyEncoding, ClientAuth, Grant, TlsSettings, TokenClient, TokenRequest};
pub use device::DeviceAuthorization;
pub use discovery::{DiscoveryError, Metadata};
pub use error::{OAuthErrorCode, TokenError};
pub use jwt::{Alg, PrivateKey, Signer};
pub use token::TokenSet;
