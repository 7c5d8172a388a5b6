//! One mock provider: a token endpoint (or, for the implicit grant, an
//! authorize endpoint) and the API that takes its tokens, on one router.
//! The style decides what the endpoint accepts and how the API refuses;
//! this file holds what every style shares: serving, recording every
//! request, injected failures and delays, the API's verdict, the control
//! endpoints. The state and its knobs are in state.rs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::serve::ListenerExt;
use axum::Router;
use http::{header, HeaderMap, HeaderValue, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};

use super::echo::{echo_json, record};
use super::errors::{self, Refusal};
use super::state::{ApiHit, MockState, RefreshState, Style, TokenRequest};
use super::{implicit, onecloud, rips, standard};
use crate::clock::unix_now;

/// A token request, as the style's endpoint sees it.
pub(super) struct Received<'a> {
    pub content_type: &'a str,
    pub authorization: Option<&'a str>,
    pub body: &'a [u8],
}

/// A mock provider. Served on its own port by [`MockProvider::start`], or
/// mounted under a path of a bigger router ([`MockProvider::new`] +
/// [`MockProvider::router`], as the demo does).
#[derive(Clone)]
pub struct MockProvider {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<MockState>>,
    /// Where the router is mounted on `addr` ("" at the root).
    prefix: String,
}

impl MockProvider {
    /// Serves a new mock on 127.0.0.1:0 for as long as the runtime lives.
    pub async fn start(style: Style) -> MockProvider {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        MockProvider::start_on(listener, style)
    }

    /// Serves a new mock on `listener` (a benchmark's, with a deep accept
    /// queue), counting connections and turning Nagle off on each.
    pub fn start_on(listener: TcpListener, style: Style) -> MockProvider {
        let addr = listener.local_addr().expect("bound listener");
        let mock = MockProvider::new(style, addr, "");
        let state = mock.state.clone();
        let listener = listener.tap_io(move |tcp: &mut TcpStream| {
            let _ = tcp.set_nodelay(true);
            state.lock().unwrap().counters.connections += 1;
        });
        let router = mock.router();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        mock
    }

    /// A mock to be mounted at `prefix` of a server on `addr`.
    pub fn new(style: Style, addr: SocketAddr, prefix: &str) -> MockProvider {
        MockProvider {
            addr,
            state: Arc::new(Mutex::new(MockState::new(style))),
            prefix: prefix.to_string(),
        }
    }

    /// The token (or authorize) endpoint, the control endpoints under
    /// `/_mock/` and, at every other path, the API.
    pub fn router(&self) -> Router {
        let style = self.state.lock().unwrap().style;
        let this = self.clone();
        let endpoint = match style {
            Style::Implicit => get(move |req: Request| {
                let this = this.clone();
                async move { implicit::authorize(&this, req) }
            }),
            _ => post(move |req: Request| {
                let this = this.clone();
                async move { this.token_endpoint(req).await }
            }),
        };
        let api = {
            let this = self.clone();
            any(move |req: Request| {
                let this = this.clone();
                async move { this.api(req).await }
            })
        };
        let (expire, revoke, stats) = (self.clone(), self.clone(), self.clone());
        Router::new()
            .route(style.token_path(), endpoint)
            .route(
                "/_mock/expire",
                post(move || async move {
                    expire.expire_all();
                    "expired"
                }),
            )
            .route(
                "/_mock/revoke",
                post(move || async move {
                    revoke.revoke_all();
                    "revoked"
                }),
            )
            .route(
                "/_mock/stats",
                get(move || async move { axum::Json(stats.stats()) }),
            )
            .route("/", api.clone())
            .route("/{*rest}", api)
    }

    pub fn base(&self) -> String {
        format!("http://{}{}", self.addr, self.prefix)
    }

    pub fn token_url(&self) -> String {
        let path = self.state.lock().unwrap().style.token_path();
        format!("{}{path}", self.base())
    }

    /// The authorize endpoint (`Style::Implicit`).
    pub fn authorize_url(&self) -> String {
        format!("{}{}", self.base(), implicit::AUTHORIZE_PATH)
    }

    /// Makes a refresh token valid, the start of a new chain (a seed handed
    /// out "by the provider's console").
    pub fn issue_seed(&self, refresh: &str) {
        let mut s = self.state.lock().unwrap();
        let family = s.new_family();
        s.add_refresh(refresh, family);
    }

    /// Makes an access token valid for `ttl` (one pasted by hand).
    pub fn issue_access(&self, token: &str) {
        let mut s = self.state.lock().unwrap();
        let exp = s.expiry();
        s.add_access(token, exp, 0);
    }

    /// Every access token issued so far is now expired.
    pub fn expire_all(&self) {
        let mut s = self.state.lock().unwrap();
        for t in s.access.values_mut() {
            t.forced_expired = true;
        }
        s.replays.refused_paths.clear();
        s.replays.after_token.clear();
    }

    /// Every access and refresh token is revoked (the password still works).
    pub fn revoke_all(&self) {
        let mut s = self.state.lock().unwrap();
        for t in s.access.values_mut() {
            t.revoked = true;
        }
        for r in s.refresh.values_mut() {
            r.state = RefreshState::Revoked;
        }
    }

