//! Fixed headers (API tokens, header pairs), built once at load time.

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::config::StaticConfig;

pub struct StaticHeaders {
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl StaticHeaders {
    pub fn new(cfg: &StaticConfig) -> StaticHeaders {
        let headers = cfg
            .headers
            .iter()
            .map(|(name, value)| {
                // Checked at config load: visible ASCII only.
                let mut v = HeaderValue::from_str(value.expose()).expect("checked header value");
                v.set_sensitive(true);
                (name.clone(), v)
            })
            .collect();
        StaticHeaders { headers }
    }

    /// Replaces (never merges with) the client's values of these headers.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
    }

    pub fn names(&self) -> impl Iterator<Item = &HeaderName> {
        self.headers.iter().map(|(n, _)| n)
    }
}
