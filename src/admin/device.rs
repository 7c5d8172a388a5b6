//! `POST /_authproxy/device/<provider>`: starts the device flow of a
//! device-code provider (or returns the pending one). Refused to browsers
//! like every state-changing endpoint; `authproxy login` calls it.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::Json;
use serde_json::Value;

use super::{oauth_provider, Admin};
use crate::config::Grant;
use crate::error::ProxyError;

pub(super) async fn start(
    State(admin): State<Arc<Admin>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ProxyError> {
    let p = oauth_provider(&admin.app, &name)?;
    if p.config().grant != Grant::DeviceCode {
        return Err(ProxyError::BadRequest(format!(
            "provider {name} uses grant = \"{}\"; the device flow is only for grant = \"device_code\"",
            p.config().grant.as_str()
        )));
    }
    let prompt = p
        .start_device()
        .await
        .map_err(|e| ProxyError::credential(&name, e))?;
    let mut body = prompt.to_json();
    body["provider"] = Value::String(name);
    body["status"] = Value::String("pending".into());
    Ok(Json(body))
}
