//! Health (liveness), readiness, status and metrics.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{header, HeaderMap, HeaderValue, StatusCode};
use serde_json::{json, Map, Value};

use super::Admin;
use crate::clock::{rfc3339, unix_now};
use crate::config::{EgressConfig, Grant, ProxyEndpoint};
use crate::credentials::Credential;
use crate::http::body::json as json_answer;
use crate::telemetry::metrics::Format;

/// Liveness: the process answers.
pub(super) async fn health() -> Response {
    json_answer(StatusCode::OK, &json!({"status": "ok"}))
}

/// Readiness: every provider can inject a credential now (state `ok` or
/// `expiring`; a provider that has no token yet but can get one by
/// itself counts as `ok`). Otherwise `503` naming each provider that
/// cannot, with its state.
pub(super) async fn ready(State(admin): State<Arc<Admin>>) -> Response {
    let runtime = admin.app.runtime();
    let mut not_ready = Map::new();
    for (name, credential) in &runtime.credentials {
        let state = credential_state(credential);
        if !matches!(state, "ok" | "expiring") {
            not_ready.insert(name.clone(), state.into());
        }
    }
    if not_ready.is_empty() {
        json_answer(StatusCode::OK, &json!({"status": "ready"}))
    } else {
        json_answer(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "not_ready", "providers": not_ready}),
        )
    }
}

fn credential_state(credential: &Credential) -> &'static str {
    match credential {
        Credential::OAuth2(p) => p.state(),
        // Fixed credentials are checked at load: they can always inject.
        Credential::Static(_)
        | Credential::Basic(_)
        | Credential::Query(_)
        | Credential::AwsSigV4(_) => "ok",
    }
}

/// Per provider: type, grant, state, expiry, renewal figures, last error.
/// Built field by field from non-secret data only.
pub(super) async fn status(State(admin): State<Arc<Admin>>) -> Response {
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
                    // The rotation whose answer was lost, when its refresh
                    // token was then refused.
                    "rotation_interrupted_at": stats.rotation_interrupted_at.map(rfc3339),
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
    json_answer(
        StatusCode::OK,
        &json!({
            "providers": providers,
            "store": {
                "kind": admin.app.store.describe(),
                "error": admin.app.store.pending_error(),
                "encrypted": admin.app.store.encrypted(),
                "warnings": admin.app.store.warnings(),
            },
            "egress": egress(&admin.app.egress),
        }),
    )
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

/// Prometheus text 0.0.4, or OpenMetrics when `Accept` asks for it.
pub(super) async fn metrics(State(admin): State<Arc<Admin>>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::negotiate(accept);
    let now = unix_now() as i64;
    let expiry: Vec<(String, i64)> = admin
        .app
        .runtime()
        .credentials
        .iter()
        .filter_map(|(name, c)| match c.as_ref() {
            Credential::OAuth2(p) => p
                .current()
                .filter(|t| t.header_value().is_some())
                .and_then(|t| t.expires_at)
                .map(|e| (name.clone(), e as i64 - now)),
            _ => None,
        })
        .collect();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(format.content_type()),
        )],
        admin.app.metrics.render(format, &expiry),
    )
        .into_response()
}
