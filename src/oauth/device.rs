//! The device authorization answer of RFC 8628 §3.2: what a device flow
//! shows the person (verification URI, user code) and polls with (device
//! code, interval). Untrusted input: the texts shown are checked to be
//! short and printable (a user code with terminal escapes must not reach
//! the terminal of `authproxy login`), the URIs to be http(s), the numbers
//! bounded.

use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::error::TokenError;
use crate::secret::Secret;

/// RFC 8628 §3.5: the interval when the answer gives none.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// RFC 8628 §3.5: `slow_down` adds this much to the interval.
pub const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);
/// The longest interval taken from an answer (a larger one would leave the
/// person waiting long after approving).
pub const MAX_INTERVAL: Duration = Duration::from_secs(60);
/// The longest lifetime taken from an answer: a flow is given up after it.
pub const MAX_EXPIRES_IN: u64 = 3600;
/// Lifetime when the answer gives none (it must, by §3.2; ten minutes is
/// what most providers give).
const DEFAULT_EXPIRES_IN: u64 = 600;
const MAX_USER_CODE: usize = 64;
const MAX_URI: usize = 2048;
const MAX_DEVICE_CODE: usize = 4096;

/// A started device flow.
#[derive(Clone, PartialEq)]
pub struct DeviceAuthorization {
    /// Polled with; never shown.
    pub device_code: Secret,
    /// What the person types at the verification URI.
    pub user_code: String,
    pub verification_uri: Url,
    /// The URI with the user code in it (for a QR code or a click).
    pub verification_uri_complete: Option<Url>,
    /// Seconds the device code lives, at most [`MAX_EXPIRES_IN`].
    pub expires_in: u64,
    /// Time between polls, at least 1 s and at most [`MAX_INTERVAL`].
    pub interval: Duration,
}

impl std::fmt::Debug for DeviceAuthorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceAuthorization")
            .field("device_code", &"[redacted]")
            .field("user_code", &self.user_code)
            .field("verification_uri", &self.verification_uri.as_str())
            .field("expires_in", &self.expires_in)
            .field("interval", &self.interval)
            .finish()
    }
}

#[derive(Deserialize)]
struct RawAnswer {
    device_code: Option<serde_json::Value>,
    user_code: Option<serde_json::Value>,
    verification_uri: Option<serde_json::Value>,
    /// Google's name for `verification_uri` (from a draft of the RFC).
    verification_url: Option<serde_json::Value>,
    verification_uri_complete: Option<serde_json::Value>,
    expires_in: Option<serde_json::Value>,
    interval: Option<serde_json::Value>,
}

fn bad(what: impl Into<String>) -> TokenError {
    TokenError::BadResponse(format!("device authorization answer: {}", what.into()))
}

/// A string field, or `None`; anything else is an error.
fn text<'a>(v: &'a Option<serde_json::Value>, name: &str) -> Result<Option<&'a str>, TokenError> {
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(bad(format!("`{name}` is not a string"))),
    }
}

/// A number of seconds as a number or numeric string (as for `expires_in`
/// of token answers).
fn seconds(v: &Option<serde_json::Value>, name: &str) -> Result<Option<u64>, TokenError> {
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
            .map(Some)
            .ok_or_else(|| bad(format!("`{name}` is not a number of seconds"))),
        Some(serde_json::Value::String(s)) => s
            .trim()
            .parse::<u64>()
            .map(Some)
            .map_err(|_| bad(format!("`{name}` is not a number of seconds"))),
        Some(_) => Err(bad(format!("`{name}` is not a number of seconds"))),
    }
}

/// Printable, short: shown to a person and in a terminal.
fn shown_text(s: &str, name: &str, max: usize) -> Result<(), TokenError> {
    if s.is_empty() || s.len() > max {
        return Err(bad(format!("`{name}` is empty or longer than {max} bytes")));
    }
    if s.chars().any(char::is_control) {
        return Err(bad(format!("`{name}` holds control characters")));
    }
    Ok(())
}

fn uri(s: &str, name: &str) -> Result<Url, TokenError> {
    shown_text(s, name, MAX_URI)?;
    let url = Url::parse(s).map_err(|_| bad(format!("`{name}` is not a URL")))?;
    if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
        return Err(bad(format!("`{name}` is not an http(s) URL")));
    }
    Ok(url)
}

