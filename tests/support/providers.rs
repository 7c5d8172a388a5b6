//! Mock OAuth2 providers that behave like the providers' docs in the spec:
//!
//! - `Style::Rips`: JSON-only token endpoint (password and refresh grants),
//!   JWT access tokens with `exp` and no `expires_in`; the API answers 401
//!   with `X-API-Expired` for an expired token and `X-API-Revoked` for a
//!   revoked one.
//! - `Style::OneCloud`: JSON-only refresh grant; every refresh token works
//!   once, and a reused one answers `invalid_grant` and revokes the whole
//!   chain; expired access tokens get a plain 401.
//! - `Style::Standard`: RFC 6749 form-encoded endpoint, client_credentials,
//!   HTTP Basic client authentication, `expires_in` as a string.
//!
//! Every token request is recorded exactly as received so tests can assert
//! on it; failures can be injected.
#![allow(dead_code)]
// The mock returns ready-made responses early with `?`; size does not matter here.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::Engine;
use http::{HeaderMap, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Rips,
    OneCloud,
    Standard,
}

pub const CLIENT_ID: &str = "client-7";
pub const CLIENT_SECRET: &str = "client-secret-SECRET-1";
pub const USERNAME: &str = "user@example.test";
pub const PASSWORD: &str = "pass-SECRET-2";

/// One token request as the endpoint received it.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub content_type: String,
    pub authorization: Option<String>,
    /// The decoded body fields (JSON object or form).
    pub fields: BTreeMap<String, String>,
    pub status: u16,
}

impl TokenRequest {
    pub fn grant_type(&self) -> &str {
        self.fields
            .get("grant_type")
            .map(String::as_str)
            .unwrap_or("")
    }
}

#[derive(Debug, Clone)]
struct AccessToken {
    exp: u64,
    revoked: bool,
    forced_expired: bool,
}

/// One hit on the mock API.
#[derive(Debug, Clone)]
pub struct ApiHit {
    pub token: Option<String>,
    pub status: u16,
    pub body_sha256: String,
    pub method: String,
}

pub struct MockState {
    pub style: Style,
    access: HashMap<String, AccessToken>,
    /// Refresh tokens that may still be used once.
    refresh_live: HashMap<String, bool>,
    /// Every refresh token ever issued (to detect reuse).
    refresh_used: HashMap<String, bool>,
    pub reuse_detected: bool,
    pub token_requests: Vec<TokenRequest>,
    /// Token requests that arrived (counted before any injected delay).
    pub token_hits: usize,
    pub fail_queue: VecDeque<u16>,
    pub fail_always: Option<u16>,
    /// Sent as `Retry-After` with injected failures.
    pub retry_after: Option<u64>,
    /// Body to answer 200 with instead of a token (garbage tests).
    pub answer_override: Option<String>,
    pub token_delay: Duration,
    pub ttl: u64,
    pub api_hits: Vec<ApiHit>,
    /// The API answers 401 + X-API-Expired whatever the token.
    pub api_always_expired: bool,
    counter: u64,
    pub password: String,
}

