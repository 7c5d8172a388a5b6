//! `server.egress_proxy` and `server.no_proxy`, checked: which HTTP proxy,
//! if any, an outbound connection to a host goes through. The connections
//! themselves are made by the upstream pool and the token client.

use std::fmt;
use std::net::IpAddr;

use base64::Engine;
use http::HeaderValue;
use percent_encoding::percent_decode_str;
use url::{Host, Url};

use super::types::is_loopback_host;
use crate::secret::Secret;

/// Where outbound connections go. The default is direct, always: a proxy
/// in the environment is used only when the config says `"env"`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EgressConfig {
    /// `egress_proxy = "env"`: the proxies below came from the environment.
    pub from_env: bool,
    /// For https destinations, reached with `CONNECT`.
    pub https: Option<ProxyEndpoint>,
    /// For http destinations, sent requests in absolute form.
    pub http: Option<ProxyEndpoint>,
    /// Hosts that go direct (`server.no_proxy`, plus `NO_PROXY` in env mode).
    pub no_proxy: Vec<NoProxy>,
}

impl EgressConfig {
    /// The proxy a connection to `host` over `scheme` (`http` or `https`)
    /// goes through; `None` means direct. Loopback destinations and
    /// `no_proxy` hosts always go direct.
    pub fn proxy_for(&self, scheme: &str, host: Host<&str>) -> Option<&ProxyEndpoint> {
        let proxy = match scheme {
            "https" => self.https.as_ref(),
            "http" => self.http.as_ref(),
            _ => None,
        }?;
        if is_loopback_host(host.clone()) || self.no_proxy.iter().any(|n| n.matches(&host)) {
            return None;
        }
        Some(proxy)
    }

    /// The proxy for `url`'s scheme and host; `None` means direct.
    pub fn proxy_for_url(&self, url: &Url) -> Option<&ProxyEndpoint> {
        self.proxy_for(url.scheme(), url.host()?)
    }
}

/// An HTTP proxy: where it listens and the `Proxy-Authorization` built
/// from its URL's userinfo. Shown (logs, errors, `check`) without the
/// userinfo.
#[derive(Clone, PartialEq)]
pub struct ProxyEndpoint {
    /// `http://host:port`, nothing else.
    url: String,
    /// `Basic base64(user:password)`, percent-decoded from the userinfo.
    authorization: Option<Secret>,
    /// The password alone, for scrubbing text that might echo it.
    password: Option<Secret>,
}

impl ProxyEndpoint {
    /// Parses `http://[user:password@]host[:port]` (port 80 if absent).
    /// The error never repeats the text, which may hold a password.
    pub fn parse(text: &str) -> Result<ProxyEndpoint, String> {
        let url = Url::parse(text.trim()).map_err(|e| format!("is not a URL ({e})"))?;
        match url.scheme() {
            "http" => {}
            "https" => {
                return Err("uses https:// (TLS to the proxy itself), which is not supported; write http://host:port (https upstreams stay end-to-end TLS through CONNECT)".into())
            }
            // Not named: the text may come from the environment.
            _ => return Err("has a scheme other than http://; only http proxies are supported (no SOCKS)".into()),
        }
        let host = match url.host() {
            Some(h) => h.to_string(),
            None => return Err("has no host".into()),
        };
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            return Err("must be only scheme, host and port (no path, query or fragment)".into());
        }
        let port = url.port_or_known_default().unwrap_or(80);
        let (authorization, password) = if url.username().is_empty() && url.password().is_none() {
            (None, None)
        } else {
            let decode = |s: &str| {
                percent_decode_str(s)
                    .decode_utf8()
                    .map(|s| s.into_owned())
                    .map_err(|_| {
                        "has a user name or password that is not UTF-8 after percent-decoding"
                            .to_string()
                    })
            };
            let user = decode(url.username())?;
            let password = decode(url.password().unwrap_or(""))?;
            let encoded =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            (
                Some(Secret::new(format!("Basic {encoded}"))),
                Some(Secret::new(password)),
            )
        };
        Ok(ProxyEndpoint {
            url: format!("http://{host}:{port}"),
            authorization,
            password,
        })
    }

    /// `http://host:port`: safe to show.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The `Proxy-Authorization` value, marked sensitive.
    pub fn authorization(&self) -> Option<HeaderValue> {
        self.authorization.as_ref().map(|a| {
            let mut v = HeaderValue::from_str(a.expose()).expect("base64 is a valid header value");
            v.set_sensitive(true);
            v
        })
    }

    pub fn has_credentials(&self) -> bool {
        self.authorization.is_some()
    }

    /// What text must never show: the password and the encoded credentials.
    pub fn secrets(&self) -> Vec<Secret> {
        let encoded = self
            .authorization
            .as_ref()
            .and_then(|a| a.expose().strip_prefix("Basic ").map(Secret::new));
        [self.password.clone(), encoded]
            .into_iter()
            .flatten()
            .collect()
    }
}

