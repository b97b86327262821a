//! Why a notifier cannot be set up (a URL, an address, a header or a CA file it was given).
//! Configuration validation reports the same problems with their path; at start-up they name
//! the notifier through `MonitorStartError`.

use crate::shared::TlsError;

#[derive(Debug, thiserror::Error)]
pub enum NotifierSetupError {
    #[error("{0:?} is not a URL")]
    Url(String, #[source] http::uri::InvalidUri),
    #[error("{0:?} needs a scheme: http://host:port or https://host:port")]
    NoScheme(String),
    #[error("{0:?} has no host")]
    NoHost(String),
    #[error("no endpoints")]
    NoEndpoints,
    #[error("{0:?} is not an e-mail address")]
    Mailbox(String, #[source] lettre::address::AddressError),
    #[error("header {0:?}")]
    Header(String, #[source] HeaderProblem),
    #[error("credentials: not a valid header value")]
    Credentials,
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("smtp.ca_file")]
    SmtpCertificate(#[source] lettre::transport::smtp::Error),
    #[error("TLS set-up failed")]
    SmtpTls(#[source] lettre::transport::smtp::Error),
}

/// What is wrong with a configured header.
#[derive(Debug, thiserror::Error)]
pub enum HeaderProblem {
    #[error(transparent)]
    Name(#[from] http::header::InvalidHeaderName),
    #[error(transparent)]
    Value(#[from] http::header::InvalidHeaderValue),
}
