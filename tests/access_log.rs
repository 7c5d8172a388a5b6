//! The access log an auditor can use, read from a real process in
//! `--log-format json`: every line one JSON object with typed fields;
//! request ids kept, made, forwarded and returned; bytes in and out as
//! sent; 499 for a client that left before the answer; startup errors as
//! JSON too.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::providers::{MockProvider, Style, CLIENT_ID, PASSWORD, USERNAME};
use support::{client, Echo, ProxyProcess};

/// Every line of a JSON log, parsed; panics on a line that is not one
/// JSON object.
fn json_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter(|l| !l.is_empty())
        .map(|l| match serde_json::from_str::<Value>(l) {
            Ok(v) if v.is_object() => v,
            _ => panic!("not a JSON object: {l:?}\nwhole log:\n{log}"),
        })
        .collect()
}

fn access_line<'a>(lines: &'a [Value], request_id: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["target"] == "authproxy::access" && l["request_id"] == request_id)
        .unwrap_or_else(|| panic!("no access line for {request_id} in {lines:#?}"))
}

fn write_config(dir: &Path, body: &str) -> String {
    let path = dir.join("authproxy.toml");
    std::fs::write(
        &path,
        format!("[server]\nlisten = \"127.0.0.1:0\"\n[store]\nkind = \"memory\"\n{body}"),
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

fn start_json(config: &str) -> ProxyProcess {
    ProxyProcess::spawn(
        &["--log-format", "json", "run", "--config", config],
        &[("RUST_LOG", "info")],
    )
}

/// Polls the process's log (every 10 ms, up to 60 s) until `cond` holds.
fn wait_for_log(proxy: &ProxyProcess, what: &str, cond: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = proxy.log();
        if cond(&log) {
            return log;
        }
        assert!(Instant::now() < deadline, "{what} never logged:\n{log}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn json_access_lines_match_what_the_upstream_saw() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let echo = rt.block_on(Echo::start());
    let mock = rt.block_on(MockProvider::start(Style::Rips));
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[providers.s]\ntype = \"static\"\nheaders = {{ Authorization = \"Token t\" }}\n\
             [providers.rips]\ntype = \"oauth2\"\ngrant = \"password\"\ntoken_url = \"{}\"\nbody = \"json\"\n\
             client_id = \"{CLIENT_ID}\"\nusername = \"{USERNAME}\"\npassword = \"{PASSWORD}\"\n\
             [[routes]]\nprefix = \"/s/\"\nupstream = \"{}/\"\nprovider = \"s\"\n\
             [[routes]]\nprefix = \"/rips/\"\nupstream = \"{}/api/\"\nprovider = \"rips\"\n",
            mock.token_url(),
            echo.url(),
            mock.base()
        ),
    );
    let proxy = start_json(&config);
    let c = client();
    let body = support::pattern(5000, 3);
    let (kept, made, replaced, renewed) = rt.block_on(async {
        // 1. The client's id is kept, forwarded and returned.
        let r = c
            .get(proxy.url("/s/a?secret=query"))
            .header("x-request-id", "client-id-1")
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["x-request-id"], "client-id-1");
        let kept = (r.bytes().await.unwrap().len(), echo.last());
        // 2. None sent: one is made; a body goes up.
        let r = c
            .post(proxy.url("/s/upload"))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
        let made = (id, r.bytes().await.unwrap().len(), echo.last());
        // 3. An id with a space is replaced.
        let r = c
            .get(proxy.url("/s/b"))
            .header("x-request-id", "bad id")
            .send()
            .await
            .unwrap();
        let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
        let replaced = (id, echo.last());
        // 4. The first request of an oauth2 route logs in first.
        let r = c.get(proxy.url("/rips/scans")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let renewed = r.headers()["x-request-id"].to_str().unwrap().to_string();
        // 5. No route.
        let r = c
            .get(proxy.url("/nowhere"))
            .header("x-request-id", "no-route-1")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        assert_eq!(r.headers()["x-request-id"], "no-route-1");
        (kept, made, replaced, renewed)
    });
    proxy.signal("TERM");
    let (code, log) = proxy.wait();
    assert_eq!(code, Some(0), "{log}");
    let lines = json_lines(&log);

    let (kept_len, kept_got) = kept;
    assert_eq!(kept_got.header("x-request-id"), Some("client-id-1"));
    let l = access_line(&lines, "client-id-1");
    assert_eq!(l["method"], "GET");
    assert_eq!(l["path"], "/s/a", "no query in the log");
    assert_eq!(l["route"], "/s/");
    assert_eq!(l["status"], 200);
    assert_eq!(l["bytes_in"], 0);
    assert_eq!(l["bytes_out"], kept_len as u64);
    assert_eq!(l["replayed"], false);
    assert!(l["upstream_us"].is_u64() && l["total_us"].is_u64(), "{l}");
    let client = l["client"].as_str().unwrap();
    assert!(
        client.parse::<SocketAddr>().unwrap().ip().is_loopback(),
        "{client}"
    );
    for absent in ["renewal", "error", "aborted"] {
        assert!(l.get(absent).is_none(), "{absent} in {l}");
    }

    let (made_id, made_len, made_got) = made;
    assert_eq!(made_id.len(), 32);
    assert!(made_id.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(made_got.header("x-request-id"), Some(made_id.as_str()));
    let l = access_line(&lines, &made_id);
    assert_eq!(l["method"], "POST");
    assert_eq!(l["bytes_in"], body.len() as u64);
    assert_eq!(made_got.body_len, body.len());
    assert_eq!(l["bytes_out"], made_len as u64);

    let (replaced_id, replaced_got) = replaced;
    assert_ne!(replaced_id, "bad id");
    assert_eq!(replaced_id.len(), 32);
    assert_eq!(
        replaced_got.header("x-request-id"),
        Some(replaced_id.as_str())
    );
    access_line(&lines, &replaced_id);

    let l = access_line(&lines, &renewed);
    assert_eq!(l["route"], "/rips/");
    assert_eq!(l["renewal"], "initial");
    assert_eq!(mock.api_hits().pop().unwrap().status, 200);

    let l = access_line(&lines, "no-route-1");
    assert_eq!(l["status"], 404);
    assert_eq!(l["route"], "-");
    assert_eq!(l["error"], "no_route");
    assert!(l.get("upstream_us").is_none());

    // Other lines are typed too: the renewal's expiry is a number.
    let renewal = lines
        .iter()
        .find(|l| l["message"] == "token renewed")
        .expect("a renewal line");
    assert!(renewal["expires_at"].is_u64(), "{renewal}");
    assert_eq!(renewal["reason"], "initial");
}

/// An upstream that reads a request head and then never answers (or
/// answers a head and part of a body and stalls): it says when a request
/// arrived and keeps its sockets open until the test ends.
fn stalling_upstream(answer: &'static [u8]) -> (SocketAddr, mpsc::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { break };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let _ = s.write_all(answer);
            let _ = tx.send(());
            held.push(s);
        }
    });
    (addr, rx)
}

