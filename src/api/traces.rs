//! `GET /api/v1/traces/{trace_id}`: every stored span of a trace, as OTLP JSON. Personal data
//! (`auth.personal_data.keys`) is shown as pseudonyms; an admin may ask for clear values with
//! `?unmask=true&reason=...`, which is audited before it is answered (and refused when the
//! audit cannot be written).

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use super::{ApiError, ApiState, Caller, ParamError, ParamProblem};
use crate::audit::{Actor, AuditEvent};
use crate::auth::{AuthError, Permission};

pub async fn get_trace(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(trace_id): Path<String>,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| ParamError::query_string(&e))?;
    if let Some(other) = params.keys().find(|k| !matches!(k.as_str(), "unmask" | "reason")) {
        return Err(ParamError::new(other.clone(), ParamProblem::Unknown { known: "unmask and reason" }).into());
    }
    let unmask = match params.get("unmask").map(String::as_str) {
        None | Some("" | "false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ParamError::new("unmask", ParamProblem::NotOneOf { value: other.to_string(), expected: "true or false" }).into())
        }
    };
    let id = parse_trace_id(&trace_id)?;
    if unmask {
        let resource = format!("/api/v1/traces/{trace_id}");
        match authorize_unmask(&state, &caller, &resource, params.get("reason").map(String::as_str)).await {
            Ok(()) => {}
            Err(UnmaskRefusal::Forbidden) => return Ok(AuthError::Forbidden(UNMASK_NEEDS_ADMIN.into()).into_response()),
            Err(UnmaskRefusal::Failed(error)) => return Err(error),
        }
    }
    let backend = state.backend.clone().ok_or(ApiError::NoBackend)?;
    let found = backend.trace(id).await?;
    match found {
        Some(mut resource_spans) => {
            // Without authentication (one machine, loopback) there is no one to hide data from.
            if !unmask && !caller.principal.anonymous {
                state.pseudonyms.mask_spans(&mut resource_spans);
            }
            Ok(Json(ExportTraceServiceRequest { resource_spans }).into_response())
        }
        None => Err(ApiError::NotFound(format!("trace {trace_id} not found"))),
    }
}

const UNMASK_NEEDS_ADMIN: &str = "unmask needs the admin role";

/// Why an unmask was refused.
#[derive(Debug)]
pub(crate) enum UnmaskRefusal {
    /// The caller is not an admin (recorded in the audit log as `forbidden`).
    Forbidden,
    /// No reason (400), or no writable audit log (503).
    Failed(ApiError),
}

/// Decides whether `caller` may see `resource` (a trace) with personal data in clear, and
/// records the decision: admins only, with a non-empty `reason`, written to the audit log
/// before anything is shown, and refused when the audit log is missing or cannot be written.
/// Shared by `GET /api/v1/traces/{id}?unmask=true` and the console's `POST /traces/{id}/unmask`.
pub(crate) async fn authorize_unmask(state: &ApiState, caller: &Caller, resource: &str, reason: Option<&str>) -> Result<(), UnmaskRefusal> {
    let reason = reason.map(str::trim).filter(|r| !r.is_empty());
    let event = |outcome: &str| {
        AuditEvent::new(Actor::of(&caller.principal), "unmask", resource, outcome)
            .from_client(&caller.client)
            .with_request_id(Some(caller.request_id.clone()))
    };
    if !Permission::Unmask.granted_to(&caller.principal) {
        state.access.record(&event("forbidden").because(UNMASK_NEEDS_ADMIN));
        return Err(UnmaskRefusal::Forbidden);
    }
    let Some(reason) = reason else {
        return Err(UnmaskRefusal::Failed(
            ParamError::new("reason", ParamProblem::Missing("unmasking personal data needs a reason")).into(),
        ));
    };
    // Personal data is never shown in clear unaudited: no audit log, no unmask.
    let Some(audit) = state.access.audit() else {
        tracing::warn!("unmask refused: no audit log is configured (audit.path)");
        return Err(UnmaskRefusal::Failed(ApiError::AuditUnavailable));
    };
    if let Err(error) = audit.record_acked(&event("allowed").because(reason.to_string())).await {
        tracing::error!(error = %crate::shared::error_chain(&error), "audit log unwritable; refusing to unmask");
        return Err(UnmaskRefusal::Failed(ApiError::AuditUnavailable));
    }
    Ok(())
}

pub(crate) fn parse_trace_id(text: &str) -> Result<Vec<u8>, ApiError> {
    let bytes = hex::decode(text).map_err(|_| ApiError::BadRequest(format!("{text:?} is not a hex trace id")))?;
    if bytes.len() != 16 {
        return Err(ApiError::BadRequest(format!("a trace id has 32 hex digits; {text:?} has {}", text.len())));
    }
    Ok(bytes)
}
