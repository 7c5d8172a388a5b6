//! `[forward_proxy]` and host routes (`routes[].host`).

use std::path::PathBuf;

use super::tests::{errors, parse, ROUTE};
use super::*;

#[test]
fn host_routes_and_forward_proxy() {
    let fp = "[forward_proxy]\nenabled = true\n";
    let c = parse(&format!(
        "{fp}[store]\nkind = \"file\"\npath = \"state/tokens.json\"\n\
         [[routes]]\nhost = \"API.Vendor.Example\"\n\
         [[routes]]\nhost = \"api.vendor.example:8443\"\nprefix = \"/v2/\"\nupstream = \"https://127.0.0.1:9443/\"\n\
         {ROUTE}"
    ))
    .unwrap();
    let r = &c.routes[0];
    let host = r.host.as_ref().unwrap();
    assert_eq!(host.to_string(), "api.vendor.example:443");
    assert_eq!(r.prefix.as_str(), "/");
    assert_eq!(r.upstream.as_str(), "https://api.vendor.example/");
    assert_eq!(c.routes[1].host.as_ref().unwrap().port, 8443);
    assert_eq!(c.routes[1].upstream.as_str(), "https://127.0.0.1:9443/");
    assert!(c.routes[2].host.is_none());
    // The CA goes beside the token store by default.
    assert_eq!(
        c.forward_proxy.ca_cert,
        PathBuf::from("/etc/authproxy/state/ca.pem")
    );
    assert_eq!(
        c.forward_proxy.ca_key,
        PathBuf::from("/etc/authproxy/state/ca.key")
    );

    // Host routes need forward-proxy mode; bad hosts and tunnel entries
    // name their key; one host and prefix once.
    let keys = |text: &str| -> Vec<String> { errors(text).into_iter().map(|e| e.key).collect() };
    assert!(keys(&format!("[[routes]]\nhost = \"a.example\"\n{ROUTE}"))
        .contains(&"routes[0].host".to_string()));
    assert!(keys(&format!("{fp}[[routes]]\nhost = \"a_b.example\"\n"))
        .contains(&"routes[0].host".to_string()));
    assert!(keys(&format!("{fp}[[routes]]\nhost = \"a.example:0\"\n"))
        .contains(&"routes[0].host".to_string()));
    assert!(keys(&format!(
        "{fp}[[routes]]\nhost = \"a.example\"\n[[routes]]\nhost = \"A.example:443\"\n"
    ))
    .contains(&"routes[1].host".to_string()));
    assert!(keys(&format!("{fp}tunnel = [\"*.\"]\n{ROUTE}"))
        .contains(&"forward_proxy.tunnel[0]".to_string()));
    assert!(keys(&format!(
        "[forward_proxy]\ntunnel = [\"a.example\"]\n{ROUTE}"
    ))
    .contains(&"forward_proxy.tunnel".to_string()));
    assert!(keys(&format!(
        "{fp}ca_cert = \"x.pem\"\nca_key = \"x.pem\"\n{ROUTE}"
    ))
    .contains(&"forward_proxy.ca_key".to_string()));
    assert!(keys(&format!("{fp}bogus = 1\n{ROUTE}"))
        .iter()
        .any(|k| k.contains("bogus")));
}

#[test]
fn tunnel_patterns_match_their_hosts_only() {
    let p = |t: &str| TunnelPattern::parse(t).unwrap();
    let a = |t: &str| Authority::parse_connect(t).unwrap();
    assert!(p("*.example.org").matches(&a("api.example.org:443")));
    assert!(p("*.example.org").matches(&a("a.b.example.org:443")));
    assert!(!p("*.example.org").matches(&a("example.org:443")));
    assert!(!p("*.example.org").matches(&a("evilexample.org:443")));
    assert!(!p("*.example.org").matches(&a("api.example.org:8443")));
    assert!(p("*.example.org:*").matches(&a("api.example.org:8443")));
    assert!(p("127.0.0.1:9000").matches(&a("127.0.0.1:9000")));
    assert!(!p("127.0.0.1:9000").matches(&a("127.0.0.2:9000")));
    assert!(p("[::1]:*").matches(&a("[::1]:1")));
    assert!(TunnelPattern::parse("*.127.0.0.1").is_err());
    assert!(TunnelPattern::parse("*").is_err());
}
