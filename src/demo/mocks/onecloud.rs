//! OneCloud: `POST /api/v1/oauth/token` takes JSON only: `{grant_type:
//! "refresh_token", client_id, refresh_token}`. Every refresh token works
//! once and the answer carries the next one. A spent one presented again
//! is taken for a stolen token: `invalid_grant`, and every token of its
//! chain (live refresh token, access tokens) is revoked — reuse detection,
//! as Auth0 and Okta do it. The bearer access token gets a plain 401 once
//! expired or revoked.
//!
//! With a grace window (`MockState::rotation_grace`) a spent refresh token
//! is taken once more within it, as long as the tokens its first answer
//! carried are unused (a client that lost that answer retries); those are
//! then superseded and only the newest pair is valid (as Airlock IAM
//! documents its grace period). Past the window, or once the chain moved
//! on, reuse is detected as without it.

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::{json, Value};

use super::errors::{self, Refusal};
use super::rips::scramble;
use super::state::{MockState, RefreshState, Spent};

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
    let family = match s.refresh.get(rt).map(|r| (r.state, r.family)) {
        Some((RefreshState::Live, family)) => family,
        Some((RefreshState::Spent, family)) => {
            if !regrace(s, rt) {
                s.reuse_detected = true;
                s.revoke_family(family);
                return Err(errors::reused_refresh(rt));
            }
            family
        }
        _ => return Err(errors::bad_refresh(rt)),
    };
    let n = s.next();
    let access = format!("at-{n}-{:x}", scramble(n));
    let exp = s.expiry();
    s.add_access(&access, exp, family);
    let refresh = format!("rt-{n}-{:x}", scramble(n + 1000));
    s.add_refresh(&refresh, family);
    if let Some(r) = s.refresh.get_mut(rt) {
        r.state = RefreshState::Spent;
        let regraced = r.spent.as_ref().is_some_and(|p| p.regraced);
        r.spent = Some(Spent {
            at: r.spent.as_ref().map_or_else(Instant::now, |p| p.at),
            next_refresh: refresh.clone(),
            next_access: access.clone(),
            regraced,
        });
    }
    Ok(json!({
        "token_type": "Bearer",
        "expires_in": s.ttl,
        "access_token": access,
        "refresh_token": refresh,
    }))
}

/// Whether spent refresh token `rt` is taken once more: within the grace
/// window of its first use, not taken again before, and the tokens its
/// answer carried never used. If so, those are superseded (revoked).
fn regrace(s: &mut MockState, rt: &str) -> bool {
    let grace = s.rotation_grace;
    let Some(spent) = s.refresh.get(rt).and_then(|r| r.spent.clone()) else {
        return false;
    };
    let next_unused = s
        .refresh
        .get(&spent.next_refresh)
        .is_some_and(|r| r.state == RefreshState::Live)
        && !s.access.get(&spent.next_access).is_some_and(|a| a.used);
    if spent.regraced || spent.at.elapsed() >= grace || !next_unused {
        return false;
    }
    if let Some(r) = s.refresh.get_mut(&spent.next_refresh) {
        r.state = RefreshState::Revoked;
    }
    if let Some(a) = s.access.get_mut(&spent.next_access) {
        a.revoked = true;
    }
    if let Some(r) = s.refresh.get_mut(rt) {
        r.spent = Some(Spent {
            regraced: true,
            ..spent
        });
    }
    s.grace_reuses += 1;
    true
}
