//! Order events: what systems that cannot emit OTLP (MES) post to `POST /v1/order-events` (the
//! `otlp` receiver) or publish on the bus (the `rabbitmq` receiver maps its messages to them).
//!
//! A body is one event object or an array of them:
//! `{"order_id": "A-1001", "service": "mes-api", "status": "manufactured", "stage": "status_change",
//! "time": "2026-11-20T10:00:00Z", "attributes": {"mes.line": "3"}}`.
//! Each valid event becomes one INTERNAL span of its service, so it flows through the same
//! pipelines as OTLP data. Its trace and span ids are a hash of what identifies the event (order,
//! service, stage, status, time), so a client that posts the same event again replaces the span
//! instead of adding a second one.

use std::collections::HashMap;

use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValueKind;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::shared::parse_rfc3339;

/// The stage of an event that names none.
pub const DEFAULT_STAGE: &str = "status_change";
/// The longest accepted order id, in characters.
pub const MAX_ORDER_ID_CHARS: usize = 128;
/// `telemetry.sdk.name` of the resource of every order-event span.
pub const SDK_NAME: &str = "tracegate-order-events";
/// The instrumentation scope of every order-event span.
pub const SCOPE_NAME: &str = "tracegate.order_events";

const FIELDS: [&str; 6] = ["order_id", "service", "status", "stage", "time", "attributes"];
/// Span attributes an event sets from its own fields; its `attributes` may not set them too.
const RESERVED_ATTRIBUTES: [&str; 3] = ["order.id", "order.stage", "order.status"];

/// One valid order event.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderEvent {
    pub order_id: String,
    pub service: String,
    pub stage: String,
    pub status: Option<String>,
    /// Unix nanoseconds.
    pub time_ns: u64,
    /// The event's own attributes, sorted by key.
    pub attributes: Vec<KeyValue>,
}

/// Why the event at `index` of the body was refused; `field` names the offending field (`None`
/// when the element is not an object at all).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    pub index: usize,
    pub field: Option<String>,
    pub error: String,
}

/// A body read event by event: the valid ones and why the others were refused.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ParsedOrderEvents {
    pub events: Vec<OrderEvent>,
    pub rejected: Vec<Rejection>,
}

/// Why a body as a whole is not order events; answered as a malformed request.
#[derive(Debug, thiserror::Error)]
pub enum OrderEventsError {
    #[error("body is not JSON")]
    NotJson(#[source] serde_json::Error),
    #[error("body must be an order event object or an array of them")]
    NotEvents,
}

/// Reads a body. Fails only when the body as a whole is unusable (not JSON, neither an object nor
/// an array); a bad event is rejected on its own and the others still count. Events without a
/// `time` happened at `now_ns`.
pub fn parse_order_events(body: &[u8], now_ns: u64) -> Result<ParsedOrderEvents, OrderEventsError> {
    let value: Value = serde_json::from_slice(body).map_err(OrderEventsError::NotJson)?;
    let items = match value {
        Value::Array(items) => items,
        object @ Value::Object(_) => vec![object],
        _ => return Err(OrderEventsError::NotEvents),
    };
    let mut parsed = ParsedOrderEvents::default();
    for (index, item) in items.into_iter().enumerate() {
        match parse_event(item, now_ns) {
            Ok(event) => parsed.events.push(event),
            Err((field, error)) => parsed.rejected.push(Rejection { index, field, error }),
        }
    }
    Ok(parsed)
}

/// Why one event was refused: the offending field (`None`: not an object) and the problem.
pub type FieldError = (Option<String>, String);

/// Reads one event object, as an element of a posted body is read. Without a `time` it
/// happened at `now_ns`.
pub fn read_order_event(item: Value, now_ns: u64) -> Result<OrderEvent, FieldError> {
    parse_event(item, now_ns)
}

fn field_error(field: &str, error: impl Into<String>) -> FieldError {
    (Some(field.to_string()), error.into())
}

fn parse_event(item: Value, now_ns: u64) -> Result<OrderEvent, FieldError> {
    let Value::Object(mut object) = item else {
        return Err((None, "an order event must be a JSON object".into()));
    };
    if let Some(unknown) = object.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(field_error(unknown, format!("unknown field; an order event has {}", FIELDS.join(", "))));
    }
    let order_id = required_string(&mut object, "order_id")?;
    if order_id.chars().count() > MAX_ORDER_ID_CHARS {
        return Err(field_error("order_id", format!("longer than {MAX_ORDER_ID_CHARS} characters")));
    }
    let service = required_string(&mut object, "service")?;
    let stage = optional_string(&mut object, "stage")?.unwrap_or_else(|| DEFAULT_STAGE.to_string());
    let status = optional_string(&mut object, "status")?;
    let time_ns = match optional_string(&mut object, "time")? {
        Some(text) => parse_rfc3339(&text).map_err(|e| field_error("time", e.to_string()))?,
        None => now_ns,
    };
    let attributes = match object.remove("attributes") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(map)) => attributes(map)?,
        Some(_) => return Err(field_error("attributes", "must be an object of string, number or boolean values")),
    };
    Ok(OrderEvent { order_id, service, stage, status, time_ns, attributes })
}

