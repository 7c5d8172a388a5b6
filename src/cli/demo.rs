//! `authproxy demo`: the mock APIs and the proxy in front ([`crate::demo`]).

use std::process::ExitCode;

use crate::telemetry::LogFormat;

pub(super) async fn demo(listen: &str, format: LogFormat) -> ExitCode {
    crate::demo::run(listen, format).await
}
