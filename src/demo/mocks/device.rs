//! A device authorization server as RFC 8628 describes it (§3.1–§3.5),
//! with the error paths real servers take and oidc-provider never does
//! (`slow_down`): `POST /device` starts a flow, `POST /token` answers the
//! device-code grant (`authorization_pending`, `slow_down`,
//! `access_denied`, `expired_token`, or tokens) and the refresh grant,
//! `GET /api/...` checks the bearer token.
//!
//! What a poll is answered with comes from a script the test sets, then
//! from what "the person" did ([`DeviceMock::approve`], [`DeviceMock::deny`],
//! or approval after a delay, as `authproxy demo` does). Like a real
//! server, a poll sooner than the interval after the previous one is
//! answered `slow_down`, and the interval grows by 5 s (§3.5).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::{HeaderMap, StatusCode};
use serde_json::json;

pub const DEVICE_CLIENT_ID: &str = "device-demo";
const GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// The answer to one poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Pending,
    SlowDown,
    Denied,
    Expired,
    /// The person approved: tokens.
    Tokens,
}

#[derive(Default)]
struct Inner {
    interval: u64,
    expires_in: u64,
    access_ttl: u64,
    script: VecDeque<Answer>,
    /// What the person did (after the script ran out): `None` = nothing yet.
    decision: Option<Answer>,
    approve_at: Option<Instant>,
    approve_after: Option<Duration>,
    flows: u32,
    device_code: String,
    user_code: String,
    last_poll: Option<Instant>,
    /// Every poll: when, and the answer.
    polls: Vec<(Instant, Answer)>,
    access_token: String,
    refresh_token: String,
    issued: u32,
    refreshes: u32,
}

/// The mock; clones share it.
#[derive(Clone)]
pub struct DeviceMock {
    inner: Arc<Mutex<Inner>>,
    pub addr: SocketAddr,
}

impl DeviceMock {
    /// Serves on 127.0.0.1:0 with `interval` seconds between polls.
    pub async fn start(interval: u64) -> DeviceMock {
        let inner = Arc::new(Mutex::new(Inner {
            interval,
            expires_in: 600,
            access_ttl: 3600,
            ..Inner::default()
        }));
        let router = Router::new()
            .route("/device", post(device_authorization))
            .route("/token", post(token))
            .route("/api/{*rest}", get(api))
            .with_state(inner.clone());
        let addr = super::serve(router).await;
        DeviceMock { inner, addr }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// What the next polls are answered with, in order.
    pub fn script(&self, answers: &[Answer]) {
        self.inner.lock().unwrap().script = answers.iter().copied().collect();
    }

    /// The person approves (the next poll after the script gets tokens).
    pub fn approve(&self) {
        self.inner.lock().unwrap().decision = Some(Answer::Tokens);
    }

    /// The person refuses.
    pub fn deny(&self) {
        self.inner.lock().unwrap().decision = Some(Answer::Denied);
    }

    /// The person approves this long after each flow starts (the demo).
    pub fn approve_after(&self, delay: Duration) {
        self.inner.lock().unwrap().approve_after = Some(delay);
    }

    pub fn set_expires_in(&self, secs: u64) {
        self.inner.lock().unwrap().expires_in = secs;
    }

    pub fn set_access_ttl(&self, secs: u64) {
        self.inner.lock().unwrap().access_ttl = secs;
    }

    /// Every poll so far: when, and what it was answered.
    pub fn polls(&self) -> Vec<(Instant, Answer)> {
        self.inner.lock().unwrap().polls.clone()
    }

    /// Device flows started so far.
    pub fn flows(&self) -> u32 {
        self.inner.lock().unwrap().flows
    }

    pub fn refreshes(&self) -> u32 {
        self.inner.lock().unwrap().refreshes
    }

    pub fn user_code(&self) -> String {
        self.inner.lock().unwrap().user_code.clone()
    }
}

fn form(body: &[u8]) -> std::collections::HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

fn oauth_error(code: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(http::header::CACHE_CONTROL, "no-store")],
        Json(json!({"error": code})),
    )
        .into_response()
}