/// A running mock provider (token endpoint + API) on 127.0.0.1.
#[derive(Clone)]
pub struct MockProvider {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<MockState>>,
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn jwt(exp: u64, n: u64) -> String {
    let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    format!(
        "{}.{}.{}",
        e.encode(br#"{"alg":"HS256","typ":"JWT"}"#),
        e.encode(format!(r#"{{"sub":"user","jti":"{n}","exp":{exp}}}"#)),
        e.encode(format!("sig{n}"))
    )
}

impl MockProvider {
    pub async fn start(style: Style) -> MockProvider {
        let state = Arc::new(Mutex::new(MockState {
            style,
            access: HashMap::new(),
            refresh_live: HashMap::new(),
            refresh_used: HashMap::new(),
            reuse_detected: false,
            token_requests: Vec::new(),
            token_hits: 0,
            fail_queue: VecDeque::new(),
            fail_always: None,
            retry_after: None,
            answer_override: None,
            token_delay: Duration::ZERO,
            ttl: 3600,
            api_hits: Vec::new(),
            api_always_expired: false,
            counter: 0,
            password: PASSWORD.to_string(),
        }));
        let token_path = match style {
            Style::Rips => "/oauth/v2/auth/tokens",
            Style::OneCloud => "/api/v1/oauth/token",
            Style::Standard => "/token",
        };
        let s1 = state.clone();
        let s2 = state.clone();
        let router = Router::new()
            .route(
                token_path,
                post(move |req: Request| {
                    let s = s1.clone();
                    async move { token_endpoint(s, req).await }
                }),
            )
            .fallback(move |req: Request| {
                let s = s2.clone();
                async move { api(s, req).await }
            });
        let addr = super::serve(router).await;
        MockProvider { addr, state }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn token_url(&self) -> String {
        let path = match self.state.lock().unwrap().style {
            Style::Rips => "/oauth/v2/auth/tokens",
            Style::OneCloud => "/api/v1/oauth/token",
            Style::Standard => "/token",
        };
        format!("{}{path}", self.base())
    }

    /// Makes a refresh token valid (a seed handed out "by the provider's console").
    pub fn issue_seed(&self, refresh: &str) {
        let mut s = self.state.lock().unwrap();
        s.refresh_live.insert(refresh.to_string(), true);
        s.refresh_used.insert(refresh.to_string(), false);
    }

    /// Every access token issued so far is now expired.
    pub fn expire_all(&self) {
        for t in self.state.lock().unwrap().access.values_mut() {
            t.forced_expired = true;
        }
    }

    /// Every access and refresh token is revoked (password still works).
    pub fn revoke_all(&self) {
        let mut s = self.state.lock().unwrap();
        for t in s.access.values_mut() {
            t.revoked = true;
        }
        s.refresh_live.clear();
    }

    /// Refresh tokens stop working; access tokens and password still do.
    pub fn invalidate_refresh_tokens(&self) {
        self.state.lock().unwrap().refresh_live.clear();
    }

    pub fn token_requests(&self) -> Vec<TokenRequest> {
        self.state.lock().unwrap().token_requests.clone()
    }

    pub fn token_request_count(&self) -> usize {
        self.state.lock().unwrap().token_requests.len()
    }

    pub fn api_hits(&self) -> Vec<ApiHit> {
        self.state.lock().unwrap().api_hits.clone()
    }

    pub fn reuse_detected(&self) -> bool {
        self.state.lock().unwrap().reuse_detected
    }

    pub fn set(&self, f: impl FnOnce(&mut MockState)) {
        f(&mut self.state.lock().unwrap());
    }

    /// The refresh tokens that are still valid.
    pub fn live_refresh_tokens(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .refresh_live
            .keys()
            .cloned()
            .collect()
    }
}

fn oauth_error(status: StatusCode, code: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": code, "error_description": format!("mock says {code}")})),
    )
        .into_response()
}

fn parse_fields(
    style: Style,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<BTreeMap<String, String>, Response> {
    let ct = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match style {
        Style::Rips | Style::OneCloud => {
            if !ct.starts_with("application/json") {
                return Err(oauth_error(StatusCode::BAD_REQUEST, "invalid_request"));
            }
            let v: Value = serde_json::from_slice(body)
                .map_err(|_| oauth_error(StatusCode::BAD_REQUEST, "invalid_request"))?;
            let obj = v
                .as_object()
                .ok_or_else(|| oauth_error(StatusCode::BAD_REQUEST, "invalid_request"))?;
            Ok(obj
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("<non-string>").to_string()))
                .collect())
        }
        Style::Standard => {
            if !ct.starts_with("application/x-www-form-urlencoded") {
                return Err(oauth_error(StatusCode::BAD_REQUEST, "invalid_request"));
            }
            serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
                .map(|v| v.into_iter().collect())
                .map_err(|_| oauth_error(StatusCode::BAD_REQUEST, "invalid_request"))
        }
    }
}

async fn token_endpoint(state: Arc<Mutex<MockState>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let delay = {
        let mut s = state.lock().unwrap();
        s.token_hits += 1;
        s.token_delay
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut s = state.lock().unwrap();
    let style = s.style;
    let mut log = TokenRequest {
        content_type: parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string(),
        authorization: parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        fields: BTreeMap::new(),
        status: 200,
    };
    let response = (|| {
        let fields = parse_fields(style, &parts.headers, &body)?;
        log.fields = fields.clone();
        if let Some(status) = s.fail_queue.pop_front().or(s.fail_always) {
            let mut r = (StatusCode::from_u16(status).unwrap(), "upstream trouble").into_response();
            if let Some(secs) = s.retry_after {
                r.headers_mut()
                    .insert(http::header::RETRY_AFTER, secs.into());
            }
            return Err(r);
        }
        if let Some(body) = s.answer_override.clone() {
            return Err((StatusCode::OK, body).into_response());
        }
        // Client authentication.
        match style {
            Style::Standard => {
                let expected = format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD
                        .encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
                );
                if log.authorization.as_deref() != Some(expected.as_str()) {
                    return Err(oauth_error(StatusCode::UNAUTHORIZED, "invalid_client"));
                }
            }
            Style::Rips | Style::OneCloud => {
                if fields.get("client_id").map(String::as_str) != Some(CLIENT_ID) {
                    return Err(oauth_error(StatusCode::UNAUTHORIZED, "invalid_client"));
                }
            }
        }
        let grant = fields.get("grant_type").cloned().unwrap_or_default();
        let mut new_refresh = None;
        match (style, grant.as_str()) {
            (Style::Rips, "password") => {
                if fields.get("username").map(String::as_str) != Some(USERNAME)
                    || fields.get("password") != Some(&s.password)
                {
                    return Err(oauth_error(StatusCode::BAD_REQUEST, "invalid_grant"));
                }
                new_refresh = Some(());
            }
            (Style::Rips | Style::OneCloud, "refresh_token") => {
                let rt = fields.get("refresh_token").cloned().unwrap_or_default();
                if s.refresh_live.remove(&rt).is_none() {
                    if s.refresh_used.get(&rt) == Some(&true) && style == Style::OneCloud {
                        // Reuse of a spent single-use token: revoke the chain.
                        s.reuse_detected = true;
                        s.refresh_live.clear();
                        for t in s.access.values_mut() {
                            t.revoked = true;
                        }
                    }
                    return Err(oauth_error(StatusCode::BAD_REQUEST, "invalid_grant"));
                }
                s.refresh_used.insert(rt, true);
                new_refresh = Some(());
            }
            (Style::Standard, "client_credentials") => {}
            _ => {
                return Err(oauth_error(
                    StatusCode::BAD_REQUEST,
                    "unsupported_grant_type",
                ))
            }
        }
        s.counter += 1;
        let n = s.counter;
        let exp = now() + s.ttl;
        let access = match style {
            Style::Rips => jwt(exp, n),
            _ => format!("at-{n}-{:x}", rand_suffix(n)),
        };
        s.access.insert(
            access.clone(),
            AccessToken {
                exp,
                revoked: false,
                forced_expired: false,
            },
        );
        let mut answer = json!({"access_token": access, "token_type": "bearer"});
        match style {
            Style::Rips => {}
            Style::OneCloud => answer["expires_in"] = json!(s.ttl),
            Style::Standard => answer["expires_in"] = json!(s.ttl.to_string()),
        }
        if new_refresh.is_some() {
            let rt = format!("rt-{n}-{:x}", rand_suffix(n + 1000));
            s.refresh_live.insert(rt.clone(), true);
            s.refresh_used.insert(rt.clone(), false);
            answer["refresh_token"] = json!(rt);
        }
        Ok(axum::Json(answer).into_response())
    })();
    let response = response.unwrap_or_else(|e| e);
    log.status = response.status().as_u16();
    s.token_requests.push(log);
    response
}

fn rand_suffix(n: u64) -> u64 {
    n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 16
}

async fn api(state: Arc<Mutex<MockState>>, req: Request) -> Response {
    let token = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_string);
    let rec = super::record(req).await;
    let mut s = state.lock().unwrap();
    let style = s.style;
    let verdict = match token.as_ref().and_then(|t| s.access.get(t)) {
        _ if s.api_always_expired => Err(Some("x-api-expired")),
        None => Err(None),
        Some(t) if t.revoked => Err(match style {
            Style::Rips => Some("x-api-revoked"),
            _ => None,
        }),
        Some(t) if t.forced_expired || t.exp <= now() => Err(match style {
            Style::Rips => Some("x-api-expired"),
            _ => None,
        }),
        Some(_) => Ok(()),
    };
    let response = match verdict {
        Ok(()) => super::echo_response(&rec),
        Err(header) => {
            let mut r = (
                StatusCode::UNAUTHORIZED,
                axum::Json(json!({"message": "unauthorized"})),
            )
                .into_response();
            if let Some(h) = header {
                r.headers_mut()
                    .insert(h, http::HeaderValue::from_static("1"));
            }
            r
        }
    };
    s.api_hits.push(ApiHit {
        token,
        status: response.status().as_u16(),
        body_sha256: rec.body_sha256.clone(),
        method: rec.method.clone(),
    });
    response
}
