//! `GET /api/v1/traces/{trace_id}`: every stored span of a trace, as OTLP JSON.

use axum::extract::{Path, State};
use axum::Json;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use super::{ApiError, ApiState};

pub async fn get_trace(State(state): State<ApiState>, Path(trace_id): Path<String>) -> Result<Json<ExportTraceServiceRequest>, ApiError> {
    let id = parse_trace_id(&trace_id)?;
    let backend = state.backend.clone().ok_or(ApiError::NoBackend)?;
    let found = backend.trace(id).await?;
    match found {
        Some(resource_spans) => Ok(Json(ExportTraceServiceRequest { resource_spans })),
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
