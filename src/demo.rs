//! `authproxy demo`: mock APIs of every provider style plus the proxy.

use std::process::ExitCode;

use crate::telemetry::LogFormat;

pub async fn run(_listen: &str, _format: LogFormat) -> ExitCode {
    eprintln!("authproxy demo: not built yet");
    ExitCode::FAILURE
}
