//! `authproxy ca`: the forward-proxy CA's path and certificate (PEM), for
//! clients to trust. Made now if it does not exist yet, as the first
//! start would make it.

use std::path::Path;
use std::process::ExitCode;

use super::{load, say};
use crate::app::EXIT_CONFIG;
use crate::ca::LocalCa;
use crate::telemetry::LogFormat;

pub(super) fn ca(path: &Path, format: LogFormat) -> ExitCode {
    let config = match load(path, format) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if !config.forward_proxy.enabled {
        eprintln!(
            "authproxy: forward_proxy is not enabled; set [forward_proxy] enabled = true to have a CA"
        );
        return ExitCode::from(EXIT_CONFIG);
    }
    match LocalCa::load_or_create(&config.forward_proxy) {
        Ok(ca) => {
            // The path on stderr, so that `authproxy ca > ca.pem` writes a
            // clean PEM file.
            eprintln!("{}", ca.cert_path().display());
            say!("{}", ca.cert_pem().trim_end());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("authproxy: {e}");
            ExitCode::FAILURE
        }
    }
}
