//! `EsError`: why a request to Elasticsearch (or what the exporter made of its reply) failed,
//! with the cause chain kept (`shared::error_chain` prints it whole).

/// A failed exchange with Elasticsearch.
#[derive(Debug, thiserror::Error)]
pub enum EsError {
    /// No HTTP reply: connection refused, timed out, TLS failure, ...
    #[error(transparent)]
    Transport(#[from] elasticsearch::Error),
    /// A reply, but not the status the request needed; `what` names the request ("search
    /// /index/_search", "creating index").
    #[error("{what}: HTTP {status}{}", if body.is_empty() { String::new() } else { format!(": {body}") })]
    Status { what: String, status: u16, body: String },
    /// A 2xx reply that is not what Elasticsearch answers to this request.
    #[error("{what}: unreadable reply")]
    Unreadable {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    /// A document that cannot be written as JSON.
    #[error("cannot encode {what}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// Elasticsearch refused one document of a bulk request for good.
    #[error("{what}: Elasticsearch refused the document (HTTP {status}): {error}")]
    Refused { what: String, status: u16, error: serde_json::Value },
    /// A bulk request as a whole did not go through (its outcome as `retry::classify` read it).
    #[error("{what}: {outcome}")]
    Bulk { what: &'static str, outcome: String },
    /// Conditional writes kept conflicting with other writers.
    #[error("{pending} orders still conflicting after {attempts} attempts")]
    Conflicts { pending: usize, attempts: u32 },
    /// A request body was not built: the runtime is shutting down.
    #[error("bulk request not built")]
    Shutdown(#[from] crate::shared::RuntimeShutdown),
    /// A stored document the read path cannot use.
    #[error("unreadable {what} {id}: {error}")]
    Document { what: &'static str, id: String, error: serde_json::Value },
}

impl EsError {
    /// A reply with an unexpected status; the body is cut to 512 bytes.
    pub fn status(what: impl Into<String>, status: u16, body: &[u8]) -> EsError {
        EsError::Status { what: what.into(), status, body: String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned() }
    }
}

/// For callers outside the exporters that still report errors as text: the whole chain.
/// Why a span document read back from Elasticsearch does not give its span back.
#[derive(Debug, thiserror::Error)]
pub enum DocumentError {
    #[error("stored {what} is not base64")]
    Base64 {
        what: &'static str,
        #[source]
        source: base64::DecodeError,
    },
    #[error("stored {what} is corrupt")]
    Protobuf {
        what: &'static str,
        #[source]
        source: prost::DecodeError,
    },
    #[error("stored {what} {text:?} is not hex")]
    Hex {
        what: &'static str,
        text: String,
        #[source]
        source: hex::FromHexError,
    },
    #[error("stored span time")]
    Time(#[source] crate::shared::TimeError),
}
