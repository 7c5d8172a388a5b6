//! A real, OpenID-certified authorization server for the tests: node
//! `oidc-provider` (pinned in `tests/oidc/package.json`) and a resource
//! server that verifies what it receives (JWT against the provider's keys,
//! DPoP proofs per RFC 9449), both in `tests/oidc/server.mjs`, started as a
//! child process on 127.0.0.1:0 and killed when dropped.
//!
//! Also the user's side of the browser flows (login and consent through
//! oidc-provider's development interactions, the device-code page), key
//! pairs for `private_key_jwt`, PKCE pairs and a small PKI for mTLS.
//!
//! Needs `node` (20 or later) and `npm ci --prefix tests/oidc`. Without them
//! the tests fail with that fix, unless `AUTHPROXY_TEST_ALLOW_MISSING` lists
//! `node` (then [`OidcServer::start`] returns `None` and the test skips).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// The device-code grant type (RFC 8628 §3.4).
pub const DEVICE_CODE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// `tests/oidc`: the node project.
pub fn node_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

/// Whether the node harness can run here. Missing `node` or node_modules
/// fails the test with the fix; only when `AUTHPROXY_TEST_ALLOW_MISSING`
/// lists `node` (and not under `CI`) is the test skipped, with a message
/// (the rule of [`super::require_tool`]).
pub fn available() -> bool {
    let node = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let modules = node_dir()
        .join("node_modules/oidc-provider/package.json")
        .exists();
    let install = if node {
        "tests/oidc/node_modules is missing: run `npm ci --prefix tests/oidc` (bash .ci/run does it)"
    } else {
        "the oidc-provider tests need Node.js 20 or later on PATH, then \
         `npm ci --prefix tests/oidc` (bash .ci/run does both)"
    };
    super::require_tool("node", node && modules, install)
}

/// What the node server is started with (`tests/oidc/server.mjs` reads it).
#[derive(Serialize, Clone, Debug)]
pub struct OidcConfig {
    pub clients: Vec<Client>,
    pub ttl: Ttl,
    /// The token endpoint demands a DPoP nonce (`use_dpop_nonce`).
    pub dpop_nonce: bool,
    /// The resource server demands its own DPoP nonce (RFC 9449 §9).
    pub rs_dpop_nonce: bool,
    /// Every refresh rotates; a spent refresh token revokes the grant.
    pub rotate_refresh_token: bool,
    /// `interval` in device authorization answers (oidc-provider sends
    /// none, which means 5 s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_interval: Option<u64>,
    /// Serve https with this certificate and ask for client certificates
    /// (enables `tls_client_auth`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
}

impl Default for OidcConfig {
    fn default() -> Self {
        OidcConfig {
            clients: Vec::new(),
            ttl: Ttl::default(),
            dpop_nonce: false,
            rs_dpop_nonce: false,
            rotate_refresh_token: true,
            device_interval: None,
            tls: None,
        }
    }
}

impl OidcConfig {
    pub fn with_clients(clients: impl IntoIterator<Item = Client>) -> Self {
        OidcConfig {
            clients: clients.into_iter().collect(),
            ..OidcConfig::default()
        }
    }
}

/// Lifetimes in seconds (oidc-provider's `ttl`); `None` keeps its default
/// (access tokens 1 h, client-credentials tokens 10 min, refresh tokens
/// 14 days, device codes 10 min).
#[derive(Serialize, Clone, Debug, Default)]
pub struct Ttl {
    #[serde(rename = "AccessToken", skip_serializing_if = "Option::is_none")]
    pub access_token: Option<u64>,
    #[serde(rename = "ClientCredentials", skip_serializing_if = "Option::is_none")]
    pub client_credentials: Option<u64>,
    #[serde(rename = "RefreshToken", skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<u64>,
    #[serde(rename = "DeviceCode", skip_serializing_if = "Option::is_none")]
    pub device_code: Option<u64>,
}

