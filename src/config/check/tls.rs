//! TLS material: `ca_file` (providers; routes load theirs when the pools
//! are built), `client_cert` + `client_key` on providers and routes, and
//! PEM values given inline or as a file (also `private_key`).

use base64::Engine;
use rustls::crypto::ring::sign::any_supported_type;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use zeroize::Zeroizing;

use super::Checker;
use crate::config::interpolate::read_bounded;
use crate::config::types::{ClientIdentity, ClientTls};
use crate::secret::SecretBuf;

impl Checker<'_> {
    /// A PEM value: the text itself when it holds a `-----BEGIN` line (as
    /// `"${file:…}"` gives it), else the path of a PEM file, relative to the
    /// config file's folder. Errors never quote the content.
    pub(super) fn pem_value(&mut self, key: &str, value: &str) -> Option<Zeroizing<String>> {
        if value.contains("-----BEGIN") {
            return Some(Zeroizing::new(value.to_string()));
        }
        let path = self.base_dir.join(value);
        match read_bounded(&path) {
            Ok(text) => Some(text),
            Err(reason) => {
                self.err(
                    key,
                    format!(
                        "cannot read {}: {reason}; give PEM text (e.g. \"${{file:key.pem}}\") or the path of a PEM file, relative to the config file",
                        path.display()
                    ),
                );
                None
            }
        }
    }

    /// `ca_file` and `client_cert` + `client_key` of a provider (`owner`
    /// is its key path, e.g. `providers.entra`).
    pub(super) fn client_tls(
        &mut self,
        owner: &str,
        ca_file: Option<String>,
        cert: Option<String>,
        key: Option<String>,
    ) -> ClientTls {
        let extra_roots = match ca_file {
            None => Vec::new(),
            Some(path) => self.ca_roots(&format!("{owner}.ca_file"), &path),
        };
        ClientTls {
            extra_roots,
            identity: self.client_identity(owner, cert, key),
        }
    }

    /// The CA certificates of a PEM bundle, as DER.
    fn ca_roots(&mut self, key: &str, path: &str) -> Vec<Vec<u8>> {
        let full = self.base_dir.join(path);
        let fix = "give a PEM file of CA certificates (-----BEGIN CERTIFICATE-----), relative to the config file";
        let text = match read_bounded(&full) {
            Ok(t) => t,
            Err(reason) => {
                self.err(
                    key,
                    format!("cannot read {}: {reason}; {fix}", full.display()),
                );
                return Vec::new();
            }
        };
        let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(text.as_bytes()).collect();
        match certs {
            Ok(certs) if !certs.is_empty() => certs.into_iter().map(|c| c.to_vec()).collect(),
            _ => {
                self.err(
                    key,
                    format!("{} holds no readable certificate; {fix}", full.display()),
                );
                Vec::new()
            }
        }
    }

    /// `client_cert` + `client_key` (both or neither): the chain, the key,
    /// and the proof that the key is the certificate's.
    pub(super) fn client_identity(
        &mut self,
        owner: &str,
        cert: Option<String>,
        key: Option<String>,
    ) -> Option<ClientIdentity> {
        let (cert_key, key_key) = (
            format!("{owner}.client_cert"),
            format!("{owner}.client_key"),
        );
        let (cert, key) = match (cert, key) {
            (None, None) => return None,
            (Some(_), None) => {
                self.err(
                    key_key,
                    "is required with client_cert: the PEM private key of that certificate",
                );
                return None;
            }
            (None, Some(_)) => {
                self.err(
                    cert_key,
                    "is required with client_key: the PEM certificate (chain) of that key",
                );
                return None;
            }
            (Some(c), Some(k)) => (c, k),
        };
        let cert_text = self.pem_value(&cert_key, &cert);
        let key_text = self.pem_value(&key_key, &key);
        let (cert_text, key_text) = (cert_text?, key_text?);
        let chain: Vec<CertificateDer<'static>> = match CertificateDer::pem_slice_iter(
            cert_text.as_bytes(),
        )
        .collect()
        {
            Ok(chain) if !Vec::is_empty(&chain) => chain,
            _ => {
                self.err(
                        cert_key,
                        "holds no readable certificate (-----BEGIN CERTIFICATE-----); give the client certificate, then any intermediates",
                    );
                return None;
            }
        };
        // The parser's errors can quote a line of the key: not shown.
        let Ok(private) = PrivateKeyDer::from_pem_slice(key_text.as_bytes()) else {
            self.err(
                key_key,
                "holds no PEM private key (-----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY; encrypted keys are not supported)",
            );
            return None;
        };
        let private = Zeroizing::new(private);
        let Ok(signing) = any_supported_type(&private) else {
            self.err(
                key_key,
                "is not a private key TLS can use (RSA, ECDSA P-256/P-384 or Ed25519)",
            );
            return None;
        };
        match CertifiedKey::new(chain.clone(), signing).keys_match() {
            Ok(()) => {}
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
                self.err(
                    key_key,
                    format!("does not match the certificate in {cert_key}: give the key that certificate was issued for (`openssl x509 -noout -pubkey -in CERT` and `openssl pkey -pubout -in KEY` print the same key when they match)"),
                );
                return None;
            }
            Err(e) => {
                self.err(
                    cert_key,
                    format!("cannot be checked against {key_key} ({e}); give a valid X.509 client certificate, then any intermediates"),
                );
                return None;
            }
        }
        let mut pem = SecretBuf::with_capacity(4096);
        for c in &chain {
            pem.extend(pem_block("CERTIFICATE", c).as_bytes());
        }
        let label = match &*private {
            PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
            PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
            _ => "PRIVATE KEY",
        };
        pem.extend(pem_block(label, private.secret_der()).as_bytes());
        Some(ClientIdentity::new(chain, private.clone_key(), pem))
    }
}

impl Checker<'_> {
    /// `key_certificate`: the certificate of the signing key (checked to
    /// be its certificate), as its SHA-1 and SHA-256 thumbprints, base64url
    /// (the JWS `x5t` and `x5t#S256` header parameters, RFC 7515 §4.1.7-8).
    pub(super) fn key_thumbprints(
        &mut self,
        owner: &str,
        cert: &str,
        key_pem: &str,
    ) -> Option<(String, String)> {
        let name = format!("{owner}.key_certificate");
        let text = self.pem_value(&name, cert)?;
        let Some(Ok(der)) = CertificateDer::pem_slice_iter(text.as_bytes()).next() else {
            self.err(
                name,
                "holds no readable certificate (-----BEGIN CERTIFICATE-----); give the certificate of private_key",
            );
            return None;
        };
        let matches = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .ok()
            .map(Zeroizing::new)
            .and_then(|k| any_supported_type(&k).ok())
            .map(|signing| CertifiedKey::new(vec![der.clone()], signing).keys_match());
        if !matches!(matches, Some(Ok(()))) {
            self.err(
                name,
                "is not the certificate of private_key: give the certificate that key belongs to (the one registered with the provider)",
            );
            return None;
        }
        let b64 = |d: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d);
        Some((
            b64(ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &der).as_ref()),
            b64(ring::digest::digest(&ring::digest::SHA256, &der).as_ref()),
        ))
    }
}

/// One PEM block (RFC 7468): base64 in lines of 64 characters.
fn pem_block(label: &str, der: &[u8]) -> Zeroizing<String> {
    let b64 = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(der));
    let mut out = Zeroizing::new(String::with_capacity(b64.len() + b64.len() / 64 + 64));
    out.push_str(&format!("-----BEGIN {label}-----\n"));
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}
