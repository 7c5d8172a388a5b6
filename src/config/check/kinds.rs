//! `[providers.<name>]` of the kinds built once at load: `basic`, `query`,
//! `aws_sigv4`; and which provider keys belong to which `type`.

use super::Checker;
use crate::config::raw::RawProvider;
use crate::config::types::*;
use crate::secret::Secret;

/// The provider types that are not oauth2, with their keys. Every other
/// provider key belongs to oauth2 alone.
const KEYS: &[(&str, &[&str])] = &[
    ("static", &["headers"]),
    ("basic", &["username", "password"]),
    ("query", &["params"]),
    (
        "aws_sigv4",
        &[
            "access_key_id",
            "secret_access_key",
            "session_token",
            "region",
            "service",
            "unsigned_payload",
        ],
    ),
];

/// What `type` may say, for messages.
pub(super) const TYPES: &str = "\"static\", \"basic\", \"query\", \"aws_sigv4\" or \"oauth2\"";

/// The types a key belongs to (`username` and `password`: basic and oauth2).
fn owners(key: &str) -> Vec<&'static str> {
    let mut owners: Vec<&'static str> = KEYS
        .iter()
        .filter(|(_, keys)| keys.contains(&key))
        .map(|(kind, _)| *kind)
        .collect();
    let shared_with_oauth2 = matches!(key, "username" | "password");
    if owners.is_empty() || shared_with_oauth2 {
        owners.push("oauth2");
    }
    owners
}

impl Checker<'_> {
    /// Refuses the keys of `p` that do nothing with `type = kind`, naming
    /// the type(s) they belong to. (`headers` on oauth2 has its own
    /// message there.)
    pub(super) fn foreign_keys(&mut self, key: &str, kind: &str, p: &RawProvider) {
        for (name, present) in p.keys() {
            if !present || name == "type" || (kind == "oauth2" && name == "headers") {
                continue;
            }
            let owners = owners(name);
            if owners.contains(&kind) {
                continue;
            }
            let kinds = owners
                .iter()
                .map(|k| format!("type = \"{k}\""))
                .collect::<Vec<_>>()
                .join(" or ");
            self.err(
                format!("{key}.{name}"),
                format!(
                    "is a setting of {kinds} and does nothing with type = \"{kind}\"; remove it or set type = \"{}\"",
                    owners[0]
                ),
            );
        }
    }

    /// `type = "basic"`: RFC 7617 `user-id ":" password`, neither with
    /// control characters, and no `:` in the user-id (the server splits at
    /// the first one).
    pub(super) fn basic_provider(&mut self, key: &str, p: RawProvider) -> Option<BasicConfig> {
        self.foreign_keys(key, "basic", &p);
        let username = self.required(key, "username", p.username, "username = \"${API_USER}\"");
        let password = self.required(
            key,
            "password",
            p.password,
            "password = \"${API_PASSWORD}\"",
        );
        let (username, password) = (username?, password?);
        // Errors are collected and fail the load; the provider still
        // exists, so routes naming it get no second error.
        if username.contains(':') {
            self.err(
                format!("{key}.username"),
                "contains `:`, which HTTP Basic cannot carry (the server splits user and password at the first `:`, RFC 7617); check the value",
            );
        }
        for (name, value) in [("username", &username), ("password", &password)] {
            if value.chars().any(char::is_control) {
                self.err(
                    format!("{key}.{name}"),
                    "contains a control character (CR, LF, tab or similar), which RFC 7617 does not allow; check the variable or file it comes from",
                );
            }
        }
        Some(BasicConfig {
            username: Secret::new(username),
            password: Secret::new(password),
        })
    }

    /// `type = "query"`: at least one parameter, names not empty.
    pub(super) fn query_provider(&mut self, key: &str, p: RawProvider) -> Option<QueryConfig> {
        self.foreign_keys(key, "query", &p);
        let params = match p.params {
            Some(params) if !params.is_empty() => params,
            _ => {
                self.err(
                    format!("{key}.params"),
                    "is required for type = \"query\"; e.g. params = { api_key = \"${API_KEY}\" }",
                );
                return None;
            }
        };
        let mut out = Vec::new();
        for (name, value) in params {
            if name.is_empty() || name.chars().any(char::is_control) {
                self.err(
                    format!("{key}.params"),
                    "has an empty parameter name or one with control characters; name each parameter as the API documents it",
                );
                continue;
            }
            out.push((name, Secret::new(value)));
        }
        Some(QueryConfig { params: out })
    }

    /// `type = "aws_sigv4"`: the key pair, optional session token, region
    /// and service (both go into the credential scope, so AWS's spelling:
    /// lowercase letters, digits, `-`).
    pub(super) fn aws_sigv4_provider(
        &mut self,
        key: &str,
        p: RawProvider,
    ) -> Option<AwsSigV4Config> {
        self.foreign_keys(key, "aws_sigv4", &p);
        let access_key_id = self.required(
            key,
            "access_key_id",
            p.access_key_id,
            "access_key_id = \"${AWS_ACCESS_KEY_ID}\"",
        );
        let secret = self.required(
            key,
            "secret_access_key",
            p.secret_access_key,
            "secret_access_key = \"${AWS_SECRET_ACCESS_KEY}\"",
        );
        let region = self.required(key, "region", p.region, "region = \"eu-west-1\"");
        let service = self.required(
            key,
            "service",
            p.service,
            "service = \"s3\" (or \"execute-api\", \"bedrock\", … as in the service's endpoint and ARN)",
        );
        if let Some(id) = &access_key_id {
            // It goes into the Authorization header's Credential=… part.
            if !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                self.err(
                    format!("{key}.access_key_id"),
                    "must be letters and digits only (like AKIAIOSFODNN7EXAMPLE); check the variable or file it comes from",
                );
            }
        }
        for (name, value) in [("region", &region), ("service", &service)] {
            if let Some(v) = value {
                if !v
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                {
                    self.err(
                        format!("{key}.{name}"),
                        format!("`{v}` must be lowercase letters, digits and `-`, as AWS writes it (e.g. \"us-east-1\", \"execute-api\")"),
                    );
                }
            }
        }
        let session_token = p.session_token.filter(|t| !t.is_empty());
        if let Some(t) = &session_token {
            if !self.header_value_ok(&format!("{key}.session_token"), t) {
                // Never turned into a header value.
                return None;
            }
        }
        Some(AwsSigV4Config {
            access_key_id: Secret::new(access_key_id?),
            secret_access_key: Secret::new(secret?),
            session_token: session_token.map(Secret::new),
            region: region?,
            service: service?,
            unsigned_payload: p.unsigned_payload.unwrap_or(false),
        })
    }

    /// A key the type needs, not empty.
    fn required(
        &mut self,
        key: &str,
        name: &str,
        value: Option<String>,
        example: &str,
    ) -> Option<String> {
        match value {
            Some(v) if !v.is_empty() => Some(v),
            Some(_) => {
                self.err(
                    format!("{key}.{name}"),
                    format!("is empty; check the variable or file it comes from (e.g. {example})"),
                );
                None
            }
            None => {
                self.err(
                    format!("{key}.{name}"),
                    format!("is required for this type; e.g. {example}"),
                );
                None
            }
        }
    }
}