fn required_string(object: &mut Map<String, Value>, field: &str) -> Result<String, FieldError> {
    optional_string(object, field)?.ok_or_else(|| field_error(field, "required"))
}

/// A string field that may be absent or null, but not empty.
fn optional_string(object: &mut Map<String, Value>, field: &str) -> Result<Option<String>, FieldError> {
    match object.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Err(field_error(field, "must not be empty")),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(field_error(field, "must be a string")),
    }
}

fn attributes(map: Map<String, Value>) -> Result<Vec<KeyValue>, FieldError> {
    let mut out = Vec::with_capacity(map.len());
    for (key, value) in map {
        let field = format!("attributes.{key}");
        if key.is_empty() {
            return Err(field_error(&field, "an attribute needs a name"));
        }
        if RESERVED_ATTRIBUTES.contains(&key.as_str()) {
            return Err(field_error(&field, "set by the event's own fields (order_id, stage, status)"));
        }
        let value = match value {
            Value::String(s) => AnyValueKind::StringValue(s),
            Value::Bool(b) => AnyValueKind::BoolValue(b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => AnyValueKind::IntValue(i),
                // Not an i64 (a fraction, or beyond i64): a double, as OTLP would carry it.
                None => AnyValueKind::DoubleValue(n.as_f64().unwrap_or(f64::NAN)),
            },
            _ => return Err(field_error(&field, "must be a string, number or boolean")),
        };
        out.push(KeyValue { key, value: Some(AnyValue { value: Some(value) }), ..Default::default() });
    }
    // serde_json's map is sorted by key; keep that order explicit.
    out.sort_by(|a, b| a.key.cmp(&b.key));
    Ok(out)
}

fn string_kv(key: &str, value: &str) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(AnyValueKind::StringValue(value.into())) }), ..Default::default() }
}

impl OrderEvent {
    /// The trace and span ids: the SHA-256 of the event's identity, never all zero.
    pub fn ids(&self) -> ([u8; 16], [u8; 8]) {
        let mut hash = Sha256::new();
        // Length-prefixed, so that no two different events hash the same input.
        for part in [self.order_id.as_str(), self.service.as_str(), self.stage.as_str()] {
            hash.update((part.len() as u64).to_be_bytes());
            hash.update(part.as_bytes());
        }
        match &self.status {
            Some(status) => {
                hash.update([1]);
                hash.update((status.len() as u64).to_be_bytes());
                hash.update(status.as_bytes());
            }
            None => hash.update([0]),
        }
        hash.update(self.time_ns.to_be_bytes());
        let digest = hash.finalize();
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        trace_id.copy_from_slice(&digest[..16]);
        span_id.copy_from_slice(&digest[16..24]);
        // An all-zero id is invalid in OTLP; a 2^-64 chance, but never send one.
        if trace_id == [0; 16] {
            trace_id[15] = 1;
        }
        if span_id == [0; 8] {
            span_id[7] = 1;
        }
        (trace_id, span_id)
    }

    /// The event as an INTERNAL span that starts and ends at its time.
    pub fn to_span(&self) -> Span {
        let (trace_id, span_id) = self.ids();
        let mut attributes = vec![string_kv("order.id", &self.order_id), string_kv("order.stage", &self.stage)];
        if let Some(status) = &self.status {
            attributes.push(string_kv("order.status", status));
        }
        attributes.extend(self.attributes.iter().cloned());
        Span {
            trace_id: trace_id.to_vec(),
            span_id: span_id.to_vec(),
            name: format!("order {}", self.stage),
            kind: SpanKind::Internal as i32,
            start_time_unix_nano: self.time_ns,
            end_time_unix_nano: self.time_ns,
            attributes,
            ..Default::default()
        }
    }
}

