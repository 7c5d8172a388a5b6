//! Health, status and metrics.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http::{header, HeaderValue};
use serde_json::{json, Map, Value};

use super::Admin;
use crate::clock::{rfc3339, unix_now};
use crate::config::{EgressConfig, Grant, ProxyEndpoint};
use crate::credentials::Credential;

pub(super) async fn health() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// `200 {"status":"ready"}` when every provider can inject now (state
/// `ok` or `expiring`); else `503` with the state of those that cannot
/// (`login_required` until someone logs in, `error`).
pub(super) async fn ready(State(admin): State<Arc<Admin>>) -> Response {
    let runtime = admin.app.runtime();
    let mut waiting = Map::new();
    for (name, credential) in &runtime.credentials {
        if let Credential::OAuth2(p) = credential.as_ref() {
            let state = p.state();
            if !matches!(state, "ok" | "expiring") {
                waiting.insert(name.clone(), Value::String(state.into()));
            }
        }
    }
    if waiting.is_empty() {
        Json(json!({"status": "ready"})).into_response()
    } else {
        (
            http::StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready", "providers": waiting})),
        )
            .into_response()
    }
}

/// Per provider: type, grant, state, expiry, renewal figures, last error.
/// Built field by field from non-secret data only.
pub(super) async fn status(State(admin): State<Arc<Admin>>) -> Json<Value> {
    let runtime = admin.app.runtime();
    let mut providers = Map::new();
    for (name, credential) in &runtime.credentials {
        let entry = match credential.as_ref() {
            Credential::Static(s) => json!({
                "type": "static",
                "state": "ok",
                "headers": s.names().map(|n| n.as_str()).collect::<Vec<_>>(),
            }),
            Credential::Basic(_) => json!({
                "type": "basic",
                "state": "ok",
            }),
            Credential::Query(q) => json!({
                "type": "query",
                "state": "ok",
                "params": q.names().collect::<Vec<_>>(),
            }),
            Credential::AwsSigV4(a) => json!({
                "type": "aws_sigv4",
                "state": "ok",
                "region": a.region(),
                "service": a.service(),
                "clock_skew_seconds": a.skew(),
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
                    "login_url": matches!(p.config().grant, Grant::Implicit | Grant::AuthorizationCode).then(|| p.login_url()),
                    // Device code: the flow pending (until when) or how the last one ended.
                    "device_login": (p.config().grant == Grant::DeviceCode).then(|| p.device_state().to_json()),
                    // Endpoints found at the issuer (explicit keys win).
                    "discovered": p.config().issuer.as_ref().map(|issuer| {
                        let found = p.discovered();
                        let url = |u: Option<&url::Url>| u.map(|u| u.as_str().to_string());
                        json!({
                            "issuer": issuer,
                            "token_endpoint": found.as_ref().and_then(|m| url(m.token_endpoint.as_ref())),
                            "authorization_endpoint": found.as_ref().and_then(|m| url(m.authorization_endpoint.as_ref())),
                            "device_authorization_endpoint": found.as_ref().and_then(|m| url(m.device_authorization_endpoint.as_ref())),
                        })
                    }),
                })
            }
        };
        providers.insert(name.clone(), entry);
    }
    Json(json!({
        "providers": providers,
        "store": {
            "kind": admin.app.store.describe(),
            "error": admin.app.store.pending_error(),
            "encrypted": admin.app.store.encrypted(),
            "warnings": admin.app.store.warnings(),
        },
        "egress": egress(&admin.app.egress),
    }))
}

/// The egress proxy by `http://host:port` only: its credentials never.
fn egress(egress: &EgressConfig) -> Value {
    let url = |p: &Option<ProxyEndpoint>| p.as_ref().map(|p| p.url().to_string());
    json!({
        "https_proxy": url(&egress.https),
        "http_proxy": url(&egress.http),
        "from_env": egress.from_env,
        "no_proxy": egress.no_proxy.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
    })
}

pub(super) async fn metrics(State(admin): State<Arc<Admin>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        admin.app.metrics.render(),
    )
        .into_response()
}
