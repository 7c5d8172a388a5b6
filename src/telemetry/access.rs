//! The access log: one line per request with its id, the client's
//! address, method, path without query, route, status, body bytes in and
//! out, latencies, whether it was replayed, why the credential was
//! renewed, our error code, and whether the answer was cut. No headers, no
//! query strings, no bodies.
//!
//! Formatted here rather than by tracing-subscriber's generic field
//! visitor, which cost a fifth of the proxy's user CPU per small request
//! (every integer through `Debug`, styling wrappers even without colours, a
//! calendar computation per line). The lines have the same shape as
//! tracing's own (timestamp, level, target; text or JSON), go through the
//! same writer so their order with other lines holds, and `RUST_LOG`
//! filters them the same way (target `authproxy::access`).

use std::cell::RefCell;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing_subscriber::fmt::MakeWriter;

use super::writer::BatchWriter;

/// One finished request.
pub struct Entry<'a> {
    pub request_id: &'a str,
    pub client: SocketAddr,
    pub method: &'a str,
    pub path: &'a str,
    pub route: &'a str,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub upstream_us: Option<u64>,
    pub total_us: u64,
    pub replayed: bool,
    pub renewal: Option<&'a str>,
    pub error: Option<&'a str>,
    pub aborted: Option<&'a str>,
    /// `h1` or `h2`, when an upstream answered.
    pub upstream_protocol: Option<&'a str>,
    pub grpc_status: Option<u16>,
}

struct Sink {
    writer: BatchWriter,
    json: bool,
    /// Whether `RUST_LOG` lets access lines through.
    enabled: OnceLock<bool>,
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Sends access lines straight to `writer` from now on. Without this (the
/// library used without [`super::init`]) they go through
/// `tracing` like every other event.
pub fn install(writer: BatchWriter, json: bool) {
    let _ = SINK.set(Sink {
        writer,
        json,
        enabled: OnceLock::new(),
    });
}

thread_local! {
    static LINE: RefCell<String> = RefCell::new(String::with_capacity(256));
    /// The formatted `YYYY-MM-DDTHH:MM:SS` of the last second seen.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

pub fn write(e: &Entry<'_>) {
    let Some(sink) = SINK.get() else {
        tracing::info!(
            target: "authproxy::access",
            request_id = e.request_id,
            client = %e.client,
            method = e.method,
            path = e.path,
            route = e.route,
            status = e.status,
            bytes_in = e.bytes_in,
            bytes_out = e.bytes_out,
            upstream_us = e.upstream_us,
            total_us = e.total_us,
            replayed = e.replayed,
            renewal = e.renewal,
            error = e.error,
            aborted = e.aborted,
            upstream_protocol = e.upstream_protocol,
            grpc_status = e.grpc_status,
            "request"
        );
        return;
    };
    // Asked once: `RUST_LOG` is read when the subscriber is installed,
    // before the first request, and never changes. Asked per line, the
    // dispatcher's check cost about 250 instructions per request.
    let enabled = sink
        .enabled
        .get_or_init(|| tracing::enabled!(target: "authproxy::access", tracing::Level::INFO));
    if !*enabled {
        return;
    }
    LINE.with_borrow_mut(|line| {
        line.clear();
        let now = SystemTime::now();
        if sink.json {
            format_json(line, e, now);
        } else {
            format_text(line, e, now);
        }
        // The batch writer never fails; it drops lines when far behind.
        let _ = sink.writer.make_writer().write_all(line.as_bytes());
    });
}

fn format_text(out: &mut String, e: &Entry<'_>, now: SystemTime) {
    push_timestamp(out, now);
    out.push_str("  INFO authproxy::access: request request_id=");
    out.push_str(e.request_id);
    out.push_str(" client=");
    push_addr(out, e.client);
    out.push_str(" method=");
    out.push_str(e.method);
    out.push_str(" path=");
    out.push_str(e.path);
    out.push_str(" route=");
    out.push_str(e.route);
    out.push_str(" status=");
    push_u64(out, e.status.into());
    out.push_str(" bytes_in=");
    push_u64(out, e.bytes_in);
    out.push_str(" bytes_out=");
    push_u64(out, e.bytes_out);
    if let Some(us) = e.upstream_us {
        out.push_str(" upstream_us=");
        push_u64(out, us);
    }
    out.push_str(" total_us=");
    push_u64(out, e.total_us);
    out.push_str(if e.replayed {
        " replayed=true"
    } else {
        " replayed=false"
    });
    for (key, value) in [
        (" renewal=", e.renewal),
        (" error=", e.error),
        (" aborted=", e.aborted),
        (" upstream_protocol=", e.upstream_protocol),
    ] {
        if let Some(v) = value {
            out.push_str(key);
            out.push_str(v);
        }
    }
    if let Some(code) = e.grpc_status {
        out.push_str(" grpc_status=");
        push_u64(out, code.into());
    }
    out.push('\n');
}

fn format_json(out: &mut String, e: &Entry<'_>, now: SystemTime) {
    out.push_str("{\"timestamp\":\"");
    push_timestamp(out, now);
    out.push_str("\",\"level\":\"INFO\",\"message\":\"request\",\"request_id\":");
    push_json_str(out, e.request_id);
    out.push_str(",\"client\":\"");
    push_addr(out, e.client);
    out.push_str("\",\"method\":");
    push_json_str(out, e.method);
    out.push_str(",\"path\":");
    push_json_str(out, e.path);
    out.push_str(",\"route\":");
    push_json_str(out, e.route);
    out.push_str(",\"status\":");
    push_u64(out, e.status.into());
    out.push_str(",\"bytes_in\":");
    push_u64(out, e.bytes_in);
    out.push_str(",\"bytes_out\":");
    push_u64(out, e.bytes_out);
    if let Some(us) = e.upstream_us {
        out.push_str(",\"upstream_us\":");
        push_u64(out, us);
    }
    out.push_str(",\"total_us\":");
    push_u64(out, e.total_us);
    out.push_str(if e.replayed {
        ",\"replayed\":true"
    } else {
        ",\"replayed\":false"
    });
    for (key, value) in [
        (",\"renewal\":", e.renewal),
        (",\"error\":", e.error),
        (",\"aborted\":", e.aborted),
        (",\"upstream_protocol\":", e.upstream_protocol),
    ] {
        if let Some(v) = value {
            out.push_str(key);
            push_json_str(out, v);
        }
    }
    if let Some(code) = e.grpc_status {
        out.push_str(",\"grpc_status\":");
        push_u64(out, code.into());
    }
    out.push_str(",\"target\":\"authproxy::access\"}\n");
}

/// `127.0.0.1:50312` (IPv4 by hand: the common case, without `fmt`),
/// `[::1]:50312`.
fn push_addr(out: &mut String, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(v4) => {
            for (i, octet) in v4.ip().octets().iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                push_u64(out, u64::from(*octet));
            }
            out.push(':');
            push_u64(out, u64::from(v4.port()));
        }
        SocketAddr::V6(_) => {
            use std::fmt::Write as _;
            let _ = write!(out, "{addr}");
        }
    }
}

/// `2026-11-23T23:20:13.123456Z`, as tracing-subscriber writes it; the
/// calendar part is computed once per second per thread.
fn push_timestamp(out: &mut String, now: SystemTime) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    SECOND.with_borrow_mut(|(cached, text)| {
        if *cached != secs {
            *text = crate::clock::rfc3339(secs);
            text.pop(); // the `Z`
            *cached = secs;
        }
        out.push_str(text);
    });
    out.push('.');
    let micros = since.subsec_micros();
    let mut digits = [b'0'; 6];
    let mut n = micros;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.push_str(std::str::from_utf8(&digits).unwrap_or("000000"));
    out.push('Z');
}

