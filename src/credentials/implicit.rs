//! Implicit-grant login (ReadyCloud style): the `state` values handed out
//! by `/_authproxy/login/<provider>` and the callback page that reads the
//! token from the URL fragment, which never reaches a server by itself.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::Rng;

/// How long a login may take between the redirect and the callback.
const STATE_TTL: Duration = Duration::from_secs(600);
/// Bound on outstanding logins, so a loop hitting /login cannot grow memory.
const MAX_PENDING: usize = 256;

/// Outstanding `state` values: single use, tied to one provider, expiring.
#[derive(Default)]
pub struct PendingLogins {
    states: Mutex<HashMap<String, (String, Instant)>>,
}

impl PendingLogins {
    /// A fresh random state for `provider`.
    pub fn begin(&self, provider: &str) -> String {
        let bytes: [u8; 24] = rand::rng().random();
        let state: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut states = self.states.lock().unwrap();
        let now = Instant::now();
        states.retain(|_, (_, at)| now.duration_since(*at) < STATE_TTL);
        if states.len() >= MAX_PENDING {
            if let Some(oldest) = states
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(k, _)| k.clone())
            {
                states.remove(&oldest);
            }
        }
        states.insert(state.clone(), (provider.to_string(), now));
        state
    }

    /// Consumes `state` if it was issued for `provider` and is still fresh.
    pub fn finish(&self, provider: &str, state: &str) -> bool {
        let mut states = self.states.lock().unwrap();
        match states.remove(state) {
            Some((p, at)) => p == provider && at.elapsed() < STATE_TTL,
            None => false,
        }
    }
}

/// The callback page. Its script reads `#access_token=…&state=…`, removes
/// the fragment from the address bar, and POSTs the values back as JSON to
/// the same path.
pub fn callback_page(provider: &str) -> String {
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
        assert!(!p.finish("other", &s), "wrong provider");
        let s = p.begin("ready");
        assert!(p.finish("ready", &s));
        assert!(!p.finish("ready", &s), "used twice");
        assert!(!p.finish("ready", "made-up"));
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
