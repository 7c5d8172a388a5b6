//! DPoP (RFC 9449) end to end: a token endpoint and an API (two servers,
//! two origins) that both demand nonces of their own and verify every
//! proof the way RFC 9449 §4.3 says: the ES256 signature with the JWK of
//! the proof's header, `typ`, `htm`, `htu`, `iat`, a `jti` never seen
//! before, the nonce, and at the API the `ath` of the access token and the
//! key the token was bound to (`cnf.jkt`). The verifier is written here,
//! with ring's verification, not with the code that signs.

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use support::{client, serve, start_proxy};

/// What a server did with one request.
#[derive(Debug, Clone)]
struct Event {
    /// "ok", "nonce" (asked for one), "invalid_token", or why the proof
    /// was refused.
    outcome: String,
    jti: Option<String>,
    jkt: Option<String>,
}

type Tokens = Arc<Mutex<HashMap<String, String>>>;

#[derive(Default)]
struct Inner {
    base: String,
    seen_jti: HashSet<String>,
    /// Issued access token → the thumbprint it is bound to (shared by the
    /// token endpoint that issues and the API that takes them).
    tokens: Tokens,
    issued: u32,
    nonce: String,
    token_log: Vec<Event>,
    api_log: Vec<Event>,
}

#[derive(Clone, Default)]
struct Server(Arc<Mutex<Inner>>);

impl Server {
    async fn start(nonce: &str, tokens: &Tokens) -> Server {
        let server = Server::default();
        server.0.lock().unwrap().nonce = nonce.into();
        server.0.lock().unwrap().tokens = tokens.clone();
        let app = Router::new()
            .route("/token", post(token))
            .fallback(api)
            .with_state(server.clone());
        let addr = serve(app).await;
        server.0.lock().unwrap().base = format!("http://{addr}");
        server
    }

    fn base(&self) -> String {
        self.0.lock().unwrap().base.clone()
    }

    fn token_log(&self) -> Vec<Event> {
        self.0.lock().unwrap().token_log.clone()
    }

    fn api_log(&self) -> Vec<Event> {
        self.0.lock().unwrap().api_log.clone()
    }
}

fn outcomes(log: &[Event]) -> Vec<&str> {
    log.iter().map(|e| e.outcome.as_str()).collect()
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Checks a proof as RFC 9449 §4.3 says; the claims and the JWK
/// thumbprint (RFC 7638) of its key.
fn verify(
    inner: &mut Inner,
    headers: &HeaderMap,
    htm: &str,
    htu: &str,
) -> Result<(Value, String), String> {
    let mut proofs = headers.get_all("dpop").iter();
    let proof = proofs.next().ok_or("no DPoP header")?;
    if proofs.next().is_some() {
        return Err("two DPoP headers".into());
    }
    let proof = proof.to_str().map_err(|_| "not text")?;
    let parts: Vec<&str> = proof.split('.').collect();
    let [h, c, s] = parts[..] else {
        return Err("not a compact JWS".into());
    };
    let decode = |p: &str| -> Result<Value, String> {
        let bytes = URL_SAFE_NO_PAD.decode(p).map_err(|e| e.to_string())?;
        serde_json::from_slice(&bytes).map_err(|e| e.to_string())
    };
    let (header, claims) = (decode(h)?, decode(c)?);
    if header["typ"] != "dpop+jwt" || header["alg"] != "ES256" {
        return Err(format!("header {header}"));
    }
    let jwk = &header["jwk"];
    if jwk["kty"] != "EC" || jwk["crv"] != "P-256" || jwk.get("d").is_some() {
        return Err(format!("jwk {jwk}"));
    }
    let (x, y) = (
        jwk["x"].as_str().unwrap_or(""),
        jwk["y"].as_str().unwrap_or(""),
    );
    let mut point = vec![4u8];
    point.extend(URL_SAFE_NO_PAD.decode(x).map_err(|e| e.to_string())?);
    point.extend(URL_SAFE_NO_PAD.decode(y).map_err(|e| e.to_string())?);
    let signature = URL_SAFE_NO_PAD.decode(s).map_err(|e| e.to_string())?;
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &point)
        .verify(format!("{h}.{c}").as_bytes(), &signature)
        .map_err(|_| "bad signature")?;
    if claims["htm"] != htm || claims["htu"] != htu {
        return Err(format!("htm/htu {claims} for {htm} {htu}"));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let iat = claims["iat"].as_u64().ok_or("no iat")?;
    if iat.abs_diff(now) > 60 {
        return Err(format!("iat {iat} vs now {now}"));
    }
    let jti = claims["jti"].as_str().ok_or("no jti")?;
    if !inner.seen_jti.insert(jti.to_string()) {
        return Err(format!("jti {jti} used twice"));
    }
    let thumbprint_input = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    Ok((claims, b64(Sha256::digest(thumbprint_input.as_bytes()))))
}

fn nonce_answer(nonce: &str, resource: bool) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert("dpop-nonce", nonce.parse().unwrap());
    if resource {
        headers.insert(
            "www-authenticate",
            r#"DPoP error="use_dpop_nonce", error_description="Resource server requires nonce in DPoP proof""#
                .parse()
                .unwrap(),
        );
        (StatusCode::UNAUTHORIZED, headers, Json(json!({}))).into_response()
    } else {
        let body = json!({
            "error": "use_dpop_nonce",
            "error_description": "Authorization server requires nonce in DPoP proof",
        });
        (StatusCode::BAD_REQUEST, headers, Json(body)).into_response()
    }
}

