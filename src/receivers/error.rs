//! `IngestError`: every way a receiver refuses a request, mapped to HTTP and gRPC in one place.

use std::time::Duration;

use crate::pipeline::AdmitError;

/// How long a refused client should wait before trying again.
pub const RETRY_HINT: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("unsupported content type {0:?}; use application/x-protobuf or application/json")]
    UnsupportedMediaType(String),
    #[error("unsupported content encoding {0:?}; use gzip, zstd, deflate or none")]
    UnsupportedEncoding(String),
    #[error("request body larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("request body inflates more than {ratio} times; refused as a decompression bomb")]
    DecompressionBomb { ratio: u32 },
    #[error("{0}")]
    Admit(#[from] AdmitError),
    #[error("sender over its rate limit; retry in {0:?}")]
    Throttled(Duration),
    /// The process is past the memory limiter's soft limit (`service.memory_limiter`).
    #[error("the gateway is past its memory limit; retry later")]
    MemoryLimit,
}

impl IngestError {
    /// A short label for the refused-spans metric.
    pub fn reason(&self) -> &'static str {
        match self {
            IngestError::Malformed(_) => "malformed",
            IngestError::UnsupportedMediaType(_) | IngestError::UnsupportedEncoding(_) => "unsupported",
            IngestError::TooLarge { .. } | IngestError::DecompressionBomb { .. } => "too_large",
            IngestError::Admit(AdmitError::QueueFull { .. }) => "queue_full",
            IngestError::Admit(AdmitError::TooLarge { .. }) => "too_large",
            IngestError::Admit(AdmitError::ShuttingDown) => "shutting_down",
            IngestError::Admit(AdmitError::Storage { .. }) => "storage",
            IngestError::Throttled(_) => "throttled",
            IngestError::MemoryLimit => "memory_limit",
        }
    }

    pub fn http_status(&self) -> http::StatusCode {
        use http::StatusCode;
        match self {
            IngestError::Malformed(_) => StatusCode::BAD_REQUEST,
            IngestError::UnsupportedMediaType(_) | IngestError::UnsupportedEncoding(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            IngestError::TooLarge { .. } | IngestError::DecompressionBomb { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::Admit(AdmitError::TooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::Admit(AdmitError::QueueFull { .. } | AdmitError::ShuttingDown | AdmitError::Storage { .. }) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            IngestError::Throttled(_) => StatusCode::TOO_MANY_REQUESTS,
            IngestError::MemoryLimit => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// Whether the client should retry (and gets a retry hint).
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            IngestError::Admit(AdmitError::QueueFull { .. } | AdmitError::ShuttingDown | AdmitError::Storage { .. })
                | IngestError::Throttled(_)
                | IngestError::MemoryLimit
        )
    }

    /// How long a refused client should wait: the throttle's own delay, else the general hint.
    pub fn retry_after(&self) -> Duration {
        match self {
            IngestError::Throttled(wait) => *wait,
            _ => RETRY_HINT,
        }
    }
}

impl IngestError {
    pub fn grpc_code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            IngestError::Malformed(_) | IngestError::UnsupportedMediaType(_) | IngestError::UnsupportedEncoding(_) => Code::InvalidArgument,
            IngestError::TooLarge { .. } | IngestError::DecompressionBomb { .. } | IngestError::Admit(AdmitError::TooLarge { .. }) => {
                Code::InvalidArgument
            }
            IngestError::Admit(AdmitError::QueueFull { .. } | AdmitError::ShuttingDown | AdmitError::Storage { .. }) => Code::Unavailable,
            IngestError::Throttled(_) => Code::ResourceExhausted,
            IngestError::MemoryLimit => Code::Unavailable,
        }
    }
}

impl From<IngestError> for tonic::Status {
    fn from(e: IngestError) -> tonic::Status {
        let code = e.grpc_code();
        if e.retryable() {
            use tonic_types::{ErrorDetails, StatusExt};
            let details = ErrorDetails::with_retry_info(Some(e.retry_after()));
            tonic::Status::with_error_details(code, e.to_string(), details)
        } else {
            tonic::Status::new(code, e.to_string())
        }
    }
}
