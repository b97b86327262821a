//! `GET /alerts`: the order monitors' alerts, firing and resolved, filterable.

use axum::extract::State;
use axum::response::Response;
use maud::html;

use super::{Ctx, Nav, PageError};
use crate::api::ApiState;

pub async fn page(ctx: Ctx, State(_state): State<ApiState>) -> Result<Response, PageError> {
    let body = html! { h1 { "Alerts" } };
    Ok(ctx.page("Alerts", Nav::Alerts, body))
}
