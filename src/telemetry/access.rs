//! The access log: one line per request with method, path without query,
//! route, status, latencies and our error code. No headers, no query
//! strings, no bodies.
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
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing_subscriber::fmt::MakeWriter;

use super::writer::BatchWriter;

/// One finished request.
pub struct Entry<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub route: &'a str,
    pub status: u16,
    pub upstream_us: Option<u64>,
    pub total_us: u64,
    pub replayed: bool,
    pub error: Option<&'a str>,
}

struct Sink {
    writer: BatchWriter,
    json: bool,
}

static SINK: OnceLock<Sink> = OnceLock::new();

/// Sends access lines straight to `writer` from now on. Without this (the
/// library used without [`super::init`]) they go through
/// `tracing` like every other event.
pub fn install(writer: BatchWriter, json: bool) {
    let _ = SINK.set(Sink { writer, json });
}

thread_local! {
    static LINE: RefCell<String> = RefCell::new(String::with_capacity(256));
    /// The formatted `YYYY-MM-DDTHH:MM:SS` of the last second seen.
    static SECOND: RefCell<(u64, String)> = const { RefCell::new((u64::MAX, String::new())) };
}

pub fn write(e: &Entry<'_>) {
    if !tracing::enabled!(target: "authproxy::access", tracing::Level::INFO) {
        return;
    }
    let Some(sink) = SINK.get() else {
        tracing::info!(
            target: "authproxy::access",
            method = e.method,
            path = e.path,
            route = e.route,
            status = e.status,
            upstream_us = e.upstream_us,
            total_us = e.total_us,
            replayed = e.replayed,
            error = e.error,
            "request"
        );
        return;
    };
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
    out.push_str("  INFO authproxy::access: request method=");
    out.push_str(e.method);
    out.push_str(" path=");
    out.push_str(e.path);
    out.push_str(" route=");
    out.push_str(e.route);
    out.push_str(" status=");
    push_u64(out, e.status.into());
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
    if let Some(code) = e.error {
        out.push_str(" error=");
        out.push_str(code);
    }
    out.push('\n');
}

fn format_json(out: &mut String, e: &Entry<'_>, now: SystemTime) {
    out.push_str("{\"timestamp\":\"");
    push_timestamp(out, now);
    out.push_str("\",\"level\":\"INFO\",\"message\":\"request\",\"method\":");
    push_json_str(out, e.method);
    out.push_str(",\"path\":");
    push_json_str(out, e.path);
    out.push_str(",\"route\":");
    push_json_str(out, e.route);
    out.push_str(",\"status\":");
    push_u64(out, e.status.into());
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
    if let Some(code) = e.error {
        out.push_str(",\"error\":");
        push_json_str(out, code);
    }
    out.push_str(",\"target\":\"authproxy::access\"}\n");
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
            method: "GET",
            path: "/s/a\"b",
            route: "/s/",
            status: 502,
            upstream_us: Some(1234),
            total_us: 0,
            replayed: true,
            error: Some("upstream_unreachable"),
        }
    }

    #[test]
    fn text_line() {
        let at = UNIX_EPOCH + Duration::from_micros(1_700_000_000_000_042);
        let mut out = String::new();
        format_text(&mut out, &entry(), at);
        assert_eq!(
            out,
            "2023-11-14T22:13:20.000042Z  INFO authproxy::access: request method=GET path=/s/a\"b \
             route=/s/ status=502 upstream_us=1234 total_us=0 replayed=true error=upstream_unreachable\n"
        );
    }

    #[test]
    fn json_line_parses_with_every_field() {
        let at = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut out = String::new();
        let mut e = entry();
        e.path = "/odd\\\"\u{1}";
        format_json(&mut out, &e, at);
        let v: serde_json::Value = serde_json::from_str(out.trim_end()).unwrap();
        assert_eq!(v["timestamp"], "2023-11-14T22:13:20.000000Z");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["target"], "authproxy::access");
        assert_eq!(v["message"], "request");
        assert_eq!(v["path"], "/odd\\\"\u{1}");
        assert_eq!(v["status"], 502);
        assert_eq!(v["upstream_us"], 1234);
        assert_eq!(v["total_us"], 0);
        assert_eq!(v["replayed"], true);
        assert_eq!(v["error"], "upstream_unreachable");
        assert!(out.ends_with("}\n"));
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
