//! The mocks' error answers. Like many real providers (and every framework
//! debug page), their text repeats what the client sent — the refresh
//! token, the client secret, the password, the request body — so a proxy
//! that shows provider text unscrubbed leaks its secrets, and the secrets
//! audit (tests/secrets_audit.rs) catches it.

use axum::response::{IntoResponse, Response};
use http::{header, HeaderValue, StatusCode};
use serde_json::json;

/// At most this much of a request body is repeated in an error answer.
const BODY_ECHO: usize = 2048;

/// An RFC 6749 §5.2 error answer.
#[derive(Debug)]
pub(super) struct Refusal {
    pub status: StatusCode,
    pub code: &'static str,
    pub description: String,
    /// The client tried HTTP Basic: a 401 carries `WWW-Authenticate`
    /// (RFC 6749 §5.2).
    pub basic_challenge: bool,
}

impl Refusal {
    fn new(status: StatusCode, code: &'static str, description: String) -> Refusal {
        Refusal {
            status,
            code,
            description,
            basic_challenge: false,
        }
    }

    pub fn into_response(self) -> Response {
        let mut r = (
            self.status,
            axum::Json(json!({"error": self.code, "error_description": self.description})),
        )
            .into_response();
        if self.basic_challenge && self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"token\""),
            );
        }
        // RFC 6749 §5.1 asks for these on token answers, errors included.
        r.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }
}

fn excerpt(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(BODY_ECHO)]).into_owned()
}

/// A JSON-only endpoint (RIPS, OneCloud) got something else.
pub(super) fn not_json(content_type: &str, body: &[u8]) -> Refusal {
    Refusal::new(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        format!(
            "got body `{}` with Content-Type `{content_type}`: the request body must be a JSON object (Content-Type: application/json)",
            excerpt(body)
        ),
    )
}

/// A form endpoint (RFC 6749) got something else.
pub(super) fn not_form(content_type: &str, body: &[u8]) -> Refusal {
    Refusal::new(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        format!(
            "got body `{}` with Content-Type `{content_type}`: the request body must be application/x-www-form-urlencoded",
            excerpt(body)
        ),
    )
}

/// Wrong or missing client credentials.
pub(super) fn unknown_client(id: Option<&str>, secret: Option<&str>, basic: bool) -> Refusal {
    let id = id.unwrap_or("(none)");
    let description = match secret {
        Some(secret) => format!("client {id} with secret {secret} unknown"),
        None => format!("client {id} unknown"),
    };
    Refusal {
        basic_challenge: basic,
        ..Refusal::new(StatusCode::UNAUTHORIZED, "invalid_client", description)
    }
}

/// RFC 6749 §2.3: one client authentication method per request.
pub(super) fn two_client_auths(basic_id: &str, body_secret: &str) -> Refusal {
    Refusal::new(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        format!("client {basic_id} authenticated twice: HTTP Basic and client_secret {body_secret} in the body"),
    )
}

/// The client authenticated in a way this endpoint does not take.
pub(super) fn auth_method_not_allowed(method: &str, id: &str, secret: &str) -> Refusal {
    Refusal::new(
        StatusCode::UNAUTHORIZED,
        "invalid_client",
        format!("client {id} may not authenticate with {method} (secret {secret})"),
    )
}

pub(super) fn wrong_password(username: &str, password: &str) -> Refusal {
    Refusal::new(
        StatusCode::BAD_REQUEST,
        "invalid_grant",
        format!("user {username} with password {password} unknown"),
    )
}

pub(super) fn bad_refresh(token: &str) -> Refusal {
    Refusal::new(
        StatusCode::BAD_REQUEST,
        "invalid_grant",
        format!("refresh token {token} is not valid"),
    )
}

/// A spent single-use refresh token came back: the provider assumes it was
/// stolen and revokes the chain (Auth0, Okta: "refresh token reuse
/// detection").
pub(super) fn reused_refresh(token: &str) -> Refusal {
    Refusal::new(
        StatusCode::BAD_REQUEST,
        "invalid_grant",
        format!("refresh token {token} was already used; every token of its chain is revoked"),
    )
}

pub(super) fn unsupported_grant(grant: &str) -> Refusal {
    Refusal::new(
        StatusCode::BAD_REQUEST,
        "unsupported_grant_type",
        format!("grant_type `{grant}` is not supported here"),
    )
}

/// An injected failure: the HTML page a gateway or a framework's debug
/// handler shows, with the request repeated in it.
pub(super) fn failure_page(
    status: StatusCode,
    path: &str,
    body: &[u8],
    retry_after: Option<u64>,
) -> Response {
    let reason = status.canonical_reason().unwrap_or("Error");
    let page = format!(
        "<html><head><title>{code} {reason}</title></head>\n<body><h1>{reason}</h1>\n<p>upstream trouble while handling POST {path} with body <pre>{}</pre></p></body></html>\n",
        excerpt(body),
        code = status.as_u16(),
    );
    let mut r = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        page,
    )
        .into_response();
    if let Some(secs) = retry_after {
        r.headers_mut().insert(header::RETRY_AFTER, secs.into());
    }
    r
}
