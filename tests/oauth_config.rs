//! Config checks of the client authentications, the JWT-bearer grant and
//! the TLS keys: what does not fit is refused at load, naming the key and
//! the fix, and never printing key material.

mod support;

use std::path::Path;

use authproxy::config::interpolate::ProcessEnv;
use authproxy::config::{ClientAuth, Config, Grant, ProviderKind};
use support::oidc::{generate_key, KeyFormat, KeyKind, TestPki};

/// A config with one oauth2 provider `p` (its keys: `body`) and a route.
fn config_with(provider: &str, route_extra: &str) -> String {
    format!(
        r#"
[store]
kind = "memory"

[providers.p]
type = "oauth2"
{provider}

[[routes]]
prefix = "/p/"
upstream = "https://api.example/"
provider = "p"
{route_extra}
"#
    )
}

fn parse(dir: &Path, text: &str) -> Result<Config, String> {
    let path = dir.join("authproxy.toml");
    std::fs::write(&path, text).unwrap();
    Config::parse(text, &path, &ProcessEnv).map_err(|e| e.to_string())
}

/// The error text for `provider`, asserting it names `key` and says
/// `fix`, and holds none of `secrets`.
fn refused(dir: &Path, provider: &str, key: &str, fix: &str, secrets: &[&str]) -> String {
    let err = parse(dir, &config_with(provider, "")).expect_err(provider);
    assert!(err.contains(&format!("providers.p.{key}:")), "{err}");
    assert!(err.contains(fix), "fix {fix:?} missing:\n{err}");
    for s in secrets {
        assert!(!err.contains(s), "key material in:\n{err}");
    }
    err
}

/// The base64 lines of a PEM: what must never be printed.
fn pem_body(pem: &str) -> Vec<&str> {
    pem.lines().filter(|l| !l.starts_with("-----")).collect()
}

