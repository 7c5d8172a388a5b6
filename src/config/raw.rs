//! The config exactly as written in TOML. Every table rejects unknown keys so
//! a typo in a credentials proxy never passes silently; the checked
//! [`super::Config`] is built from these.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub store: RawStore,
    #[serde(default)]
    pub providers: BTreeMap<String, RawProvider>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<String>,
    pub inbound_token: Option<String>,
    pub allow_remote_unauthenticated: Option<bool>,
    pub max_replay_body: Option<String>,
    pub upstream_timeout: Option<String>,
    pub connect_timeout: Option<String>,
    pub drain_timeout: Option<String>,
    pub allowed_origins: Option<Vec<String>>,
    pub allowed_hosts: Option<Vec<String>>,
    pub max_header_bytes: Option<String>,
    pub max_headers: Option<usize>,
    pub header_read_timeout: Option<String>,
    pub max_request_body: Option<String>,
    pub upstream_idle_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub kind: Option<String>,
    pub path: Option<String>,
    pub url: Option<String>,
    pub key_prefix: Option<String>,
}

/// One flat struct for every provider type: which keys are allowed depends
/// on `type` and `grant`, and the checker says which key does not belong
/// (a tagged enum would only say "unknown field").
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub headers: Option<BTreeMap<String, String>>,
    pub grant: Option<String>,
    pub token_url: Option<String>,
    pub authorize_url: Option<String>,
    pub body: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub client_auth: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub scope: Option<String>,
    pub refresh_before: Option<String>,
    pub header: Option<String>,
    pub scheme: Option<String>,
    pub refresh_token: Option<String>,
    pub access_token: Option<String>,
    pub extra: Option<BTreeMap<String, String>>,
    pub refresh_on_401: Option<bool>,
    pub allow_http: Option<bool>,
    pub redirect_uri: Option<String>,
    pub token_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub prefix: Option<String>,
    pub upstream: Option<String>,
    pub provider: Option<String>,
    pub strip_prefix: Option<bool>,
    pub allow_http: Option<bool>,
    pub ca_file: Option<String>,
}
