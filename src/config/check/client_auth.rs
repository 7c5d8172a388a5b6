//! How an oauth2 provider proves who it is: `client_auth` and the keys each
//! method needs (`client_secret`, `private_key` + `signing_alg` + `key_id`,
//! `client_cert` + `client_key`), and the JWT-bearer grant's assertion
//! (`private_key`, `assertion_issuer`, `subject`, `scope_in_assertion`, or a
//! Google `service_account_file`). Which combinations fit is decided here,
//! each refusal naming the key and the fix.

use super::Checker;
use crate::config::interpolate::read_bounded;
use crate::config::types::*;
use crate::oauth::{Alg, PrivateKey};
use crate::secret::Secret;

/// The raw keys this part of the check reads.
pub(super) struct AuthKeys {
    pub client_auth: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub private_key: Option<String>,
    pub key_id: Option<String>,
    pub key_certificate: Option<String>,
    pub signing_alg: Option<String>,
    pub assertion_audience: Option<String>,
    pub assertion_issuer: Option<String>,
    pub subject: Option<String>,
    pub scope_in_assertion: Option<bool>,
    pub service_account_file: Option<String>,
    pub scope: Option<String>,
    pub has_client_cert: bool,
}

/// What it decides.
pub(super) struct Auth {
    pub client_auth: ClientAuth,
    pub client_assertion: Option<Signer>,
    pub assertion_audience: Option<String>,
    pub jwt_bearer: Option<GrantAssertion>,
    /// `scope` goes into the assertion rather than the request body.
    pub scope_in_assertion: bool,
    /// A service account's `token_uri`, used when `token_url` is not set.
    pub token_uri: Option<String>,
}

/// A Google service-account key file as written (other fields ignored).
#[derive(serde::Deserialize)]
struct RawServiceAccount {
    #[serde(rename = "type")]
    kind: Option<serde_json::Value>,
    private_key: Option<Secret>,
    private_key_id: Option<serde_json::Value>,
    client_email: Option<serde_json::Value>,
    token_uri: Option<serde_json::Value>,
}

/// The fields of a Google service-account key file that are used.
struct ServiceAccount {
    private_key: Secret,
    private_key_id: Option<String>,
    client_email: String,
    token_uri: Option<String>,
}

const CLIENT_AUTHS: &str = "\"body\", \"basic\", \"client_secret_jwt\", \"private_key_jwt\", \"tls_client_auth\" or \"none\"";

