//! mTLS (RFC 8705 and plain client certificates): a route presents its
//! `client_cert` to an upstream that requires one, a provider presents its
//! own to a token endpoint that requires one. The servers are rustls with
//! `WebPkiClientVerifier` (tests/support/tls.rs): the handshake is where a
//! missing or foreign certificate is refused.

mod support;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde_json::Value;
use support::oidc::TestPki;
use support::tls::MtlsServer;
use support::{client, sha256, start_proxy_in};

fn fingerprint(pem: &str) -> String {
    sha256(
        CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .as_ref(),
    )
}

#[tokio::test]
async fn routes_and_token_endpoints_present_their_client_certificates() {
    let pki = TestPki::new();
    let server = pki.server_tls();
    let mtls = MtlsServer::start(&server.cert, &server.key, &pki.ca_pem).await;
    let (cert, key) = pki.client_cert("proxy-client");
    let stranger_pki = TestPki::new();
    let (stranger_cert, stranger_key) = stranger_pki.client_cert("stranger");
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("ca.pem", &pki.ca_pem),
        ("client.pem", &cert),
        ("client.key", &key),
        ("stranger.pem", &stranger_cert),
        ("stranger.key", &stranger_key),
    ] {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let config = format!(
        r#"
[store]
kind = "memory"

[providers.mt]
type = "oauth2"
grant = "client_credentials"
token_url = "{url}/token"
client_id = "app"
client_secret = "mtls-SECRET-0123"
ca_file = "ca.pem"
client_cert = "client.pem"
client_key = "client.key"

[providers.nocert]
type = "oauth2"
grant = "client_credentials"
token_url = "{url}/token"
client_id = "app"
client_secret = "mtls-SECRET-0123"
ca_file = "ca.pem"

[[routes]]
prefix = "/api/"
upstream = "{url}/v1/"
provider = "mt"
ca_file = "ca.pem"
client_cert = "client.pem"
client_key = "client.key"

[[routes]]
prefix = "/plain/"
upstream = "{url}/v1/"
ca_file = "ca.pem"

[[routes]]
prefix = "/stranger/"
upstream = "{url}/v1/"
ca_file = "ca.pem"
client_cert = "stranger.pem"
client_key = "stranger.key"

[[routes]]
prefix = "/nocert/"
upstream = "{url}/v1/"
provider = "nocert"
ca_file = "ca.pem"
client_cert = "client.pem"
client_key = "client.key"
"#,
        url = mtls.url(),
    );
    let proxy = start_proxy_in(&config, dir).await;
    let get = |path: &'static str| {
        let url = proxy.url(path);
        async move {
            let resp = client().get(url).send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap())
        }
    };
    let ours = fingerprint(&cert);

    let (status, body) = get("/api/things").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["path"], "/v1/things");
    assert_eq!(body["client_cert_sha256"], ours.as_str());
    let seen = mtls.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            ("/token".to_string(), ours.clone()),
            ("/v1/things".to_string(), ours.clone())
        ],
        "the token request and the proxied one, both with the certificate"
    );

    // No certificate, or one of another CA: the handshake is refused.
    let refused_before = *mtls.refused.lock().unwrap();
    let (status, body) = get("/plain/things").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (502, Some("upstream_unreachable")),
        "{body}"
    );
    let (status, body) = get("/stranger/things").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (502, Some("upstream_unreachable")),
        "{body}"
    );
    // A provider without a certificate gets no token there.
    let (status, body) = get("/nocert/things").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (502, Some("token_endpoint_error")),
        "{body}"
    );
    assert!(*mtls.refused.lock().unwrap() >= refused_before + 3);
    assert_eq!(
        mtls.seen.lock().unwrap().len(),
        2,
        "nothing else got through"
    );
}
