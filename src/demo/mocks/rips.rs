//! RIPS: `POST /oauth/v2/auth/tokens` takes JSON only (a form body gets
//! the JSON-only API's `invalid_request`): `{client_id, username,
//! password, grant_type: "password"}` or `{grant_type: "refresh_token",
//! refresh_token, client_id}`. Access tokens are JWTs with `exp`; the
//! answer has `expires_in` on some tokens and not on others (the JWT
//! always says). A refresh token works once. The API answers 401 with
//! `X-API-Expired` (refresh) or `X-API-Revoked` (log in again).

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::{json, Value};

use super::errors::{self, Refusal};
use super::state::{ExpiresIn, MockState, RefreshState, Style};

pub(super) const TOKEN_PATH: &str = "/oauth/v2/auth/tokens";

pub(super) fn token(s: &mut MockState, f: &BTreeMap<String, String>) -> Result<Value, Refusal> {
    let field = |k: &str| f.get(k).map(String::as_str);
    if field("client_id") != Some(s.client_id.as_str()) {
        return Err(errors::unknown_client(field("client_id"), None, false));
    }
    let family = match field("grant_type").unwrap_or("") {
        "password" => {
            let (user, password) = (
                field("username").unwrap_or(""),
                field("password").unwrap_or(""),
            );
            if user != s.username || password != s.password {
                return Err(errors::wrong_password(user, password));
            }
            s.new_family()
        }
        "refresh_token" => {
            let rt = field("refresh_token").unwrap_or("");
            match s.refresh.get_mut(rt) {
                Some(r) if r.state == RefreshState::Live => {
                    r.state = RefreshState::Spent;
                    r.family
                }
                _ => return Err(errors::bad_refresh(rt)),
            }
        }
        other => return Err(errors::unsupported_grant(other)),
    };
    let n = s.next();
    let exp = s.expiry();
    let access = jwt(&s.username, exp, n);
    s.add_access(&access, exp, family);
    let refresh = format!("rt-{n}-{:x}", scramble(n + 1000));
    s.add_refresh(&refresh, family);
    let mut answer =
        json!({"token_type": "bearer", "access_token": access, "refresh_token": refresh});
    let with_expires_in = match s.expires_in {
        ExpiresIn::Always => true,
        ExpiresIn::Never => false,
        ExpiresIn::Alternate => n % 2 == 0,
    };
    if with_expires_in {
        answer["expires_in"] = json!(s.ttl);
    }
    Ok(answer)
}

/// An HS256-shaped JWT (the proxy reads `exp` without verifying it; the
/// mock's API checks the token by value).
fn jwt(sub: &str, exp: u64, n: u64) -> String {
    let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let claims = json!({"sub": sub, "jti": n.to_string(), "exp": exp});
    format!(
        "{}.{}.{}",
        e.encode(br#"{"alg":"HS256","typ":"JWT"}"#),
        e.encode(claims.to_string()),
        e.encode(format!("sig{n}-{:x}", scramble(n)))
    )
}

/// Token suffixes that differ in every digit from one token to the next.
pub(super) fn scramble(n: u64) -> u64 {
    n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 16
}

/// The header of the API's 401 for a revoked token.
pub(super) fn revoked_header(style: Style) -> Option<&'static str> {
    (style == Style::Rips).then_some("x-api-revoked")
}

/// The header of the API's 401 for an expired token.
pub(super) fn expired_header(style: Style) -> Option<&'static str> {
    (style == Style::Rips).then_some("x-api-expired")
}
