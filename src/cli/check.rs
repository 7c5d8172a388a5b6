//! `authproxy check [--probe]`: validate config and secrets, print the
//! route table; with `--probe` run each primary grant once.

use std::path::Path;
use std::process::ExitCode;

use super::{load, say};
use crate::config::{EgressConfig, ProviderKind, ProxyEndpoint, StoreConfig};
use crate::credentials::oauth2::configured_secrets;
use crate::credentials::OAuthProvider;
use crate::oauth::TokenClient;
use crate::upstream::egress::token_proxies;

pub(super) async fn check(path: &Path, probe: bool) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    say!("config {}: OK", path.display());
    let s = &config.server;
    say!(
        "listen {}{}; inbound token {}",
        s.listen,
        if s.listen.ip().is_loopback() {
            " (loopback)"
        } else {
            ""
        },
        if s.inbound_token.is_some() {
            "required"
        } else {
            "not set"
        }
    );
    match &config.store {
        StoreConfig::File {
            path,
            encryption_key,
        } => match crate::store::FileStore::open(path, encryption_key.as_ref()) {
            Ok(store) => {
                say!(
                    "store file {} (readable or not yet created){}",
                    path.display(),
                    if encryption_key.is_some() {
                        "; encrypted"
                    } else {
                        ""
                    }
                );
                for warning in crate::store::TokenStore::warnings(&store) {
                    say!("warning: {warning}");
                }
            }
            Err(e) => {
                eprintln!("authproxy: {e}");
                return ExitCode::FAILURE;
            }
        },
        StoreConfig::Memory => say!("store memory (tokens are lost on restart)"),
        StoreConfig::Redis {
            key_prefix,
            encryption_key,
            ..
        } => say!(
            "store redis (key prefix {key_prefix}){}",
            if encryption_key.is_some() {
                "; encrypted"
            } else {
                ""
            }
        ),
    }
    say_egress(&config.server.egress);
    say!();
    say!("{:<20} {:<28} DETAILS", "PROVIDER", "KIND");
    for (name, p) in &config.providers {
        let details = match &p.kind {
            ProviderKind::Static(st) => format!(
                "injects {}",
                st.headers
                    .iter()
                    .map(|(h, _)| h.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            ProviderKind::OAuth2(o) => {
                let url = o.token_url.as_ref().or(o.authorize_url.as_ref());
                format!(
                    "{} into {}",
                    url.map(|u| format!("{}{}", u.origin().ascii_serialization(), u.path()))
                        .unwrap_or_default(),
                    o.header.as_str()
                )
            }
        };
        say!("{:<20} {:<28} {}", name, p.kind.label(), details);
    }
    say!();
    say!(
        "{:<24} {:<44} {:<16} CREDENTIAL",
        "PREFIX",
        "UPSTREAM",
        "PROVIDER"
    );
    for r in &config.routes {
        let kind = r
            .provider
            .as_ref()
            .and_then(|p| config.providers.get(p))
            .map(|p| p.kind.label())
            .unwrap_or_else(|| "pass-through".into());
        say!(
            "{:<24} {:<44} {:<16} {}{}{}",
            r.prefix.as_str(),
            r.upstream.as_str(),
            r.provider.as_deref().unwrap_or("-"),
            kind,
            if r.strip_prefix { "" } else { " (prefix kept)" },
            if r.allow_browsers {
                " (browsers allowed)"
            } else {
                ""
            }
        );
    }
    if !probe {
        return ExitCode::SUCCESS;
    }
    say!();
    let egress = &config.server.egress;
    let client = match TokenClient::with_proxies(Default::default(), token_proxies(egress)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("authproxy: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut failed = false;
    let secrets = configured_secrets(&config);
    for (name, p) in &config.providers {
        let ProviderKind::OAuth2(o) = &p.kind else {
            continue;
        };
        if !o.grant.has_primary() {
            say!(
                "probe {name}: skipped ({} grant; probing would spend {})",
                o.grant.as_str(),
                if o.grant == crate::config::Grant::RefreshToken {
                    "a single-use refresh token"
                } else {
                    "a browser login"
                }
            );
            continue;
        }
        match OAuthProvider::probe(o, &client, &secrets).await {
            Ok(t) => say!(
                "probe {name}: ok ({} grant; token obtained{}{})",
                o.grant.as_str(),
                t.expires_at
                    .map(|e| format!(", expires in {}s", e.saturating_sub(t.obtained_at)))
                    .unwrap_or_default(),
                if t.refresh_token.is_some() {
                    ", with refresh token"
                } else {
                    ""
                }
            ),
            Err(e) => {
                failed = true;
                say!("probe {name}: FAILED [{}] {e}", e.code());
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The egress proxy as `http://host:port`: its credentials are never shown.
fn say_egress(egress: &EgressConfig) {
    let via = |p: &Option<ProxyEndpoint>| match p {
        None => "direct".to_string(),
        Some(p) if p.has_credentials() => format!("{} (with credentials)", p.url()),
        Some(p) => p.url().to_string(),
    };
    let source = if egress.from_env {
        " (from the environment)"
    } else {
        ""
    };
    match (&egress.https, &egress.http) {
        (None, None) if egress.from_env => {
            say!("egress direct (egress_proxy = \"env\", but neither HTTPS_PROXY nor HTTP_PROXY is set)")
        }
        (None, None) => say!("egress direct (proxy variables of the environment are ignored)"),
        (https, http) if https == http => say!("egress proxy {}{source}", via(https)),
        (https, http) => say!(
            "egress proxy https {}, http {}{source}",
            via(https),
            via(http)
        ),
    }
    if egress.https.is_some() || egress.http.is_some() {
        let list: Vec<String> = egress.no_proxy.iter().map(|n| n.to_string()).collect();
        say!(
            "no_proxy {} (loopback always goes direct)",
            if list.is_empty() {
                "(none)".to_string()
            } else {
                list.join(", ")
            }
        );
    }
}
