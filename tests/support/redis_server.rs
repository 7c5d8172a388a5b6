//! A real `redis-server` for the shared-store tests: started on a loopback
//! port with no persistence (`--save '' --appendonly no`), killed when
//! dropped. A missing `redis-server` fails the test unless
//! `AUTHPROXY_TEST_ALLOW_MISSING` lists it (see [`super::require_tool`]).
//!
//! redis-server cannot be handed a bound socket, so it is started on a port
//! that was free a moment ago; when that port was taken in between, it
//! exits (bind failure) and is started again on another one. The server
//! that answers on the port is checked to be our child (`INFO server`
//! `process_id`), never another test's Redis that happens to answer PING.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use authproxy::secret::Secret;
use authproxy::store::{Owner, RedisOptions, StoredToken};

use super::ClosedPort;

/// Store timings short enough for tests that drive a `RedisStore`
/// directly (a lease handed over within a second).
pub fn quick_options() -> RedisOptions {
    RedisOptions {
        lease_ttl: Duration::from_millis(600),
        lease_wait: Duration::from_millis(1500),
        op_timeout: Duration::from_secs(2),
        heartbeat: Duration::from_secs(1),
        min_replicas: None,
        replica_timeout: Duration::from_millis(300),
    }
}

/// A record with access token `access` and refresh token `r-<access>`.
pub fn token(access: &str) -> StoredToken {
    StoredToken {
        access_token: Some(Secret::new(access)),
        refresh_token: Some(Secret::new(format!("r-{access}"))),
        expires_at: Some(4_000_000_000),
        token_type: None,
        obtained_at: 1,
        owner: Owner::Fingerprint("fp".into()),
        dpop_key: None,
        rotation: None,
    }
}

/// The access token of a record read back ("" for none).
pub fn access_of(t: Option<StoredToken>) -> String {
    t.and_then(|t| t.access_token)
        .map(|a| a.expose().to_string())
        .unwrap_or_default()
}

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    password: Option<String>,
    dir: tempfile::TempDir,
    /// More `redis-server` arguments (`--replicaof …`).
    extra: Vec<String>,
    /// Runs `redis-sentinel` with this config (the port line is added at
    /// each launch) instead of `redis-server`.
    sentinel_conf: Option<String>,
}

/// Whether the tests may use `redis-server`: true when it is installed;
/// false (skip) when it is missing and the skip is allowed; otherwise the
/// test fails.
pub fn available() -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    super::require_tool(
        "redis-server",
        found,
        "apt-get install redis-server (.ci/run installs it)",
    )
}

/// What happened to one start attempt.
enum Launch {
    Up,
    /// Exited at once (port taken) or another server answers there.
    PortTaken,
}

impl RedisServer {
    /// Starts a server, or `None` (skip) when `redis-server` is missing and
    /// that is allowed.
    pub fn start() -> Option<RedisServer> {
        Self::start_with(None, None)
    }

    /// As [`RedisServer::start`], requiring `AUTH <password>`.
    pub fn start_with_password(password: &str) -> Option<RedisServer> {
        Self::start_with(None, Some(password))
    }

    /// On the port `reserved` held (one a proxy was already told about),
    /// else on a free one; a free one taken in between is retried with
    /// another.
    pub fn start_with(reserved: Option<ClosedPort>, password: Option<&str>) -> Option<RedisServer> {
        if !available() {
            return None;
        }
        let fixed = reserved.is_some();
        let mut server = RedisServer {
            child: None,
            // The reservation ends here, right before redis-server binds.
            port: reserved.map_or_else(|| ClosedPort::new().release(), ClosedPort::release),
            password: password.map(str::to_string),
            dir: tempfile::tempdir().unwrap(),
            extra: Vec::new(),
            sentinel_conf: None,
        };
        server.start_retrying(fixed);
        Some(server)
    }

    /// A `redis-server` with more arguments (e.g. `--replicaof 127.0.0.1
    /// <port>`), on a free port (retried when taken in between).
    pub fn start_args(extra: &[String]) -> Option<RedisServer> {
        Self::start_custom(extra.to_vec(), None)
    }

    /// A `redis-sentinel` with `conf` (without its `port` line), on a free
    /// port (retried when taken in between).
    pub fn start_sentinel(conf: &str) -> Option<RedisServer> {
        Self::start_custom(Vec::new(), Some(conf.to_string()))
    }

