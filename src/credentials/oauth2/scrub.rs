//! What a token endpoint's text must not show when it reaches an error
//! answer, status or a log line: every secret in the config (this
//! provider's and every other one's, the inbound token) and every token
//! this provider holds or just sent. The protocol layer keeps provider
//! text unshowable ([`crate::text::ProviderText`]); the runtime, which
//! knows these, scrubs it at the one place token errors come out:
//! [`OAuthProvider::grant`](super::OAuthProvider) and the probe.

use std::sync::Arc;

use base64::Engine;

use super::OAuthProvider;
use crate::config::{Config, OAuth2Config, ProviderKind, RedisTarget, StoreConfig};
use crate::secret::Secret;
use crate::text::Scrubber;

impl OAuthProvider {
    /// Tells the provider the secrets of the whole config (see
    /// [`configured_secrets`]); called again on every reload.
    pub fn set_other_secrets(&self, secrets: Arc<Vec<Secret>>) {
        *self.other_secrets.lock().unwrap() = secrets;
    }

    /// Everything provider text must not show, `sent` (the refresh token
    /// the request carried) included.
    pub(super) fn scrubber(&self, sent: Option<&Secret>) -> Scrubber {
        let mut s = config_scrubber(&self.cfg, &self.other_secrets.lock().unwrap());
        if let Some(current) = self.current.load_full() {
            s.add_all(current.access.as_ref().map(|(a, _)| a));
            s.add_all(current.refresh.as_ref());
        }
        s.add_all(sent);
        s
    }
}

/// The provider's own secrets (as configured, and the HTTP Basic
/// credential made of them) and `others`.
pub(super) fn config_scrubber(cfg: &OAuth2Config, others: &[Secret]) -> Scrubber {
    let mut s = Scrubber::new();
    s.add_all(
        [
            &cfg.client_secret,
            &cfg.password,
            &cfg.seed_refresh_token,
            &cfg.seed_access_token,
        ]
        .into_iter()
        .flatten(),
    );
    s.add_all(cfg.extra.iter().map(|(_, v)| v));
    if let Some(secret) = &cfg.client_secret {
        // What went out in `Authorization: Basic` (RFC 6749 §2.3.1).
        let enc = |s: Option<&Secret>| {
            url::form_urlencoded::byte_serialize(s.map(Secret::expose).unwrap_or("").as_bytes())
                .collect::<String>()
        };
        let pair = format!("{}:{}", enc(cfg.client_id.as_ref()), enc(Some(secret)));
        s.add(&Secret::new(
            base64::engine::general_purpose::STANDARD.encode(pair),
        ));
    }
    s.add_all(others);
    s
}

/// Every secret of `config`: the inbound token, static header values (and
/// the credential after the scheme), every OAuth2 provider's client
/// secret, password, seeds and extra fields, the Redis password, the
/// egress proxy's password.
pub fn configured_secrets(config: &Config) -> Vec<Secret> {
    let mut out: Vec<Secret> = config.server.inbound_token.iter().cloned().collect();
    for provider in config.providers.values() {
        match &provider.kind {
            ProviderKind::Static(s) => {
                for (_, value) in &s.headers {
                    out.push(value.clone());
                    if let Some((_, credential)) = value.expose().rsplit_once(' ') {
                        out.push(Secret::new(credential));
                    }
                }
            }
            ProviderKind::Basic(b) => {
                use base64::Engine;
                out.push(b.password.clone());
                let plain = format!("{}:{}", b.username.expose(), b.password.expose());
                out.push(Secret::new(
                    base64::engine::general_purpose::STANDARD.encode(plain.as_bytes()),
                ));
                out.push(Secret::new(plain));
            }
            ProviderKind::Query(q) => out.extend(q.params.iter().map(|(_, v)| v.clone())),
            ProviderKind::AwsSigV4(a) => {
                out.push(a.secret_access_key.clone());
                out.extend(a.session_token.iter().cloned());
            }
            ProviderKind::OAuth2(o) => {
                out.extend(
                    [
                        &o.client_secret,
                        &o.password,
                        &o.seed_refresh_token,
                        &o.seed_access_token,
                    ]
                    .into_iter()
                    .flatten()
                    .cloned(),
                );
                out.extend(o.extra.iter().map(|(_, v)| v.clone()));
            }
        }
    }
    if let StoreConfig::Redis {
        target: RedisTarget::Sentinel(s),
        ..
    } = &config.store
    {
        out.extend(
            [&s.password, &s.sentinel_password]
                .into_iter()
                .flatten()
                .cloned(),
        );
    }
    if let StoreConfig::Redis {
        target: RedisTarget::Url(url),
        ..
    } = &config.store
    {
        if let Some(password) = url::Url::parse(url.expose())
            .ok()
            .and_then(|u| u.password().map(str::to_string))
        {
            let decoded = percent_encoding::percent_decode_str(&password).decode_utf8_lossy();
            out.push(Secret::new(decoded.into_owned()));
            out.push(Secret::new(password));
        }
    }
    let egress = &config.server.egress;
    for proxy in [&egress.https, &egress.http].into_iter().flatten() {
        out.extend(proxy.secrets());
    }
    out.retain(|s| !s.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::interpolate::ProcessEnv;

    #[test]
    fn every_configured_secret_and_what_was_sent_is_scrubbed() {
        let text = r#"
[server]
inbound_token = "inbound-SECRET-1"
[store]
kind = "memory"
[providers.s]
type = "static"
headers = { Authorization = "Token static-SECRET-2" }
[providers.p]
type = "oauth2"
grant = "client_credentials"
token_url = "http://127.0.0.1:9/token"
client_id = "id 7"
client_secret = "client/SECRET-3"
client_auth = "basic"
extra = { api_key = "extra-SECRET-4" }
[[routes]]
prefix = "/p/"
upstream = "http://127.0.0.1:9/"
provider = "p"
"#;
        let config = Config::parse(text, Path::new("x.toml"), &ProcessEnv).unwrap();
        let ProviderKind::OAuth2(cfg) = &config.providers["p"].kind else {
            unreachable!()
        };
        let scrubber = config_scrubber(cfg, &configured_secrets(&config));
        let basic = base64::engine::general_purpose::STANDARD.encode("id+7:client%2FSECRET-3");
        let echo = format!(
            "got inbound-SECRET-1, static-SECRET-2, client/SECRET-3, extra-SECRET-4, Authorization: Basic {basic}"
        );
        let shown = scrubber.scrub(&echo, false, 500);
        assert_eq!(
            shown,
            "got [redacted], [redacted], [redacted], [redacted], Authorization: Basic [redacted]"
        );
    }
}
