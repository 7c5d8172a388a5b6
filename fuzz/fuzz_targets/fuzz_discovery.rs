//! Authorization server metadata (discovery): `parse_metadata`,
//! `well_known_urls`, `check_issuer`.
//!
//! Input: the issuer on the first line, the metadata document after it.
//! The document is also parsed for two fixed issuers (one with a path), so
//! that inputs whose first line is not a usable issuer still exercise the
//! parser.
//!
//! Checked besides "no panic":
//! * on Ok, the metadata is for the issuer asked for, character for
//!   character (RFC 8414 §3.3);
//! * on Ok, every endpoint is https, or http to a loopback host (without
//!   `allow_http`), has a host and no fragment;
//! * every well-known URL parses, is on the issuer's origin, under
//!   `/.well-known/`;
//! * error messages (they are logged and shown in status) contain no
//!   control characters.
#![no_main]

use authproxy::oauth::discovery::{check_issuer, parse_metadata, well_known_urls};
use libfuzzer_sys::fuzz_target;

fn no_controls(what: &str, text: &str) {
    assert!(
        !text.chars().any(|c| c.is_control()),
        "{what} contains a control character: {text:?}"
    );
}

fn check_endpoint(name: &str, url: Option<&url::Url>) {
    let Some(url) = url else { return };
    assert!(url.fragment().is_none(), "{name} {url} has a fragment");
    let host = url
        .host()
        .unwrap_or_else(|| panic!("{name} {url} has no host"));
    match url.scheme() {
        "https" => {}
        "http" => assert!(
            authproxy::http::host::is_loopback_host(host),
            "{name} {url} is plain http to a host that is not loopback"
        ),
        other => panic!("{name} {url} has the scheme {other}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let (first, doc) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&data[..0], data),
    };
    let given = std::str::from_utf8(first).unwrap_or("");
    let mut issuers = vec!["https://as.example", "http://127.0.0.1:8080/tenant/v2.0"];
    match check_issuer(given, false) {
        Ok(_) => issuers.push(given),
        Err(e) => no_controls("check_issuer error", &e),
    }
    for issuer in issuers {
        let origin = url::Url::parse(issuer).unwrap().origin();
        let urls = well_known_urls(issuer);
        assert!(urls.len() >= 2, "no well-known URLs for {issuer}");
        for u in urls {
            let parsed = url::Url::parse(&u).unwrap_or_else(|e| panic!("{u}: {e}"));
            assert!(
                parsed.origin() == origin && parsed.path().contains("/.well-known/"),
                "{u} is not a well-known URL of {issuer}"
            );
        }
        match parse_metadata(doc, issuer, false) {
            Ok(m) => {
                assert_eq!(m.issuer, issuer);
                check_endpoint("token_endpoint", m.token_endpoint.as_ref());
                check_endpoint("authorization_endpoint", m.authorization_endpoint.as_ref());
                check_endpoint(
                    "device_authorization_endpoint",
                    m.device_authorization_endpoint.as_ref(),
                );
            }
            Err(e) => no_controls("parse_metadata error", &e),
        }
    }
});
