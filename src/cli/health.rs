//! `authproxy health [--ready]`: exit 0 if the running proxy answers its
//! health (or readiness) endpoint; for container probes and scripts. The
//! proxy is found at the config's listen address unless `--url` says
//! where.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use super::local::{self, describe};
use super::say;
use crate::app::EXIT_CONFIG;
use crate::telemetry::{report_error, LogFormat};

pub(super) async fn health(
    url: Option<String>,
    ready: bool,
    config_path: &Path,
    config_named: bool,
    format: LogFormat,
) -> ExitCode {
    let endpoint = if ready {
        "/_authproxy/ready"
    } else {
        "/_authproxy/health"
    };
    // The config gives the address, and for readiness the inbound token.
    // With --url it is read only when one was named (and then must load).
    let settings = if url.is_none() || (ready && config_named) {
        match local::settings(config_path, "health") {
            Some(s) => Some(s),
            None => return ExitCode::from(EXIT_CONFIG),
        }
    } else {
        None
    };
    let url = match (url, &settings) {
        (Some(u), _) => with_endpoint(&u, endpoint),
        (None, Some(s)) => s.url(endpoint),
        (None, None) => unreachable!("settings are read when there is no --url"),
    };
    let client = match local::client(Duration::from_secs(3)) {
        Ok(c) => c,
        Err(e) => {
            report_error(format, &format!("health: {e}"), None);
            return ExitCode::FAILURE;
        }
    };
    // Health needs no token (liveness probes have none to give).
    let request = client.get(&url);
    let request = if ready {
        local::with_token(request, settings.as_ref())
    } else {
        request
    };
    match request.send().await {
        Ok(r) if r.status().is_success() => {
            say!("{}: {url}", if ready { "ready" } else { "ok" });
            ExitCode::SUCCESS
        }
        Ok(r) => {
            let status = r.status();
            let body: serde_json::Value = r.json().await.unwrap_or_default();
            match body["providers"].as_object() {
                Some(providers) if ready && status == 503 => {
                    let list: Vec<String> = providers
                        .iter()
                        .map(|(name, state)| format!("{name} ({})", state.as_str().unwrap_or("?")))
                        .collect();
                    report_error(
                        format,
                        &format!(
                            "not ready: {url}: providers that cannot inject a credential now: {}",
                            list.join(", ")
                        ),
                        None,
                    );
                }
                _ => match body["message"].as_str() {
                    Some(m) => report_error(
                        format,
                        &format!("unhealthy: {url} answered {status}: {m}"),
                        None,
                    ),
                    None => {
                        report_error(format, &format!("unhealthy: {url} answered {status}"), None)
                    }
                },
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            report_error(format, &format!("unhealthy: {}", describe(&e, &url)), None);
            ExitCode::FAILURE
        }
    }
}

/// `--url`: a proxy's address (no path) gets the endpoint's path; a URL
/// with a path is asked as it is.
fn with_endpoint(url: &str, endpoint: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) if u.path() == "/" && u.query().is_none() => {
            format!("{}{endpoint}", url.trim_end_matches('/'))
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn url_gets_the_endpoint_only_without_a_path() {
        let f = super::with_endpoint;
        assert_eq!(
            f("http://127.0.0.1:9", "/_authproxy/ready"),
            "http://127.0.0.1:9/_authproxy/ready"
        );
        assert_eq!(
            f("http://127.0.0.1:9/", "/_authproxy/ready"),
            "http://127.0.0.1:9/_authproxy/ready"
        );
        assert_eq!(
            f("http://127.0.0.1:9/_authproxy/health", "/_authproxy/ready"),
            "http://127.0.0.1:9/_authproxy/health"
        );
    }
}
