//! Talks to token endpoints: builds the grant request (form or JSON body;
//! the client authenticated by secret in the body or as HTTP Basic, by a
//! signed JWT, by its TLS certificate, or not at all), never follows
//! redirects, retries passing faults a bounded number of times.
//!
//! Takes a [`TokenRequest`] (see [`super::request`]), a description of one
//! request, rather than a provider's whole configuration: this module knows
//! the protocol only. Everything that must be new on each HTTP request (an
//! assertion's `jti` and `iat`, and later a DPoP proof) is made in
//! `TokenClient::request_once`, once per try.

use std::time::{Duration, SystemTime};

use rand::Rng;
use zeroize::Zeroize;

use super::device::{parse_device_answer, DeviceAuthorization};
use super::error::TokenError;
use super::request::{basic_auth, form_body, grant_fields, json_body};
pub use super::request::{BodyEncoding, ClientAuth, Grant, TokenRequest};
use super::token::{error_page_text, parse_error_answer, parse_token_answer, TokenSet};
use crate::clock::unix_now;
use crate::secret::{Secret, SecretBuf};
use crate::text::Scrubber;

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

/// The token endpoint client, shared by all providers; a provider with its
/// own TLS settings (private CA, client certificate) has its own
/// ([`TokenClient::with_tls`]).
#[derive(Clone)]
pub struct TokenClient {
    pub(super) http: reqwest::Client,
    pub(super) retry: RetryPolicy,
    /// The egress proxies, kept for the per-provider clients.
    proxies: Vec<reqwest::Proxy>,
}

/// A provider's own TLS settings for its token and discovery endpoints.
#[derive(Default)]
pub struct TlsSettings<'a> {
    /// Trusted besides the system's roots (DER certificates).
    pub extra_roots: &'a [Vec<u8>],
    /// Certificate chain and private key as PEM, presented to the server.
    pub identity_pem: Option<&'a [u8]>,
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
        let http = Self::builder(&proxies)
            .build()
            .map_err(|e| format!("cannot build the token client: {e}"))?;
        Ok(TokenClient {
            http,
            retry,
            proxies,
        })
    }

    /// A client like this one (same egress proxies) that also trusts
    /// `extra_roots` and presents a client certificate (RFC 8705), for one
    /// provider.
    pub fn with_tls(&self, tls: &TlsSettings<'_>) -> Result<TokenClient, String> {
        let mut builder = Self::builder(&self.proxies);
        if !tls.extra_roots.is_empty() {
            let roots = tls
                .extra_roots
                .iter()
                .map(|der| reqwest::Certificate::from_der(der))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("a CA certificate is not usable: {e}"))?;
            builder = builder.tls_certs_merge(roots);
        }
        if let Some(pem) = tls.identity_pem {
            // reqwest's error names no key material.
            let identity = reqwest::Identity::from_pem(pem)
                .map_err(|e| format!("the client certificate is not usable: {e}"))?;
            builder = builder.identity(identity);
        }
        let http = builder
            .build()
            .map_err(|e| format!("cannot build the token client: {e}"))?;
        Ok(TokenClient {
            http,
            retry: self.retry,
            proxies: self.proxies.clone(),
        })
    }

    fn builder(proxies: &[reqwest::Proxy]) -> reqwest::ClientBuilder {
        // reqwest is built without a TLS provider of its own: rustls needs
        // the process-wide one (ring), installed once.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder().no_proxy();
        for proxy in proxies {
            builder = builder.proxy(proxy.clone());
        }
        builder
            // A redirect would carry the client secret / password elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("authproxy/", env!("CARGO_PKG_VERSION")))
    }

    /// Runs a grant, retrying passing faults with exponential backoff and
    /// jitter. `invalid_grant` and other refusals return at once.
    pub async fn request(
        &self,
        req: &TokenRequest<'_>,
        observe: AttemptObserver<'_>,
    ) -> Result<TokenSet, TokenError> {
        // RFC 6749 §6: an answer without a new refresh token keeps the old.
        let previous_refresh = match req.grant {
            Grant::Refresh(token) => Some(token),
            _ => None,
        };
        let parse = |body: &[u8]| parse_token_answer(body, unix_now(), previous_refresh);
        self.retrying(req, &parse, observe).await
    }

    /// Starts a device flow (RFC 8628 §3.1): the client authenticates as
    /// for a token request; passing faults are retried the same way.
    pub async fn device_authorization(
        &self,
        req: &TokenRequest<'_>,
    ) -> Result<DeviceAuthorization, TokenError> {
        self.retrying(req, &parse_device_answer, &|_| {}).await
    }

    async fn retrying<T>(
        &self,
        req: &TokenRequest<'_>,
        parse: &(dyn Fn(&[u8]) -> Result<T, TokenError> + Send + Sync),
        observe: &(dyn Fn(&Result<T, TokenError>) + Send + Sync),
    ) -> Result<T, TokenError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self.request_once(req, parse).await;
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
        self.jittered_backoff(attempt)
    }

    /// Exponential backoff from the policy's base delay, capped, jittered.
    pub(super) fn jittered_backoff(&self, attempt: u32) -> Duration {
        let exp = self.retry.base_delay * 2u32.saturating_pow(attempt - 1);
        let capped = exp.min(self.retry.max_delay);
        // Full jitter in [50%, 100%] so replicas do not retry in lockstep.
        let factor = rand::rng().random_range(0.5..=1.0);
        capped.mul_f64(factor)
    }

    /// One HTTP request: the body (with new assertions) and headers are
    /// made here, for this try only.
    async fn request_once<T>(
        &self,
        r: &TokenRequest<'_>,
        parse: &(dyn Fn(&[u8]) -> Result<T, TokenError> + Send + Sync),
    ) -> Result<T, TokenError> {
        let fields = grant_fields(r, unix_now())?;
        // Servers repeat what they were sent in their error text. The
        // assertions made for this request are known only here: cut out
        // now (the runtime scrubs the configured secrets afterwards).
        let answer = self.exchange(r, &fields).await;
        answer.and_then(|body| parse(body.as_slice())).map_err(|e| {
            let mut made = Scrubber::new();
            made.add_all(
                fields
                    .iter()
                    .filter(|(k, _)| k == "assertion" || k == "client_assertion")
                    .map(|(_, v)| v),
            );
            e.cut(&made)
        })
    }

    /// Sends the request made of `fields` and reads a successful answer's
    /// body (an error answer is the error).
    async fn exchange(
        &self,
        r: &TokenRequest<'_>,
        fields: &[(String, Secret)],
    ) -> Result<SecretBuf, TokenError> {
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
            BodyEncoding::Json => ("application/json", json_body(fields)),
            BodyEncoding::Form => ("application/x-www-form-urlencoded", form_body(fields)),
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
        Ok(body)
    }
}

