//! Tokens pasted by hand (any oauth2 provider).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::Response;
use http::HeaderMap;
use serde::Deserialize;
use serde_json::json;

use super::{json_body, oauth_provider, Admin};
use crate::config::Grant;
use crate::error::ProxyError;
use crate::secret::Secret;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PastedToken {
    access_token: Secret,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    refresh_token: Option<Secret>,
}

/// Stores a token pasted by hand (any oauth2 provider).
pub(super) async fn paste_token(
    State(admin): State<Arc<Admin>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ProxyError> {
    let p = oauth_provider(&admin.app, &name)?;
    let body: PastedToken = json_body(&headers, &body)?;
    if body.refresh_token.is_some() && p.config().grant == Grant::Implicit {
        return Err(ProxyError::BadRequest(
            "implicit-grant providers have no refresh token; send access_token (and expires_in) only".into(),
        ));
    }
    p.set_token(body.access_token, body.expires_in, body.refresh_token)
        .await
        .map_err(ProxyError::rejected_token)?;
    tracing::info!(provider = %name, "token stored by hand");
    Ok(crate::http::body::json(
        http::StatusCode::OK,
        &json!({"status": "ok", "provider": name}),
    ))
}
