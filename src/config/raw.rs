//! The config exactly as written in TOML. Every table rejects unknown keys so
//! a typo in a credentials proxy never passes silently; the checked
//! [`super::Config`] is built from these.
//!
//! The values are interpolated already (`${…}` holds secrets), so `Debug`
//! prints which keys are set, never a value.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::Deserialize;

/// `Debug` that names the keys a table sets and shows no value. Every
/// field must be listed (the pattern below has no `..`): a new key does not
/// compile until it is.
macro_rules! keys_only_debug {
    ($name:ident { $($field:ident),* $(,)? }) => {
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let $name { $($field),* } = self;
                let mut d = f.debug_struct(stringify!($name));
                $(if $field.is_some() {
                    d.field(stringify!($field), &format_args!("<set>"));
                })*
                d.finish_non_exhaustive()
            }
        }
    };
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
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
    #[serde(default)]
    pub forward_proxy: RawForwardProxy,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawForwardProxy {
    pub enabled: Option<bool>,
    pub ca_cert: Option<String>,
    pub ca_key: Option<String>,
    pub tunnel: Option<Vec<String>>,
}

#[derive(Default, Deserialize, JsonSchema)]
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
    pub body_read_timeout: Option<String>,
    pub tunnel_idle_timeout: Option<String>,
    pub max_connections: Option<usize>,
    pub max_buffered_bytes: Option<String>,
    pub watch_config: Option<bool>,
    pub egress_proxy: Option<String>,
    pub no_proxy: Option<Vec<String>>,
}

keys_only_debug!(RawServer {
    listen,
    inbound_token,
    allow_remote_unauthenticated,
    max_replay_body,
    upstream_timeout,
    connect_timeout,
    drain_timeout,
    allowed_origins,
    allowed_hosts,
    max_header_bytes,
    max_headers,
    header_read_timeout,
    max_request_body,
    upstream_idle_timeout,
    body_read_timeout,
    tunnel_idle_timeout,
    max_connections,
    max_buffered_bytes,
    watch_config,
    egress_proxy,
    no_proxy,
});

#[derive(Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub kind: Option<String>,
    pub path: Option<String>,
    pub url: Option<String>,
    pub key_prefix: Option<String>,
    pub encryption_key: Option<String>,
    pub allow_insecure: Option<bool>,
    pub sentinels: Option<Vec<String>>,
    pub master_name: Option<String>,
    pub db: Option<i64>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub sentinel_password: Option<String>,
    pub tls: Option<bool>,
    pub min_replicas: Option<u32>,
    pub replica_timeout: Option<String>,
    pub lease_ttl: Option<String>,
    pub lease_wait: Option<String>,
}

keys_only_debug!(RawStore {
    kind,
    path,
    url,
    key_prefix,
    encryption_key,
    allow_insecure,
    sentinels,
    master_name,
    db,
    username,
    password,
    sentinel_password,
    tls,
    min_replicas,
    replica_timeout,
    lease_ttl,
    lease_wait,
});

/// Declares [`RawProvider`] and the list of its keys ([`RawProvider::keys`])
/// from one table, so the checks of which keys a provider type or grant
/// takes cannot miss one.
macro_rules! raw_provider {
    ($($(#[$meta:meta])* $key:literal => $field:ident: $ty:ty,)*) => {
        /// One flat struct for every provider type: which keys are allowed
        /// depends on `type` and `grant`, and the checker says which key does
        /// not belong (a tagged enum would only say "unknown field").
        #[derive(Default, Deserialize, JsonSchema)]
        #[serde(deny_unknown_fields)]
        pub struct RawProvider {
            $($(#[$meta])* #[serde(rename = $key)] pub $field: Option<$ty>,)*
        }

        impl fmt::Debug for RawProvider {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let mut d = f.debug_struct("RawProvider");
                for (key, set) in self.keys() {
                    if set {
                        d.field(key, &format_args!("<set>"));
                    }
                }
                d.finish_non_exhaustive()
            }
        }

        impl RawProvider {
            /// Every key a provider table may have, as written in TOML, in
            /// declaration order, with whether this table gave it.
            pub fn keys(&self) -> Vec<(&'static str, bool)> {
                vec![$(($key, self.$field.is_some()),)*]
            }
        }
    };
}

raw_provider! {
    "type" => kind: String,
    "headers" => headers: BTreeMap<String, String>,
    "grant" => grant: String,
    "token_url" => token_url: String,
    "authorize_url" => authorize_url: String,
    "body" => body: String,
    "client_id" => client_id: String,
    "client_secret" => client_secret: String,
    "client_auth" => client_auth: String,
    "username" => username: String,
    "password" => password: String,
    "scope" => scope: String,
    "refresh_before" => refresh_before: String,
    "header" => header: String,
    "scheme" => scheme: String,
    "refresh_token" => refresh_token: String,
    "access_token" => access_token: String,
    "extra" => extra: BTreeMap<String, String>,
    "refresh_on_401" => refresh_on_401: bool,
    "allow_http" => allow_http: bool,
    "redirect_uri" => redirect_uri: String,
    "token_timeout" => token_timeout: String,
    "rotation_grace" => rotation_grace: String,
    "params" => params: BTreeMap<String, String>,
    "access_key_id" => access_key_id: String,
    "secret_access_key" => secret_access_key: String,
    "session_token" => session_token: String,
    "region" => region: String,
    "service" => service: String,
    "unsigned_payload" => unsigned_payload: bool,
    "issuer" => issuer: String,
    "private_key" => private_key: String,
    "key_id" => key_id: String,
    "key_certificate" => key_certificate: String,
    "signing_alg" => signing_alg: String,
    "assertion_audience" => assertion_audience: String,
    "assertion_issuer" => assertion_issuer: String,
    "subject" => subject: String,
    "scope_in_assertion" => scope_in_assertion: bool,
    "service_account_file" => service_account_file: String,
    "client_cert" => client_cert: String,
    "client_key" => client_key: String,
    "ca_file" => ca_file: String,
    "dpop" => dpop: bool,
    "device_authorization_url" => device_authorization_url: String,
}

#[derive(Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub prefix: Option<String>,
    pub upstream: Option<String>,
    pub provider: Option<String>,
    pub strip_prefix: Option<bool>,
    pub allow_http: Option<bool>,
    pub ca_file: Option<String>,
    pub allow_browsers: Option<bool>,
    pub max_upstream_connections: Option<usize>,
    pub http2: Option<String>,
    pub allow: Option<Vec<String>>,
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
    pub host: Option<String>,
}

keys_only_debug!(RawRoute {
    prefix,
    upstream,
    provider,
    strip_prefix,
    allow_http,
    ca_file,
    allow_browsers,
    max_upstream_connections,
    http2,
    allow,
    client_cert,
    client_key,
    host,
});
