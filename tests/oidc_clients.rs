//! The client authentications and discovery of issue 15, end to end
//! against node `oidc-provider` (tests/oidc/server.mjs): it verifies every
//! client assertion (signature with the registered public key or secret,
//! `iss`, `sub`, `aud`, `exp`, a `jti` it has not seen) and every client
//! certificate, and its resource server verifies every token the proxy
//! injects (and, for certificate-bound tokens, the certificate the proxy
//! presents on the route).

mod support;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use support::oidc::{
    generate_key, Client, KeyFormat, KeyKind, OidcConfig, OidcServer, TestPki, Ttl,
};
use support::{client, get_json, run_cli, start_proxy_in};

const SECRET: &str = "hs256-SECRET-for-oidc-provider-0123456789";

async fn get_through(proxy: &support::Proxy, path: &str) -> (u16, Value) {
    let resp = client().get(proxy.url(path)).send().await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// One oauth2 provider block `[providers.<name>]` for client_credentials
/// at `op`, plus its route `/<name>/` to the resource server.
fn provider_block(name: &str, op: &OidcServer, auth: &str) -> String {
    format!(
        r#"
[providers.{name}]
type = "oauth2"
grant = "client_credentials"
token_url = "{token_url}"
client_id = "{name}"
scope = "api:read"
{auth}

[[routes]]
prefix = "/{name}/"
upstream = "{api}/"
provider = "{name}"
"#,
        token_url = op.token_url(),
        api = op.resource(),
    )
}

/// Every JWT client authentication, with keys in every PEM form: the
/// provider only accepts the method and algorithm each client registered,
/// so a 200 means the proxy signed as configured.
#[tokio::test]
async fn jwt_client_authentication_with_every_key_format_and_algorithm() {
    let rsa8 = generate_key(KeyKind::Rsa, KeyFormat::Pkcs8, Some("rsa8-k1"));
    let rsa1 = generate_key(KeyKind::Rsa, KeyFormat::Pkcs1, None);
    let ec8 = generate_key(KeyKind::Ec, KeyFormat::Pkcs8, None);
    let sec1 = generate_key(KeyKind::Ec, KeyFormat::Sec1, Some("ec-k2"));
    // A second key under another kid at the same client: the provider
    // picks the key by the assertion's `kid`.
    let decoy = generate_key(KeyKind::Ec, KeyFormat::Pkcs8, Some("ec-decoy"));
    let pk = |id: &str, alg: &str| {
        Client::new(id, "private_key_jwt").meta("token_endpoint_auth_signing_alg", alg)
    };
    let Some(op) = OidcServer::start(&OidcConfig::with_clients([
        Client::new("hs", "client_secret_jwt")
            .secret(SECRET)
            .meta("token_endpoint_auth_signing_alg", "HS256"),
        pk("rsa8", "RS256").jwks(&[&rsa8.public_jwk]),
        pk("rsa1", "PS256").jwks(&[&rsa1.public_jwk]),
        pk("ec8", "ES256").jwks(&[&ec8.public_jwk]),
        pk("sec1", "ES256").jwks(&[&decoy.public_jwk, &sec1.public_jwk]),
    ])) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "rsa8.pem", &rsa8.private_pem);
    write(dir.path(), "rsa1.pem", &rsa1.private_pem);
    write(dir.path(), "sec1.pem", &sec1.private_pem);
    let mut config = "[store]\nkind = \"memory\"\n".to_string();
    for (name, auth) in [
        (
            "hs",
            format!("client_auth = \"client_secret_jwt\"\nclient_secret = \"{SECRET}\""),
        ),
        (
            // `${file:}`, the form the spec shows; signing_alg from the key.
            "rsa8",
            "client_auth = \"private_key_jwt\"\nprivate_key = \"${file:rsa8.pem}\"\nkey_id = \"rsa8-k1\"".into(),
        ),
        (
            // A path; PS256 asked for.
            "rsa1",
            "client_auth = \"private_key_jwt\"\nprivate_key = \"rsa1.pem\"\nsigning_alg = \"PS256\"".into(),
        ),
        (
            // Inline PEM.
            "ec8",
            format!(
                "client_auth = \"private_key_jwt\"\nprivate_key = \"\"\"\n{}\"\"\"\nsigning_alg = \"ES256\"",
                ec8.private_pem
            ),
        ),
        (
            "sec1",
            "client_auth = \"private_key_jwt\"\nprivate_key = \"sec1.pem\"\nkey_id = \"ec-k2\"".into(),
        ),
    ] {
        config.push_str(&provider_block(name, &op, &auth));
    }
    let proxy = start_proxy_in(&config, dir).await;
    for name in ["hs", "rsa8", "rsa1", "ec8", "sec1"] {
        let (status, body) = get_through(&proxy, &format!("/{name}/things")).await;
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(body["client_id"], name, "{body}");
        assert_eq!(body["scheme"], "Bearer");
        assert_eq!(body["path"], "/api/things");
    }
    let grants = op.grants().await;
    assert_eq!(grants.len(), 5, "one token request each: {grants:?}");
    for g in &grants {
        assert_eq!(g.error, None, "{g:?}");
        let expected = if g.client_id.as_deref() == Some("hs") {
            "client_secret_jwt"
        } else {
            "private_key_jwt"
        };
        assert_eq!(g.client_auth_method.as_deref(), Some(expected), "{g:?}");
    }
    // Nothing of the keys or the secret in the provider's log either.
    let log = op.stderr();
    for pem in [&rsa8, &rsa1, &ec8, &sec1] {
        let body_line = pem.private_pem.lines().nth(1).unwrap();
        assert!(!log.contains(body_line), "{log}");
    }
}

