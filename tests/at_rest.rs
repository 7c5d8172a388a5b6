//! Secrets at rest, against the proxy as a black box (the binary, real
//! files, a real `redis-server`): the file store's folder and temp files
//! against another local user, encryption of the stored tokens, the
//! upgrade of records written by older versions, the process that cannot
//! be dumped or read by other processes of its user, and the config rules
//! that keep secrets from travelling in clear text or eating memory.
//!
//! The tests run as root here, so "another user" is simulated: files are
//! planted in the store folder before the proxy writes (as a user who may
//! write that folder would), and where ownership matters they are given to
//! `nobody` (uid 65534).

mod support;

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;
use sha2::{Digest, Sha256};
use support::providers::{MockProvider, Style, CLIENT_ID};
use support::redis_server::RedisServer;
use support::{client, get_json, run_cli, ProxyProcess};

/// A 32-byte key, base64 (what `openssl rand -base64 32` prints).
const KEY_B64: &str = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA=";
/// Another key, as 64 hex digits.
const OTHER_KEY_HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// A OneCloud-style provider (single-use rotating refresh tokens: the case
/// where losing the store's newest refresh token costs a new bootstrap),
/// a file store in `state/`, and `store_extra` lines under `[store]`.
fn onecloud_config(mock: &MockProvider, seed: &str, store_extra: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
[store]
path = "state/tokens.json"
{store_extra}
[providers.one]
type = "oauth2"
grant = "refresh_token"
token_url = "{}"
body = "json"
client_id = "{CLIENT_ID}"
refresh_token = "{seed}"
[[routes]]
prefix = "/one/"
upstream = "{}/api/"
provider = "one"
"#,
        mock.token_url(),
        mock.base()
    )
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("authproxy.toml");
    fs::write(&path, text).unwrap();
    path
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

async fn get_status(url: String) -> u16 {
    client().get(url).send().await.unwrap().status().as_u16()
}

/// Starts `authproxy run` and expects it to refuse: returns its exit code
/// and log. Should it start serving instead ("listening on"), it is killed
/// and the test fails with its log (rather than waiting for an exit that
/// never comes).
fn run_expecting_refusal(config: &Path, envs: &[(&str, &str)]) -> (i32, String) {
    let mut child = Command::new(support::binary())
        .args(["run", "--config", config.to_str().unwrap()])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut log = String::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        log.push_str(&line);
        log.push('\n');
        if line.contains("listening on") {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the proxy started although it should have refused:\n{log}");
        }
    }
    let status = child.wait().unwrap();
    (status.code().unwrap_or(-1), log)
}

fn store_json(dir: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(dir.join("state/tokens.json")).unwrap()).unwrap()
}

// ---------------------------------------------------------------------------
// The store folder and its temp files
// ---------------------------------------------------------------------------

/// The folder the proxy creates for its store is private to it (0700), the
/// file 0600.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_folder_is_created_private() {
    let mock = MockProvider::start(Style::OneCloud).await;
    mock.issue_seed("seed-f");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &onecloud_config(&mock, "seed-f", ""));
    let proxy = ProxyProcess::start(&config, &[]);
    assert_eq!(get_status(proxy.url("/one/a")).await, 200);
    drop(proxy);
    assert_eq!(mode(&dir.path().join("state")), 0o700, "store folder");
    assert_eq!(mode(&dir.path().join("state/tokens.json")), 0o600);
}

