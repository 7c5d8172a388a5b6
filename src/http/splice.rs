//! Two connections spliced together (a blind `CONNECT` tunnel, a WebSocket
//! after `101`): bytes both ways until both sides have closed, either side
//! fails, or nothing has moved in either direction for the idle timeout
//! (`server.tunnel_idle_timeout`, like HAProxy's `timeout tunnel` or
//! Envoy's TCP proxy `idle_timeout`). Without that bound a peer that
//! vanishes without a FIN (a laptop that sleeps, a NAT that forgets) would
//! hold a connection slot and a task forever.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// The buffer of each direction; the size tokio's `copy_bidirectional`
/// uses.
const CHUNK: usize = 8 * 1024;

/// How a splice ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// Both sides closed their half, or one side failed.
    Closed,
    /// Nothing moved for the idle timeout; both connections are dropped.
    Idle,
}

/// Copies bytes both ways between `a` and `b` (see the module doc).
pub async fn splice<A, B>(a: A, b: B, idle: Duration) -> Ended
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    // Milliseconds since `start` of the last byte read by either direction.
    let last = AtomicU64::new(0);
    let (a_read, a_write) = tokio::io::split(a);
    let (b_read, b_write) = tokio::io::split(b);
    let both = async {
        let _ = tokio::try_join!(
            pump(a_read, b_write, &last, start),
            pump(b_read, a_write, &last, start)
        );
    };
    let watch = async {
        loop {
            let due = start + Duration::from_millis(last.load(Ordering::Relaxed)) + idle;
            tokio::time::sleep_until(due).await;
            let quiet = start.elapsed() - Duration::from_millis(last.load(Ordering::Relaxed));
            if quiet >= idle {
                return;
            }
        }
    };
    tokio::select! {
        _ = both => Ended::Closed,
        _ = watch => Ended::Idle,
    }
}

/// One direction: read, note the time, write; at the reader's end of
/// stream, close the writer's half so the other side sees it.
async fn pump<R, W>(mut from: R, mut to: W, last: &AtomicU64, start: Instant) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
        to.write_all(&buf[..n]).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    #[tokio::test(start_paused = true)]
    async fn bytes_flow_both_ways_and_a_close_ends_it() {
        let (mut client, a) = duplex(64);
        let (b, mut server) = duplex(64);
        let task = tokio::spawn(splice(a, b, Duration::from_secs(60)));
        client.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        server.write_all(b"pong").await.unwrap();
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong");
        drop(client);
        drop(server);
        assert_eq!(task.await.unwrap(), Ended::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_quiet_tunnel_is_cut_and_a_busy_one_is_not() {
        let (mut client, a) = duplex(64);
        let (b, mut server) = duplex(64);
        let task = tokio::spawn(splice(a, b, Duration::from_secs(10)));
        // Traffic in one direction only keeps the whole tunnel alive.
        for _ in 0..5 {
            tokio::time::sleep(Duration::from_secs(6)).await;
            server.write_all(b"x").await.unwrap();
            let mut got = [0u8; 1];
            client.read_exact(&mut got).await.unwrap();
        }
        assert!(!task.is_finished());
        // Then silence: cut after the idle timeout, both ends see EOF.
        assert_eq!(task.await.unwrap(), Ended::Idle);
        let mut rest = Vec::new();
        assert_eq!(client.read_to_end(&mut rest).await.unwrap(), 0);
        assert_eq!(server.read_to_end(&mut rest).await.unwrap(), 0);
    }
}
