//! What can stop a load run before it starts.

/// Errors of `tracegate loadgen`. Failures of single requests during the run are not errors:
/// they are counted in the report.
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    #[error("invalid endpoint {endpoint:?}")]
    InvalidEndpoint {
        endpoint: String,
        #[source]
        source: http::uri::InvalidUri,
    },
    #[error("endpoint {endpoint:?} must start with http:// (the load generator speaks plain text only)")]
    UnsupportedScheme { endpoint: String },
    #[error("cannot connect to {endpoint}")]
    Connect {
        endpoint: String,
        #[source]
        source: tonic::transport::Error,
    },
}
