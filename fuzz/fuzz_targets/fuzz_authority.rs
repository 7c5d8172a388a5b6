//! Forward-proxy targets: `CONNECT` authorities, hosts, and the
//! `forward_proxy.tunnel` patterns they are matched against. A `CONNECT`
//! target is whatever a client wrote, and decides whether the proxy
//! terminates, splices or refuses: two spellings of one host must never
//! look like two hosts to two checks.
//!
//! Input: up to two lines. The first is fed to `Host::parse`,
//! `Authority::parse_connect`, `Authority::parse_with_default` and
//! `TunnelPattern::parse`; the second (if any) is a `CONNECT` target
//! matched against the first line as a tunnel pattern.
//!
//! Checked besides "no panic":
//! * what parses prints back to text that parses to the same value
//!   (a fixed point: no second spelling is produced);
//! * that text is a valid `http::uri::Authority` with the same port, and
//!   a host name is lower case ASCII letters, digits, `-` and `.` only;
//! * a name parses the same in upper case (hosts compare without case);
//! * `CONNECT` ports are 1..=65535;
//! * a tunnel pattern `*.suffix` matches only names strictly below
//!   `suffix`, an exact pattern only its own host, and a pattern with a
//!   port only that port.
#![no_main]

use authproxy::config::{Authority, Host, TunnelPattern};
use libfuzzer_sys::fuzz_target;

fn check_host(h: &Host) {
    let printed = h.to_string();
    assert_eq!(
        Host::parse(&printed).as_ref(),
        Ok(h),
        "{h:?} prints as {printed:?}, which parses differently"
    );
    if let Host::Name(n) = h {
        assert!(
            n.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'),
            "name {n:?} has other characters"
        );
        assert!(
            !n.ends_with('.') && !n.is_empty() && n.len() <= 253,
            "{n:?}"
        );
        assert_eq!(Host::parse(&n.to_ascii_uppercase()).as_ref(), Ok(h));
    }
}

fn check_authority(a: &Authority) {
    assert_ne!(a.port, 0);
    check_host(&a.host);
    let printed = a.to_string();
    assert_eq!(
        Authority::parse_connect(&printed).as_ref(),
        Ok(a),
        "{a:?} prints as {printed:?}, which parses differently"
    );
    let uri: http::uri::Authority = printed
        .parse()
        .unwrap_or_else(|e| panic!("{printed:?} is not a URI authority: {e}"));
    assert_eq!(uri.port_u16(), Some(a.port), "{printed:?}");
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.splitn(2, '\n');
    let first = lines.next().unwrap_or("");
    let second = lines.next();

    if let Ok(h) = Host::parse(first) {
        check_host(&h);
    }
    if let Ok(a) = Authority::parse_connect(first) {
        check_authority(&a);
        // With its port given, the default does not matter.
        assert_eq!(Authority::parse_with_default(first, 443).as_ref(), Ok(&a));
    }
    if let Ok(a) = Authority::parse_with_default(first, 443) {
        check_authority(&a);
    }

    let Some(target) = second else {
        return;
    };
    let (Ok(pattern), Ok(target)) = (
        TunnelPattern::parse(first),
        Authority::parse_connect(target),
    ) else {
        return;
    };
    if !pattern.matches(&target) {
        return;
    }
    let written = pattern.as_str();
    let (host_part, port_part) = match written.strip_suffix(":*") {
        Some(h) => (h, None),
        None => match authority_split(written) {
            Some((h, p)) => (h, Some(p)),
            None => (written, Some(443)),
        },
    };
    if let Some(port) = port_part {
        assert_eq!(target.port, port, "{written:?} matched {target}");
    }
    match host_part.strip_prefix("*.") {
        Some(suffix) => {
            let Host::Name(name) = &target.host else {
                panic!("{written:?} matched an address: {target}");
            };
            let Ok(Host::Name(suffix)) = Host::parse(suffix) else {
                panic!("{written:?} parsed but its suffix does not");
            };
            assert!(
                name.len() > suffix.len() + 1 && name.ends_with(&format!(".{suffix}")),
                "{written:?} matched {name:?}, not strictly below {suffix:?}"
            );
        }
        None => assert_eq!(
            Host::parse(host_part).as_ref(),
            Ok(&target.host),
            "{written:?} matched {target}"
        ),
    }
});

/// `host:port` with a numeric port (IPv6 in brackets); `None` without one.
fn authority_split(text: &str) -> Option<(&str, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    if host.contains(':') && !host.ends_with(']') {
        return None; // a bare IPv6 address
    }
    Some((host, port.parse().ok()?))
}
