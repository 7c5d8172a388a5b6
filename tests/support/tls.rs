//! An HTTPS server on 127.0.0.1:0 that requires a client certificate
//! signed by a given CA (rustls' `WebPkiClientVerifier`: the handshake
//! fails without one), for the mTLS tests. `POST /token` answers like a
//! token endpoint; every other request is echoed with the SHA-256 of the
//! client certificate the handshake verified.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// The running server and what it saw.
pub struct MtlsServer {
    pub addr: SocketAddr,
    /// Per request: path and the client certificate's SHA-256 (hex).
    pub seen: Arc<Mutex<Vec<(String, String)>>>,
    /// Handshakes that failed (no or a foreign client certificate).
    pub refused: Arc<Mutex<usize>>,
}

impl MtlsServer {
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.addr.port())
    }

    pub async fn start(server_cert: &str, server_key: &str, client_ca: &str) -> MtlsServer {
        authproxy::install_crypto_provider();
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(client_ca.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
            .build()
            .unwrap();
        let chain: Vec<_> = CertificateDer::pem_slice_iter(server_cert.as_bytes())
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_slice(server_key.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let refused: Arc<Mutex<usize>> = Arc::default();
        let (seen2, refused2) = (seen.clone(), refused.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, seen, refused) = (acceptor.clone(), seen2.clone(), refused2.clone());
                tokio::spawn(async move {
                    let tls = match acceptor.accept(tcp).await {
                        Ok(tls) => tls,
                        Err(_) => {
                            *refused.lock().unwrap() += 1;
                            return;
                        }
                    };
                    let peer = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| super::sha256(c.as_ref()))
                        .unwrap_or_default();
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let (seen, peer) = (seen.clone(), peer.clone());
                        async move {
                            let path = req.uri().path().to_string();
                            let _ = req.into_body().collect().await;
                            seen.lock().unwrap().push((path.clone(), peer.clone()));
                            let body = if path == "/token" {
                                serde_json::json!({
                                    "access_token": format!("mtls-token-{}", &peer[..16]),
                                    "token_type": "Bearer",
                                    "expires_in": 3600,
                                })
                            } else {
                                serde_json::json!({ "path": path, "client_cert_sha256": peer })
                            };
                            Ok::<_, std::convert::Infallible>(
                                Response::builder()
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(body.to_string())))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        MtlsServer {
            addr,
            seen,
            refused,
        }
    }
}
