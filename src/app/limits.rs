//! File descriptors at start: the soft `RLIMIT_NOFILE` raised to the hard
//! limit, and how many client connections that leaves room for
//! (`server.max_connections`).
//!
//! Each client connection may need an upstream connection too, so a
//! connection is counted as two descriptors, after a reserve for
//! everything else: the listener, the runtime, logs, the token store and
//! its temp files, the spill file, token requests, Redis.

use crate::config::ServerConfig;

/// Descriptors kept back from connections (see the module comment).
const RESERVED_FDS: u64 = 64;

/// `server.max_connections` when not set.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// The file-descriptor limit before and after raising it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdLimit {
    /// The soft limit found at start (`None`: unlimited).
    pub was: Option<u64>,
    /// The soft limit now.
    pub soft: Option<u64>,
    /// The hard limit.
    pub hard: Option<u64>,
}

/// Raises the soft limit on open files to the hard limit (the soft one is
/// often 1024, or lower under a shell's `ulimit -Sn`, while the hard one
/// is far higher). Failing that, the soft limit stays as it was.
pub fn raise_fd_limit() -> FdLimit {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let before = getrlimit(Resource::Nofile);
    let mut soft = before.current;
    if before.current.is_some() && before.current != before.maximum {
        // An unlimited hard limit is not a value the soft one can take on
        // Linux (it is capped by fs.nr_open): try a large number instead.
        let target = before.maximum.unwrap_or(1 << 20);
        let raised = Rlimit {
            current: Some(target),
            maximum: before.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            soft = Some(target);
        }
    }
    FdLimit {
        was: before.current,
        soft,
        hard: before.maximum,
    }
}

/// The connections `soft` file descriptors allow: two per connection after
/// the reserve, at least one.
pub fn connections_allowed(soft: Option<u64>) -> usize {
    match soft {
        None => usize::MAX,
        Some(n) => usize::try_from(n.saturating_sub(RESERVED_FDS) / 2)
            .unwrap_or(usize::MAX)
            .max(1),
    }
}

/// Raises the file-descriptor limit and works out the effective
/// `max_connections`: the configured value (or the default), never more
/// than the limit allows. Logged once.
pub fn max_connections(server: &ServerConfig) -> usize {
    let fds = raise_fd_limit();
    let configured = server.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
    let allowed = connections_allowed(fds.soft);
    let effective = configured.min(allowed);
    // Numbers in the log (JSON: numbers); a limit that is absent is
    // unlimited.
    if effective < configured && server.max_connections.is_some() {
        tracing::warn!(
            max_connections = effective,
            configured,
            fd_soft_limit = fds.soft,
            fd_hard_limit = fds.hard,
            "server.max_connections is more than the file-descriptor limit allows \
             (two per connection, {RESERVED_FDS} kept back); raise the hard limit \
             (LimitNOFILE=, ulimit -Hn) to allow more"
        );
    } else {
        tracing::info!(
            max_connections = effective,
            fd_soft_limit = fds.soft,
            fd_soft_limit_at_start = fds.was,
            fd_hard_limit = fds.hard,
            "connection limit"
        );
    }
    effective
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_descriptors_per_connection_after_the_reserve() {
        assert_eq!(connections_allowed(Some(256)), 96);
        assert_eq!(connections_allowed(Some(1024)), 480);
        assert_eq!(connections_allowed(Some(20_000)), 9_968);
        assert_eq!(connections_allowed(Some(10)), 1);
        assert_eq!(connections_allowed(None), usize::MAX);
    }

    #[test]
    fn the_soft_limit_ends_at_the_hard_one() {
        let fds = raise_fd_limit();
        assert_eq!(fds.soft, fds.hard.or(fds.soft));
    }
}
