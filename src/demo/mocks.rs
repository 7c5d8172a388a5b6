//! The demo's mock APIs: every provider style of the spec. They keep the
//! providers' documented behaviour (JSON token endpoints, single-use
//! refresh tokens, X-API-Expired/Revoked) with short token lifetimes so
//! renewals happen while you watch.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Query, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use base64::Engine;
use http::{header, HeaderMap, StatusCode};
use serde_json::{json, Value};

use crate::clock::unix_now;

pub const RICLOUD_TOKEN: &str = "demo-ricloud-token";
pub const RIPS_EMAIL: &str = "demo@example.test";
pub const RIPS_PASSWORD: &str = "demo-password";
pub const CLIENT_ID: &str = "demo-client";
pub const ONECLOUD_SEED: &str = "demo-onecloud-seed";
/// Lifetimes short enough to watch renewals happen.
pub const RIPS_TOKEN_SECONDS: u64 = 20;
pub const ONECLOUD_TOKEN_SECONDS: u64 = 30;

#[derive(Default)]
struct Tokens {
    /// access token → (expires at, revoked)
    access: HashMap<String, (u64, bool)>,
    refresh: HashSet<String>,
}

/// State of the mock APIs.
#[derive(Default)]
pub struct DemoApis {
    rips: Mutex<Tokens>,
    onecloud: Mutex<Tokens>,
    readycloud: Mutex<HashSet<String>>,
    counter: AtomicU64,
}

