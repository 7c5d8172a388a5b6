//! HTTP clients for upstreams: hyper-util's pooled client over rustls,
//! HTTP/1.1 with keep-alive. One client for all routes that use the system
//! and webpki roots, one more per distinct `ca_file`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::RootCertStore;

use crate::config::Config;

pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, Body>;

/// Clients by route index.
#[derive(Clone)]
pub struct Upstreams {
    by_route: Vec<Arc<UpstreamClient>>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("routes[{route}].ca_file {path}: {reason}")]
    CaFile {
        route: usize,
        path: String,
        reason: String,
    },
}

impl Upstreams {
    pub fn new(config: &Config) -> Result<Upstreams, TlsSetupError> {
        crate::install_crypto_provider();
        let base_roots = system_roots();
        let default = Arc::new(build_client(
            base_roots.clone(),
            config.server.connect_timeout,
        ));
        let mut by_ca: HashMap<PathBuf, Arc<UpstreamClient>> = HashMap::new();
        let mut by_route = Vec::with_capacity(config.routes.len());
        for (i, route) in config.routes.iter().enumerate() {
            let client = match &route.ca_file {
                None => default.clone(),
                Some(path) => match by_ca.get(path) {
                    Some(c) => c.clone(),
                    None => {
                        let mut roots = base_roots.clone();
                        add_pem_roots(&mut roots, path).map_err(|reason| {
                            TlsSetupError::CaFile {
                                route: i,
                                path: path.display().to_string(),
                                reason,
                            }
                        })?;
                        let c = Arc::new(build_client(roots, config.server.connect_timeout));
                        by_ca.insert(path.clone(), c.clone());
                        c
                    }
                },
            };
            by_route.push(client);
        }
        Ok(Upstreams { by_route })
    }

    pub fn for_route(&self, index: usize) -> &UpstreamClient {
        &self.by_route[index]
    }
}

fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    // Corporate CAs installed on the host count too; a missing or partly
    // unreadable system store is not fatal (webpki roots remain).
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    roots
}

fn add_pem_roots(roots: &mut RootCertStore, path: &Path) -> Result<(), String> {
    let data = std::fs::read(path).map_err(|e| e.to_string())?;
    let mut added = 0;
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    for cert in CertificateDer::pem_slice_iter(&data) {
        let cert = cert.map_err(|e| format!("not a PEM certificate file ({e})"))?;
        roots
            .add(cert)
            .map_err(|e| format!("certificate rejected: {e}"))?;
        added += 1;
    }
    if added == 0 {
        return Err("contains no PEM certificates (-----BEGIN CERTIFICATE-----)".into());
    }
    Ok(())
}

fn build_client(roots: RootCertStore, connect_timeout: Duration) -> UpstreamClient {
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .build(connector)
}