/// Another user who may write the store folder plants a symlink under the
/// temp name the proxy used to write (`.tokens.json.tmp.<pid>`), pointing
/// at a file of the proxy's user. The proxy must not write through it: the
/// victim stays as it was, and the store is a regular file of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_temp_symlink_is_not_followed() {
    let mock = MockProvider::start(Style::OneCloud).await;
    mock.issue_seed("seed-s");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    fs::create_dir(&state).unwrap();
    fs::set_permissions(&state, fs::Permissions::from_mode(0o700)).unwrap();
    let victim = dir.path().join("victim.conf");
    fs::write(&victim, "the victim's own content\n").unwrap();
    let config = write_config(dir.path(), &onecloud_config(&mock, "seed-s", ""));
    let proxy = ProxyProcess::start(&config, &[]);
    let planted = state.join(format!(".tokens.json.tmp.{}", proxy.child.id()));
    std::os::unix::fs::symlink(&victim, &planted).unwrap();

    assert_eq!(get_status(proxy.url("/one/a")).await, 200);
    let log = proxy.kill9();
    assert_eq!(
        fs::read_to_string(&victim).unwrap(),
        "the victim's own content\n",
        "the proxy wrote through the planted symlink; log:\n{log}"
    );
    let store = state.join("tokens.json");
    assert!(
        fs::symlink_metadata(&store).unwrap().file_type().is_file(),
        "tokens.json must be a regular file, not the planted symlink"
    );
    assert!(fs::read_to_string(&store).unwrap().contains("rt-1-"));
    assert!(
        fs::symlink_metadata(&planted)
            .unwrap()
            .file_type()
            .is_symlink(),
        "the planted link is left alone"
    );
}

/// The same user plants a regular file (mode 0666, theirs) under the temp
/// name. Reusing it would make the store that user's file, which they can
/// then read and rewrite: the store must be a new file of the proxy's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_temp_file_is_not_reused() {
    let mock = MockProvider::start(Style::OneCloud).await;
    mock.issue_seed("seed-p");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    fs::create_dir(&state).unwrap();
    fs::set_permissions(&state, fs::Permissions::from_mode(0o700)).unwrap();
    let config = write_config(dir.path(), &onecloud_config(&mock, "seed-p", ""));
    let proxy = ProxyProcess::start(&config, &[]);
    let planted = state.join(format!(".tokens.json.tmp.{}", proxy.child.id()));
    fs::write(&planted, "planted").unwrap();
    fs::set_permissions(&planted, fs::Permissions::from_mode(0o666)).unwrap();
    let as_root = rustix_uid() == 0;
    if as_root {
        // Given to `nobody`, as if that user had created it.
        let status = Command::new("chown")
            .args(["65534:65534", planted.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(status.success());
    }
    let planted_inode = fs::metadata(&planted).unwrap().ino();

    assert_eq!(get_status(proxy.url("/one/a")).await, 200);
    drop(proxy);
    let store = fs::metadata(state.join("tokens.json")).unwrap();
    assert_ne!(
        store.ino(),
        planted_inode,
        "the planted file became the token store"
    );
    assert_eq!(store.uid(), rustix_uid(), "the store is the proxy's file");
    assert_eq!(store.permissions().mode() & 0o777, 0o600);
    assert_eq!(fs::read_to_string(&planted).unwrap(), "planted");
}

fn rustix_uid() -> u32 {
    fs::metadata("/proc/self").unwrap().uid()
}

/// A store folder that every local user may write (and no sticky bit) lets
/// any of them replace the store: `run` and `check` refuse it, naming the
/// folder and the fix; the store is not touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn world_writable_store_folder_is_refused() {
    let mock = MockProvider::start(Style::OneCloud).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    fs::create_dir(&state).unwrap();
    fs::set_permissions(&state, fs::Permissions::from_mode(0o777)).unwrap();
    let config = write_config(dir.path(), &onecloud_config(&mock, "seed-w", ""));
    let (code, log) = run_expecting_refusal(&config, &[]);
    assert_eq!(code, 1, "{log}");
    assert!(log.contains(state.to_str().unwrap()), "names it: {log}");
    assert!(log.contains("chmod"), "says the fix: {log}");
    let (code, _, err) = run_cli(
        &["check", "--config", config.to_str().unwrap()],
        &[],
        dir.path(),
    );
    assert_eq!(code, 1, "check refuses too: {err}");
    assert!(err.contains(state.to_str().unwrap()), "{err}");
    assert!(!state.join("tokens.json").exists(), "nothing written there");
    assert_eq!(mode(&state), 0o777, "the folder is left as it was");
}