    /// Refresh tokens stop working; access tokens and the password still do.
    pub fn invalidate_refresh_tokens(&self) {
        for r in self.state.lock().unwrap().refresh.values_mut() {
            r.state = RefreshState::Revoked;
        }
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

    /// Spent refresh tokens taken once more within the grace window.
    pub fn grace_reuses(&self) -> u64 {
        self.state.lock().unwrap().grace_reuses
    }

    /// Changes knobs: `mock.set(|s| s.fail_always = Some(503))`.
    pub fn set(&self, f: impl FnOnce(&mut MockState)) {
        f(&mut self.state.lock().unwrap());
    }

    /// The refresh tokens that are still valid.
    pub fn live_refresh_tokens(&self) -> Vec<String> {
        let s = self.state.lock().unwrap();
        s.refresh
            .iter()
            .filter(|(_, r)| r.state == RefreshState::Live)
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// Every access token issued (or registered) so far.
    pub fn access_tokens(&self) -> Vec<String> {
        self.state.lock().unwrap().access.keys().cloned().collect()
    }

    /// Token requests, refusals, API answers, connections and replay
    /// timings, as `GET /_mock/stats` serves them.
    pub fn stats(&self) -> Value {
        self.state.lock().unwrap().stats()
    }

    async fn token_endpoint(&self, req: Request) -> Response {
        let (parts, body) = req.into_parts();
        let body = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => return StatusCode::BAD_REQUEST.into_response(),
        };
        let delay = {
            let mut s = self.state.lock().unwrap();
            s.token_hits += 1;
            s.token_delay
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut s = self.state.lock().unwrap();
        let received = Received {
            content_type: header_str(&parts.headers, header::CONTENT_TYPE.as_str()).unwrap_or(""),
            authorization: header_str(&parts.headers, header::AUTHORIZATION.as_str()),
            body: &body,
        };
        let mut log = TokenRequest {
            content_type: received.content_type.to_string(),
            authorization: received.authorization.map(str::to_string),
            fields: BTreeMap::new(),
            status: 200,
        };
        let parsed = match s.style {
            Style::Standard => standard::fields(&received),
            _ => json_fields(&received),
        };
        let response = match parsed {
            Err(refusal) => refusal.into_response(),
            Ok(fields) => {
                log.fields = fields.clone();
                if let Some(status) = s.fail_queue.pop_front().or(s.fail_always) {
                    let status =
                        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                    errors::failure_page(status, parts.uri.path(), &body, s.retry_after)
                } else if let Some(text) = s.answer_override.clone() {
                    (StatusCode::OK, text).into_response()
                } else {
                    let answer = match s.style {
                        Style::Rips => rips::token(&mut s, &fields),
                        Style::OneCloud => onecloud::token(&mut s, &fields),
                        Style::Standard => standard::token(&mut s, &received, &fields),
                        Style::Implicit => unreachable!("the implicit style has no token endpoint"),
                    };
                    match answer {
                        Ok(v) => {
                            let mut r = axum::Json(v).into_response();
                            r.headers_mut().insert(
                                header::CACHE_CONTROL,
                                HeaderValue::from_static("no-store"),
                            );
                            r
                        }
                        Err(refusal) => {
                            if refusal.code == "invalid_grant" {
                                s.counters.token_refused += 1;
                            }
                            refusal.into_response()
                        }
                    }
                }
            }
        };
        log.status = response.status().as_u16();
        s.token_requests.push(log);
        response
    }

    async fn api(&self, req: Request) -> Response {
        let token = header_str(req.headers(), header::AUTHORIZATION.as_str())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::to_string);
        let path = req.uri().path().to_string();
        let recording = self.state.lock().unwrap().record_api;
        let rec = if recording {
            Some(record(req).await)
        } else {
            drop(req);
            None
        };
        let mut s = self.state.lock().unwrap();
        let refusal = match token.as_ref().and_then(|t| s.access.get(t)) {
            _ if s.api_always_expired => Some(("token expired", Some("x-api-expired"))),
            None => Some(("unknown token", None)),
            Some(t) if t.revoked => Some(("token revoked", rips::revoked_header(s.style))),
            Some(t) if t.forced_expired || t.exp <= unix_now() => {
                Some(("token expired", rips::expired_header(s.style)))
            }
            Some(_) => None,
        };
        let response = match refusal {
            None => {
                if let Some(a) = token.as_ref().and_then(|t| s.access.get_mut(t)) {
                    a.used = true;
                }
                s.counters.api_ok += 1;
                if s.replays.refused_paths.remove(&path) {
                    let after = s.replays.issued_at.map(|at| at.elapsed());
                    s.replays.after_token.extend(after);
                }
                let mut answer = match &rec {
                    Some(rec) => echo_json(rec, s.echo_headers),
                    None => json!({"ok": true}),
                };
                answer["api"] = json!(s.name);
                answer["credential"] = json!(s.style.credential());
                axum::Json(answer).into_response()
            }
            Some((message, header)) => {
                s.counters.api_401 += 1;
                s.replays.refused_paths.insert(path);
                let mut r = (
                    StatusCode::UNAUTHORIZED,
                    axum::Json(json!({"error": "unauthorized", "message": message})),
                )
                    .into_response();
                if let Some(h) = header {
                    r.headers_mut().insert(h, HeaderValue::from_static("1"));
                }
                r
            }
        };
        if let Some(rec) = rec {
            s.api_hits.push(ApiHit {
                token,
                status: response.status().as_u16(),
                body_sha256: rec.body_sha256,
                method: rec.method,
            });
        }
        response
    }
}

pub(super) fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The fields of a JSON-only token endpoint's body (RIPS, OneCloud).
fn json_fields(r: &Received<'_>) -> Result<BTreeMap<String, String>, Refusal> {
    if !r.content_type.starts_with("application/json") {
        return Err(errors::not_json(r.content_type, r.body));
    }
    let value: Value =
        serde_json::from_slice(r.body).map_err(|_| errors::not_json(r.content_type, r.body))?;
    let object = value
        .as_object()
        .ok_or_else(|| errors::not_json(r.content_type, r.body))?;
    Ok(object
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("<non-string>").to_string()))
        .collect())
}

/// Seconds since the Unix epoch (what the mocks' `exp` claims count in).
pub fn now() -> u64 {
    unix_now()
}
