//! One token request: what it is ([`TokenRequest`]: endpoint, grant, client
//! authentication, body encoding) and how its body and headers are made.
//! The client ([`super::client`]) calls [`grant_fields`] once per HTTP
//! request, so what must be new each time (an assertion's `jti` and `iat`)
//! is; a per-request header such as a DPoP proof belongs beside it.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use url::Url;
use zeroize::Zeroizing;

use super::assertion::{
    client_assertion, GrantAssertion, CLIENT_ASSERTION_TYPE, JWT_BEARER_GRANT_TYPE,
};
use super::error::TokenError;
use super::jwt::Signer;
use crate::secret::{Secret, SecretBuf};

/// A grant the token endpoint can run, with what it needs.
#[derive(Debug, Clone, Copy)]
pub enum Grant<'a> {
    /// RFC 6749 §4.3: resource owner password credentials.
    Password {
        username: &'a Secret,
        password: &'a Secret,
    },
    /// RFC 6749 §4.4.
    ClientCredentials,
    /// RFC 6749 §6 refresh with this refresh token.
    Refresh(&'a Secret),
    /// RFC 7523 §2.1: a signed assertion is the grant; a new one is made
    /// for every request.
    JwtBearer(&'a GrantAssertion),
    /// RFC 6749 §4.1.3 with the PKCE verifier (RFC 7636 §4.5).
    AuthorizationCode {
        code: &'a Secret,
        verifier: &'a Secret,
        redirect_uri: &'a str,
    },
    /// RFC 8628 §3.4: polling with the device code.
    DeviceCode(&'a Secret),
    /// RFC 8628 §3.1: not a grant but the request that starts a device
    /// flow; it authenticates the client like a token request and has no
    /// `grant_type`.
    DeviceAuthorization,
}

impl Grant<'_> {
    /// The `grant_type` value.
    pub fn as_str(&self) -> &'static str {
        match self {
            Grant::Password { .. } => "password",
            Grant::ClientCredentials => "client_credentials",
            Grant::Refresh(_) => "refresh_token",
            Grant::JwtBearer(_) => JWT_BEARER_GRANT_TYPE,
            Grant::AuthorizationCode { .. } => "authorization_code",
            Grant::DeviceCode(_) => DEVICE_CODE_GRANT_TYPE,
            Grant::DeviceAuthorization => "",
        }
    }
}

/// RFC 8628 §3.4.
pub const DEVICE_CODE_GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// How the request body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEncoding {
    /// `application/x-www-form-urlencoded` (RFC 6749).
    Form,
    /// A JSON object of the same fields (some providers take only this).
    Json,
}

/// How the client authenticates itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// `client_id` / `client_secret` in the request body.
    Body,
    /// HTTP Basic with the url-encoded client id and secret (RFC 6749 §2.3.1).
    Basic,
    /// A JWT signed with HS256 and the client secret (RFC 7523 §2.2,
    /// OpenID Connect Core §9 `client_secret_jwt`).
    ClientSecretJwt,
    /// A JWT signed with the client's private key (`private_key_jwt`).
    PrivateKeyJwt,
    /// The client certificate presented in the TLS handshake (RFC 8705
    /// §2.1); `client_id` in the body.
    TlsClientAuth,
    /// A public client: `client_id` in the body, nothing to prove (the
    /// JWT-bearer grant sends not even that: its assertion names the client).
    None,
}

impl ClientAuth {
    /// As written in the config's `client_auth`.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuth::Body => "body",
            ClientAuth::Basic => "basic",
            ClientAuth::ClientSecretJwt => "client_secret_jwt",
            ClientAuth::PrivateKeyJwt => "private_key_jwt",
            ClientAuth::TlsClientAuth => "tls_client_auth",
            ClientAuth::None => "none",
        }
    }

    /// Authenticates with a signed client assertion.
    pub fn uses_assertion(self) -> bool {
        matches!(
            self,
            ClientAuth::ClientSecretJwt | ClientAuth::PrivateKeyJwt
        )
    }
}

/// One token request: where it goes, which grant, how the client
/// authenticates, and what else the provider wants in the body.
#[derive(Debug, Clone, Copy)]
pub struct TokenRequest<'a> {
    pub token_url: &'a Url,
    pub grant: Grant<'a>,
    pub client_id: Option<&'a Secret>,
    pub client_secret: Option<&'a Secret>,
    pub client_auth: ClientAuth,
    /// Signs the client assertion (`client_secret_jwt`, `private_key_jwt`).
    pub assertion_signer: Option<&'a Signer>,
    /// The assertions' `aud` when the provider wants another value than
    /// the token endpoint URL.
    pub assertion_audience: Option<&'a str>,
    pub body: BodyEncoding,
    pub scope: Option<&'a str>,
    /// More body fields, sent as they are.
    pub extra: &'a [(String, Secret)],
    /// Time allowed for each try (connect, answer, body).
    pub timeout: Duration,
}