/// A group-writable folder (a Kubernetes volume with `fsGroup` is 2775) is
/// allowed, with a warning in the log and in status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_writable_store_folder_is_a_warning() {
    let mock = MockProvider::start(Style::OneCloud).await;
    mock.issue_seed("seed-g");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    fs::create_dir(&state).unwrap();
    fs::set_permissions(&state, fs::Permissions::from_mode(0o2775)).unwrap();
    let config = write_config(dir.path(), &onecloud_config(&mock, "seed-g", ""));
    let proxy = ProxyProcess::start(&config, &[]);
    assert_eq!(get_status(proxy.url("/one/a")).await, 200);
    let status = get_json(&client(), proxy.url("/_authproxy/status")).await;
    let log = proxy.kill9();
    let warning = status["store"]["warnings"][0].as_str().unwrap_or_default();
    assert!(
        warning.contains(state.to_str().unwrap()) && warning.contains("group"),
        "status: {status}"
    );
    assert!(
        log.contains("WARN") && log.contains("group") && log.contains(state.to_str().unwrap()),
        "log: {log}"
    );
    assert!(state.join("tokens.json").exists());
}

// ---------------------------------------------------------------------------
// Encryption at rest
// ---------------------------------------------------------------------------

fn key_file(dir: &Path, name: &str, key: &str) -> String {
    let path = dir.join(name);
    fs::write(&path, format!("{key}\n")).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    format!("encryption_key = \"${{file:{name}}}\"")
}

/// Every refresh and access token the mock ever issued or received.
fn issued_tokens(mock: &MockProvider) -> Vec<String> {
    let mut tokens: Vec<String> = mock
        .api_hits()
        .into_iter()
        .filter_map(|h| h.token)
        .collect();
    for r in mock.token_requests() {
        tokens.extend(r.fields.get("refresh_token").cloned());
    }
    tokens.extend(mock.live_refresh_tokens());
    assert!(!tokens.is_empty());
    tokens
}

/// With a key, the store file holds no token (nor seed fingerprint in the
/// clear); status says it is encrypted; a restart reads it back and
/// carries on the chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_file_store_holds_no_token_and_survives_restart() {
    let mock = MockProvider::start(Style::OneCloud).await;
    mock.issue_seed("seed-e");
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), "store.key", KEY_B64);
    let config = write_config(dir.path(), &onecloud_config(&mock, "seed-e", &key));
    let proxy = ProxyProcess::start(&config, &[]);
    assert_eq!(get_status(proxy.url("/one/a")).await, 200);
    let status = get_json(&client(), proxy.url("/_authproxy/status")).await;
    assert_eq!(status["store"]["encrypted"], true, "{status}");
    drop(proxy);

    let text = fs::read_to_string(dir.path().join("state/tokens.json")).unwrap();
    for token in issued_tokens(&mock) {
        assert!(!text.contains(&token), "store holds {token}:\n{text}");
    }
    assert!(!text.contains("seed_fingerprint"), "{text}");

    // Restart: the stored (rotated) refresh token is used, not the seed.
    mock.expire_all();
    let proxy = ProxyProcess::start(&config, &[]);
    assert_eq!(get_status(proxy.url("/one/b")).await, 200);
    drop(proxy);
    let refreshes: Vec<String> = mock
        .token_requests()
        .iter()
        .filter_map(|r| r.fields.get("refresh_token").cloned())
        .collect();
    assert_eq!(refreshes.len(), 2, "{refreshes:?}");
    assert_ne!(refreshes[1], "seed-e", "the seed was spent already");
    assert!(!mock.reuse_detected());
}

