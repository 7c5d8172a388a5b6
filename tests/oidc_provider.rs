//! Against a real, OpenID-certified authorization server: node
//! `oidc-provider` with a resource server that verifies every token it gets
//! (tests/oidc/server.mjs, started by tests/support/oidc.rs; needs
//! `npm ci --prefix tests/oidc`).
//!
//! The proxy tests use today's client_credentials grant with the secret in
//! the body and as HTTP Basic. The harness tests play a user through the
//! authorization-code (PKCE) and device flows without the proxy, to show
//! the pieces the user-delegated grants will be tested with work.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use serde_json::Value;
use support::oidc::{
    generate_key, pkce_pair, Browser, Client, KeyFormat, KeyKind, OidcConfig, OidcServer, TestPki,
    Ttl, DEVICE_CODE_GRANT,
};
use support::{client, get_json, start_proxy};

const SECRET: &str = "s3cret-for-oidc-provider-0123456789abcdef";

/// A proxy with one client_credentials provider `op` and the route `/api/`
/// to the resource server.
fn proxy_config(op: &OidcServer, client_id: &str, client_auth: &str, extra: &str) -> String {
    format!(
        r#"
[store]
kind = "memory"

[providers.op]
type = "oauth2"
grant = "client_credentials"
token_url = "{token_url}"
client_id = "{client_id}"
client_secret = "{SECRET}"
client_auth = "{client_auth}"
scope = "api:read"
{extra}

[[routes]]
prefix = "/api/"
upstream = "{api}/"
provider = "op"
"#,
        token_url = op.token_url(),
        api = op.resource(),
    )
}

async fn get_through(proxy: &support::Proxy, path: &str) -> (u16, Value) {
    let resp = client().get(proxy.url(path)).send().await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

#[tokio::test]
async fn client_secret_post_and_basic_tokens_are_verified_by_the_resource_server() {
    let Some(op) = OidcServer::start(&OidcConfig::with_clients([
        Client::new("app-post", "client_secret_post").secret(SECRET),
        Client::new("app-basic", "client_secret_basic").secret(SECRET),
    ])) else {
        return;
    };
    for (client_id, client_auth, method) in [
        ("app-post", "body", "client_secret_post"),
        ("app-basic", "basic", "client_secret_basic"),
    ] {
        let proxy = start_proxy(&proxy_config(&op, client_id, client_auth, "")).await;
        let (status, body) = get_through(&proxy, "/api/things?page=2").await;
        assert_eq!(status, 200, "{client_id}: {body}");
        // What the resource server verified: signature against the
        // provider's key, aud = the resource, not expired.
        assert_eq!(body["scheme"], "Bearer");
        assert_eq!(body["client_id"], client_id);
        assert_eq!(body["path"], "/api/things");
        assert_eq!(body["scope"], "api:read");

        // oidc-provider accepts only the registered method, so a success
        // means the proxy authenticated the way the client is registered.
        let grants = op.grants().await;
        let mine: Vec<_> = grants
            .iter()
            .filter(|g| g.client_id.as_deref() == Some(client_id))
            .collect();
        assert_eq!(mine.len(), 1, "{grants:?}");
        assert_eq!(mine[0].grant_type.as_deref(), Some("client_credentials"));
        assert_eq!(mine[0].client_auth_method.as_deref(), Some(method));
        assert_eq!(mine[0].error, None);
        assert_eq!(body["token_jti"].as_str(), mine[0].token_jti.as_deref());
    }
}

#[tokio::test]
async fn a_refused_client_secret_is_reauthentication_failed() {
    let Some(op) = OidcServer::start(&OidcConfig::with_clients([Client::new(
        "app",
        "client_secret_basic",
    )
    .secret("another-secret-0123456789abcdef0123")])) else {
        return;
    };
    let proxy = start_proxy(&proxy_config(&op, "app", "basic", "")).await;
    let (status, body) = get_through(&proxy, "/api/things").await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["error"], "reauthentication_failed");
    assert!(!body.to_string().contains(SECRET));
    let grants = op.grants().await;
    assert_eq!(grants.len(), 1, "no retry of a refused client: {grants:?}");
    assert_eq!(grants[0].error.as_deref(), Some("invalid_client"));
    assert!(op.requests().await.is_empty(), "the API saw nothing");
    let log = op.stderr_with("grant.error: invalid_client").await;
    assert!(
        !log.contains(SECRET) && !log.contains("another-secret"),
        "{log}"
    );
}

