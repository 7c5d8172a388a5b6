//! Talks to token endpoints: builds the grant request (form or JSON body,
//! client credentials in the body or as HTTP Basic), never follows
//! redirects, retries passing faults a bounded number of times.
//!
//! Takes a [`TokenRequest`], a description of one request, rather than a
//! provider's whole configuration: this module knows the protocol only.

use std::time::{Duration, SystemTime};

use std::collections::BTreeMap;

use base64::Engine;
use rand::Rng;
use url::Url;
use zeroize::{Zeroize, Zeroizing};

use super::error::TokenError;
use super::token::{error_page_text, parse_error_answer, parse_token_answer, TokenSet};
use crate::clock::unix_now;
use crate::secret::{Secret, SecretBuf};

/// A grant the token endpoint can run, with what it needs.
#[derive(Debug, Clone, Copy)]
pub enum Grant<'a> {
    /// RFC 6749 §4.3: resource owner password credentials.
    Password {
        username: &'a Secret,
        password: &'a Secret,
    },
    /// RFC 6749 §4.4.
    ClientCredentials,
    /// RFC 6749 §6 refresh with this refresh token.
    Refresh(&'a Secret),
}

impl Grant<'_> {
    /// The `grant_type` value.
    pub fn as_str(&self) -> &'static str {
        match self {
            Grant::Password { .. } => "password",
            Grant::ClientCredentials => "client_credentials",
            Grant::Refresh(_) => "refresh_token",
        }
    }
}

/// How the request body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEncoding {
    /// `application/x-www-form-urlencoded` (RFC 6749).
    Form,
    /// A JSON object of the same fields (some providers take only this).
    Json,
}

/// How the client authenticates itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// `client_id` / `client_secret` in the request body.
    Body,
    /// HTTP Basic with the url-encoded client id and secret (RFC 6749 §2.3.1).
    Basic,
}

/// One token request: where it goes, which grant, how the client
/// authenticates, and what else the provider wants in the body.
#[derive(Debug, Clone, Copy)]
pub struct TokenRequest<'a> {
    pub token_url: &'a Url,
    pub grant: Grant<'a>,
    pub client_id: Option<&'a Secret>,
    pub client_secret: Option<&'a Secret>,
    pub client_auth: ClientAuth,
    pub body: BodyEncoding,
    pub scope: Option<&'a str>,
    /// More body fields, sent as they are.
    pub extra: &'a [(String, Secret)],
    /// Time allowed for each try (connect, answer, body).
    pub timeout: Duration,
}

/// Retry policy for passing faults (5xx, 429, network, timeout).
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Total tries, the first included.
    pub attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(5),
        }
    }
}

/// The token endpoint client, shared by all providers.
#[derive(Clone)]
pub struct TokenClient {
    http: reqwest::Client,
    retry: RetryPolicy,
}

/// The outcome of one try, for metrics.
pub type AttemptObserver<'a> = &'a (dyn Fn(&Result<TokenSet, TokenError>) + Send + Sync);

impl TokenClient {
    /// A client whose requests go direct.
    pub fn new(retry: RetryPolicy) -> Result<TokenClient, String> {
        Self::with_proxies(retry, Vec::new())
    }

    /// A client whose requests go through `proxies` (the first that takes
    /// a URL wins), else direct; never through a proxy from the
    /// environment: `HTTP_PROXY` and the like would get the client secret
    /// or password, in clear text for an http token URL.
    pub fn with_proxies(
        retry: RetryPolicy,
        proxies: Vec<reqwest::Proxy>,
    ) -> Result<TokenClient, String> {
        // reqwest is built without a TLS provider of its own: rustls needs
        // the process-wide one (ring), installed once.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder().no_proxy();
        for proxy in proxies {
            builder = builder.proxy(proxy);
        }
        let http = builder
            // A redirect would carry the client secret / password elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("authproxy/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the token client: {e}"))?;
        Ok(TokenClient { http, retry })
    }

