//! Configuration: read the TOML, expand `${...}` ([`interpolate`]),
//! deserialize into the raw structs ([`raw`]), then check everything
//! ([`check`]) into a [`Config`] of checked types ([`types`]). Every error
//! names the key path and the fix ([`error`]).

mod check;
pub mod egress;
pub mod error;
pub mod interpolate;
pub mod policy;
pub mod raw;
pub mod types;
pub mod units;

use std::path::Path;

pub use error::{ConfigError, KeyError};
pub use types::*;

use error::Scrubber;
use interpolate::{interpolate_table, Env, ProcessEnv};
use raw::RawConfig;

/// The default config path when neither `--config` nor `$AUTHPROXY_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "config/authproxy.toml";

impl Config {
    /// Reads and checks the config file at `path`, resolving `${NAME}` from
    /// the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            file: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Self::parse(&text, path, &ProcessEnv)
    }

    /// Checks config text as if it were read from `path` (relative paths
    /// resolve against `path`'s folder).
    pub fn parse(text: &str, path: &Path, env: &dyn Env) -> Result<Config, ConfigError> {
        let base_dir = path
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                }
            })
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let file = path.to_path_buf();
        let mut table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            file: file.clone(),
            message: e.message().to_string() + &span_hint(text, e.span()),
        })?;

        let mut substituted = Vec::new();
        let mut errors = Vec::new();
        interpolate_table(
            &mut table,
            "",
            env,
            &base_dir,
            &mut substituted,
            &mut errors,
        );
        let scrub = Scrubber::new(substituted);
        if !errors.is_empty() {
            return Err(ConfigError::Keys {
                file,
                errors: scrub.errors(errors),
            });
        }

        let raw: RawConfig =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let key = e.path().to_string();
                // `message()`, not `to_string()`: toml's Display appends
                // "\nin `table`\n", which splits our one-line
                // "key: problem; fix" messages; the key path is ours already.
                let inner = e.into_inner().message().to_string();
                let message = if inner.starts_with("unknown field") {
                    format!("{inner}; remove it or fix its spelling")
                } else {
                    inner
                };
                ConfigError::Keys {
                    file: file.clone(),
                    errors: scrub.errors(vec![KeyError { key, message }]),
                }
            })?;

        let mut checker = check::Checker::new(&base_dir, env);
        let config = checker.config(raw, file.clone());
        if checker.errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Keys {
                file,
                errors: scrub.errors(checker.errors),
            })
        }
    }

    /// The provider a route uses, if any.
    pub fn provider(&self, name: &str) -> Option<&ProviderConfig> {
        self.providers.get(name)
    }
}

fn span_hint(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            format!(" (line {line})")
        }
        None => String::new(),
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_redis;
