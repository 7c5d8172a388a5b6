//! The OAuth 2.0 wire protocol, and nothing about proxying, stores or the
//! proxy's configuration: the token type and the parsing of token answers
//! and JWTs ([`token`]), RFC 6749 error codes ([`error`]), and the token
//! endpoint client with bounded retries ([`client`]), which takes a
//! description of one request ([`TokenRequest`]).

pub mod client;
pub mod error;
pub mod token;

pub use client::{BodyEncoding, ClientAuth, Grant, TokenClient, TokenRequest};
pub use error::{OAuthErrorCode, TokenError};
pub use token::TokenSet;