/// A new assertion (new `jti`, new `iat`) for each renewal: oidc-provider
/// refuses a `jti` it has seen. Endpoints come from discovery (the
/// config names only the issuer), and `resource` reaches the provider.
#[tokio::test]
async fn discovered_endpoints_resource_indicators_and_renewal_with_new_assertions() {
    const TTL: u64 = 3;
    let key = generate_key(KeyKind::Ec, KeyFormat::Pkcs8, Some("k1"));
    let config = OidcConfig {
        ttl: Ttl {
            client_credentials: Some(TTL),
            ..Ttl::default()
        },
        ..OidcConfig::with_clients([
            Client::new("app", "private_key_jwt").jwks(&[&key.public_jwk]),
            Client::new("other", "private_key_jwt").jwks(&[&key.public_jwk]),
        ])
    };
    let Some(op) = OidcServer::start(&config) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "key.pem", &key.private_pem);
    let block = |name: &str, resource: String| {
        format!(
            r#"
[providers.{name}]
type = "oauth2"
grant = "client_credentials"
issuer = "{issuer}"
client_id = "{name}"
client_auth = "private_key_jwt"
private_key = "${{file:key.pem}}"
key_id = "k1"
scope = "api:read"
refresh_before = "1s"
extra = {{ resource = "{resource}" }}

[[routes]]
prefix = "/{name}/"
upstream = "{api}/"
provider = "{name}"
"#,
            issuer = op.issuer(),
            api = op.resource(),
        )
    };
    let config = format!(
        "[store]\nkind = \"memory\"\n{}{}",
        block("app", op.resource()),
        // Another API's token: the resource server at /api/ refuses it.
        block("other", op.url("/other-api")),
    );
    let proxy = start_proxy_in(&config, dir).await;

    let (status, first) = get_through(&proxy, "/app/one").await;
    assert_eq!(status, 200, "{first}");
    let (status, other) = get_through(&proxy, "/other/one").await;
    assert_eq!(status, 401, "a token for another resource: {other}");

    // Renewal once the first token expired: a fresh assertion.
    let first_exp = first["exp"].as_u64().unwrap();
    assert!(first_exp <= now() + TTL, "{first}");
    tokio::time::sleep(Duration::from_secs((first_exp + 1).saturating_sub(now()))).await;
    let (status, second) = get_through(&proxy, "/app/two").await;
    assert_eq!(status, 200, "{second}");
    assert_ne!(second["token_jti"], first["token_jti"]);

    let grants: Vec<_> = op
        .grants()
        .await
        .into_iter()
        .filter(|g| g.client_id.as_deref() == Some("app"))
        .collect();
    assert_eq!(grants.len(), 2, "{grants:?}");
    assert!(grants.iter().all(|g| g.error.is_none()), "{grants:?}");

    let status = get_json(&client(), proxy.url("/_authproxy/status")).await;
    let app = &status["providers"]["app"];
    assert_eq!(app["state"], "ok", "{status}");
    assert_eq!(app["discovered"]["issuer"], op.issuer());
    assert_eq!(app["discovered"]["token_endpoint"], op.token_url());
    assert_eq!(
        app["discovered"]["device_authorization_endpoint"],
        op.device_authorization_url()
    );
    assert!(!status
        .to_string()
        .contains(key.private_pem.lines().nth(1).unwrap()));
}

