//! The orders entity index: one document per order, folded forward as its spans arrive.
//!
//! Every field is a fold that ignores repetition (minimum, maximum, set union, the status of the
//! latest span by (start, span id), events keyed by span), so re-delivering a span changes
//! nothing and spans may arrive in any order. Several tracegate instances may update one order at
//! once: each update reads the document with its `_seq_no` / `_primary_term`, folds, and writes
//! with `if_seq_no` / `if_primary_term` (or `create` for a new order), many orders in one `_mget`
//! and one `_bulk`; a 409 means another instance wrote first, so it reads again and folds again.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::config::OrdersConfig;
use super::document::{document_order_span, field};
use super::encoder::SpanEncoder;
use super::error::EsError;
use super::multi_get::{multi_get, Found};
use super::service::EsClient;
use crate::orders::{OrderSpan, OrderTimeline};
use crate::pipeline::Payload;
use crate::shared::{attr_string as string_attr, format_rfc3339_nanos};

/// One order as stored in the orders index.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OrderDocument {
    pub order_id: String,
    pub status: Option<String>,
    /// Start time and span id of the span that set `status`, to decide which status is latest.
    pub status_time_ns: Option<u64>,
    pub status_span_id: Option<String>,
    pub first_seen: String,
    pub last_seen: String,
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    pub services: BTreeSet<String>,
    pub trace_ids: BTreeSet<String>,
    /// The first time each status was reached.
    pub status_reached: BTreeMap<String, String>,
    /// Correlation values (constructor file ids) bound to this order.
    #[serde(default)]
    pub correlations: BTreeSet<String>,
    /// Timeline events (`TimelineEvent` JSON), in time order, the earliest `max_events`.
    pub events: Vec<serde_json::Value>,
    /// The last step (the latest span that is a step, by start time and span id): its service
    /// and stage say where the order is now (the embedded store's `step_*` columns).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_service: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_stage: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_time_ns: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_span_id: Option<String>,
}

impl OrderDocument {
    /// Folds spans of this order into the document; returns whether anything changed.
    pub fn fold(&mut self, spans: &[OrderSpan], max_events: usize) -> bool {
        let before = self.clone();
        for s in spans {
            let end = s.end_ns.max(s.start_ns);
            if self.first_seen.is_empty() || s.start_ns < self.first_seen_ns {
                self.first_seen_ns = s.start_ns;
                self.first_seen = format_rfc3339_nanos(s.start_ns);
            }
            if self.last_seen.is_empty() || end > self.last_seen_ns {
                self.last_seen_ns = end;
                self.last_seen = format_rfc3339_nanos(end);
            }
            if let Some(service) = &s.service {
                self.services.insert(service.clone());
            }
            self.trace_ids.insert(hex::encode(&s.trace_id));
            if s.is_step() {
                let span_id = hex::encode(&s.span_id);
                let newer = match (&self.current_time_ns, &self.current_span_id) {
                    (Some(t), Some(id)) => (s.start_ns, &span_id) >= (*t, id),
                    _ => true,
                };
                if newer {
                    self.current_service = s.service.clone();
                    self.current_stage = s.step_stage();
                    self.current_time_ns = Some(s.start_ns);
                    self.current_span_id = Some(span_id);
                }
            }
            if let Some(status) = &s.status {
                let span_id = hex::encode(&s.span_id);
                let newer = match (&self.status_time_ns, &self.status_span_id) {
                    (Some(t), Some(id)) => (s.start_ns, &span_id) >= (*t, id),
                    _ => true,
                };
                if newer {
                    self.status = Some(status.clone());
                    self.status_time_ns = Some(s.start_ns);
                    self.status_span_id = Some(span_id);
                }
                let at = format_rfc3339_nanos(s.start_ns);
                let reached = self.status_reached.entry(status.clone()).or_insert_with(|| at.clone());
                if at < *reached {
                    *reached = at;
                }
            }
        }
        // The same events the timeline shows, keyed by (trace id, span id).
        if let Some(timeline) = OrderTimeline::assemble(&self.order_id, spans.to_vec()) {
            let key = |e: &serde_json::Value| {
                (e["time"].as_str().map(String::from), e["span_id"].as_str().map(String::from), e["trace_id"].as_str().map(String::from))
            };
            let mut events: BTreeMap<_, serde_json::Value> = self.events.drain(..).map(|e| (key(&e), e)).collect();
            for e in &timeline.events {
                let v = event_document(e);
                events.insert(key(&v), v);
            }
            self.events = events.into_values().take(max_events).collect();
        }
        *self != before
    }
}

