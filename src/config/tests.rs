use std::collections::HashMap;
use std::path::PathBuf;

use super::interpolate::Env;
use super::*;

struct MapEnv(HashMap<String, String>);

impl Env for MapEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
}

fn env() -> MapEnv {
    MapEnv(HashMap::from([
        ("TOKEN".to_string(), "tok-SECRET-123".to_string()),
        ("CRLF".to_string(), "abc\r\nX-Evil: 1".to_string()),
        ("PW".to_string(), "pw-SECRET-456".to_string()),
    ]))
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/authproxy/authproxy.toml"), &env())
}

fn errors(text: &str) -> Vec<KeyError> {
    match parse(text) {
        Err(ConfigError::Keys { errors, .. }) => errors,
        other => panic!("expected key errors, got {other:?}"),
    }
}

const ROUTE: &str = "[[routes]]\nprefix = \"/a/\"\nupstream = \"http://127.0.0.1:9/\"\n";

#[test]
fn allow_browsers_belongs_to_credential_routes() {
    let provider = "[providers.p]\ntype = \"static\"\nheaders = { A = \"b\" }\n";
    let route = |extra: &str| {
        format!("{provider}[[routes]]\nprefix = \"/a/\"\nupstream = \"http://127.0.0.1:9/\"\nprovider = \"p\"\n{extra}")
    };
    assert!(!parse(&route("")).unwrap().routes[0].allow_browsers);
    assert!(parse(&route("allow_browsers = true")).unwrap().routes[0].allow_browsers);
    // On a pass-through route it would do nothing: said, not dropped.
    let e = errors(&format!("{ROUTE}allow_browsers = true\n"));
    assert_eq!(e[0].key, "routes[0].allow_browsers", "{e:?}");
    assert!(e[0].message.contains("provider"), "{e:?}");
}

#[test]
fn full_spec_example_parses() {
    let text = r#"
[server]
listen = "127.0.0.1:8080"
max_replay_body = "1MiB"
upstream_timeout = "30s"

[store]
kind = "file"
path = "state/tokens.json"

[providers.ricloud]
type = "static"
headers = { Authorization = "Token ${TOKEN}" }

[providers.rips_plain]
type = "static"
headers = { "X-API-Email" = "a@b.example", "X-API-Password" = "${PW}" }

[providers.rips]
type = "oauth2"
grant = "password"
token_url = "https://rips.example/oauth/v2/auth/tokens"
body = "json"
client_id = "cid"
username = "a@b.example"
password = "${PW}"
refresh_before = "60s"

[providers.onecloud]
type = "oauth2"
grant = "refresh_token"
token_url = "https://onecloud.example/api/v1/oauth/token"
body = "json"
client_id = "cid"
refresh_token = "${TOKEN}"

[providers.readycloud]
type = "oauth2"
grant = "implicit"
authorize_url = "https://readycloud.example/api/oauth2/authorize"
client_id = "app"
scope = "order.read"

[providers.std]
type = "oauth2"
grant = "client_credentials"
token_url = "https://idp.example/token"
client_id = "cid"
client_secret = "${PW}"
client_auth = "basic"
extra = { audience = "api" }

[[routes]]
prefix = "/rips/"
upstream = "https://rips.example/api/"
provider = "rips"

[[routes]]
prefix = "/open"
upstream = "http://localhost:9000"
strip_prefix = false
"#;
    let c = parse(text).unwrap();
    assert_eq!(c.providers.len(), 6);
    assert_eq!(
        c.store,
        StoreConfig::File {
            path: PathBuf::from("/etc/authproxy/state/tokens.json")
        }
    );
    let ProviderKind::Static(s) = &c.providers["ricloud"].kind else {
        panic!()
    };
    assert_eq!(s.headers[0].1.expose(), "Token tok-SECRET-123");
    let ProviderKind::OAuth2(o) = &c.providers["std"].kind else {
        panic!()
    };
    assert_eq!(o.client_auth, ClientAuth::Basic);
    assert_eq!(o.extra[0].0, "audience");
    assert!(!c.routes[1].strip_prefix);
    // Debug output of the whole config holds no secret.
    let dbg = format!("{c:?}");
    assert!(!dbg.contains("SECRET"), "{dbg}");
}

#[test]
fn unknown_key_names_path() {
    let e = errors(&format!(
        "[providers.x]\ntype = \"static\"\nheaders = {{ A = \"b\" }}\nheadrs = 1\n{ROUTE}"
    ));
    assert_eq!(e[0].key, "providers.x.headrs", "{e:?}");
    assert!(e[0].message.contains("unknown field"));
    let e = errors(&format!("[server]\nlisten_on = \"x\"\n{ROUTE}"));
    assert_eq!(e[0].key, "server.listen_on");
}

#[test]
fn missing_variable_names_it() {
    let e = errors(&format!(
        "[providers.x]\ntype = \"static\"\nheaders = {{ A = \"${{NOPE}}\" }}\n{ROUTE}"
    ));
    assert_eq!(e[0].key, "providers.x.headers.A");
    assert!(e[0].message.contains("NOPE"));
}

