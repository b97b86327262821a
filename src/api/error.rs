//! `ApiError`: the one place read-API errors become HTTP replies. Clients get a short JSON body;
//! logs get the full cause.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("no read backend is configured (add an embedded exporter, or name an elasticsearch exporter in query.backend)")]
    NoBackend,
    #[error("the audit log cannot be written; admin actions are refused until it can")]
    AuditUnavailable,
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<crate::query::QueryError> for ApiError {
    fn from(e: crate::query::QueryError) -> ApiError {
        match e {
            crate::query::QueryError::Unsupported(what) => ApiError::BadRequest(what.to_string()),
            e => ApiError::Internal(Box::new(e)),
        }
    }
}

impl ApiError {
    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::NoBackend | ApiError::AuditUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::NoBackend => (StatusCode::SERVICE_UNAVAILABLE, "no_backend"),
            ApiError::AuditUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "audit_unavailable"),
            ApiError::Internal(source) => {
                tracing::error!(error = %crate::shared::error_chain(source.as_ref()), "read API request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        (status, Json(serde_json::json!({"error": code, "message": self.to_string()}))).into_response()
    }
}
