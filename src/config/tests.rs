use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use super::interpolate::Env;
use super::*;

pub(super) struct MapEnv(pub(super) HashMap<String, String>);

impl Env for MapEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
}

pub(super) fn env() -> MapEnv {
    MapEnv(HashMap::from([
        ("TOKEN".to_string(), "tok-SECRET-123".to_string()),
        ("CRLF".to_string(), "abc\r\nX-Evil: 1".to_string()),
        ("PW".to_string(), "pw-SECRET-456".to_string()),
    ]))
}

pub(super) fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/authproxy/authproxy.toml"), &env())
}

pub(super) fn errors(text: &str) -> Vec<KeyError> {
    match parse(text) {
        Err(ConfigError::Keys { errors, .. }) => errors,
        other => panic!("expected key errors, got {other:?}"),
    }
}

/// The authorization-code and device-code grants' keys.
mod login_grants;
/// `rotation_grace`.
mod rotation_grace;

pub(super) const ROUTE: &str = "[[routes]]\nprefix = \"/a/\"\nupstream = \"http://127.0.0.1:9/\"\n";

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
            path: PathBuf::from("/etc/authproxy/state/tokens.json"),
            encryption_key: None,
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

/// The raw structs hold interpolated secrets: a `Debug` print (a stray
/// `dbg!`, an error that formats them) must not show them.
#[test]
fn raw_config_debug_shows_no_secret() {
    let text = r#"
[server]
inbound_token = "inbound-SECRET-0123456789"
[store]
kind = "redis"
url = "redis://:redis-SECRET-pw@127.0.0.1/0"
[providers.s]
type = "static"
headers = { Authorization = "Token static-SECRET-1" }
[providers.o]
type = "oauth2"
grant = "password"
token_url = "https://id.example/token"
client_id = "client-SECRET-id"
client_secret = "client-SECRET-2"
username = "user-SECRET-3"
password = "password-SECRET-4"
refresh_token = "refresh-SECRET-5"
access_token = "access-SECRET-6"
extra = { audience = "extra-SECRET-7" }
[[routes]]
prefix = "/a/"
upstream = "https://api.example/"
provider = "o"
"#;
    let raw: raw::RawConfig = toml::from_str(text).unwrap();
    let printed = format!("{raw:?} {:#?}", raw);
    assert!(!printed.contains("SECRET"), "{printed}");
    // Still useful: the keys that were given show.
    assert!(printed.contains("client_secret"), "{printed}");
}

#[test]
fn store_encryption_key_and_redis_tls() {
    let hex = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let mut vars = env();
    vars.0.insert("KEY".into(), hex.into());
    let with = |store: &str| {
        Config::parse(
            &format!("[store]\n{store}\n{ROUTE}"),
            Path::new("/etc/authproxy/authproxy.toml"),
            &vars,
        )
    };
    let StoreConfig::File { encryption_key, .. } =
        with("encryption_key = \"${KEY}\"").unwrap().store
    else {
        panic!()
    };
    assert_eq!(encryption_key.unwrap().expose()[1], 0x11);
    let errs = |store: &str| match with(store) {
        Err(ConfigError::Keys { errors, .. }) => errors,
        other => panic!("expected key errors for {store}, got {other:?}"),
    };
    let e = errs("encryption_key = \"c2hvcnQ=\"");
    assert_eq!(e[0].key, "store.encryption_key");
    assert!(
        e[0].message.contains("5 bytes") && e[0].message.contains("openssl rand"),
        "{e:?}"
    );
    let e = errs("kind = \"memory\"\nencryption_key = \"${KEY}\"");
    assert_eq!(e[0].key, "store.encryption_key");
    assert!(!format!("{e:?}").contains(hex));
    let e = errs("kind = \"redis\"\nurl = \"redis://10.1.2.3/0\"");
    assert_eq!(e[0].key, "store.url");
    assert!(e[0].message.contains("rediss://"), "{e:?}");
    let e = errs("kind = \"redis\"\nurl = \"redis://[::2]/0\"");
    assert_eq!(e[0].key, "store.url");
    for ok in [
        "kind = \"redis\"\nurl = \"redis://10.1.2.3/0\"\nallow_insecure = true",
        "kind = \"redis\"\nurl = \"rediss://10.1.2.3/0\"",
        "kind = \"redis\"\nurl = \"redis://127.0.0.2/0\"",
        "kind = \"redis\"\nurl = \"redis://[::1]/0\"",
        "kind = \"redis\"\nurl = \"redis://localhost/0\"",
    ] {
        assert!(with(ok).is_ok(), "{ok}");
    }
    let e = errs("allow_insecure = true");
    assert_eq!(e[0].key, "store.allow_insecure");
}

