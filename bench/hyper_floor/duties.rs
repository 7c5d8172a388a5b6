//! The per-request duties of `FLOOR_DUTIES` (see the crate's doc): each
//! in the cheapest form that still does the job, so that the floor of a
//! proxy keeping SPEC.md's contract can be measured.

use std::io::Write as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderName};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{combinators::BoxBody, BodyExt};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;

use super::{bad_gateway, connect, Route};

/// Which of the contract's per-request duties are on (`FLOOR_DUTIES`).
#[derive(Clone, Copy, Default)]
pub(super) struct Duties {
    id: bool,
    hop: bool,
    log: bool,
    metrics: bool,
    timeout: bool,
    pool: bool,
}

impl Duties {
    pub(super) fn log(self) -> bool {
        self.log
    }

    pub(super) fn any(self) -> bool {
        self.id || self.hop || self.log || self.metrics || self.timeout || self.pool
    }

    pub(super) fn from_env() -> Duties {
        let Ok(list) = std::env::var("FLOOR_DUTIES") else {
            return Duties::default();
        };
        let mut d = Duties::default();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let all = name == "all";
            match name {
                "all" | "id" | "hop" | "log" | "metrics" | "timeout" | "pool" => {}
                other => panic!("FLOOR_DUTIES: unknown duty {other:?}"),
            }
            d.id |= all || name == "id";
            d.hop |= all || name == "hop";
            d.log |= all || name == "log";
            d.metrics |= all || name == "metrics";
            d.timeout |= all || name == "timeout";
            d.pool |= all || name == "pool";
        }
        d
    }
}

/// Access-log lines waiting to be written. Batched as authproxy's writer
/// batches them (out at 64 KiB, or every 50 ms): a `write(2)` per line
/// cost more kernel time than the line did, which made this floor dearer
/// in CPU time than authproxy on the connection-per-request row.
static LOG: Mutex<Vec<u8>> = Mutex::new(Vec::new());
const LOG_HIGH_WATER: usize = 64 * 1024;

/// Writes the waiting log lines out every 50 ms (on the runtime's one
/// thread: no writer thread to wake).
pub(super) async fn flush_log_periodically() {
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tick.tick().await;
        flush_log();
    }
}

/// Writes what is waiting: every 50 ms, and at exit, so that the last
/// lines are not lost with the process.
pub(super) fn flush_log() {
    write_log(&mut LOG.lock().expect("log lock"));
}

fn write_log(buf: &mut Vec<u8>) {
    if !buf.is_empty() {
        let _ = std::io::stderr().lock().write_all(buf);
        buf.clear();
    }
}

/// Upper bounds (µs) of the latency histogram's buckets, as Prometheus'
/// defaults.
const BUCKETS_US: [u64; 11] = [
    5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000,
    10_000_000,
];

#[derive(Default)]
pub(super) struct Metrics {
    /// Requests by status class (1xx..5xx).
    requests: [AtomicU64; 6],
    latency_buckets: [AtomicU64; 12],
    latency_sum_us: AtomicU64,
}

impl Metrics {
    fn observe(&self, status: StatusCode, upstream: Duration) {
        let class = usize::from(status.as_u16() / 100).min(5);
        self.requests[class].fetch_add(1, Ordering::Relaxed);
        let us = upstream.as_micros() as u64;
        let bucket = BUCKETS_US
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(BUCKETS_US.len());
        self.latency_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(us, Ordering::Relaxed);
    }
}

/// An upstream connection and its answer timer (`timeout` duty).
pub(super) struct Conn {
    pub(super) sender: SendRequest<Incoming>,
    pub(super) timer: Pin<Box<tokio::time::Sleep>>,
}

/// The upstream connection of one client connection (duties without
/// `pool`).
pub(super) type Slot = Arc<std::sync::Mutex<Option<Conn>>>;

/// [`forward`] with the duties `FLOOR_DUTIES` turns on.
pub(super) async fn forward_with_duties(
    req: Request<Incoming>,
    client: SocketAddr,
    route: &Arc<Route>,
    upstream: &Slot,
) -> Response<BoxBody<Bytes, hyper::Error>> {
    let duties = route.duties;
    let started = duties.log.then(Instant::now);
    let (mut parts, body) = req.into_parts();
    let request_id = duties.id.then(|| request_id(&parts.headers));
    if let Some(id) = &request_id {
        parts.headers.insert(&X_REQUEST_ID, id.clone());
    }
    if duties.hop {
        strip_hop_by_hop(&mut parts.headers);
    }
    let log = duties.log.then(|| LogLine {
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        client,
        request_id: request_id.clone(),
        started: started.unwrap_or_else(Instant::now),
    });
    let rest = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .strip_prefix(route.prefix.as_str())
        .unwrap_or("");
    parts.uri = format!("{}{rest}", route.upstream_path)
        .parse()
        .unwrap_or_default();
    parts.headers.insert(
        http::header::HOST,
        HeaderValue::from_str(&route.upstream_host).expect("host value"),
    );
    parts
        .headers
        .insert(http::header::AUTHORIZATION, route.authorization.clone());
    let req = Request::from_parts(parts, body);

    let sent = Instant::now();
    // The connection is taken for the request: from the shared pool
    // (given back when the answer's body ends), or from this client
    // connection's slot (put back once the answer's head is in: HTTP/1.1
    // brings this client's next request only after this answer's end).
    let taken = if duties.pool {
        route.pool.lock().expect("pool lock").pop()
    } else {
        upstream.lock().expect("upstream lock").take()
    };
    let mut conn = match taken {
        Some(c) if !c.sender.is_closed() => c,
        _ => match connect(route).await {
            Some(sender) => Conn {
                sender,
                timer: Box::pin(tokio::time::sleep(Duration::ZERO)),
            },
            None => return bad_gateway(),
        },
    };
    if conn.sender.ready().await.is_err() {
        return bad_gateway();
    }
    let answer = conn.sender.send_request(req);
    let answer = if duties.timeout {
        // The connection's own timer, moved: cheaper than a new one per
        // request (what authproxy's pool does too).
        conn.timer
            .as_mut()
            .reset(tokio::time::Instant::now() + UPSTREAM_TIMEOUT);
        tokio::select! {
            biased;
            answer = answer => answer,
            () = conn.timer.as_mut() => return bad_gateway(),
        }
    } else {
        answer.await
    };
    let pooled = if duties.pool {
        Some(conn)
    } else {
        *upstream.lock().expect("upstream lock") = Some(conn);
        None
    };
    let Ok(mut response) = answer else {
        return bad_gateway();
    };
    let upstream_latency = sent.elapsed();
    if duties.metrics {
        route.metrics.observe(response.status(), upstream_latency);
    }
    if duties.hop {
        strip_hop_by_hop(response.headers_mut());
    }
    if let Some(id) = request_id {
        response.headers_mut().insert(&X_REQUEST_ID, id);
    }
    if log.is_none() && pooled.is_none() {
        return response.map(BodyExt::boxed);
    }
    let status = response.status();
    response.map(|body| {
        Finished {
            body,
            bytes_out: 0,
            log,
            status,
            upstream_latency,
            give_back: pooled.map(|s| (route.clone(), s)),
        }
        .boxed()
    })
}