    /// Runs a grant, retrying passing faults with exponential backoff and
    /// jitter. `invalid_grant` and other refusals return at once.
    pub async fn request(
        &self,
        req: &TokenRequest<'_>,
        observe: AttemptObserver<'_>,
    ) -> Result<TokenSet, TokenError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self.request_once(req).await;
            observe(&result);
            match result {
                Err(e) if e.is_transient() && attempt < self.retry.attempts => {
                    let delay = self.backoff(attempt, &e);
                    // The provider's text is not shown here: only the
                    // caller knows every secret it must be scrubbed of.
                    tracing::warn!(attempt, error = %e, retry_in_ms = delay.as_millis() as u64, "token request failed, retrying");
                    tokio::time::sleep(delay).await;
                }
                other => return other,
            }
        }
    }

    fn backoff(&self, attempt: u32, error: &TokenError) -> Duration {
        if let TokenError::Status {
            retry_after: Some(secs),
            ..
        } = error
        {
            return Duration::from_secs(*secs).min(self.retry.max_delay);
        }
        let exp = self.retry.base_delay * 2u32.saturating_pow(attempt - 1);
        let capped = exp.min(self.retry.max_delay);
        // Full jitter in [50%, 100%] so replicas do not retry in lockstep.
        let factor = rand::rng().random_range(0.5..=1.0);
        capped.mul_f64(factor)
    }

    async fn request_once(&self, r: &TokenRequest<'_>) -> Result<TokenSet, TokenError> {
        let fields = grant_fields(r);
        let mut req = self
            .http
            .post(r.token_url.clone())
            .timeout(r.timeout)
            .header(http::header::ACCEPT, "application/json");
        if r.client_auth == ClientAuth::Basic {
            req = req.header(http::header::AUTHORIZATION, basic_auth(r));
        }
        // The body holds the secrets: built in a buffer that is zeroed
        // when reqwest is done with it.
        let (content_type, body) = match r.body {
            BodyEncoding::Json => ("application/json", json_body(&fields)),
            BodyEncoding::Form => ("application/x-www-form-urlencoded", form_body(&fields)),
        };
        req = req
            .header(http::header::CONTENT_TYPE, content_type)
            .body(body.into_bytes());
        let response = req.send().await.map_err(|e| {
            if e.is_timeout() {
                TokenError::Timeout(r.timeout.as_secs_f64())
            } else {
                TokenError::Network(describe_reqwest(&e))
            }
        })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry_after_secs(v, SystemTime::now()));
        // Token answers are small; refuse to read a runaway body.
        let body = read_limited(response, 256 * 1024, r.timeout).await?;
        if status.is_redirection() {
            return Err(TokenError::Redirect {
                status: status.as_u16(),
            });
        }
        if !status.is_success() {
            if let Some(e) = parse_error_answer(status.as_u16(), body.as_slice()) {
                return Err(e);
            }
            return Err(TokenError::Status {
                status: status.as_u16(),
                retry_after,
                body: error_page_text(body.as_slice()),
            });
        }
        // RFC 6749 §6: an answer without a new refresh token keeps the old.
        let previous_refresh = match r.grant {
            Grant::Refresh(token) => Some(token),
            _ => None,
        };
        parse_token_answer(body.as_slice(), unix_now(), previous_refresh)
    }
}

/// A JSON object of the fields (a later field of the same name wins).
fn json_body(fields: &[(String, Secret)]) -> SecretBuf {
    let map: BTreeMap<&str, &str> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.expose()))
        .collect();
    let mut body = SecretBuf::with_capacity(256);
    serde_json::to_writer(&mut body, &map).expect("strings serialize");
    body
}

/// `application/x-www-form-urlencoded` of the fields, in order.
fn form_body(fields: &[(String, Secret)]) -> SecretBuf {
    let mut body = SecretBuf::with_capacity(256);
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            body.extend(b"&");
        }
        for piece in url::form_urlencoded::byte_serialize(k.as_bytes()) {
            body.extend(piece.as_bytes());
        }
        body.extend(b"=");
        for piece in url::form_urlencoded::byte_serialize(v.expose().as_bytes()) {
            body.extend(piece.as_bytes());
        }
    }
    body
}