/// RFC 8705: the token endpoint (and discovery) over TLS with a private
/// CA, the client authenticated by its certificate, the token bound to
/// that certificate; the route presents the same certificate to the
/// resource server, which checks the binding.
#[tokio::test]
async fn tls_client_auth_and_certificate_bound_tokens_through_a_route() {
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
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "ca.pem", &pki.ca_pem);
    write(dir.path(), "client.pem", &cert);
    write(dir.path(), "client.key", &key);
    let config = format!(
        r#"
[store]
kind = "memory"

[providers.op]
type = "oauth2"
grant = "client_credentials"
issuer = "{issuer}"
client_id = "mtls-app"
client_auth = "tls_client_auth"
client_cert = "client.pem"
client_key = "client.key"
ca_file = "ca.pem"
scope = "api:read"

[[routes]]
prefix = "/api/"
upstream = "{api}/"
provider = "op"
ca_file = "ca.pem"
client_cert = "client.pem"
client_key = "client.key"

# The same token without the certificate: the binding fails.
[[routes]]
prefix = "/nocert/"
upstream = "{api}/"
provider = "op"
ca_file = "ca.pem"
"#,
        issuer = op.issuer(),
        api = op.resource(),
    );
    let proxy = start_proxy_in(&config, dir).await;
    let (status, body) = get_through(&proxy, "/api/things").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["client_id"], "mtls-app");
    let grants = op.grants().await;
    assert_eq!(grants.len(), 1, "{grants:?}");
    assert_eq!(
        grants[0].client_auth_method.as_deref(),
        Some("tls_client_auth")
    );

    let (status, body) = get_through(&proxy, "/nocert/things").await;
    assert_eq!(status, 401, "{body}");
    let seen = op.requests().await;
    let refused = seen.last().unwrap();
    assert!(
        refused.error.as_deref().unwrap_or("").contains("x5t#S256"),
        "{refused:?}"
    );
}

/// `check` contacts the issuer and shows what it found; `check --probe`
/// runs discovery and the grant with client authentication, and shows no
/// token and no key.
#[tokio::test]
async fn check_reports_discovered_endpoints_and_probe_runs_the_whole_chain() {
    let key = generate_key(KeyKind::Rsa, KeyFormat::Pkcs1, Some("probe-k"));
    let Some(op) = OidcServer::start(&OidcConfig::with_clients([Client::new(
        "app",
        "private_key_jwt",
    )
    .jwks(&[&key.public_jwk])])) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "key.pem", &key.private_pem);
    let config = format!(
        r#"
[store]
kind = "memory"

[providers.op]
type = "oauth2"
grant = "client_credentials"
issuer = "{issuer}"
client_id = "app"
client_auth = "private_key_jwt"
private_key = "${{file:key.pem}}"
key_id = "probe-k"
scope = "api:read"

[[routes]]
prefix = "/api/"
upstream = "{api}/"
provider = "op"
"#,
        issuer = op.issuer(),
        api = op.resource(),
    );
    let path = dir.path().join("authproxy.toml");
    write(dir.path(), "authproxy.toml", &config);
    let path = path.to_str().unwrap().to_string();
    let key_line = key.private_pem.lines().nth(1).unwrap().to_string();

    let (code, out, err) = run_cli(&["check", "--config", &path], &[], dir.path());
    assert_eq!(code, 0, "{out}\n{err}");
    let provider_row = out.lines().find(|l| l.starts_with("op ")).unwrap();
    assert!(
        provider_row.contains(&format!("issuer {}", op.issuer()))
            && provider_row.contains("client_auth private_key_jwt")
            && provider_row.contains("signs RS256 kid probe-k"),
        "{out}"
    );
    let discovery = out
        .lines()
        .find(|l| l.starts_with("discovery op:"))
        .unwrap();
    assert!(
        discovery.contains(&format!("contacted issuer {}", op.issuer()))
            && discovery.contains(&format!("token_endpoint {}", op.token_url()))
            && discovery.contains(&format!(
                "device_authorization_endpoint {}",
                op.device_authorization_url()
            )),
        "{out}"
    );
    assert!(
        op.grants().await.is_empty(),
        "check alone asks for no token"
    );

    let (code, out, err) = run_cli(&["check", "--probe", "--config", &path], &[], dir.path());
    assert_eq!(code, 0, "{out}\n{err}");
    let probe = out.lines().find(|l| l.starts_with("probe op:")).unwrap();
    assert!(
        probe.contains("ok (client_credentials grant, client_auth private_key_jwt; token obtained"),
        "{out}"
    );
    let grants = op.grants().await;
    assert_eq!(grants.len(), 1, "{grants:?}");
    assert_eq!(
        grants[0].client_auth_method.as_deref(),
        Some("private_key_jwt")
    );
    let jti = grants[0].token_jti.clone().unwrap();
    for text in [&out, &err] {
        assert!(!text.contains(&key_line) && !text.contains(&jti), "{text}");
        assert!(
            !text.contains("eyJ"),
            "no JWT (token or assertion) printed: {text}"
        );
    }

    // An issuer that does not answer: check says so and exits 1.
    let closed = support::ClosedPort::new();
    let dead = config.replace(op.issuer(), &format!("http://127.0.0.1:{}", closed.port()));
    write(dir.path(), "authproxy.toml", &dead);
    let (code, out, _) = run_cli(&["check", "--config", &path], &[], dir.path());
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("discovery op: FAILED"), "{out}");
    assert!(out.contains("/.well-known/openid-configuration"), "{out}");
}