impl Checker<'_> {
    pub(super) fn client_auth(&mut self, key: &str, grant: Grant, k: AuthKeys) -> Auth {
        let jwt_bearer = grant == Grant::JwtBearer;
        let client_auth = match k.client_auth.as_deref() {
            // The JWT-bearer grant's assertion names the client; Google and
            // Salesforce expect nothing else.
            None if jwt_bearer => ClientAuth::None,
            None | Some("body") => ClientAuth::Body,
            Some("basic") => ClientAuth::Basic,
            Some("client_secret_jwt") => ClientAuth::ClientSecretJwt,
            Some("private_key_jwt") => ClientAuth::PrivateKeyJwt,
            Some("tls_client_auth") => ClientAuth::TlsClientAuth,
            Some("none") => ClientAuth::None,
            Some(other) => {
                self.err(
                    format!("{key}.client_auth"),
                    format!("unknown client_auth `{other}`; use {CLIENT_AUTHS}"),
                );
                ClientAuth::Body
            }
        };
        let method = client_auth.as_str();
        let has_id = k.client_id.as_deref().is_some_and(|s| !s.is_empty());
        let secret = k.client_secret.as_deref().filter(|s| !s.is_empty());

        let service_account = k
            .service_account_file
            .as_deref()
            .filter(|_| jwt_bearer)
            .and_then(|path| self.service_account(key, path));

        // Who needs what.
        let key_user = client_auth == ClientAuth::PrivateKeyJwt || jwt_bearer;
        let needs_id = !matches!(client_auth, ClientAuth::Body | ClientAuth::None);
        if needs_id && !has_id {
            self.err(
                format!("{key}.client_id"),
                format!("is required with client_auth = \"{method}\""),
            );
        }
        match client_auth {
            ClientAuth::ClientSecretJwt if secret.is_none() => self.err(
                format!("{key}.client_secret"),
                "is required with client_auth = \"client_secret_jwt\" (it is the HS256 key)",
            ),
            ClientAuth::PrivateKeyJwt | ClientAuth::TlsClientAuth | ClientAuth::None
                if k.client_secret.is_some() =>
            {
                self.err(
                    format!("{key}.client_secret"),
                    format!("is not sent with client_auth = \"{method}\"; remove it, or use client_auth = \"body\", \"basic\" or \"client_secret_jwt\""),
                )
            }
            ClientAuth::TlsClientAuth if !k.has_client_cert => self.err(
                format!("{key}.client_cert"),
                "is required with client_auth = \"tls_client_auth\": the client certificate (with client_key) presented to the token endpoint",
            ),
            ClientAuth::None if grant == Grant::ClientCredentials => self.err(
                format!("{key}.client_auth"),
                "\"none\" does not fit grant = \"client_credentials\", which is for clients that authenticate (RFC 6749 §4.4); use \"body\", \"basic\", \"client_secret_jwt\", \"private_key_jwt\" or \"tls_client_auth\"",
            ),
            _ => {}
        }

        // The private key, and the algorithm it signs with.
        let mut key_text = None;
        let private_key = match (&k.private_key, &service_account) {
            (Some(pem), _) => {
                let pk = format!("{key}.private_key");
                key_text = self.pem_value(&pk, pem);
                key_text.as_ref().and_then(|text| {
                    PrivateKey::from_pem(text)
                        .map_err(|problem| {
                            self.err(&pk, format!("{problem} (the value is not shown)"))
                        })
                        .ok()
                })
            }
            (None, Some(sa)) => PrivateKey::from_pem(sa.private_key.expose())
                .map_err(|problem| {
                    self.err(
                        format!("{key}.service_account_file"),
                        format!("its `private_key` {problem}; download a new JSON key for the service account"),
                    )
                })
                .ok(),
            (None, None) => None,
        };
        if k.private_key.is_some() && !key_user {
            self.err(
                format!("{key}.private_key"),
                "is used only with client_auth = \"private_key_jwt\" or grant = \"jwt_bearer\"; set one of them, or remove it",
            );
        }
        if key_user && k.private_key.is_none() && service_account.is_none() {
            let why = if jwt_bearer {
                "is required for grant = \"jwt_bearer\" (it signs the assertion); or set service_account_file"
            } else {
                "is required with client_auth = \"private_key_jwt\": the PEM private key (RSA or EC P-256) whose public key the provider has"
            };
            self.err(format!("{key}.private_key"), why);
        }
        let alg_key = format!("{key}.signing_alg");
        let alg = match k.signing_alg.as_deref() {
            None => None,
            Some(text) => match Alg::parse(text) {
                Some(alg) => Some(alg),
                None => {
                    self.err(
                        &alg_key,
                        format!("unknown signing_alg `{text}`; use \"RS256\", \"PS256\" or \"ES256\" (\"HS256\" with client_auth = \"client_secret_jwt\")"),
                    );
                    None
                }
            },
        };
        if k.signing_alg.is_some() && !key_user && client_auth != ClientAuth::ClientSecretJwt {
            self.err(
                &alg_key,
                "is used only with client_auth = \"private_key_jwt\" or \"client_secret_jwt\", or grant = \"jwt_bearer\"; remove it",
            );
        }
        let kid = k.key_id.clone().or_else(|| {
            service_account
                .as_ref()
                .and_then(|s| s.private_key_id.clone())
        });
        let signs = key_user || client_auth == ClientAuth::ClientSecretJwt;
        if k.key_id.is_some() && !signs {
            self.err(
                format!("{key}.key_id"),
                "names a signing key and is used only with client_auth = \"private_key_jwt\" or \"client_secret_jwt\", or grant = \"jwt_bearer\"; remove it",
            );
        }
        if k.assertion_audience.is_some() && !signs {
            self.err(
                format!("{key}.assertion_audience"),
                "is the `aud` of a signed assertion, used only with client_auth = \"private_key_jwt\" or \"client_secret_jwt\", or grant = \"jwt_bearer\"; remove it",
            );
        }
        // The key's certificate: its thumbprints name the key (Entra).
        let thumbprints = match (&k.key_certificate, &private_key) {
            (Some(_), _) if !key_user => {
                self.err(
                    format!("{key}.key_certificate"),
                    "is the certificate of private_key, used only with client_auth = \"private_key_jwt\" or grant = \"jwt_bearer\"; remove it",
                );
                None
            }
            (Some(cert), Some(_)) => {
                let text = match (&key_text, &service_account) {
                    (Some(t), _) => Some(zeroize::Zeroizing::new(t.to_string())),
                    (None, Some(sa)) => {
                        Some(zeroize::Zeroizing::new(sa.private_key.expose().to_string()))
                    }
                    (None, None) => None,
                };
                text.and_then(|t| self.key_thumbprints(key, cert, &t))
            }
            _ => None,
        };
        let key_signer = match (&private_key, alg) {
            (Some(pk), Some(Alg::Hs256)) => {
                self.err(
                    &alg_key,
                    format!("HS256 signs with the client secret, not with private_key (which is {}); use client_auth = \"client_secret_jwt\" without private_key, or \"{}\"", pk.kind().describe(), pk.kind().default_alg()),
                );
                None
            }
            (Some(pk), alg) => {
                let alg = alg.unwrap_or(pk.kind().default_alg());
                match Signer::private(pk.clone(), alg, kid.clone()) {
                    Ok(s) => Some(match &thumbprints {
                        Some((sha1, sha256)) => s
                            .with_header("x5t", sha1.clone())
                            .with_header("x5t#S256", sha256.clone()),
                        None => s,
                    }),
                    Err(_) => {
                        let other = if alg == Alg::Es256 {
                            "an EC P-256"
                        } else {
                            "an RSA"
                        };
                        self.err(
                            &alg_key,
                            format!("\"{alg}\" needs {other} key, but private_key is {}; use \"{}\" or another key", pk.kind().describe(), pk.kind().default_alg()),
                        );
                        None
                    }
                }
            }
            (None, _) => None,
        };

        let client_assertion = match client_auth {
            ClientAuth::PrivateKeyJwt => key_signer.clone(),
            ClientAuth::ClientSecretJwt => {
                if !key_user && alg.is_some_and(|a| a != Alg::Hs256) {
                    self.err(
                        &alg_key,
                        "client_secret_jwt signs with HS256 only (an HMAC of the client secret); remove signing_alg, or use client_auth = \"private_key_jwt\" with private_key",
                    );
                }
                secret.map(|s| Signer::hmac(&Secret::new(s), k.key_id.clone()))
            }
            _ => None,
        };

        // The JWT-bearer grant's own assertion.
        let grant_keys = [
            ("assertion_issuer", k.assertion_issuer.is_some()),
            ("subject", k.subject.is_some()),
            ("scope_in_assertion", k.scope_in_assertion.is_some()),
            ("service_account_file", k.service_account_file.is_some()),
        ];
        if !jwt_bearer {
            for (name, _) in grant_keys.iter().filter(|(_, set)| *set) {
                self.err(
                    format!("{key}.{name}"),
                    "is used only by grant = \"jwt_bearer\"; remove it (or change the grant)",
                );
            }
        }
        let scope_in_assertion =
            jwt_bearer && k.scope_in_assertion.unwrap_or(service_account.is_some());
        if scope_in_assertion && k.scope.is_none() && k.scope_in_assertion == Some(true) {
            self.err(
                format!("{key}.scope"),
                "is required with scope_in_assertion = true (it becomes the assertion's `scope` claim)",
            );
        }
        let jwt_bearer_assertion = if jwt_bearer {
            let issuer = k
                .assertion_issuer
                .clone()
                .or_else(|| service_account.as_ref().map(|s| s.client_email.clone()))
                .or_else(|| k.client_id.clone())
                .filter(|s| !s.is_empty());
            if issuer.is_none() && k.service_account_file.is_none() {
                self.err(
                    format!("{key}.assertion_issuer"),
                    "is required for grant = \"jwt_bearer\" (the assertion's `iss`): set assertion_issuer or client_id, or service_account_file",
                );
            }
            match (key_signer, issuer) {
                (Some(signer), Some(issuer)) => Some(GrantAssertion {
                    signer,
                    issuer: Secret::new(issuer),
                    subject: k.subject.clone().filter(|s| !s.is_empty()).map(Secret::new),
                    scope: k.scope.clone().filter(|_| scope_in_assertion),
                }),
                _ => None,
            }
        } else {
            None
        };
        Auth {
            client_auth,
            client_assertion,
            assertion_audience: k.assertion_audience,
            jwt_bearer: jwt_bearer_assertion,
            scope_in_assertion,
            token_uri: service_account.and_then(|s| s.token_uri),
        }
    }

    /// Reads a Google service-account JSON key. Errors name the file and
    /// the field, never a value.
    fn service_account(&mut self, key: &str, path: &str) -> Option<ServiceAccount> {
        let full = self.base_dir.join(path);
        let name = format!("{key}.service_account_file");
        let fix = "download a JSON key for the service account (IAM → Service accounts → Keys → Add key → JSON)";
        let text = match read_bounded(&full) {
            Ok(t) => t,
            Err(reason) => {
                self.err(
                    name,
                    format!("cannot read {}: {reason}; {fix}", full.display()),
                );
                return None;
            }
        };
        // The key goes straight into a `Secret`; serde's messages are not
        // shown (a syntax error's would be harmless, a type error's could
        // quote a value).
        let Ok(raw) = serde_json::from_str::<RawServiceAccount>(&text) else {
            self.err(
                name,
                format!("{} is not a service-account JSON key (a JSON object with string fields); {fix}", full.display()),
            );
            return None;
        };
        if raw
            .kind
            .as_ref()
            .is_some_and(|k| k.as_str() != Some("service_account"))
        {
            self.err(
                &name,
                format!("{} is not a service-account key (its `type` is not \"service_account\"); {fix}", full.display()),
            );
            return None;
        }
        let text_of = |v: Option<serde_json::Value>| {
            v.and_then(|v| v.as_str().map(str::to_string))
                .filter(|s| !s.is_empty())
        };
        let private_key = raw.private_key.filter(|k| !k.is_empty());
        let client_email = text_of(raw.client_email);
        let mut missing = Vec::new();
        if private_key.is_none() {
            missing.push("`private_key`");
        }
        if client_email.is_none() {
            missing.push("`client_email`");
        }
        if !missing.is_empty() {
            self.err(
                name,
                format!(
                    "{} has no {} (a string); {fix}",
                    full.display(),
                    missing.join(" and ")
                ),
            );
            return None;
        }
        Some(ServiceAccount {
            private_key: private_key?,
            private_key_id: text_of(raw.private_key_id),
            client_email: client_email?,
            token_uri: text_of(raw.token_uri),
        })
    }
}
