//! The roots a TLS client trusts: the public web roots, or the CA certificates of one PEM file
//! (an identity provider or a peer behind a private CA).

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// The certificates of `ca_file`, or the public web roots without one. `what` names the setting
/// in errors (`tls.ca_file`, `jwks.ca_file`).
pub fn root_store(ca_file: Option<&Path>, what: &str) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path).map_err(|e| format!("cannot read {what} {}: {e}", path.display()))?;
            let mut added = 0;
            for cert in certs {
                let cert = cert.map_err(|e| format!("{what} {}: {e}", path.display()))?;
                roots.add(cert).map_err(|e| format!("{what} {}: {e}", path.display()))?;
                added += 1;
            }
            if added == 0 {
                return Err(format!("{what} {}: no certificate in the file", path.display()));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(roots)
}
