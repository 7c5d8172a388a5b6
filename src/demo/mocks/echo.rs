//! An upstream that records what it received and answers with a JSON
//! description of it; the mock providers' APIs answer the same way.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// What an upstream received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: BTreeMap<String, Vec<String>>,
    pub body_len: usize,
    pub body_sha256: String,
    /// Whether the body ended normally (false: the sender broke it off;
    /// `body_len` then counts what arrived).
    pub body_complete: bool,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .and_then(|v| v.first())
            .map(String::as_str)
    }
}

/// An upstream that answers every request with 200 and a JSON description
/// of what it received ([`echo_response`]), and records it.
#[derive(Clone)]
pub struct Echo {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
}

impl Echo {
    /// Serves on 127.0.0.1:0 for as long as the runtime lives.
    pub async fn start() -> Echo {
        let requests: Arc<Mutex<Vec<Recorded>>> = Arc::default();
        let r = requests.clone();
        let router = Router::new().fallback(move |req: Request| {
            let r = r.clone();
            async move {
                let rec = record(req).await;
                r.lock().unwrap().push(rec.clone());
                echo_response(&rec)
            }
        });
        let addr = super::serve(router).await;
        Echo { addr, requests }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn last(&self) -> Recorded {
        self.requests
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("upstream got no request")
    }

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

/// Reads a whole request, hashing the body while it streams in (a large
/// upload is not held in memory).
pub async fn record(req: Request) -> Recorded {
    let (parts, mut body) = req.into_parts();
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in &parts.headers {
        headers
            .entry(k.as_str().to_string())
            .or_default()
            .push(String::from_utf8_lossy(v.as_bytes()).into_owned());
    }
    let mut hasher = Sha256::new();
    let mut len = 0;
    let mut body_complete = true;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            body_complete = false;
            break;
        };
        if let Ok(data) = frame.into_data() {
            len += data.len();
            hasher.update(&data);
        }
    }
    Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers,
        body_len: len,
        body_sha256: hex(&hasher.finalize()),
        body_complete,
    }
}

/// The JSON description of a recorded request; `headers` can be left out
/// (the demo does not show the client the credential it was sent).
pub fn echo_json(rec: &Recorded, headers: bool) -> Value {
    let mut v = json!({
        "method": rec.method,
        "path": rec.path,
        "query": rec.query,
        "body_len": rec.body_len,
        "body_sha256": rec.body_sha256,
    });
    if headers {
        v["headers"] = json!(rec.headers);
    }
    v
}

/// 200 with [`echo_json`] of `rec`, headers included.
pub fn echo_response(rec: &Recorded) -> Response {
    axum::Json(echo_json(rec, true)).into_response()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
