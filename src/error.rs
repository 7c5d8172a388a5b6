//! Errors the proxy itself answers with, and their one mapping to HTTP.
//! Every body is `{"error": code, "message": text, "provider": name?}`.

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode};

use crate::credentials::oauth2::DevicePrompt;
use crate::credentials::CredentialError;
use crate::http::body::{body_timed_out, is_body_limit};
use crate::oauth::TokenError;
use crate::upstream::UpstreamError;

/// The code of one of our error answers, in the response's extensions
/// (never sent), for the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode(pub &'static str);

/// A failure while handling a request. Messages never contain secrets.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route matches path {path}")]
    NoRoute { path: String },
    #[error("no local endpoint at {path}")]
    NoLocalEndpoint { path: String },
    #[error("{0}")]
    BadRequest(String),
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: u64 },
    #[error("missing or wrong Proxy-Authorization (send `Proxy-Authorization: Bearer <server.inbound_token>`)")]
    Unauthorized,
    #[error("requests with Origin {origin} are refused: browsers may not use this proxy's credentials (add the origin to server.allowed_origins if this is intended)")]
    ForbiddenOrigin { origin: String },
    #[error("Host {host} is not served here (add it to server.allowed_hosts if this is intended)")]
    ForbiddenHost { host: String },
    /// Forward-proxy mode: a `CONNECT` or absolute-form request for a host
    /// that has no host route and is not in `forward_proxy.tunnel`.
    #[error("{what} {target} is refused: it has no host route and is not in forward_proxy.tunnel (authproxy is not an open proxy)")]
    NotForwarded { what: &'static str, target: String },
    /// A request inside a `CONNECT` tunnel for another host than the
    /// tunnel's (RFC 9110 §15.5.20: the client may retry on a connection
    /// of its own for that host).
    #[error("this connection is a tunnel to {tunnel}; a request for {host} needs a connection (CONNECT) of its own")]
    Misdirected { tunnel: String, host: String },
    /// Forward-proxy mode with `inbound_token`: a `CONNECT` or
    /// absolute-form request without the token.
    #[error("missing or wrong Proxy-Authorization (send `Proxy-Authorization: Bearer <server.inbound_token>`, or Basic with the token as password: http://any:<token>@proxy)")]
    ProxyAuthenticationRequired,
    /// A browser request (Fetch Metadata or `Origin`) where browsers may
    /// not go; `detail` says where and what to do instead.
    #[error("{detail}")]
    ForbiddenBrowser {
        provider: Option<String>,
        detail: String,
    },
    /// The route's `allow` list has no entry for this method and path.
    #[error("{detail}")]
    ForbiddenByPolicy {
        provider: Option<String>,
        detail: String,
    },
    /// An aws_sigv4 route cannot hash a body this large, and the provider
    /// does not allow `unsigned_payload`.
    #[error("request body is larger than server.max_replay_body ({limit} bytes), the most this route can hash for its AWS signature; raise server.max_replay_body, or set unsigned_payload = true on provider {provider} if the service accepts UNSIGNED-PAYLOAD (S3)")]
    TooLargeToSign { provider: String, limit: u64 },
    /// A body that must be read in full before sending (to sign it) finds
    /// every replay buffer in use.
    #[error("{detail}")]
    Busy { provider: String, detail: String },
    #[error("upstream {upstream} is unreachable: {detail}")]
    UpstreamUnreachable {
        provider: Option<String>,
        upstream: String,
        detail: String,
    },
    #[error("upstream {upstream} did not answer within {seconds:.1}s")]
    UpstreamTimeout {
        provider: Option<String>,
        upstream: String,
        seconds: f64,
    },
    #[error("token endpoint failed: {detail}")]
    TokenEndpoint { provider: String, detail: String },
    #[error("could not obtain a valid credential: {detail}")]
    ReauthenticationFailed { provider: String, detail: String },
    #[error("{}", login_message(.login_url, .device.as_deref()))]
    LoginRequired {
        provider: String,
        login_url: String,
        /// Device-code providers: the flow the person is to complete.
        device: Option<Box<DevicePrompt>>,
    },
    #[error("the request body paused for more than {seconds:.1}s (server.body_read_timeout); the connection is closed")]
    RequestTimeout { seconds: f64 },
    #[error("the proxy has more connections and HTTP/2 streams open than server.max_connections allows; retry later")]
    TooManyConnections,
    #[error("internal error: {0}")]
    Internal(String),
}

