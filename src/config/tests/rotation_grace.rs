//! `providers.<name>.rotation_grace`: a duration, bounded, for grants
//! that get refresh tokens.

use std::time::Duration;

use super::{errors, parse, ROUTE};
use crate::config::ProviderKind;

#[test]
fn rotation_grace_is_a_duration_of_refresh_token_grants() {
    let provider = |grant: &str, extra: &str, grace: &str| {
        format!(
            "[providers.x]\ntype = \"oauth2\"\ngrant = \"{grant}\"\ntoken_url = \"https://a.example/t\"\n{extra}rotation_grace = \"{grace}\"\n{ROUTE}"
        )
    };
    let ok = parse(&provider("refresh_token", "refresh_token = \"r\"\n", "30s")).unwrap();
    let ProviderKind::OAuth2(o) = &ok.providers["x"].kind else {
        unreachable!()
    };
    assert_eq!(o.rotation_grace, Duration::from_secs(30));
    for (grant, extra, grace, fix) in [
        ("refresh_token", "refresh_token = \"r\"\n", "30", "\"30s\""),
        (
            "refresh_token",
            "refresh_token = \"r\"\n",
            "2h",
            "at most \"1h\"",
        ),
        ("jwt_bearer", "", "30s", "remove it"),
    ] {
        let e = errors(&provider(grant, extra, grace));
        let e = e
            .iter()
            .find(|e| e.key == "providers.x.rotation_grace")
            .unwrap_or_else(|| panic!("{grant} {grace}: {e:?}"));
        assert!(e.message.contains(fix), "{grace}: {}", e.message);
    }
}
