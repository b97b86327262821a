//! Trace search, services, operations and the service graph, for the Jaeger-compatible query API.
//!
//! Both backends only narrow the candidates (service, operation, time, duration, `order.id`) and
//! hand back spans newest first; whether a span matches is decided here, once, the way Jaeger's
//! own storage decides it: a trace matches when one of its spans has the service and operation,
//! starts in the window, lasts within the bounds, and carries every tag among its own
//! attributes, its scope's, its resource's or its events'. So both backends answer alike.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::ControlFlow;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValueKind;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

use super::{blocking, QueryBackend, QueryError};
use crate::store::{FoundSpan, SpanFilter};

/// Spans one search or service-graph request reads at most from the embedded store (newest
/// first); Elasticsearch reads at most its 10 000 hits. Matches beyond are not seen.
pub const MAX_SCANNED_SPANS: usize = 200_000;

/// A trace search (Jaeger's `TraceQueryParameters`).
#[derive(Debug, Clone, Default)]
pub struct TraceQuery {
    pub service: Option<String>,
    pub operation: Option<String>,
    /// Every pair must be found on one span (its attributes, scope, resource or events).
    pub tags: Vec<(String, String)>,
    pub start_min_ns: u64,
    pub start_max_ns: u64,
    pub duration_min_ns: Option<u64>,
    pub duration_max_ns: Option<u64>,
    /// Traces to return at most.
    pub limit: usize,
}

/// Masks personal data in a copy of a span before it is compared, so that a search by a
/// personal value matches its pseudonym and never confirms a clear value to a masked reader.
pub type Masker = Arc<dyn Fn(&mut ResourceSpans) + Send + Sync>;

/// One edge of the service graph: `parent` called `child` (a parent span and its child), or
/// handed work to it over the bus (a span and the span it links to).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DependencyLink {
    pub parent: String,
    pub child: String,
    pub call_count: u64,
}

impl TraceQuery {
    /// What the backends can narrow by: the index on `order.id` is used unless order ids are
    /// masked (then the clear value must not be looked up).
    fn filter(&self, order_id_masked: bool) -> SpanFilter {
        SpanFilter {
            service: self.service.clone(),
            operation: self.operation.clone(),
            order_id: if order_id_masked { None } else { self.tags.iter().find(|(k, _)| k == "order.id").map(|(_, v)| v.clone()) },
            start_min_ns: self.start_min_ns,
            start_max_ns: self.start_max_ns,
            duration_min_ns: self.duration_min_ns,
            duration_max_ns: self.duration_max_ns,
        }
    }

    /// Whether `span` (of `resource` and `scope`) satisfies the whole query.
    pub fn matches(&self, resource: &Resource, scope: &InstrumentationScope, span: &Span) -> bool {
        if let Some(service) = &self.service {
            if service_of(resource) != *service {
                return false;
            }
        }
        if self.operation.as_ref().is_some_and(|op| *op != span.name) {
            return false;
        }
        let start = span.start_time_unix_nano;
        if start < self.start_min_ns || start > self.start_max_ns {
            return false;
        }
        let duration = span.end_time_unix_nano.saturating_sub(start);
        if self.duration_min_ns.is_some_and(|min| duration < min) || self.duration_max_ns.is_some_and(|max| duration > max) {
            return false;
        }
        self.tags.iter().all(|(key, value)| {
            if key == "error" {
                // Jaeger's `error` tag is the span status: `error=true` finds failed spans.
                let failed = span.status.as_ref().is_some_and(|s| s.code == StatusCode::Error as i32);
                return value.eq_ignore_ascii_case("true") == failed;
            }
            let has =
                |attrs: &[KeyValue]| attrs.iter().any(|kv| kv.key == *key && kv.value.as_ref().map(value_text).as_deref() == Some(value));
            has(&span.attributes) || has(&scope.attributes) || has(&resource.attributes) || span.events.iter().any(|e| has(&e.attributes))
        })
    }