#[test]
fn client_authentications_that_do_not_fit_are_refused_with_the_fix() {
    if !support::oidc::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let rsa = generate_key(KeyKind::Rsa, KeyFormat::Pkcs8, None);
    let ec = generate_key(KeyKind::Ec, KeyFormat::Sec1, None);
    std::fs::write(dir.path().join("rsa.pem"), &rsa.private_pem).unwrap();
    std::fs::write(dir.path().join("ec.pem"), &ec.private_pem).unwrap();
    let secrets: Vec<&str> = pem_body(&rsa.private_pem)
        .into_iter()
        .chain(pem_body(&ec.private_pem))
        .collect();
    let cc = "grant = \"client_credentials\"\ntoken_url = \"https://as.example/token\"\nclient_id = \"app\"\n";
    let dir = dir.path();

    refused(
        dir,
        &format!("{cc}client_auth = \"private_key_jwt\""),
        "private_key",
        "is required with client_auth = \"private_key_jwt\"",
        &secrets,
    );
    refused(
        dir,
        &format!("{cc}client_auth = \"private_key_jwt\"\nprivate_key = \"rsa.pem\"\nsigning_alg = \"HS256\""),
        "signing_alg",
        "HS256 signs with the client secret",
        &secrets,
    );
    refused(
        dir,
        &format!("{cc}client_auth = \"private_key_jwt\"\nprivate_key = \"rsa.pem\"\nsigning_alg = \"RS512\""),
        "signing_alg",
        "unknown signing_alg `RS512`; use \"RS256\", \"PS256\" or \"ES256\"",
        &secrets,
    );
    refused(
        dir,
        &format!("{cc}client_auth = \"private_key_jwt\"\nprivate_key = \"ec.pem\"\nsigning_alg = \"RS256\""),
        "signing_alg",
        "\"RS256\" needs an RSA key, but private_key is an EC P-256 key; use \"ES256\"",
        &secrets,
    );
    refused(
        dir,
        &format!("{cc}client_auth = \"client_secret_jwt\"\nclient_secret = \"s-0123456789\"\nsigning_alg = \"RS256\""),
        "signing_alg",
        "client_secret_jwt signs with HS256 only",
        &secrets,
    );
    refused(
        dir,
        &format!("{cc}client_auth = \"client_secret_jwt\""),
        "client_secret",
        "is required with client_auth = \"client_secret_jwt\"",
        &secrets,
    );
    refused(
        dir,
        &format!("{cc}client_auth = \"none\""),
        "client_auth",
        "\"none\" does not fit grant = \"client_credentials\"",
        &secrets,
    );
    refused(
        dir,
        &format!("{cc}client_auth = \"tls_client_auth\""),
        "client_cert",
        "is required with client_auth = \"tls_client_auth\"",
        &secrets,
    );
    refused(
        dir,
        &format!("{cc}client_secret = \"s\"\nprivate_key = \"rsa.pem\""),
        "private_key",
        "is used only with client_auth = \"private_key_jwt\" or grant = \"jwt_bearer\"",
        &secrets,
    );
    refused(
        dir,
        &format!("{cc}client_auth = \"private_key_jwt\"\nprivate_key = \"rsa.pem\"\nclient_secret = \"s\""),
        "client_secret",
        "is not sent with client_auth = \"private_key_jwt\"",
        &secrets,
    );
    refused(
        dir,
        &format!("{cc}client_secret = \"s\"\nsubject = \"someone\""),
        "subject",
        "is used only by grant = \"jwt_bearer\"",
        &secrets,
    );
    refused(
        dir,
        &format!("{cc}client_auth = \"magic\""),
        "client_auth",
        "\"client_secret_jwt\", \"private_key_jwt\", \"tls_client_auth\" or \"none\"",
        &secrets,
    );
    // A key that is not a key: named, its text not shown.
    let err = refused(
        dir,
        &format!("{cc}client_auth = \"private_key_jwt\"\nprivate_key = \"\"\"\n-----BEGIN PRIVATE KEY-----\nTOPSECRETPEMBODY\n-----END PRIVATE KEY-----\n\"\"\""),
        "private_key",
        "(the value is not shown)",
        &["TOPSECRETPEMBODY"],
    );
    assert!(err.contains("neither a usable RSA key"), "{err}");
    refused(
        dir,
        "grant = \"jwt_bearer\"\ntoken_url = \"https://as.example/token\"\nclient_id = \"app\"",
        "private_key",
        "is required for grant = \"jwt_bearer\"",
        &secrets,
    );
    refused(
        dir,
        "grant = \"jwt_bearer\"\ntoken_url = \"https://as.example/token\"\nprivate_key = \"ec.pem\"",
        "assertion_issuer",
        "set assertion_issuer or client_id, or service_account_file",
        &secrets,
    );
    refused(
        dir,
        "grant = \"client_credentials\"\nclient_id = \"a\"\nclient_secret = \"s\"\nissuer = \"http://as.example/tenant\"",
        "issuer",
        "plain http",
        &secrets,
    );

    // What fits: defaults from the key, client_id in the body for none.
    let ok = parse(
        dir,
        &config_with(
            "grant = \"password\"\ntoken_url = \"https://as.example/token\"\nclient_id = \"pub\"\nclient_auth = \"none\"\nusername = \"u\"\npassword = \"p\"",
            "",
        ),
    )
    .unwrap();
    let ProviderKind::OAuth2(o) = &ok.providers["p"].kind else {
        panic!()
    };
    assert_eq!(o.client_auth, ClientAuth::None);
    let ok = parse(
        dir,
        &config_with(
            &format!(
                "{cc}client_auth = \"private_key_jwt\"\nprivate_key = \"ec.pem\"\nkey_id = \"k\""
            ),
            "",
        ),
    )
    .unwrap();
    let ProviderKind::OAuth2(o) = &ok.providers["p"].kind else {
        panic!()
    };
    let signer = o.client_assertion.as_ref().unwrap();
    assert_eq!((signer.alg().as_str(), signer.kid()), ("ES256", Some("k")));
    let debug = format!("{ok:?}");
    for line in &secrets {
        assert!(!debug.contains(line), "Debug of the config shows the key");
    }
}

