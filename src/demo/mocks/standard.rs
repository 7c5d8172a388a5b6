//! A standard RFC 6749 token endpoint, `POST /token`: form bodies only;
//! the client_credentials (§4.4), password (§4.3) and refresh_token (§6)
//! grants; the client authenticates with HTTP Basic or with `client_id` +
//! `client_secret` in the body (§2.3.1), never both at once.
//! `expires_in` comes as a string (as some servers send it). Refresh
//! tokens are not rotated: a refresh answer has no new one, and the old
//! one stays good (§6 allows both).

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::{json, Value};

use super::errors::{self, Refusal};
use super::provider::Received;
use super::rips::scramble;
use super::state::{ClientAuthRule, MockState, RefreshState};

pub(super) const TOKEN_PATH: &str = "/token";

/// The form fields of the body.
pub(super) fn fields(r: &Received<'_>) -> Result<BTreeMap<String, String>, Refusal> {
    if !r
        .content_type
        .starts_with("application/x-www-form-urlencoded")
    {
        return Err(errors::not_form(r.content_type, r.body));
    }
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(r.body)
        .map(|v| v.into_iter().collect())
        .map_err(|_| errors::not_form(r.content_type, r.body))
}

/// `Authorization: Basic` as (client id, secret), each form-url-decoded
/// (§2.3.1).
fn basic(authorization: Option<&str>) -> Option<(String, String)> {
    let encoded = authorization?.strip_prefix("Basic ")?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (id, secret) = raw.split_once(':')?;
    let decode = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Some((decode(id), decode(secret)))
}

pub(super) fn token(
    s: &mut MockState,
    r: &Received<'_>,
    f: &BTreeMap<String, String>,
) -> Result<Value, Refusal> {
    let field = |k: &str| f.get(k).map(String::as_str);
    let basic = basic(r.authorization);
    let (id, secret, method) = match (&basic, field("client_secret")) {
        (Some((id, _)), Some(body_secret)) => {
            return Err(errors::two_client_auths(id, body_secret));
        }
        (Some((id, secret)), None) => (id.as_str(), secret.as_str(), "client_secret_basic"),
        (None, secret) => (
            field("client_id").unwrap_or(""),
            secret.unwrap_or(""),
            "client_secret_post",
        ),
    };
    let allowed = match s.client_auth {
        ClientAuthRule::Either => true,
        ClientAuthRule::Basic => basic.is_some(),
        ClientAuthRule::Body => basic.is_none(),
    };
    if id != s.client_id || secret != s.client_secret {
        let secret = (!secret.is_empty()).then_some(secret);
        return Err(errors::unknown_client(Some(id), secret, basic.is_some()));
    }
    if !allowed {
        return Err(errors::auth_method_not_allowed(method, id, secret));
    }
    let (family, with_refresh) = match field("grant_type").unwrap_or("") {
        "client_credentials" => (0, false),
        "password" => {
            let (user, password) = (
                field("username").unwrap_or(""),
                field("password").unwrap_or(""),
            );
            if user != s.username || password != s.password {
                return Err(errors::wrong_password(user, password));
            }
            (s.new_family(), true)
        }
        "refresh_token" => {
            let rt = field("refresh_token").unwrap_or("");
            match s.refresh.get(rt) {
                Some(r) if r.state == RefreshState::Live => (r.family, false),
                _ => return Err(errors::bad_refresh(rt)),
            }
        }
        other => return Err(errors::unsupported_grant(other)),
    };
    let n = s.next();
    let access = format!("at-{n}-{:x}", scramble(n));
    let exp = s.expiry();
    s.add_access(&access, exp, family);
    let mut answer = json!({
        "access_token": access,
        "token_type": "bearer",
        "expires_in": s.ttl.to_string(),
    });
    if with_refresh {
        let refresh = format!("rt-{n}-{:x}", scramble(n + 1000));
        s.add_refresh(&refresh, family);
        answer["refresh_token"] = json!(refresh);
    }
    Ok(answer)
}
