//! What the client commands (`authproxy health`, `authproxy reload`) need
//! of a config: where the running proxy listens, and its inbound token.
//!
//! Only `server.listen` and `server.inbound_token` are read and expanded,
//! not the rest: a liveness probe must keep passing while the file on disk
//! holds a bad edit that the running proxy refused (it still serves the
//! previous config), and an operator's shell need not have every secret
//! of the service's environment.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use super::check::{parse_listen, DEFAULT_LISTEN};
use super::error::{ConfigError, KeyError, Scrubber};
use super::interpolate::{interpolate_table, Expansion, ProcessEnv};
use crate::secret::Secret;

/// Where the proxy of a config file listens, and how to be let in.
#[derive(Debug)]
pub struct ClientSettings {
    /// `server.listen` as configured.
    pub listen: SocketAddr,
    /// `server.inbound_token`, if set.
    pub inbound_token: Option<Secret>,
}

impl ClientSettings {
    /// Reads `server.listen` and `server.inbound_token` of the config at
    /// `path`. Errors name the file and the key like a full load's do.
    pub fn load(path: &Path) -> Result<ClientSettings, ConfigError> {
        let text = super::read_config(path).map_err(|e| ConfigError::Read {
            file: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Syntax {
            file: path.to_path_buf(),
            message: e.message().to_string() + &super::span_hint(&text, e.span()),
        })?;
        let mut server = toml::Table::new();
        if let Some(toml::Value::Table(t)) = table.get("server") {
            for key in ["listen", "inbound_token"] {
                if let Some(v) = t.get(key) {
                    server.insert(key.into(), v.clone());
                }
            }
        }
        let base_dir = path.parent().unwrap_or(Path::new("."));
        let mut expansion = Expansion::default();
        interpolate_table(&mut server, "server", &ProcessEnv, base_dir, &mut expansion);
        let scrub = Scrubber::new(expansion.substituted);
        let mut errors = expansion.errors;
        let text_of = |key: &str, errors: &mut Vec<KeyError>| match server.get(key) {
            None => None,
            Some(toml::Value::String(s)) => Some(s.clone()),
            Some(_) => {
                errors.push(KeyError {
                    key: format!("server.{key}"),
                    message: "must be a string".into(),
                });
                None
            }
        };
        let listen = match text_of("listen", &mut errors) {
            None => DEFAULT_LISTEN,
            Some(text) => parse_listen(&text).unwrap_or_else(|| {
                errors.push(KeyError {
                    key: "server.listen".into(),
                    message: format!(
                        "`{text}` is not an address; write it like \"127.0.0.1:8080\""
                    ),
                });
                DEFAULT_LISTEN
            }),
        };
        let inbound_token = text_of("inbound_token", &mut errors).map(Secret::new);
        if !errors.is_empty() {
            return Err(ConfigError::Keys {
                file: path.to_path_buf(),
                errors: scrub.errors(errors),
            });
        }
        Ok(ClientSettings {
            listen,
            inbound_token,
        })
    }

    /// The address a client on this host connects to: the listen address,
    /// with a wildcard (`0.0.0.0`, `[::]`) replaced by loopback.
    pub fn connect_addr(&self) -> SocketAddr {
        let ip = match self.listen.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        SocketAddr::new(ip, self.listen.port())
    }

    /// `http://<connect_addr>` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.connect_addr())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<ClientSettings, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("authproxy.toml");
        std::fs::write(&path, text).unwrap();
        ClientSettings::load(&path)
    }

    #[test]
    fn reads_listen_and_token_and_nothing_else() {
        // The rest of the config is not looked at: a secret it needs may be
        // missing, a key may be unknown.
        let s = load(
            "[server]\nlisten = \"0.0.0.0:9123\"\ninbound_token = \"0123456789abcdef0123\"\nbogus = 1\n\
             [providers.x]\ntype = \"static\"\nheaders = { A = \"${NOT_SET_ANYWHERE_4711}\" }\n",
        )
        .unwrap();
        assert_eq!(s.listen, "0.0.0.0:9123".parse().unwrap());
        assert_eq!(s.connect_addr(), "127.0.0.1:9123".parse().unwrap());
        assert_eq!(s.inbound_token.unwrap().expose(), "0123456789abcdef0123");
        let s = load("[server]\nlisten = \"[::]:81\"\n").unwrap();
        assert_eq!(s.url("/x"), "http://[::1]:81/x");
        let s = load("").unwrap();
        assert_eq!(s.url(""), "http://127.0.0.1:8080");
    }

    #[test]
    fn errors_name_the_key_and_hide_the_value() {
        let e = load("[server]\nlisten = \"nope\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("server.listen"), "{e}");
        let e = load("[server]\ninbound_token = \"${NOT_SET_ANYWHERE_4711}\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("server.inbound_token"), "{e}");
        assert!(e.contains("NOT_SET_ANYWHERE_4711"), "{e}");
        let e = load("[server\n").unwrap_err().to_string();
        assert!(e.contains("not valid TOML"), "{e}");
    }
}
