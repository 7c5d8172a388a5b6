//! Protocol upgrades (`101 Switching Protocols`, e.g. WebSocket): once
//! both sides have switched, the two connections are spliced together and
//! bytes flow both ways until either side closes.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::http::drain::Entered;

/// Splices the client's connection to the upstream's, in a task of its
/// own, once both have been handed over by hyper. The task holds
/// `drain`: a shutdown waits for the tunnel to close (bounded by
/// `server.drain_timeout`, as for connections).
pub(super) fn splice(client: OnUpgrade, upstream: OnUpgrade, drain: Entered) {
    tokio::spawn(async move {
        let _drain = drain;
        match tokio::try_join!(client, upstream) {
            Ok((client, upstream)) => {
                let mut client = TokioIo::new(client);
                let mut upstream = TokioIo::new(upstream);
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            }
            Err(e) => tracing::debug!(error = %e, "upgrade failed"),
        }
    });
}
