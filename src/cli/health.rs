//! `authproxy health`: exit 0 if the proxy answers its health endpoint
//! (for container health checks).

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use super::say;
use crate::config::Config;
use crate::telemetry::{report_error, LogFormat};

pub(super) async fn health(url: Option<String>, config_path: &Path, format: LogFormat) -> ExitCode {
    let url = url.unwrap_or_else(|| {
        let port = Config::load(config_path)
            .map(|c| c.server.listen.port())
            .unwrap_or(8080);
        format!("http://127.0.0.1:{port}/_authproxy/health")
    });
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
    match client.get(&url).send().await {
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