#[test]
fn client_keys_that_do_not_match_their_certificate_are_refused() {
    let pki = TestPki::new();
    let (cert, key) = pki.client_cert("one");
    let (_, other_key) = pki.client_cert("two");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("c.pem"), &cert).unwrap();
    std::fs::write(d.join("k.pem"), &key).unwrap();
    std::fs::write(d.join("other.pem"), &other_key).unwrap();
    let secrets = pem_body(&other_key);
    let cc = "grant = \"client_credentials\"\ntoken_url = \"https://as.example/token\"\nclient_id = \"app\"\nclient_auth = \"tls_client_auth\"\n";

    let err = refused(
        d,
        &format!("{cc}client_cert = \"c.pem\"\nclient_key = \"other.pem\""),
        "client_key",
        "does not match the certificate in providers.p.client_cert",
        &secrets,
    );
    assert!(err.contains("openssl"), "{err}");
    refused(
        d,
        &format!("{cc}client_cert = \"c.pem\""),
        "client_key",
        "is required with client_cert",
        &secrets,
    );
    refused(
        d,
        &format!("{cc}client_cert = \"k.pem\"\nclient_key = \"k.pem\""),
        "client_cert",
        "holds no readable certificate",
        &secrets,
    );
    refused(
        d,
        &format!("{cc}client_cert = \"missing.pem\"\nclient_key = \"k.pem\""),
        "client_cert",
        "cannot read",
        &secrets,
    );

    // The same on a route.
    let provider = "grant = \"client_credentials\"\ntoken_url = \"https://as.example/token\"\nclient_id = \"a\"\nclient_secret = \"s\"";
    let err = parse(
        d,
        &config_with(
            provider,
            "client_cert = \"c.pem\"\nclient_key = \"other.pem\"",
        ),
    )
    .unwrap_err();
    assert!(
        err.contains(
            "routes[0].client_key: does not match the certificate in routes[0].client_cert"
        ),
        "{err}"
    );
    for s in &secrets {
        assert!(!err.contains(s));
    }
    let ok = parse(
        d,
        &config_with(provider, "client_cert = \"c.pem\"\nclient_key = \"k.pem\""),
    )
    .unwrap();
    assert!(ok.routes[0].client_identity.is_some());
    assert!(!format!("{ok:?}").contains(pem_body(&key)[0]));
}

#[test]
fn service_account_files_fill_the_jwt_bearer_keys_or_say_what_is_missing() {
    if !support::oidc::available() {
        return;
    }
    let key = generate_key(KeyKind::Rsa, KeyFormat::Pkcs8, None);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let secrets = pem_body(&key.private_pem);
    let account = serde_json::json!({
        "type": "service_account",
        "project_id": "demo",
        "private_key_id": "kid-from-file",
        "private_key": key.private_pem,
        "client_email": "robot@demo.iam.example",
        "client_id": "1234",
        "token_uri": "https://oauth2.example/token",
    });
    std::fs::write(d.join("sa.json"), account.to_string()).unwrap();
    let jb = "grant = \"jwt_bearer\"\nservice_account_file = \"sa.json\"\nscope = \"https://www.example/auth/cloud\"";
    let ok = parse(d, &config_with(jb, "")).unwrap();
    let ProviderKind::OAuth2(o) = &ok.providers["p"].kind else {
        panic!()
    };
    assert_eq!(o.grant, Grant::JwtBearer);
    assert_eq!(
        o.token_url.as_ref().unwrap().as_str(),
        "https://oauth2.example/token"
    );
    assert_eq!(o.client_auth, ClientAuth::None);
    assert_eq!(o.scope, None, "the scope goes into the assertion");
    let a = o.jwt_bearer.as_ref().unwrap();
    assert_eq!(a.issuer.expose(), "robot@demo.iam.example");
    assert_eq!(a.scope.as_deref(), Some("https://www.example/auth/cloud"));
    assert_eq!(
        (a.signer.alg().as_str(), a.signer.kid()),
        ("RS256", Some("kid-from-file"))
    );
    // Explicit keys win.
    let ok = parse(
        d,
        &config_with(
            &format!("{jb}\ntoken_url = \"https://other.example/token\"\nkey_id = \"mine\"\nassertion_issuer = \"me@x\"\nscope_in_assertion = false"),
            "",
        ),
    )
    .unwrap();
    let ProviderKind::OAuth2(o) = &ok.providers["p"].kind else {
        panic!()
    };
    let a = o.jwt_bearer.as_ref().unwrap();
    assert_eq!(
        o.token_url.as_ref().unwrap().host_str(),
        Some("other.example")
    );
    assert_eq!((a.issuer.expose(), a.signer.kid()), ("me@x", Some("mine")));
    assert_eq!((a.scope.as_deref(), o.scope.is_some()), (None, true));

    // Missing fields: the file and the fields are named, nothing else.
    let mut broken = account.clone();
    broken.as_object_mut().unwrap().remove("client_email");
    broken.as_object_mut().unwrap().remove("private_key");
    std::fs::write(d.join("broken.json"), broken.to_string()).unwrap();
    let err = refused(
        d,
        "grant = \"jwt_bearer\"\nservice_account_file = \"broken.json\"",
        "service_account_file",
        "has no `private_key` and `client_email` (a string)",
        &secrets,
    );
    assert!(err.contains("broken.json"), "{err}");
    // A key of the wrong type, or a file that is not JSON: never echoed.
    let mut wrong = account.clone();
    wrong["private_key"] = serde_json::json!(["TOPSECRET-IN-ARRAY"]);
    std::fs::write(d.join("wrong.json"), wrong.to_string()).unwrap();
    refused(
        d,
        "grant = \"jwt_bearer\"\nservice_account_file = \"wrong.json\"",
        "service_account_file",
        "is not a service-account JSON key",
        &["TOPSECRET"],
    );
    let mut user = account.clone();
    user["type"] = "authorized_user".into();
    std::fs::write(d.join("user.json"), user.to_string()).unwrap();
    refused(
        d,
        "grant = \"jwt_bearer\"\nservice_account_file = \"user.json\"",
        "service_account_file",
        "is not a service-account key",
        &secrets,
    );
}