/// PEM text for [`OidcConfig::tls`].
#[derive(Serialize, Clone, Debug)]
pub struct TlsConfig {
    pub cert: String,
    pub key: String,
    /// CA that client certificates are checked against.
    pub client_ca: String,
}

/// A statically registered client (oidc-provider client metadata).
#[derive(Serialize, Clone, Debug)]
pub struct Client {
    pub client_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    pub token_endpoint_auth_method: String,
    pub grant_types: Vec<String>,
    pub response_types: Vec<String>,
    pub redirect_uris: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jwks: Option<Value>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dpop_bound_access_tokens: bool,
    /// Any other metadata (e.g. `tls_client_auth_subject_dn`,
    /// `token_endpoint_auth_signing_alg`).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Client {
    /// A `client_credentials` client authenticating with `method`
    /// (`client_secret_basic`, `client_secret_post`, `client_secret_jwt`,
    /// `private_key_jwt`, `tls_client_auth`, `none`).
    pub fn new(client_id: &str, method: &str) -> Client {
        Client {
            client_id: client_id.into(),
            client_secret: None,
            token_endpoint_auth_method: method.into(),
            grant_types: vec!["client_credentials".into()],
            response_types: Vec::new(),
            redirect_uris: Vec::new(),
            jwks: None,
            dpop_bound_access_tokens: false,
            extra: Map::new(),
        }
    }

    pub fn secret(mut self, secret: &str) -> Client {
        self.client_secret = Some(secret.into());
        self
    }

    /// Public keys for `private_key_jwt` (e.g. [`TestKey::public_jwk`]).
    pub fn jwks(mut self, keys: &[&Value]) -> Client {
        self.jwks = Some(serde_json::json!({ "keys": keys }));
        self
    }

    /// Replaces the grant types; `authorization_code` also allows `response_type=code`.
    pub fn grants(mut self, grants: &[&str]) -> Client {
        self.grant_types = grants.iter().map(|g| g.to_string()).collect();
        self.response_types = if grants.contains(&"authorization_code") {
            vec!["code".into()]
        } else {
            Vec::new()
        };
        self
    }

    pub fn redirect_uri(mut self, uri: &str) -> Client {
        self.redirect_uris.push(uri.into());
        self
    }

    /// Tokens for this client must be DPoP-bound.
    pub fn dpop_bound(mut self) -> Client {
        self.dpop_bound_access_tokens = true;
        self
    }

    pub fn meta(mut self, key: &str, value: impl Into<Value>) -> Client {
        self.extra.insert(key.into(), value.into());
        self
    }
}

/// A request the resource server saw (`GET /_test/requests`).
#[derive(Deserialize, Clone, Debug)]
pub struct RsRequest {
    pub method: String,
    pub path: String,
    /// `Bearer` or `DPoP`; `None` without an `Authorization` header.
    pub scheme: Option<String>,
    pub client_id: Option<String>,
    pub sub: Option<String>,
    /// The access token's `jti` (tells tokens apart without holding them).
    pub token_jti: Option<String>,
    /// The DPoP proof key's thumbprint, when a proof was verified.
    pub jkt: Option<String>,
    /// Why the request was refused (names the failed check); `None` = 200.
    pub error: Option<String>,
}

