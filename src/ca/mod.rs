//! The local certificate authority of forward-proxy mode: `ca_cert` and
//! `ca_key`, made on first start (ECDSA P-256, the key 0600), and the leaf
//! certificates it signs for the hosts of host routes, made on first use
//! and cached per host until they near their end.
//!
//! Clients trust `ca_cert` to let the proxy terminate their TLS for a
//! host route's host; the key never leaves its file and this process, and
//! neither is ever logged (only the paths are).

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::config::{ForwardProxyConfig, Host};

/// How long a leaf certificate is valid: short, as nothing revokes it; a
/// new one is made for the host when less than [`LEAF_RENEW`] is left.
const LEAF_VALIDITY: Duration = Duration::from_secs(24 * 3600);
const LEAF_RENEW: Duration = Duration::from_secs(12 * 3600);
/// Validity starts this far back, for clients whose clock is behind ours.
const BACKDATE: Duration = Duration::from_secs(3600);
/// The CA made on first start: ten years (the user installed it by hand).
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The local CA and its cache of leaf certificates.
pub struct LocalCa {
    issuer: Issuer<'static, KeyPair>,
    cert_path: PathBuf,
    cert_pem: String,
    /// By host; only hosts of host routes ever get a leaf, so the config
    /// bounds the cache.
    leaves: Mutex<HashMap<Host, Leaf>>,
}

struct Leaf {
    config: Arc<rustls::ServerConfig>,
    renew_at: SystemTime,
}

impl std::fmt::Debug for LocalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCa")
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

/// What went wrong with the CA files; names the key and the fix.
#[derive(Debug, thiserror::Error)]
#[error("forward_proxy.{key}: {message}")]
pub struct CaError {
    key: &'static str,
    message: String,
}

fn err(key: &'static str, message: impl Into<String>) -> CaError {
    CaError {
        key,
        message: message.into(),
    }
}

impl LocalCa {
    /// Loads `ca_cert` and `ca_key`, or makes both when both are missing.
    pub fn load_or_create(cfg: &ForwardProxyConfig) -> Result<LocalCa, CaError> {
        let (cert, key) = (&cfg.ca_cert, &cfg.ca_key);
        match (cert.exists(), key.exists()) {
            (true, true) => Self::load(cert, key),
            (false, false) => Self::create(cert, key),
            (true, false) => Err(err(
                "ca_key",
                format!(
                    "{} does not exist but ca_cert {} does; put the CA's key there, or remove both files to have a new CA made (clients must then trust the new one)",
                    key.display(),
                    cert.display()
                ),
            )),
            (false, true) => Err(err(
                "ca_cert",
                format!(
                    "{} does not exist but ca_key {} does; put the CA's certificate there, or remove both files to have a new CA made (clients must then trust the new one)",
                    cert.display(),
                    key.display()
                ),
            )),
        }
    }

    fn load(cert: &Path, key: &Path) -> Result<LocalCa, CaError> {
        let cert_pem = std::fs::read_to_string(cert)
            .map_err(|e| err("ca_cert", format!("cannot read {}: {e}", cert.display())))?;
        let key_pem = zeroize::Zeroizing::new(
            std::fs::read_to_string(key)
                .map_err(|e| err("ca_key", format!("cannot read {}: {e}", key.display())))?,
        );
        // The error says nothing of the file's content.
        let key_pair = KeyPair::from_pem(&key_pem).map_err(|_| {
            err(
                "ca_key",
                format!(
                    "{} is not a PEM private key (PKCS#8, ECDSA P-256 as authproxy makes them)",
                    key.display()
                ),
            )
        })?;
        let ca_der = first_certificate(&cert_pem).ok_or_else(|| {
            err(
                "ca_cert",
                format!("{} holds no PEM certificate", cert.display()),
            )
        })?;
        if !spki_holds(&ca_der, key_pair.public_key_raw()) {
            return Err(err(
                "ca_key",
                format!(
                    "{} is not the key of the certificate in {}; give the pair that belongs together",
                    key.display(),
                    cert.display()
                ),
            ));
        }
        let issuer = Issuer::from_ca_cert_der(&ca_der, key_pair).map_err(|e| {
            err(
                "ca_cert",
                format!("{} cannot be read as a CA certificate: {e}", cert.display()),
            )
        })?;
        Ok(LocalCa {
            issuer,
            cert_path: cert.to_path_buf(),
            cert_pem,
            leaves: Mutex::default(),
        })
    }

