//! Local endpoints under `/_authproxy/`: never proxied. Endpoints that
//! change state take JSON only (a cross-site form post cannot send it
//! without a preflight, and the Origin check refuses foreign pages).
//!
//! Each endpoint has a kind
//! ([`LocalKind`](crate::proxy::security::LocalKind): read-only, operator
//! read, state-changing, login flow), declared in one list in
//! [`crate::proxy::security`] beside the rules it selects: which browser
//! requests it takes and where the inbound token may be. The dispatcher's
//! guard applies them before a request gets here. A new endpoint adds its
//! route below and its kind there.
//!
//! Health, readiness, status and metrics in [`status`]; reload in
//! [`reload`]; the browser login flow of implicit-grant and
//! authorization-code providers in [`login`]; the device flow's start in
//! [`device`]; tokens pasted by hand in [`tokens`]. The router is handed to the per-request dispatcher ready
//! made ([`crate::app::serve`]), which is why this module may read the
//! app state while `app` knows nothing of it.

mod device;
mod login;
mod reload;
mod status;
mod tokens;

use std::sync::Arc;

use axum::body::Bytes;
use axum::middleware::map_response;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use http::{header, HeaderMap};

use crate::app::AppState;
use crate::credentials::{Credential, OAuthProvider};
use crate::error::ProxyError;
use login::PendingLogins;

/// What the local endpoints share: the app, and the logins in progress
/// (which outlive reloads, as the router does).
pub struct Admin {
    app: Arc<AppState>,
    logins: PendingLogins,
}

/// Every path under `/_authproxy`, unknown ones included (`404 no_route`).
pub fn router(app: Arc<AppState>) -> Router {
    let admin = Arc::new(Admin {
        app,
        logins: PendingLogins::default(),
    });
    Router::new()
        .route("/_authproxy/health", get(status::health))
        .route("/_authproxy/ready", get(status::ready))
        .route("/_authproxy/reload", post(reload::reload))
        .route("/_authproxy/status", get(status::status))
        .route("/_authproxy/metrics", get(status::metrics))
        .route(
            "/_authproxy/login/{provider}",
            get(login::login).layer(map_response(login::page_headers)),
        )
        .route(
            "/_authproxy/callback/{provider}",
            get(login::callback_get)
                .post(login::callback_post)
                .layer(map_response(login::page_headers)),
        )
        .route("/_authproxy/tokens/{provider}", post(tokens::paste_token))
        .route("/_authproxy/device/{provider}", post(device::start))
        .fallback(no_local_endpoint)
        // axum's own 405 has no body; ours is the JSON error (axum still
        // adds the `Allow` header).
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(admin)
}

async fn method_not_allowed(method: http::Method, uri: http::Uri) -> axum::response::Response {
    ProxyError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_string(),
    }
    .into_response()
}

async fn no_local_endpoint(uri: http::Uri) -> axum::response::Response {
    ProxyError::NoLocalEndpoint {
        path: uri.path().to_string(),
    }
    .into_response()
}

fn oauth_provider(app: &AppState, name: &str) -> Result<Arc<OAuthProvider>, ProxyError> {
    match app.runtime().credentials.get(name).map(|c| c.as_ref()) {
        Some(Credential::OAuth2(p)) => Ok(p.clone()),
        Some(other) => Err(ProxyError::BadRequest(format!(
            "provider {name} is a {} provider; it has no tokens to log in for or paste",
            other.kind_name()
        ))),
        None => Err(ProxyError::NoLocalEndpoint {
            path: format!("/_authproxy/…/{name} (no provider named {name})"),
        }),
    }
}

/// Parses a JSON body; anything else is a clear 400, never a silent drop.
fn json_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<T, ProxyError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/json")
        });
    if !is_json {
        return Err(ProxyError::BadRequest(
            "this endpoint takes JSON only: send Content-Type: application/json".into(),
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        // serde's message can quote input; keep only the class and position.
        ProxyError::BadRequest(format!(
            "body is not the expected JSON ({:?} error at line {} column {}); expected {{\"access_token\": \"...\", \"expires_in\": seconds}}",
            e.classify(),
            e.line(),
            e.column()
        ))
    })
}