impl fmt::Debug for ProxyEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyEndpoint")
            .field("url", &self.url)
            .field("authorization", &self.authorization)
            .finish_non_exhaustive()
    }
}

/// One `no_proxy` entry, matched as curl matches `NO_PROXY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoProxy {
    /// `*`: every host.
    All,
    /// `example.com`, `.example.com` or `*.example.com`: that name and
    /// every name under it.
    Domain(String),
    /// An IP address, or a network in CIDR notation (`10.0.0.0/8`).
    Net(IpAddr, u8),
}

impl NoProxy {
    /// The error does not repeat the entry (it may come from the
    /// environment); the caller names it.
    pub fn parse(entry: &str) -> Result<NoProxy, String> {
        let e = entry.trim().to_ascii_lowercase();
        if e == "*" {
            return Ok(NoProxy::All);
        }
        let (addr, bits) = match e.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (e.as_str(), None),
        };
        let addr = addr.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = addr.parse::<IpAddr>() {
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let bits = match bits {
                None => max,
                Some(b) => match b.parse::<u8>() {
                    Ok(n) if n <= max => n,
                    _ => {
                        return Err(
                            "has a bad prefix length; write a network like \"10.0.0.0/8\"".into(),
                        )
                    }
                },
            };
            return Ok(NoProxy::Net(ip, bits));
        }
        let name = e
            .trim_start_matches("*.")
            .trim_start_matches('.')
            .trim_end_matches('.');
        let valid = !name.is_empty()
            && bits.is_none()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
        if !valid {
            return Err(
                "is not a host name, `.domain`, `*.domain`, IP address or CIDR network (no ports or paths)"
                    .into(),
            );
        }
        Ok(NoProxy::Domain(name.to_string()))
    }

    pub fn matches(&self, host: &Host<&str>) -> bool {
        match (self, host) {
            (NoProxy::All, _) => true,
            (NoProxy::Domain(d), Host::Domain(h)) => {
                let h = h.trim_end_matches('.');
                h.len() >= d.len()
                    && h[h.len() - d.len()..].eq_ignore_ascii_case(d)
                    && (h.len() == d.len() || h.as_bytes()[h.len() - d.len() - 1] == b'.')
            }
            (NoProxy::Net(net, bits), Host::Ipv4(ip)) => in_net(*net, *bits, IpAddr::V4(*ip)),
            (NoProxy::Net(net, bits), Host::Ipv6(ip)) => in_net(*net, *bits, IpAddr::V6(*ip)),
            (NoProxy::Domain(_), _) | (NoProxy::Net(..), Host::Domain(_)) => false,
        }
    }
}

fn in_net(net: IpAddr, bits: u8, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(i)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(n) & mask == u32::from(i) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(i)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(n) & mask == u128::from(i) & mask
        }
        _ => false,
    }
}