async fn token(State(server): State<Server>, headers: HeaderMap, body: String) -> Response {
    let mut inner = server.0.lock().unwrap();
    let htu = format!("{}/token", inner.base);
    let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let checked = verify(&mut inner, &headers, "POST", &htu);
    let (claims, jkt) = match checked {
        Ok(ok) => ok,
        Err(why) => {
            inner.token_log.push(Event {
                outcome: why.clone(),
                jti: None,
                jkt: None,
            });
            let body = json!({"error": "invalid_dpop_proof", "error_description": why});
            return (StatusCode::BAD_REQUEST, Json(body)).into_response();
        }
    };
    let jti = claims["jti"].as_str().map(String::from);
    if claims["nonce"] != inner.nonce.as_str() {
        inner.token_log.push(Event {
            outcome: "nonce".into(),
            jti,
            jkt: Some(jkt),
        });
        return nonce_answer(&inner.nonce, false);
    }
    if form.get("grant_type").map(String::as_str) != Some("client_credentials")
        || form.get("client_secret").map(String::as_str) != Some("app-secret")
    {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "invalid_client"})),
        )
            .into_response();
    }
    inner.issued += 1;
    let access = format!("at-{}-{}", inner.issued, b64(rand_bytes()));
    inner
        .tokens
        .lock()
        .unwrap()
        .insert(access.clone(), jkt.clone());
    inner.token_log.push(Event {
        outcome: "ok".into(),
        jti,
        jkt: Some(jkt),
    });
    Json(json!({"access_token": access, "token_type": "DPoP", "expires_in": 3600})).into_response()
}

fn rand_bytes() -> [u8; 12] {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 12];
    ring::rand::SystemRandom::new().fill(&mut b).unwrap();
    b
}

async fn api(
    State(server): State<Server>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> Response {
    let mut inner = server.0.lock().unwrap();
    let htu = format!("{}{}", inner.base, uri.path());
    let log = |inner: &mut Inner, outcome: &str, jti: Option<String>, jkt: Option<String>| {
        inner.api_log.push(Event {
            outcome: outcome.into(),
            jti,
            jkt,
        })
    };
    let Some(access) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("DPoP "))
        .map(String::from)
    else {
        log(&mut inner, "no DPoP authorization", None, None);
        return StatusCode::BAD_REQUEST.into_response();
    };
    let (claims, jkt) = match verify(&mut inner, &headers, method.as_str(), &htu) {
        Ok(ok) => ok,
        Err(why) => {
            log(&mut inner, &why, None, None);
            return StatusCode::BAD_REQUEST.into_response();
        }
    };
    let jti = claims["jti"].as_str().map(String::from);
    if claims["ath"] != b64(Sha256::digest(access.as_bytes())).as_str() {
        log(&mut inner, "ath does not match the token", jti, Some(jkt));
        return StatusCode::BAD_REQUEST.into_response();
    }
    if claims["nonce"] != inner.nonce.as_str() {
        log(&mut inner, "nonce", jti, Some(jkt));
        return nonce_answer(&inner.nonce.clone(), true);
    }
    let bound = inner.tokens.lock().unwrap().get(&access).cloned();
    match bound {
        Some(bound) if bound == jkt => {}
        Some(_) => {
            log(&mut inner, "token bound to another key", jti, Some(jkt));
            return StatusCode::BAD_REQUEST.into_response();
        }
        None => {
            log(&mut inner, "invalid_token", jti, Some(jkt));
            let mut h = HeaderMap::new();
            h.insert(
                "www-authenticate",
                r#"DPoP error="invalid_token""#.parse().unwrap(),
            );
            return (StatusCode::UNAUTHORIZED, h).into_response();
        }
    }
    log(&mut inner, "ok", jti, Some(jkt));
    Json(json!({"method": method.as_str(), "path": uri.path(), "body": body})).into_response()
}

