//! hyper glue that knows nothing about the app: the accept loop
//! ([`server`], generic over what answers a request), the connection drain
//! ([`drain`]), the connection count ([`load`]), the request-head
//! deadline ([`head_timeout`]), spliced tunnels ([`splice`]), body types ([`body`]) and the budget of
//! buffered ones ([`buffer`]), and rules about HTTP messages: hop-by-hop headers
//! ([`headers`]), request paths ([`path`]), hosts ([`host`]) and the hosts
//! and `host:port` targets of forward-proxy requests ([`authority`]).

pub mod authority;
pub mod body;
pub mod buffer;
pub mod drain;
pub mod head_timeout;
pub mod headers;
pub mod host;
pub mod load;
pub mod path;
pub mod server;
pub mod splice;

pub use server::{serve, Limits};
