//! APIs with fixed credentials: a static API token (ricloud:
//! `Authorization: Token <token>`) and a header pair (RIPS plain auth:
//! `X-API-Email` + `X-API-Password` on every request). Missing or wrong →
//! 401.

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use http::StatusCode;
use serde_json::json;

use super::provider::header_str;

fn answer(api: &'static str, req: &Request, credential: &str) -> Response {
    axum::Json(json!({
        "api": api,
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "credential": credential,
    }))
    .into_response()
}

fn unauthorized(message: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({"detail": message})),
    )
        .into_response()
}

/// ricloud: every path wants `Authorization: Token <token>`.
pub fn static_token_api(token: &str) -> Router {
    let expected = format!("Token {token}");
    let handler = any(move |req: Request| {
        let ok = header_str(req.headers(), "authorization") == Some(expected.as_str());
        async move {
            if ok {
                answer("ricloud", &req, "Token header accepted")
            } else {
                unauthorized("Invalid token.")
            }
        }
    });
    Router::new()
        .route("/", handler.clone())
        .route("/{*rest}", handler)
}

/// RIPS plain auth: every path wants `X-API-Email` and `X-API-Password`.
pub fn header_pair_api(email: &str, password: &str) -> Router {
    let (email, password) = (email.to_string(), password.to_string());
    let handler = any(move |req: Request| {
        let h = req.headers();
        let ok = header_str(h, "x-api-email") == Some(email.as_str())
            && header_str(h, "x-api-password") == Some(password.as_str());
        async move {
            if ok {
                answer("rips-plain", &req, "X-API-Email/X-API-Password accepted")
            } else {
                unauthorized("Bad credentials")
            }
        }
    });
    Router::new()
        .route("/", handler.clone())
        .route("/{*rest}", handler)
}
