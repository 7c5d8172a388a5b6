use super::*;

#[test]
fn login_grants_name_the_keys_they_need_and_refuse() {
    let provider = |grant: &str, keys: &str| {
        format!("[providers.p]\ntype = \"oauth2\"\ngrant = \"{grant}\"\n{keys}\n{ROUTE}provider = \"p\"\n")
    };
    let keys = |text: &str| -> Vec<(String, String)> {
        errors(text)
            .into_iter()
            .map(|e| (e.key, e.message))
            .collect()
    };

    // Without an issuer every endpoint is needed, and the client id.
    let e = keys(&provider("authorization_code", ""));
    for key in ["authorize_url", "token_url", "client_id"] {
        assert!(
            e.iter().any(|(k, m)| k == &format!("providers.p.{key}")
                && m.contains("required for grant = \"authorization_code\"")),
            "{key}: {e:?}"
        );
    }
    let e = keys(&provider("device_code", ""));
    for key in ["device_authorization_url", "token_url", "client_id"] {
        assert!(
            e.iter().any(|(k, m)| k == &format!("providers.p.{key}")
                && m.contains("required for grant = \"device_code\"")),
            "{key}: {e:?}"
        );
    }
    // Keys of the other login.
    let e = keys(&provider(
        "device_code",
        "issuer = \"https://as.example\"\nclient_id = \"c\"\nauthorize_url = \"https://as.example/a\"\npassword = \"x\"",
    ));
    assert!(
        e.iter().any(|(k, m)| k == "providers.p.authorize_url"
            && m.contains("not used by grant = \"device_code\"")),
        "{e:?}"
    );
    assert!(e.iter().any(|(k, _)| k == "providers.p.password"), "{e:?}");
    let e = keys(&provider(
        "authorization_code",
        "issuer = \"https://as.example\"\nclient_id = \"c\"\ndevice_authorization_url = \"https://as.example/d\"",
    ));
    assert!(
        e.iter()
            .any(|(k, _)| k == "providers.p.device_authorization_url"),
        "{e:?}"
    );
    // Plain http to a remote host names the fix.
    let e = keys(&provider(
        "device_code",
        "client_id = \"c\"\ntoken_url = \"https://as.example/t\"\ndevice_authorization_url = \"http://as.example/d\"",
    ));
    assert!(
        e.iter()
            .any(|(k, m)| k == "providers.p.device_authorization_url" && m.contains("allow_http")),
        "{e:?}"
    );
    // The unknown-grant message lists the new grants.
    let e = keys(&provider("device", ""));
    assert!(
        e.iter()
            .any(|(_, m)| m.contains("\"device_code\"") && m.contains("\"authorization_code\"")),
        "{e:?}"
    );

    // Complete: discovered endpoints, a public client.
    let config = parse(&provider(
        "device_code",
        "issuer = \"https://as.example\"\nclient_id = \"c\"\nclient_auth = \"none\"\nscope = \"read\"",
    ))
    .unwrap();
    let ProviderKind::OAuth2(o) = &config.providers["p"].kind else {
        unreachable!()
    };
    assert_eq!(o.grant, Grant::DeviceCode);
    let config = parse(&provider(
        "authorization_code",
        "authorize_url = \"https://as.example/a\"\ntoken_url = \"https://as.example/t\"\nclient_id = \"c\"\nclient_secret = \"s\"",
    ))
    .unwrap();
    let ProviderKind::OAuth2(o) = &config.providers["p"].kind else {
        unreachable!()
    };
    assert_eq!(o.grant, Grant::AuthorizationCode);
}
