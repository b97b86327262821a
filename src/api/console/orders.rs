//! `GET /`: the orders page — find an order by id, or list orders by status, service, time and
//! alert state.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::response::Response;
use maud::html;

use super::{Ctx, Nav, PageError};
use crate::api::{ApiError, ApiState};
use crate::orders::OrderQuery;
use crate::shared::format_rfc3339_nanos;

pub async fn page(ctx: Ctx, State(state): State<ApiState>, Query(params): Query<HashMap<String, String>>) -> Result<Response, PageError> {
    let backend = state.backend.clone().ok_or(ApiError::NoBackend)?;
    let query = OrderQuery { limit: 100, ..Default::default() };
    let orders = backend.orders(query).await?;
    let search = params.get("q").cloned().unwrap_or_default();
    let body = html! {
        h1 { "Orders" }
        form.filters method="get" action=(ctx.href("/")) role="search" {
            label { "Order id" input type="search" name="q" value=(search) placeholder="A-1001"; }
            button type="submit" { "Find" }
        }
        @if orders.is_empty() {
            p.empty { "No orders yet." }
        } @else {
            table {
                thead { tr { th scope="col" { "Order" } th scope="col" { "Status" } th scope="col" { "Services" } th scope="col" { "Last step" } } }
                tbody {
                    @for o in &orders {
                        tr {
                            td { a href=(ctx.href(&format!("/orders/{}", urlencode(&o.order_id)))) { (o.order_id) } }
                            td { (o.status.as_deref().unwrap_or("—")) }
                            td { (o.services.join(", ")) }
                            td { time datetime=(format_rfc3339_nanos(o.last_seen)) data-local { (format_rfc3339_nanos(o.last_seen)) } }
                        }
                    }
                }
            }
        }
    };
    Ok(ctx.page("Orders", Nav::Orders, body))
}

/// A path segment, percent-encoded (order ids may hold `/`, `?`, `#`, spaces).
pub fn urlencode(segment: &str) -> String {
    url::form_urlencoded::byte_serialize(segment.as_bytes()).collect::<String>().replace('+', "%20")
}
