//! OAuth2 pieces that know nothing about proxying: the token type and its
//! parsing ([`token`]), RFC 6749 error codes ([`error`]), and the token
//! endpoint client with bounded retries ([`client`]).

pub mod client;
pub mod error;
pub mod token;

pub use client::{GrantRequest, TokenClient};
pub use error::{OAuthErrorCode, TokenError};
pub use token::TokenSet;