fn config(auth: &str, api: &str, store: &std::path::Path) -> String {
    format!(
        r#"
[store]
kind = "file"
path = "{}"

[providers.okta]
type = "oauth2"
grant = "client_credentials"
token_url = "{auth}/token"
client_id = "app"
client_secret = "app-secret"
dpop = true

[[routes]]
prefix = "/api/"
upstream = "{api}/api/"
provider = "okta"
"#,
        store.display()
    )
}

async fn call(proxy: &support::Proxy, method: &str, path: &str, body: &str) -> (u16, Value) {
    let resp = client()
        .request(method.parse().unwrap(), proxy.url(path))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(json!(text)))
}

#[tokio::test]
async fn dpop_bound_tokens_with_nonces_at_the_token_endpoint_and_the_api() {
    let tokens = Tokens::default();
    let auth = Server::start("as-nonce-1", &tokens).await;
    let api = Server::start("rs-nonce-1", &tokens).await;
    let state = tempfile::tempdir().unwrap();
    let store = state.path().join("tokens.json");
    let cfg = config(&auth.base(), &api.base(), &store);
    let proxy = start_proxy(&cfg).await;

    // The first token request is asked for the server's nonce, the second
    // carries it; the same at the API, each with its own nonce.
    let (status, body) = call(&proxy, "GET", "/api/v1/items?page=2#x", "").await;
    assert_eq!(
        status,
        200,
        "{body} {:?} {:?}",
        auth.token_log(),
        api.api_log()
    );
    assert_eq!(body["path"], "/api/v1/items");
    assert_eq!(outcomes(&auth.token_log()), ["nonce", "ok"]);
    assert_eq!(outcomes(&api.api_log()), ["nonce", "ok"]);
    let jkt = auth.token_log()[1].jkt.clone().unwrap();

    // The nonces are remembered: one request each, a body replayed intact.
    let (status, body) = call(&proxy, "POST", "/api/v1/items", "hello").await;
    assert_eq!((status, body["body"].as_str()), (200, Some("hello")));
    let (status, _) = call(&proxy, "DELETE", "/api/v1/items/7", "").await;
    assert_eq!(status, 200);
    assert_eq!(outcomes(&api.api_log()), ["nonce", "ok", "ok", "ok"]);

    // A new nonce at the API: one retry with it, the body sent again.
    api.0.lock().unwrap().nonce = "rs-nonce-2".into();
    let (status, body) = call(&proxy, "PUT", "/api/v1/items/7", "again").await;
    assert_eq!(
        (status, body["body"].as_str()),
        (200, Some("again")),
        "{body}"
    );
    assert_eq!(outcomes(&api.api_log())[4..], ["nonce", "ok"]);

    // A token the API no longer knows: renewed (the token endpoint's
    // nonce is remembered: one request), replayed with a new proof.
    tokens.lock().unwrap().clear();
    let (status, body) = call(&proxy, "POST", "/api/v1/x", "replayed").await;
    assert_eq!((status, body["body"].as_str()), (200, Some("replayed")));
    assert_eq!(outcomes(&auth.token_log()), ["nonce", "ok", "ok"]);
    let renewed_jkt = auth.token_log()[2].jkt.clone().unwrap();
    assert_eq!(renewed_jkt, jkt, "one key per provider");
    // The API learns of the new token from the token endpoint's issuance.
    assert_eq!(
        outcomes(&api.api_log())[6..],
        ["invalid_token", "ok"],
        "{:?}",
        api.api_log()
    );

    // Every proof was new (the verifiers refuse a jti seen before), every
    // one by the one key.
    let all: Vec<Event> = auth.token_log().into_iter().chain(api.api_log()).collect();
    assert!(
        all.iter().all(|e| e.jkt.as_deref() == Some(jkt.as_str())),
        "{all:?}"
    );
    let jtis: HashSet<_> = all.iter().map(|e| e.jti.clone().unwrap()).collect();
    assert_eq!(jtis.len(), all.len());

    // The key is in the store record, and nowhere the operator looks.
    let record = std::fs::read_to_string(&store).unwrap();
    let stored: Value = serde_json::from_str(&record).unwrap();
    let key = find_key(&stored).expect("the DPoP key is stored");
    assert_eq!(
        authproxy::oauth::DpopKey::from_stored(&authproxy::secret::Secret::new(key.clone()))
            .unwrap()
            .thumbprint(),
        jkt
    );
    for path in ["/_authproxy/status", "/_authproxy/metrics"] {
        let text = client()
            .get(proxy.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!text.contains(&key[..20]), "{path}: {text}");
    }
    proxy.stop().await;

    // After a restart: the stored token and its key, no token request.
    let proxy = start_proxy(&cfg).await;
    let (status, _) = call(&proxy, "GET", "/api/v1/after-restart", "").await;
    assert_eq!(status, 200, "{:?}", api.api_log());
    assert_eq!(auth.token_log().len(), 3, "{:?}", auth.token_log());
    let last = api.api_log().last().cloned().unwrap();
    assert_eq!((last.outcome.as_str(), last.jkt), ("ok", Some(jkt)));
}

