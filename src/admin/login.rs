//! The browser login of implicit-grant providers (ReadyCloud style) and of
//! authorization-code providers (with PKCE S256):
//! `/_authproxy/login/<provider>` redirects to the provider with a fresh
//! single-use `state`; the provider sends the browser back to
//! `/_authproxy/callback/<provider>`. Implicit: its page reads the token
//! from the URL fragment (which never reaches a server by itself) and POSTs
//! it here. Authorization code: the `code` in the query is exchanged at
//! once with the PKCE verifier kept beside the `state`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, Version};
use rand::Rng;
use serde::Deserialize;
use serde_json::json;

use super::{json_body, oauth_provider, Admin};
use crate::app::AppState;
use crate::config::Grant;
use crate::credentials::OAuthProvider;
use crate::error::ProxyError;
use crate::proxy::security;
use crate::secret::Secret;

fn implicit_provider(app: &AppState, name: &str) -> Result<Arc<OAuthProvider>, ProxyError> {
    let p = oauth_provider(app, name)?;
    if p.config().grant != Grant::Implicit {
        return Err(ProxyError::BadRequest(format!(
            "provider {name} uses grant = \"{}\"; this page is only for grant = \"implicit\"",
            p.config().grant.as_str()
        )));
    }
    Ok(p)
}

/// A provider with a browser login: implicit or authorization code.
fn browser_provider(app: &AppState, name: &str) -> Result<Arc<OAuthProvider>, ProxyError> {
    let p = oauth_provider(app, name)?;
    match p.config().grant {
        Grant::Implicit | Grant::AuthorizationCode => Ok(p),
        Grant::DeviceCode => Err(ProxyError::BadRequest(format!(
            "provider {name} uses grant = \"device_code\": run `authproxy login {name}` (or POST /_authproxy/device/{name}) and enter the code it prints"
        ))),
        g => Err(ProxyError::BadRequest(format!(
            "provider {name} uses grant = \"{}\"; browser login is only for grant = \"implicit\" or \"authorization_code\"",
            g.as_str()
        ))),
    }
}

/// A PKCE pair (RFC 7636 §4.1, §4.2): a verifier of 32 random bytes
/// (43 characters) and its S256 challenge.
fn pkce_pair() -> (Secret, String) {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use sha2::Digest;
    let bytes: zeroize::Zeroizing<[u8; 32]> = zeroize::Zeroizing::new(rand::rng().random());
    let verifier = Secret::new(URL_SAFE_NO_PAD.encode(*bytes));
    let challenge = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.expose().as_bytes()));
    (verifier, challenge)
}

/// `http://` and the authority the Host check accepted (on HTTP/2 the
/// `:authority`, never a `host` header beside it), so the provider sends
/// the browser back to this proxy and nowhere else.
fn own_base(version: Version, uri: &Uri, headers: &HeaderMap, app: &AppState) -> String {
    match security::authority(version, uri, headers) {
        Ok(Some(host)) => format!("http://{host}"),
        _ => format!("http://{}", app.runtime().config.server.listen),
    }
}

/// What every answer of the login pages carries: never framed (a page
/// that frames them could run or overlay them), never cached, no
/// `Referer` with a token or state to the next site, and no window handle
/// for the page that opened them: a page of the proxy's origin (served
/// through a pass-through route) that opened the login in a popup could
/// otherwise read the token from the callback's URL fragment.
pub(super) async fn page_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(
            "default-src 'none'; frame-ancestors 'none'",
        ));
    response
}

/// 302 to the provider's authorize URL with a fresh single-use `state`.
pub(super) async fn login(
    State(admin): State<Arc<Admin>>,
    Path(name): Path<String>,
    version: Version,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ProxyError> {
    let p = browser_provider(&admin.app, &name)?;
    let cfg = p.config();
    // Configured, or from the issuer's metadata.
    let mut url = p
        .authorize_url()
        .await
        .map_err(|e| ProxyError::credential(&name, e))?;
    let redirect_uri = match &cfg.redirect_uri {
        Some(u) => u.to_string(),
        None => format!(
            "{}/_authproxy/callback/{name}",
            own_base(version, &uri, &headers, &admin.app)
        ),
    };
    let code_flow = cfg.grant == Grant::AuthorizationCode;
    let (verifier, challenge) = match code_flow {
        true => {
            let (v, c) = pkce_pair();
            (Some(v), Some(c))
        }
        false => (None, None),
    };
    let login_state = admin.logins.begin_with(&name, verifier, &redirect_uri);
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", if code_flow { "code" } else { "token" });
        if let Some(id) = &cfg.client_id {
            q.append_pair("client_id", id.expose());
        }
        if let Some(scope) = &cfg.scope {
            q.append_pair("scope", scope);
        }
        q.append_pair("redirect_uri", &redirect_uri);
        q.append_pair("state", &login_state);
        if let Some(challenge) = &challenge {
            q.append_pair("code_challenge", challenge);
            q.append_pair("code_challenge_method", "S256");
        }
    }
    tracing::info!(provider = %name, "login started; redirecting to the provider");
    Ok((
        StatusCode::FOUND,
        [(
            header::LOCATION,
            HeaderValue::from_str(url.as_str())
                .map_err(|_| ProxyError::Internal("authorize URL".into()))?,
        )],
    )
        .into_response())
}

