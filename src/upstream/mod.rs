//! Connections to upstreams: a pool of HTTP/1.1 keep-alive connections,
//! or shared HTTP/2 connections ([`pool::h2`]), per upstream origin, CA
//! file and client certificate, over plain TCP or rustls.
//!
//! Our own small pool on hyper's connection API instead of hyper-util's
//! legacy client: that client spawned a task per request to put the
//! connection back, cloned its connector and hashed the pool key on every
//! request, about a sixth of the proxy's CPU per small request. Here a
//! request costs a pop and a push under an uncontended mutex, and the
//! connection goes back when its response body has been read to the end.
//!
//! Each pool keeps at most its routes' `max_upstream_connections`.
//!
//! Here the pools by route ([`Upstreams`]) and the errors; the pool itself
//! in [`pool`], TLS roots and connectors in [`tls`], the egress proxy in
//! [`egress`].

pub mod egress;
mod pool;
pub mod tls;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use http::Uri;
use hyper_rustls::HttpsConnector;

use crate::config::{Config, EgressConfig, Http2Mode};

pub use pool::{Pool, PooledBody};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What tells TLS settings apart: the CA file, the client certificate's
/// SHA-256.
type TlsKey = (Option<PathBuf>, Option<[u8; 32]>);

/// Pools by route index (routes to the same origin share one).
#[derive(Clone)]
pub struct Upstreams {
    by_route: Vec<Arc<Pool>>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("routes[{route}].ca_file {path}: {reason}")]
    CaFile {
        route: usize,
        path: String,
        reason: String,
    },
    #[error("routes[{route}].client_cert: {reason}")]
    ClientCert { route: usize, reason: String },
}

/// Why a request did not get an answer from the upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No connection: DNS, TCP, TLS or the egress proxy failed.
    #[error("connect failed")]
    Connect(#[source] BoxError),
    /// The connection failed while sending or waiting for the answer.
    #[error(transparent)]
    Http(#[from] hyper::Error),
    /// No response head within the time allowed.
    #[error("no answer in time")]
    Timeout,
}

impl UpstreamError {
    /// The error and its causes, e.g. "connect failed: tcp connect error:
    /// Connection refused (os error 111)".
    pub fn describe(&self) -> String {
        describe(self)
    }
}

/// An error and its causes, each said once: "connect failed: tcp connect
/// error: Connection refused (os error 111)".
pub fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    for e in std::iter::successors(Some(error), |e| e.source()) {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

/// Whether a pool speaks HTTP/2 and how: the ALPN protocols its TLS
/// offers, and whether every connection is HTTP/2 (prior knowledge). An
/// http upstream reached in absolute form through the egress proxy, and
/// an http upstream in auto mode, speak HTTP/1.1 only.
fn h2_side(mode: Http2Mode, https: bool, absolute_form: bool) -> Option<(Vec<Vec<u8>>, bool)> {
    match mode {
        Http2Mode::Never => None,
        _ if absolute_form => None,
        Http2Mode::Auto if https => Some((vec![b"h2".to_vec(), b"http/1.1".to_vec()], false)),
        Http2Mode::Auto => None,
        Http2Mode::Always => Some((vec![b"h2".to_vec()], true)),
    }
}

impl Upstreams {
    /// The pools of `config`'s routes, each going direct or through the
    /// egress proxy of `egress` (the one the process started with: the
    /// token client cannot change it on reload either).
    pub fn new(config: &Config, egress: &EgressConfig) -> Result<Upstreams, TlsSetupError> {
        tls::install_crypto_provider();
        let base_roots = tls::system_roots();
        let tcp = tls::tcp_connector(config.server.connect_timeout);
        // Routes with the same CA file and client certificate share TLS
        // settings. Routes to the same origin with the same TLS settings
        // and connection limit share a pool, and its limit; a route with
        // another limit has a pool of its own, so none keeps more than its
        // own limit, and a connection made with one client certificate
        // never serves a route with another.
        let mut tls_configs: HashMap<TlsKey, Arc<rustls::ClientConfig>> = HashMap::new();
        let mut pools: HashMap<(String, TlsKey, usize, Http2Mode), Arc<Pool>> = HashMap::new();
        let mut by_route = Vec::with_capacity(config.routes.len());
        for (i, route) in config.routes.iter().enumerate() {
            let tls_key: TlsKey = (
                route.ca_file.clone(),
                route.client_identity.as_ref().map(|id| id.fingerprint()),
            );
            let tls = match tls_configs.get(&tls_key) {
                Some(c) => c.clone(),
                None => {
                    let mut roots = base_roots.clone();
                    if let Some(path) = &route.ca_file {
                        tls::add_pem_roots(&mut roots, path).map_err(|reason| {
                            TlsSetupError::CaFile {
                                route: i,
                                path: path.display().to_string(),
                                reason,
                            }
                        })?;
                    }
                    let c = tls::client_config(roots, route.client_identity.as_ref())
                        .map_err(|reason| TlsSetupError::ClientCert { route: i, reason })?;
                    tls_configs.insert(tls_key.clone(), c.clone());
                    c
                }
            };
            let origin = route.upstream.origin().ascii_serialization();
            let limit = route.max_upstream_connections;
            let pool = pools
                .entry((origin.clone(), tls_key, limit, route.http2))
                .or_insert_with(|| {
                    let origin: Uri = origin
                        .parse()
                        .expect("config check made sure the upstream origin is a valid URI");
                    let https = route.upstream.scheme() == "https";
                    let via = egress.proxy_for_url(&route.upstream);
                    let dialer = egress::Dialer::new(tcp.clone(), via, https);
                    let absolute_form = via
                        .filter(|_| !https)
                        .map(|p| egress::AbsoluteForm::new(&origin, p));
                    let h2 = h2_side(route.http2, https, absolute_form.is_some()).map(
                        |(alpn, prior)| {
                            let mut tls = (*tls).clone();
                            tls.alpn_protocols = alpn;
                            let connector = HttpsConnector::from((dialer.clone(), Arc::new(tls)));
                            pool::h2::H2::new(connector, prior, &origin)
                        },
                    );
                    Arc::new(Pool::new(
                        HttpsConnector::from((dialer, tls)),
                        origin,
                        absolute_form,
                        h2,
                        limit,
                    ))
                })
                .clone();
            by_route.push(pool);
        }
        Ok(Upstreams { by_route })
    }

    pub fn for_route(&self, index: usize) -> &Arc<Pool> {
        &self.by_route[index]
    }
}