#[tokio::test]
async fn an_expired_token_is_renewed_before_the_resource_server_sees_it() {
    const TTL: u64 = 3;
    let config = OidcConfig {
        ttl: Ttl {
            client_credentials: Some(TTL),
            ..Ttl::default()
        },
        ..OidcConfig::with_clients([Client::new("app", "client_secret_post").secret(SECRET)])
    };
    let Some(op) = OidcServer::start(&config) else {
        return;
    };
    let proxy = start_proxy(&proxy_config(
        &op,
        "app",
        "body",
        r#"refresh_before = "1s""#,
    ))
    .await;

    let (status, first) = get_through(&proxy, "/api/one").await;
    assert_eq!(status, 200, "{first}");
    let first_exp = first["exp"].as_u64().unwrap();
    assert!(
        first_exp <= now() + TTL,
        "the short TTL is in effect: {first}"
    );

    // Wait until the resource server would refuse the first token.
    let until = first_exp + 1;
    tokio::time::sleep(Duration::from_secs(until.saturating_sub(now()))).await;
    assert!(now() > first_exp);

    let (status, second) = get_through(&proxy, "/api/two").await;
    assert_eq!(status, 200, "{second}");
    assert_ne!(second["token_jti"], first["token_jti"], "a new token");
    assert!(second["exp"].as_u64().unwrap() > first_exp);

    // The provider issued exactly the two tokens the API saw.
    let grants = op.grants().await;
    let issued: Vec<_> = grants
        .iter()
        .map(|g| g.token_jti.clone().unwrap())
        .collect();
    assert_eq!(
        issued,
        [&first["token_jti"], &second["token_jti"]].map(|j| j.as_str().unwrap().to_string())
    );

    // Every refusal (if the proxy's clock and the token's whole-second `exp`
    // raced) was for expiry only, and the proxy recovered by itself.
    for r in op.requests().await {
        if let Some(error) = &r.error {
            assert!(error.contains("\"exp\""), "{r:?}");
        }
    }
    let status = get_json(&client(), proxy.url("/_authproxy/status")).await;
    let op_status = &status["providers"]["op"];
    assert_eq!(op_status["state"], "ok", "{status}");
    assert_eq!(op_status["token_requests"], 2, "{status}");
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

// ---- the harness itself: what the user-delegated grants will be tested with ----

const REDIRECT_URI: &str = "http://127.0.0.1:9/callback";

#[tokio::test]
async fn harness_authorization_code_with_pkce_and_rotating_refresh() {
    let config = OidcConfig {
        ttl: Ttl {
            access_token: Some(60),
            ..Ttl::default()
        },
        ..OidcConfig::with_clients([Client::new("web", "client_secret_basic")
            .secret(SECRET)
            .grants(&["authorization_code", "refresh_token"])
            .redirect_uri(REDIRECT_URI)])
    };
    let Some(op) = OidcServer::start(&config) else {
        return;
    };
    let (verifier, challenge) = pkce_pair();
    let mut authorize = url::Url::parse(&op.authorize_url()).unwrap();
    authorize
        .query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", "web")
        .append_pair("redirect_uri", REDIRECT_URI)
        .append_pair("scope", "api:read")
        .append_pair("state", "st-123")
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");

    let back = Browser::new(&op)
        .authorize(authorize.as_str(), "alice")
        .await;
    assert!(back.as_str().starts_with(REDIRECT_URI), "{back}");
    let query: std::collections::HashMap<_, _> = back.query_pairs().into_owned().collect();
    assert_eq!(
        query.get("state").map(String::as_str),
        Some("st-123"),
        "{back}"
    );
    let code = query
        .get("code")
        .unwrap_or_else(|| panic!("no code: {back}"));

    let token = |form: Vec<(&'static str, String)>| {
        let op = &op;
        async move {
            let resp = op
                .http()
                .post(op.token_url())
                .basic_auth("web", Some(SECRET))
                .form(&form)
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    // The verifier is checked (a wrong one does not spend the code).
    let exchange = |verifier: String| {
        token(vec![
            ("grant_type", "authorization_code".into()),
            ("code", code.clone()),
            ("redirect_uri", REDIRECT_URI.into()),
            ("code_verifier", verifier),
        ])
    };
    let (status, body) = exchange(pkce_pair().0).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "{body}"
    );
    let (status, tokens) = exchange(verifier).await;
    assert_eq!(status, 200, "{tokens}");
    let access = tokens["access_token"].as_str().unwrap();
    let refresh = tokens["refresh_token"]
        .as_str()
        .expect("a refresh token")
        .to_string();

    let api = |token: String| {
        let op = &op;
        async move {
            let resp = op
                .http()
                .get(op.url("/api/me"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    let (status, me) = api(access.to_string()).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["sub"], "alice");
    assert_eq!(me["client_id"], "web");

    // Refresh rotates; the spent refresh token is detected and revokes the grant.
    let (status, renewed) = token(vec![
        ("grant_type", "refresh_token".into()),
        ("refresh_token", refresh.clone()),
    ])
    .await;
    assert_eq!(status, 200, "{renewed}");
    let next_refresh = renewed["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(next_refresh, refresh, "rotated");
    assert_eq!(
        api(renewed["access_token"].as_str().unwrap().into())
            .await
            .0,
        200
    );
    let (status, reused) = token(vec![
        ("grant_type", "refresh_token".into()),
        ("refresh_token", refresh),
    ])
    .await;
    assert_eq!(
        (status, reused["error"].as_str()),
        (400, Some("invalid_grant")),
        "{reused}"
    );
    let (status, after) = token(vec![
        ("grant_type", "refresh_token".into()),
        ("refresh_token", next_refresh),
    ])
    .await;
    assert_eq!(
        (status, after["error"].as_str()),
        (400, Some("invalid_grant")),
        "grant revoked: {after}"
    );
}

#[tokio::test]
async fn harness_device_flow() {
    let config = OidcConfig {
        device_interval: Some(1),
        ..OidcConfig::with_clients([
            Client::new("tv", "none").grants(&[DEVICE_CODE_GRANT, "refresh_token"])
        ])
    };
    let Some(op) = OidcServer::start(&config) else {
        return;
    };
    let http = op.http();
    let start: Value = http
        .post(op.device_authorization_url())
        .form(&[("client_id", "tv"), ("scope", "api:read")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let device_code = start["device_code"]
        .as_str()
        .unwrap_or_else(|| panic!("{start}"));
    let user_code = start["user_code"].as_str().unwrap();
    assert_eq!(start["verification_uri"], op.url("/device"));
    assert_eq!(start["interval"], 1, "{start}");

    let poll = || async {
        let resp = http
            .post(op.token_url())
            .form(&[
                ("grant_type", DEVICE_CODE_GRANT),
                ("device_code", device_code),
                ("client_id", "tv"),
            ])
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
    };
    let (status, pending) = poll().await;
    assert_eq!(
        (status, pending["error"].as_str()),
        (400, Some("authorization_pending")),
        "{pending}"
    );

    let page = Browser::new(&op).device(user_code, "bob").await;
    assert!(page.contains("Sign-in Success"), "{page}");

    // Polling at the given interval, as RFC 8628 §3.5 asks.
    let mut tokens = None;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (status, body) = poll().await;
        if status == 200 {
            tokens = Some(body);
            break;
        }
        assert_eq!(body["error"], "authorization_pending", "{body}");
    }
    let tokens = tokens.expect("a token after the user consented");
    assert!(tokens["refresh_token"].is_string(), "{tokens}");
    let resp = http
        .get(op.url("/api/me"))
        .bearer_auth(tokens["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let me: Value = resp.json().await.unwrap();
    assert_eq!(
        (me["sub"].as_str(), me["client_id"].as_str()),
        (Some("bob"), Some("tv"))
    );
}

// ---- hand-made JWTs: only to prove the harness checks what it should ----
// (the proxy's own assertions and proofs come with the issue that adds them)

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn pem_to_der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(body).unwrap()
}

enum Signer {
    Rs256(RsaKeyPair),
    Es256(EcdsaKeyPair),
    Hs256(ring::hmac::Key),
}

impl Signer {
    fn from_pkcs8_pem(pem: &str) -> Signer {
        let der = pem_to_der(pem);
        match RsaKeyPair::from_pkcs8(&der) {
            Ok(rsa) => Signer::Rs256(rsa),
            Err(_) => Signer::Es256(
                EcdsaKeyPair::from_pkcs8(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    &der,
                    &SystemRandom::new(),
                )
                .unwrap(),
            ),
        }
    }

    fn alg(&self) -> &'static str {
        match self {
            Signer::Rs256(_) => "RS256",
            Signer::Es256(_) => "ES256",
            Signer::Hs256(_) => "HS256",
        }
    }

    /// A compact JWS of `claims` with `header` (plus `alg`).
    fn jwt(&self, mut header: Value, claims: &Value) -> String {
        header["alg"] = self.alg().into();
        let input = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
        let rng = SystemRandom::new();
        let sig = match self {
            Signer::Rs256(k) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &rng,
                    input.as_bytes(),
                    &mut sig,
                )
                .unwrap();
                sig
            }
            Signer::Es256(k) => k.sign(&rng, input.as_bytes()).unwrap().as_ref().to_vec(),
            Signer::Hs256(k) => ring::hmac::sign(k, input.as_bytes()).as_ref().to_vec(),
        };
        format!("{input}.{}", b64(sig))
    }
}

fn jti() -> String {
    b64(rand::random::<[u8; 16]>())
}

/// An RFC 7523 client assertion for `client_id` at `token_url`.
fn client_assertion(
    signer: &Signer,
    client_id: &str,
    token_url: &str,
    kid: Option<&str>,
) -> String {
    let mut header = serde_json::json!({ "typ": "JWT" });
    if let Some(kid) = kid {
        header["kid"] = kid.into();
    }
    let claims = serde_json::json!({
        "iss": client_id, "sub": client_id, "aud": token_url,
        "jti": jti(), "iat": now(), "exp": now() + 60,
    });
    signer.jwt(header, &claims)
}

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

#[tokio::test]
async fn harness_accepts_jwt_client_authentication_with_generated_keys() {
    let rsa = generate_key(KeyKind::Rsa, KeyFormat::Pkcs8, Some("rsa-1"));
    let ec = generate_key(KeyKind::Ec, KeyFormat::Pkcs8, Some("ec-1"));
    let stranger = generate_key(KeyKind::Ec, KeyFormat::Pkcs8, Some("ec-1"));
    let Some(op) = OidcServer::start(&OidcConfig::with_clients([
        Client::new("pk-rsa", "private_key_jwt").jwks(&[&rsa.public_jwk]),
        Client::new("pk-ec", "private_key_jwt").jwks(&[&ec.public_jwk]),
        Client::new("hs", "client_secret_jwt").secret(SECRET),
    ])) else {
        return;
    };
    let token_url = op.token_url();
    let hs = Signer::Hs256(ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        SECRET.as_bytes(),
    ));
    let cases = [
        (
            "pk-rsa",
            Signer::from_pkcs8_pem(&rsa.private_pem),
            Some("rsa-1"),
            200,
        ),
        (
            "pk-ec",
            Signer::from_pkcs8_pem(&ec.private_pem),
            Some("ec-1"),
            200,
        ),
        ("hs", hs, None, 200),
        // Same kid, another key: the signature check refuses it.
        (
            "pk-ec",
            Signer::from_pkcs8_pem(&stranger.private_pem),
            Some("ec-1"),
            401,
        ),
    ];
    for (client_id, signer, kid, expected) in cases {
        let assertion = client_assertion(&signer, client_id, &token_url, kid);
        let resp = op
            .http()
            .post(&token_url)
            .form(&[
                ("grant_type", "client_credentials"),
                ("scope", "api:read"),
                ("client_assertion_type", ASSERTION_TYPE),
                ("client_assertion", &assertion),
            ])
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(status, expected, "{client_id} {}: {body}", signer.alg());
        if expected == 200 {
            let resp = op
                .http()
                .get(op.url("/api/x"))
                .bearer_auth(body["access_token"].as_str().unwrap());
            let me: Value = resp.send().await.unwrap().json().await.unwrap();
            assert_eq!(me["client_id"], client_id, "{me}");
        } else {
            assert_eq!(body["error"], "invalid_client", "{body}");
        }
    }
    let methods: Vec<_> = op
        .grants()
        .await
        .into_iter()
        .filter(|g| g.error.is_none())
        .map(|g| g.client_auth_method.unwrap())
        .collect();
    assert_eq!(
        methods,
        ["private_key_jwt", "private_key_jwt", "client_secret_jwt"]
    );
}

#[tokio::test]
async fn harness_resource_server_refuses_foreign_and_expired_tokens() {
    let config = OidcConfig {
        ttl: Ttl {
            client_credentials: Some(3),
            ..Ttl::default()
        },
        ..OidcConfig::with_clients([Client::new("app", "client_secret_post").secret(SECRET)])
    };
    let Some(op) = OidcServer::start(&config) else {
        return;
    };
    let get_token = |resource: String| {
        let op = &op;
        async move {
            let form = [
                ("grant_type", "client_credentials"),
                ("client_id", "app"),
                ("client_secret", SECRET),
                ("resource", &resource),
            ];
            let resp = op
                .http()
                .post(op.token_url())
                .form(&form)
                .send()
                .await
                .unwrap();
            let body: Value = resp.json().await.unwrap();
            body["access_token"]
                .as_str()
                .unwrap_or_else(|| panic!("{body}"))
                .to_string()
        }
    };
    let token = get_token(op.resource()).await;
    // At least 2 s before its whole-second exp.
    let (status, challenge, _) = call_api(&op, "/api/x", "Bearer", &token, None).await;
    assert_eq!(status, 200, "{challenge}");
    let other_api = get_token(op.url("/other-api")).await;
    // Right claims, signed by a key the provider never had.
    let forged = {
        let claims: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(token.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap();
        let key = generate_key(KeyKind::Rsa, KeyFormat::Pkcs8, None);
        Signer::from_pkcs8_pem(&key.private_pem).jwt(
            serde_json::json!({ "typ": "at+jwt", "kid": "as-rs256" }),
            &claims,
        )
    };
    for (what, token, reason) in [
        ("another API's token", &other_api, "'aud' claim"),
        ("forged token", &forged, "signature verification failed"),
    ] {
        let (status, challenge, _) = call_api(&op, "/api/x", "Bearer", token, None).await;
        assert_eq!(status, 401, "{what}");
        assert!(challenge.contains(reason), "{what}: {challenge}");
    }
    // After its exp (whole seconds), the token is refused.
    let exp: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    let exp = exp["exp"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_secs((exp + 1).saturating_sub(now()))).await;
    let (status, challenge, _) = call_api(&op, "/api/x", "Bearer", &token, None).await;
    assert_eq!(status, 401);
    assert!(challenge.contains("'exp' claim"), "{challenge}");
}

/// A P-256 DPoP key and the proofs it signs (RFC 9449 §4.2).
struct DpopKey {
    signer: Signer,
    jwk: Value,
}

impl DpopKey {
    fn new() -> DpopKey {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
        // Uncompressed point: 0x04 || x || y.
        let point = key.public_key().as_ref().to_vec();
        let jwk = serde_json::json!({
            "kty": "EC", "crv": "P-256", "x": b64(&point[1..33]), "y": b64(&point[33..]),
        });
        DpopKey {
            signer: Signer::Es256(key),
            jwk,
        }
    }

    /// RFC 7638 thumbprint: SHA-256 of the required members in order.
    fn thumbprint(&self) -> String {
        let canonical = format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            self.jwk["x"].as_str().unwrap(),
            self.jwk["y"].as_str().unwrap()
        );
        b64(ring::digest::digest(
            &ring::digest::SHA256,
            canonical.as_bytes(),
        ))
    }

    fn proof(&self, claims: Value) -> String {
        let header = serde_json::json!({ "typ": "dpop+jwt", "jwk": self.jwk });
        self.signer.jwt(header, &claims)
    }

    /// A proof for `htm` `htu`, bound to `token` when given.
    fn claims(htm: &str, htu: &str, token: Option<&str>) -> Value {
        let mut claims = serde_json::json!({ "htm": htm, "htu": htu, "iat": now(), "jti": jti() });
        if let Some(token) = token {
            claims["ath"] = b64(ring::digest::digest(
                &ring::digest::SHA256,
                token.as_bytes(),
            ))
            .into();
        }
        claims
    }
}

/// A DPoP-bound client_credentials token for `client` (answering the token
/// endpoint's nonce demand when it makes one).
async fn dpop_token(op: &OidcServer, key: &DpopKey, client_id: &str) -> String {
    let mut nonce: Option<String> = None;
    for _ in 0..2 {
        let mut claims = DpopKey::claims("POST", &op.token_url(), None);
        if let Some(nonce) = &nonce {
            claims["nonce"] = nonce.as_str().into();
        }
        let resp = op
            .http()
            .post(op.token_url())
            .header("DPoP", key.proof(claims))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", client_id),
                ("client_secret", SECRET),
            ])
            .send()
            .await
            .unwrap();
        let header_nonce = resp
            .headers()
            .get("dpop-nonce")
            .map(|v| v.to_str().unwrap().to_string());
        let body: Value = resp.json().await.unwrap();
        if body["error"] == "use_dpop_nonce" {
            nonce = Some(header_nonce.expect("use_dpop_nonce comes with DPoP-Nonce"));
            continue;
        }
        assert_eq!(body["token_type"], "DPoP", "{body}");
        return body["access_token"].as_str().unwrap().to_string();
    }
    panic!("no token after the nonce retry");
}

/// GET `path` at the resource server with `Authorization: <scheme> <token>`
/// and the given DPoP header; the status and `WWW-Authenticate`.
async fn call_api(
    op: &OidcServer,
    path: &str,
    scheme: &str,
    token: &str,
    proof: Option<String>,
) -> (u16, String, Option<String>) {
    let mut req = op
        .http()
        .get(op.url(path))
        .header("authorization", format!("{scheme} {token}"));
    if let Some(proof) = proof {
        req = req.header("DPoP", proof);
    }
    let resp = req.send().await.unwrap();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    let (challenge, nonce) = (
        header("www-authenticate").unwrap_or_default(),
        header("dpop-nonce"),
    );
    (resp.status().as_u16(), challenge, nonce)
}

#[tokio::test]
async fn harness_resource_server_verifies_dpop_binding() {
    let config = OidcConfig {
        dpop_nonce: true,
        ..OidcConfig::with_clients([Client::new("bound", "client_secret_post")
            .secret(SECRET)
            .dpop_bound()])
    };
    let Some(op) = OidcServer::start(&config) else {
        return;
    };
    // A DPoP-bound client gets nothing without a proof.
    let resp = op
        .http()
        .post(op.token_url())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "bound"),
            ("client_secret", SECRET),
        ])
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_grant", "{body}");

    let key = DpopKey::new();
    let token = dpop_token(&op, &key, "bound").await;
    let grants = op.grants().await;
    let errors: Vec<_> = grants.iter().map(|g| g.error.as_deref()).collect();
    assert_eq!(
        errors,
        [Some("invalid_grant"), Some("use_dpop_nonce"), None],
        "no proof; a proof without the nonce; with it"
    );
    let issued = grants.last().unwrap();
    assert_eq!(
        issued.dpop_jkt.as_deref(),
        Some(key.thumbprint().as_str()),
        "the token is bound to our key"
    );

    let htu = op.url("/api/items");
    // Query and fragment are not part of htu (RFC 9449 §4.3 point 9).
    let ok = key.proof(DpopKey::claims(
        "GET",
        &format!("{htu}?ignored=1"),
        Some(&token),
    ));
    let (status, challenge, _) =
        call_api(&op, "/api/items?page=1", "DPoP", &token, Some(ok.clone())).await;
    assert_eq!(status, 200, "{challenge}");
    let seen = op.requests().await;
    assert_eq!(seen[0].jkt.as_deref(), Some(key.thumbprint().as_str()));
    assert_eq!(seen[0].scheme.as_deref(), Some("DPoP"));

    let with = |f: &dyn Fn(&mut Value)| {
        let mut claims = DpopKey::claims("GET", &htu, Some(&token));
        f(&mut claims);
        Some(key.proof(claims))
    };
    let other_key = DpopKey::new();
    let old = now() - 600;
    let cases: Vec<(&str, &str, Option<String>, &str)> = vec![
        ("replayed proof", "DPoP", Some(ok), "jti replayed"),
        ("no proof", "DPoP", None, "expected one DPoP header, got 0"),
        (
            "wrong method",
            "DPoP",
            with(&|c| c["htm"] = "POST".into()),
            "htm mismatch",
        ),
        (
            "wrong URL",
            "DPoP",
            with(&|c| c["htu"] = op.url("/api/other").into()),
            "htu mismatch",
        ),
        (
            "old proof",
            "DPoP",
            with(&|c| c["iat"] = old.into()),
            "iat outside the window",
        ),
        (
            "other token",
            "DPoP",
            with(&|c| c["ath"] = b64([0u8; 32]).into()),
            "ath mismatch",
        ),
        (
            "other key",
            "DPoP",
            Some(other_key.proof(DpopKey::claims("GET", &htu, Some(&token)))),
            "cnf.jkt does not match",
        ),
        (
            "bound token as Bearer",
            "Bearer",
            None,
            "DPoP-bound access token presented as Bearer",
        ),
    ];
    for (what, scheme, proof, reason) in cases {
        let (status, challenge, _) = call_api(&op, "/api/items", scheme, &token, proof).await;
        assert_eq!(status, 401, "{what}");
        assert!(
            challenge.starts_with(&format!("{scheme} error=")),
            "{what}: {challenge}"
        );
        assert!(challenge.contains(reason), "{what}: {challenge}");
    }
    // A proof not signed by its embedded key.
    let forged = {
        let real = key.proof(DpopKey::claims("GET", &htu, Some(&token)));
        let parts: Vec<&str> = real.split('.').collect();
        let header = serde_json::json!({ "typ": "dpop+jwt", "alg": "ES256", "jwk": other_key.jwk });
        format!("{}.{}.{}", b64(header.to_string()), parts[1], parts[2])
    };
    let (status, challenge, _) = call_api(&op, "/api/items", "DPoP", &token, Some(forged)).await;
    assert_eq!(status, 401);
    assert!(
        challenge.contains("signature verification failed"),
        "{challenge}"
    );
}