async fn device_authorization(State(inner): State<Arc<Mutex<Inner>>>, body: Bytes) -> Response {
    let form = form(&body);
    if form.get("client_id").map(String::as_str) != Some(DEVICE_CLIENT_ID) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    let mut s = inner.lock().unwrap();
    s.flows += 1;
    s.device_code = format!("dc-{}-{}", s.flows, rand::random::<u64>());
    s.user_code = format!("WDJB-{:04}", rand::random::<u16>() % 10000);
    s.last_poll = None;
    s.decision = None;
    s.approve_at = s.approve_after.map(|d| Instant::now() + d);
    Json(json!({
        "device_code": s.device_code,
        "user_code": s.user_code,
        "verification_uri": "https://device.example/activate",
        "verification_uri_complete": format!("https://device.example/activate?user_code={}", s.user_code),
        "expires_in": s.expires_in,
        "interval": s.interval,
    }))
    .into_response()
}

fn issue(s: &mut Inner) -> Response {
    s.issued += 1;
    s.access_token = format!("device-at-{}-{}", s.issued, rand::random::<u64>());
    s.refresh_token = format!("device-rt-{}-{}", s.issued, rand::random::<u64>());
    Json(json!({
        "access_token": s.access_token,
        "refresh_token": s.refresh_token,
        "token_type": "Bearer",
        "expires_in": s.access_ttl,
    }))
    .into_response()
}

async fn token(State(inner): State<Arc<Mutex<Inner>>>, body: Bytes) -> Response {
    let form = form(&body);
    let mut s = inner.lock().unwrap();
    if form.get("client_id").map(String::as_str) != Some(DEVICE_CLIENT_ID) {
        return oauth_error("invalid_client");
    }
    match form.get("grant_type").map(String::as_str) {
        Some(GRANT) => {}
        Some("refresh_token") => {
            if form.get("refresh_token") != Some(&s.refresh_token) || s.refresh_token.is_empty() {
                return oauth_error("invalid_grant");
            }
            s.refreshes += 1;
            return issue(&mut s);
        }
        _ => return oauth_error("unsupported_grant_type"),
    }
    if form.get("device_code") != Some(&s.device_code) || s.device_code.is_empty() {
        return oauth_error("invalid_grant");
    }
    let now = Instant::now();
    // §3.5: polling faster than the interval gets slow_down.
    let too_soon = s
        .last_poll
        .is_some_and(|last| now.duration_since(last) < Duration::from_secs(s.interval));
    s.last_poll = Some(now);
    let answer = if too_soon {
        Answer::SlowDown
    } else if let Some(a) = s.script.pop_front() {
        a
    } else if s.approve_at.is_some_and(|at| now >= at) {
        Answer::Tokens
    } else {
        s.decision.unwrap_or(Answer::Pending)
    };
    s.polls.push((now, answer));
    match answer {
        Answer::Pending => oauth_error("authorization_pending"),
        Answer::SlowDown => {
            s.interval += 5;
            oauth_error("slow_down")
        }
        Answer::Denied => {
            s.device_code.clear();
            oauth_error("access_denied")
        }
        Answer::Expired => {
            s.device_code.clear();
            oauth_error("expired_token")
        }
        Answer::Tokens => {
            // A device code is good for one set of tokens.
            s.device_code.clear();
            issue(&mut s)
        }
    }
}

async fn api(State(inner): State<Arc<Mutex<Inner>>>, headers: HeaderMap) -> Response {
    let s = inner.lock().unwrap();
    let sent = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match sent {
        Some(t) if !s.access_token.is_empty() && t == s.access_token => {
            Json(json!({"ok": true, "user": "device-user"})).into_response()
        }
        _ => (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_token"})),
        )
            .into_response(),
    }
}
