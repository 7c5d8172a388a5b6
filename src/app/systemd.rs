//! The systemd notify protocol (`Type=notify`): `READY=1` once the proxy
//! serves, `RELOADING=1` / `READY=1` around a reload, `STOPPING=1` at
//! shutdown, with a `STATUS=` line for `systemctl status`. Each is one
//! datagram to `$NOTIFY_SOCKET`; without that variable nothing is sent.

use sd_notify::NotifyState;

/// The proxy serves (or serves again after a reload); `status` is shown
/// by `systemctl status`.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload begins. `MONOTONIC_USEC` tells systemd (>= 253, with
/// `Type=notify-reload`) which reload this is; older ones ignore it.
pub fn reloading() {
    let mut states = vec![NotifyState::Reloading];
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    states.push(NotifyState::Status("reloading the config"));
    send(&states);
}

/// Shutdown begins: in-flight requests are drained next.
pub fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: draining in-flight requests"),
    ]);
}

fn send(states: &[NotifyState]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET)");
    }
}