impl ProxyError {
    fn parts(&self) -> (StatusCode, &'static str, Option<&str>) {
        use ProxyError::*;
        match self {
            NoRoute { .. } => (StatusCode::NOT_FOUND, "no_route", None),
            NoLocalEndpoint { .. } => (StatusCode::NOT_FOUND, "no_route", None),
            BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request", None),
            MethodNotAllowed { .. } => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", None),
            PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "bad_request", None),
            Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized", None),
            ForbiddenOrigin { .. } => (StatusCode::FORBIDDEN, "forbidden_origin", None),
            ForbiddenHost { .. } => (StatusCode::FORBIDDEN, "forbidden_host", None),
            NotForwarded { .. } => (StatusCode::FORBIDDEN, "forbidden_host", None),
            Misdirected { .. } => (StatusCode::MISDIRECTED_REQUEST, "forbidden_host", None),
            ProxyAuthenticationRequired => (
                StatusCode::PROXY_AUTHENTICATION_REQUIRED,
                "unauthorized",
                None,
            ),
            ForbiddenBrowser { provider, .. } => (
                StatusCode::FORBIDDEN,
                "forbidden_browser",
                provider.as_deref(),
            ),
            ForbiddenByPolicy { provider, .. } => (
                StatusCode::FORBIDDEN,
                "forbidden_by_policy",
                provider.as_deref(),
            ),
            TooLargeToSign { provider, .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "bad_request",
                Some(provider.as_str()),
            ),
            Busy { provider, .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server_busy",
                Some(provider.as_str()),
            ),
            UpstreamUnreachable { provider, .. } => (
                StatusCode::BAD_GATEWAY,
                "upstream_unreachable",
                provider.as_deref(),
            ),
            UpstreamTimeout { provider, .. } => (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_timeout",
                provider.as_deref(),
            ),
            TokenEndpoint { provider, .. } => (
                StatusCode::BAD_GATEWAY,
                "token_endpoint_error",
                Some(provider.as_str()),
            ),
            ReauthenticationFailed { provider, .. } => (
                StatusCode::BAD_GATEWAY,
                "reauthentication_failed",
                Some(provider.as_str()),
            ),
            LoginRequired { provider, .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "login_required",
                Some(provider.as_str()),
            ),
            RequestTimeout { .. } => (StatusCode::REQUEST_TIMEOUT, "request_timeout", None),
            TooManyConnections => (
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_connections",
                None,
            ),
            Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", None),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    pub fn code(&self) -> &'static str {
        self.parts().1
    }
}

impl ProxyError {
    /// No token can be injected for `provider`.
    pub fn credential(provider: &str, e: CredentialError) -> ProxyError {
        let provider = provider.to_string();
        match e {
            CredentialError::TokenEndpoint(t) => ProxyError::TokenEndpoint {
                provider,
                detail: t.to_string(),
            },
            CredentialError::WaitTimeout(_)
            | CredentialError::StoreUnavailable(_)
            | CredentialError::Discovery(_) => ProxyError::TokenEndpoint {
                provider,
                detail: e.to_string(),
            },
            CredentialError::Reauthentication(detail) => {
                ProxyError::ReauthenticationFailed { provider, detail }
            }
            CredentialError::LoginRequired { login_url, device } => ProxyError::LoginRequired {
                provider,
                login_url,
                device,
            },
        }
    }

    /// The upstream `upstream` (an origin) of a route with `provider` gave
    /// no answer within `timeout`, or none at all; or our own request body
    /// limit (`max_request_body`) cut the body on its way.
    ///
    /// Inlined into the forwarder's send: called out of line, every
    /// request's answer (error or not) was copied once more there
    /// (callgrind: one more memcpy of ~60 instructions per request).
    #[inline]
    pub fn upstream(
        e: UpstreamError,
        provider: Option<&str>,
        upstream: &str,
        timeout: Duration,
        max_request_body: Option<u64>,
    ) -> ProxyError {
        match e {
            UpstreamError::Timeout => ProxyError::UpstreamTimeout {
                provider: provider.map(str::to_string),
                upstream: upstream.to_string(),
                seconds: timeout.as_secs_f64(),
            },
            e if is_body_limit(&e) => ProxyError::PayloadTooLarge {
                limit: max_request_body.unwrap_or(0),
            },
            // The client's body paused too long while it streamed to the
            // upstream: the client's fault, not the upstream's.
            e => match body_timed_out(&e) {
                Some(seconds) => ProxyError::RequestTimeout { seconds },
                None => ProxyError::UpstreamUnreachable {
                    provider: provider.map(str::to_string),
                    upstream: upstream.to_string(),
                    detail: e.describe(),
                },
            },
        }
    }

    /// A token handed to us (a login callback, a pasted token) that cannot
    /// be used.
    pub fn rejected_token(e: TokenError) -> ProxyError {
        ProxyError::BadRequest(e.to_string())
    }
}

/// What a `login_required` answer tells the person to do.
fn login_message(login_url: &str, device: Option<&DevicePrompt>) -> String {
    match device {
        Some(d) => format!(
            "no token yet: open {} and enter the code {} (or run `authproxy login <provider>`)",
            d.verification_uri, d.user_code
        ),
        None => format!("no token yet: log in at {login_url}"),
    }
}