    fn start_custom(extra: Vec<String>, sentinel_conf: Option<String>) -> Option<RedisServer> {
        if !available() {
            return None;
        }
        let mut server = RedisServer {
            child: None,
            port: ClosedPort::new().release(),
            password: None,
            dir: tempfile::tempdir().unwrap(),
            extra,
            sentinel_conf,
        };
        server.start_retrying(false);
        Some(server)
    }

    fn start_retrying(&mut self, fixed: bool) {
        let server = self;
        for _ in 0..5 {
            match server.launch() {
                Launch::Up => return,
                Launch::PortTaken if fixed => break,
                Launch::PortTaken => server.port = ClosedPort::new().release(),
            }
        }
        panic!(
            "redis-server did not start (last port {}); log:\n{}",
            server.port,
            server.log()
        );
    }

    /// Starts redis-server on `self.port` and waits (bounded) until it
    /// answers there as itself.
    fn launch(&mut self) -> Launch {
        let mut cmd = if let Some(conf) = &self.sentinel_conf {
            // Sentinel rewrites its config file: a fresh one per launch.
            let path = self.dir.path().join("sentinel.conf");
            let text = format!(
                "port {}\nbind 127.0.0.1\ndaemonize no\nlogfile {}\ndir {}\n{conf}\n",
                self.port,
                self.log_path().display(),
                self.dir.path().display()
            );
            std::fs::write(&path, text).unwrap();
            let mut cmd = Command::new("redis-sentinel");
            cmd.arg(path);
            cmd
        } else {
            self.server_command()
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.wait_up(child)
    }

    fn server_command(&self) -> Command {
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.log_path());
        if let Some(pw) = &self.password {
            cmd.args(["--requirepass", pw]);
        }
        cmd.args(&self.extra);
        cmd
    }

    fn wait_up(&mut self, mut child: Child) -> Launch {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return Launch::PortTaken; // exited: the port was taken
            }
            match self.server_pid() {
                Some(pid) if pid == child.id() => {
                    self.child = Some(child);
                    return Launch::Up;
                }
                Some(_) => {
                    // Someone else's server answers on this port; ours
                    // cannot bind it and is on its way out.
                    let _ = child.kill();
                    let _ = child.wait();
                    return Launch::PortTaken;
                }
                None => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "redis-server on port {} did not answer within 10 s; log:\n{}",
            self.port,
            self.log()
        );
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The `process_id` of the server answering on our port (with our
    /// password), if one does.
    fn server_pid(&self) -> Option<u32> {
        let client = redis::Client::open(self.url()).ok()?;
        let mut conn = client
            .get_connection_with_timeout(Duration::from_millis(500))
            .ok()?;
        let info: String = redis::cmd("INFO").arg("server").query(&mut conn).ok()?;
        info.lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .and_then(|pid| pid.trim().parse().ok())
    }

    /// `redis://[:password@]127.0.0.1:<port>/0`
    pub fn url(&self) -> String {
        match &self.password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}/0", self.port),
            None => format!("redis://127.0.0.1:{}/0", self.port),
        }
    }

    /// A synchronous connection for the test's own checks.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection_with_timeout(Duration::from_secs(2))
            .unwrap()
    }

    /// Sends `signal` (`STOP`, `CONT`) to the server: a stopped replica
    /// neither applies nor acknowledges writes until continued.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("server running").id();
        let ok = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{signal} {pid}");
    }

    /// Kills the server (`SIGKILL`: no chance to save anything, and it
    /// saves nothing anyway).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty. The port was ours until
    /// the kill; should another process take it meanwhile the test fails
    /// here rather than talk to a stranger's server.
    pub fn restart(&mut self) {
        self.restart_with(None);
    }

    /// As [`RedisServer::restart`], with other extra arguments (a killed
    /// primary brought back as a replica of the new one).
    pub fn restart_with(&mut self, extra: Option<Vec<String>>) {
        if let Some(extra) = extra {
            self.extra = extra;
        }
        self.kill();
        for _ in 0..25 {
            if let Launch::Up = self.launch() {
                return;
            }
            // Our killed server's socket may still be closing.
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "redis-server did not restart on port {}; log:\n{}",
            self.port,
            self.log()
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