/// A wrong key is a startup error that names the store, for `run` and
/// `check`; the store file is not touched (no reset, the refresh token is
/// still there for the right key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_is_a_startup_error_never_a_reset() {
    let mock = MockProvider::start(Style::OneCloud).await;
    mock.issue_seed("seed-k");
    let dir = tempfile::tempdir().unwrap();
    let right = key_file(dir.path(), "right.key", KEY_B64);
    let config = write_config(dir.path(), &onecloud_config(&mock, "seed-k", &right));
    let proxy = ProxyProcess::start(&config, &[]);
    assert_eq!(get_status(proxy.url("/one/a")).await, 200);
    drop(proxy);
    let store = dir.path().join("state/tokens.json");
    let before = fs::read(&store).unwrap();

    let wrong = key_file(dir.path(), "wrong.key", OTHER_KEY_HEX);
    let config = write_config(dir.path(), &onecloud_config(&mock, "seed-k", &wrong));
    let (code, log) = run_expecting_refusal(&config, &[]);
    assert_eq!(code, 1, "{log}");
    assert!(
        log.contains(store.to_str().unwrap()),
        "names the store: {log}"
    );
    assert!(log.contains("encryption_key"), "names the key: {log}");
    let (code, _, err) = run_cli(
        &["check", "--config", config.to_str().unwrap()],
        &[],
        dir.path(),
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("encryption_key"), "{err}");
    assert_eq!(fs::read(&store).unwrap(), before, "store untouched");

    // And without any key: also refused, also untouched.
    let config = write_config(dir.path(), &onecloud_config(&mock, "seed-k", ""));
    let (code, log) = run_expecting_refusal(&config, &[]);
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("encrypted"), "{log}");
    assert!(log.contains("encryption_key"), "{log}");
    assert_eq!(fs::read(&store).unwrap(), before, "store untouched");
    assert_eq!(mock.token_request_count(), 1, "no grant was tried");
}

/// A plaintext store opened with a key is encrypted at the next write (the
/// log says so), keeping its rotated refresh token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_store_is_encrypted_once_a_key_is_set() {
    let mock = MockProvider::start(Style::OneCloud).await;
    mock.issue_seed("seed-m");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &onecloud_config(&mock, "seed-m", ""));
    let proxy = ProxyProcess::start(&config, &[]);
    assert_eq!(get_status(proxy.url("/one/a")).await, 200);
    drop(proxy);
    let plain = fs::read_to_string(dir.path().join("state/tokens.json")).unwrap();
    assert!(plain.contains("rt-1-"), "{plain}");

    let key = key_file(dir.path(), "store.key", KEY_B64);
    let config = write_config(dir.path(), &onecloud_config(&mock, "seed-m", &key));
    mock.expire_all();
    let proxy = ProxyProcess::start(&config, &[]);
    assert_eq!(get_status(proxy.url("/one/b")).await, 200);
    let log = proxy.kill9();
    assert!(log.contains("not encrypted yet"), "{log}");
    let text = fs::read_to_string(dir.path().join("state/tokens.json")).unwrap();
    for token in issued_tokens(&mock) {
        assert!(!text.contains(&token), "store holds {token}:\n{text}");
    }
    let refreshes: Vec<String> = mock
        .token_requests()
        .iter()
        .filter_map(|r| r.fields.get("refresh_token").cloned())
        .collect();
    assert!(
        refreshes[1].starts_with("rt-1-"),
        "the stored token was used: {refreshes:?}"
    );
    assert!(!mock.reuse_detected());
}