/// A timeline event as the orders document stores it (the read API's shape).
fn event_document(e: &crate::orders::TimelineEvent) -> serde_json::Value {
    serde_json::json!({
        "time": format_rfc3339_nanos(e.time),
        "service": e.service,
        "stage": e.stage,
        "status": e.status,
        "span_name": e.span_name,
        "trace_id": e.trace_id,
        "span_id": e.span_id,
        "duration_ms": e.duration_ms,
        "error": e.error,
    })
}

pub struct OrdersIndex {
    client: EsClient,
    config: OrdersConfig,
    /// Index pattern of the span documents, to find spans joined through a correlation value.
    spans: String,
}

impl OrdersIndex {
    pub fn new(client: EsClient, config: OrdersConfig, spans: String) -> OrdersIndex {
        OrdersIndex { client, config, spans }
    }

    /// Folds the payloads' spans into their orders' documents; returns how many were written.
    /// As in the embedded store, a span without an order id joins the order that another span
    /// binds its correlation value to, whichever arrives first.
    pub async fn update(&self, payloads: &[Arc<Payload>], encoder: &SpanEncoder) -> Result<usize, EsError> {
        let (mut by_order, bindings, unbound) = order_spans(payloads, encoder);
        // Files saved earlier whose value this batch binds.
        let values: Vec<&String> = bindings.keys().collect();
        if !values.is_empty() {
            let query = serde_json::json!({"size": 10_000, "query": {"bool": {
                "filter": [{"terms": {"order.correlation": values}}],
                "must_not": [{"exists": {"field": "order.id"}}]
            }}});
            for doc in self.hits(&query).await? {
                let value = field(&doc, "order.correlation").map(String::from);
                if let (Some(order), Some(span)) = (value.and_then(|v| bindings.get(&v)), document_order_span(&doc, true)) {
                    by_order.entry(order.clone()).or_default().push(span);
                }
            }
        }
        // Files of this batch whose value an earlier span bound.
        for (value, spans) in unbound {
            let order = match bindings.get(&value) {
                Some(order) => Some(order.clone()),
                None => {
                    let query = serde_json::json!({"size": 1, "query": {"bool": {
                        "filter": [{"term": {"order.correlation": value}}, {"exists": {"field": "order.id"}}]
                    }}});
                    self.hits(&query).await?.first().and_then(|d| field(d, "order.id").map(String::from))
                }
            };
            if let Some(order) = order {
                by_order.entry(order).or_default().extend(spans);
            }
        }
        let mut pending: HashMap<String, (Vec<OrderSpan>, Vec<String>)> = HashMap::new();
        for (order_id, spans) in by_order {
            let values = bindings.iter().filter(|(_, o)| **o == order_id).map(|(v, _)| v.clone()).collect();
            pending.insert(order_id, (spans, values));
        }
        self.write(pending).await
    }

