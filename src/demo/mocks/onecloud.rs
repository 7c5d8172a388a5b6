//! OneCloud: `POST /api/v1/oauth/token` takes JSON only: `{grant_type:
//! "refresh_token", client_id, refresh_token}`. Every refresh token works
//! once and the answer carries the next one. A spent one presented again
//! is taken for a stolen token: `invalid_grant`, and every token of its
//! chain (live refresh token, access tokens) is revoked — reuse detection,
//! as Auth0 and Okta do it. The bearer access token gets a plain 401 once
//! expired or revoked.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::errors::{self, Refusal};
use super::rips::scramble;
use super::state::{MockState, RefreshState};

pub(super) const TOKEN_PATH: &str = "/api/v1/oauth/token";

pub(super) fn token(s: &mut MockState, f: &BTreeMap<String, String>) -> Result<Value, Refusal> {
    let field = |k: &str| f.get(k).map(String::as_str);
    if field("client_id") != Some(s.client_id.as_str()) {
        return Err(errors::unknown_client(field("client_id"), None, false));
    }
    match field("grant_type").unwrap_or("") {
        "refresh_token" => {}
        other => return Err(errors::unsupported_grant(other)),
    }
    let rt = field("refresh_token").unwrap_or("");
    let family = match s.refresh.get_mut(rt) {
        Some(r) if r.state == RefreshState::Live => {
            r.state = RefreshState::Spent;
            r.family
        }
        Some(r) if r.state == RefreshState::Spent => {
            let family = r.family;
            s.reuse_detected = true;
            s.revoke_family(family);
            return Err(errors::reused_refresh(rt));
        }
        _ => return Err(errors::bad_refresh(rt)),
    };
    let n = s.next();
    let access = format!("at-{n}-{:x}", scramble(n));
    let exp = s.expiry();
    s.add_access(&access, exp, family);
    let refresh = format!("rt-{n}-{:x}", scramble(n + 1000));
    s.add_refresh(&refresh, family);
    Ok(json!({
        "token_type": "Bearer",
        "expires_in": s.ttl,
        "access_token": access,
        "refresh_token": refresh,
    }))
}
