//! Who may use the proxy: the inbound token, DNS-rebinding (Host) and
//! browser (Origin) checks, and refusing forward-proxy request forms.

use std::net::IpAddr;

use http::{header, Method, Request, Version};

use crate::config::ServerConfig;
use crate::error::ProxyError;

/// Run before routing, on local endpoints and proxied paths alike.
pub fn check<B>(server: &ServerConfig, req: &Request<B>) -> Result<(), ProxyError> {
    // HTTP/2 always carries `:scheme` and `:authority`, which hyper puts
    // into the URI; only in HTTP/1 does a scheme or authority there mean an
    // absolute-form target.
    let http1 = req.version() < Version::HTTP_2;
    // `GET http://other/ HTTP/1.1` and CONNECT are forward-proxy requests:
    // answering them would make this an open relay.
    if req.method() == Method::CONNECT
        || (http1 && (req.uri().scheme().is_some() || req.uri().authority().is_some()))
    {
        return Err(ProxyError::BadRequest(
            "absolute-form request targets and CONNECT are refused: authproxy is a reverse proxy; send `GET /path` to it".into(),
        ));
    }
    // In HTTP/2 `:authority` plays the role of `Host` (RFC 9113 §8.3.1);
    // checking only the header would let an h2 request skip the Host check.
    let authority = (!http1)
        .then(|| req.uri().authority().map(|a| a.as_str()))
        .flatten();
    let host = match authority {
        Some(a) => Some(a),
        None => req
            .headers()
            .get(header::HOST)
            .map(|h| {
                h.to_str()
                    .map_err(|_| ProxyError::BadRequest("Host header is not valid text".into()))
            })
            .transpose()?,
    };
    let is_health = req.uri().path() == "/_authproxy/health";

    match &server.inbound_token {
        Some(token) if !is_health => {
            let presented = req
                .headers()
                .get(header::PROXY_AUTHORIZATION)
                .and_then(|v| {
                    // The scheme name is case-insensitive (RFC 9110 §11.1):
                    // `bearer <token>` is as valid as `Bearer <token>`.
                    let v = v.as_bytes();
                    (v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer ")).then(|| &v[7..])
                });
            match presented {
                Some(p) if token.ct_eq(p) => {}
                _ => return Err(ProxyError::Unauthorized),
            }
        }
        Some(_) => {}
        None => {
            if let Some(h) = host {
                if !host_allowed(h, server) {
                    return Err(ProxyError::ForbiddenHost {
                        host: crate::text::sanitize(h, 100),
                    });
                }
            }
        }
    }

    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        let own = host.map(|h| format!("http://{h}"));
        let allowed =
            own.as_deref() == Some(origin) || server.allowed_origins.iter().any(|o| o == origin);
        if !allowed {
            return Err(ProxyError::ForbiddenOrigin {
                origin: crate::text::sanitize(origin, 100),
            });
        }
    }
    Ok(())
}

/// A `Host` is ours if it names a loopback address or name, the listen
/// address, or an entry of `server.allowed_hosts` (with or without port).
pub fn host_allowed(host_header: &str, server: &ServerConfig) -> bool {
    // Checked on every request; clients almost always send lowercase.
    let lower = if host_header.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host_header.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host_header)
    };
    let lower = lower.as_ref();
    let name = strip_port(lower);
    // Loopback names, and the address nearly every local client sends,
    // need no address parsing.
    if name == "127.0.0.1" || name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    if server
        .allowed_hosts
        .iter()
        .any(|h| *h == lower || *h == name)
    {
        return true;
    }
    match name
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    {
        Ok(ip) => ip.is_loopback() || ip == server.listen.ip(),
        Err(_) => false,
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [v6]:port
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{interpolate::ProcessEnv, Config};
    use std::path::Path;

    fn server(extra: &str) -> ServerConfig {
        let text = format!(
            "[server]\n{extra}\n[[routes]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:1/\"\n"
        );
        Config::parse(&text, Path::new("x.toml"), &ProcessEnv)
            .unwrap()
            .server
    }

    #[test]
    fn hosts() {
        let s = server("allowed_hosts = [\"proxy.internal\"]");
        for ok in [
            "127.0.0.1:8080",
            "localhost",
            "LOCALHOST:1",
            "[::1]:9",
            "app.localhost:3",
            "proxy.internal:8080",
        ] {
            assert!(host_allowed(ok, &s), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "10.0.0.1",
            "[::2]:1",
            "127.0.0.1.evil.example",
        ] {
            assert!(!host_allowed(bad, &s), "{bad}");
        }
    }
}
