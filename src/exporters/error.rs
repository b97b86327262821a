//! `ExportError`: how an export attempt failed, and whether trying again can help.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The peer may accept the same batch later (unavailable, throttled, timed out).
    #[error("{message}")]
    Retryable { message: String, retry_after: Option<Duration> },
    /// The peer will never accept this batch (unauthorized, not found, ...).
    #[error("{message}")]
    Permanent { message: String },
    /// The peer refused the batch's content as invalid (gRPC `INVALID_ARGUMENT`, HTTP 400): it
    /// may be a few spans of a merged batch, so the runner splits the batch to find them.
    #[error("{message}")]
    Refused { message: String },
}

impl ExportError {
    /// Messages carry the peer's error text, which may quote a URL: secrets in it are redacted
    /// before the message can reach a log.
    pub fn retryable(message: impl Into<String>) -> ExportError {
        ExportError::Retryable { message: clean(message.into()), retry_after: None }
    }
    pub fn permanent(message: impl Into<String>) -> ExportError {
        ExportError::Permanent { message: clean(message.into()) }
    }
}

fn clean(message: String) -> String {
    match crate::shared::redact_urls(&message) {
        std::borrow::Cow::Owned(clean) => clean,
        std::borrow::Cow::Borrowed(_) => message,
    }
}

/// A successful attempt; the peer may still have rejected some spans (`partial_success`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ExportOutcome {
    pub rejected_spans: u64,
    pub message: String,
}

/// Boxed cause of a set-up error (the client libraries' error types vary).
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Why an exporter (or its client) cannot be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("invalid endpoint {endpoint:?}")]
    Endpoint {
        endpoint: String,
        #[source]
        source: Cause,
    },
    #[error("cannot read tls.ca_file {}", path.display())]
    ReadCaFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("tls.ca_file {}", path.display())]
    CaFile {
        path: std::path::PathBuf,
        #[source]
        source: Cause,
    },
    #[error(transparent)]
    Tls(#[from] crate::shared::TlsError),
    #[error("TLS set-up failed")]
    TlsSetup(#[source] Cause),
    #[error("header {name:?}")]
    Header {
        name: String,
        #[source]
        source: Cause,
    },
    #[error("cannot build the HTTP client")]
    Client(#[source] Cause),
}
