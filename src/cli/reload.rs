//! `authproxy reload`: asks the running proxy to reload its config
//! (`POST /_authproxy/reload`, what SIGHUP does) and prints the outcome:
//! unlike a signal, the answer says whether the new config was applied.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use super::local::{self, describe};
use super::say;
use crate::app::EXIT_CONFIG;

pub(super) async fn reload(config_path: &Path) -> ExitCode {
    let Some(settings) = local::settings(config_path, "reload") else {
        return ExitCode::from(EXIT_CONFIG);
    };
    let url = settings.url("/_authproxy/reload");
    // Building the new runtime may scan the system's certificate store.
    let client = match local::client(Duration::from_secs(60)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("authproxy reload: {e}");
            return ExitCode::FAILURE;
        }
    };
    let request = local::with_token(client.post(&url), Some(&settings));
    let answer = match request.send().await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("authproxy reload: {}", describe(&e, &url));
            return ExitCode::FAILURE;
        }
    };
    let status = answer.status();
    let body: serde_json::Value = answer.json().await.unwrap_or_default();
    let strings = |key: &str| -> Vec<String> {
        body[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|w| w.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    };
    if status.is_success() {
        say!("reloaded: {}", config_path.display());
        for warning in strings("warnings") {
            say!("warning: {warning}");
        }
        return ExitCode::SUCCESS;
    }
    if body["error"] == "reload_refused" {
        eprintln!("authproxy reload: refused; the running config is kept:");
        for e in body["errors"].as_array().into_iter().flatten() {
            match (e["key"].as_str(), e["message"].as_str()) {
                (Some(key), Some(message)) => eprintln!("  {key}: {message}"),
                (None, Some(message)) => eprintln!("  {message}"),
                _ => {}
            }
        }
    } else {
        eprintln!(
            "authproxy reload: {url} answered {status}{}",
            body["message"]
                .as_str()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        );
    }
    ExitCode::FAILURE
}
