//! ReadyCloud's implicit grant (RFC 6749 §4.2): `GET /authorize` with
//! `response_type=token&client_id&scope&redirect_uri&state` stands in for
//! the provider's login page: it approves at once (a user already logged
//! in) and sends the browser back to `redirect_uri` with the token in the
//! URL fragment. The API takes those tokens (and tokens registered with
//! [`super::MockProvider::issue_access`], as if pasted from the provider's
//! console) and answers a plain 401 otherwise.

use std::collections::BTreeMap;

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::{header, StatusCode};

use super::provider::MockProvider;
use super::rips::scramble;
use super::state::TokenRequest;

pub(super) const AUTHORIZE_PATH: &str = "/authorize";

pub(super) fn authorize(mock: &MockProvider, req: Request) -> Response {
    let q: BTreeMap<String, String> =
        url::form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let mut s = mock.state.lock().unwrap();
    s.token_hits += 1;
    let field = |k: &str| q.get(k).map(String::as_str);
    // Without a redirect_uri, or for an unknown client, the error is shown
    // to the user, not redirected (§4.2.2.1).
    let response = match (field("redirect_uri"), field("state")) {
        (Some(_), Some(_)) if field("client_id") != Some(s.client_id.as_str()) => (
            StatusCode::BAD_REQUEST,
            format!(
                "unknown client_id {}",
                field("client_id").unwrap_or("(none)")
            ),
        )
            .into_response(),
        (Some(redirect), Some(state)) => {
            let mut fragment = url::form_urlencoded::Serializer::new(String::new());
            if field("response_type") == Some("token") {
                let n = s.next();
                let token = format!("{}-access-{n}-{:x}", s.name, scramble(n));
                let exp = s.expiry();
                s.add_access(&token, exp, 0);
                fragment
                    .append_pair("access_token", &token)
                    .append_pair("token_type", "bearer")
                    .append_pair("expires_in", &s.ttl.to_string());
            } else {
                fragment.append_pair("error", "unsupported_response_type");
            }
            fragment.append_pair("state", state);
            let location = format!("{redirect}#{}", fragment.finish());
            (StatusCode::FOUND, [(header::LOCATION, location)]).into_response()
        }
        _ => (StatusCode::BAD_REQUEST, "missing redirect_uri or state").into_response(),
    };
    s.token_requests.push(TokenRequest {
        content_type: String::new(),
        authorization: None,
        fields: q,
        status: response.status().as_u16(),
    });
    response
}
