//! `authproxy login <provider>`: for an authorization-code (or implicit)
//! provider, prints the login URL (a person opens it; nothing is opened by
//! itself); for a device-code provider, starts the device flow on the
//! running proxy, prints the verification URI and the user code, and
//! waits: exit 0 when logged in, 1 when refused, expired or failed.

use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

use super::{load, say};
use crate::config::{Config, ProviderKind};
use crate::secret::Secret;

/// Between two looks at the proxy's status while a person logs in.
const STATUS_POLL: Duration = Duration::from_secs(1);

pub(super) async fn login(
    provider: &str,
    url: Option<String>,
    config_path: &std::path::Path,
    format: crate::telemetry::LogFormat,
) -> ExitCode {
    // With --url and no config file (`authproxy demo`), the running proxy
    // says which grant the provider has.
    let config = if url.is_some() && !config_path.exists() {
        None
    } else {
        match load(config_path, format) {
            Ok(c) => Some(c),
            Err(code) => return code,
        }
    };
    let base = url.unwrap_or_else(|| config.as_ref().map(base_url).unwrap_or_default());
    let base = base.trim_end_matches('/');
    let inbound_token = config.as_ref().and_then(|c| c.server.inbound_token.clone());
    let grant = match &config {
        Some(config) => match config.providers.get(provider).map(|p| &p.kind) {
            Some(ProviderKind::OAuth2(o)) => o.grant.as_str().to_string(),
            Some(_) => {
                eprintln!("authproxy login: provider {provider} is not an oauth2 provider; there is nothing to log in to");
                return ExitCode::FAILURE;
            }
            None => {
                eprintln!(
                    "authproxy login: no provider named {provider} in {}",
                    config_path.display()
                );
                return ExitCode::FAILURE;
            }
        },
        None => {
            match grant_from_proxy(base, provider).await {
                Some(g) => g,
                None => {
                    eprintln!("authproxy login: the proxy at {base} has no oauth2 provider named {provider}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    match grant.as_str() {
        "authorization_code" | "implicit" => {
            say!("Open this URL in a browser on this machine to log in to {provider}:");
            say!("  {base}/_authproxy/login/{provider}");
            ExitCode::SUCCESS
        }
        "device_code" => device(provider, base, inbound_token.as_ref()).await,
        g => {
            eprintln!(
                "authproxy login: provider {provider} uses grant = \"{g}\", which needs no login"
            );
            ExitCode::FAILURE
        }
    }
}

/// The provider's grant as the running proxy's status shows it.
async fn grant_from_proxy(base: &str, provider: &str) -> Option<String> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .ok()?;
    let status: Value = client
        .get(format!("{base}/_authproxy/status"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    status["providers"][provider]["grant"]
        .as_str()
        .map(str::to_string)
}

/// The proxy's address from `server.listen` (a wildcard address is
/// reached on loopback).
fn base_url(config: &Config) -> String {
    let listen = config.server.listen;
    let host = match listen.ip() {
        ip if ip.is_unspecified() && ip.is_ipv6() => "[::1]".to_string(),
        ip if ip.is_unspecified() => "127.0.0.1".to_string(),
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    format!("http://{host}:{}", listen.port())
}

async fn device(provider: &str, base: &str, inbound_token: Option<&Secret>) -> ExitCode {
    // The proxy's own endpoints: never through a proxy of the environment.
    let client = match reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("authproxy login: {e}");
            return ExitCode::FAILURE;
        }
    };
    let auth = |req: reqwest::RequestBuilder| match inbound_token {
        Some(t) => req.header(
            reqwest::header::PROXY_AUTHORIZATION,
            format!("Bearer {}", t.expose()),
        ),
        None => req,
    };
    let started = auth(client.post(format!("{base}/_authproxy/device/{provider}")))
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body("{}")
        .send()
        .await;
    let started: Value = match started {
        Ok(r) => {
            let ok = r.status().is_success();
            let body = r.json().await.unwrap_or(Value::Null);
            if !ok {
                eprintln!(
                    "authproxy login: the proxy refused: {}",
                    body["message"].as_str().unwrap_or("no reason given")
                );
                return ExitCode::FAILURE;
            }
            body
        }
        Err(e) => {
            eprintln!("authproxy login: cannot reach the proxy at {base}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let text = |k: &str| started[k].as_str().unwrap_or("").to_string();
    say!("To log in to {provider}, open");
    say!("  {}", text("verification_uri"));
    say!("and enter the code");
    say!("  {}", text("user_code"));
    if let Some(complete) = started["verification_uri_complete"].as_str() {
        say!("(or open {complete})");
    }
    let expires_in = started["expires_in"].as_u64().unwrap_or(600);
    say!("Waiting for the login (the code expires in {expires_in} s)…");

    // Bounded: the proxy gives the flow up when the code expires.
    let rounds = (expires_in + 60) / STATUS_POLL.as_secs();
    for _ in 0..rounds {
        tokio::time::sleep(STATUS_POLL).await;
        let Ok(r) = auth(client.get(format!("{base}/_authproxy/status")))
            .send()
            .await
        else {
            continue;
        };
        let Ok(status) = r.json::<Value>().await else {
            continue;
        };
        let flow = &status["providers"][provider]["device_login"];
        match flow["state"].as_str() {
            Some("ok") => {
                say!("Logged in: authproxy holds a token for {provider}.");
                return ExitCode::SUCCESS;
            }
            Some("pending") | None => {}
            Some(outcome) => {
                eprintln!(
                    "authproxy login: not logged in ({outcome}): {}",
                    flow["message"].as_str().unwrap_or("")
                );
                return ExitCode::FAILURE;
            }
        }
    }
    eprintln!("authproxy login: gave up waiting for {provider}");
    ExitCode::FAILURE
}
