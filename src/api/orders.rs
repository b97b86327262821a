//! `GET /api/v1/orders/{order_id}` (an order's timeline) and `GET /api/v1/orders` (a page of
//! order summaries, filtered by id prefix, status, service, time and alert state; newest first or
//! longest waiting first).

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Serialize, Serializer};

use super::alerts::AlertBody;
use super::{ApiError, ApiState, ParamError, ParamProblem};
use crate::orders::{OrderAlert, OrderQuery, OrderSort, OrderSummary, OrderTimeline, StatusTransition, TimelineEvent};
use crate::shared::{format_rfc3339_nanos, parse_rfc3339};

/// Page size when the request names none.
pub const DEFAULT_LIMIT: usize = 100;
/// The largest page a request may ask for.
pub const MAX_LIMIT: usize = 1000;

/// `GET /api/v1/orders/{order_id}` (DESIGN.md §2, Read API).
#[derive(Debug, Serialize)]
pub struct TimelineBody<'a> {
    order_id: &'a str,
    status: Option<&'a str>,
    #[serde(serialize_with = "rfc3339")]
    first_seen: u64,
    #[serde(serialize_with = "rfc3339")]
    last_seen: u64,
    services: &'a [String],
    trace_ids: &'a [String],
    events: Vec<EventBody<'a>>,
    transitions: Vec<TransitionBody<'a>>,
    /// The order's alerts from the monitors, oldest first (see `with_alerts`).
    alerts: Vec<AlertBody<'a>>,
}

impl<'a> TimelineBody<'a> {
    pub fn with_alerts(mut self, alerts: &'a [OrderAlert]) -> Self {
        self.alerts = alerts.iter().map(AlertBody::from).collect();
        self
    }

    /// Each event links to its span in Jaeger UI when `base` (`api.jaeger_ui_url`) is set:
    /// `{base}/trace/{trace_id}?uiFind={span_id}` (Jaeger UI opens the trace with the span
    /// picked out).
    pub fn with_jaeger_links(mut self, base: Option<&str>) -> Self {
        if let Some(base) = base {
            for e in &mut self.events {
                e.jaeger_url = Some(format!("{base}/trace/{}?uiFind={}", e.trace_id, e.span_id));
            }
        }
        self
    }
}

#[derive(Debug, Serialize)]
struct EventBody<'a> {
    #[serde(serialize_with = "rfc3339")]
    time: u64,
    service: Option<&'a str>,
    stage: Option<&'a str>,
    status: Option<&'a str>,
    span_name: &'a str,
    trace_id: &'a str,
    span_id: &'a str,
    duration_ms: f64,
    error: bool,
    /// The span in Jaeger UI (`api.jaeger_ui_url`); absent when no Jaeger UI is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    jaeger_url: Option<String>,
}

#[derive(Debug, Serialize)]
struct TransitionBody<'a> {
    from: &'a str,
    to: &'a str,
    seconds: f64,
}

impl<'a> From<&'a OrderTimeline> for TimelineBody<'a> {
    fn from(t: &'a OrderTimeline) -> Self {
        let event = |e: &'a TimelineEvent| EventBody {
            time: e.time,
            service: e.service.as_deref(),
            stage: e.stage.as_deref(),
            status: e.status.as_deref(),
            span_name: &e.span_name,
            trace_id: &e.trace_id,
            span_id: &e.span_id,
            duration_ms: e.duration_ms,
            error: e.error,
            jaeger_url: None,
        };
        let transition = |t: &'a StatusTransition| TransitionBody { from: &t.from, to: &t.to, seconds: t.seconds };
        TimelineBody {
            order_id: &t.order_id,
            status: t.status.as_deref(),
            first_seen: t.first_seen,
            last_seen: t.last_seen,
            services: &t.services,
            trace_ids: &t.trace_ids,
            events: t.events.iter().map(event).collect(),
            transitions: t.transitions.iter().map(transition).collect(),
            alerts: Vec::new(),
        }
    }
}

/// One row of `GET /api/v1/orders`.
#[derive(Debug, Serialize)]
pub struct SummaryBody {
    order_id: String,
    status: Option<String>,
    #[serde(serialize_with = "rfc3339")]
    first_seen: u64,
    #[serde(serialize_with = "rfc3339")]
    last_seen: u64,
    services: Vec<String>,
    span_count: u64,
    /// Service and stage of the order's last step: where it is now.
    current_service: Option<String>,
    current_stage: Option<String>,
    /// How many of the order's alerts are firing.
    firing_alerts: u64,
}