#[test]
fn resource_bounds_have_defaults_and_bad_values_name_their_key() {
    let c = parse(ROUTE).unwrap();
    assert_eq!(c.server.body_read_timeout, Duration::from_secs(60));
    assert_eq!(c.server.max_connections, None);
    assert_eq!(c.server.max_buffered_bytes, 256 << 20);
    assert_eq!(c.routes[0].max_upstream_connections, 256);

    let c = parse(&format!(
        "[server]\nbody_read_timeout = \"5s\"\nmax_connections = 100\nmax_buffered_bytes = \"8MiB\"\n{ROUTE}max_upstream_connections = 8\n"
    ))
    .unwrap();
    assert_eq!(c.server.body_read_timeout, Duration::from_secs(5));
    assert_eq!(c.server.max_connections, Some(100));
    assert_eq!(c.server.max_buffered_bytes, 8 << 20);
    assert_eq!(c.routes[0].max_upstream_connections, 8);

    let e = errors(&format!(
        "[server]\nbody_read_timeout = \"0\"\nmax_connections = 0\nmax_buffered_bytes = \"lots\"\n{ROUTE}max_upstream_connections = 0\n"
    ));
    let keys: Vec<&str> = e.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "server.body_read_timeout",
            "server.max_connections",
            "server.max_buffered_bytes",
            "routes[0].max_upstream_connections"
        ],
        "{e:?}"
    );
}

#[test]
fn http2_is_auto_always_or_never() {
    use crate::config::Http2Mode;
    assert_eq!(parse(ROUTE).unwrap().routes[0].http2, Http2Mode::Auto);
    for (text, mode) in [("always", Http2Mode::Always), ("never", Http2Mode::Never)] {
        let c = parse(&format!("{ROUTE}http2 = \"{text}\"\n")).unwrap();
        assert_eq!(c.routes[0].http2, mode);
    }
    let e = errors(&format!("{ROUTE}http2 = \"yes\"\n"));
    assert_eq!(e[0].key, "routes[0].http2");
    assert!(e[0].message.contains("\"always\""), "{e:?}");
}

#[test]
fn egress_proxy_explicit_env_or_none() {
    let server = |extra: &str, env: &[(&str, &str)]| {
        let env = MapEnv(
            env.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        let text = format!("[server]\n{extra}\n{ROUTE}");
        Config::parse(&text, Path::new("x.toml"), &env).map(|c| c.server.egress)
    };
    // The environment's proxies are not used unless the config says "env".
    let env = [
        ("HTTPS_PROXY", "http://u:pw-SECRET@envproxy:3128"),
        ("http_proxy", "http://plain:8080"),
        ("NO_PROXY", "internal.corp, 10.0.0.0/8"),
    ];
    let direct = server("", &env).unwrap();
    assert!(direct.https.is_none() && direct.http.is_none());

    let e = server("egress_proxy = \"env\"", &env).unwrap();
    assert!(e.from_env);
    assert_eq!(e.https.as_ref().unwrap().url(), "http://envproxy:3128");
    assert!(e.https.as_ref().unwrap().has_credentials());
    assert_eq!(e.http.as_ref().unwrap().url(), "http://plain:8080");
    let no_proxy: Vec<String> = e.no_proxy.iter().map(|n| n.to_string()).collect();
    assert_eq!(no_proxy, ["internal.corp", "10.0.0.0/8"]);

    let e = server(
        "egress_proxy = \"http://${PW}@proxy.corp:3128\"\nno_proxy = [\".corp\"]",
        &[("PW", "user:pw-SECRET")],
    )
    .unwrap();
    assert_eq!(e.https, e.http);
    assert_eq!(e.https.as_ref().unwrap().url(), "http://proxy.corp:3128");
    assert!(!format!("{e:?}").contains("SECRET"));
}

#[test]
fn egress_proxy_errors_name_the_key_never_the_password() {
    for (extra, env, key) in [
        (
            "egress_proxy = \"socks5://u:pw-SECRET@proxy:1080\"",
            vec![],
            "server.egress_proxy",
        ),
        (
            "egress_proxy = \"https://u:pw-SECRET@proxy:3128\"",
            vec![],
            "server.egress_proxy",
        ),
        (
            "egress_proxy = \"env\"",
            vec![("HTTPS_PROXY", "socks5h://u:pw-SECRET@p:1")],
            "server.egress_proxy",
        ),
        (
            "egress_proxy = \"env\"",
            vec![("NO_PROXY", "ok.corp,bad-SECRET:1")],
            "server.egress_proxy",
        ),
        (
            "egress_proxy = \"env\"",
            vec![("HTTP_PROXY", "SECRET://p:1")],
            "server.egress_proxy",
        ),
        ("no_proxy = [\"a.corp\"]", vec![], "server.no_proxy"),
        (
            "egress_proxy = \"http://p:1\"\nno_proxy = [\"a.corp:443\"]",
            vec![],
            "server.no_proxy[0]",
        ),
    ] {
        let env = MapEnv(
            env.iter()
                .map(|(k, v): &(&str, &str)| (k.to_string(), v.to_string()))
                .collect(),
        );
        let text = format!("[server]\n{extra}\n{ROUTE}");
        let Err(ConfigError::Keys { errors, .. }) = Config::parse(&text, Path::new("x.toml"), &env)
        else {
            panic!("{extra}: expected key errors");
        };
        assert_eq!(errors[0].key, key, "{extra}: {errors:?}");
        assert!(!errors[0].message.contains("SECRET"), "{errors:?}");
    }
}