#[test]
fn a_client_that_leaves_before_the_answer_is_logged_499() {
    let (slow, arrived) = stalling_upstream(b"");
    let (partial, partial_arrived) = stalling_upstream(
        b"HTTP/1.1 200 OK\r\ncontent-length: 100000\r\ncontent-type: text/plain\r\n\r\n0123456789",
    );
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[[routes]]\nprefix = \"/slow/\"\nupstream = \"http://{slow}/\"\n\
             [[routes]]\nprefix = \"/partial/\"\nupstream = \"http://{partial}/\"\n"
        ),
    );
    let proxy = start_json(&config);

    // Waiting for the upstream's answer when the client goes.
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    s.write_all(b"GET /slow/x?q=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-Id: gone-1\r\n\r\n")
        .unwrap();
    arrived.recv_timeout(Duration::from_secs(60)).unwrap();
    drop(s);
    let log = wait_for_log(&proxy, "the 499 line", |l| l.contains("\"gone-1\""));
    let lines = json_lines(&log);
    let l = access_line(&lines, "gone-1");
    assert_eq!(l["status"], 499);
    assert_eq!(l["route"], "/slow/");
    assert_eq!(l["path"], "/slow/x");
    assert_eq!(l["bytes_out"], 0);

    // Gone in the middle of the answer's body: the status sent, the bytes
    // that went out, and that it was cut.
    let mut s = TcpStream::connect(proxy.addr).unwrap();
    s.write_all(b"GET /partial/y HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-Id: gone-2\r\n\r\n")
        .unwrap();
    partial_arrived
        .recv_timeout(Duration::from_secs(60))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.ends_with(b"0123456789") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    drop(s);
    let log = wait_for_log(&proxy, "the cut answer's line", |l| {
        l.contains("\"gone-2\"")
    });
    let lines = json_lines(&log);
    let l = access_line(&lines, "gone-2");
    assert_eq!(l["status"], 200);
    assert_eq!(l["bytes_out"], 10);
    assert_eq!(l["aborted"], "client");
}

#[test]
fn startup_errors_are_json_lines_in_json_mode() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        "[providers.b]\ntype = \"basic\"\nusername = \"u:x\"\npassword = \"p\"\n\
         [[routes]]\nprefix = \"/b/\"\nupstream = \"http://127.0.0.1:9/\"\nprovider = \"b\"\nallow = [\"get /x\"]\n",
    )
    .unwrap();
    for command in ["run", "check"] {
        let (code, _, stderr) = support::run_cli(
            &["--log-format", "json", command, "--config", "bad.toml"],
            &[],
            dir.path(),
        );
        assert_eq!(code, 64, "{stderr}");
        let lines = json_lines(&stderr);
        assert_eq!(lines.len(), 1, "{stderr}");
        let e = &lines[0];
        assert_eq!(e["level"], "ERROR");
        assert!(e["message"].as_str().unwrap().contains("2 error(s)"), "{e}");
        let keys: Vec<&str> = e["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["key"].as_str().unwrap())
            .collect();
        assert_eq!(keys, ["providers.b.username", "routes[0].allow[0]"]);
        // Text stays text.
        let (code, _, stderr) =
            support::run_cli(&[command, "--config", "bad.toml"], &[], dir.path());
        assert_eq!(code, 64);
        assert!(stderr.starts_with("authproxy: config file"), "{stderr}");
        assert!(stderr.contains("\n  routes[0].allow[0]: "), "{stderr}");
    }

    // An address in use: the log so far and the error, all JSON.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    std::fs::write(
        dir.path().join("taken.toml"),
        format!(
            "[server]\nlisten = \"{}\"\n[store]\nkind = \"memory\"\n\
             [[routes]]\nprefix = \"/\"\nupstream = \"http://127.0.0.1:9/\"\n",
            taken.local_addr().unwrap()
        ),
    )
    .unwrap();
    let (code, _, stderr) = support::run_cli(
        &["--log-format", "json", "run", "--config", "taken.toml"],
        &[],
        dir.path(),
    );
    assert_eq!(code, 1, "{stderr}");
    let lines = json_lines(&stderr);
    let last = lines.last().unwrap();
    assert_eq!(last["level"], "ERROR");
    assert!(
        last["message"]
            .as_str()
            .unwrap()
            .contains("cannot listen on"),
        "{stderr}"
    );
}
