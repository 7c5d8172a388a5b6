//! `[providers.<name>]`: static headers or oauth2, and which keys each
//! type and grant takes.

use std::time::Duration;

use url::Url;

use super::client_auth::AuthKeys;
use super::kinds::TYPES;
use super::Checker;
use crate::config::raw::RawProvider;
use crate::config::types::*;
use crate::secret::Secret;

/// A grace longer than this is a typo (providers allow seconds to
/// minutes), and would keep a stolen refresh token usable for as long.
const MAX_ROTATION_GRACE: Duration = Duration::from_secs(3600);

const GRANTS: &str = "\"password\", \"client_credentials\", \"refresh_token\", \"implicit\", \"jwt_bearer\", \"authorization_code\" or \"device_code\"";

impl Checker<'_> {
    pub(super) fn provider(&mut self, key: &str, p: RawProvider) -> Option<ProviderKind> {
        let kind = match p.kind.as_deref() {
            Some(k) => k.to_string(),
            None => {
                self.err(
                    format!("{key}.type"),
                    format!("is missing; set type = one of {TYPES}"),
                );
                return None;
            }
        };
        match kind.as_str() {
            "static" => self.static_provider(key, p).map(ProviderKind::Static),
            "basic" => self.basic_provider(key, p).map(ProviderKind::Basic),
            "query" => self.query_provider(key, p).map(ProviderKind::Query),
            "aws_sigv4" => self.aws_sigv4_provider(key, p).map(ProviderKind::AwsSigV4),
            "oauth2" => {
                self.foreign_keys(key, "oauth2", &p);
                self.oauth2_provider(key, p)
                    .map(|o| ProviderKind::OAuth2(Box::new(o)))
            }
            other => {
                self.err(
                    format!("{key}.type"),
                    format!("unknown provider type `{other}`; use {TYPES}"),
                );
                None
            }
        }
    }

    fn static_provider(&mut self, key: &str, p: RawProvider) -> Option<StaticConfig> {
        self.foreign_keys(key, "static", &p);
        let headers = match p.headers {
            Some(h) if !h.is_empty() => h,
            _ => {
                self.err(
                    format!("{key}.headers"),
                    "is required for type = \"static\"; e.g. headers = { Authorization = \"Token ${MY_TOKEN}\" }",
                );
                return None;
            }
        };
        let mut out = Vec::new();
        for (name, value) in headers {
            let hkey = format!("{key}.headers.{name}");
            let Some(header) = self.header_name(&hkey, &name) else {
                continue;
            };
            if self.header_value_ok(&hkey, &value) {
                out.push((header, Secret::new(value)));
            }
        }
        Some(StaticConfig { headers: out })
    }

    fn oauth2_provider(&mut self, key: &str, mut p: RawProvider) -> Option<OAuth2Config> {
        if p.headers.is_some() {
            self.err(
                format!("{key}.headers"),
                "is a static-provider setting; for oauth2 use `header` and `scheme` to say where the token goes",
            );
        }
        let grant = match p.grant.as_deref() {
            Some("password") => Grant::Password,
            Some("client_credentials") => Grant::ClientCredentials,
            Some("refresh_token") => Grant::RefreshToken,
            Some("implicit") => Grant::Implicit,
            Some("jwt_bearer") => Grant::JwtBearer,
            Some("authorization_code") => Grant::AuthorizationCode,
            Some("device_code") => Grant::DeviceCode,
            Some(other) => {
                self.err(
                    format!("{key}.grant"),
                    format!("unknown grant `{other}`; use {GRANTS}"),
                );
                return None;
            }
            None => {
                self.err(
                    format!("{key}.grant"),
                    format!("is required for type = \"oauth2\"; use {GRANTS}"),
                );
                return None;
            }
        };
        let allow_http = p.allow_http.unwrap_or(false);
        let fix_http = format!("allow_http = true on {key} if the network is trusted");
        let g = grant.as_str();
        // Endpoints not given come from the issuer's metadata (or, for the
        // JWT-bearer grant, a service account's `token_uri`).
        let discovered = p.issuer.is_some();
        let from_service_account = grant == Grant::JwtBearer && p.service_account_file.is_some();

        // Which keys each grant needs and which it cannot use.
        let need = |k: &str| -> bool {
            match (grant, k) {
                (Grant::Implicit, "authorize_url") => !discovered,
                (Grant::Implicit, "client_id") => true,
                (Grant::Implicit, _) => false,
                (Grant::AuthorizationCode, "authorize_url") => !discovered,
                (Grant::DeviceCode, "device_authorization_url") => !discovered,
                (Grant::AuthorizationCode | Grant::DeviceCode, "client_id") => true,
                (_, "token_url") => !discovered && !from_service_account,
                (Grant::Password, "username" | "password") => true,
                (Grant::ClientCredentials, "client_id") => true,
                (Grant::RefreshToken, "refresh_token") => true,
                _ => false,
            }
        };
        let forbidden = |k: &str| -> bool {
            match grant {
                Grant::Implicit => matches!(
                    k,
                    "token_url"
                        | "body"
                        | "client_secret"
                        | "client_auth"
                        | "username"
                        | "password"
                        | "refresh_token"
                        | "extra"
                        | "token_timeout"
                        | "rotation_grace"
                        | "private_key"
                        | "key_id"
                        | "key_certificate"
                        | "signing_alg"
                        | "assertion_audience"
                        | "client_cert"
                        | "client_key"
                        | "dpop"
                        | "device_authorization_url"
                ),
                Grant::ClientCredentials | Grant::RefreshToken => {
                    matches!(
                        k,
                        "username"
                            | "password"
                            | "authorize_url"
                            | "redirect_uri"
                            | "device_authorization_url"
                    )
                }
                Grant::Password => matches!(
                    k,
                    "authorize_url" | "redirect_uri" | "device_authorization_url"
                ),
                // Google answers no refresh token: renewal is a new assertion.
                Grant::JwtBearer => matches!(
                    k,
                    "username"
                        | "password"
                        | "authorize_url"
                        | "redirect_uri"
                        | "refresh_token"
                        | "rotation_grace"
                        | "device_authorization_url"
                ),
                // The person's login is the grant: no password of theirs
                // here, and no seed (the login makes the tokens).
                Grant::AuthorizationCode => matches!(
                    k,
                    "username" | "password" | "device_authorization_url" | "access_token"
                ),
                Grant::DeviceCode => matches!(
                    k,
                    "username" | "password" | "authorize_url" | "redirect_uri" | "access_token"
                ),
            }
        };
        // Keys no grant needs or forbids pass through `need` and
        // `forbidden` as false.
        for (k, is) in p.keys() {
            if is && forbidden(k) {
                self.err(
                    format!("{key}.{k}"),
                    format!("is not used by grant = \"{g}\"; remove it (or change the grant)"),
                );
            } else if !is && need(k) {
                self.err(
                    format!("{key}.{k}"),
                    format!("is required for grant = \"{g}\""),
                );
            }
        }

        let issuer =
            p.issuer.as_deref().and_then(|text| {
                match crate::oauth::discovery::check_issuer(text, allow_http) {
                    Ok(_) => Some(text.to_string()),
                    Err(problem) => {
                        self.err(format!("{key}.issuer"), problem);
                        None
                    }
                }
            });
        let auth = self.client_auth(
            key,
            grant,
            AuthKeys {
                client_auth: p.client_auth.clone(),
                client_id: p.client_id.clone(),
                client_secret: p.client_secret.clone(),
                private_key: p.private_key.take(),
                key_id: p.key_id.take(),
                key_certificate: p.key_certificate.take(),
                signing_alg: p.signing_alg.take(),
                assertion_audience: p.assertion_audience.take(),
                assertion_issuer: p.assertion_issuer.take(),
                subject: p.subject.take(),
                scope_in_assertion: p.scope_in_assertion,
                service_account_file: p.service_account_file.take(),
                scope: p.scope.clone().filter(|s| !s.is_empty()),
                has_client_cert: p.client_cert.is_some(),
            },
        );
        let tls = self.client_tls(
            key,
            p.ca_file.take(),
            p.client_cert.take(),
            p.client_key.take(),
        );
        // An explicit token_url wins over a service account's token_uri.
        let token_url = match (p.token_url.as_deref(), &auth.token_uri) {
            (Some(u), _) => Some((u.to_string(), format!("{key}.token_url"))),
            (None, Some(u)) => Some((u.clone(), format!("{key}.service_account_file"))),
            (None, None) => None,
        };
        let token_url = token_url
            .filter(|_| !forbidden("token_url"))
            .and_then(|(u, k)| self.url(&k, &u, allow_http, &fix_http));
        let authorize_url = p
            .authorize_url
            .as_deref()
            .filter(|_| !forbidden("authorize_url"))
            .and_then(|u| self.url(&format!("{key}.authorize_url"), u, allow_http, &fix_http));
        let device_authorization_url = p
            .device_authorization_url
            .as_deref()
            .filter(|_| !forbidden("device_authorization_url"))
            .and_then(|u| {
                self.url(
                    &format!("{key}.device_authorization_url"),
                    u,
                    allow_http,
                    &fix_http,
                )
            });
        let redirect_uri = p.redirect_uri.as_deref().and_then(|u| match Url::parse(u) {
            Ok(url) => Some(url),
            Err(e) => {
                self.err(
                    format!("{key}.redirect_uri"),
                    format!("`{u}` is not a valid URL ({e})"),
                );
                None
            }
        });
        let body = match p.body.as_deref() {
            None | Some("form") => BodyEncoding::Form,
            Some("json") => BodyEncoding::Json,
            Some(other) => {
                self.err(
                    format!("{key}.body"),
                    format!("unknown body encoding `{other}`; use \"form\" (RFC 6749) or \"json\""),
                );
                BodyEncoding::Form
            }
        };
        let header = match p.header.as_deref() {
            None => http::header::AUTHORIZATION,
            Some(h) => self.header_name(&format!("{key}.header"), h)?,
        };
        let scheme = p.scheme;
        let dpop = p.dpop.unwrap_or(false);
        if dpop && scheme.is_some() {
            self.err(
                format!("{key}.scheme"),
                "cannot be set with dpop = true: a DPoP-bound token is sent as `Authorization: DPoP <token>` (RFC 9449 §7.1); remove scheme (or dpop)",
            );
        }
        if dpop && header != http::header::AUTHORIZATION {
            self.err(
                format!("{key}.header"),
                "cannot be set with dpop = true: a DPoP-bound token goes in `Authorization` (RFC 9449 §7.1); remove header (or dpop)",
            );
        }
        if let Some(s) = scheme.as_deref().filter(|s| !s.is_empty()) {
            self.header_value_ok(&format!("{key}.scheme"), s);
        }
        let refresh_before = self.duration(
            &format!("{key}.refresh_before"),
            p.refresh_before,
            Duration::from_secs(60),
        );
        let token_timeout = self.duration(
            &format!("{key}.token_timeout"),
            p.token_timeout,
            Duration::from_secs(15),
        );
        let rotation_grace = self.duration(
            &format!("{key}.rotation_grace"),
            p.rotation_grace,
            Duration::ZERO,
        );
        if rotation_grace > MAX_ROTATION_GRACE {
            self.err(
                format!("{key}.rotation_grace"),
                format!("{rotation_grace:?} is longer than any provider's reuse interval; set the provider's own (Auth0 reuse interval, Okta grace period, Cognito RetryGracePeriodSeconds), at most \"1h\""),
            );
        }
        let mut extra = Vec::new();
        for (k, v) in p.extra.unwrap_or_default() {
            const RESERVED: [&str; 11] = [
                "grant_type",
                "client_id",
                "client_secret",
                "username",
                "password",
                "refresh_token",
                "scope",
                "code",
                "code_verifier",
                "redirect_uri",
                "device_code",
            ];
            const MADE_HERE: [&str; 3] = ["assertion", "client_assertion", "client_assertion_type"];
            if MADE_HERE.contains(&k.as_str()) {
                self.err(
                    format!("{key}.extra.{k}"),
                    format!("`{k}` is made by authproxy for each request; set client_auth = \"private_key_jwt\" / \"client_secret_jwt\" or grant = \"jwt_bearer\" instead"),
                );
            } else if RESERVED.contains(&k.as_str()) {
                self.err(
                    format!("{key}.extra.{k}"),
                    format!("`{k}` is set by authproxy itself; use the provider's own `{k}` key instead"),
                );
            } else {
                extra.push((k, Secret::new(v)));
            }
        }
        let seed_access_token = p.access_token.map(Secret::new);
        if let Some(t) = &seed_access_token {
            self.header_value_ok(&format!("{key}.access_token"), t.expose());
        }
        let nonempty = |v: Option<String>| v.filter(|s| !s.is_empty()).map(Secret::new);
        Some(OAuth2Config {
            grant,
            token_url,
            authorize_url,
            device_authorization_url,
            body,
            client_id: nonempty(p.client_id),
            client_secret: nonempty(p.client_secret),
            client_auth: auth.client_auth,
            username: nonempty(p.username),
            password: nonempty(p.password),
            // In the assertion instead (Google), not also in the body.
            scope: p
                .scope
                .filter(|s| !s.is_empty() && !auth.scope_in_assertion),
            extra,
            refresh_before,
            header,
            scheme,
            refresh_on_401: p.refresh_on_401.unwrap_or(true),
            seed_refresh_token: nonempty(p.refresh_token),
            seed_access_token: seed_access_token.filter(|s| !s.is_empty()),
            redirect_uri,
            token_timeout,
            rotation_grace,
            issuer,
            allow_http,
            client_assertion: auth.client_assertion,
            assertion_audience: auth.assertion_audience,
            jwt_bearer: auth.jwt_bearer,
            tls,
            dpop,
        })
    }
}
