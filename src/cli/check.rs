//! `authproxy check [--probe]`: validate config and secrets, print the
//! route table; with `--probe` run each primary grant once. Exit 0 good,
//! 64 the config has errors, 1 a probe failed or the token store cannot
//! be used (as `run` would exit).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use url::Url;

use super::{load, say};
use crate::config::{EgressConfig, ProviderKind, ProxyEndpoint, RedisTarget, StoreConfig};
use crate::credentials::oauth2::client_for;
use crate::credentials::oauth2::configured_secrets;
use crate::credentials::OAuthProvider;
use crate::oauth::{Metadata, TokenClient};
use crate::telemetry::{report_error, LogFormat};
use crate::upstream::egress::token_proxies;

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
            target,
            timings,
        } => {
            say!(
                "store redis{} (key prefix {key_prefix}){}; lease_ttl {:?}, lease_wait {:?}, min_replicas {}, replica_timeout {:?}",
                if matches!(target, RedisTarget::Sentinel(_)) {
                    " behind sentinel"
                } else {
                    ""
                },
                if encryption_key.is_some() {
                    "; encrypted"
                } else {
                    ""
                },
                timings.lease_ttl,
                timings.lease_wait,
                timings
                    .min_replicas
                    .map_or_else(|| "auto".to_string(), |n| n.to_string()),
                timings.replica_timeout,
            );
            if probe {
                // Read only: ROLE, INFO and SENTINEL queries, no write.
                match crate::store::probe_redis(target, std::time::Duration::from_secs(3)).await {
                    Ok(lines) => {
                        for line in lines {
                            say!("{line}");
                        }
                    }
                    Err(e) => {
                        eprintln!("authproxy: store probe failed: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            }
        }
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
                let endpoint = match (url, &o.issuer) {
                    (Some(u), _) => format!("{}{}", u.origin().ascii_serialization(), u.path()),
                    (None, Some(issuer)) => format!("issuer {issuer}"),
                    (None, None) => String::new(),
                };
                let mut extras = Vec::new();
                if o.grant != crate::config::Grant::Implicit {
                    extras.push(format!("client_auth {}", o.client_auth.as_str()));
                }
                if let Some(signer) = o
                    .client_assertion
                    .as_ref()
                    .or(o.jwt_bearer.as_ref().map(|j| &j.signer))
                {
                    extras.push(format!(
                        "signs {}{}",
                        signer.alg(),
                        signer
                            .kid()
                            .map(|k| format!(" kid {k}"))
                            .unwrap_or_default()
                    ));
                }
                if o.tls.identity.is_some() {
                    extras.push("client certificate".into());
                }
                if !o.tls.extra_roots.is_empty() {
                    extras.push("ca_file".into());
                }
                format!(
                    "{endpoint} into {}{}",
                    o.header.as_str(),
                    if extras.is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", extras.join(", "))
                    }
                )
            }
        };
        say!("{:<20} {:<28} {}", name, p.kind.label(), details);
    }
    say!();
    say!(
        "{:<24} {:<44} {:<16} CREDENTIAL",
        "ROUTE",
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
        // Prefix routes by their prefix, host routes (forward-proxy
        // mode) by host (and port, when not 443) and prefix.
        let route = match &r.host {
            None => r.prefix.as_str().to_string(),
            Some(h) if h.port == 443 => format!("{}{}", h.host, r.prefix.as_str()),
            Some(h) => format!("{h}{}", r.prefix.as_str()),
        };
        say!(
            "{:<24} {:<44} {:<16} {}{}{}{}",
            route,
            r.upstream.as_str(),
            r.provider.as_deref().unwrap_or("-"),
            kind,
            if r.strip_prefix { "" } else { " (prefix kept)" },
            if r.allow_browsers {
                " (browsers allowed)"
            } else {
                ""
            },
            if r.client_identity.is_some() {
                " (client certificate)"
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
    let fp = &config.forward_proxy;
    if fp.enabled {
        say!();
        say!(
            "forward proxy: on; CA {} ({})",
            fp.ca_cert.display(),
            if fp.ca_cert.exists() {
                "exists"
            } else {
                "made on first start"
            }
        );
        if !fp.tunnel.is_empty() {
            let tunnel: Vec<&str> = fp.tunnel.iter().map(|t| t.as_str()).collect();
            say!("tunnelled blind: {}", tunnel.join(", "));
        }
    }
    let egress = &config.server.egress;
    let client = match TokenClient::with_proxies(Default::default(), token_proxies(egress)) {
        Ok(c) => c,
        Err(e) => {
            report_error(format, &e.to_string(), None);
            return ExitCode::FAILURE;
        }
    };
    let mut failed = false;
    let secrets = configured_secrets(&config);
    // Discovery contacts each issuer, with or without --probe: the endpoints
    // it finds are part of what the config means.
    let mut discovered = BTreeMap::new();
    for (name, p) in &config.providers {
        let ProviderKind::OAuth2(o) = &p.kind else {
            continue;
        };
        let Some(issuer) = &o.issuer else {
            continue;
        };
        let client = match client_for(o, &client) {
            Ok(c) => c,
            Err(e) => {
                failed = true;
                say!("discovery {name}: FAILED {e}");
                continue;
            }
        };
        if discovered.is_empty() {
            say!();
        }
        match OAuthProvider::discover_once(o, &client).await {
            Some(Ok(m)) => {
                let show = |what: &str, configured: Option<&Url>, found: Option<&Url>| match (
                    configured, found,
                ) {
                    (Some(c), _) => format!("{what} {c} (configured)"),
                    (None, Some(f)) => format!("{what} {f}"),
                    (None, None) => format!("{what} -"),
                };
                say!(
                    "discovery {name}: contacted issuer {issuer}: {}; {}; {}",
                    show(
                        "token_endpoint",
                        o.token_url.as_ref(),
                        m.token_endpoint.as_ref()
                    ),
                    show(
                        "authorization_endpoint",
                        o.authorize_url.as_ref(),
                        m.authorization_endpoint.as_ref()
                    ),
                    show(
                        "device_authorization_endpoint",
                        None,
                        m.device_authorization_endpoint.as_ref()
                    ),
                );
                discovered.insert(name.clone(), m);
            }
            Some(Err(e)) => {
                failed = true;
                say!("discovery {name}: FAILED (contacted issuer {issuer}) {e}");
            }
            None => {}
        }
    }
    if !probe {
        return if failed {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }
    say!();
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
                    "a person's login"
                }
            );
            continue;
        }
        let token_url = o.token_url.as_ref().or_else(|| {
            discovered
                .get(name)
                .and_then(|m: &Metadata| m.token_endpoint.as_ref())
        });
        let Some(token_url) = token_url else {
            failed = true;
            say!("probe {name}: FAILED no token endpoint (discovery found none)");
            continue;
        };
        let client = match client_for(o, &client) {
            Ok(c) => c,
            Err(e) => {
                failed = true;
                say!("probe {name}: FAILED {e}");
                continue;
            }
        };
        match OAuthProvider::probe(o, &client, token_url, &secrets).await {
            Ok(t) => say!(
                "probe {name}: ok ({} grant, client_auth {}; token obtained{}{})",
                o.grant.as_str(),
                o.client_auth.as_str(),
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
