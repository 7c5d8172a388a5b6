//! `authproxy check [--probe]`: validate config and secrets, print the
//! route table; with `--probe` run each primary grant once.

use std::path::Path;
use std::process::ExitCode;

use super::{load, say};
use crate::config::{ProviderKind, StoreConfig};
use crate::credentials::oauth2::configured_secrets;
use crate::credentials::OAuthProvider;
use crate::oauth::TokenClient;
use crate::telemetry::{report_error, LogFormat};

pub(super) async fn check(path: &Path, probe: bool, format: LogFormat) -> ExitCode {
    let config = match load(path, format) {
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
                report_error(format, &e.to_string(), None);
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
            ProviderKind::Basic(_) => "injects Authorization: Basic".to_string(),
            ProviderKind::Query(q) => format!(
                "adds query parameters {}",
                q.params
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            ProviderKind::AwsSigV4(a) => format!(
                "signs for {} in {}{}{}",
                a.service,
                a.region,
                if a.session_token.is_some() {
                    " (session token)"
                } else {
                    ""
                },
                if a.unsigned_payload {
                    "; larger bodies UNSIGNED-PAYLOAD"
                } else {
                    ""
                }
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
        if let Some(policy) = &r.allow {
            say!(
                "{:<24} allow: {}",
                "",
                policy.entries().collect::<Vec<_>>().join(", ")
            );
        }
    }
    if !probe {
        return ExitCode::SUCCESS;
    }
    say!();
    let client = match TokenClient::new(Default::default()) {
        Ok(c) => c,
        Err(e) => {
            report_error(format, &e.to_string(), None);
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
