//! Who may use the proxy: the inbound token, DNS-rebinding (Host) and
//! browser (Origin, Fetch Metadata) checks, methods and request forms that
//! are refused outright, and the kind of each local endpoint
//! ([`LocalKind`]), which decides which of these rules apply to it.
//!
//! Browsers are told apart by Fetch Metadata: every current browser sends
//! `Sec-Fetch-Site` (and `-Mode`, `-Dest`) to loopback origins, no SDK or
//! command-line client does. A page served through any route runs in the
//! proxy's own origin, so neither the Origin check nor "same-origin" says
//! that a request is the user's: only the absence of Fetch Metadata does.

use std::net::IpAddr;

use http::{header, HeaderMap, HeaderName, Method, Request, Uri, Version};

use super::routes::Route;
use crate::config::{Authority, ServerConfig};
use crate::error::ProxyError;

/// What a local endpoint does, which decides which clients it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalKind {
    /// Says nothing secret (`health`, `ready`): any client,
    /// browsers included. (Of these, only `health` needs no inbound token.)
    ReadOnly,
    /// Operators' and scrapers' reads (`status`, `metrics`): the inbound
    /// token is also taken as `Authorization: Bearer` (what Prometheus
    /// sends); browsers only for an address the user typed (`Sec-Fetch-Site:
    /// none` with `Sec-Fetch-Mode: navigate`), never a page's request.
    OperatorRead,
    /// Changes state (pasted tokens, reload): no request that carries `Origin` or
    /// Fetch Metadata. Also every path under `/_authproxy/` not listed.
    StateChanging,
    /// The browser login (`login`, `callback`): top-level navigations, and
    /// the callback page's own same-origin POST (which must carry the
    /// single-use `state` of a login started here; the handler checks it).
    LoginFlow,
}

/// Every local endpoint's kind, by path below `/_authproxy/`; an entry
/// ending in `/` stands for one more segment (the provider's name). A new
/// endpoint adds its line here and its route in the admin router; a path
/// not listed is [`LocalKind::StateChanging`], the strictest kind.
const LOCAL_ENDPOINTS: &[(&str, LocalKind)] = &[
    ("health", LocalKind::ReadOnly),
    ("ready", LocalKind::ReadOnly),
    ("reload", LocalKind::StateChanging),
    ("status", LocalKind::OperatorRead),
    ("metrics", LocalKind::OperatorRead),
    ("login/", LocalKind::LoginFlow),
    ("callback/", LocalKind::LoginFlow),
    ("tokens/", LocalKind::StateChanging),
    ("device/", LocalKind::StateChanging),
];

/// The one local endpoint that needs no inbound token (liveness probes).
const HEALTH: &str = "/_authproxy/health";

