//! Host names and `host:port` authorities as clients send them to a
//! forward proxy (`CONNECT api.example:443`, `GET http://api.example/`)
//! and as the config names them (`routes[].host`, `forward_proxy.tunnel`).
//!
//! Untrusted input (a `CONNECT` target is whatever a client wrote), so the
//! grammar is strict and small, with no normalisation that could make two
//! spellings of one host look different to two checks: a DNS name is
//! letters, digits and `-` in dot-separated labels (RFC 1123; IDNs arrive
//! as `xn--` punycode), compared in lower case, one trailing dot dropped;
//! an IP address is a dotted-quad IPv4 (no `127.1`, no octal) or an IPv6
//! address, in brackets where a port may follow. `fuzz/fuzz_targets/
//! fuzz_authority.rs` checks that whatever parses prints back to text
//! that parses to the same value, and that the text is valid in an HTTP
//! URI and a TLS server name.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A checked host: a DNS name (lower case, no trailing dot) or an IP
/// address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Host {
    Name(String),
    Ip(IpAddr),
}

/// Longest DNS name (RFC 1035 §2.3.4, without the trailing dot).
const MAX_NAME: usize = 253;
/// Longest DNS label.
const MAX_LABEL: usize = 63;

impl Host {
    /// A host as written without a port: `api.example`, `API.Example.`,
    /// `127.0.0.1`, `[::1]` or `::1`.
    pub fn parse(text: &str) -> Result<Host, &'static str> {
        if let Some(inner) = text.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or("has `[` without a closing `]`")?;
            return parse_v6(inner).map(|ip| Host::Ip(IpAddr::V6(ip)));
        }
        if text.contains(':') {
            return parse_v6(text).map(|ip| Host::Ip(IpAddr::V6(ip)));
        }
        if text.is_empty() {
            return Err("is empty");
        }
        if text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            // Only the dotted quad: `127.1`, `0x7f.1` and friends, which
            // resolvers take for addresses, are not names either.
            return text
                .parse::<Ipv4Addr>()
                .map(|ip| Host::Ip(IpAddr::V4(ip)))
                .map_err(|_| "is not a valid IPv4 address (write all four parts, e.g. 127.0.0.1)");
        }
        parse_name(text).map(Host::Name)
    }

    /// Whether this is a loopback address or name (`localhost`,
    /// `*.localhost`, `127.0.0.0/8`, `::1`).
    pub fn is_loopback(&self) -> bool {
        match self {
            Host::Name(n) => n == "localhost" || n.ends_with(".localhost"),
            Host::Ip(ip) => ip.is_loopback(),
        }
    }

    /// The name as a certificate's subject alternative name holds it (an
    /// IPv6 address without brackets).
    pub fn san(&self) -> String {
        match self {
            Host::Name(n) => n.clone(),
            Host::Ip(ip) => ip.to_string(),
        }
    }
}

/// As in a URI's authority: IPv6 in brackets.
impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(IpAddr::V4(ip)) => write!(f, "{ip}"),
            Host::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
        }
    }
}

fn parse_v6(text: &str) -> Result<Ipv6Addr, &'static str> {
    // Zone ids (`%eth0`) have no meaning beyond this machine.
    text.parse::<Ipv6Addr>()
        .map_err(|_| "is not a valid IPv6 address")
}

fn parse_name(text: &str) -> Result<String, &'static str> {
    let name = text.strip_suffix('.').unwrap_or(text);
    if name.is_empty() || name.len() > MAX_NAME {
        return Err("is not a valid host name (1 to 253 characters)");
    }
    let mut last = "";
    for label in name.split('.') {
        let bytes = label.as_bytes();
        if bytes.is_empty() || bytes.len() > MAX_LABEL {
            return Err("is not a valid host name (empty label, or one longer than 63 characters)");
        }
        if !bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        {
            return Err("is not a valid host name (letters, digits, `-` and `.` only; write international names in punycode, xn--…)");
        }
        if bytes[0] == b'-' || bytes[bytes.len() - 1] == b'-' {
            return Err("is not a valid host name (a label starts or ends with `-`)");
        }
        last = label;
    }
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Err("is not a valid host name (the last label is all digits, like an address)");
    }
    Ok(name.to_ascii_lowercase())
}

