//! The roots a TLS client trusts: the public web roots, or the CA certificates of one PEM file
//! (an identity provider or a peer behind a private CA), and the HTTP(S) connector built on them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::client::legacy::connect::HttpConnector;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// Why a TLS client cannot be set up. `what` names the setting (`tls.ca_file`), `path` its file;
/// the cause, if any, is the source.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {}", path.display())]
    Read {
        what: String,
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{what} {}", path.display())]
    Certificate {
        what: String,
        path: PathBuf,
        #[source]
        source: CertificateProblem,
    },
    #[error("{what} {}: no certificate in the file", path.display())]
    NoCertificate { what: String, path: PathBuf },
    #[error("TLS set-up failed")]
    Setup(#[source] rustls::Error),
}

/// What is wrong with a certificate of a CA file.
#[derive(Debug, thiserror::Error)]
pub enum CertificateProblem {
    #[error(transparent)]
    Pem(#[from] rustls::pki_types::pem::Error),
    #[error(transparent)]
    Refused(#[from] rustls::Error),
}

/// The certificates of `ca_file`, or the public web roots without one. `what` names the setting
/// in errors (`tls.ca_file`, `jwks.ca_file`).
pub fn root_store(ca_file: Option<&Path>, what: &str) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in ca_certificates(path, what)? {
                roots.add(cert).map_err(|e| certificate(what, path, e.into()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    Ok(roots)
}

/// The certificates of a PEM file, at least one (for a client that takes certificates rather
/// than a root store, such as the SMTP client).
pub fn ca_certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path).map_err(|source| TlsError::Read { what: what.into(), path: path.into(), source })?;
    let certs = certs.collect::<Result<Vec<_>, _>>().map_err(|e| certificate(what, path, e.into()))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { what: what.into(), path: path.into() });
    }
    Ok(certs)
}

fn certificate(what: &str, path: &Path, source: CertificateProblem) -> TlsError {
    TlsError::Certificate { what: what.into(), path: path.into(), source }
}

/// The connector of every HTTP client of the crate: `http://` and `https://` (rustls with ring,
/// trusting `ca_file` or the public roots), HTTP/1, no Nagle delay, connecting within
/// `connect_timeout`.
pub fn https_connector(
    ca_file: Option<&Path>,
    what: &str,
    connect_timeout: Duration,
) -> Result<hyper_rustls::HttpsConnector<HttpConnector>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?
        .with_root_certificates(root_store(ca_file, what)?)
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    // The scheme decides: https_or_http() below wraps https:// in TLS.
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    Ok(hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().wrap_connector(http))
}
