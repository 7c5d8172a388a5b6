//! A Google-style token endpoint for service accounts, as Google documents
//! it ("Using OAuth 2.0 for Server to Server Applications"): the JWT-bearer
//! grant of RFC 7523.
//!
//! - `POST /token`, form body `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`
//!   and `assertion=<JWT>`; nothing else is needed (no client id, no secret).
//! - The assertion is verified here, with the service account's public key
//!   (the receiving side, never the code that signed): RS256 only, the
//!   `kid` must be the key's, `iss` the account's e-mail, `aud` the token
//!   URL, a `scope` claim, `iat` not in the future and `exp` at most one
//!   hour after it and not past.
//! - The answer: `{"access_token", "expires_in": 3599, "token_type":
//!   "Bearer"}` and no refresh token: renewal is a new assertion.
//! - Refusals: HTTP 400 with `invalid_grant` and Google's
//!   `error_description` texts (`Invalid JWT Signature.`, `Invalid JWT:
//!   Token must be a short-lived token (60 minutes) and in a reasonable
//!   timeframe. …`), `invalid_scope`, `unsupported_grant_type`.
//! - The API at every other path takes the tokens it issued (`Bearer`);
//!   others get 401 with `WWW-Authenticate: Bearer`.
//!
//! Every assertion received is recorded as is (for tests that check each
//! renewal signed a new one, and for the secrets audit).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::{header, StatusCode};
use http_body_util::BodyExt;
use ring::signature::{RsaPublicKeyComponents, RSA_PKCS1_2048_8192_SHA256};
use serde_json::{json, Value};

use crate::clock::unix_now;

/// Google's grant type (RFC 7523 §2.1).
const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Google's access tokens live an hour; its answers say 3599.
pub const EXPIRES_IN: u64 = 3599;
/// How far `iat` may be ahead of this clock (Google allows some skew).
const SKEW: u64 = 60;

/// One assertion as received, and what the endpoint made of it.
#[derive(Debug, Clone)]
pub struct Received {
    pub assertion: String,
    /// The decoded claims (also when refused, if they decode).
    pub claims: Option<Value>,
    /// `None` when a token was issued; else the `error_description`.
    pub refused: Option<String>,
}

struct Account {
    email: String,
    kid: Option<String>,
    n: Vec<u8>,
    e: Vec<u8>,
}

#[derive(Default)]
struct State {
    received: Vec<Received>,
    /// token → expiry
    tokens: HashMap<String, u64>,
    issued: u64,
    /// Overrides [`EXPIRES_IN`] (tests of renewal).
    lifetime: Option<u64>,
}

/// The mock: serve it with [`GoogleMock::start`].
#[derive(Clone)]
pub struct GoogleMock {
    pub addr: SocketAddr,
    account: Arc<Account>,
    state: Arc<Mutex<State>>,
}

