//! Config parser and `${...}` interpolation.
//!
//! Input: TOML text. Lines `#env NAME=VALUE` (TOML comments, so the text
//! stays valid TOML) define the fuzz environment; a `*` in VALUE stands for
//! the marker `SECRETMARK` (appended when VALUE has none). Any other name
//! resolves to `SECRETMARK-<name>`, except names starting with `UNSET`
//! (not set) and `EMPTY` (empty value).
//!
//! Checked besides "no panic":
//! * `Config::parse` errors never show a value the environment returned
//!   (the scrubbing promise), and, when the input itself does not contain
//!   the marker, never show the marker at all (catches partial, escaped or
//!   re-cased echoes of a secret);
//! * every static header value of an accepted config is a valid header value;
//! * `interpolate` on the raw text: errors never show an env value; every
//!   non-empty substituted value is recorded for scrubbing; text without `$`
//!   comes back unchanged.
#![no_main]

use std::cell::RefCell;
use std::path::Path;

use authproxy::config::interpolate::{interpolate, Env};
use authproxy::config::{Config, ProviderKind};
use authproxy::proxy::routes::RouteTable;
use libfuzzer_sys::fuzz_target;

/// Findings already reported can be skipped so a long run looks further:
/// `FUZZ_KNOWN=tag1,tag2` (tags at the checks below).
fn known(tag: &str) -> bool {
    static KNOWN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    KNOWN
        .get_or_init(|| std::env::var("FUZZ_KNOWN").unwrap_or_default())
        .split(',')
        .any(|t| t.trim() == tag)
}

const MARKER: &str = "SECRETMARK";

struct FuzzEnv {
    vars: Vec<(String, String)>,
    returned: RefCell<Vec<String>>,
}

impl FuzzEnv {
    fn new(text: &str) -> FuzzEnv {
        let vars = text
            .lines()
            .filter_map(|l| l.strip_prefix("#env "))
            .filter_map(|l| l.split_once('='))
            .map(|(name, value)| {
                let value = if value.contains('*') {
                    value.replacen('*', MARKER, 1)
                } else {
                    format!("{value}{MARKER}")
                };
                (name.trim().to_string(), value)
            })
            .collect();
        FuzzEnv {
            vars,
            returned: RefCell::new(Vec::new()),
        }
    }
}

impl Env for FuzzEnv {
    fn var(&self, name: &str) -> Option<String> {
        if name.starts_with("UNSET") {
            return None;
        }
        let value = if name.starts_with("EMPTY") {
            String::new()
        } else if let Some((_, v)) = self.vars.iter().find(|(n, _)| n == name) {
            v.clone()
        } else {
            format!("{MARKER}-{name}")
        };
        self.returned.borrow_mut().push(value.clone());
        Some(value)
    }
}

/// True when some string in the TOML names an absolute `${file:/...}` path:
/// those would read real files of this machine (`/dev/zero` never ends).
fn reads_absolute_file(text: &str) -> bool {
    fn walk(v: &toml::Value) -> bool {
        match v {
            toml::Value::String(s) => absolute_file_ref(s),
            toml::Value::Array(a) => a.iter().any(walk),
            toml::Value::Table(t) => t.values().any(walk),
            _ => false,
        }
    }
    match toml::from_str::<toml::Table>(text) {
        Ok(t) => t.values().any(walk),
        Err(_) => false,
    }
}

fn absolute_file_ref(s: &str) -> bool {
    s.match_indices("file:")
        .any(|(i, _)| s[i + 5..].trim_start().starts_with('/'))
}

/// A base folder that does not exist, so relative `${file:...}` fails cleanly.
const CONFIG_PATH: &str = "/nonexistent-authproxy-fuzz/config/authproxy.toml";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let marker_in_input = text.to_ascii_lowercase().contains("secretmark");

    // interpolate() on the whole text, as if it were one config string.
    if !absolute_file_ref(text) {
        let env = FuzzEnv::new(text);
        let mut substituted = Vec::new();
        let base = Path::new(CONFIG_PATH).parent().unwrap();
        match interpolate(text, &env, base, &mut substituted) {
            Ok(out) => {
                if !text.contains('$') {
                    assert_eq!(out, text, "text without `$` must come back unchanged");
                }
                for v in env.returned.borrow().iter().filter(|v| !v.is_empty()) {
                    assert!(
                        substituted.contains(v),
                        "env value {v:?} was substituted but not recorded for scrubbing"
                    );
                }
            }
            Err(e) => {
                let shown = e.to_string();
                for v in env.returned.borrow().iter().filter(|v| !v.is_empty()) {
                    assert!(
                        !shown.contains(v.as_str()),
                        "interpolate error shows env value {v:?}: {shown}"
                    );
                }
            }
        }
    }

    if reads_absolute_file(text) {
        return;
    }
    let env = FuzzEnv::new(text);
    match Config::parse(text, Path::new(CONFIG_PATH), &env) {
        Ok(config) => {
            for p in config.providers.values() {
                if let ProviderKind::Static(s) = &p.kind {
                    for (name, value) in &s.headers {
                        assert!(
                            http::HeaderValue::from_str(value.expose()).is_ok(),
                            "accepted static header {name} has an invalid value"
                        );
                    }
                }
            }
            let table = RouteTable::new(&config.routes);
            for r in &config.routes {
                let p = r.prefix.as_str();
                let hit = table.lookup(p).expect("a route's own prefix must match");
                let out = hit.upstream_uri(p, Some("x=1"));
                if !known("upstream_host") {
                    assert!(
                        out.parse::<http::Uri>().is_ok(),
                        "accepted upstream {:?} gives {out:?}, which is not an http::Uri",
                        r.upstream.as_str()
                    );
                }
            }
        }
        Err(e) => {
            let shown = e.to_string();
            for v in env.returned.borrow().iter() {
                // The scrubber leaves values shorter than 3 bytes alone; ours
                // all carry the marker, but the empty one.
                if v.len() >= 3 {
                    assert!(
                        !shown.contains(v.as_str()),
                        "config error shows env value {v:?}:\n{shown}"
                    );
                }
            }
            // serde shows a string of the wrong type Debug-escaped
            // (`invalid type: string "a\\\"b"`), which the scrubber misses.
            let escaped_value = env
                .returned
                .borrow()
                .iter()
                .any(|v| v.escape_debug().to_string() != *v);
            if !marker_in_input && !(escaped_value && known("debug_escape")) {
                assert!(
                    !shown.to_ascii_lowercase().contains("secretmark"),
                    "config error shows part of an env value:\n{shown}"
                );
            }
        }
    }
});
