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
    /// Pass as `cursor` for the next page; absent on the last page. Orders that change while
    /// a client pages (a new span moves an order to the front) may be seen twice or not at all,
    /// as with any keyset paging over a live list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
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
    let mut query = parse_list_query(&params)?;
    let limit = query.limit;
    // One more than asked tells whether there is a next page.
    query.limit = limit + 1;
    let backend = state.backend.clone().ok_or(ApiError::NoBackend)?;
    let mut orders = backend.orders(query).await?;
    let next_cursor = if orders.len() > limit {
        orders.truncate(limit);
        orders.last().map(|o| encode_cursor(o.last_seen, &o.order_id))
    } else {
        None
    };
    Ok(Json(OrderPage { orders, limit, next_cursor }))
}

/// A cursor is opaque to clients: the last order's (last seen, id), base64url.
fn encode_cursor(last_seen: u64, order_id: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{last_seen}:{order_id}"))
}

fn decode_cursor(text: &str) -> Option<(u64, String)> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (last_seen, order_id) = text.split_once(':')?;
    Some((last_seen.parse().ok()?, order_id.to_string()))
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
            "cursor" => {
                query.after = Some(
                    decode_cursor(value)
                        .ok_or_else(|| ApiError::BadRequest("cursor: not a cursor this API returned (use next_cursor as given)".into()))?,
                )
            }
            "limit" => {
                query.limit = match value.parse::<usize>() {
                    Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                    _ => return Err(ApiError::BadRequest(format!("limit: {value:?} is not a whole number from 1 to {MAX_LIMIT}"))),
                }
            }
            other => {
                return Err(ApiError::BadRequest(format!("{other}: unknown parameter; use status, service, since, until, limit or cursor")))
            }
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
        let cursor = encode_cursor(1_795_168_800_000_000_000, "A:1/ü");
        assert_eq!(parse(&[("cursor", &cursor)]).unwrap().after, Some((1_795_168_800_000_000_000, "A:1/ü".to_string())));
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
            (vec![("cursor", "not-a-cursor")], "cursor:"),
        ] {
            let error = parse(&pairs).unwrap_err();
            assert!(error.starts_with(starts), "{pairs:?}: {error}");
        }
    }
}