fn push_u64(out: &mut String, n: u64) {
    out.push_str(itoa::Buffer::new().format(n));
}

fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                use std::fmt::Write as _;
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn entry() -> Entry<'static> {
        Entry {
            request_id: "4bf92f3577b34da6a3ce929d0e0e4736",
            client: "127.0.0.1:50312".parse().unwrap(),
            method: "GET",
            path: "/s/a\"b",
            route: "/s/",
            status: 502,
            bytes_in: 12,
            bytes_out: 345,
            upstream_us: Some(1234),
            total_us: 0,
            replayed: true,
            renewal: Some("proactive"),
            error: Some("upstream_unreachable"),
            aborted: None,
            upstream_protocol: Some("h2"),
            grpc_status: Some(14),
        }
    }

    #[test]
    fn text_line() {
        let at = UNIX_EPOCH + Duration::from_micros(1_700_000_000_000_042);
        let mut out = String::new();
        format_text(&mut out, &entry(), at);
        assert_eq!(
            out,
            "2023-11-14T22:13:20.000042Z  INFO authproxy::access: request \
             request_id=4bf92f3577b34da6a3ce929d0e0e4736 client=127.0.0.1:50312 method=GET \
             path=/s/a\"b route=/s/ status=502 bytes_in=12 bytes_out=345 upstream_us=1234 \
             total_us=0 replayed=true renewal=proactive error=upstream_unreachable \
             upstream_protocol=h2 grpc_status=14\n"
        );
    }

    #[test]
    fn json_line_parses_with_every_field_typed() {
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut out = String::new();
        let mut e = entry();
        e.path = "/odd\\\"\u{1}";
        e.client = "[::1]:8080".parse().unwrap();
        e.aborted = Some("client");
        format_json(&mut out, &e, at);
        let v: serde_json::Value = serde_json::from_str(out.trim_end()).unwrap();
        assert_eq!(v["timestamp"], "2023-11-14T22:13:20.000000Z");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["target"], "authproxy::access");
        assert_eq!(v["message"], "request");
        assert_eq!(v["request_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(v["client"], "[::1]:8080");
        assert_eq!(v["path"], "/odd\\\"\u{1}");
        assert_eq!(v["status"], 502);
        assert_eq!(v["bytes_in"], 12);
        assert_eq!(v["bytes_out"], 345);
        assert_eq!(v["upstream_us"], 1234);
        assert_eq!(v["total_us"], 0);
        assert_eq!(v["replayed"], true);
        assert_eq!(v["renewal"], "proactive");
        assert_eq!(v["error"], "upstream_unreachable");
        assert_eq!(v["aborted"], "client");
        assert_eq!(v["upstream_protocol"], "h2");
        assert_eq!(v["grpc_status"], 14);
        assert!(out.ends_with("}\n"));
        // Absent is absent, not null.
        let mut out = String::new();
        let mut e = entry();
        (e.upstream_us, e.renewal, e.error) = (None, None, None);
        (e.upstream_protocol, e.grpc_status) = (None, None);
        format_json(&mut out, &e, at);
        let v: serde_json::Value = serde_json::from_str(out.trim_end()).unwrap();
        for key in [
            "upstream_us",
            "renewal",
            "error",
            "aborted",
            "upstream_protocol",
            "grpc_status",
        ] {
            assert!(v.get(key).is_none(), "{key} in {out}");
        }
    }

    #[test]
    fn numbers() {
        for n in [0u64, 7, 10, 99_999, u64::MAX] {
            let mut s = String::new();
            push_u64(&mut s, n);
            assert_eq!(s, n.to_string());
        }
    }
}