/// A token endpoint outcome (`GET /_test/grants`).
#[derive(Deserialize, Clone, Debug)]
pub struct GrantRecord {
    pub grant_type: Option<String>,
    pub client_id: Option<String>,
    /// The client's registered method; on success, the one it used.
    pub client_auth_method: Option<String>,
    pub token_jti: Option<String>,
    pub dpop_jkt: Option<String>,
    /// RFC 6749 error code when the request was refused.
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// The running node process.
pub struct OidcServer {
    child: Child,
    pub port: u16,
    issuer: String,
    stderr: Arc<Mutex<String>>,
    http: reqwest::Client,
}

impl OidcServer {
    /// Starts `node tests/oidc/server.mjs` with `config` and waits (bounded)
    /// for its `LISTENING <port>` line. `None`: skipped (see [`available`]).
    pub fn start(config: &OidcConfig) -> Option<OidcServer> {
        if !available() {
            return None;
        }
        authproxy::install_crypto_provider();
        let mut child = Command::new("node")
            .arg("server.mjs")
            .current_dir(node_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn node");
        // The config holds client secrets and keys: stdin, not a file.
        let json = serde_json::to_vec(config).unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&json).unwrap();
        drop(stdin);

        let stderr = Arc::new(Mutex::new(String::new()));
        let (err_pipe, err_log) = (child.stderr.take().unwrap(), stderr.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(err_pipe).lines().map_while(Result::ok) {
                let mut log = err_log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let out_pipe = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(out_pipe).lines().map_while(Result::ok) {
                let port = line
                    .strip_prefix("LISTENING ")
                    .and_then(|p| p.parse::<u16>().ok());
                if let (Some(port), Some(tx)) = (port, tx.take()) {
                    let _ = tx.send(port);
                }
            }
        });
        // Node starts in well under a second; 60 s is for a loaded machine.
        let port = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(port) => port,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                // Give the reader a moment to take the last lines.
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "oidc-provider did not start ({e}); its stderr:\n{}",
                    stderr.lock().unwrap()
                );
            }
        };
        let scheme = if config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let mut http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(Duration::from_secs(60));
        if let Some(tls) = &config.tls {
            let ca = reqwest::Certificate::from_pem(tls.client_ca.as_bytes()).unwrap();
            http = http.add_root_certificate(ca);
        }
        Some(OidcServer {
            child,
            port,
            issuer: format!("{scheme}://127.0.0.1:{port}"),
            stderr,
            http: http.build().unwrap(),
        })
    }

    /// `http://127.0.0.1:<port>` (`https` with [`OidcConfig::tls`]).
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    pub fn token_url(&self) -> String {
        self.url("/token")
    }

    pub fn authorize_url(&self) -> String {
        self.url("/auth")
    }

    pub fn device_authorization_url(&self) -> String {
        self.url("/device/auth")
    }

    pub fn revocation_url(&self) -> String {
        self.url("/token/revocation")
    }

    /// The resource indicator and `aud` of every access token: `<issuer>/api`.
    pub fn resource(&self) -> String {
        self.url("/api")
    }

    /// A plain client for this server (trusts its CA, follows no redirect).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// What the node process wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The stderr once it holds `needle` (polled: a reader thread collects
    /// it); panics with what it holds if that takes more than 30 s.
    pub async fn stderr_with(&self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let log = self.stderr();
            if log.contains(needle) {
                return log;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {needle:?} in:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn requests(&self) -> Vec<RsRequest> {
        self.get_test("/_test/requests").await
    }

    pub async fn grants(&self) -> Vec<GrantRecord> {
        self.get_test("/_test/grants").await
    }

    /// The resource server picks a new DPoP nonce (the old one is refused).
    pub async fn rotate_rs_nonce(&self) {
        let resp = self
            .http
            .post(self.url("/_test/rs-nonce"))
            .send()
            .await
            .unwrap();
        assert!(resp.status().is_success());
    }

    async fn get_test<T: serde::de::DeserializeOwned>(&self, path: &str) -> T {
        let resp = self.http.get(self.url(path)).send().await.unwrap();
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        resp.json().await.unwrap()
    }
}

impl Drop for OidcServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- oidc-provider stderr ---\n{}", self.stderr());
        }
    }
}

/// A signing key made by `tests/oidc/keygen.mjs`.
pub struct TestKey {
    /// For authproxy's `private_key`.
    pub private_pem: String,
    /// For the client's `jwks` at the provider.
    pub public_jwk: Value,
}

#[derive(Clone, Copy, Debug)]
pub enum KeyKind {
    /// RSA 2048 (RS256, PS256).
    Rsa,
    /// EC P-256 (ES256).
    Ec,
}