    /// Reads the orders' documents with one `_mget`, folds, and writes the changed ones with one
    /// `_bulk` (`create` for a new order, `index` with `if_seq_no` / `if_primary_term`
    /// otherwise); orders another instance wrote in between (409) are read and folded again.
    async fn write(&self, mut pending: HashMap<String, (Vec<OrderSpan>, Vec<String>)>) -> Result<usize, EsError> {
        let mut written = 0;
        for _ in 0..=self.config.max_conflict_retries {
            if pending.is_empty() {
                return Ok(written);
            }
            let found: Vec<Found<OrderDocument>> = multi_get(&self.client, &self.config.index, pending.keys(), "orders").await?;
            let mut lines = Vec::new();
            let mut sent: Vec<String> = Vec::new();
            for doc in found {
                let Some((spans, values)) = pending.get(&doc.id) else { continue };
                let (mut order, version) = match (doc.found, doc.source) {
                    (true, Some(source)) => (source, Some((doc.seq_no.unwrap_or(0), doc.primary_term.unwrap_or(1)))),
                    _ => (OrderDocument { order_id: doc.id.clone(), ..Default::default() }, None),
                };
                let bound = values.iter().fold(false, |changed, v| order.correlations.insert(v.clone()) || changed);
                if !order.fold(spans, self.config.max_events) && !bound {
                    // Nothing new for this order: re-delivered spans change nothing.
                    pending.remove(&doc.id);
                    continue;
                }
                let action = match version {
                    None => serde_json::json!({"create": {"_index": self.config.index, "_id": doc.id}}),
                    Some((seq, term)) => {
                        serde_json::json!({"index": {"_index": self.config.index, "_id": doc.id, "if_seq_no": seq, "if_primary_term": term}})
                    }
                };
                lines.extend_from_slice(action.to_string().as_bytes());
                lines.push(b'\n');
                serde_json::to_writer(&mut lines, &order).map_err(|source| EsError::Encode { what: "an order document", source })?;
                lines.push(b'\n');
                sent.push(doc.id);
            }
            if sent.is_empty() {
                continue;
            }
            let (reply, _) = self.client.bulk(&self.client.bulk_body_off_thread(vec![lines.into()]).await?).await?;
            match super::retry::classify(reply.status, reply.retry_after.as_deref(), &reply.body, sent.len()) {
                super::retry::RequestOutcome::Items(outcomes) => {
                    for (id, outcome) in sent.into_iter().zip(outcomes) {
                        match outcome {
                            super::retry::ItemOutcome::Indexed => {
                                written += 1;
                                pending.remove(&id);
                            }
                            // Another instance wrote first (409), or try again (429 / 5xx).
                            super::retry::ItemOutcome::AlreadyIndexed | super::retry::ItemOutcome::Retry { .. } => {}
                            super::retry::ItemOutcome::Reject { status, error } => {
                                return Err(EsError::Refused { what: format!("order {id}"), status, error });
                            }
                        }
                    }
                }
                other => return Err(EsError::Bulk { what: "writing orders", outcome: format!("{other:?}") }),
            }
        }
        if pending.is_empty() {
            Ok(written)
        } else {
            Err(EsError::Conflicts { pending: pending.len(), attempts: self.config.max_conflict_retries + 1 })
        }
    }

    async fn hits(&self, query: &serde_json::Value) -> Result<Vec<serde_json::Value>, EsError> {
        let mut reply = self.client.search(&self.spans, query).await?;
        Ok(match reply.get_mut("hits").and_then(|h| h.get_mut("hits")).map(serde_json::Value::take).unwrap_or_default() {
            serde_json::Value::Array(hits) => {
                hits.into_iter().map(|mut h| h.get_mut("_source").map(serde_json::Value::take).unwrap_or_default()).collect()
            }
            _ => Vec::new(),
        })
    }
}

type SpansByKey = HashMap<String, Vec<OrderSpan>>;

/// The spans of each order in the payloads (those carrying `order.id`), the correlation values
/// they bind (value -> order), and the spans that carry only a correlation value (by value).
pub fn order_spans(payloads: &[Arc<Payload>], encoder: &SpanEncoder) -> (SpansByKey, HashMap<String, String>, SpansByKey) {
    let mut orders: SpansByKey = HashMap::new();
    let mut bindings = HashMap::new();
    let mut unbound: SpansByKey = HashMap::new();
    for p in payloads {
        for rs in p.resource_spans().iter() {
            let service = string_attr(rs.resource.as_ref().map(|r| r.attributes.as_slice()).unwrap_or(&[]), "service.name");
            for ss in &rs.scope_spans {
                for span in &ss.spans {
                    let correlation = encoder.correlation(span);
                    match (string_attr(&span.attributes, "order.id"), correlation) {
                        (Some(order_id), correlation) => {
                            if let Some(value) = correlation {
                                bindings.insert(value, order_id.clone());
                            }
                            orders.entry(order_id).or_default().push(order_span(span, service.clone(), false));
                        }
                        (None, Some(value)) => unbound.entry(value).or_default().push(order_span(span, service.clone(), true)),
                        (None, None) => {}
                    }
                }
            }
        }
    }
    (orders, bindings, unbound)
}

pub fn order_span(span: &opentelemetry_proto::tonic::trace::v1::Span, service: Option<String>, linked: bool) -> OrderSpan {
    use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
    OrderSpan {
        trace_id: span.trace_id.clone(),
        span_id: span.span_id.clone(),
        parent_span_id: span.parent_span_id.clone(),
        step_key: crate::orders::step_key(|k| string_attr(&span.attributes, k)),
        service,
        name: span.name.clone(),
        start_ns: span.start_time_unix_nano.min(i64::MAX as u64),
        end_ns: span.end_time_unix_nano.min(i64::MAX as u64),
        stage: string_attr(&span.attributes, "order.stage"),
        status: string_attr(&span.attributes, "order.status"),
        error: span.status.as_ref().is_some_and(|s| s.code == StatusCode::Error as i32),
        linked,
    }
}
