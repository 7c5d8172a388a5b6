//! `authproxy health`: exit 0 if the proxy answers its health endpoint
//! (for container health checks); with `--ready`, its ready endpoint
//! (every provider can inject now: no login pending, no failed renewal).

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use super::say;
use crate::config::Config;
use crate::telemetry::{report_error, LogFormat};

pub(super) async fn health(
    url: Option<String>,
    ready: bool,
    config_path: &Path,
    format: LogFormat,
) -> ExitCode {
    let config = Config::load(config_path).ok();
    let endpoint = if ready { "ready" } else { "health" };
    let url = url.unwrap_or_else(|| {
        let port = config.as_ref().map_or(8080, |c| c.server.listen.port());
        format!("http://127.0.0.1:{port}/_authproxy/{endpoint}")
    });
    // Only `health` is open without the inbound token.
    let token = config
        .as_ref()
        .and_then(|c| c.server.inbound_token.as_ref())
        .filter(|_| ready);
    // The proxy's own endpoint: never through a proxy of the environment.
    let client = match reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(3))
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            report_error(format, &format!("health: {e}"), None);
            return ExitCode::FAILURE;
        }
    };
    let mut request = client.get(&url);
    if let Some(token) = token {
        request = request.header(
            reqwest::header::PROXY_AUTHORIZATION,
            format!("Bearer {}", token.expose()),
        );
    }
    match request.send().await {
        Ok(r) if r.status().is_success() => {
            say!("ok: {url}");
            ExitCode::SUCCESS
        }
        Ok(r) => {
            report_error(
                format,
                &format!("unhealthy: {url} answered {}", r.status()),
                None,
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            report_error(format, &format!("unhealthy: {url}: {e}"), None);
            ExitCode::FAILURE
        }
    }
}