    fn create(cert: &Path, key: &Path) -> Result<LocalCa, CaError> {
        let key_pair = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|e| err("ca_key", format!("cannot make a key: {e}")))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "authproxy local CA");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "authproxy forward proxy");
        // Only leaves below it, no intermediate CAs.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = SystemTime::now();
        params.not_before = datetime(now - BACKDATE);
        params.not_after = datetime(now + CA_VALIDITY);
        let ca = params
            .self_signed(&key_pair)
            .map_err(|e| err("ca_cert", format!("cannot make the CA certificate: {e}")))?;
        let key_pem = zeroize::Zeroizing::new(key_pair.serialize_pem());
        write_new(key, key_pem.as_bytes(), 0o600).map_err(|e| {
            err(
                "ca_key",
                format!(
                    "cannot write {}: {e}; make its folder writable or set forward_proxy.ca_key",
                    key.display()
                ),
            )
        })?;
        let cert_pem = ca.pem();
        write_new(cert, cert_pem.as_bytes(), 0o644).map_err(|e| {
            err(
                "ca_cert",
                format!(
                    "cannot write {}: {e}; make its folder writable or set forward_proxy.ca_cert",
                    cert.display()
                ),
            )
        })?;
        tracing::info!(
            ca_cert = %cert.display(),
            ca_key = %key.display(),
            "made a new local CA for forward-proxy mode; clients must trust ca_cert (authproxy ca prints it)"
        );
        Ok(LocalCa {
            issuer: Issuer::new(params, key_pair),
            cert_path: cert.to_path_buf(),
            cert_pem,
            leaves: Mutex::default(),
        })
    }

    /// Where the CA certificate is.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// The CA certificate (PEM), what clients trust.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// TLS settings that present a leaf certificate for `host` (made now
    /// if there is none, or the cached one nears its end), offering HTTP/2
    /// and HTTP/1.1 in ALPN.
    pub fn server_config(&self, host: &Host) -> Result<Arc<rustls::ServerConfig>, CaError> {
        let now = SystemTime::now();
        let mut leaves = self.leaves.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(leaf) = leaves.get(host) {
            if now < leaf.renew_at {
                return Ok(leaf.config.clone());
            }
        }
        let config = self.make_leaf(host, now)?;
        leaves.insert(
            host.clone(),
            Leaf {
                config: config.clone(),
                renew_at: now + (LEAF_VALIDITY - LEAF_RENEW),
            },
        );
        Ok(config)
    }

    fn make_leaf(
        &self,
        host: &Host,
        now: SystemTime,
    ) -> Result<Arc<rustls::ServerConfig>, CaError> {
        let fail = |e: &dyn std::fmt::Display| {
            err(
                "ca_cert",
                format!("cannot make a certificate for {host}: {e}"),
            )
        };
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| fail(&e))?;
        let mut params = CertificateParams::new(vec![host.san()]).map_err(|e| fail(&e))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, host.san());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = datetime(now - BACKDATE);
        params.not_after = datetime(now + LEAF_VALIDITY);
        // Serials must differ between the leaves of one issuer (some
        // clients cache by issuer and serial): 16 random bytes, the top
        // bit clear so that the DER integer stays positive.
        let mut serial: [u8; 16] = rand::random();
        serial[0] &= 0x7f;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let leaf = params.signed_by(&key, &self.issuer).map_err(|e| fail(&e))?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone()], key_der)
            .map_err(|e| fail(&e))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

fn datetime(t: SystemTime) -> time::OffsetDateTime {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

fn first_certificate(pem: &str) -> Option<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes()).next()?.ok()
}

/// Whether the certificate's public key is `public_key` (the raw EC
/// point): its DER bytes end the SubjectPublicKeyInfo's BIT STRING, so
/// they appear in the certificate as they are; a mismatched key's point
/// does not (a 65-byte point found by chance elsewhere is not a concern).
fn spki_holds(cert: &CertificateDer<'_>, public_key: &[u8]) -> bool {
    !public_key.is_empty() && cert.windows(public_key.len()).any(|w| w == public_key)
}

/// Writes a file that must not exist yet (made with `mode` from the
/// start, so the key is never readable by others, not even briefly), and
/// its folder if missing.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> ForwardProxyConfig {
        ForwardProxyConfig {
            enabled: true,
            ca_cert: dir.join("state/ca.pem"),
            ca_key: dir.join("state/ca.key"),
            tunnel: Vec::new(),
        }
    }

    #[test]
    fn made_once_then_loaded_and_the_key_is_private() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let made = LocalCa::load_or_create(&cfg).unwrap();
        let mode = std::fs::metadata(&cfg.ca_key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let loaded = LocalCa::load_or_create(&cfg).unwrap();
        assert_eq!(made.cert_pem(), loaded.cert_pem());
        let host = Host::parse("api.example.test").unwrap();
        let a = loaded.server_config(&host).unwrap();
        let b = loaded.server_config(&host).unwrap();
        assert!(Arc::ptr_eq(&a, &b), "the leaf is cached per host");
        assert_eq!(a.alpn_protocols, vec![b"h2".to_vec(), b"http/1.1".to_vec()]);
    }

    #[test]
    fn one_file_alone_or_a_foreign_key_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        LocalCa::load_or_create(&cfg).unwrap();
        let key = std::fs::read(&cfg.ca_key).unwrap();
        std::fs::remove_file(&cfg.ca_key).unwrap();
        let e = LocalCa::load_or_create(&cfg).unwrap_err().to_string();
        assert!(e.starts_with("forward_proxy.ca_key"), "{e}");
        let other = tempfile::tempdir().unwrap();
        let other_cfg = config(other.path());
        LocalCa::load_or_create(&other_cfg).unwrap();
        std::fs::copy(&other_cfg.ca_key, &cfg.ca_key).unwrap();
        let e = LocalCa::load_or_create(&cfg).unwrap_err().to_string();
        assert!(e.contains("is not the key of the certificate"), "{e}");
        let key_text = String::from_utf8(key).unwrap();
        assert!(!e.contains(key_text.lines().nth(1).unwrap()), "{e}");
        std::fs::remove_file(&cfg.ca_cert).unwrap();
        let e = LocalCa::load_or_create(&cfg).unwrap_err().to_string();
        assert!(e.starts_with("forward_proxy.ca_cert"), "{e}");
    }
}