#[test]
fn crlf_in_header_is_refused_without_echo() {
    let e = errors(&format!(
        "[providers.x]\ntype = \"static\"\nheaders = {{ A = \"${{CRLF}}\" }}\n{ROUTE}"
    ));
    assert_eq!(e[0].key, "providers.x.headers.A");
    assert!(e[0].message.contains("control character"));
    assert!(!e[0].message.contains("X-Evil"));
}

#[test]
fn unknown_provider_and_duplicate_prefix() {
    let e = errors(
        "[[routes]]\nprefix = \"/a/\"\nupstream = \"http://127.0.0.1:9/\"\nprovider = \"nope\"\n[[routes]]\nprefix = \"/a\"\nupstream = \"http://127.0.0.1:9/\"\n",
    );
    assert!(
        e.iter()
            .any(|e| e.key == "routes[0].provider" && e.message.contains("nope")),
        "{e:?}"
    );
    assert!(
        e.iter()
            .any(|e| e.key == "routes[1].prefix" && e.message.contains("duplicate")),
        "{e:?}"
    );
}

#[test]
fn http_upstream_needs_loopback_or_allow_http() {
    let e = errors("[[routes]]\nprefix = \"/a/\"\nupstream = \"http://api.example/\"\n");
    assert_eq!(e[0].key, "routes[0].upstream");
    assert!(e[0].message.contains("allow_http"));
    parse("[[routes]]\nprefix = \"/a/\"\nupstream = \"http://api.example/\"\nallow_http = true\n")
        .unwrap();
}

#[test]
fn non_loopback_listen_needs_token() {
    let e = errors(&format!("[server]\nlisten = \"0.0.0.0:8080\"\n{ROUTE}"));
    assert_eq!(e[0].key, "server.listen");
    assert!(e[0].message.contains("inbound_token"));
    parse(&format!(
        "[server]\nlisten = \"0.0.0.0:8080\"\ninbound_token = \"${{TOKEN}}-long-enough\"\n{ROUTE}"
    ))
    .unwrap();
    parse(&format!(
        "[server]\nlisten = \"0.0.0.0:8080\"\nallow_remote_unauthenticated = true\n{ROUTE}"
    ))
    .unwrap();
}

#[test]
fn grant_field_mismatch() {
    let e = errors(&format!(
        "[providers.x]\ntype = \"oauth2\"\ngrant = \"client_credentials\"\ntoken_url = \"https://a.example/t\"\nclient_id = \"c\"\nusername = \"u\"\n{ROUTE}"
    ));
    assert_eq!(e[0].key, "providers.x.username");
    assert!(e[0].message.contains("client_credentials"));
    let e = errors(&format!(
        "[providers.x]\ntype = \"oauth2\"\ngrant = \"password\"\ntoken_url = \"https://a.example/t\"\n{ROUTE}"
    ));
    let keys: Vec<&str> = e.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, vec!["providers.x.username", "providers.x.password"]);
    let e = errors(&format!(
        "[providers.x]\ntype = \"static\"\nheaders = {{ A = \"b\" }}\ntoken_url = \"https://a\"\n{ROUTE}"
    ));
    assert_eq!(e[0].key, "providers.x.token_url");
}

#[test]
fn durations_and_sizes_name_key() {
    let e = errors(&format!(
        "[server]\nupstream_timeout = \"30\"\nmax_replay_body = \"lots\"\n{ROUTE}"
    ));
    let keys: Vec<&str> = e.iter().map(|e| e.key.as_str()).collect();
    assert!(keys.contains(&"server.upstream_timeout"), "{keys:?}");
    assert!(keys.contains(&"server.max_replay_body"), "{keys:?}");
}

#[test]
fn wrong_type_on_secret_does_not_echo_it() {
    let e = errors(&format!(
        "[server]\nlisten = 5\ninbound_token = \"${{TOKEN}}\"\n{ROUTE}"
    ));
    assert_eq!(e[0].key, "server.listen");
    let e = errors(&format!(
        "[server]\nallow_remote_unauthenticated = \"${{TOKEN}}\"\n{ROUTE}"
    ));
    assert!(!e[0].message.contains("SECRET"), "{e:?}");
}

#[test]
fn escaped_secret_in_a_type_error_is_scrubbed_too() {
    let env = MapEnv(HashMap::from([(
        "Q".to_string(),
        "pa\"ss\\word-SECRET".to_string(),
    )]));
    let text = format!("[server]\nallowed_hosts = \"${{Q}}\"\n{ROUTE}");
    let err = Config::parse(&text, Path::new("x.toml"), &env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("server.allowed_hosts"), "{err}");
    assert!(!err.contains("SECRET"), "{err}");
}

#[test]
fn upstream_host_must_be_sendable() {
    let e = errors("[[routes]]\nprefix = \"/a/\"\nupstream = \"https://h*exa`ple/\"\n");
    assert_eq!(e[0].key, "routes[0].upstream", "{e:?}");
}

#[test]
fn needs_a_route() {
    let e = errors("");
    assert_eq!(e[0].key, "routes");
}