/// The kind of the local endpoint at `path`; `None` for a proxied path.
pub fn local_kind(path: &str) -> Option<LocalKind> {
    let rest = path.strip_prefix("/_authproxy")?;
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    let rest = rest.strip_prefix('/').unwrap_or(rest);
    let listed = LOCAL_ENDPOINTS
        .iter()
        .find(|(p, _)| match p.strip_suffix('/') {
            Some(dir) => rest
                .strip_prefix(dir)
                .and_then(|r| r.strip_prefix('/'))
                .is_some_and(|name| !name.is_empty() && !name.contains('/')),
            None => rest == *p,
        });
    Some(listed.map_or(LocalKind::StateChanging, |(_, kind)| *kind))
}

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
    // An upstream that echoes a TRACE would hand the injected credential
    // to the client (and to a page that can read the answer).
    if req.method() == Method::TRACE || req.method().as_str() == "TRACK" {
        return Err(ProxyError::MethodNotAllowed {
            method: req.method().to_string(),
            path: crate::text::sanitize(req.uri().path(), 100),
        });
    }
    let host = authority(req.version(), req.uri(), req.headers())?;
    let path = req.uri().path();
    let local = local_kind(path);

    match &server.inbound_token {
        Some(token) if path != HEALTH => {
            let headers = req.headers();
            let proxy_auth = bearer(headers, &header::PROXY_AUTHORIZATION);
            // Prometheus (and most scrapers) can send `Authorization` only;
            // on proxied paths that header belongs to the upstream.
            let auth = match local {
                Some(LocalKind::OperatorRead) => bearer(headers, &header::AUTHORIZATION),
                _ => None,
            };
            let ok =
                proxy_auth.is_some_and(|p| token.ct_eq(p)) || auth.is_some_and(|p| token.ct_eq(p));
            if !ok {
                return Err(ProxyError::Unauthorized);
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
    if let Some(kind) = local {
        check_local(kind, req)?;
    }
    Ok(())
}

/// Forward-proxy mode: a `CONNECT` or absolute-form request needs the
/// inbound token (when one is set) in `Proxy-Authorization`, as `Bearer
/// <token>` or as the password of `Basic` (what clients send from
/// `http://user:<token>@127.0.0.1:8080` in `HTTPS_PROXY`; the user name
/// is not looked at).
pub fn check_proxy_authorization(
    server: &ServerConfig,
    headers: &HeaderMap,
) -> Result<(), ProxyError> {
    let Some(token) = &server.inbound_token else {
        return Ok(());
    };
    if bearer(headers, &header::PROXY_AUTHORIZATION).is_some_and(|p| token.ct_eq(p)) {
        return Ok(());
    }
    let basic = headers
        .get(header::PROXY_AUTHORIZATION)
        .map(|v| v.as_bytes())
        .filter(|v| v.len() > 6 && v[..6].eq_ignore_ascii_case(b"basic "))
        .and_then(|v| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(v[6..].trim_ascii())
                .ok()
        })
        .map(zeroize::Zeroizing::new);
    let password = basic.as_ref().and_then(|b| {
        let colon = b.iter().position(|c| *c == b':')?;
        Some(&b[colon + 1..])
    });
    if password.is_some_and(|p| token.ct_eq(p)) {
        return Ok(());
    }
    Err(ProxyError::ProxyAuthenticationRequired)
}

/// Run instead of [`check`] on a request inside a `CONNECT` tunnel (or an
/// absolute-form request rewritten for its host route), whose proxy
/// authorization was checked when the tunnel was asked for: TRACE is
/// refused as everywhere, and the request must name the tunnel's host
/// (`Host`, or `:authority` on HTTP/2), so that one tunnel cannot carry
/// requests for another host's routes past the host check.
pub fn check_forwarded<B>(target: &Authority, req: &Request<B>) -> Result<(), ProxyError> {
    if req.method() == Method::TRACE || req.method().as_str() == "TRACK" {
        return Err(ProxyError::MethodNotAllowed {
            method: req.method().to_string(),
            path: crate::text::sanitize(req.uri().path(), 100),
        });
    }
    if req.method() == Method::CONNECT {
        return Err(ProxyError::BadRequest(
            "CONNECT inside a tunnel is refused".into(),
        ));
    }
    let named = match req.uri().authority() {
        // Absolute form inside a tunnel names its host in the target.
        Some(a) => Some(a.as_str()),
        None => authority(req.version(), req.uri(), req.headers())?,
    };
    // HTTP/1.0 without Host: the tunnel's host.
    let Some(named) = named else { return Ok(()) };
    match Authority::parse_with_default(named, target.port) {
        Ok(a) if a == *target => Ok(()),
        _ => Err(ProxyError::Misdirected {
            tunnel: target.to_string(),
            host: crate::text::sanitize(named, 100),
        }),
    }
}

/// The token of `Bearer <token>` in header `name`. The scheme name is
/// case-insensitive (RFC 9110 §11.1): `bearer <token>` is as valid.
fn bearer<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<&'h [u8]> {
    let v = headers.get(name)?.as_bytes();
    (v.len() > 7 && v[..7].eq_ignore_ascii_case(b"bearer ")).then(|| &v[7..])
}

/// The authority the client addressed: `:authority` on HTTP/2 (RFC 9113
/// §8.3.1; checking only `Host` would let an h2 request skip the Host
/// check), else the one `Host` header. The Host check, the login's
/// `redirect_uri` and the login URL of a `login_required` answer all use
/// this value, so that none of them can be moved by a second header.
///
/// An HTTP/1.1 request without `Host`, and any request with two, is a bad
/// request (RFC 9112 §3.2): which one would the upstream have used?
pub fn authority<'r>(
    version: Version,
    uri: &'r Uri,
    headers: &'r HeaderMap,
) -> Result<Option<&'r str>, ProxyError> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::BadRequest(
            "more than one Host header; send exactly one".into(),
        ));
    }
    if version >= Version::HTTP_2 {
        if let Some(a) = uri.authority() {
            return Ok(Some(a.as_str()));
        }
    } else if first.is_none() && version == Version::HTTP_11 {
        return Err(ProxyError::BadRequest(
            "HTTP/1.1 request without a Host header; send `Host: <the proxy's address>`".into(),
        ));
    }
    first
        .map(|h| {
            h.to_str()
                .map_err(|_| ProxyError::BadRequest("Host header is not valid text".into()))
        })
        .transpose()
}