/// Parses and checks a device authorization answer (a 2xx body).
pub fn parse_device_answer(body: &[u8]) -> Result<DeviceAuthorization, TokenError> {
    let raw: RawAnswer = serde_json::from_slice(body).map_err(|_| bad("not a JSON object"))?;
    let device_code =
        text(&raw.device_code, "device_code")?.ok_or_else(|| bad("no `device_code`"))?;
    if device_code.is_empty()
        || device_code.len() > MAX_DEVICE_CODE
        || device_code.chars().any(char::is_control)
    {
        return Err(bad(
            "`device_code` is empty, too long or holds control characters",
        ));
    }
    let user_code = text(&raw.user_code, "user_code")?.ok_or_else(|| bad("no `user_code`"))?;
    shown_text(user_code, "user_code", MAX_USER_CODE)?;
    let verification_uri = match (
        text(&raw.verification_uri, "verification_uri")?,
        text(&raw.verification_url, "verification_url")?,
    ) {
        (Some(u), _) => uri(u, "verification_uri")?,
        (None, Some(u)) => uri(u, "verification_url")?,
        (None, None) => return Err(bad("no `verification_uri`")),
    };
    let verification_uri_complete =
        text(&raw.verification_uri_complete, "verification_uri_complete")?
            .map(|u| uri(u, "verification_uri_complete"))
            .transpose()?;
    let expires_in = seconds(&raw.expires_in, "expires_in")?
        .unwrap_or(DEFAULT_EXPIRES_IN)
        .min(MAX_EXPIRES_IN);
    if expires_in == 0 {
        return Err(bad("`expires_in` is 0: the code is already expired"));
    }
    let interval = seconds(&raw.interval, "interval")?
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_INTERVAL)
        .clamp(Duration::from_secs(1), MAX_INTERVAL);
    Ok(DeviceAuthorization {
        device_code: Secret::new(device_code),
        user_code: user_code.to_string(),
        verification_uri,
        verification_uri_complete,
        expires_in,
        interval,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rfc_example_parses() {
        // RFC 8628 §3.2.
        let a = parse_device_answer(
            br#"{"device_code":"GmRhmhcxhwAzkoEqiMEg_DnyEysNkuNhszIySk9eS",
            "user_code":"WDJB-MJHT","verification_uri":"https://example.com/device",
            "verification_uri_complete":"https://example.com/device?user_code=WDJB-MJHT",
            "expires_in":1800,"interval":5}"#,
        )
        .unwrap();
        assert_eq!(a.user_code, "WDJB-MJHT");
        assert_eq!(a.verification_uri.as_str(), "https://example.com/device");
        assert_eq!(a.expires_in, 1800);
        assert_eq!(a.interval, Duration::from_secs(5));
        assert!(!format!("{a:?}").contains("GmRhmh"), "device code redacted");
    }

    #[test]
    fn defaults_bounds_and_google_names() {
        let a = parse_device_answer(
            br#"{"device_code":"d","user_code":"U","verification_url":"https://g.example/device",
            "expires_in":"999999","interval":3600}"#,
        )
        .unwrap();
        assert_eq!(a.expires_in, MAX_EXPIRES_IN);
        assert_eq!(a.interval, MAX_INTERVAL);
        let a = parse_device_answer(
            br#"{"device_code":"d","user_code":"U","verification_uri":"http://127.0.0.1:1/d","interval":0}"#,
        )
        .unwrap();
        assert_eq!(a.interval, Duration::from_secs(1));
        assert_eq!(a.expires_in, DEFAULT_EXPIRES_IN);
    }

    #[test]
    fn refuses_what_must_not_reach_a_person_or_a_terminal() {
        for body in [
            &br#"{"user_code":"U","verification_uri":"https://e.example/d"}"#[..],
            br#"{"device_code":"d","user_code":"U\u001b[2J","verification_uri":"https://e.example/d"}"#,
            br#"{"device_code":"d","user_code":"U","verification_uri":"javascript:alert(1)"}"#,
            br#"{"device_code":"d","user_code":"","verification_uri":"https://e.example/d"}"#,
            br#"{"device_code":"d","user_code":"U"}"#,
            br#"{"device_code":7,"user_code":"U","verification_uri":"https://e.example/d"}"#,
            br#"{"device_code":"d","user_code":"U","verification_uri":"https://e.example/d","expires_in":0}"#,
            br#"{"device_code":"d","user_code":"U","verification_uri":"https://e.example/d","interval":-1}"#,
            br#"[1]"#,
        ] {
            let e = parse_device_answer(body).unwrap_err();
            assert!(matches!(e, TokenError::BadResponse(_)), "{e}");
        }
    }
}