pub(super) async fn callback_get(
    State(admin): State<Arc<Admin>>,
    Path(name): Path<String>,
    uri: Uri,
) -> Result<Response, ProxyError> {
    let p = browser_provider(&admin.app, &name)?;
    if p.config().grant == Grant::AuthorizationCode {
        return Ok(code_callback(&admin, &p, &name, &uri).await);
    }
    Ok((
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
            ),
        ],
        callback_page(&name),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallbackBody {
    access_token: Secret,
    #[serde(default)]
    expires_in: Option<u64>,
    state: String,
    #[serde(default)]
    token_type: Option<String>,
}

pub(super) async fn callback_post(
    State(admin): State<Arc<Admin>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ProxyError> {
    let p = implicit_provider(&admin.app, &name)?;
    let body: CallbackBody = json_body(&headers, &body)?;
    if admin.logins.finish(&name, &body.state).is_none() {
        return Err(ProxyError::BadRequest(format!(
            "unknown, used or expired login state; start again at /_authproxy/login/{name}"
        )));
    }
    let _ = body.token_type;
    p.set_token(body.access_token, body.expires_in, None)
        .await
        .map_err(ProxyError::rejected_token)?;
    tracing::info!(provider = %name, "login completed; token stored");
    Ok(crate::http::body::json(
        http::StatusCode::OK,
        &json!({"status": "ok", "provider": name}),
    ))
}

/// How long a login may take between the redirect and the callback.
const STATE_TTL: Duration = Duration::from_secs(600);
/// Bound on outstanding logins, so a loop hitting /login cannot grow memory.
const MAX_PENDING: usize = 256;

/// What a login started with: the provider, when, and for an
/// authorization-code login the PKCE verifier and the `redirect_uri` the
/// code was issued for (the token request repeats it, RFC 6749 §4.1.3).
pub struct LoginStart {
    provider: String,
    at: Instant,
    verifier: Option<Secret>,
    redirect_uri: String,
}

/// Outstanding `state` values: single use, tied to one provider, expiring.
#[derive(Default)]
pub struct PendingLogins {
    states: Mutex<HashMap<String, LoginStart>>,
}

impl PendingLogins {
    /// A fresh random state for `provider`.
    #[cfg(test)]
    pub fn begin(&self, provider: &str) -> String {
        self.begin_with(provider, None, "")
    }

    /// A fresh random state for `provider`, kept with the PKCE verifier
    /// (authorization code) and the redirect URI.
    pub fn begin_with(
        &self,
        provider: &str,
        verifier: Option<Secret>,
        redirect_uri: &str,
    ) -> String {
        let bytes: [u8; 24] = rand::rng().random();
        let state: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut states = self.states.lock().unwrap();
        let now = Instant::now();
        states.retain(|_, s| now.duration_since(s.at) < STATE_TTL);
        if states.len() >= MAX_PENDING {
            if let Some(oldest) = states
                .iter()
                .min_by_key(|(_, s)| s.at)
                .map(|(k, _)| k.clone())
            {
                states.remove(&oldest);
            }
        }
        states.insert(
            state.clone(),
            LoginStart {
                provider: provider.to_string(),
                at: now,
                verifier,
                redirect_uri: redirect_uri.to_string(),
            },
        );
        state
    }

    /// Consumes `state` if it was issued for `provider` and is still
    /// fresh, and returns what the login started with.
    pub fn finish(&self, provider: &str, state: &str) -> Option<LoginStart> {
        let mut states = self.states.lock().unwrap();
        states
            .remove(state)
            .filter(|s| s.provider == provider && s.at.elapsed() < STATE_TTL)
    }
}

#[derive(Deserialize)]
struct CodeCallback {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// The authorization-code callback: checks and spends the `state`, then
/// exchanges the code with the verifier kept for it. Answers a short page
/// (the person reads it; a script reads `data-result`).
async fn code_callback(admin: &Admin, p: &OAuthProvider, name: &str, uri: &Uri) -> Response {
    let q: CodeCallback = match serde_urlencoded::from_str(uri.query().unwrap_or("")) {
        Ok(q) => q,
        Err(_) => {
            return result_page(
                StatusCode::BAD_REQUEST,
                name,
                false,
                "The callback's query is malformed.".into(),
            );
        }
    };
    // The state is spent whatever the outcome: a refused login is started again.
    let start = q
        .state
        .as_deref()
        .and_then(|s| admin.logins.finish(name, s));
    let Some(start) = start else {
        return result_page(
            StatusCode::BAD_REQUEST,
            name,
            false,
            format!(
                "Unknown, used or expired login state: start again at /_authproxy/login/{name}."
            ),
        );
    };
    if let Some(error) = q.error {
        let detail = q
            .error_description
            .map(|d| format!(" ({})", crate::text::sanitize(&d, 200)))
            .unwrap_or_default();
        tracing::warn!(provider = %name, error = %crate::text::sanitize(&error, 64), "the provider refused the login");
        return result_page(
            StatusCode::BAD_REQUEST,
            name,
            false,
            format!(
                "The provider refused the login: {}{detail}.",
                crate::text::sanitize(&error, 64)
            ),
        );
    }
    let (Some(code), Some(verifier)) = (q.code, start.verifier) else {
        return result_page(
            StatusCode::BAD_REQUEST,
            name,
            false,
            "No code in the callback.".into(),
        );
    };
    match p
        .exchange_code(&Secret::new(code), &verifier, &start.redirect_uri)
        .await
    {
        Ok(()) => result_page(
            StatusCode::OK,
            name,
            true,
            format!("Logged in: authproxy now holds a token for {name}. You can close this tab."),
        ),
        Err(e) => result_page(
            StatusCode::BAD_GATEWAY,
            name,
            false,
            format!("The code exchange failed: {e}."),
        ),
    }
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn result_page(status: StatusCode, provider: &str, ok: bool, text: String) -> Response {
    let page = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\"><title>authproxy: login for {p}</title></head>\n<body data-result=\"{r}\">\n<h1>authproxy: login for {p}</h1>\n<p id=\"msg\">{t}</p>\n</body>\n</html>\n",
        p = html_escape(provider),
        r = if ok { "ok" } else { "error" },
        t = html_escape(&text),
    );
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        page,
    )
        .into_response()
}

/// The callback page. Its script reads `#access_token=…&state=…`, removes
/// the fragment from the address bar, and POSTs the values back as JSON to
/// the same path.
fn callback_page(provider: &str) -> String {
    CALLBACK_HTML.replace("{provider}", provider)
}

const CALLBACK_HTML: &str = r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>authproxy: login for {provider}</title>
<style>body{font-family:system-ui,sans-serif;max-width:40em;margin:4em auto;padding:0 1em}</style></head>
<body>
<h1>authproxy: login for {provider}</h1>
<p id="msg">Completing the login…</p>
<script>
(function () {
  var msg = document.getElementById("msg");
  var params = new URLSearchParams(location.hash.slice(1));
  function done(ok, text) {
    msg.textContent = text;
    document.body.setAttribute("data-result", ok ? "ok" : "error");
  }
  if (!params.get("access_token")) {
    done(false, params.get("error")
      ? "The provider refused the login: " + params.get("error")
      : "No access_token in the URL fragment. Start again at /_authproxy/login/{provider}.");
    return;
  }
  var body = { access_token: params.get("access_token"), state: params.get("state") || "" };
  if (params.get("expires_in")) { body.expires_in = Number(params.get("expires_in")); }
  // Keep the token out of the address bar and the history.
  history.replaceState(null, "", location.pathname);
  fetch(location.pathname, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body)
  }).then(function (r) {
    return r.json().then(function (j) {
      done(r.ok, r.ok ? "Logged in: authproxy now holds a token for {provider}. You can close this tab."
                      : "Login failed: " + (j.message || r.status));
    });
  }).catch(function (e) { done(false, "Login failed: " + e); });
})();
</script>
</body>
</html>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_is_single_use_and_bound_to_provider() {
        let p = PendingLogins::default();
        let s = p.begin("ready");
        assert_eq!(s.len(), 48);
        assert!(p.finish("other", &s).is_none(), "wrong provider");
        let s = p.begin("ready");
        assert!(p.finish("ready", &s).is_some());
        assert!(p.finish("ready", &s).is_none(), "used twice");
        assert!(p.finish("ready", "made-up").is_none());
    }

    #[test]
    fn pending_logins_are_bounded() {
        let p = PendingLogins::default();
        for _ in 0..(MAX_PENDING + 50) {
            p.begin("x");
        }
        assert!(p.states.lock().unwrap().len() <= MAX_PENDING);
    }
}
