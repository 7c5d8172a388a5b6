//! The process's life: signals from the moment it says it listens, and
//! the drain at shutdown, upgraded connections included.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use support::{client, start_proxy, Echo, ProxyProcess};

/// "listening on" means every signal handler is in place: a SIGHUP sent
/// the moment that line appears is a reload, not the default action
/// (which ends the process).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_right_after_listening_reloads_instead_of_ending_the_process() {
    let echo = Echo::start().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("authproxy.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[store]\nkind = \"memory\"\n\
             [[routes]]\nprefix = \"/e/\"\nupstream = \"{}/\"\n",
            echo.url()
        ),
    )
    .unwrap();
    // `start` returns as soon as the "listening on" line is read.
    let proxy = ProxyProcess::start(&path, &[("RUST_LOG", "info")]);
    proxy.signal("HUP");
    let reloaded = support::eventually(Duration::from_secs(30), || {
        proxy.log().contains("config reloaded")
    })
    .await;
    assert!(reloaded, "no reload after SIGHUP:\n{}", proxy.log());
    let r = client()
        .get(proxy.url("/_authproxy/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    proxy.signal("TERM");
    let (code, log) = tokio::task::spawn_blocking(move || proxy.wait())
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{log}");
}

/// An upstream that switches every request to an echo protocol (`101`)
/// and then sends back whatever arrives until the client closes.
async fn echo_upgrade_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                read_head(&mut s).await;
                s.write_all(
                    b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n",
                )
                .await
                .unwrap();
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// Reads up to the end of a head (and no further: the rest is the tunnel).
async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).await.unwrap(), 1, "closed in the head");
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

/// Opens a tunnel through the proxy at `proxy` to the echo upstream.
async fn open_tunnel(proxy: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(
        b"GET /ws/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: upgrade\r\nUpgrade: echo\r\n\r\n",
    )
    .await
    .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    round_trip(&mut s, b"ping").await;
    s
}

async fn round_trip(s: &mut TcpStream, data: &[u8]) {
    s.write_all(data).await.unwrap();
    let mut back = vec![0u8; data.len()];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(back, data);
}

fn tunnel_config(upstream: SocketAddr, drain: &str) -> String {
    format!(
        "[server]\ndrain_timeout = \"{drain}\"\n[store]\nkind = \"memory\"\n\
         [[routes]]\nprefix = \"/ws/\"\nupstream = \"http://{upstream}/\"\n"
    )
}

/// SIGTERM with a tunnel (a spliced upgraded connection) open: the drain
/// waits for it as for an in-flight request, and the process exits once
/// it closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_an_open_tunnel_until_it_closes() {
    let upstream = echo_upgrade_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("authproxy.toml");
    let config = tunnel_config(upstream, "120s")
        .replace("[server]\n", "[server]\nlisten = \"127.0.0.1:0\"\n");
    std::fs::write(&path, config).unwrap();
    let proxy = ProxyProcess::start(&path, &[("RUST_LOG", "info")]);
    let mut tunnel = open_tunnel(proxy.addr).await;

    proxy.signal("TERM");
    let stopping = support::eventually(Duration::from_secs(30), || {
        proxy.log().contains("shutting down")
    })
    .await;
    assert!(stopping, "no stop after SIGTERM:\n{}", proxy.log());
    // The tunnel still works and the drain is not over. Before the fix
    // the HTTP connection ended at the upgrade and the tunnel was not
    // counted: "all connections drained" came in the same breath as
    // "shutting down" (one batch of the log writer), and the process
    // exited, closing the tunnel.
    round_trip(&mut tunnel, b"still there").await;
    assert!(
        !proxy.log().contains("all connections drained"),
        "{}",
        proxy.log()
    );

    drop(tunnel);
    // Exits now; a drain that missed the close would wait out the 120 s
    // (and `wait` give up first).
    let (code, log) = tokio::task::spawn_blocking(move || proxy.wait())
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("all connections drained"), "{log}");
}

/// ... but no longer than `drain_timeout`, like connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_gives_up_on_an_open_tunnel_after_the_drain_timeout() {
    let upstream = echo_upgrade_upstream().await;
    let proxy = start_proxy(&tunnel_config(upstream, "300ms")).await;
    let mut tunnel = open_tunnel(proxy.addr).await;
    proxy.stop().await;
    // Ended with the tunnel still open (the process would now exit).
    round_trip(&mut tunnel, b"after the stop").await;
}