/// PEM encodings of a private key.
#[derive(Clone, Copy, Debug)]
pub enum KeyFormat {
    /// `BEGIN PRIVATE KEY`.
    Pkcs8,
    /// `BEGIN RSA PRIVATE KEY` (RSA only).
    Pkcs1,
    /// `BEGIN EC PRIVATE KEY` (EC only).
    Sec1,
}

/// A fresh key pair; `kid` goes into the public JWK.
pub fn generate_key(kind: KeyKind, format: KeyFormat, kid: Option<&str>) -> TestKey {
    let kind = match kind {
        KeyKind::Rsa => "rsa",
        KeyKind::Ec => "ec",
    };
    let format = match format {
        KeyFormat::Pkcs8 => "pkcs8",
        KeyFormat::Pkcs1 => "pkcs1",
        KeyFormat::Sec1 => "sec1",
    };
    let out = Command::new("node")
        .arg("keygen.mjs")
        .args([kind, format])
        .args(kid)
        .current_dir(node_dir())
        .stdin(Stdio::null())
        .output()
        .expect("run node keygen.mjs");
    assert!(
        out.status.success(),
        "keygen.mjs {kind} {format}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    TestKey {
        private_pem: v["private_pem"].as_str().unwrap().to_string(),
        public_jwk: v["public_jwk"].clone(),
    }
}

/// A PKCE pair (RFC 7636): `(code_verifier, S256 code_challenge)`.
pub fn pkce_pair() -> (String, String) {
    let verifier = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    (verifier, challenge)
}

/// A throwaway CA, a server certificate for 127.0.0.1 and client
/// certificates, made with the `openssl` command (for `tls_client_auth`).
pub struct TestPki {
    dir: tempfile::TempDir,
    pub ca_pem: String,
}

impl TestPki {
    pub fn new() -> TestPki {
        let dir = tempfile::tempdir().unwrap();
        openssl(
            dir.path(),
            "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
             -keyout ca.key -out ca.pem -subj /CN=authproxy-test-ca \
             -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign",
        );
        let ca_pem = std::fs::read_to_string(dir.path().join("ca.pem")).unwrap();
        TestPki { dir, ca_pem }
    }

    /// `(cert_pem, key_pem)` signed by the CA, with subject `/CN=<cn>` and
    /// the given extensions (OpenSSL `-addext` syntax, no spaces).
    pub fn issue(&self, cn: &str, exts: &[&str]) -> (String, String) {
        let name = format!("leaf-{}", rand::random::<u32>());
        let exts: String = exts.iter().map(|e| format!(" -addext {e}")).collect();
        openssl(
            self.dir.path(),
            &format!(
                "req -x509 -CA ca.pem -CAkey ca.key -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
                 -nodes -days 2 -keyout {name}.key -out {name}.pem -subj /CN={cn} \
                 -addext basicConstraints=critical,CA:FALSE{exts}"
            ),
        );
        let read =
            |ext: &str| std::fs::read_to_string(self.dir.path().join(format!("{name}.{ext}")));
        (read("pem").unwrap(), read("key").unwrap())
    }

    /// A server certificate for `127.0.0.1`, as [`OidcConfig::tls`] wants it.
    pub fn server_tls(&self) -> TlsConfig {
        let (cert, key) = self.issue(
            "127.0.0.1",
            &["subjectAltName=IP:127.0.0.1", "extendedKeyUsage=serverAuth"],
        );
        TlsConfig {
            cert,
            key,
            client_ca: self.ca_pem.clone(),
        }
    }