const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The client's id when short and printable, else a new one: a random
/// prefix made once, then a counter, in hex.
fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&X_REQUEST_ID) {
        if v.len() <= 128 && v.as_bytes().iter().all(u8::is_ascii_graphic) {
            return v.clone();
        }
    }
    static PREFIX: LazyLock<u64> = LazyLock::new(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(u64::from(std::process::id()));
        h.finish()
    });
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut hex = [0u8; 32];
    for (i, word) in [*PREFIX, n].into_iter().enumerate() {
        for j in 0..16 {
            let nibble = (word >> (60 - 4 * j)) & 0xf;
            hex[i * 16 + j] = b"0123456789abcdef"[nibble as usize];
        }
    }
    HeaderValue::from_bytes(&hex).expect("hex is a header value")
}

/// RFC 9110 §7.6.1's hop-by-hop headers, and the obsolete ones clients
/// still send.
static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names present; most messages carry at most
    // `Connection: keep-alive`, which names no other header.
    let mut present = 0u8;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    if present & 1 != 0 {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.eq_ignore_ascii_case("keep-alive") && !t.eq_ignore_ascii_case("close"))
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

/// What the access-log line needs from the request.
struct LogLine {
    method: http::Method,
    uri: Uri,
    client: SocketAddr,
    request_id: Option<HeaderValue>,
    started: Instant,
}

/// The answer's body: counts the bytes out; when dropped (the body ended
/// or was cut) writes the log line and gives the upstream connection back.
struct Finished {
    body: Incoming,
    bytes_out: u64,
    log: Option<LogLine>,
    status: StatusCode,
    upstream_latency: Duration,
    give_back: Option<(Arc<Route>, Conn)>,
}

impl Body for Finished {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                this.bytes_out += data.len() as u64;
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Finished {
    fn drop(&mut self) {
        if let Some((route, conn)) = self.give_back.take() {
            route.pool.lock().expect("pool lock").push(conn);
        }
        let Some(log) = &self.log else {
            return;
        };
        // Fields as SPEC.md lists them: time, request id, client, method,
        // route, path, status, bytes in, bytes out, upstream latency, total,
        // replayed, renewal. Numbers through itoa, not `fmt`.
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let mut n = itoa::Buffer::new();
        let mut buf = LOG.lock().expect("log lock");
        let line = &mut *buf;
        line.extend_from_slice(n.format(now.as_secs()).as_bytes());
        line.push(b'.');
        let micros = n.format(now.subsec_micros());
        line.extend_from_slice(&b"000000"[micros.len()..]);
        line.extend_from_slice(micros.as_bytes());
        line.push(b' ');
        line.extend_from_slice(log.request_id.as_ref().map_or(b"-", |v| v.as_bytes()));
        line.push(b' ');
        match log.client {
            SocketAddr::V4(a) => {
                for (i, octet) in a.ip().octets().into_iter().enumerate() {
                    if i > 0 {
                        line.push(b'.');
                    }
                    line.extend_from_slice(n.format(octet).as_bytes());
                }
                line.push(b':');
                line.extend_from_slice(n.format(a.port()).as_bytes());
            }
            SocketAddr::V6(a) => line.extend_from_slice(a.to_string().as_bytes()),
        }
        line.push(b' ');
        line.extend_from_slice(log.method.as_str().as_bytes());
        line.extend_from_slice(b" /s ");
        line.extend_from_slice(log.uri.path().as_bytes());
        line.push(b' ');
        line.extend_from_slice(n.format(self.status.as_u16()).as_bytes());
        line.extend_from_slice(b" 0 ");
        line.extend_from_slice(n.format(self.bytes_out).as_bytes());
        line.push(b' ');
        line.extend_from_slice(
            n.format(self.upstream_latency.as_micros() as u64)
                .as_bytes(),
        );
        line.push(b' ');
        line.extend_from_slice(
            n.format(log.started.elapsed().as_micros() as u64)
                .as_bytes(),
        );
        line.extend_from_slice(b" 0 -\n");
        if line.len() >= LOG_HIGH_WATER {
            write_log(line);
        }
    }
}
