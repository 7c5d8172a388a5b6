//! The device authorization answer of RFC 8628 §3.2 (`parse_device_answer`):
//! untrusted input whose user code and URIs are shown to a person and in
//! the terminal of `authproxy login`.
//!
//! Checked besides "no panic":
//! * on Ok, the user code and the URIs hold no control characters (no
//!   terminal escapes) and are bounded in length;
//! * on Ok, the URIs are http(s) with a host;
//! * on Ok, the interval is 1..=60 s and the lifetime 1..=3600 s;
//! * on Ok, the device code never shows in the `Debug` print;
//! * error messages contain no control characters and nothing of the input
//!   beyond field names.
#![no_main]

use authproxy::oauth::device::{parse_device_answer, MAX_EXPIRES_IN, MAX_INTERVAL};
use libfuzzer_sys::fuzz_target;

fn no_controls(what: &str, text: &str) {
    assert!(
        !text.chars().any(|c| c.is_control()),
        "{what} contains a control character: {text:?}"
    );
}

fuzz_target!(|data: &[u8]| {
    match parse_device_answer(data) {
        Ok(a) => {
            no_controls("user_code", &a.user_code);
            assert!(!a.user_code.is_empty() && a.user_code.len() <= 64);
            for u in
                std::iter::once(&a.verification_uri).chain(a.verification_uri_complete.as_ref())
            {
                assert!(matches!(u.scheme(), "http" | "https"), "{u}");
                assert!(u.host().is_some(), "{u}");
                no_controls("verification_uri", u.as_str());
            }
            assert!(a.interval >= std::time::Duration::from_secs(1) && a.interval <= MAX_INTERVAL);
            assert!(a.expires_in >= 1 && a.expires_in <= MAX_EXPIRES_IN);
            // The Debug print is made of the shown fields only.
            let expected = format!(
                "DeviceAuthorization {{ device_code: \"[redacted]\", user_code: {:?}, verification_uri: {:?}, expires_in: {:?}, interval: {:?} }}",
                a.user_code,
                a.verification_uri.as_str(),
                a.expires_in,
                a.interval
            );
            assert_eq!(format!("{a:?}"), expected);
        }
        Err(e) => no_controls("error", &e.to_string()),
    }
});