impl GoogleMock {
    /// Serves on 127.0.0.1:0 a token endpoint that knows one service
    /// account: `email`, with the RSA public key `jwk` (`n`, `e`, and its
    /// `kid` if the JWK has one).
    pub async fn start(email: &str, jwk: &Value) -> GoogleMock {
        let part = |k: &str| {
            URL_SAFE_NO_PAD
                .decode(jwk[k].as_str().expect("an RSA JWK has n and e"))
                .expect("base64url")
        };
        let account = Arc::new(Account {
            email: email.to_string(),
            kid: jwk["kid"].as_str().map(str::to_string),
            n: part("n"),
            e: part("e"),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("bound listener");
        let mock = GoogleMock {
            addr,
            account,
            state: Arc::default(),
        };
        let (token, api) = (mock.clone(), mock.clone());
        let router = Router::new()
            .route(
                "/token",
                post(move |req: Request| {
                    let mock = token.clone();
                    async move { mock.token(req).await }
                }),
            )
            .fallback(any(move |req: Request| {
                let mock = api.clone();
                async move { mock.api(req) }
            }));
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        mock
    }

    pub fn token_url(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every assertion received, in order.
    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// Tokens issued from now on live `secs` seconds.
    pub fn set_lifetime(&self, secs: u64) {
        self.state.lock().unwrap().lifetime = Some(secs);
    }

    /// Every token issued so far stops working (the API answers 401).
    pub fn revoke_all(&self) {
        self.state.lock().unwrap().tokens.clear();
    }

    async fn token(&self, req: Request) -> Response {
        let Ok(body) = req.into_body().collect().await else {
            return StatusCode::BAD_REQUEST.into_response();
        };
        let form: HashMap<String, String> = url::form_urlencoded::parse(&body.to_bytes())
            .into_owned()
            .collect();
        let grant_type = form.get("grant_type").map(String::as_str).unwrap_or("");
        if grant_type != GRANT_TYPE {
            return refusal(
                "unsupported_grant_type",
                &format!("Invalid grant_type: {grant_type}"),
            );
        }
        let Some(assertion) = form.get("assertion") else {
            return refusal("invalid_request", "Missing required parameter: assertion");
        };
        let verdict = self.verify(assertion);
        let mut state = self.state.lock().unwrap();
        let (claims, outcome) = match verdict {
            Ok(claims) => (Some(claims), Ok(())),
            Err((claims, code, description)) => (claims, Err((code, description))),
        };
        state.received.push(Received {
            assertion: assertion.clone(),
            claims,
            refused: outcome.as_ref().err().map(|(_, d)| d.to_string()),
        });
        if let Err((code, description)) = outcome {
            return refusal(code, description);
        }
        state.issued += 1;
        let access = format!("ya29.mock-{}-{:08x}", state.issued, rand::random::<u32>());
        let lifetime = state.lifetime.unwrap_or(EXPIRES_IN + 1);
        state.tokens.insert(access.clone(), unix_now() + lifetime);
        Json(json!({
            "access_token": access,
            "expires_in": lifetime.saturating_sub(1).max(1),
            "token_type": "Bearer",
        }))
        .into_response()
    }

    /// The checks Google makes, in the order of its error messages.
    #[allow(clippy::type_complexity)]
    fn verify(&self, jwt: &str) -> Result<Value, (Option<Value>, &'static str, &'static str)> {
        const BAD_SIGNATURE: &str = "Invalid JWT Signature.";
        const BAD_TIME: &str = "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe. Check your iat and exp values in the JWT claim.";
        let parts: Vec<&str> = jwt.split('.').collect();
        let decode = |p: &str| -> Option<Value> {
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).ok()?).ok()
        };
        let (Some(header), Some(claims)) = (
            parts.first().and_then(|p| decode(p)),
            parts.get(1).and_then(|p| decode(p)),
        ) else {
            return Err((None, "invalid_grant", "Invalid JWT: not a JWT."));
        };
        let fail = |code, why| Err((Some(claims.clone()), code, why));
        if parts.len() != 3 || header["alg"] != "RS256" {
            return fail("invalid_grant", BAD_SIGNATURE);
        }
        if let Some(kid) = &self.account.kid {
            if header["kid"].as_str() != Some(kid) {
                return fail("invalid_grant", BAD_SIGNATURE);
            }
        }
        let Ok(signature) = URL_SAFE_NO_PAD.decode(parts[2]) else {
            return fail("invalid_grant", BAD_SIGNATURE);
        };
        let key = RsaPublicKeyComponents {
            n: &self.account.n,
            e: &self.account.e,
        };
        let signed = format!("{}.{}", parts[0], parts[1]);
        if key
            .verify(&RSA_PKCS1_2048_8192_SHA256, signed.as_bytes(), &signature)
            .is_err()
        {
            return fail("invalid_grant", BAD_SIGNATURE);
        }
        if claims["iss"].as_str() != Some(&self.account.email) {
            return fail("invalid_grant", "Invalid grant: account not found");
        }
        if claims["aud"].as_str() != Some(&format!("http://{}/token", self.addr)) {
            return fail("invalid_grant", "Invalid JWT: Failed audience check.");
        }
        let now = unix_now();
        match (claims["iat"].as_u64(), claims["exp"].as_u64()) {
            (Some(iat), Some(exp))
                if iat <= now + SKEW && exp > now && exp > iat && exp - iat <= 3600 => {}
            _ => return fail("invalid_grant", BAD_TIME),
        }
        if claims["scope"].as_str().is_none_or(str::is_empty) {
            return fail(
                "invalid_scope",
                "Invalid OAuth scope or ID token audience provided.",
            );
        }
        Ok(claims)
    }

    fn api(&self, req: Request) -> Response {
        let token = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let valid = token.is_some_and(|t| {
            self.state
                .lock()
                .unwrap()
                .tokens
                .get(t)
                .is_some_and(|exp| unix_now() < *exp)
        });
        if !valid {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer realm=\"https://accounts.google.com/\", error=\"invalid_token\"")],
                Json(json!({"error": {"code": 401, "message": "Request had invalid authentication credentials.", "status": "UNAUTHENTICATED"}})),
            )
                .into_response();
        }
        Json(json!({"path": req.uri().path(), "method": req.method().as_str()})).into_response()
    }
}

fn refusal(code: &str, description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"error": code, "error_description": description})),
    )
        .into_response()
}
