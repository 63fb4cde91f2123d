//! The rustls client configuration shared by HTTPS and the WebSocket: the ring provider,
//! Mozilla's roots (webpki-roots) and optionally an operator's own CA.

use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

use crate::TransportError;

pub(crate) fn client_config(
    extra_ca_pem: Option<&[u8]>,
    webpki_roots: bool,
) -> Result<Arc<ClientConfig>, TransportError> {
    let mut roots = RootCertStore::empty();
    if webpki_roots {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    if let Some(pem) = extra_ca_pem {
        let mut added = 0usize;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| TransportError::Config(format!("extra CA PEM: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| TransportError::Config(format!("extra CA certificate: {e}")))?;
            added += 1;
        }
        if added == 0 {
            return Err(TransportError::Config(
                "extra CA PEM holds no certificate".into(),
            ));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TransportError::Config(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // HTTP/1.1 only: one protocol for REST and the WebSocket upgrade.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