/// The answer's body, in a buffer zeroed when dropped (it holds the new
/// tokens). The chunks hyper hands over are zeroed too when nothing else
/// shares them.
async fn read_limited(
    mut response: reqwest::Response,
    limit: usize,
    timeout: Duration,
) -> Result<SecretBuf, TokenError> {
    let mut body = SecretBuf::default();
    loop {
        let chunk = tokio::time::timeout(timeout, response.chunk())
            .await
            .map_err(|_| TokenError::Timeout(timeout.as_secs_f64()))?
            .map_err(|e| TokenError::Network(describe_reqwest(&e)))?;
        match chunk {
            Some(c) => {
                body.extend(&c);
                if let Ok(mut owned) = c.try_into_mut() {
                    owned.as_mut().zeroize();
                }
                if body.len() > limit {
                    return Err(TokenError::BadResponse(format!(
                        "answer is larger than {limit} bytes"
                    )));
                }
            }
            None => return Ok(body),
        }
    }
}

/// The body fields of a grant request, in a stable order.
fn grant_fields(r: &TokenRequest<'_>) -> Vec<(String, Secret)> {
    let mut fields: Vec<(String, Secret)> = Vec::new();
    let mut push = |k: &str, v: &Secret| fields.push((k.to_string(), v.clone()));
    push("grant_type", &Secret::new(r.grant.as_str()));
    match r.grant {
        Grant::Refresh(token) => push("refresh_token", token),
        Grant::Password { username, password } => {
            push("username", username);
            push("password", password);
        }
        Grant::ClientCredentials => {}
    }
    if r.client_auth == ClientAuth::Body {
        if let Some(id) = r.client_id {
            push("client_id", id);
        }
        if let Some(secret) = r.client_secret {
            push("client_secret", secret);
        }
    }
    if let Some(scope) = r.scope {
        push("scope", &Secret::new(scope));
    }
    for (k, v) in r.extra {
        push(k, v);
    }
    fields
}

/// RFC 6749 §2.3.1: id and secret are form-url-encoded before Basic encoding.
fn basic_auth(r: &TokenRequest<'_>) -> http::HeaderValue {
    let enc = |s: Option<&Secret>| {
        Zeroizing::new(
            url::form_urlencoded::byte_serialize(s.map(Secret::expose).unwrap_or("").as_bytes())
                .collect::<String>(),
        )
    };
    let raw = Zeroizing::new(format!("{}:{}", *enc(r.client_id), *enc(r.client_secret)));
    let encoded = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&*raw));
    let text = Zeroizing::new(format!("Basic {}", *encoded));
    let mut value = http::HeaderValue::from_str(&text).expect("base64 is a valid header value");
    value.set_sensitive(true);
    value
}

/// A `Retry-After` value (RFC 9110 §10.2.3) as seconds from `now`: either
/// delay-seconds or an HTTP date (a date already past means now).
fn retry_after_secs(value: &str, now: SystemTime) -> Option<u64> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(secs);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).map_or(0, |d| d.as_secs()))
}

/// Describes a reqwest error by its kind and cause chain, without the URL's
/// query (which could hold a key).
fn describe_reqwest(e: &reqwest::Error) -> String {
    use std::error::Error;
    let mut parts = Vec::new();
    let mut source = e.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    let kind = if e.is_connect() {
        "connect failed"
    } else if e.is_body() || e.is_decode() {
        "reading the answer failed"
    } else {
        "request failed"
    };
    match parts.last() {
        Some(cause) => format!("{kind}: {cause}"),
        None => kind.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::retry_after_secs;

    #[test]
    fn retry_after_as_seconds_or_http_date() {
        // Sun, 06 Nov 1994 08:49:37 GMT, the RFC's example date.
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(retry_after_secs("120", now), Some(120));
        assert_eq!(retry_after_secs(" 7 ", now), Some(7));
        assert_eq!(
            retry_after_secs("Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(30)
        );
        assert_eq!(
            retry_after_secs("Sun, 06 Nov 1994 08:49:00 GMT", now),
            Some(0),
            "a date in the past means retry now"
        );
        // The two obsolete date formats HTTP still accepts.
        assert_eq!(
            retry_after_secs("Sunday, 06-Nov-94 08:50:37 GMT", now),
            Some(60)
        );
        assert_eq!(retry_after_secs("Sun Nov  6 08:49:47 1994", now), Some(10));
        assert_eq!(retry_after_secs("soon", now), None);
        assert_eq!(retry_after_secs("-5", now), None);
    }
}