/// The `dpop_key` of the store file, wherever the record is.
fn find_key(v: &Value) -> Option<String> {
    match v {
        Value::Object(map) => map
            .get("dpop_key")
            .and_then(Value::as_str)
            .map(String::from)
            .or_else(|| map.values().find_map(find_key)),
        _ => None,
    }
}

/// `dpop` with keys it cannot work with is refused at load, naming the key
/// and the fix; on its own it loads.
#[test]
fn dpop_config_that_cannot_work_is_refused_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let load = |provider: &str| {
        let text = format!(
            "[store]\nkind = \"memory\"\n[providers.p]\ntype = \"oauth2\"\n{provider}\n[[routes]]\nprefix = \"/p/\"\nupstream = \"https://api.example/\"\nprovider = \"p\"\n"
        );
        let path = dir.path().join("authproxy.toml");
        std::fs::write(&path, &text).unwrap();
        authproxy::config::Config::parse(&text, &path, &authproxy::config::interpolate::ProcessEnv)
            .map_err(|e| e.to_string())
    };
    let cc = "grant = \"client_credentials\"\ntoken_url = \"https://as.example/token\"\nclient_id = \"a\"\nclient_secret = \"b\"\n";
    let cfg = load(&format!("{cc}dpop = true")).unwrap();
    match &cfg.providers["p"].kind {
        authproxy::config::ProviderKind::OAuth2(o) => assert!(o.dpop),
        _ => panic!("oauth2 expected"),
    }
    let err = load(&format!("{cc}dpop = true\nscheme = \"Bearer\"")).unwrap_err();
    assert!(
        err.contains("providers.p.scheme:") && err.contains("remove scheme"),
        "{err}"
    );
    let err = load(&format!("{cc}dpop = true\nheader = \"X-Token\"")).unwrap_err();
    assert!(
        err.contains("providers.p.header:") && err.contains("remove header"),
        "{err}"
    );
    let err = load("grant = \"implicit\"\nauthorize_url = \"https://as.example/a\"\nclient_id = \"a\"\ndpop = true").unwrap_err();
    assert!(
        err.contains("providers.p.dpop:") && err.contains("implicit"),
        "{err}"
    );
    let err = load(&format!("{cc}dpop = \"yes\"")).unwrap_err();
    assert!(err.contains("dpop"), "{err}");
}

