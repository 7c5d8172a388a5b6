//! TLS material a provider or route presents or trusts, as checked at load
//! (config/check/tls.rs makes it).

use std::fmt;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::secret::SecretBuf;

/// A provider's or route's own TLS settings for the servers it talks to.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClientTls {
    /// `ca_file`: CA certificates (DER) trusted besides the system's roots.
    pub extra_roots: Vec<Vec<u8>>,
    /// `client_cert` + `client_key`, presented in the handshake.
    pub identity: Option<ClientIdentity>,
}

impl ClientTls {
    pub fn is_default(&self) -> bool {
        self.extra_roots.is_empty() && self.identity.is_none()
    }
}

/// A client certificate chain with its private key, checked at load to
/// belong together. Cheap to clone; the key never prints and its bytes are
/// zeroed when the last clone goes.
#[derive(Clone)]
pub struct ClientIdentity {
    chain: Arc<Vec<CertificateDer<'static>>>,
    key: Arc<Zeroizing<PrivateKeyDer<'static>>>,
    /// Chain and key as PEM, for HTTP clients that take only that.
    pem: Arc<SecretBuf>,
    /// SHA-256 of the end-entity certificate: tells identities apart.
    fingerprint: [u8; 32],
}

impl ClientIdentity {
    /// From parts already checked to match (config/check/tls.rs).
    pub(super) fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        pem: SecretBuf,
    ) -> ClientIdentity {
        let fingerprint = Sha256::digest(chain.first().map(|c| c.as_ref()).unwrap_or(&[])).into();
        ClientIdentity {
            chain: Arc::new(chain),
            key: Arc::new(Zeroizing::new(key)),
            pem: Arc::new(pem),
            fingerprint,
        }
    }

    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// A copy of the key for a TLS config (rustls keeps its own).
    pub fn key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }

    pub fn pem(&self) -> &[u8] {
        self.pem.as_slice()
    }

    /// SHA-256 of the certificate (not secret).
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }
}

impl PartialEq for ClientIdentity {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.chain == other.chain && bool::from(self.key.secret_der().ct_eq(other.key.secret_der()))
    }
}

impl fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ClientIdentity({} certificate(s), key [redacted])",
            self.chain.len()
        )
    }
}
