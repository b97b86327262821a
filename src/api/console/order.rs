//! `GET /orders/{order_id}`: one order — where it is, how long each step took, its alerts.

use axum::extract::{Path, State};
use axum::response::Response;
use maud::html;

use super::{Ctx, Nav, PageError};
use crate::api::{ApiError, ApiState};

pub async fn page(ctx: Ctx, State(state): State<ApiState>, Path(order_id): Path<String>) -> Result<Response, PageError> {
    let backend = state.backend.clone().ok_or(ApiError::NoBackend)?;
    let timeline = backend.order_timeline(order_id.clone()).await?.ok_or_else(|| ApiError::NotFound(format!("order {order_id} not found")))?;
    let body = html! {
        h1 { "Order " (timeline.order_id) }
        p { "Status: " (timeline.status.as_deref().unwrap_or("unknown")) }
    };
    Ok(ctx.page(&format!("Order {order_id}"), Nav::Orders, body))
}
