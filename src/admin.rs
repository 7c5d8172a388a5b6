//! Local endpoints under `/_authproxy/`: never proxied. Endpoints that
//! change state take JSON only (a cross-site form post cannot send it
//! without a preflight, and the Origin check refuses foreign pages).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use http::{header, HeaderMap, HeaderValue, StatusCode};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::clock::{rfc3339, unix_now};
use crate::config::Grant;
use crate::credentials::implicit::callback_page;
use crate::credentials::{Credential, OAuthProvider};
use crate::error::ProxyError;
use crate::runtime::AppState;
use crate::secret::Secret;

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/_authproxy/health", get(health))
        .route("/_authproxy/status", get(status))
        .route("/_authproxy/metrics", get(metrics))
        .route("/_authproxy/login/{provider}", get(login))
        .route(
            "/_authproxy/callback/{provider}",
            get(callback_get).post(callback_post),
        )
        .route(
            "/_authproxy/tokens/{provider}",
            axum::routing::post(paste_token),
        )
}

async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Per provider: type, grant, state, expiry, renewal figures, last error.
/// Built field by field from non-secret data only.
async fn status(State(state): State<Arc<AppState>>) -> Json<Value> {
    let runtime = state.runtime();
    let mut providers = Map::new();
    for (name, credential) in &runtime.credentials {
        let entry = match credential.as_ref() {
            Credential::Static(s) => json!({
                "type": "static",
                "state": "ok",
                "headers": s.names().map(|n| n.as_str()).collect::<Vec<_>>(),
            }),
            Credential::OAuth2(p) => {
                let stats = p.stats();
                let current = p.current();
                let expires_at = current.as_ref().and_then(|c| c.expires_at);
                json!({
                    "type": "oauth2",
                    "grant": p.config().grant.as_str(),
                    "state": p.state(),
                    "expires_at": expires_at.map(rfc3339),
                    "expires_in": expires_at.map(|e| e as i64 - unix_now() as i64),
                    "has_refresh_token": current.as_ref().is_some_and(|c| c.has_refresh()),
                    "last_renewal_at": stats.last_renewal_at.map(rfc3339),
                    "last_renewal_outcome": stats.last_renewal_outcome,
                    "last_renewal_reason": stats.last_renewal_reason,
                    "renewals": stats.renewals,
                    "token_requests": stats.token_requests,
                    "last_error": stats.last_error_code.as_ref().map(|code| json!({
                        "code": code,
                        "message": stats.last_error_message,
                    })),
                    "store_error": stats.store_error,
                    "login_url": (p.config().grant == Grant::Implicit).then(|| p.login_url()),
                })
            }
        };
        providers.insert(name.clone(), entry);
    }
    Json(json!({
        "providers": providers,
        "store": {
            "kind": state.store.describe(),
            "error": state.store.pending_error(),
        },
    }))
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        state.metrics.render(),
    )
        .into_response()
}

fn oauth_provider(state: &AppState, name: &str) -> Result<Arc<OAuthProvider>, ProxyError> {
    match state.runtime().credentials.get(name).map(|c| c.as_ref()) {
        Some(Credential::OAuth2(p)) => Ok(p.clone()),
        Some(Credential::Static(_)) => Err(ProxyError::BadRequest(format!(
            "provider {name} is a static provider; it has no tokens to log in for or paste"
        ))),
        None => Err(ProxyError::NoLocalEndpoint {
            path: format!("/_authproxy/…/{name} (no provider named {name})"),
        }),
    }
}

fn implicit_provider(state: &AppState, name: &str) -> Result<Arc<OAuthProvider>, ProxyError> {
    let p = oauth_provider(state, name)?;
    if p.config().grant != Grant::Implicit {
        return Err(ProxyError::BadRequest(format!(
            "provider {name} uses grant = \"{}\"; browser login is only for grant = \"implicit\"",
            p.config().grant.as_str()
        )));
    }
    Ok(p)
}

fn own_base(headers: &HeaderMap, state: &AppState) -> String {
    match headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
        Some(host) => format!("http://{host}"),
        None => format!("http://{}", state.runtime().config.server.listen),
    }
}

/// 302 to the provider's authorize URL with a fresh single-use `state`.
async fn login(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ProxyError> {
    let p = implicit_provider(&state, &name)?;
    let cfg = p.config();
    let mut url = cfg
        .authorize_url
        .clone()
        .ok_or_else(|| ProxyError::Internal("implicit provider without authorize_url".into()))?;
    let redirect_uri = match &cfg.redirect_uri {
        Some(u) => u.to_string(),
        None => format!("{}/_authproxy/callback/{name}", own_base(&headers, &state)),
    };
    let login_state = state.logins.begin(&name);
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "token");
        if let Some(id) = &cfg.client_id {
            q.append_pair("client_id", id.expose());
        }
        if let Some(scope) = &cfg.scope {
            q.append_pair("scope", scope);
        }
        q.append_pair("redirect_uri", &redirect_uri);
        q.append_pair("state", &login_state);
    }
    tracing::info!(provider = %name, "login started; redirecting to the provider");
    Ok((
        StatusCode::FOUND,
        [
            (
                header::LOCATION,
                HeaderValue::from_str(url.as_str())
                    .map_err(|_| ProxyError::Internal("authorize URL".into()))?,
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
    )
        .into_response())
}

async fn callback_get(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Response, ProxyError> {
    implicit_provider(&state, &name)?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::REFERRER_POLICY, "no-referrer"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
            ),
        ],
        callback_page(&name),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallbackBody {
    access_token: Secret,
    #[serde(default)]
    expires_in: Option<u64>,
    state: String,
    #[serde(default)]
    token_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PastedToken {
    access_token: Secret,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    refresh_token: Option<Secret>,
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

async fn callback_post(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ProxyError> {
    let p = implicit_provider(&state, &name)?;
    let body: CallbackBody = json_body(&headers, &body)?;
    if !state.logins.finish(&name, &body.state) {
        return Err(ProxyError::BadRequest(format!(
            "unknown, used or expired login state; start again at /_authproxy/login/{name}"
        )));
    }
    let _ = body.token_type;
    p.set_token(body.access_token, body.expires_in, None)
        .await
        .map_err(|e| ProxyError::BadRequest(e.to_string()))?;
    tracing::info!(provider = %name, "login completed; token stored");
    Ok(Json(json!({"status": "ok", "provider": name})).into_response())
}

/// Stores a token pasted by hand (any oauth2 provider).
async fn paste_token(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ProxyError> {
    let p = oauth_provider(&state, &name)?;
    let body: PastedToken = json_body(&headers, &body)?;
    if body.refresh_token.is_some() && p.config().grant == Grant::Implicit {
        return Err(ProxyError::BadRequest(
            "implicit-grant providers have no refresh token; send access_token (and expires_in) only".into(),
        ));
    }
    p.set_token(body.access_token, body.expires_in, body.refresh_token)
        .await
        .map_err(|e| ProxyError::BadRequest(e.to_string()))?;
    tracing::info!(provider = %name, "token stored by hand");
    Ok(Json(json!({"status": "ok", "provider": name})).into_response())
}