/// gRPC status codes (grpc/doc/statuscodes.md) our errors map to.
mod grpc_code {
    pub const INVALID_ARGUMENT: u8 = 3;
    pub const DEADLINE_EXCEEDED: u8 = 4;
    pub const PERMISSION_DENIED: u8 = 7;
    pub const RESOURCE_EXHAUSTED: u8 = 8;
    pub const UNIMPLEMENTED: u8 = 12;
    pub const INTERNAL: u8 = 13;
    pub const UNAVAILABLE: u8 = 14;
    pub const UNAUTHENTICATED: u8 = 16;
}

impl ProxyError {
    /// The gRPC status of this error, for a gRPC client: no route →
    /// UNIMPLEMENTED, upstream unreachable → UNAVAILABLE, no answer in time
    /// → DEADLINE_EXCEEDED, no credential → UNAUTHENTICATED, refused by
    /// policy or browser rules → PERMISSION_DENIED.
    pub fn grpc_status(&self) -> u8 {
        use grpc_code::*;
        use ProxyError::*;
        match self {
            NoRoute { .. } | NoLocalEndpoint { .. } | MethodNotAllowed { .. } => UNIMPLEMENTED,
            BadRequest(_) => INVALID_ARGUMENT,
            PayloadTooLarge { .. } | TooLargeToSign { .. } => RESOURCE_EXHAUSTED,
            Unauthorized | ProxyAuthenticationRequired => UNAUTHENTICATED,
            TokenEndpoint { .. } | ReauthenticationFailed { .. } | LoginRequired { .. } => {
                UNAUTHENTICATED
            }
            ForbiddenOrigin { .. }
            | ForbiddenHost { .. }
            | NotForwarded { .. }
            | Misdirected { .. }
            | ForbiddenBrowser { .. }
            | ForbiddenByPolicy { .. } => PERMISSION_DENIED,
            Busy { .. } | TooManyConnections | UpstreamUnreachable { .. } => UNAVAILABLE,
            UpstreamTimeout { .. } | RequestTimeout { .. } => DEADLINE_EXCEEDED,
            Internal(_) => INTERNAL,
        }
    }

    /// Our answer: JSON, or for a gRPC client (`grpc`) a gRPC
    /// trailers-only answer: HTTP 200 with `grpc-status` and
    /// `grpc-message` in the head, no body.
    pub fn answer(self, grpc: bool) -> Response {
        if !grpc {
            return self.into_response();
        }
        let code = self.code();
        let mut response = Response::new(axum::body::Body::empty());
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.insert(
            "grpc-status",
            HeaderValue::from(u16::from(self.grpc_status())),
        );
        if let Ok(message) = HeaderValue::from_str(&grpc_message(&self.to_string())) {
            headers.insert("grpc-message", message);
        }
        headers.insert("x-authproxy-error", HeaderValue::from_static(code));
        response.extensions_mut().insert(ErrorCode(code));
        response
    }
}

/// `grpc-message`'s encoding: percent-encoded UTF-8, every byte outside
/// printable ASCII and `%` itself encoded.
fn grpc_message(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl IntoResponse for ProxyError {
    fn into_response(self) -> Response {
        let (status, code, provider) = self.parts();
        let mut body = serde_json::json!({
            "error": code,
            "message": self.to_string(),
        });
        if let Some(p) = provider {
            body["provider"] = serde_json::Value::String(p.to_string());
        }
        if let ProxyError::LoginRequired {
            login_url, device, ..
        } = &self
        {
            body["login_url"] = serde_json::Value::String(login_url.clone());
            if let Some(serde_json::Value::Object(d)) = device.as_ref().map(|d| d.to_json()) {
                for (k, v) in d {
                    body[k] = v;
                }
            }
        }
        let mut response = crate::http::body::json(status, &body);
        if matches!(self, ProxyError::RequestTimeout { .. }) {
            // The rest of the body is never read: the connection cannot
            // carry another request (hyper drops this header on HTTP/2,
            // where only the stream ends).
            response
                .headers_mut()
                .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        if matches!(self, ProxyError::Busy { .. }) {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if matches!(self, ProxyError::Unauthorized) {
            response.headers_mut().insert(
                http::header::PROXY_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"authproxy\""),
            );
        }
        if matches!(self, ProxyError::ProxyAuthenticationRequired) {
            // Both schemes the forward-proxy check takes: Basic is what
            // most clients can send to a proxy (from `user:password@` in
            // their proxy URL), and Java's, for one, only answers a
            // challenge.
            let headers = response.headers_mut();
            headers.insert(
                http::header::PROXY_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"authproxy\""),
            );
            headers.append(
                http::header::PROXY_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"authproxy\", charset=\"UTF-8\""),
            );
        }
        response
            .headers_mut()
            .insert("x-authproxy-error", HeaderValue::from_static(code));
        // For the access log of answers that come back through a router
        // (the local endpoints): the header above is for the client.
        response.extensions_mut().insert(ErrorCode(code));
        response
    }
}