impl fmt::Display for NoProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoProxy::All => f.write_str("*"),
            NoProxy::Domain(d) => f.write_str(d),
            NoProxy::Net(ip, bits) if *bits == if ip.is_ipv4() { 32 } else { 128 } => {
                write!(f, "{ip}")
            }
            NoProxy::Net(ip, bits) => write!(f, "{ip}/{bits}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(h: &str) -> Host<String> {
        Host::parse(h).unwrap()
    }

    fn matches(entry: &str, h: &str) -> bool {
        let host = host(h);
        let host = match &host {
            Host::Domain(d) => Host::Domain(d.as_str()),
            Host::Ipv4(ip) => Host::Ipv4(*ip),
            Host::Ipv6(ip) => Host::Ipv6(*ip),
        };
        NoProxy::parse(entry).unwrap().matches(&host)
    }

    #[test]
    fn no_proxy_matches_like_curl() {
        for entry in [
            "example.com",
            ".example.com",
            "*.example.com",
            "EXAMPLE.com.",
        ] {
            assert!(matches(entry, "example.com"), "{entry}");
            assert!(matches(entry, "api.example.com"), "{entry}");
            assert!(matches(entry, "a.b.Example.COM"), "{entry}");
            assert!(!matches(entry, "notexample.com"), "{entry}");
            assert!(!matches(entry, "example.com.evil"), "{entry}");
        }
        assert!(matches("*", "anything.test"));
        assert!(matches("*", "10.1.2.3"));
        assert!(matches("10.0.0.0/8", "10.200.1.1"));
        assert!(!matches("10.0.0.0/8", "11.0.0.1"));
        assert!(matches("10.1.2.3", "10.1.2.3"));
        assert!(!matches("10.1.2.3", "10.1.2.4"));
        assert!(matches("[fd00::]/8", "[fd12::1]"));
        assert!(matches("0.0.0.0/0", "192.0.2.1"));
        // A name entry never matches an address, nor the other way round.
        assert!(!matches("10.1.2.3", "ten.example"));
        assert!(!matches("example.com", "10.1.2.3"));
    }

    #[test]
    fn no_proxy_refuses_what_it_cannot_match() {
        for bad in [
            "",
            "example.com:8080",
            "http://example.com",
            "10.0.0.0/33",
            "a b",
        ] {
            assert!(NoProxy::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn proxy_url_credentials_are_decoded_and_never_shown() {
        let p = ProxyEndpoint::parse("http://us%65r:p%40ss-SECRET@proxy.corp:3128").unwrap();
        assert_eq!(p.url(), "http://proxy.corp:3128");
        let expected = base64::engine::general_purpose::STANDARD.encode("user:p@ss-SECRET");
        assert_eq!(
            p.authorization().unwrap().to_str().unwrap(),
            format!("Basic {expected}")
        );
        assert!(p.authorization().unwrap().is_sensitive());
        let secrets: Vec<String> = p.secrets().iter().map(|s| s.expose().to_string()).collect();
        assert_eq!(secrets, ["p@ss-SECRET".to_string(), expected.clone()]);
        let debug = format!("{p:?}");
        assert!(
            !debug.contains("SECRET") && !debug.contains(&expected),
            "{debug}"
        );
        assert_eq!(
            ProxyEndpoint::parse("http://proxy").unwrap().url(),
            "http://proxy:80"
        );
        assert!(ProxyEndpoint::parse("http://[::1]:3128").unwrap().url() == "http://[::1]:3128");
        for bad in [
            "https://u:pw-SECRET@proxy:3128",
            "socks5://u:pw-SECRET@proxy:1080",
            "http://u:pw-SECRET@proxy:3128/path",
            "proxy:3128",
        ] {
            let e = ProxyEndpoint::parse(bad).unwrap_err();
            assert!(!e.contains("SECRET"), "{e}");
        }
    }

    #[test]
    fn loopback_and_no_proxy_go_direct() {
        let p = ProxyEndpoint::parse("http://proxy:3128").unwrap();
        let egress = EgressConfig {
            from_env: false,
            https: Some(p.clone()),
            http: None,
            no_proxy: vec![NoProxy::parse(".corp").unwrap()],
        };
        let url = |u: &str| Url::parse(u).unwrap();
        assert_eq!(egress.proxy_for_url(&url("https://api.example/")), Some(&p));
        assert_eq!(egress.proxy_for_url(&url("https://127.0.0.1:8443/")), None);
        assert_eq!(egress.proxy_for_url(&url("https://[::1]/")), None);
        assert_eq!(egress.proxy_for_url(&url("https://localhost/")), None);
        assert_eq!(egress.proxy_for_url(&url("https://db.corp/")), None);
        assert_eq!(
            egress.proxy_for_url(&url("http://api.example/")),
            None,
            "no proxy for http destinations"
        );
    }
}