/// Redis: values hold no token when encrypted; a wrong key and a missing
/// key are startup errors naming the store; a plaintext Redis store is
/// encrypted at the next write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_encryption() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let mock = MockProvider::start(Style::OneCloud).await;
    mock.issue_seed("seed-r");
    let dir = tempfile::tempdir().unwrap();
    let url = redis.url();
    let redis_store =
        |extra: &str| format!("kind = \"redis\"\nurl = \"{url}\"\nkey_prefix = \"enc:\"\n{extra}");
    // Plaintext first.
    let config = onecloud_config(&mock, "seed-r", &redis_store(""))
        .replace("path = \"state/tokens.json\"\n", "");
    let config_path = write_config(dir.path(), &config);
    let proxy = ProxyProcess::start(&config_path, &[]);
    assert_eq!(get_status(proxy.url("/one/a")).await, 200);
    drop(proxy);
    assert!(
        redis_dump(&redis).contains("rt-1-"),
        "plaintext to begin with"
    );

    // With a key: the next write encrypts.
    let key = key_file(dir.path(), "store.key", KEY_B64);
    let with_key = onecloud_config(&mock, "seed-r", &redis_store(&key))
        .replace("path = \"state/tokens.json\"\n", "");
    let config_path = write_config(dir.path(), &with_key);
    mock.expire_all();
    let proxy = ProxyProcess::start(&config_path, &[]);
    assert_eq!(get_status(proxy.url("/one/b")).await, 200);
    let status = get_json(&client(), proxy.url("/_authproxy/status")).await;
    assert_eq!(status["store"]["encrypted"], true, "{status}");
    let log = proxy.kill9();
    assert!(log.contains("not encrypted yet"), "{log}");
    let dump = redis_dump(&redis);
    for token in issued_tokens(&mock) {
        assert!(!dump.contains(&token), "redis holds {token}:\n{dump}");
    }
    let refreshes: Vec<String> = mock
        .token_requests()
        .iter()
        .filter_map(|r| r.fields.get("refresh_token").cloned())
        .collect();
    assert!(refreshes[1].starts_with("rt-1-"), "{refreshes:?}");

    // A wrong key, then no key: refused, naming the store; Redis untouched.
    for (extra, expect) in [
        (
            key_file(dir.path(), "wrong.key", OTHER_KEY_HEX),
            "encryption_key",
        ),
        (String::new(), "encrypted"),
    ] {
        let text = onecloud_config(&mock, "seed-r", &redis_store(&extra))
            .replace("path = \"state/tokens.json\"\n", "");
        let config_path = write_config(dir.path(), &text);
        let (code, log) = run_expecting_refusal(&config_path, &[]);
        assert_eq!(code, 1, "{log}");
        assert!(log.contains("redis 127.0.0.1"), "names the store: {log}");
        assert!(log.contains(expect), "{log}");
        assert_eq!(redis_dump(&redis), dump, "redis untouched");
    }
    assert!(!mock.reuse_detected());
}

/// Every key and value in the test's Redis, as text.
fn redis_dump(redis: &RedisServer) -> String {
    let mut conn = redis.connection();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    let mut out = String::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE").arg(&key).query(&mut conn).unwrap();
        let value = match kind.as_str() {
            "hash" => {
                let v: Vec<String> = redis::cmd("HGETALL").arg(&key).query(&mut conn).unwrap();
                v.join(" ")
            }
            "string" => redis::cmd("GET").arg(&key).query(&mut conn).unwrap(),
            other => format!("({other})"),
        };
        out.push_str(&format!("{key} = {value}\n"));
    }
    out
}

// ---------------------------------------------------------------------------
// Records written by older versions: the identity fingerprint
// ---------------------------------------------------------------------------

/// The fingerprint versions before the keyed one wrote: an unsalted
/// SHA-256 over the provider's identity and seeds.
fn legacy_fingerprint(token_url: &str, seed: &str) -> String {
    let url = url::Url::parse(token_url).unwrap().to_string();
    let joined = [
        "refresh_token",
        url.as_str(),
        CLIENT_ID,
        "",
        "",
        "",
        seed,
        "",
    ]
    .join("\u{1f}");
    let mut h = Sha256::new();
    h.update(b"authproxy-seed-v1\0");
    h.update(joined.as_bytes());
    support::hex(&h.finalize())
}

