//! Protocol upgrades (`101 Switching Protocols`, e.g. WebSocket): once
//! both sides have switched, the two connections are spliced together and
//! bytes flow both ways until both sides close or the tunnel has been
//! quiet for `server.tunnel_idle_timeout` ([`crate::http::splice`]).

use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::http::drain::Entered;
use crate::http::splice;

/// Splices the client's connection to the upstream's, in a task of its
/// own, once both have been handed over by hyper. The task holds
/// `drain`: a shutdown waits for the tunnel to close (bounded by
/// `server.drain_timeout`, as for connections).
pub(super) fn splice(client: OnUpgrade, upstream: OnUpgrade, drain: Entered, idle: Duration) {
    tokio::spawn(async move {
        let _drain = drain;
        match tokio::try_join!(client, upstream) {
            Ok((client, upstream)) => {
                let ended =
                    splice::splice(TokioIo::new(client), TokioIo::new(upstream), idle).await;
                if ended == splice::Ended::Idle {
                    tracing::debug!(
                        "upgraded connection closed: quiet for server.tunnel_idle_timeout"
                    );
                }
            }
            Err(e) => tracing::debug!(error = %e, "upgrade failed"),
        }
    });
}
