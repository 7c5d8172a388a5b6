//! Authorization server discovery: where an issuer publishes its metadata
//! (OpenID Connect Discovery 1.0 §4, RFC 8414 §3), and the checks that
//! make the metadata usable (RFC 8414 §3.3: the `issuer` in it must be the
//! one asked for, character for character).
//!
//! The document is fetched by [`TokenClient::discover`], with the token
//! client's redirect rule (none followed), size limit and retries.

use std::fmt;
use std::time::Duration;

use url::Url;

use super::client::{describe_reqwest, read_limited, TokenClient};
use crate::http::host::is_loopback_host;
use crate::text::sanitize;

/// What a provider needs of its server's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    pub issuer: String,
    pub token_endpoint: Option<Url>,
    pub authorization_endpoint: Option<Url>,
    pub device_authorization_endpoint: Option<Url>,
}

/// The largest metadata document read (Entra's is about 2 KiB, Google's
/// 1.3 KiB; Okta's with every option listed about 5 KiB).
const MAX_DOCUMENT: usize = 256 * 1024;

/// Checks an `issuer` as configured: an https URL (http only to loopback or
/// with `allow_http`) without query or fragment (RFC 8414 §2).
pub fn check_issuer(text: &str, allow_http: bool) -> Result<Url, String> {
    // The text is the config's (or a fuzzer's): shown without control
    // characters, as every message that reaches the log and status.
    let url = Url::parse(text)
        .map_err(|e| format!("`{}` is not a valid URL ({e})", sanitize(text, 200)))?;
    endpoint_allowed(&url, allow_http)?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!(
            "`{}` holds user:password@; an issuer is a plain https URL",
            url.host_str().unwrap_or("")
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "`{}` has a query or fragment; an issuer is a plain https URL (RFC 8414 §2)",
            sanitize(text, 200)
        ));
    }
    Ok(url)
}

/// Where the metadata of `issuer` may be, in the order they are tried:
/// OpenID Connect's `<issuer>/.well-known/openid-configuration`, then
/// `<issuer>/.well-known/oauth-authorization-server` (how Okta's custom
/// servers publish it), then, for an issuer with a path, RFC 8414's own
/// form with the well-known part inserted before the path.
pub fn well_known_urls(issuer: &str) -> Vec<String> {
    // Built from the parsed URL, so every place is on the issuer's origin
    // whatever the spelling (case, `\\` for `/`, default port).
    let Ok(url) = Url::parse(issuer) else {
        return Vec::new();
    };
    let origin = url.origin().ascii_serialization();
    let path = url.path().trim_end_matches('/');
    let mut urls = vec![
        format!("{origin}{path}/.well-known/openid-configuration"),
        format!("{origin}{path}/.well-known/oauth-authorization-server"),
    ];
    if !path.is_empty() {
        urls.push(format!(
            "{origin}/.well-known/oauth-authorization-server{path}"
        ));
    }
    urls
}

/// Parses a metadata document fetched for `issuer`. Endpoint URLs must be
/// https (http only to loopback or with `allow_http`, like configured
/// ones) and have no fragment.
pub fn parse_metadata(body: &[u8], issuer: &str, allow_http: bool) -> Result<Metadata, String> {
    let doc: serde_json::Value = serde_json::from_slice(body).map_err(|_| {
        format!(
            "not a JSON document ({} bytes{})",
            body.len(),
            if body.trim_ascii_start().starts_with(b"<") {
                ", looks like HTML"
            } else {
                ""
            }
        )
    })?;
    let doc = doc.as_object().ok_or("not a JSON object")?;
    let said = match doc.get("issuer") {
        Some(serde_json::Value::String(s)) => s.as_str(),
        Some(_) => return Err("`issuer` is not a string".into()),
        None => return Err("has no `issuer`".into()),
    };
    if said != issuer {
        let hint = if said.trim_end_matches('/') == issuer.trim_end_matches('/') {
            "; they differ in a trailing slash: write `issuer` exactly as the server does"
        } else {
            ""
        };
        return Err(format!(
            "names the issuer `{}`, not `{}` (RFC 8414 §3.3: such a document must not be used){hint}",
            sanitize(said, 200),
            sanitize(issuer, 200)
        ));
    }
    let endpoint = |name: &str| -> Result<Option<Url>, String> {
        let text = match doc.get(name) {
            None | Some(serde_json::Value::Null) => return Ok(None),
            Some(serde_json::Value::String(s)) => s,
            Some(_) => return Err(format!("`{name}` is not a string")),
        };
        let url = Url::parse(text).map_err(|e| format!("`{name}` is not a valid URL ({e})"))?;
        endpoint_allowed(&url, allow_http).map_err(|e| format!("`{name}` {e}"))?;
        if url.fragment().is_some() {
            return Err(format!("`{name}` has a fragment"));
        }
        Ok(Some(url))
    };
    Ok(Metadata {
        issuer: issuer.to_string(),
        token_endpoint: endpoint("token_endpoint")?,
        authorization_endpoint: endpoint("authorization_endpoint")?,
        device_authorization_endpoint: endpoint("device_authorization_endpoint")?,
    })
}

