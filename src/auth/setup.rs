//! Why authentication cannot start: a key that does not load, a JWKS or identity-provider URL
//! that cannot be used, a trusted proxy that is not an address. Each names the setting; the
//! cause is its source.

use std::path::PathBuf;

use crate::shared::TlsError;

#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    /// `at` is the key's place in the configuration (`auth.issuers[0].keys[1]`).
    #[error("{at}")]
    Key {
        at: String,
        #[source]
        source: KeyError,
    },
    /// `at` is the JWKS's place in the configuration (`auth.issuers[0].jwks`).
    #[error("{at}")]
    Jwks {
        at: String,
        #[source]
        source: ClientSetupError,
    },
    #[error(transparent)]
    TrustedProxy(#[from] TrustedProxyError),
    /// The browser sign-in's identity provider client.
    #[error(transparent)]
    Login(ClientSetupError),
}

/// A configured verification key that does not load.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("unknown algorithm {0:?}")]
    UnknownAlgorithm(String),
    #[error("cannot read {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("an HMAC key needs secret or secret_file")]
    NoSecret,
    #[error("an HMAC secret needs at least 32 bytes")]
    ShortSecret,
    #[error("a public-key algorithm needs public_key or public_key_file")]
    NoPublicKey,
    #[error("not a {algorithm} public key in PEM")]
    Pem {
        algorithm: String,
        #[source]
        source: jsonwebtoken::errors::Error,
    },
}

/// An HTTPS client (JWKS, identity provider) that cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClientSetupError {
    #[error("{setting}")]
    Url {
        setting: &'static str,
        #[source]
        source: http::uri::InvalidUri,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// An `auth.trusted_proxies` entry that is neither an address nor a CIDR range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an IP address or CIDR range")]
pub struct TrustedProxyError(pub String);

/// Why a URL of the sign-in configuration may not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoginUrlError {
    #[error("not a URL")]
    NotAUrl(#[source] http::uri::InvalidUri),
    #[error("not an absolute URL")]
    NotAbsolute,
    #[error("plain http needs allow_insecure_loopback: true (loopback only)")]
    InsecureLoopback,
    #[error("must be https://")]
    NotHttps,
}
