//! `[store]` with Redis Sentinel and the Redis timings.

use std::path::Path;
use std::time::Duration;

use super::tests::{env, ROUTE};
use super::*;

#[test]
fn redis_sentinels_and_timings() {
    let mut vars = env();
    vars.0.insert("PW".into(), "redis-SECRET-pw".into());
    let with = |store: &str| {
        Config::parse(
            &format!("[store]\nkind = \"redis\"\n{store}\n{ROUTE}"),
            Path::new("/etc/authproxy/authproxy.toml"),
            &vars,
        )
    };
    let errs = |store: &str| match with(store) {
        Err(ConfigError::Keys { errors, .. }) => errors,
        other => panic!("expected key errors for {store}, got {other:?}"),
    };
    let c = with(
        "sentinels = [\"10.0.0.1:26379\", \"[fd00::2]:26380\"]\nmaster_name = \"mymaster\"\n\
         password = \"${PW}\"\ntls = true\ndb = 2\nmin_replicas = 2\nreplica_timeout = \"500ms\"\n\
         lease_ttl = \"4s\"\nlease_wait = \"9s\"",
    )
    .unwrap();
    let StoreConfig::Redis {
        target: RedisTarget::Sentinel(s),
        timings,
        ..
    } = c.store
    else {
        panic!()
    };
    assert_eq!(
        s.sentinels,
        vec![
            ("10.0.0.1".to_string(), 26379),
            ("fd00::2".to_string(), 26380)
        ]
    );
    assert_eq!((s.master_name.as_str(), s.db, s.tls), ("mymaster", 2, true));
    assert_eq!(s.password.unwrap().expose(), "redis-SECRET-pw");
    assert_eq!(timings.min_replicas, Some(2));
    assert_eq!(timings.replica_timeout, Duration::from_millis(500));
    assert_eq!(
        (timings.lease_ttl, timings.lease_wait),
        (Duration::from_secs(4), Duration::from_secs(9))
    );
    // Defaults: the former constants.
    let StoreConfig::Redis { timings, .. } = with("url = \"redis://127.0.0.1/0\"").unwrap().store
    else {
        panic!()
    };
    assert_eq!(timings, RedisTimings::default());
    assert_eq!(timings.lease_ttl, Duration::from_secs(10));

    let e = errs("sentinels = [\"10.0.0.1:26379\"]\nmaster_name = \"m\"");
    assert_eq!(e[0].key, "store.sentinels[0]");
    assert!(e[0].message.contains("store.tls"), "{e:?}");
    let e = errs("sentinels = [\"127.0.0.1\"]\nmaster_name = \"m\"");
    assert_eq!(e[0].key, "store.sentinels[0]");
    assert!(e[0].message.contains("host:port"), "{e:?}");
    let e = errs("sentinels = [\"127.0.0.1:26379\"]");
    assert_eq!(e[0].key, "store.master_name");
    let e = errs(
        "sentinels = [\"127.0.0.1:26379\"]\nmaster_name = \"m\"\nurl = \"redis://127.0.0.1/0\"",
    );
    assert_eq!(e[0].key, "store.url");
    let e = errs("url = \"redis+sentinel://127.0.0.1:26379/m/0\"");
    assert!(e[0].message.contains("store.sentinels"), "{e:?}");
    let e = errs("url = \"redis://127.0.0.1/0\"\npassword = \"${PW}\"");
    assert_eq!(e[0].key, "store.password");
    assert!(!format!("{e:?}").contains("SECRET"));
    let e = errs("url = \"redis://127.0.0.1/0\"\nreplica_timeout = \"3s\"\nlease_ttl = \"2s\"");
    assert_eq!(e[0].key, "store.lease_ttl");
    assert!(e[0].message.contains("replica_timeout"), "{e:?}");
    let e = errs("url = \"redis://127.0.0.1/0\"\nlease_wait = \"soon\"");
    assert_eq!(e[0].key, "store.lease_wait");
    let e = errs("url = \"redis://127.0.0.1/0\"\nreplica_timeout = \"0s\"");
    assert_eq!(e[0].key, "store.replica_timeout");
    let e = match Config::parse(
        &format!("[store]\nmin_replicas = 1\n{ROUTE}"),
        Path::new("/etc/authproxy/authproxy.toml"),
        &vars,
    ) {
        Err(ConfigError::Keys { errors, .. }) => errors,
        other => panic!("{other:?}"),
    };
    assert_eq!(e[0].key, "store.min_replicas");
}