/// A `host:port` target (authority form, RFC 9112 §3.2.3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Authority {
    pub host: Host,
    pub port: u16,
}

impl Authority {
    /// A `CONNECT` target: `host:port`, the port required (RFC 9110
    /// §9.3.6), IPv6 in brackets.
    pub fn parse_connect(text: &str) -> Result<Authority, &'static str> {
        let (host, port) = split_port(text)?;
        let port = port.ok_or("has no port; CONNECT needs host:port, e.g. api.example:443")?;
        Ok(Authority {
            host: Host::parse(host)?,
            port,
        })
    }

    /// `host[:port]` with `default` as the port when none is given.
    pub fn parse_with_default(text: &str, default: u16) -> Result<Authority, &'static str> {
        let (host, port) = split_port(text)?;
        Ok(Authority {
            host: Host::parse(host)?,
            port: port.unwrap_or(default),
        })
    }
}

impl fmt::Display for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Splits `host[:port]`; a bare IPv6 address (more than one `:`, no
/// brackets) has no port.
pub fn split_port(text: &str) -> Result<(&str, Option<u16>), &'static str> {
    let (host, port) = if text.starts_with('[') {
        match text.find(']') {
            Some(end) => match &text[end + 1..] {
                "" => (&text[..=end], None),
                rest => (
                    &text[..=end],
                    Some(
                        rest.strip_prefix(':')
                            .ok_or("has text after `]` that is not `:port`")?,
                    ),
                ),
            },
            None => return Err("has `[` without a closing `]`"),
        }
    } else {
        match text.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => (text, None),
            Some((h, p)) => (h, Some(p)),
            None => (text, None),
        }
    };
    let port = port.map(parse_port).transpose()?;
    Ok((host, port))
}

fn parse_port(text: &str) -> Result<u16, &'static str> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err("has a port that is not a number from 1 to 65535");
    }
    match text.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err("has a port that is not a number from 1 to 65535"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(
            Host::parse("API.Example.").unwrap(),
            Host::Name("api.example".into())
        );
        assert_eq!(Host::parse("localhost").unwrap().to_string(), "localhost");
        assert_eq!(Host::parse("[::1]").unwrap().to_string(), "[::1]");
        assert_eq!(Host::parse("::1").unwrap(), Host::parse("[::1]").unwrap());
        assert_eq!(Host::parse("127.0.0.1").unwrap().san(), "127.0.0.1");
        assert!(Host::parse("xn--bcher-kva.example").is_ok());
        for bad in [
            "",
            ".",
            "a..b",
            "-a.example",
            "a-.example",
            "a_b.example",
            "a b",
            "127.1",
            "1.2.3.4.5",
            "example.123",
            "0x7f.0.0.1",
            "bücher.example",
            "[::1",
            "[127.0.0.1]",
            "fe80::1%eth0",
            "a.example/x",
            "a.example@b",
            &"a".repeat(64),
            &format!("{}.example", "a.".repeat(130)),
        ] {
            assert!(Host::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn connect_targets() {
        let a = Authority::parse_connect("Api.Example:443").unwrap();
        assert_eq!(a.to_string(), "api.example:443");
        let a = Authority::parse_connect("[::1]:8443").unwrap();
        assert_eq!(a.host, Host::Ip("::1".parse().unwrap()));
        assert_eq!(a.to_string(), "[::1]:8443");
        for bad in [
            "api.example",
            "api.example:",
            "api.example:0",
            "api.example:65536",
            "api.example:+443",
            "api.example:0443x",
            "api.example:000443",
            ":443",
            "::1:443",
            "[::1]443",
            "[::1]:",
            "user@api.example:443",
            "api.example:443/x",
        ] {
            assert!(Authority::parse_connect(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            Authority::parse_with_default("api.example", 443)
                .unwrap()
                .port,
            443
        );
        assert_eq!(
            Authority::parse_with_default("[::1]", 80)
                .unwrap()
                .to_string(),
            "[::1]:80"
        );
    }
}
