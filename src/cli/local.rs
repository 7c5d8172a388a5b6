//! Talking to a running proxy's local endpoints (`health`, `reload`):
//! where it listens, an HTTP client that goes straight there, and failures
//! said plainly.

use std::path::Path;
use std::time::Duration;

use crate::config::client::ClientSettings;

/// A client for loopback calls: no proxy from the environment (an
/// `HTTP_PROXY` would take the probe elsewhere), no redirects.
pub(super) fn client(timeout: Duration) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(timeout)
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())
}

/// The listen address and inbound token of the config at `path`; on
/// failure prints why.
pub(super) fn settings(path: &Path, command: &str) -> Option<ClientSettings> {
    match ClientSettings::load(path) {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!("authproxy {command}: cannot tell where the proxy listens: {e}");
            None
        }
    }
}

/// A failed request, said plainly: "nothing listens on ADDR (connection
/// refused): is authproxy running?" rather than a chain of library
/// errors.
pub(super) fn describe(e: &reqwest::Error, url: &str) -> String {
    let addr = url::Url::parse(url)
        .ok()
        .and_then(|u| {
            let host = u.host_str()?.to_string();
            Some(format!("{host}:{}", u.port_or_known_default()?))
        })
        .unwrap_or_else(|| url.to_string());
    if io_kind(e) == Some(std::io::ErrorKind::ConnectionRefused) {
        return format!("nothing listens on {addr} (connection refused): is authproxy running?");
    }
    if e.is_timeout() {
        return format!(
            "{url}: no answer within the time allowed (is the proxy overloaded or stopped?)"
        );
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    format!("{url}: {text}")
}

fn io_kind(e: &reqwest::Error) -> Option<std::io::ErrorKind> {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        source = s.source();
    }
    None
}

/// `Proxy-Authorization: Bearer <token>` when the config sets one.
pub(super) fn with_token(
    request: reqwest::RequestBuilder,
    settings: Option<&ClientSettings>,
) -> reqwest::RequestBuilder {
    match settings.and_then(|s| s.inbound_token.as_ref()) {
        Some(token) => {
            let text = zeroize::Zeroizing::new(format!("Bearer {}", token.expose()));
            // The config check refuses tokens that are not header-safe.
            let mut value = http::HeaderValue::from_str(&text)
                .unwrap_or_else(|_| http::HeaderValue::from_static(""));
            value.set_sensitive(true);
            request.header(http::header::PROXY_AUTHORIZATION, value)
        }
        None => request,
    }
}