/// https, or http to a loopback host or with `allow_http`: the rule for
/// every URL a credential is sent to.
fn endpoint_allowed(url: &Url, allow_http: bool) -> Result<(), String> {
    let host = url.host().ok_or_else(|| format!("`{url}` has no host"))?;
    match url.scheme() {
        "https" => Ok(()),
        "http" if allow_http || is_loopback_host(host) => Ok(()),
        "http" => Err(format!(
            "`{}` uses plain http to a non-loopback host; the server must use https (or set allow_http = true if the network is trusted)",
            sanitize(url.as_str(), 200)
        )),
        other => Err(format!("uses the scheme `{}`; only https is supported", sanitize(other, 20))),
    }
}

/// Why no metadata could be had: every place tried, and what each said.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct DiscoveryError {
    pub issuer: String,
    /// `(url, what went wrong)`, in the order tried (of the last round).
    pub tried: Vec<(String, String)>,
    /// Worth trying again later (a 5xx, a timeout, the network).
    pub transient: bool,
}

impl fmt::Display for DiscoveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "discovery of issuer {} failed:", self.issuer)?;
        for (i, (url, why)) in self.tried.iter().enumerate() {
            write!(f, "{} {url}: {why}", if i == 0 { "" } else { ";" })?;
        }
        Ok(())
    }
}

/// What one URL gave.
enum Outcome {
    Found(Box<Metadata>),
    /// Not there or not usable; the next place may have it.
    Miss(String),
    /// A passing fault.
    Fault(String),
}