#[tokio::test]
async fn harness_resource_server_dpop_nonce() {
    let config = OidcConfig {
        rs_dpop_nonce: true,
        ..OidcConfig::with_clients([Client::new("bound", "client_secret_post")
            .secret(SECRET)
            .dpop_bound()])
    };
    let Some(op) = OidcServer::start(&config) else {
        return;
    };
    let key = DpopKey::new();
    let token = dpop_token(&op, &key, "bound").await;
    let htu = op.url("/api/items");
    let proof = |nonce: Option<&str>| {
        let mut claims = DpopKey::claims("GET", &htu, Some(&token));
        if let Some(nonce) = nonce {
            claims["nonce"] = nonce.into();
        }
        Some(key.proof(claims))
    };
    // RFC 9449 §9: 401, error use_dpop_nonce, the nonce in DPoP-Nonce.
    let (status, challenge, nonce) = call_api(&op, "/api/items", "DPoP", &token, proof(None)).await;
    assert_eq!(status, 401);
    assert!(
        challenge.starts_with("DPoP error=\"use_dpop_nonce\""),
        "{challenge}"
    );
    let nonce = nonce.expect("DPoP-Nonce header");
    let (status, challenge, _) =
        call_api(&op, "/api/items", "DPoP", &token, proof(Some(&nonce))).await;
    assert_eq!(status, 200, "{challenge}");

    op.rotate_rs_nonce().await;
    let (status, challenge, fresh) =
        call_api(&op, "/api/items", "DPoP", &token, proof(Some(&nonce))).await;
    assert_eq!(status, 401, "the old nonce is refused: {challenge}");
    let fresh = fresh.unwrap();
    assert_ne!(fresh, nonce);
    let (status, _, _) = call_api(&op, "/api/items", "DPoP", &token, proof(Some(&fresh))).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn harness_tls_client_auth_and_certificate_bound_tokens() {
    let pki = TestPki::new();
    let (cert, key) = pki.client_cert("mtls-app");
    let config = OidcConfig {
        tls: Some(pki.server_tls()),
        ..OidcConfig::with_clients([Client::new("mtls-app", "tls_client_auth")
            .meta("tls_client_auth_subject_dn", "CN=mtls-app")
            .meta("tls_client_certificate_bound_access_tokens", true)])
    };
    let Some(op) = OidcServer::start(&config) else {
        return;
    };
    assert!(op.issuer().starts_with("https://"));
    let identity = reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap();
    let with_cert = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
        .identity(identity)
        .no_proxy()
        .build()
        .unwrap();
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", "mtls-app"),
        ("scope", "api:read"),
    ];

    // Without the certificate: refused.
    let resp = op
        .http()
        .post(op.token_url())
        .form(&form)
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client", "{body}");

    let resp = with_cert
        .post(op.token_url())
        .form(&form)
        .send()
        .await
        .unwrap();
    let body: Value = resp.json().await.unwrap();
    let token = body["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"));

    // The token is bound to the certificate (RFC 8705 §3).
    let resp = with_cert
        .get(op.url("/api/x"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = op
        .http()
        .get(op.url("/api/x"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let challenge = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(challenge.contains("cnf.x5t#S256"), "{challenge}");
}
