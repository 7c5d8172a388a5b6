//! `authproxy demo`: mock APIs of every provider style in the spec
//! ([`mocks`], the same mocks the tests and benchmarks use), on loopback,
//! with the proxy in front and curl lines to try. No accounts, no internet.

pub mod mocks;

use std::net::SocketAddr;
use std::process::ExitCode;

use axum::routing::post;
use axum::Router;

use crate::app::signals::shutdown_signal;
use crate::app::{AppState, EXIT_CONFIG};
use crate::config::interpolate::ProcessEnv;
use crate::config::Config;
use crate::telemetry::{self, LogFormat};
use mocks::device::{DeviceMock, DEVICE_CLIENT_ID};
use mocks::{statics, MockProvider, Style};

pub const RICLOUD_TOKEN: &str = "demo-ricloud-token";
pub const RIPS_EMAIL: &str = "demo@example.test";
pub const RIPS_PASSWORD: &str = "demo-password";
pub const CLIENT_ID: &str = "demo-client";
pub const READYCLOUD_APP: &str = "demo-app";
pub const ONECLOUD_SEED: &str = "demo-onecloud-seed";
/// The token the guide tells you to paste for ReadyCloud.
pub const READYCLOUD_PASTED: &str = "ready-pasted";
/// Lifetimes short enough to watch renewals happen.
pub const RIPS_TOKEN_SECONDS: u64 = 20;
pub const ONECLOUD_TOKEN_SECONDS: u64 = 30;
/// The demo's device-code user approves this long after a flow starts.
pub const DEVICE_APPROVAL_SECONDS: u64 = 5;

/// The demo's mock APIs on one router, for a server on `addr`: ricloud
/// (`/ricloud/`), RIPS plain auth (`/rips-plain/`), RIPS (`/rips/`),
/// OneCloud (`/onecloud/`), ReadyCloud (`/readycloud/`), and `/admin/rips/`
/// to make the RIPS API answer `X-API-Expired` or `X-API-Revoked`.
pub fn mock_apis(addr: SocketAddr) -> Router {
    let rips = MockProvider::new(Style::Rips, addr, "/rips");
    let onecloud = MockProvider::new(Style::OneCloud, addr, "/onecloud");
    let readycloud = MockProvider::new(Style::Implicit, addr, "/readycloud");
    for (mock, ttl) in [
        (&rips, RIPS_TOKEN_SECONDS),
        (&onecloud, ONECLOUD_TOKEN_SECONDS),
        (&readycloud, 3600),
    ] {
        mock.set(|s| {
            s.client_id = CLIENT_ID.into();
            s.username = RIPS_EMAIL.into();
            s.password = RIPS_PASSWORD.into();
            s.ttl = ttl;
            // The client sees what the API saw, not the credential itself.
            s.echo_headers = false;
        });
    }
    readycloud.set(|s| s.client_id = READYCLOUD_APP.into());
    onecloud.issue_seed(ONECLOUD_SEED);
    readycloud.issue_access(READYCLOUD_PASTED);
    let (expire, revoke) = (rips.clone(), rips.clone());
    Router::new()
        .nest("/ricloud", statics::static_token_api(RICLOUD_TOKEN))
        .nest(
            "/rips-plain",
            statics::header_pair_api(RIPS_EMAIL, RIPS_PASSWORD),
        )
        .nest("/rips", rips.router())
        .nest("/onecloud", onecloud.router())
        .nest("/readycloud", readycloud.router())
        .route(
            "/admin/rips/expire",
            post(move || async move {
                expire.expire_all();
                axum::Json(serde_json::json!({"rips": "all access tokens expired"}))
            }),
        )
        .route(
            "/admin/rips/revoke",
            post(move || async move {
                revoke.revoke_all();
                axum::Json(serde_json::json!({"rips": "all access and refresh tokens revoked"}))
            }),
        )
}

/// The proxy config for the demo, pointing at the mocks on `mock_base` and
/// the device authorization server on `device_base`. `ca_dir`: where
/// forward-proxy mode's CA is made (a folder that lives as long as the
/// demo).
pub fn proxy_config(listen: &str, mock_base: &str, device_base: &str, ca_dir: &str) -> String {
    format!(
        r#"
[server]
listen = "{listen}"

[store]
kind = "memory"

[forward_proxy]
enabled = true
ca_cert = '{ca_dir}/ca.pem'
ca_key = '{ca_dir}/ca.key'

[providers.ricloud]
type = "static"
headers = {{ Authorization = "Token {RICLOUD_TOKEN}" }}

[providers.rips_plain]
type = "static"
headers = {{ "X-API-Email" = "{RIPS_EMAIL}", "X-API-Password" = "{RIPS_PASSWORD}" }}

[providers.rips]
type = "oauth2"
grant = "password"
token_url = "{mock_base}/rips/oauth/v2/auth/tokens"
body = "json"
client_id = "{CLIENT_ID}"
username = "{RIPS_EMAIL}"
password = "{RIPS_PASSWORD}"
refresh_before = "5s"

[providers.onecloud]
type = "oauth2"
grant = "refresh_token"
token_url = "{mock_base}/onecloud/api/v1/oauth/token"
body = "json"
client_id = "{CLIENT_ID}"
refresh_token = "{ONECLOUD_SEED}"
refresh_before = "5s"

[providers.readycloud]
type = "oauth2"
grant = "implicit"
authorize_url = "{mock_base}/readycloud/authorize"
client_id = "{READYCLOUD_APP}"
scope = "order.read"

[providers.tv]
type = "oauth2"
grant = "device_code"
device_authorization_url = "{device_base}/device"
token_url = "{device_base}/token"
client_id = "{DEVICE_CLIENT_ID}"
client_auth = "none"
scope = "read"

[[routes]]
prefix = "/tv/"
upstream = "{device_base}/api/"
provider = "tv"

[[routes]]
prefix = "/ricloud/"
upstream = "{mock_base}/ricloud/"
provider = "ricloud"

[[routes]]
prefix = "/rips-plain/"
upstream = "{mock_base}/rips-plain/"
provider = "rips_plain"

[[routes]]
prefix = "/rips/"
upstream = "{mock_base}/rips/api/"
provider = "rips"

[[routes]]
prefix = "/onecloud/"
upstream = "{mock_base}/onecloud/api/"
provider = "onecloud"

[[routes]]
prefix = "/readycloud/"
upstream = "{mock_base}/readycloud/api/"
provider = "readycloud"

[[routes]]
prefix = "/demo-admin/"
upstream = "{mock_base}/admin/"

# forward-proxy mode: https://api.ricloud.test through --proxy
[[routes]]
host = "api.ricloud.test"
upstream = "{mock_base}/ricloud/"
provider = "ricloud"
"#
    )
}