/// DPoP (RFC 9449) against oidc-provider: a client that must get
/// DPoP-bound tokens, a token endpoint and a resource server that both
/// demand nonces. The provider checks the proof on the token request and
/// binds the token (`cnf.jkt`); the resource server checks every proof
/// (signature, `htm`, `htu`, `iat`, `jti` not seen, `ath`) and that its key
/// is the one the token is bound to.
#[tokio::test]
async fn dpop_bound_tokens_with_the_nonces_of_both_servers() {
    let Some(op) = OidcServer::start(&OidcConfig {
        dpop_nonce: true,
        rs_dpop_nonce: true,
        ..OidcConfig::with_clients([Client::new("bound", "client_secret_basic")
            .secret(SECRET)
            .dpop_bound()])
    }) else {
        return;
    };
    let auth = format!("client_secret = \"{SECRET}\"\nclient_auth = \"basic\"\ndpop = true");
    let config = format!(
        "[store]\nkind = \"memory\"\n{}",
        provider_block("bound", &op, &auth)
    );
    let proxy = start_proxy_in(&config, tempfile::tempdir().unwrap()).await;
    let (status, body) = get_through(&proxy, "/bound/things?page=2").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scheme"], "DPoP", "{body}");
    let jkt = body["jkt"].as_str().expect("a verified proof").to_string();
    let grants = op.grants().await;
    let errors: Vec<_> = grants.iter().map(|g| g.error.as_deref()).collect();
    assert_eq!(errors, [Some("use_dpop_nonce"), None], "{grants:?}");
    assert_eq!(grants[1].dpop_jkt.as_deref(), Some(jkt.as_str()), "cnf.jkt");

    // The resource server's new nonce: one more request with it, the body
    // sent again.
    op.rotate_rs_nonce().await;
    let resp = client()
        .post(proxy.url("/bound/things"))
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (status, _) = get_through(&proxy, "/bound/again").await;
    assert_eq!(status, 200);
    let seen = op.requests().await;
    let outcomes: Vec<_> = seen
        .iter()
        .map(|r| (r.method.as_str(), r.error.is_some()))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("GET", true),
            ("GET", false),
            ("POST", true),
            ("POST", false),
            ("GET", false)
        ],
        "{seen:?}"
    );
    assert!(seen
        .iter()
        .all(|r| r.error.is_none() || r.error.as_deref().unwrap().contains("nonce")));
    assert!(seen
        .iter()
        .filter(|r| r.error.is_none())
        .all(|r| r.jkt.as_deref() == Some(jkt.as_str())));
    assert_eq!(
        op.grants().await.len(),
        2,
        "no token request after the first"
    );
}