impl DemoApis {
    fn next(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// The mock APIs as a router (also used by tests).
pub fn mock_apis() -> Router {
    let apis = Arc::new(DemoApis::default());
    apis.onecloud
        .lock()
        .unwrap()
        .refresh
        .insert(ONECLOUD_SEED.into());
    Router::new()
        .route("/ricloud/{*rest}", any(ricloud))
        .route("/rips-plain/{*rest}", any(rips_plain))
        .route("/rips/oauth/v2/auth/tokens", post(rips_token))
        .route("/rips/api/{*rest}", any(rips_api))
        .route("/onecloud/api/v1/oauth/token", post(onecloud_token))
        .route("/onecloud/api/{*rest}", any(onecloud_api))
        .route("/readycloud/authorize", get(readycloud_authorize))
        .route("/readycloud/api/{*rest}", any(readycloud_api))
        .route("/admin/rips/expire", post(rips_expire))
        .route("/admin/rips/revoke", post(rips_revoke))
        .with_state(apis)
}

fn unauthorized(message: &str) -> Response {
    (StatusCode::UNAUTHORIZED, Json(json!({"detail": message}))).into_response()
}

fn ok(api: &str, req: &Request, credential: &str) -> Response {
    Json(json!({
        "api": api,
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "credential": credential,
    }))
    .into_response()
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    header_str(headers, "authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string)
}

async fn ricloud(req: Request) -> Response {
    if header_str(req.headers(), "authorization") == Some(&format!("Token {RICLOUD_TOKEN}")) {
        ok("ricloud", &req, "Token header accepted")
    } else {
        unauthorized("Invalid token.")
    }
}

async fn rips_plain(req: Request) -> Response {
    let h = req.headers();
    if header_str(h, "x-api-email") == Some(RIPS_EMAIL)
        && header_str(h, "x-api-password") == Some(RIPS_PASSWORD)
    {
        ok("rips-plain", &req, "X-API-Email/X-API-Password accepted")
    } else {
        unauthorized("Bad credentials")
    }
}

fn oauth_error(code: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": code}))).into_response()
}

/// Token endpoints of the demo take JSON only, like RIPS and OneCloud.
fn json_fields(headers: &HeaderMap, body: &[u8]) -> Option<HashMap<String, String>> {
    if !header_str(headers, "content-type").is_some_and(|c| c.starts_with("application/json")) {
        return None;
    }
    let v: Value = serde_json::from_slice(body).ok()?;
    Some(
        v.as_object()?
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect(),
    )
}

fn jwt(exp: u64, n: u64) -> String {
    let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.{}",
        e.encode(br#"{"alg":"none","typ":"JWT"}"#),
        e.encode(format!(
            r#"{{"sub":"{RIPS_EMAIL}","jti":"{n}","exp":{exp}}}"#
        )),
        e.encode(format!("demo-signature-{n}"))
    )
}

async fn rips_token(
    State(apis): State<Arc<DemoApis>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(f) = json_fields(&headers, &body) else {
        return oauth_error("invalid_request");
    };
    if f.get("client_id").map(String::as_str) != Some(CLIENT_ID) {
        return oauth_error("invalid_client");
    }
    let mut t = apis.rips.lock().unwrap();
    match f.get("grant_type").map(String::as_str) {
        Some("password") => {
            if f.get("username").map(String::as_str) != Some(RIPS_EMAIL)
                || f.get("password").map(String::as_str) != Some(RIPS_PASSWORD)
            {
                return oauth_error("invalid_grant");
            }
        }
        Some("refresh_token") => {
            if !f.get("refresh_token").is_some_and(|r| t.refresh.remove(r)) {
                return oauth_error("invalid_grant");
            }
        }
        _ => return oauth_error("unsupported_grant_type"),
    }
    let n = apis.next();
    let exp = unix_now() + RIPS_TOKEN_SECONDS;
    let access = jwt(exp, n);
    let refresh = format!("rips-refresh-{n}");
    t.access.insert(access.clone(), (exp, false));
    t.refresh.insert(refresh.clone());
    // RIPS sends expires_in too; the JWT's exp says the same.
    Json(json!({"token_type": "bearer", "expires_in": RIPS_TOKEN_SECONDS, "access_token": access, "refresh_token": refresh})).into_response()
}

async fn rips_api(State(apis): State<Arc<DemoApis>>, req: Request) -> Response {
    let token = bearer(req.headers());
    let t = apis.rips.lock().unwrap();
    match token.as_ref().and_then(|tok| t.access.get(tok)) {
        Some((_, true)) => {
            let mut r = unauthorized("Token revoked");
            r.headers_mut()
                .insert("x-api-revoked", http::HeaderValue::from_static("true"));
            r
        }
        Some((exp, false)) if *exp <= unix_now() => {
            let mut r = unauthorized("Token expired");
            r.headers_mut()
                .insert("x-api-expired", http::HeaderValue::from_static("true"));
            r
        }
        Some(_) => ok("rips", &req, "OAuth2 bearer (password grant) accepted"),
        None => unauthorized("Unknown token"),
    }
}

async fn rips_expire(State(apis): State<Arc<DemoApis>>) -> Json<Value> {
    let mut t = apis.rips.lock().unwrap();
    for (exp, _) in t.access.values_mut() {
        *exp = 0;
    }
    Json(json!({"rips": "all access tokens expired"}))
}

async fn rips_revoke(State(apis): State<Arc<DemoApis>>) -> Json<Value> {
    let mut t = apis.rips.lock().unwrap();
    for (_, revoked) in t.access.values_mut() {
        *revoked = true;
    }
    t.refresh.clear();
    Json(json!({"rips": "all access and refresh tokens revoked"}))
}

async fn onecloud_token(
    State(apis): State<Arc<DemoApis>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(f) = json_fields(&headers, &body) else {
        return oauth_error("invalid_request");
    };
    if f.get("client_id").map(String::as_str) != Some(CLIENT_ID)
        || f.get("grant_type").map(String::as_str) != Some("refresh_token")
    {
        return oauth_error("invalid_client");
    }
    let mut t = apis.onecloud.lock().unwrap();
    // Single use: a refresh token is gone once used.
    if !f.get("refresh_token").is_some_and(|r| t.refresh.remove(r)) {
        return oauth_error("invalid_grant");
    }
    let n = apis.next();
    let access = format!("onecloud-access-{n}");
    let refresh = format!("onecloud-refresh-{n}");
    t.access
        .insert(access.clone(), (unix_now() + ONECLOUD_TOKEN_SECONDS, false));
    t.refresh.insert(refresh.clone());
    Json(json!({"token_type": "Bearer", "expires_in": ONECLOUD_TOKEN_SECONDS, "access_token": access, "refresh_token": refresh})).into_response()
}

async fn onecloud_api(State(apis): State<Arc<DemoApis>>, req: Request) -> Response {
    let token = bearer(req.headers());
    let valid = token
        .as_ref()
        .and_then(|tok| apis.onecloud.lock().unwrap().access.get(tok).copied())
        .is_some_and(|(exp, _)| exp > unix_now());
    if valid {
        ok(
            "onecloud",
            &req,
            "OAuth2 bearer (rotating refresh token) accepted",
        )
    } else {
        // OneCloud answers a plain 401 on expiry.
        unauthorized("Unauthorized")
    }
}

/// Stands in for the provider's login page: approves at once and sends the
/// browser back with the token in the URL fragment.
async fn readycloud_authorize(
    State(apis): State<Arc<DemoApis>>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let (Some(redirect), Some(state)) = (q.get("redirect_uri"), q.get("state")) else {
        return (StatusCode::BAD_REQUEST, "missing redirect_uri or state").into_response();
    };
    if q.get("response_type").map(String::as_str) != Some("token") {
        return (StatusCode::BAD_REQUEST, "response_type must be token").into_response();
    }
    let n = apis.next();
    let token = format!("readycloud-access-{n}");
    apis.readycloud.lock().unwrap().insert(token.clone());
    let location =
        format!("{redirect}#access_token={token}&token_type=bearer&expires_in=3600&state={state}");
    (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
}

async fn readycloud_api(State(apis): State<Arc<DemoApis>>, req: Request) -> Response {
    let token = bearer(req.headers());
    let known = token
        .as_ref()
        .is_some_and(|t| apis.readycloud.lock().unwrap().contains(t) || t.starts_with("ready-"));
    if known {
        ok(
            "readycloud",
            &req,
            "OAuth2 bearer (implicit grant) accepted",
        )
    } else {
        unauthorized("Unauthorized")
    }
}