impl From<OrderSummary> for SummaryBody {
    fn from(o: OrderSummary) -> Self {
        SummaryBody {
            order_id: o.order_id,
            status: o.status,
            first_seen: o.first_seen,
            last_seen: o.last_seen,
            services: o.services,
            span_count: o.span_count,
            current_service: o.current_service,
            current_stage: o.current_stage,
            firing_alerts: o.firing_alerts,
        }
    }
}

pub fn rfc3339<S: Serializer>(ns: &u64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format_rfc3339_nanos(*ns))
}

#[derive(Debug, Serialize)]
pub struct OrderPage {
    pub orders: Vec<SummaryBody>,
    pub limit: usize,
    /// Pass as `cursor` for the next page; absent on the last page. Orders that change while
    /// a client pages (a new span moves an order to the front) may be seen twice or not at all,
    /// as with any keyset paging over a live list.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

pub async fn get_order(State(state): State<ApiState>, Path(order_id): Path<String>) -> Result<Response, ApiError> {
    let backend = state.backend.clone().ok_or(ApiError::NoBackend)?;
    match backend.order_timeline(order_id.clone()).await? {
        Some(timeline) => {
            let alerts = backend.order_alerts(order_id).await?;
            let body = TimelineBody::from(&timeline).with_alerts(&alerts).with_jaeger_links(state.jaeger_ui_url.as_deref());
            Ok(Json(body).into_response())
        }
        None => Err(ApiError::NotFound(format!("order {order_id} not found"))),
    }
}

pub async fn list_orders(
    State(state): State<ApiState>,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<OrderPage>, ApiError> {
    let Query(params) = params.map_err(|e| ParamError::query_string(&e))?;
    let mut query = parse_list_query(&params)?;
    let limit = query.limit;
    let sort = query.sort;
    // One more than asked tells whether there is a next page.
    query.limit = limit + 1;
    let backend = state.backend.clone().ok_or(ApiError::NoBackend)?;
    let mut orders = backend.orders(query).await?;
    let next_cursor = if orders.len() > limit {
        orders.truncate(limit);
        orders.last().map(|o| encode_cursor(sort, o.last_seen, &o.order_id))
    } else {
        None
    };
    Ok(Json(OrderPage { orders: orders.into_iter().map(SummaryBody::from).collect(), limit, next_cursor }))
}

/// A cursor is opaque to clients: the last order's (last seen, id), base64url, after `w` for a
/// list sorted longest waiting first (a cursor says which order it walks; newest-first cursors
/// have no mark, as before the sort existed).
pub(crate) fn encode_cursor(sort: OrderSort, last_seen: u64, order_id: &str) -> String {
    use base64::Engine;
    let mark = match sort {
        OrderSort::NewestFirst => "",
        OrderSort::LongestWaiting => "w",
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{mark}{last_seen}:{order_id}"))
}

pub(crate) fn decode_cursor(text: &str) -> Option<(OrderSort, u64, String)> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(text).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (sort, text) = match text.strip_prefix('w') {
        Some(rest) => (OrderSort::LongestWaiting, rest),
        None => (OrderSort::NewestFirst, text.as_str()),
    };
    let (last_seen, order_id) = text.split_once(':')?;
    Some((sort, last_seen.parse().ok()?, order_id.to_string()))
}

/// The `alert` filter: `firing`, `resolved`, or `none` (orders without any alert).
pub(crate) fn apply_alert_filter(query: &mut OrderQuery, value: &str) -> Result<(), ParamProblem> {
    if value == "none" {
        query.no_alerts = true;
    } else {
        query.alert =
            Some(super::alerts::parse_state(value).map_err(|_| ParamProblem::NotOneOf {
                value: value.to_string(),
                expected: "an alert state; use firing, resolved or none",
            })?);
    }
    Ok(())
}

/// The `sort` parameter: `newest` (last seen first, the default) or `waiting` (longest waiting first).
pub(crate) fn parse_sort(value: &str) -> Result<OrderSort, ParamProblem> {
    OrderSort::parse(value).ok_or_else(|| ParamProblem::NotOneOf { value: value.to_string(), expected: "a sort; use newest or waiting" })
}

/// A list's query parameters that have a value, by name: an empty value means "no filter", so
/// a form may send every field.
pub fn filled_params(params: &HashMap<String, String>) -> Vec<(&str, &str)> {
    let mut filled: Vec<(&str, &str)> =
        params.iter().map(|(name, value)| (name.as_str(), value.trim())).filter(|(_, value)| !value.is_empty()).collect();
    filled.sort_unstable_by_key(|(name, _)| *name);
    filled
}

/// A page size: 1 to [`MAX_LIMIT`].
pub fn parse_limit(value: &str) -> Result<usize, ParamError> {
    match value.parse::<usize>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(ParamError::new("limit", ParamProblem::Limit { value: value.to_string(), max: MAX_LIMIT })),
    }
}

/// The list's query parameters. An empty value means "no filter", so a form may send every
/// field; an unknown parameter is an error rather than a filter silently ignored.
fn parse_list_query(params: &HashMap<String, String>) -> Result<OrderQuery, ParamError> {
    let mut query = OrderQuery { limit: DEFAULT_LIMIT, ..Default::default() };
    let mut cursor = None;
    for (name, value) in filled_params(params) {
        let time = |what: &'static str| parse_rfc3339(value).map_err(|e| ParamError::new(what, e));
        match name {
            "id_prefix" => query.id_prefix = Some(value.to_string()),
            "status" => query.status = Some(value.to_string()),
            // Comma-separated: `exclude_status=handed_to_courier,cancelled` lists orders in flight.
            "exclude_status" => {
                query.exclude_statuses = value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
            }
            "service" => query.service = Some(value.to_string()),
            "sort" => query.sort = parse_sort(value).map_err(|e| ParamError::new("sort", e))?,
            "alert" => apply_alert_filter(&mut query, value).map_err(|e| ParamError::new("alert", e))?,
            "since" => query.since_ns = Some(time("since")?),
            "until" => query.until_ns = Some(time("until")?),
            "cursor" => cursor = Some(decode_cursor(value).ok_or_else(|| ParamError::new("cursor", ParamProblem::Cursor))?),
            "limit" => query.limit = parse_limit(value)?,
            other => {
                return Err(ParamError::new(
                    other.to_string(),
                    ParamProblem::Unknown {
                        known: "id_prefix, status, exclude_status, service, alert, since, until, sort, limit or cursor",
                    },
                ))
            }
        }
    }
    if let Some((sort, last_seen, order_id)) = cursor {
        if sort != query.sort {
            return Err(ParamError::new("cursor", ParamProblem::CursorSort { made_for: sort.as_str(), asked: query.sort.as_str() }));
        }
        query.after = Some((last_seen, order_id));
    }
    if let (Some(since), Some(until)) = (query.since_ns, query.until_ns) {
        if since > until {
            return Err(ParamError::new("since", ParamProblem::Conflict("must not be after until")));
        }
    }
    Ok(query)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<OrderQuery, ParamError> {
        let params = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        parse_list_query(&params)
    }

    #[test]
    fn timeline_serializes_to_the_documented_shape() {
        use crate::orders::tests::order_span;
        let t = OrderTimeline::assemble("A-1001", vec![order_span(1, 0, Some("created"), Some("new"))]).unwrap();
        let json = serde_json::to_value(TimelineBody::from(&t)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "order_id": "A-1001", "status": "new",
                "first_seen": "2026-11-20T09:00:00.000000000Z", "last_seen": "2026-11-20T09:00:00.002500000Z",
                "services": ["svc-1"], "trace_ids": ["01".repeat(16)],
                "events": [{"time": "2026-11-20T09:00:00.000000000Z", "service": "svc-1", "stage": "created", "status": "new",
                            "span_name": "span 1", "trace_id": "01".repeat(16), "span_id": "01".repeat(8), "duration_ms": 2.5, "error": false}],
                "transitions": [], "alerts": []
            })
        );
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
        let cursor = encode_cursor(OrderSort::NewestFirst, 1_795_168_800_000_000_000, "A:1/ü");
        assert_eq!(parse(&[("cursor", &cursor)]).unwrap().after, Some((1_795_168_800_000_000_000, "A:1/ü".to_string())));
        // A cursor of the list before sorts existed still reads.
        use base64::Engine;
        let old = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("5:B-2");
        assert_eq!(parse(&[("cursor", &old)]).unwrap().after, Some((5, "B-2".to_string())));
        let waiting = encode_cursor(OrderSort::LongestWaiting, 7, "w:1");
        let q = parse(&[("cursor", &waiting), ("sort", "waiting"), ("id_prefix", "A-"), ("alert", "none")]).unwrap();
        assert_eq!(
            (q.after, q.sort, q.id_prefix.as_deref(), q.no_alerts),
            (Some((7, "w:1".to_string())), OrderSort::LongestWaiting, Some("A-"), true)
        );
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
            (vec![("cursor", encode_cursor(OrderSort::LongestWaiting, 1, "A").leak())], "cursor:"),
            (vec![("sort", "oldest")], "sort:"),
            (vec![("alert", "maybe")], "alert:"),
        ] {
            let error = parse(&pairs).unwrap_err().message();
            assert!(error.starts_with(starts), "{pairs:?}: {error}");
        }
    }
}
