//! The one set of mock providers, faithful to the providers' docs in the
//! spec's table. `authproxy demo`, the tests and the benchmarks all use
//! these; they are loopback servers, never reachable from elsewhere.
//!
//! - [`Style::Rips`] (rips.rs): JSON-only token endpoint, JWT access
//!   tokens, `X-API-Expired` / `X-API-Revoked`.
//! - [`Style::OneCloud`] (onecloud.rs): single-use refresh tokens with
//!   reuse detection that revokes the chain.
//! - [`Style::Standard`] (standard.rs): RFC 6749 form endpoint, three
//!   grants, HTTP Basic or body client authentication.
//! - [`Style::Implicit`] (implicit.rs): ReadyCloud's authorize redirect
//!   with the token in the fragment.
//! - [`google`]: a Google-style service-account token endpoint (the
//!   JWT-bearer grant), verifying each assertion with the public key.
//! - [`device`]: an RFC 8628 device authorization server with every
//!   polling error (`authorization_pending`, `slow_down`, `access_denied`,
//!   `expired_token`).
//! - [`statics`]: static token and header-pair APIs.
//! - [`echo`]: an upstream that records and echoes every request.
//!
//! Error answers repeat what the client sent (errors.rs), as real
//! providers' often do, so that a proxy showing provider text unscrubbed
//! is caught leaking. [`MockProvider`] records every request and has the
//! knobs tests turn (failures, delays, lifetimes) and the counters
//! benchmarks read.

pub mod device;
pub mod echo;
mod errors;
pub mod google;
mod implicit;
mod onecloud;
pub mod provider;
mod rips;
mod standard;
pub mod state;
pub mod statics;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;

use axum::Router;
use tokio::net::TcpListener;

pub use echo::{echo_response, record, Echo, Recorded};
pub use provider::{now, MockProvider};
pub use state::{
    ApiHit, ClientAuthRule, Counters, ExpiresIn, MockState, Style, TokenRequest, CLIENT_ID,
    CLIENT_SECRET, PASSWORD, USERNAME,
};

/// Serves `router` on 127.0.0.1:0 for as long as the runtime lives.
pub async fn serve(router: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("bound listener");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    addr
}