    /// An RSA 2048 private key (PKCS#8 PEM) and its public JWK (`n`, `e`,
    /// `kid`), both from `openssl` (for tests that must not need node).
    pub fn rsa_key(&self, kid: &str) -> (String, Value) {
        let name = format!("rsa-{}", rand::random::<u32>());
        openssl(
            self.dir.path(),
            &format!("genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out {name}.pem"),
        );
        let pem = std::fs::read_to_string(self.dir.path().join(format!("{name}.pem"))).unwrap();
        let out = Command::new("openssl")
            .args(["rsa", "-noout", "-modulus", "-in", &format!("{name}.pem")])
            .current_dir(self.dir.path())
            .output()
            .expect("run openssl");
        let text = String::from_utf8(out.stdout).unwrap();
        let hex = text
            .trim()
            .strip_prefix("Modulus=")
            .expect("openssl -modulus");
        let n: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        // genpkey's default public exponent is 65537.
        let jwk = serde_json::json!({"kty": "RSA", "n": URL_SAFE_NO_PAD.encode(n), "e": "AQAB", "kid": kid});
        (pem, jwk)
    }

    /// A client certificate whose subject DN is `CN=<cn>`.
    pub fn client_cert(&self, cn: &str) -> (String, String) {
        self.issue(cn, &["extendedKeyUsage=clientAuth"])
    }
}

