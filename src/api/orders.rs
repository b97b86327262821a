//! `GET /api/v1/orders/{order_id}` (an order's timeline) and `GET /api/v1/orders` (a page of
//! order summaries, filtered by status, service and time).

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::Serialize;

use super::{ApiError, ApiState};
use crate::store::{parse_rfc3339, OrderQuery, OrderSummary, OrderTimeline};

/// Page size when the request names none.
pub const DEFAULT_LIMIT: usize = 100;
/// The largest page a request may ask for.
pub const MAX_LIMIT: usize = 1000;

#[derive(Debug, Serialize)]
pub struct OrderPage {
    pub orders: Vec<OrderSummary>,
    pub limit: usize,
}

pub async fn get_order(State(state): State<ApiState>, Path(order_id): Path<String>) -> Result<Json<OrderTimeline>, ApiError> {
    let backend = state.backend.clone().ok_or(ApiError::NoBackend)?;
    match backend.order_timeline(order_id.clone()).await? {
        Some(timeline) => Ok(Json(timeline)),
        None => Err(ApiError::NotFound(format!("order {order_id} not found"))),
    }
}

pub async fn list_orders(
    State(state): State<ApiState>,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<OrderPage>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(format!("query string: {}", e.body_text())))?;
    let query = parse_list_query(&params)?;
    let limit = query.limit;
    let backend = state.backend.clone().ok_or(ApiError::NoBackend)?;
    let orders = backend.orders(query).await?;
    Ok(Json(OrderPage { orders, limit }))
}

/// The list's query parameters. An empty value means "no filter", so a form may send every
/// field; an unknown parameter is an error rather than a filter silently ignored.
fn parse_list_query(params: &HashMap<String, String>) -> Result<OrderQuery, ApiError> {
    let mut query = OrderQuery { limit: DEFAULT_LIMIT, ..Default::default() };
    let mut names: Vec<&String> = params.keys().collect();
    names.sort();
    for name in names {
        let value = params[name].trim();
        if value.is_empty() {
            continue;
        }
        let time = |what: &str| parse_rfc3339(value).map_err(|e| ApiError::BadRequest(format!("{what}: {e}")));
        match name.as_str() {
            "status" => query.status = Some(value.to_string()),
            "service" => query.service = Some(value.to_string()),
            "since" => query.since_ns = Some(time("since")?),
            "until" => query.until_ns = Some(time("until")?),
            "limit" => {
                query.limit = match value.parse::<usize>() {
                    Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                    _ => return Err(ApiError::BadRequest(format!("limit: {value:?} is not a whole number from 1 to {MAX_LIMIT}"))),
                }
            }
            other => return Err(ApiError::BadRequest(format!("{other}: unknown parameter; use status, service, since, until or limit"))),
        }
    }
    if let (Some(since), Some(until)) = (query.since_ns, query.until_ns) {
        if since > until {
            return Err(ApiError::BadRequest("since: must not be after until".into()));
        }
    }
    Ok(query)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<OrderQuery, String> {
        let params = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        parse_list_query(&params).map_err(|e| e.to_string())
    }

    #[test]
    fn list_parameters() {
        assert_eq!(parse(&[]).unwrap(), OrderQuery { limit: 100, ..Default::default() });
        assert_eq!(parse(&[("status", ""), ("service", ""), ("since", ""), ("until", ""), ("limit", "")]).unwrap(), OrderQuery::default());
        let q = parse(&[
            ("status", "accepted"),
            ("service", "crm-api"),
            ("since", "2026-11-20T10:00:00+01:00"),
            ("until", "2026-11-20T10:00:00Z"),
            ("limit", "1000"),
        ])
        .unwrap();
        assert_eq!(q.status.as_deref(), Some("accepted"));
        assert_eq!(q.service.as_deref(), Some("crm-api"));
        assert_eq!(q.since_ns, Some(1_795_165_200_000_000_000));
        assert_eq!(q.until_ns, Some(1_795_168_800_000_000_000));
        assert_eq!(q.limit, 1000);
    }

    #[test]
    fn bad_parameters_are_named() {
        for (pairs, starts) in [
            (vec![("limit", "1001")], "limit:"),
            (vec![("limit", "0")], "limit:"),
            (vec![("limit", "ten")], "limit:"),
            (vec![("since", "yesterday")], "since:"),
            (vec![("until", "2026-11-20")], "until:"),
            (vec![("since", "2026-11-21T00:00:00Z"), ("until", "2026-11-20T00:00:00Z")], "since:"),
            (vec![("order", "A-1")], "order:"),
        ] {
            let error = parse(&pairs).unwrap_err();
            assert!(error.starts_with(starts), "{pairs:?}: {error}");
        }
    }
}