pub async fn run(listen: &str, format: LogFormat) -> ExitCode {
    // Registered before the proxy says it listens (see app::signals).
    let shutdown = shutdown_signal();
    let _log = telemetry::init(format);
    let mock = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => {
            telemetry::report_error(
                format,
                &format!("demo: cannot start the mock APIs: {e}"),
                None,
            );
            return ExitCode::FAILURE;
        }
    };
    let mock_addr = mock.local_addr().expect("bound");
    tokio::spawn(async move {
        let _ = axum::serve(mock, mock_apis(mock_addr)).await;
    });
    // The device flow's "person" approves by themselves a few seconds
    // after each flow starts.
    let device = DeviceMock::start(1).await;
    device.approve_after(std::time::Duration::from_secs(DEVICE_APPROVAL_SECONDS));
    // The forward-proxy CA, made fresh for each demo and gone after it.
    let ca_dir = match tempfile::Builder::new().prefix("authproxy-demo-").tempdir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("authproxy demo: cannot make a folder for the demo CA: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ca_text = ca_dir.path().display().to_string();
    let text = proxy_config(
        listen,
        &format!("http://{mock_addr}"),
        &format!("http://{}", device.addr),
        &ca_text,
    );
    let config = match Config::parse(&text, std::path::Path::new("demo.toml"), &ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            telemetry::report_error(format, &format!("demo: {e}"), None);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let state = match AppState::new(config) {
        Ok(s) => s,
        Err(e) => {
            telemetry::report_error(format, &format!("demo: {e}"), None);
            return ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(state.runtime().config.server.listen).await {
        Ok(l) => l,
        Err(e) => {
            telemetry::report_error(
                format,
                &format!("demo: cannot listen on {listen}: {e} (try --listen 127.0.0.1:8081)"),
                None,
            );
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().expect("bound");
    tracing::info!(address = %addr, mock_apis = %mock_addr, "listening on {addr}");
    print_guide(&addr.to_string(), &format!("{ca_text}/ca.pem"));
    crate::run(state, listener, shutdown).await;
    ExitCode::SUCCESS
}

fn print_guide(addr: &str, ca: &str) {
    let p = format!("http://{addr}");
    let guide = format!(
        r#"
authproxy demo: mock APIs of every provider style on loopback, proxy on {p}
Try these (the proxy adds every credential; the client sends none):

  # static API token (ricloud style): Authorization: Token … is injected
  curl -s {p}/ricloud/devices

  # header pair (RIPS plain auth): X-API-Email + X-API-Password injected
  curl -s {p}/rips-plain/scans

  # OAuth2 password grant, JSON body (RIPS): token obtained on first use.
  # Tokens live {RIPS_TOKEN_SECONDS}s; call again after ~15s and the log shows a proactive renewal.
  curl -s {p}/rips/scans
  # make the API answer 401 + X-API-Expired: one refresh, silent replay
  curl -s -X POST {p}/demo-admin/rips/expire && curl -s {p}/rips/scans
  # make it answer 401 + X-API-Revoked: tokens dropped, password login again, replay
  curl -s -X POST {p}/demo-admin/rips/revoke && curl -s {p}/rips/scans

  # single-use rotating refresh tokens (OneCloud): every renewal rotates the chain
  curl -s {p}/onecloud/devices

  # implicit grant (ReadyCloud): 503 login_required until you log in
  curl -s {p}/readycloud/orders
  #   open {p}/_authproxy/login/readycloud in a browser, or paste a token by hand:
  curl -s -X POST -H 'Content-Type: application/json' -d '{{"access_token":"{READYCLOUD_PASTED}","expires_in":3600}}' {p}/_authproxy/tokens/readycloud
  curl -s {p}/readycloud/orders

  # device code (RFC 8628, headless hosts): the first request starts the flow and
  # gets 503 login_required with the verification URI and user code; here the
  # "person" approves by themselves after {DEVICE_APPROVAL_SECONDS}s, and the proxy's polling picks up the token
  curl -s {p}/tv/shows
  #   or, in another terminal: authproxy login tv --url {p}   (waits, exits 0 once logged in)
  curl -s {p}/_authproxy/status     # providers.tv.device_login
  curl -s {p}/tv/shows

  # forward-proxy mode, for apps with a hard-coded https:// base URL: the
  # proxy terminates TLS for api.ricloud.test with its demo CA and injects the token
  curl -s --proxy {p} --cacert {ca} https://api.ricloud.test/devices

  # what the proxy knows (never a secret), and its metrics
  curl -s {p}/_authproxy/status
  curl -s {p}/_authproxy/metrics

Ctrl-C stops it.
"#
    );
    use std::io::Write as _;
    let _ = std::io::stdout().write_all(guide.as_bytes());
    let _ = std::io::stdout().flush();
}