/// A store file written by an older version (format 1, unsalted identity
/// fingerprint) whose refresh token was rotated after the seed: on upgrade
/// the stored refresh token must still win over the config's seed (the
/// seed is spent: using it would break the chain), and the file is
/// rewritten with the keyed fingerprint before the proxy serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_keeps_a_stored_refresh_token_and_rewrites_the_record() {
    let mock = MockProvider::start(Style::OneCloud).await;
    // The seed was spent long ago; only the stored token is live.
    mock.issue_seed("rt-stored-live");
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    fs::create_dir(&state).unwrap();
    fs::set_permissions(&state, fs::Permissions::from_mode(0o700)).unwrap();
    let legacy = legacy_fingerprint(&mock.token_url(), "seed-spent");
    let old = serde_json::json!({
        "version": 1,
        "providers": {"one": {
            "access_token": "at-stored-expired",
            "refresh_token": "rt-stored-live",
            "expires_at": 1000,
            "obtained_at": 900,
            "seed_fingerprint": legacy,
        }}
    });
    let store = state.join("tokens.json");
    fs::write(&store, serde_json::to_vec_pretty(&old).unwrap()).unwrap();
    fs::set_permissions(&store, fs::Permissions::from_mode(0o600)).unwrap();
    let config = write_config(dir.path(), &onecloud_config(&mock, "seed-spent", ""));

    let proxy = ProxyProcess::start(&config, &[]);
    // Rewritten before "listening on": no request needed.
    let upgraded = store_json(dir.path());
    let text = upgraded.to_string();
    assert!(!text.contains(&legacy), "legacy fingerprint left: {text}");
    assert_eq!(
        upgraded["providers"]["one"]["refresh_token"], "rt-stored-live",
        "{text}"
    );
    assert_eq!(upgraded["version"], 2, "{text}");

    assert_eq!(get_status(proxy.url("/one/a")).await, 200);
    let log = proxy.kill9();
    let refreshes: Vec<String> = mock
        .token_requests()
        .iter()
        .filter_map(|r| r.fields.get("refresh_token").cloned())
        .collect();
    assert_eq!(refreshes, ["rt-stored-live"], "log:\n{log}");
    assert!(!mock.reuse_detected());

    // And the rewritten record is recognised after another restart.
    mock.expire_all();
    let proxy = ProxyProcess::start(&config, &[]);
    assert_eq!(get_status(proxy.url("/one/b")).await, 200);
    drop(proxy);
    assert_eq!(mock.token_request_count(), 2);
    assert!(!mock.reuse_detected());
}

// ---------------------------------------------------------------------------
// The process: not dumpable, not readable by other processes of its user
// ---------------------------------------------------------------------------

/// A process of the proxy's own user (not root) must not read the proxy's
/// memory-backed files: `/proc/<pid>/environ` holds every `${NAME}` secret
/// and `/proc/<pid>/mem` all of them. Linux allows that between processes
/// of one user unless the process is not dumpable, which also means no
/// core file. As root, the proxy and the reader run as `nobody`
/// (`setpriv`); otherwise both run as the test's user.
#[test]
fn other_processes_of_the_user_cannot_read_the_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let as_root = rustix_uid() == 0;
    let config = write_config(
        dir.path(),
        "[server]\nlisten = \"127.0.0.1:0\"\n[store]\nkind = \"memory\"\n\
         [providers.p]\ntype = \"static\"\nheaders = { Authorization = \"Token ${TOKEN}\" }\n\
         [[routes]]\nprefix = \"/p/\"\nupstream = \"http://127.0.0.1:9/\"\nprovider = \"p\"\n",
    );
    let demote = ["--reuid=65534", "--regid=65534", "--clear-groups"];
    if as_root {
        // `nobody` must reach the config and the binary.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        fs::set_permissions(&config, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            Command::new("setpriv")
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success()),
            "setpriv (util-linux) is needed to run the proxy as another user"
        );
    }
    let mut cmd = if as_root {
        let mut c = Command::new("setpriv");
        c.args(demote).arg(support::binary());
        c
    } else {
        Command::new(support::binary())
    };
    let mut child = cmd
        .args(["run", "--config", config.to_str().unwrap()])
        .env_clear()
        .env("TOKEN", "env-SECRET-for-the-proxy-only")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for "listening on": the proxy is past its start-up.
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    let started = loop {
        match lines.next() {
            Some(Ok(line)) => {
                log.push_str(&line);
                log.push('\n');
                if line.contains("listening on") {
                    break true;
                }
            }
            _ => break false,
        }
    };
    let pid = child.id();
    let read_as_user = |file: &str| {
        let path = format!("/proc/{pid}/{file}");
        let mut c = if as_root {
            let mut c = Command::new("setpriv");
            c.args(demote).arg("cat");
            c
        } else {
            Command::new("cat")
        };
        c.arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .unwrap()
    };
    let environ = read_as_user("environ");
    let owner = fs::metadata(format!("/proc/{pid}/status")).unwrap().uid();
    let _ = child.kill();
    let _ = child.wait();
    assert!(started, "proxy did not start:\n{log}");
    assert!(
        !String::from_utf8_lossy(&environ.stdout).contains("env-SECRET"),
        "another process of the proxy's user read its environment"
    );
    assert!(!environ.status.success(), "reading environ must be refused");
    // The kernel marks a non-dumpable process's /proc files root's.
    assert_eq!(owner, 0, "/proc/<pid> of a non-dumpable process is root's");
}