/// `key_certificate` names the key by its certificate's thumbprints
/// (`x5t`, `x5t#S256`), as Microsoft Entra wants; the thumbprints are
/// checked against `openssl x509 -fingerprint`.
#[test]
fn key_certificate_thumbprints_go_into_the_assertion_header() {
    use base64::Engine;
    let pki = TestPki::new();
    let (cert, key) = pki.client_cert("entra-app");
    let (other_cert, _) = pki.client_cert("someone-else");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (name, text) in [("c.pem", &cert), ("k.pem", &key), ("o.pem", &other_cert)] {
        std::fs::write(d.join(name), text).unwrap();
    }
    let fingerprint = |alg: &str| {
        let out = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-fingerprint", alg, "-in", "c.pem"])
            .current_dir(d)
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let hex: String = text.trim().split('=').nth(1).unwrap().replace(':', "");
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    };
    let cc = "grant = \"client_credentials\"\ntoken_url = \"https://login.example.com/t/oauth2/v2.0/token\"\nclient_id = \"app\"\nclient_auth = \"private_key_jwt\"\nprivate_key = \"k.pem\"\n";
    let ok = parse(
        d,
        &config_with(&format!("{cc}key_certificate = \"c.pem\""), ""),
    )
    .unwrap();
    let ProviderKind::OAuth2(o) = &ok.providers["p"].kind else {
        panic!()
    };
    let jwt = o
        .client_assertion
        .as_ref()
        .unwrap()
        .sign(serde_json::Map::new(), &serde_json::json!({}));
    let (header, _) = authproxy::oauth::jwt::decode_unverified(jwt.expose()).unwrap();
    assert_eq!(header["x5t"], fingerprint("-sha1"), "{header}");
    assert_eq!(header["x5t#S256"], fingerprint("-sha256"), "{header}");
    assert_eq!(header["alg"], "ES256");

    refused(
        d,
        &format!("{cc}key_certificate = \"o.pem\""),
        "key_certificate",
        "is not the certificate of private_key",
        &pem_body(&key),
    );
    refused(
        d,
        "grant = \"client_credentials\"\ntoken_url = \"https://as.example/token\"\nclient_id = \"a\"\nclient_secret = \"s\"\nkey_certificate = \"c.pem\"",
        "key_certificate",
        "used only with client_auth = \"private_key_jwt\"",
        &[],
    );
}
