//! TLS to upstreams: the trusted roots (webpki's, plus the system's, plus
//! a route's `ca_file`), the route's client certificate (mTLS), the TLS
//! settings built from them, and the TCP connector under every upstream
//! connection.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;
use rustls::RootCertStore;

use crate::config::ClientIdentity;

/// rustls needs one process-wide crypto provider; ring it is.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub(super) fn system_roots() -> RootCertStore {
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

pub(super) fn add_pem_roots(roots: &mut RootCertStore, path: &Path) -> Result<(), String> {
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

/// TLS to upstreams trusting `roots` (no ALPN: HTTP/1.1; HTTP/2 pools
/// add theirs), presenting
/// `identity` when the server asks for a client certificate. The identity
/// was checked at load (the key is the certificate's), so rustls refusing
/// it is unexpected: the error says why.
pub(super) fn client_config(
    roots: RootCertStore,
    identity: Option<&ClientIdentity>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let tls = match identity {
        None => builder.with_no_client_auth(),
        Some(id) => builder
            .with_client_auth_cert(id.chain().to_vec(), id.key())
            .map_err(|e| format!("client certificate refused by rustls: {e}"))?,
    };
    Ok(Arc::new(tls))
}

/// TCP for every upstream connection, direct or to the egress proxy.
pub(super) fn tcp_connector(connect_timeout: Duration) -> HttpConnector {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));
    http
}
