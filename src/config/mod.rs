//! Configuration: read the TOML, expand `${...}` ([`interpolate`]),
//! deserialize into the raw structs ([`raw`]), then check everything
//! ([`check`]) into a [`Config`] of checked types ([`types`]). Every error
//! names the key path and the fix ([`error`]). A load also says which
//! files it read ([`sources`], for the config watch). [`client`] reads
//! just where a running proxy listens; [`schema`] is the JSON Schema of
//! the file.

mod check;
pub mod client;
mod client_tls;
pub mod egress;
pub mod error;
mod forward;
pub mod interpolate;
pub mod policy;
pub mod raw;
pub mod schema;
pub mod sources;
pub mod types;
pub mod units;

use std::path::Path;

pub use error::{ConfigError, KeyError};
pub use schema::json_schema;
pub use sources::SourceFile;
pub use types::*;

use error::Scrubber;
use interpolate::{interpolate_table, Env, Expansion, ProcessEnv};
use raw::RawConfig;
use sources::Kind;

/// The default config path when neither `--config` nor `$AUTHPROXY_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "config/authproxy.toml";

impl Config {
    /// Reads and checks the config file at `path`, resolving `${NAME}` from
    /// the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_tracked(path).0
    }

    /// As [`Config::load`], also returning every file the load read (or
    /// tried to read): the config file and each `${file:…}`, with digests
    /// of what was read. Returned whether or not the config is good, so a
    /// watch also sees the files a rejected config names.
    pub fn load_tracked(path: &Path) -> (Result<Config, ConfigError>, Vec<SourceFile>) {
        let text = read_config(path);
        let mut files = vec![SourceFile::new(
            Kind::Config,
            path,
            text.as_deref().ok().map(|t| t.as_str()),
        )];
        let config = match text {
            Ok(text) => Self::parse_tracked(&text, path, &ProcessEnv, &mut files),
            Err(e) => Err(ConfigError::Read {
                file: path.to_path_buf(),
                reason: e.to_string(),
            }),
        };
        (config, files)
    }

    /// Checks config text as if it were read from `path` (relative paths
    /// resolve against `path`'s folder).
    pub fn parse(text: &str, path: &Path, env: &dyn Env) -> Result<Config, ConfigError> {
        Self::parse_tracked(text, path, env, &mut Vec::new())
    }

    /// As [`Config::parse`], adding the `${file:…}` files it read to `files`.
    fn parse_tracked(
        text: &str,
        path: &Path,
        env: &dyn Env,
        files: &mut Vec<SourceFile>,
    ) -> Result<Config, ConfigError> {
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

        let mut expansion = Expansion::default();
        interpolate_table(&mut table, "", env, &base_dir, &mut expansion);
        let Expansion {
            substituted,
            files: read,
            errors,
        } = expansion;
        for f in read {
            sources::add(files, f);
        }
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

/// The config file's text. Zeroed when dropped: it may hold secrets
/// written in directly.
fn read_config(path: &Path) -> std::io::Result<zeroize::Zeroizing<String>> {
    std::fs::read_to_string(path).map(zeroize::Zeroizing::new)
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
mod tests_forward;
#[cfg(test)]
mod tests_redis;
