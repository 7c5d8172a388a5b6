//! `${NAME}` (environment variable) and `${file:PATH}` (file content, trailing
//! newline trimmed) in any string of the config.

use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use zeroize::Zeroizing;

use super::error::KeyError;
use super::sources::{self, Kind, SourceFile};

/// The most a `${file:…}` may hold. Secrets, keys and PEM bundles are far
/// smaller; a larger file is a mistake (a log, a disk image) and must not
/// be read into memory.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Where interpolated values come from; a trait so tests and reloads can use
/// a fixed environment.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

/// Why a `${...}` could not be resolved. The message never contains the
/// value, only the reference.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InterpolateError {
    #[error("environment variable `{0}` is not set (export it, or write the value in the file)")]
    MissingVar(String),
    #[error("cannot read file `{path}` named by `${{file:...}}`: {reason}")]
    File { path: String, reason: String },
    #[error("has an unclosed `${{` (write `$${{` for a literal `${{`)")]
    Unclosed,
    #[error("has an empty `${{}}` reference")]
    Empty,
}

/// Expands every reference in `input`. Each substituted value is pushed to
/// `substituted` so that later error messages can be scrubbed of them.
/// `$${` stands for a literal `${`.
pub fn interpolate(
    input: &str,
    env: &dyn Env,
    base_dir: &Path,
    substituted: &mut Vec<String>,
) -> Result<String, InterpolateError> {
    interpolate_tracked(input, env, base_dir, substituted, &mut Vec::new())
}

/// As [`interpolate`], also listing every `${file:…}` it read (or tried
/// to) in `files`, for the config watch.
fn interpolate_tracked(
    input: &str,
    env: &dyn Env,
    base_dir: &Path,
    substituted: &mut Vec<String>,
    files: &mut Vec<SourceFile>,
) -> Result<String, InterpolateError> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos..];
        if let Some(tail) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(body) = after.strip_prefix("${") {
            let end = body.find('}').ok_or(InterpolateError::Unclosed)?;
            let reference = body[..end].trim();
            let value = resolve(reference, env, base_dir, files)?;
            if !value.is_empty() {
                substituted.push(value.clone());
            }
            out.push_str(&value);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

fn resolve(
    reference: &str,
    env: &dyn Env,
    base_dir: &Path,
    files: &mut Vec<SourceFile>,
) -> Result<String, InterpolateError> {
    if reference.is_empty() {
        return Err(InterpolateError::Empty);
    }
    if let Some(path) = reference.strip_prefix("file:") {
        let full = base_dir.join(path.trim());
        let read = read_bounded(&full);
        sources::add(
            files,
            SourceFile::new(
                Kind::FileRef,
                &full,
                read.as_deref().ok().map(|c| c.as_str()),
            ),
        );
        let content = read.map_err(|reason| InterpolateError::File {
            path: full.display().to_string(),
            reason,
        })?;
        let trimmed = content
            .strip_suffix("\r\n")
            .or_else(|| content.strip_suffix('\n'))
            .unwrap_or(&content);
        return Ok(trimmed.to_string());
    }
    env.var(reference)
        .ok_or_else(|| InterpolateError::MissingVar(reference.to_string()))
}

/// A regular file's content, at most [`MAX_FILE_BYTES`]. Opened without
/// blocking, so a FIFO without a writer does not hang the start; a FIFO or
/// a device (`/dev/zero` never ends) is refused before anything is read.
pub(crate) fn read_bounded(path: &Path) -> Result<Zeroizing<String>, String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(|e| e.kind().to_string())?;
    let meta = file.metadata().map_err(|e| e.kind().to_string())?;
    if !meta.is_file() {
        return Err("not a regular file (a device, FIFO or socket); point it at a file".into());
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(meta.len().min(MAX_FILE_BYTES) as usize));
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.kind().to_string())?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!(
            "larger than 1 MiB ({MAX_FILE_BYTES} bytes), the most a ${{file:...}} may hold"
        ));
    }
    match std::str::from_utf8(&bytes) {
        Ok(text) => Ok(Zeroizing::new(text.to_string())),
        Err(_) => Err("not UTF-8 text".into()),
    }
}