/// Runs `openssl <args>` (split at whitespace) in `dir`.
fn openssl(dir: &Path, args: &str) {
    let args: Vec<&str> = args.split_whitespace().collect();
    let out = Command::new("openssl")
        .args(&args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Plays the user in a browser at the provider: follows its redirects,
/// fills oidc-provider's development login (any name and password work)
/// and consent forms, keeps cookies. Stops at the first redirect that
/// leaves the provider (to the client's `redirect_uri`) without following it.
///
/// One cookie jar for all of 127.0.0.1, as a browser has (cookies do not
/// tell ports apart), so a flow may start at the proxy's login URL and the
/// callback be opened with [`Browser::get`] carrying the proxy's cookies.
pub struct Browser<'a> {
    server: &'a OidcServer,
    cookies: Mutex<BTreeMap<String, String>>,
}

/// Each page of a flow is one step; a flow takes about six.
const MAX_STEPS: usize = 20;

impl<'a> Browser<'a> {
    pub fn new(server: &'a OidcServer) -> Browser<'a> {
        Browser {
            server,
            cookies: Mutex::default(),
        }
    }

    /// Opens `authorize_url`, logs in as `login`, consents; returns the URL
    /// of the redirect back to the client (with `code` and `state`, or an
    /// `error`).
    pub async fn authorize(&self, authorize_url: &str, login: &str) -> url::Url {
        match self.run(authorize_url, login, None).await {
            End::Left(redirect) => redirect,
            End::Page(page) => panic!("the authorization flow ended at the provider:\n{page}"),
        }
    }

    /// The device flow's user: opens the verification page, enters
    /// `user_code`, confirms, logs in as `login`, consents; returns the last
    /// page (oidc-provider's "Sign-in Success").
    pub async fn device(&self, user_code: &str, login: &str) -> String {
        match self
            .run(&self.server.url("/device"), login, Some(user_code))
            .await
        {
            End::Left(redirect) => panic!("the device flow left the provider: {redirect}"),
            End::Page(page) => page,
        }
    }

    /// One request with the browser's cookies; redirects are not followed.
    pub async fn get(&self, url: &str) -> reqwest::Response {
        self.send(self.server.http().get(url)).await
    }

    async fn run(&self, start: &str, login: &str, user_code: Option<&str>) -> End {
        let origin = url::Url::parse(self.server.issuer()).unwrap().origin();
        let mut url = url::Url::parse(start).unwrap();
        let mut form: Option<Vec<(String, String)>> = None;
        for _ in 0..MAX_STEPS {
            let http = self.server.http();
            let req = match form.take() {
                Some(fields) => http.post(url.clone()).form(&fields),
                None => http.get(url.clone()),
            };
            let resp = self.send(req).await;
            let status = resp.status();
            if status.is_redirection() {
                let location = resp.headers()[reqwest::header::LOCATION].to_str().unwrap();
                let target = url.join(location).unwrap();
                if target.origin() != origin {
                    return End::Left(target);
                }
                url = target;
                continue;
            }
            let page = resp.text().await.unwrap();
            assert!(status.is_success(), "{status} from {url}:\n{page}");
            let Some((action, mut fields)) = parse_form(&page) else {
                return End::Page(page);
            };
            let has =
                |fields: &[(String, String)], name: &str| fields.iter().any(|(n, _)| n == name);
            if has(&fields, "login") {
                set(&mut fields, "login", login);
                set(&mut fields, "password", "any password works");
            }
            if let Some(code) = user_code {
                if has(&fields, "user_code") && !has(&fields, "confirm") {
                    set(&mut fields, "user_code", code);
                }
            }
            url = url.join(&action).unwrap();
            form = Some(fields);
        }
        panic!("the flow did not end after {MAX_STEPS} pages (last: {url})");
    }

    /// Sends with the cookies the provider set so far and keeps new ones.
    async fn send(&self, req: reqwest::RequestBuilder) -> reqwest::Response {
        let cookie = {
            let jar = self.cookies.lock().unwrap();
            jar.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let req = if cookie.is_empty() {
            req
        } else {
            req.header(reqwest::header::COOKIE, cookie)
        };
        let resp = req.send().await.unwrap();
        let mut jar = self.cookies.lock().unwrap();
        for set_cookie in resp.headers().get_all(reqwest::header::SET_COOKIE) {
            let set_cookie = set_cookie.to_str().unwrap();
            let pair = set_cookie.split(';').next().unwrap_or_default();
            let Some((name, value)) = pair.split_once('=') else {
                continue;
            };
            // oidc-provider clears a cookie with an empty value dated 1970.
            if value.is_empty() || set_cookie.contains("1970") {
                jar.remove(name.trim());
            } else {
                jar.insert(name.trim().to_string(), value.to_string());
            }
        }
        resp
    }
}

enum End {
    /// A redirect that leaves the provider (not followed).
    Left(url::Url),
    /// A page without a form.
    Page(String),
}

fn set(fields: &mut Vec<(String, String)>, name: &str, value: &str) {
    fields.retain(|(n, _)| n != name);
    fields.push((name.to_string(), value.to_string()));
}

/// The first form of `page`: its `action` and every named `<input>` in it
/// with its value (empty when it has none). Enough for oidc-provider's
/// pages, which are plain server-rendered HTML.
fn parse_form(page: &str) -> Option<(String, Vec<(String, String)>)> {
    let start = page.find("<form")?;
    let end = page[start..]
        .find("</form>")
        .map_or(page.len(), |e| start + e);
    let form = &page[start..end];
    let action = attr(tag_at(form, 0), "action")?;
    let mut fields = Vec::new();
    let mut rest = form;
    while let Some(pos) = rest.find("<input") {
        let tag = tag_at(rest, pos);
        if let Some(name) = attr(tag, "name") {
            fields.push((name, attr(tag, "value").unwrap_or_default()));
        }
        rest = &rest[pos + tag.len()..];
    }
    Some((action, fields))
}

/// The tag starting at `pos`, up to its `>` (attribute values are
/// HTML-escaped, so they hold no `>`).
fn tag_at(html: &str, pos: usize) -> &str {
    let end = html[pos..].find('>').map_or(html.len(), |e| pos + e + 1);
    &html[pos..end]
}

/// `name="value"` in a tag (the name preceded by whitespace), unescaped.
fn attr(tag: &str, name: &str) -> Option<String> {
    let needle = format!("{name}=\"");
    let mut from = 0;
    while let Some(i) = tag[from..].find(&needle).map(|i| from + i) {
        if tag[..i].ends_with(char::is_whitespace) {
            let value = &tag[i + needle.len()..];
            let value = &value[..value.find('"')?];
            return Some(
                value
                    .replace("&lt;", "<")
                    .replace("&gt;", ">")
                    .replace("&quot;", "\"")
                    .replace("&#39;", "'")
                    .replace("&#x27;", "'")
                    .replace("&amp;", "&"),
            );
        }
        from = i + needle.len();
    }
    None
}