/// Whether the request carries Fetch Metadata (`Sec-Fetch-Site`, `-Mode`,
/// `-Dest`, `-User`, and any later `Sec-Fetch-*`): it was made by a
/// browser. Browsers alone may set these names (they are forbidden
/// request headers to scripts).
pub fn from_browser(headers: &HeaderMap) -> bool {
    headers
        .keys()
        .any(|name| name.as_str().starts_with("sec-fetch-"))
}

/// On a credential route, browser requests are refused unless the route
/// sets `allow_browsers`: a page (served by any route, so in the proxy's
/// own origin, or by any site through an `<img>`) must not use the
/// credential.
pub fn check_route(route: &Route, headers: &HeaderMap) -> Result<(), ProxyError> {
    if route.refuses_browsers && from_browser(headers) {
        return Err(ProxyError::ForbiddenBrowser {
            provider: route.provider.clone(),
            detail: format!(
                "browser requests (Sec-Fetch-* headers) are refused on route {}: a web page must not use its credential; set allow_browsers = true on that route if browsers are meant to use it",
                route.prefix.as_str()
            ),
        });
    }
    Ok(())
}

const SEC_FETCH_SITE: HeaderName = HeaderName::from_static("sec-fetch-site");
const SEC_FETCH_MODE: HeaderName = HeaderName::from_static("sec-fetch-mode");
const SEC_FETCH_DEST: HeaderName = HeaderName::from_static("sec-fetch-dest");

/// The browser rules of a local endpoint of `kind` (the Origin rule has
/// run before).
fn check_local<B>(kind: LocalKind, req: &Request<B>) -> Result<(), ProxyError> {
    let headers = req.headers();
    let fetch = from_browser(headers);
    let origin = headers.contains_key(header::ORIGIN);
    if !fetch && !origin {
        return Ok(());
    }
    let is = |name: &HeaderName, value: &str| {
        headers
            .get(name)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(value.as_bytes()))
    };
    let path = req.uri().path();
    let refuse = |why: &str| {
        Err(ProxyError::ForbiddenBrowser {
            provider: None,
            detail: format!(
                "browser request to {} refused: {why}",
                crate::text::sanitize(path, 100)
            ),
        })
    };
    match kind {
        LocalKind::ReadOnly => Ok(()),
        LocalKind::OperatorRead => {
            if !origin && is(&SEC_FETCH_SITE, "none") && is(&SEC_FETCH_MODE, "navigate") {
                Ok(())
            } else {
                refuse("a web page may not read it; open it by typing its address, or use curl")
            }
        }
        LocalKind::StateChanging => refuse(
            "endpoints that change state take no requests from browsers (Origin or Sec-Fetch-* headers); use curl or the CLI",
        ),
        LocalKind::LoginFlow if !fetch => Ok(()),
        LocalKind::LoginFlow => {
            if req.method() == Method::POST {
                // The callback page posts the token to itself.
                if is(&SEC_FETCH_SITE, "same-origin") {
                    Ok(())
                } else {
                    refuse("only the callback page itself may post the login")
                }
            } else if is(&SEC_FETCH_MODE, "navigate")
                && headers
                    .get(SEC_FETCH_DEST)
                    .is_none_or(|d| d.as_bytes().eq_ignore_ascii_case(b"document"))
            {
                Ok(())
            } else {
                // A fetch, an image or a frame could only start logins
                // nobody finishes (and push out the user's own).
                refuse("the login pages open in a tab of their own (a top-level navigation)")
            }
        }
    }
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

    #[test]
    fn local_kinds() {
        use LocalKind::*;
        for (path, kind) in [
            ("/_authproxy/health", Some(ReadOnly)),
            ("/_authproxy/status", Some(OperatorRead)),
            ("/_authproxy/metrics", Some(OperatorRead)),
            ("/_authproxy/login/ready", Some(LoginFlow)),
            ("/_authproxy/callback/ready", Some(LoginFlow)),
            ("/_authproxy/tokens/ready", Some(StateChanging)),
            // Not listed: the strictest kind.
            ("/_authproxy/login", Some(StateChanging)),
            ("/_authproxy/login/", Some(StateChanging)),
            ("/_authproxy/login/a/b", Some(StateChanging)),
            ("/_authproxy/status/x", Some(StateChanging)),
            ("/_authproxy/", Some(StateChanging)),
            ("/_authproxy", Some(StateChanging)),
            ("/_authproxyx/status", None),
            ("/api/_authproxy/status", None),
        ] {
            assert_eq!(local_kind(path), kind, "{path}");
        }
    }
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
