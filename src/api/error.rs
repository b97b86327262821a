//! `ApiError`: the one place read-API errors become HTTP replies. Clients get a short JSON body;
//! logs get the full cause. `ParamError`: a query parameter (or console form field) that cannot
//! be used, by name, with what is wrong with it as its source.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    /// A parameter that cannot be used: 400, the message `"{name}: {problem}"` (its chain).
    #[error(transparent)]
    BadParam(#[from] ParamError),
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
    /// What the client is told: a bad parameter with what is wrong with it, else the error's
    /// own text (an internal error's cause stays in the log).
    pub fn message(&self) -> String {
        match self {
            ApiError::BadParam(e) => e.message(),
            other => other.to_string(),
        }
    }

    /// The HTTP status this error is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::BadParam(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::NoBackend | ApiError::AuditUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            ApiError::BadRequest(_) | ApiError::BadParam(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::NoBackend => (StatusCode::SERVICE_UNAVAILABLE, "no_backend"),
            ApiError::AuditUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "audit_unavailable"),
            ApiError::Internal(source) => {
                tracing::error!(error = %crate::shared::error_chain(source.as_ref()), "read API request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        (status, Json(serde_json::json!({"error": code, "message": self.message()}))).into_response()
    }
}

/// A query parameter (or a console form field) that cannot be used. Shown as `"{name}:
/// {problem}"`; the console names its fields as its form labels them.
#[derive(Debug, thiserror::Error)]
#[error("{name}")]
pub struct ParamError {
    pub name: std::borrow::Cow<'static, str>,
    #[source]
    pub problem: ParamProblem,
}

impl ParamError {
    pub fn new(name: impl Into<std::borrow::Cow<'static, str>>, problem: impl Into<ParamProblem>) -> ParamError {
        ParamError { name: name.into(), problem: problem.into() }
    }

    /// `"{name}: {problem}"`, the problem with its own causes.
    pub fn message(&self) -> String {
        crate::shared::error_chain(self)
    }

    /// A query string that does not read as `name=value` pairs.
    pub fn query_string(rejection: &axum::extract::rejection::QueryRejection) -> ParamError {
        // The rejection's text already holds its cause (its `Display` and its `source` repeat
        // each other), so the text is kept rather than the rejection.
        ParamError::new("query string", ParamProblem::QueryString(rejection.body_text()))
    }
}

/// What is wrong with a parameter's value.
#[derive(Debug, thiserror::Error)]
pub enum ParamProblem {
    /// The query string as axum could not read it (its text).
    #[error("{0}")]
    QueryString(String),
    /// Not an RFC 3339 time.
    #[error(transparent)]
    Time(#[from] crate::shared::TimeError),
    /// Not a time the console's time fields take (RFC 3339, or a `datetime-local` value).
    #[error("{0:?} is not a time; use the date picker, 2026-11-20T09:30 (UTC) or RFC 3339 like 2026-11-20T09:30:00+01:00")]
    ConsoleTime(String),
    /// Not one of the values the parameter takes; `expected` names them.
    #[error("{value:?} is not {expected}")]
    NotOneOf { value: String, expected: &'static str },
    /// A page size out of range.
    #[error("{value:?} is not a whole number from 1 to {max}")]
    Limit { value: String, max: usize },
    /// A parameter the endpoint does not read; `known` lists those it does.
    #[error("unknown parameter; use {known}")]
    Unknown { known: &'static str },
    /// Two parameters that contradict each other (`since` after `until`).
    #[error("{0}")]
    Conflict(&'static str),
    /// Not a cursor this API made.
    #[error("not a cursor this API returned (use next_cursor as given)")]
    Cursor,
    /// A cursor of the list in another sort.
    #[error("it pages the list sorted by {made_for}, not by {asked}; pass the same sort as the request that returned it")]
    CursorSort { made_for: &'static str, asked: &'static str },
    /// The console's "next page" link is not one it made.
    #[error("not a page link this console made; start again from the first page")]
    PageLink,
    /// The console's "next page" link pages the list in the other sort.
    #[error("the link was made for the other sort order; start again from the first page")]
    PageLinkSort,
    /// A required value that is missing or empty; the text says what needs it.
    #[error("{0}")]
    Missing(&'static str),
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn reply(error: ApiError) -> (StatusCode, serde_json::Value) {
        let response = error.into_response();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn a_bad_parameter_is_a_400_naming_it_with_its_cause() {
        let time = crate::shared::parse_rfc3339("today").unwrap_err();
        let (status, body) = reply(ParamError::new("since", time).into()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(
            body,
            serde_json::json!({"error": "bad_request",
                "message": "since: \"today\" is not an RFC 3339 time (too short); write e.g. 2026-11-20T10:00:00Z"})
        );
        let unknown = ParamError::new("who".to_string(), ParamProblem::Unknown { known: "since or until" });
        assert_eq!(reply(unknown.into()).await.1["message"], "who: unknown parameter; use since or until");
    }

    #[test]
    fn the_message_is_the_name_then_the_problem() {
        let e = ParamError::new("Sort", ParamProblem::NotOneOf { value: "up".into(), expected: "a sort; use newest or waiting" });
        assert_eq!(e.message(), r#"Sort: "up" is not a sort; use newest or waiting"#);
        let e = ParamError::new("limit", ParamProblem::Limit { value: "0".into(), max: 1000 });
        assert_eq!(ApiError::from(e).message(), r#"limit: "0" is not a whole number from 1 to 1000"#);
    }
}