// ---------------------------------------------------------------------------
// Config rules: Redis without TLS, ${file:} size
// ---------------------------------------------------------------------------

/// `redis://` to a host that is not loopback sends the tokens and the Redis
/// password in clear text: a config error unless `allow_insecure = true`.
#[test]
fn plain_redis_off_loopback_needs_allow_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let base = "[server]\nlisten = \"127.0.0.1:0\"\n[[routes]]\nprefix = \"/a/\"\nupstream = \"http://127.0.0.1:9/\"\n";
    for (store, expect) in [
        ("url = \"redis://10.1.2.3:6379/0\"", Some(64)),
        ("url = \"redis://redis.internal/0\"", Some(64)),
        (
            "url = \"redis://10.1.2.3:6379/0\"\nallow_insecure = true",
            Some(0),
        ),
        ("url = \"rediss://10.1.2.3:6380/0\"", Some(0)),
        ("url = \"redis://127.0.0.1:6379/0\"", Some(0)),
        ("url = \"redis://localhost/0\"", Some(0)),
    ] {
        let text = format!("[store]\nkind = \"redis\"\n{store}\n{base}");
        write_config(dir.path(), &text);
        let (code, out, err) = run_cli(&["check", "--config", "authproxy.toml"], &[], dir.path());
        assert_eq!(Some(code), expect, "{store}: {out}{err}");
        if code == 64 {
            assert!(err.contains("store.url"), "{err}");
            assert!(
                err.contains("rediss://") && err.contains("allow_insecure"),
                "{err}"
            );
        }
    }
}

/// `${file:}` reads at most 1 MiB: a larger file is a config error naming
/// the key and the file (not gigabytes read into memory); a device or a
/// FIFO is refused at once (`/dev/zero` never ends, a FIFO without writer
/// never answers).
#[test]
fn file_references_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.txt");
    let f = fs::File::create(&big).unwrap();
    f.set_len(2 * 1024 * 1024).unwrap();
    let fifo = dir.path().join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    for (file, expect) in [
        ("big.txt", "1 MiB"),
        ("/dev/zero", "not a regular file"),
        ("fifo", "not a regular file"),
    ] {
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ninbound_token = \"${{file:{file}}}\"\n\
             [[routes]]\nprefix = \"/a/\"\nupstream = \"http://127.0.0.1:9/\"\n"
        );
        write_config(dir.path(), &text);
        let (code, out, err) = run_cli(&["check", "--config", "authproxy.toml"], &[], dir.path());
        assert_eq!(code, 64, "{file}: {out}{err}");
        assert!(err.contains("server.inbound_token"), "names the key: {err}");
        assert!(err.contains(file), "names the file: {err}");
        assert!(err.contains(expect), "{err}");
    }
}
