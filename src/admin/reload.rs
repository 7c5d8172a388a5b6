//! `POST /_authproxy/reload`: what SIGHUP does, with the outcome in the
//! answer (`authproxy reload` sends it).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{json, Value};

use super::{json_body, Admin};
use crate::app::reload::{ReloadError, Trigger};
use crate::config::ConfigError;
use crate::error::{ErrorCode, ProxyError};
use crate::http::body::json as json_answer;

/// Reloads the config file. The body may be empty or a JSON object (no
/// options yet): a form post is refused like on every endpoint that
/// changes state. `200 {"status": "reloaded", "warnings": [...]}`, or
/// `400 {"error": "reload_refused", "message", "errors": [{"key"?,
/// "message"}]}` with the running config kept. The messages are the
/// config errors `check` prints, scrubbed of secrets the same way.
pub(super) async fn reload(
    State(admin): State<Arc<Admin>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ProxyError> {
    if !body.is_empty() || headers.contains_key(http::header::CONTENT_TYPE) {
        let options: Result<serde_json::Map<String, Value>, _> = json_body(&headers, &body);
        if options.is_err() {
            return Err(ProxyError::BadRequest(
                "send no body, or `{}` with Content-Type: application/json".into(),
            ));
        }
    }
    match admin.app.reload_file(Trigger::Endpoint).await {
        Ok(done) => Ok(json_answer(
            StatusCode::OK,
            &json!({"status": "reloaded", "warnings": done.warnings}),
        )),
        Err(ReloadError::Failed(e)) => Err(ProxyError::Internal(format!("reload failed: {e}"))),
        Err(e) => {
            let errors: Vec<Value> = match &e {
                ReloadError::Config(ConfigError::Keys { errors, .. }) => errors
                    .iter()
                    .map(|k| json!({"key": k.key, "message": k.message}))
                    .collect(),
                other => vec![json!({"message": other.to_string()})],
            };
            let mut answer = json_answer(
                StatusCode::BAD_REQUEST,
                &json!({
                    "error": "reload_refused",
                    "message": format!("{e}; the running config is kept"),
                    "errors": errors,
                }),
            );
            answer.headers_mut().insert(
                "x-authproxy-error",
                HeaderValue::from_static("reload_refused"),
            );
            answer.extensions_mut().insert(ErrorCode("reload_refused"));
            Ok(answer)
        }
    }
}
