//! Why a config could not be loaded, and the scrubbing that keeps
//! substituted secrets out of those messages.

use std::fmt;
use std::path::PathBuf;

/// One problem with the config, tied to the key it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    /// Dotted key path, e.g. `providers.rips.token_url` or `routes[2].prefix`.
    pub key: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// Why a config could not be loaded. Messages never contain secret values:
/// everything substituted from `${...}` is scrubbed from them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    Read {
        file: PathBuf,
        reason: String,
    },
    Syntax {
        file: PathBuf,
        message: String,
    },
    Keys {
        file: PathBuf,
        errors: Vec<KeyError>,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { file, reason } => write!(
                f,
                "cannot read config file {}: {reason} (pass --config PATH or set AUTHPROXY_CONFIG)",
                file.display()
            ),
            ConfigError::Syntax { file, message } => {
                write!(
                    f,
                    "config file {} is not valid TOML: {message}",
                    file.display()
                )
            }
            ConfigError::Keys { file, errors } => {
                write!(
                    f,
                    "config file {} has {} error(s):",
                    file.display(),
                    errors.len()
                )?;
                for e in errors {
                    write!(f, "\n  {}: {}", e.key, e.message)?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// Replaces values that came from `${...}` in error messages, so a wrong
/// type on a secret key cannot echo the secret.
pub(super) struct Scrubber(Vec<String>);

impl Scrubber {
    pub(super) fn new(mut values: Vec<String>) -> Self {
        // Longest first, so a value that contains another is replaced whole.
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.retain(|v| v.len() >= 3);
        Scrubber(values)
    }

    fn text(&self, s: &str) -> String {
        let mut out = s.to_string();
        for v in &self.0 {
            out = out.replace(v.as_str(), "[redacted]");
            // serde quotes a wrongly typed value with escapes (`\"`, `\\`,
            // `\n`): scrub that spelling too (found by fuzzing).
            let escaped = format!("{v:?}");
            let escaped = &escaped[1..escaped.len() - 1];
            if escaped != v {
                out = out.replace(escaped, "[redacted]");
            }
        }
        out
    }

    pub(super) fn errors(&self, errors: Vec<KeyError>) -> Vec<KeyError> {
        errors
            .into_iter()
            .map(|e| KeyError {
                key: e.key,
                message: self.text(&e.message),
            })
            .collect()
    }
}
