//! Which upstream certificates are trusted, and which protocols are offered by ALPN.
//!
//! Trusted: the system's roots (as `rustls-native-certs` finds them, so `SSL_CERT_FILE` and
//! `SSL_CERT_DIR` still replace them) plus every certificate of `upstream_ca`, a PEM file added
//! beside them, never instead: a private gateway's CA and the public API can both be reached.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

/// ALPN for requests: HTTP/2 when the upstream offers it, else HTTP/1.1.
pub(super) const H2_AND_HTTP1: &[&[u8]] = &[b"h2", b"http/1.1"];
/// ALPN for protocol upgrades (WebSocket): HTTP/2 has no `Upgrade`.
pub(super) const HTTP1_ONLY: &[&[u8]] = &[b"http/1.1"];

/// The roots an upstream's certificate may chain to.
pub(super) fn roots(upstream_ca: Option<&Path>) -> std::io::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    // Missing or unreadable system roots leave only `upstream_ca` (an image without CA files can
    // still reach a plain-HTTP upstream, or one signed by that CA).
    let system = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(system.certs);
    if let Some(path) = upstream_ca {
        for cert in read_pem(path)? {
            roots.add(cert).map_err(|e| {
                std::io::Error::other(format!(
                    "upstream_ca {}: not a usable CA certificate: {e}",
                    path.display()
                ))
            })?;
        }
    }
    Ok(roots)
}

/// The certificates of a PEM file; an error when it has none.
fn read_pem(path: &Path) -> std::io::Result<Vec<CertificateDer<'static>>> {
    let fail =
        |what: String| std::io::Error::other(format!("upstream_ca {}: {what}", path.display()));
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(e.to_string()))?;
    if certs.is_empty() {
        return Err(fail("holds no PEM certificate".into()));
    }
    Ok(certs)
}

/// A client configuration trusting `roots` and offering `alpn`.
pub(super) fn client_config(
    roots: RootCertStore,
    alpn: &[&[u8]],
) -> std::io::Result<Arc<ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_adds_to_the_system_roots() {
        let system = roots(None).unwrap().len();
        let ca = rethread_fake::TestCa::new().unwrap();
        let path = std::env::temp_dir().join(format!("rethread-ca-{}.pem", std::process::id()));
        std::fs::write(&path, ca.ca_pem()).unwrap();
        assert_eq!(roots(Some(&path)).unwrap().len(), system + 1);
        std::fs::write(&path, "not a certificate").unwrap();
        let err = roots(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("holds no PEM certificate"), "{err}");
        std::fs::remove_file(&path).unwrap();
        let err = roots(Some(&path)).unwrap_err().to_string();
        assert!(err.starts_with("upstream_ca "), "{err}");
    }
}