/// The events as OTLP: one `ResourceSpans` per service, in order of first appearance.
pub fn to_resource_spans(events: &[OrderEvent]) -> Vec<ResourceSpans> {
    // Indexed by service: one body may name a hundred thousand services, and a linear search
    // per event made that quadratic (found by tests/fuzz.rs).
    let mut services: HashMap<&str, usize> = HashMap::new();
    let mut out: Vec<ResourceSpans> = Vec::new();
    for event in events {
        let index = match services.get(event.service.as_str()) {
            Some(&i) => i,
            None => {
                services.insert(&event.service, out.len());
                out.push(ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![string_kv("service.name", &event.service), string_kv("telemetry.sdk.name", SDK_NAME)],
                        ..Default::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: SCOPE_NAME.into(),
                            version: env!("CARGO_PKG_VERSION").into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                });
                out.len() - 1
            }
        };
        out[index].scope_spans[0].spans.push(event.to_span());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000_000_000;
    const T: u64 = 1_795_168_800_000_000_000; // 2026-11-20T10:00:00Z

    fn parse(json: &str) -> ParsedOrderEvents {
        parse_order_events(json.as_bytes(), NOW).unwrap()
    }

    fn rejection(json: &str) -> (Option<String>, String) {
        let parsed = parse(json);
        assert!(parsed.events.is_empty(), "{json} was accepted");
        let r = parsed.rejected.into_iter().next().unwrap();
        (r.field, r.error)
    }

    #[test]
    fn reads_a_full_event_and_defaults() {
        let parsed = parse(
            r#"{"order_id": "A-1001", "service": "mes-api", "status": "manufactured", "stage": "status_change", "time": "2026-11-20T11:00:00+01:00", "attributes": {"mes.line": "3", "mes.shift": 2, "mes.yield": 0.5, "mes.rework": false}}"#,
        );
        assert!(parsed.rejected.is_empty());
        let e = &parsed.events[0];
        assert_eq!(
            (e.order_id.as_str(), e.service.as_str(), e.stage.as_str(), e.status.as_deref(), e.time_ns),
            ("A-1001", "mes-api", "status_change", Some("manufactured"), T)
        );
        let attrs: Vec<_> = e.attributes.iter().map(|kv| (kv.key.as_str(), kv.value.clone().unwrap().value.unwrap())).collect();
        assert_eq!(
            attrs,
            [
                ("mes.line", AnyValueKind::StringValue("3".into())),
                ("mes.rework", AnyValueKind::BoolValue(false)),
                ("mes.shift", AnyValueKind::IntValue(2)),
                ("mes.yield", AnyValueKind::DoubleValue(0.5)),
            ]
        );
        let minimal = parse(r#"[{"order_id": "A-1", "service": "mes-api", "status": null}]"#);
        let e = &minimal.events[0];
        assert_eq!((e.stage.as_str(), e.status.as_deref(), e.time_ns, e.attributes.len()), ("status_change", None, NOW, 0));
    }

    #[test]
    fn names_the_field_of_each_problem() {
        let long = "x".repeat(129);
        let cases = [
            (r#"{"service": "mes"}"#.to_string(), "order_id", "required"),
            (r#"{"order_id": "", "service": "mes"}"#.into(), "order_id", "must not be empty"),
            (r#"{"order_id": 1001, "service": "mes"}"#.into(), "order_id", "must be a string"),
            (format!(r#"{{"order_id": "{long}", "service": "mes"}}"#), "order_id", "longer than 128 characters"),
            (r#"{"order_id": "A-1"}"#.into(), "service", "required"),
            (r#"{"order_id": "A-1", "service": " "}"#.into(), "service", "must not be empty"),
            (r#"{"order_id": "A-1", "service": "mes", "stage": ""}"#.into(), "stage", "must not be empty"),
            (r#"{"order_id": "A-1", "service": "mes", "status": 3}"#.into(), "status", "must be a string"),
            (r#"{"order_id": "A-1", "service": "mes", "time": "yesterday"}"#.into(), "time", "not an RFC 3339 time"),
            (r#"{"order_id": "A-1", "service": "mes", "attributes": ["a"]}"#.into(), "attributes", "must be an object"),
            (
                r#"{"order_id": "A-1", "service": "mes", "attributes": {"a": {"b": 1}}}"#.into(),
                "attributes.a",
                "must be a string, number or boolean",
            ),
            (
                r#"{"order_id": "A-1", "service": "mes", "attributes": {"order.id": "B-2"}}"#.into(),
                "attributes.order.id",
                "set by the event's own fields",
            ),
            (r#"{"order_id": "A-1", "service": "mes", "colour": "red"}"#.into(), "colour", "unknown field"),
        ];
        for (json, field, error) in cases {
            let (f, e) = rejection(&json);
            assert_eq!(f.as_deref(), Some(field), "{json}");
            assert!(e.contains(error), "{json}: {e}");
        }
        assert_eq!(rejection("[42]"), (None, "an order event must be a JSON object".into()));
    }

    #[test]
    fn keeps_the_good_events_of_a_mixed_array() {
        let parsed = parse(r#"[{"order_id": "A-1", "service": "mes"}, {"service": "mes"}, {"order_id": "A-2", "service": "mes"}, "x"]"#);
        assert_eq!(parsed.events.iter().map(|e| e.order_id.as_str()).collect::<Vec<_>>(), ["A-1", "A-2"]);
        assert_eq!(parsed.rejected.iter().map(|r| r.index).collect::<Vec<_>>(), [1, 3]);
        assert_eq!(parse("[]"), ParsedOrderEvents::default());
    }

    #[test]
    fn refuses_a_body_that_is_not_events() {
        assert!(parse_order_events(b"{not json", NOW).unwrap_err().to_string().starts_with("body is not JSON"));
        assert!(parse_order_events(b"\"A-1\"", NOW).unwrap_err().to_string().starts_with("body must be an order event object"));
    }

    #[test]
    fn the_same_event_gets_the_same_ids_and_any_difference_changes_them() {
        let base = r#"{"order_id": "A-1", "service": "mes-api", "status": "manufactured", "time": "2026-11-20T10:00:00Z""#;
        let ids = |json: String| parse(&json).events[0].ids();
        let first = ids(format!("{base}, \"attributes\": {{\"mes.line\": \"3\"}}}}"));
        assert_eq!(first, ids(format!("{base}}}")), "attributes are not part of the identity");
        assert_ne!(first.0, [0; 16]);
        assert_ne!(first.1, [0; 8]);
        for other in [
            r#"{"order_id": "A-2", "service": "mes-api", "status": "manufactured", "time": "2026-11-20T10:00:00Z"}"#,
            r#"{"order_id": "A-1", "service": "crm-api", "status": "manufactured", "time": "2026-11-20T10:00:00Z"}"#,
            r#"{"order_id": "A-1", "service": "mes-api", "status": "shipped", "time": "2026-11-20T10:00:00Z"}"#,
            r#"{"order_id": "A-1", "service": "mes-api", "time": "2026-11-20T10:00:00Z"}"#,
            r#"{"order_id": "A-1", "service": "mes-api", "status": "manufactured", "stage": "db_save", "time": "2026-11-20T10:00:00Z"}"#,
            r#"{"order_id": "A-1", "service": "mes-api", "status": "manufactured", "time": "2026-11-20T10:00:00.000000001Z"}"#,
        ] {
            assert_ne!(ids(other.to_string()).0, first.0, "{other}");
        }
    }

    #[test]
    fn events_become_internal_spans_grouped_by_service() {
        let parsed = parse(
            r#"[{"order_id": "A-1", "service": "mes-api", "status": "manufactured", "time": "2026-11-20T10:00:00Z", "attributes": {"mes.line": "3"}},
                {"order_id": "A-2", "service": "crm-api", "stage": "created", "time": "2026-11-20T10:00:00Z"},
                {"order_id": "A-3", "service": "mes-api", "stage": "db_save", "time": "2026-11-20T10:00:00Z"}]"#,
        );
        let rs = to_resource_spans(&parsed.events);
        let services: Vec<_> =
            rs.iter().map(|r| r.resource.as_ref().unwrap().attributes[0].value.clone().unwrap().value.unwrap()).collect();
        assert_eq!(services, [AnyValueKind::StringValue("mes-api".into()), AnyValueKind::StringValue("crm-api".into())]);
        assert_eq!(rs[0].resource.as_ref().unwrap().attributes[1], string_kv("telemetry.sdk.name", SDK_NAME));
        assert_eq!(rs[0].scope_spans[0].scope.as_ref().unwrap().name, SCOPE_NAME);
        let names: Vec<_> = rs[0].scope_spans[0].spans.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["order status_change", "order db_save"]);
        let span = &rs[0].scope_spans[0].spans[0];
        assert_eq!((span.kind, span.start_time_unix_nano, span.end_time_unix_nano), (SpanKind::Internal as i32, T, T));
        assert_eq!(
            span.attributes,
            [
                string_kv("order.id", "A-1"),
                string_kv("order.stage", "status_change"),
                string_kv("order.status", "manufactured"),
                string_kv("mes.line", "3")
            ]
        );
        assert_eq!(rs[1].scope_spans[0].spans[0].attributes, [string_kv("order.id", "A-2"), string_kv("order.stage", "created")]);
    }
}