impl TokenClient {
    /// Fetches and checks the metadata of `issuer`: the well-known places
    /// in turn, the first usable document wins. A round that met a passing
    /// fault and found nothing is tried again, with the token client's
    /// retry policy.
    pub async fn discover(
        &self,
        issuer: &str,
        allow_http: bool,
        timeout: Duration,
    ) -> Result<Metadata, DiscoveryError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut tried = Vec::new();
            let mut transient = false;
            for url in well_known_urls(issuer) {
                match self.fetch_metadata(&url, issuer, allow_http, timeout).await {
                    Outcome::Found(m) => {
                        tracing::info!(issuer, document = %url, token_endpoint = ?m.token_endpoint.as_ref().map(Url::as_str), "discovered the authorization server's endpoints");
                        return Ok(*m);
                    }
                    Outcome::Miss(why) => tried.push((url, why)),
                    Outcome::Fault(why) => {
                        transient = true;
                        tried.push((url, why));
                    }
                }
            }
            let error = DiscoveryError {
                issuer: issuer.to_string(),
                tried,
                transient,
            };
            if !transient || attempt >= self.retry.attempts {
                return Err(error);
            }
            let delay = self.jittered_backoff(attempt);
            tracing::warn!(attempt, error = %error, retry_in_ms = delay.as_millis() as u64, "discovery failed, retrying");
            tokio::time::sleep(delay).await;
        }
    }

    async fn fetch_metadata(
        &self,
        url: &str,
        issuer: &str,
        allow_http: bool,
        timeout: Duration,
    ) -> Outcome {
        let response = self
            .http
            .get(url)
            .timeout(timeout)
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) if e.is_timeout() => {
                return Outcome::Fault(format!("no answer within {:.1}s", timeout.as_secs_f64()))
            }
            Err(e) => return Outcome::Fault(describe_reqwest(&e)),
        };
        let status = response.status();
        if status.is_redirection() {
            return Outcome::Miss(format!(
                "answered with a redirect (HTTP {}); redirects are never followed",
                status.as_u16()
            ));
        }
        if status.is_server_error() || status.as_u16() == 429 || status.as_u16() == 408 {
            return Outcome::Fault(format!("HTTP {}", status.as_u16()));
        }
        if !status.is_success() {
            return Outcome::Miss(format!("HTTP {}", status.as_u16()));
        }
        let body = match read_limited(response, MAX_DOCUMENT, timeout).await {
            Ok(b) => b,
            Err(e) => return Outcome::Fault(e.to_string()),
        };
        match parse_metadata(body.as_slice(), issuer, allow_http) {
            Ok(m) => Outcome::Found(Box::new(m)),
            Err(why) => Outcome::Miss(format!("the document {why}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_places_for_issuers_with_and_without_a_path() {
        assert_eq!(
            well_known_urls("https://as.example"),
            [
                "https://as.example/.well-known/openid-configuration",
                "https://as.example/.well-known/oauth-authorization-server",
            ]
        );
        assert_eq!(
            well_known_urls("https://login.example.com/tenant/v2.0"),
            [
                "https://login.example.com/tenant/v2.0/.well-known/openid-configuration",
                "https://login.example.com/tenant/v2.0/.well-known/oauth-authorization-server",
                "https://login.example.com/.well-known/oauth-authorization-server/tenant/v2.0",
            ]
        );
        // A trailing slash does not double.
        assert_eq!(
            well_known_urls("https://x.example/oauth2/default/")[0],
            "https://x.example/oauth2/default/.well-known/openid-configuration"
        );
    }

    #[test]
    fn metadata_is_used_only_for_the_issuer_asked_for() {
        let doc = br#"{"issuer":"https://as.example","token_endpoint":"https://as.example/token",
            "authorization_endpoint":"https://as.example/auth",
            "device_authorization_endpoint":"https://as.example/device"}"#;
        let m = parse_metadata(doc, "https://as.example", false).unwrap();
        assert_eq!(
            m.token_endpoint.unwrap().as_str(),
            "https://as.example/token"
        );
        assert_eq!(
            m.device_authorization_endpoint.unwrap().as_str(),
            "https://as.example/device"
        );
        let err = parse_metadata(doc, "https://evil.example", false).unwrap_err();
        assert!(err.contains("not `https://evil.example`"), "{err}");
        let err = parse_metadata(doc, "https://as.example/", false).unwrap_err();
        assert!(err.contains("trailing slash"), "{err}");
    }

    #[test]
    fn endpoints_follow_the_https_rule() {
        let plain =
            br#"{"issuer":"https://as.example","token_endpoint":"http://as.example/token"}"#;
        let err = parse_metadata(plain, "https://as.example", false).unwrap_err();
        assert!(
            err.contains("token_endpoint") && err.contains("plain http"),
            "{err}"
        );
        assert!(parse_metadata(plain, "https://as.example", true).is_ok());
        let local = br#"{"issuer":"http://127.0.0.1:9","token_endpoint":"http://127.0.0.1:9/t"}"#;
        assert!(parse_metadata(local, "http://127.0.0.1:9", false).is_ok());
        let fragment =
            br#"{"issuer":"https://a.example","token_endpoint":"https://a.example/t#x"}"#;
        assert!(parse_metadata(fragment, "https://a.example", false).is_err());
        let none = br#"{"issuer":"https://a.example"}"#;
        assert_eq!(
            parse_metadata(none, "https://a.example", false)
                .unwrap()
                .token_endpoint,
            None
        );
        assert!(parse_metadata(b"<html>", "https://a.example", false)
            .unwrap_err()
            .contains("HTML"));
        assert!(parse_metadata(b"[]", "https://a.example", false).is_err());
    }

    #[test]
    fn issuers_are_https_urls_without_query() {
        assert!(check_issuer("https://login.example.com/t/v2.0", false).is_ok());
        assert!(check_issuer("http://127.0.0.1:8080", false).is_ok());
        assert!(check_issuer("http://as.example", false).is_err());
        assert!(check_issuer("http://as.example", true).is_ok());
        assert!(check_issuer("https://as.example/?tenant=x", false).is_err());
        assert!(check_issuer("not a url", false).is_err());
    }
}
