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

use super::{ApiError, ApiState, Caller};
use crate::audit::{Actor, AuditEvent};
use crate::auth::{AuthError, Permission};

pub async fn get_trace(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(trace_id): Path<String>,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(format!("query string: {}", e.body_text())))?;
    if let Some(other) = params.keys().find(|k| !matches!(k.as_str(), "unmask" | "reason")) {
        return Err(ApiError::BadRequest(format!("{other}: unknown parameter; use unmask and reason")));
    }
    let unmask = match params.get("unmask").map(String::as_str) {
        None | Some("" | "false") => false,
        Some("true") => true,
        Some(other) => return Err(ApiError::BadRequest(format!("unmask: {other:?} is not true or false"))),
    };
    let id = parse_trace_id(&trace_id)?;
    if unmask {
        let reason = params.get("reason").map(|r| r.trim()).filter(|r| !r.is_empty());
        let event = |outcome: &str| {
            AuditEvent::new(Actor::of(&caller.principal), "unmask", format!("/api/v1/traces/{trace_id}"), outcome)
                .from_client(&caller.client)
                .with_request_id(Some(caller.request_id.clone()))
        };
        if !Permission::Unmask.granted_to(&caller.principal) {
            state.access.record(&event("forbidden").because("unmask needs the admin role"));
            return Ok(AuthError::Forbidden("unmask needs the admin role".into()).into_response());
        }
        let Some(reason) = reason else {
            return Err(ApiError::BadRequest("reason: unmasking personal data needs a reason".into()));
        };
        // Personal data is never shown in clear unaudited: no audit log, no unmask.
        let Some(audit) = state.access.audit() else {
            tracing::warn!("unmask refused: no audit log is configured (audit.path)");
            return Err(ApiError::AuditUnavailable);
        };
        if let Err(error) = audit.record(&event("allowed").because(reason.to_string())) {
            tracing::error!(error = %crate::shared::error_chain(&error), "audit log unwritable; refusing to unmask");
            return Err(ApiError::AuditUnavailable);
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

fn parse_trace_id(text: &str) -> Result<Vec<u8>, ApiError> {
    let bytes = hex::decode(text).map_err(|_| ApiError::BadRequest(format!("{text:?} is not a hex trace id")))?;
    if bytes.len() != 16 {
        return Err(ApiError::BadRequest(format!("a trace id has 32 hex digits; {text:?} has {}", text.len())));
    }
    Ok(bytes)
}