    fn matches_masked(&self, found: &FoundSpan, masker: Option<&Masker>) -> bool {
        let Some(mask) = masker else { return self.matches(&found.resource, &found.scope, &found.span) };
        let mut copy = vec![ResourceSpans {
            resource: Some((*found.resource).clone()),
            scope_spans: vec![ScopeSpans {
                scope: Some((*found.scope).clone()),
                spans: vec![found.span.clone()],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }];
        mask(&mut copy[0]);
        let rs = copy.remove(0);
        let resource = rs.resource.unwrap_or_default();
        let Some(ss) = rs.scope_spans.into_iter().next() else { return false };
        let scope = ss.scope.unwrap_or_default();
        ss.spans.first().is_some_and(|span| self.matches(&resource, &scope, span))
    }
}

/// A resource's `service.name` as Jaeger shows it (`missing-service-name` without one,
/// `empty-service-name` when empty).
pub fn service_of(resource: &Resource) -> String {
    crate::store::jaeger_service_name(&resource.attributes)
}

/// An attribute value as text, as the OpenTelemetry Collector writes it (`pcommon.Value.AsString`,
/// which Jaeger uses both to compare tag values and to show lists and maps): scalars as written,
/// bytes in base64, lists and maps as JSON with map keys in order.
pub fn value_text(value: &AnyValue) -> String {
    match &value.value {
        None => String::new(),
        Some(AnyValueKind::StringValue(s)) => s.clone(),
        Some(AnyValueKind::IntValue(i)) => i.to_string(),
        Some(AnyValueKind::BoolValue(b)) => b.to_string(),
        Some(AnyValueKind::DoubleValue(d)) => double_text(*d),
        Some(AnyValueKind::BytesValue(b)) => BASE64.encode(b),
        Some(_) => raw_json(value).to_string(),
    }
}

/// Go's `strconv.FormatFloat(d, 'f', -1, 64)`.
fn double_text(d: f64) -> String {
    if d.is_nan() {
        "NaN".into()
    } else if d.is_infinite() {
        if d > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{d}")
    }
}

/// The value as Go's `encoding/json` writes `Value.AsRaw()`.
fn raw_json(value: &AnyValue) -> serde_json::Value {
    use serde_json::Value as J;
    match &value.value {
        None => J::Null,
        Some(AnyValueKind::StringValue(s)) => J::String(s.clone()),
        Some(AnyValueKind::IntValue(i)) => J::from(*i),
        Some(AnyValueKind::BoolValue(b)) => J::Bool(*b),
        Some(AnyValueKind::DoubleValue(d)) if d.fract() == 0.0 && d.abs() < 1e15 => J::from(*d as i64),
        Some(AnyValueKind::DoubleValue(d)) => serde_json::Number::from_f64(*d).map(J::Number).unwrap_or(J::Null),
        Some(AnyValueKind::BytesValue(b)) => J::String(BASE64.encode(b)),
        Some(AnyValueKind::ArrayValue(a)) => J::Array(a.values.iter().map(raw_json).collect()),
        Some(AnyValueKind::KvlistValue(list)) => {
            let sorted: BTreeMap<&str, J> =
                list.values.iter().map(|kv| (kv.key.as_str(), kv.value.as_ref().map(raw_json).unwrap_or(J::Null))).collect();
            J::Object(sorted.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
        }
        // A string-table index (profiles only); never in a span.
        Some(AnyValueKind::StringValueStrindex(i)) => J::from(*i),
    }
}

/// What the service graph needs of a span.
struct GraphSpan {
    service: String,
    parent: Vec<u8>,
    links: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The service graph of the spans: one edge per parent/child pair across spans (as Jaeger's
/// own storage counts them, a service calling itself included) and one per span link whose
/// target is among the spans (the bus hops between traces), counted by service pair.
fn service_graph(spans: &HashMap<(Vec<u8>, Vec<u8>), GraphSpan>) -> Vec<DependencyLink> {
    let mut edges: HashMap<(&str, &str), u64> = HashMap::new();
    for ((trace_id, _), span) in spans {
        if !span.parent.is_empty() {
            if let Some(parent) = spans.get(&(trace_id.clone(), span.parent.clone())) {
                *edges.entry((parent.service.as_str(), span.service.as_str())).or_default() += 1;
            }
        }
        let mut seen = HashSet::new();
        for link in &span.links {
            if let (Some(target), true) = (spans.get(link), seen.insert(link)) {
                *edges.entry((target.service.as_str(), span.service.as_str())).or_default() += 1;
            }
        }
    }
    let mut links: Vec<DependencyLink> = edges
        .into_iter()
        .map(|((parent, child), call_count)| DependencyLink { parent: parent.into(), child: child.into(), call_count })
        .collect();
    links.sort();
    links
}

fn graph_entry(found: &FoundSpan) -> ((Vec<u8>, Vec<u8>), GraphSpan) {
    let span = &found.span;
    (
        (span.trace_id.clone(), span.span_id.clone()),
        GraphSpan {
            service: service_of(&found.resource),
            parent: span.parent_span_id.clone(),
            links: span.links.iter().map(|l| (l.trace_id.clone(), l.span_id.clone())).collect(),
        },
    )
}

impl QueryBackend {
    /// Every service with stored spans, in name order.
    pub async fn services(&self) -> Result<Vec<String>, QueryError> {
        match self {
            QueryBackend::Embedded(store) => blocking(store, |s| s.services()).await,
            QueryBackend::Elasticsearch(es) => es.services().await,
        }
    }

    /// A service's (span name, OTLP span kind) pairs, in name then kind order.
    pub async fn operations(&self, service: String) -> Result<Vec<(String, i32)>, QueryError> {
        match self {
            QueryBackend::Embedded(store) => blocking(store, move |s| s.operations(&service)).await,
            QueryBackend::Elasticsearch(es) => es.operations(&service).await,
        }
    }

    /// The ids of the traces that match, the one with the newest matching span first, at most
    /// `query.limit`. With a masker, tags are compared with masked copies of the spans;
    /// `order_id_masked` says whether the masker hides `order.id` too.
    pub async fn find_traces(&self, query: TraceQuery, masker: Option<Masker>, order_id_masked: bool) -> Result<Vec<Vec<u8>>, QueryError> {
        let filter = query.filter(masker.is_some() && order_id_masked);
        let limit = query.limit;
        let mut found = Vec::new();
        let mut seen = HashSet::new();
        let mut consider = move |span: FoundSpan, found: &mut Vec<Vec<u8>>| {
            if !seen.contains(&span.span.trace_id) && query.matches_masked(&span, masker.as_ref()) {
                seen.insert(span.span.trace_id.clone());
                found.push(span.span.trace_id);
            }
            if found.len() >= limit {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        };
        match self {
            QueryBackend::Embedded(store) => {
                found = blocking(store, move |s| {
                    let mut found = Vec::new();
                    s.scan_spans(&filter, MAX_SCANNED_SPANS, |span| consider(span, &mut found))?;
                    Ok(found)
                })
                .await?;
            }
            QueryBackend::Elasticsearch(es) => {
                for span in es.scan_spans(&filter).await? {
                    if consider(span, &mut found).is_break() {
                        break;
                    }
                }
            }
        }
        Ok(found)
    }

    /// The service graph of the spans that started in `[start_ns, end_ns]`.
    pub async fn dependencies(&self, start_ns: u64, end_ns: u64) -> Result<Vec<DependencyLink>, QueryError> {
        let filter = SpanFilter { start_min_ns: start_ns, start_max_ns: end_ns, ..Default::default() };
        let spans: HashMap<_, _> = match self {
            QueryBackend::Embedded(store) => {
                blocking(store, move |s| {
                    let mut spans = HashMap::new();
                    s.scan_spans(&filter, MAX_SCANNED_SPANS, |found| {
                        let (key, span) = graph_entry(&found);
                        spans.insert(key, span);
                        ControlFlow::Continue(())
                    })?;
                    Ok(spans)
                })
                .await?
            }
            QueryBackend::Elasticsearch(es) => es.scan_spans(&filter).await?.iter().map(graph_entry).collect(),
        };
        Ok(service_graph(&spans))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};
    use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
    use opentelemetry_proto::tonic::trace::v1::Status;

    fn kv(key: &str, value: AnyValueKind) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
    }

    fn text(s: &str) -> AnyValueKind {
        AnyValueKind::StringValue(s.into())
    }

    #[test]
    fn values_read_as_the_collector_writes_them() {
        let v = |k: AnyValueKind| value_text(&AnyValue { value: Some(k) });
        assert_eq!(v(AnyValueKind::IntValue(-7)), "-7");
        assert_eq!(v(AnyValueKind::DoubleValue(1.5)), "1.5");
        assert_eq!(v(AnyValueKind::DoubleValue(3.0)), "3");
        assert_eq!(v(AnyValueKind::BoolValue(true)), "true");
        assert_eq!(v(AnyValueKind::BytesValue(vec![1, 2, 3])), "AQID");
        let list = AnyValueKind::ArrayValue(ArrayValue {
            values: vec![AnyValue { value: Some(text("x")) }, AnyValue { value: Some(AnyValueKind::IntValue(2)) }],
        });
        assert_eq!(v(list), r#"["x",2]"#);
        let map = AnyValueKind::KvlistValue(KeyValueList { values: vec![kv("z", AnyValueKind::DoubleValue(2.0)), kv("a", text("b"))] });
        assert_eq!(v(map), r#"{"a":"b","z":2}"#);
    }

    fn resource(service: &str) -> Resource {
        Resource { attributes: vec![kv("service.name", text(service)), kv("host.name", text("node-1"))], ..Default::default() }
    }

    #[test]
    fn a_span_matches_when_it_has_everything_asked() {
        let scope = InstrumentationScope { name: "lib".into(), attributes: vec![kv("scope.tag", text("s"))], ..Default::default() };
        let span = Span {
            name: "POST /orders".into(),
            start_time_unix_nano: 1_000,
            end_time_unix_nano: 6_000,
            attributes: vec![kv("order.id", text("A-1")), kv("n", AnyValueKind::IntValue(7))],
            events: vec![Event { name: "e".into(), attributes: vec![kv("event.tag", text("ev"))], ..Default::default() }],
            status: Some(Status { code: StatusCode::Error as i32, message: String::new() }),
            ..Default::default()
        };
        let base = TraceQuery { service: Some("shop-api".into()), start_min_ns: 0, start_max_ns: 10_000, limit: 10, ..Default::default() };
        let with = |f: &dyn Fn(&mut TraceQuery)| {
            let mut q = base.clone();
            f(&mut q);
            q.matches(&resource("shop-api"), &scope, &span)
        };
        assert!(with(&|_| {}));
        assert!(!base.matches(&resource("crm-api"), &scope, &span));
        assert!(with(&|q| q.operation = Some("POST /orders".into())));
        assert!(!with(&|q| q.operation = Some("GET /orders".into())));
        assert!(with(&|q| q.tags = vec![("order.id".into(), "A-1".into()), ("n".into(), "7".into())]));
        assert!(!with(&|q| q.tags = vec![("order.id".into(), "A-2".into())]));
        assert!(with(&|q| q.tags = vec![("host.name".into(), "node-1".into())]), "resource attributes count");
        assert!(with(&|q| q.tags = vec![("scope.tag".into(), "s".into())]), "scope attributes count");
        assert!(with(&|q| q.tags = vec![("event.tag".into(), "ev".into())]), "event attributes count");
        assert!(with(&|q| q.tags = vec![("error".into(), "true".into())]));
        assert!(!with(&|q| q.tags = vec![("error".into(), "false".into())]));
        assert!(with(&|q| q.duration_min_ns = Some(5_000)));
        assert!(!with(&|q| q.duration_min_ns = Some(5_001)));
        assert!(with(&|q| q.duration_max_ns = Some(5_000)));
        assert!(!with(&|q| q.duration_max_ns = Some(4_999)));
        assert!(!with(&|q| q.start_min_ns = 1_001));
        assert!(!with(&|q| q.start_max_ns = 999));
    }

    #[test]
    fn the_graph_counts_calls_and_bus_hops() {
        let found = |service: &str, trace: u8, id: u8, parent: Option<u8>, link: Option<(u8, u8)>| FoundSpan {
            resource: Arc::new(resource(service)),
            scope: Arc::new(InstrumentationScope::default()),
            span: Span {
                trace_id: vec![trace; 16],
                span_id: vec![id; 8],
                parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
                links: link
                    .map(|(t, s)| vec![Link { trace_id: vec![t; 16], span_id: vec![s; 8], ..Default::default() }])
                    .unwrap_or_default(),
                ..Default::default()
            },
        };
        let spans: HashMap<_, _> = [
            found("shop-api", 1, 1, None, None),
            found("shop-api", 1, 2, Some(1), None),
            found("db", 1, 3, Some(2), None),
            found("crm-api", 2, 4, None, Some((1, 2))),
            found("crm-api", 2, 5, Some(4), None),
            found("mes-api", 2, 6, Some(5), Some((9, 9))),
        ]
        .iter()
        .map(graph_entry)
        .collect();
        let edge = |p: &str, c: &str, n: u64| DependencyLink { parent: p.into(), child: c.into(), call_count: n };
        assert_eq!(
            service_graph(&spans),
            vec![
                edge("crm-api", "crm-api", 1),
                edge("crm-api", "mes-api", 1),
                edge("shop-api", "crm-api", 1),
                edge("shop-api", "db", 1),
                edge("shop-api", "shop-api", 1)
            ]
        );
    }
}
