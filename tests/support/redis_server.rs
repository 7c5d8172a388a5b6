//! A real `redis-server` for the shared-store tests: started on a free
//! loopback port with no persistence (`--save '' --appendonly no`), killed
//! when dropped. Missing `redis-server`: the test is skipped with a message,
//! except under `CI`, where it fails.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    password: Option<String>,
    dir: tempfile::TempDir,
}

/// Whether `redis-server` can run here. Under `CI` its absence is a failure.
pub fn available() -> bool {
    let ok = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var_os("CI").is_some() {
            panic!("redis-server is required under CI (apt-get install redis-server; .ci/run installs it)");
        }
        eprintln!("SKIPPED: redis-server is not installed (apt-get install redis-server)");
    }
    ok
}

/// A loopback port that was free a moment ago (for a server started later).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RedisServer {
    /// Starts a server, or `None` (skip) when `redis-server` is missing.
    pub fn start() -> Option<RedisServer> {
        Self::start_with(None, None)
    }

    /// As [`RedisServer::start`], requiring `AUTH <password>`.
    pub fn start_with_password(password: &str) -> Option<RedisServer> {
        Self::start_with(None, Some(password))
    }

    /// On `port` if given (e.g. one a proxy was already told about), else
    /// on a free one. A port taken in between is retried with another.
    pub fn start_with(port: Option<u16>, password: Option<&str>) -> Option<RedisServer> {
        if !available() {
            return None;
        }
        let mut server = RedisServer {
            child: None,
            port: port.unwrap_or_else(free_port),
            password: password.map(str::to_string),
            dir: tempfile::tempdir().unwrap(),
        };
        for attempt in 0..5 {
            if server.launch() {
                return Some(server);
            }
            if port.is_some() && attempt < 4 {
                // Our fixed port: it may still be held for a moment.
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
            server.port = free_port();
        }
        panic!("redis-server did not start; log:\n{}", server.log());
    }

    fn launch(&mut self) -> bool {
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
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return false; // exited: port taken?
            }
            if self.ping() {
                self.child = Some(child);
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn ping(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else {
            return false;
        };
        let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(500)) else {
            return false;
        };
        redis::cmd("PING").query::<String>(&mut conn).is_ok()
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

    /// Kills the server (`SIGKILL`: no chance to save anything, and it
    /// saves nothing anyway).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        for _ in 0..25 {
            if self.launch() {
                return;
            }
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