/// A JSON object of the fields (a later field of the same name wins).
pub(super) fn json_body(fields: &[(String, Secret)]) -> SecretBuf {
    let map: BTreeMap<&str, &str> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.expose()))
        .collect();
    let mut body = SecretBuf::with_capacity(256);
    serde_json::to_writer(&mut body, &map).expect("strings serialize");
    body
}

/// `application/x-www-form-urlencoded` of the fields, in order.
pub(super) fn form_body(fields: &[(String, Secret)]) -> SecretBuf {
    let mut body = SecretBuf::with_capacity(256);
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            body.extend(b"&");
        }
        for piece in url::form_urlencoded::byte_serialize(k.as_bytes()) {
            body.extend(piece.as_bytes());
        }
        body.extend(b"=");
        for piece in url::form_urlencoded::byte_serialize(v.expose().as_bytes()) {
            body.extend(piece.as_bytes());
        }
    }
    body
}

/// The body fields of a grant request at `now`, in a stable order: the
/// grant, the client's authentication, scope, extra fields.
pub(super) fn grant_fields(
    r: &TokenRequest<'_>,
    now: u64,
) -> Result<Vec<(String, Secret)>, TokenError> {
    let mut fields: Vec<(String, Secret)> = Vec::new();
    let mut push = |k: &str, v: &Secret| fields.push((k.to_string(), v.clone()));
    if !matches!(r.grant, Grant::DeviceAuthorization) {
        push("grant_type", &Secret::new(r.grant.as_str()));
    }
    let token_url = r.token_url.as_str();
    let audience = r.assertion_audience.unwrap_or(token_url);
    match r.grant {
        Grant::Refresh(token) => push("refresh_token", token),
        Grant::Password { username, password } => {
            push("username", username);
            push("password", password);
        }
        Grant::ClientCredentials | Grant::DeviceAuthorization => {}
        Grant::JwtBearer(assertion) => push("assertion", &assertion.sign(audience, now)),
        Grant::AuthorizationCode {
            code,
            verifier,
            redirect_uri,
        } => {
            push("code", code);
            push("redirect_uri", &Secret::new(redirect_uri));
            push("code_verifier", verifier);
        }
        Grant::DeviceCode(code) => push("device_code", code),
    }
    match r.client_auth {
        ClientAuth::Body => {
            if let Some(id) = r.client_id {
                push("client_id", id);
            }
            if let Some(secret) = r.client_secret {
                push("client_secret", secret);
            }
        }
        ClientAuth::Basic => {}
        ClientAuth::ClientSecretJwt | ClientAuth::PrivateKeyJwt => {
            let (Some(id), Some(signer)) = (r.client_id, r.assertion_signer) else {
                return Err(TokenError::NotConfigured(
                    "a JWT client assertion needs client_id and a signing key",
                ));
            };
            // RFC 7521 §4.2: client_id may be sent, and then must be the
            // assertion's subject (Entra requires it).
            push("client_id", id);
            push("client_assertion_type", &Secret::new(CLIENT_ASSERTION_TYPE));
            push(
                "client_assertion",
                &client_assertion(signer, id, audience, now),
            );
        }
        ClientAuth::TlsClientAuth => {
            if let Some(id) = r.client_id {
                push("client_id", id);
            }
        }
        ClientAuth::None => {
            if let (Some(id), false) = (r.client_id, matches!(r.grant, Grant::JwtBearer(_))) {
                push("client_id", id);
            }
        }
    }
    // The code and the device code carry the scope the user granted
    // (RFC 6749 §4.1.3, RFC 8628 §3.4 have no `scope`).
    let scoped = !matches!(
        r.grant,
        Grant::AuthorizationCode { .. } | Grant::DeviceCode(_)
    );
    if let (Some(scope), true) = (r.scope, scoped) {
        push("scope", &Secret::new(scope));
    }
    for (k, v) in r.extra {
        push(k, v);
    }
    Ok(fields)
}

/// RFC 6749 §2.3.1: id and secret are form-url-encoded before Basic encoding.
pub(super) fn basic_auth(r: &TokenRequest<'_>) -> http::HeaderValue {
    let enc = |s: Option<&Secret>| {
        Zeroizing::new(
            url::form_urlencoded::byte_serialize(s.map(Secret::expose).unwrap_or("").as_bytes())
                .collect::<String>(),
        )
    };
    let raw = Zeroizing::new(format!("{}:{}", *enc(r.client_id), *enc(r.client_secret)));
    let encoded = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&*raw));
    let text = Zeroizing::new(format!("Basic {}", *encoded));
    let mut value = http::HeaderValue::from_str(&text).expect("base64 is a valid header value");
    value.set_sensitive(true);
    value
}
