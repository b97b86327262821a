//! `AuthError`: every way a caller is turned away, mapped to HTTP and gRPC in this one place.
//! Clients learn only "missing", "invalid" or "not allowed"; the audit and the debug log get
//! the reason.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token in `Authorization: Bearer` or `X-Forwarded-Access-Token`.
    #[error("no bearer token")]
    Missing,
    /// A token was sent but cannot be trusted; the reason is for the audit, never the client.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// A valid token without the permission the request needs.
    #[error("not allowed: {0}")]
    Forbidden(String),
    /// A service token sending spans that claim to be another service.
    #[error("service identity {identity:?} may not send spans of service {claimed:?}")]
    ServiceMismatch { identity: String, claimed: String },
}

impl AuthError {
    /// `unauthenticated` (401) or `forbidden` (403), for the audit's outcome and metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            AuthError::Missing | AuthError::Invalid(_) => "unauthenticated",
            AuthError::Forbidden(_) | AuthError::ServiceMismatch { .. } => "forbidden",
        }
    }

    pub fn is_authentication_failure(&self) -> bool {
        matches!(self, AuthError::Missing | AuthError::Invalid(_))
    }

    pub fn http_status(&self) -> StatusCode {
        if self.is_authentication_failure() {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::FORBIDDEN
        }
    }

    /// What the client is told: nothing about why a token failed.
    pub fn public_message(&self) -> String {
        match self {
            AuthError::Missing => "a bearer token is required".into(),
            AuthError::Invalid(_) => "the bearer token is not valid".into(),
            AuthError::Forbidden(_) => "the token does not grant this permission".into(),
            e @ AuthError::ServiceMismatch { .. } => e.to_string(),
        }
    }

    /// The `WWW-Authenticate` challenge of a 401 (RFC 6750).
    pub fn challenge(&self) -> Option<HeaderValue> {
        match self {
            AuthError::Missing => Some(HeaderValue::from_static("Bearer realm=\"tracegate\"")),
            AuthError::Invalid(_) => Some(HeaderValue::from_static("Bearer realm=\"tracegate\", error=\"invalid_token\"")),
            _ => None,
        }
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let code = self.outcome();
        let mut response = (self.http_status(), Json(serde_json::json!({"error": code, "message": self.public_message()}))).into_response();
        if let Some(challenge) = self.challenge() {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}

impl From<AuthError> for tonic::Status {
    fn from(e: AuthError) -> tonic::Status {
        if e.is_authentication_failure() {
            tonic::Status::unauthenticated(e.public_message())
        } else {
            tonic::Status::permission_denied(e.public_message())
        }
    }
}