/// The answer's body, in a buffer zeroed when dropped (it holds the new
/// tokens). The chunks hyper hands over are zeroed too when nothing else
/// shares them.
pub(super) async fn read_limited(
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
pub(super) fn describe_reqwest(e: &reqwest::Error) -> String {
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
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, UNIX_EPOCH};

    use url::Url;

    use super::*;
    use crate::oauth::jwt::Signer;
    use crate::secret::Secret;

    /// A token endpoint that repeats the signed part of the client
    /// assertion it got in its error: the text shown has none of it, as
    /// nothing but the token client knows that assertion. (Fails without
    /// the cut in `request_once`: the claims and signature show.)
    #[tokio::test]
    async fn error_text_never_shows_the_assertion_that_was_sent() {
        let sent: Arc<Mutex<Vec<String>>> = Arc::default();
        let record = sent.clone();
        let app = axum::Router::new().route(
            "/token",
            axum::routing::post(move |body: String| {
                let record = record.clone();
                async move {
                    let form: std::collections::HashMap<String, String> =
                        url::form_urlencoded::parse(body.as_bytes())
                            .into_owned()
                            .collect();
                    let tail = form["client_assertion"]
                        .split_once('.')
                        .unwrap()
                        .1
                        .to_string();
                    record.lock().unwrap().push(tail.clone());
                    (
                        http::StatusCode::UNAUTHORIZED,
                        axum::Json(serde_json::json!({
                            "error": "invalid_client",
                            "error_description": format!("assertion {tail} refused"),
                        })),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("http://{}/token", listener.local_addr().unwrap())).unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });

        let client = TokenClient::new(RetryPolicy::default()).unwrap();
        let (id, secret) = (Secret::new("app"), Secret::new("hs256-secret"));
        let signer = Signer::hmac(&secret, None);
        let req = TokenRequest {
            token_url: &url,
            grant: Grant::ClientCredentials,
            client_id: Some(&id),
            client_secret: Some(&secret),
            client_auth: ClientAuth::ClientSecretJwt,
            assertion_signer: Some(&signer),
            assertion_audience: None,
            body: BodyEncoding::Form,
            scope: None,
            extra: &[],
            timeout: Duration::from_secs(30),
        };
        let err = client.request(&req, &|_| {}).await.unwrap_err();
        let shown = err.scrub(&Scrubber::new()).to_string();
        assert!(
            shown.contains("invalid_client (assertion [redacted]"),
            "{shown}"
        );
        let tail = sent.lock().unwrap()[0].clone();
        for start in 0..tail.len() - 12 {
            assert!(!shown.contains(&tail[start..start + 12]), "{shown}");
        }
    }

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