/// A token endpoint that repeats the DPoP proof it got in its error text:
/// what the proxy shows (the client's error answer, status) has none of
/// it. Only the token client knows that proof, so it cuts it out itself.
#[tokio::test]
async fn a_token_endpoint_repeating_the_proof_does_not_get_it_shown() {
    let sent: Arc<Mutex<Vec<String>>> = Arc::default();
    let record = sent.clone();
    let app = Router::new().route(
        "/token",
        post(move |headers: HeaderMap| {
            let record = record.clone();
            async move {
                let proof = headers["dpop"].to_str().unwrap().to_string();
                record.lock().unwrap().push(proof.clone());
                // The claims and signature (the header alone would fill
                // what is shown of provider text).
                let tail = proof.split_once('.').unwrap().1;
                let body = json!({"error": "invalid_dpop_proof", "error_description": format!("proof {tail} refused")});
                (StatusCode::BAD_REQUEST, Json(body))
            }
        }),
    );
    let addr = serve(app).await;
    let base = format!("http://{addr}");
    let state = tempfile::tempdir().unwrap();
    let proxy = start_proxy(&config(&base, &base, &state.path().join("t.json"))).await;
    let (status, body) = call(&proxy, "GET", "/api/x", "").await;
    assert_eq!(status, 502, "{body}");
    let status_text = client()
        .get(proxy.url("/_authproxy/status"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(status_text.contains("invalid_dpop_proof"), "{status_text}");
    let shown = format!("{body} {status_text}");
    let proofs = sent.lock().unwrap().clone();
    assert!(!proofs.is_empty());
    for proof in proofs {
        // The header (the public JWK) is the same each time; the claims
        // and the signature are not.
        let (_, rest) = proof.split_once('.').unwrap();
        for start in (0..rest.len() - 16).step_by(4) {
            assert!(!shown.contains(&rest[start..start + 16]), "{shown}");
        }
    }
}

/// A nonce demand to a request whose body was not kept (larger than
/// `max_replay_body`) goes back to the client as it is: it is not about
/// the token, so no renewal; the next request carries the nonce.
#[tokio::test]
async fn a_nonce_demand_without_a_kept_body_is_returned_without_a_renewal() {
    let tokens = Tokens::default();
    let auth = Server::start("as-n", &tokens).await;
    let api = Server::start("rs-n", &tokens).await;
    let state = tempfile::tempdir().unwrap();
    let cfg = format!(
        "[server]\nmax_replay_body = \"16B\"\n{}",
        config(&auth.base(), &api.base(), &state.path().join("t.json"))
    );
    let proxy = start_proxy(&cfg).await;
    let big = "x".repeat(100);
    let resp = client()
        .post(proxy.url("/api/upload"))
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .contains("use_dpop_nonce"));
    assert_eq!(outcomes(&api.api_log()), ["nonce"]);
    assert_eq!(outcomes(&auth.token_log()), ["nonce", "ok"], "no renewal");
    let (status, body) = call(&proxy, "POST", "/api/upload", &big).await;
    assert_eq!((status, body["body"].as_str()), (200, Some(big.as_str())));
    assert_eq!(outcomes(&api.api_log()), ["nonce", "ok"]);
    assert_eq!(auth.token_log().len(), 2);
}

/// Two replicas sharing a Redis store: the token one replica got is bound
/// to its key, and the other replica, taking that token from the store,
/// takes the key with it (its proofs verify against the token's `cnf.jkt`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_sharing_a_redis_store_share_the_key_with_the_token() {
    let Some(redis) = support::redis_server::RedisServer::start() else {
        return;
    };
    let tokens = Tokens::default();
    let auth = Server::start("as-r", &tokens).await;
    let api = Server::start("rs-r", &tokens).await;
    let cfg = config(&auth.base(), &api.base(), std::path::Path::new("unused")).replace(
        "[store]\nkind = \"file\"\npath = \"unused\"",
        &format!("[store]\nkind = \"redis\"\nurl = \"{}\"", redis.url()),
    );
    assert!(cfg.contains("redis://"), "{cfg}");
    let a = start_proxy(&cfg).await;
    let b = start_proxy(&cfg).await;
    let (status, _) = call(&a, "GET", "/api/a", "").await;
    assert_eq!(status, 200);
    let (status, body) = call(&b, "GET", "/api/b", "").await;
    assert_eq!(status, 200, "{body} {:?}", api.api_log());
    let issued: Vec<Event> = auth
        .token_log()
        .into_iter()
        .filter(|e| e.outcome == "ok")
        .collect();
    assert_eq!(
        issued.len(),
        1,
        "one token for both: {:?}",
        auth.token_log()
    );
    let last = api.api_log().last().cloned().unwrap();
    assert_eq!(last.jkt, issued[0].jkt, "{:?}", api.api_log());
}