fn join_key(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// What [`interpolate_table`] collects besides the expanded table.
#[derive(Default)]
pub struct Expansion {
    /// Every value substituted, so error messages can be scrubbed of them.
    pub substituted: Vec<String>,
    /// Every `${file:…}` read (or tried).
    pub files: Vec<SourceFile>,
    pub errors: Vec<KeyError>,
}

/// Expands `${...}` in every string of `table` (keys named by their dotted
/// path in errors).
pub fn interpolate_table(
    table: &mut toml::Table,
    parent: &str,
    env: &dyn Env,
    base_dir: &Path,
    out: &mut Expansion,
) {
    for (key, value) in table.iter_mut() {
        let path = join_key(parent, key);
        interpolate_value(value, &path, env, base_dir, out);
    }
}

fn interpolate_value(
    value: &mut toml::Value,
    path: &str,
    env: &dyn Env,
    base_dir: &Path,
    out: &mut Expansion,
) {
    match value {
        toml::Value::String(s) => {
            match interpolate_tracked(s, env, base_dir, &mut out.substituted, &mut out.files) {
                Ok(expanded) => *s = expanded,
                Err(e) => out.errors.push(KeyError {
                    key: path.to_string(),
                    message: e.to_string(),
                }),
            }
        }
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let p = format!("{path}[{i}]");
                interpolate_value(item, &p, env, base_dir, out);
            }
        }
        toml::Value::Table(t) => interpolate_table(t, path, env, base_dir, out),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct MapEnv(HashMap<&'static str, &'static str>);
    impl Env for MapEnv {
        fn var(&self, name: &str) -> Option<String> {
            self.0.get(name).map(|s| s.to_string())
        }
    }

    fn env() -> MapEnv {
        MapEnv(HashMap::from([("A", "alpha"), ("B", "beta")]))
    }

    #[test]
    fn expands_vars() {
        let mut subs = vec![];
        let out = interpolate("Token ${A}-${ B }", &env(), Path::new("."), &mut subs).unwrap();
        assert_eq!(out, "Token alpha-beta");
        assert_eq!(subs, vec!["alpha", "beta"]);
    }

    #[test]
    fn literal_dollar_and_escape() {
        let mut subs = vec![];
        assert_eq!(
            interpolate("cost $5 $${A}", &env(), Path::new("."), &mut subs).unwrap(),
            "cost $5 ${A}"
        );
    }

    #[test]
    fn missing_and_unclosed() {
        let mut subs = vec![];
        assert_eq!(
            interpolate("${NOPE}", &env(), Path::new("."), &mut subs),
            Err(InterpolateError::MissingVar("NOPE".into()))
        );
        assert_eq!(
            interpolate("${A", &env(), Path::new("."), &mut subs),
            Err(InterpolateError::Unclosed)
        );
    }

    #[test]
    fn file_reference_trims_newline() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tok"), "s3cret\n").unwrap();
        let mut subs = vec![];
        let out = interpolate("${file:tok}", &env(), dir.path(), &mut subs).unwrap();
        assert_eq!(out, "s3cret");
        let err = interpolate("${file:missing}", &env(), dir.path(), &mut subs).unwrap_err();
        assert!(err.to_string().contains("missing"));
    }

    #[test]
    fn file_reference_is_bounded_and_regular() {
        let dir = tempfile::tempdir().unwrap();
        let exact = dir.path().join("exact");
        std::fs::write(&exact, "x".repeat(MAX_FILE_BYTES as usize)).unwrap();
        let mut subs = vec![];
        let out = interpolate("${file:exact}", &env(), dir.path(), &mut subs).unwrap();
        assert_eq!(out.len() as u64, MAX_FILE_BYTES);
        // One byte more (a sparse file: nothing written to disk).
        let big = std::fs::File::create(dir.path().join("big")).unwrap();
        big.set_len(MAX_FILE_BYTES + 1).unwrap();
        let err = interpolate("${file:big}", &env(), dir.path(), &mut subs).unwrap_err();
        assert!(err.to_string().contains("larger than 1 MiB"), "{err}");
        assert!(err.to_string().contains("big"), "{err}");
        // Devices: refused before reading (this one would never end).
        let err = interpolate("${file:/dev/zero}", &env(), dir.path(), &mut subs).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        // A FIFO with no writer: opening it must not block.
        let fifo = dir.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let err = interpolate("${file:fifo}", &env(), dir.path(), &mut subs).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }
}
