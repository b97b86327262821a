//! OTLP spans in Jaeger's JSON model (what Jaeger UI and Grafana's Jaeger data source read from
//! `/api/traces`), translated the way Jaeger v2 translates them (the OpenTelemetry Collector's
//! `pkg/translator/jaeger` plus Jaeger's query-side adjusters):
//!
//! - a process per distinct resource: `serviceName` from `service.name`, the other resource
//!   attributes (and `telemetry.sdk.*` / `telemetry.distro.*` found on spans) as its tags;
//! - span tags: the attributes, `otel.scope.name` / `otel.scope.version`, `span.kind`,
//!   `otel.status_code` (`OK` / `ERROR`), `error: true` for an error status,
//!   `otel.status_description`, `w3c.tracestate`; sorted by key;
//! - references: `CHILD_OF` the parent first, then `FOLLOWS_FROM` each link;
//! - events become logs (`event` holds the name, first; the other fields by key);
//! - times in microseconds; a span that does not end after it starts gets Jaeger's warning.
//!
//! Like Jaeger, it drops scope attributes, link attributes and trace states, and dropped counts.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValueKind;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use serde::Serialize;
use serde_json::Value;

use crate::query::{service_of, value_text};

/// One trace (`data[i]` of `/api/traces`).
#[derive(Debug, Clone, Serialize)]
pub struct Trace {
    #[serde(rename = "traceID")]
    pub trace_id: String,
    pub spans: Vec<Span>,
    pub processes: BTreeMap<String, Process>,
    pub warnings: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Span {
    #[serde(rename = "traceID")]
    pub trace_id: String,
    #[serde(rename = "spanID")]
    pub span_id: String,
    pub operation_name: String,
    pub references: Vec<Reference>,
    /// Microseconds since the Unix epoch.
    pub start_time: u64,
    /// Microseconds.
    pub duration: u64,
    pub tags: Vec<Tag>,
    pub logs: Vec<Log>,
    #[serde(rename = "processID")]
    pub process_id: String,
    pub warnings: Option<Vec<String>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Reference {
    #[serde(rename = "refType")]
    pub ref_type: &'static str,
    #[serde(rename = "traceID")]
    pub trace_id: String,
    #[serde(rename = "spanID")]
    pub span_id: String,
}

/// A typed key-value pair: `type` is `string`, `bool`, `int64`, `float64` or `binary`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tag {
    pub key: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub value: Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct Log {
    pub timestamp: u64,
    pub fields: Vec<Tag>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Process {
    pub service_name: String,
    pub tags: Vec<Tag>,
}

/// Attributes Jaeger moves from a span to its process.
pub const LIBRARY_KEYS: [&str; 5] =
    ["telemetry.sdk.language", "telemetry.sdk.name", "telemetry.sdk.version", "telemetry.distro.name", "telemetry.distro.version"];

/// Jaeger's trace id text: 16 hex digits when the high half is zero, else 32.
pub fn trace_id_text(id: &[u8]) -> String {
    if id.len() == 16 && id[..8].iter().all(|b| *b == 0) {
        hex::encode(&id[8..])
    } else {
        hex::encode(id)
    }
}

/// A text that is not a trace id as Jaeger takes them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a trace id (1 to 32 hex digits)")]
pub struct TraceIdError(String);

/// A trace id as Jaeger accepts it: 1 to 32 hex digits, zero-padded on the left.
pub fn parse_trace_id(text: &str) -> Result<Vec<u8>, TraceIdError> {
    if text.is_empty() || text.len() > 32 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(TraceIdError(text.to_string()));
    }
    // 32 hex digits after the padding: the decoding cannot fail.
    hex::decode(format!("{text:0>32}")).map_err(|_| TraceIdError(text.to_string()))
}

/// An attribute as a Jaeger tag.
pub fn tag(key: &str, value: Option<&AnyValue>) -> Tag {
    let (kind, value) = match value.and_then(|v| v.value.as_ref()) {
        Some(AnyValueKind::StringValue(s)) => ("string", Value::String(s.clone())),
        Some(AnyValueKind::BoolValue(b)) => ("bool", Value::Bool(*b)),
        Some(AnyValueKind::IntValue(i)) => ("int64", Value::from(*i)),
        Some(AnyValueKind::DoubleValue(d)) => ("float64", serde_json::Number::from_f64(*d).map(Value::Number).unwrap_or(Value::Null)),
        Some(AnyValueKind::BytesValue(b)) => ("binary", Value::String(BASE64.encode(b))),
        _ => ("string", Value::String(value.map(value_text).unwrap_or_default())),
    };
    Tag { key: key.to_string(), kind, value }
}

fn text_tag(key: &str, value: &str) -> Tag {
    Tag { key: key.to_string(), kind: "string", value: Value::String(value.to_string()) }
}

fn tags_of(attributes: &[KeyValue]) -> Vec<Tag> {
    attributes.iter().map(|kv| tag(&kv.key, kv.value.as_ref())).collect()
}

fn kind_text(kind: i32) -> Option<&'static str> {
    match kind {
        1 => Some("internal"),
        2 => Some("server"),
        3 => Some("client"),
        4 => Some("producer"),
        5 => Some("consumer"),
        _ => None,
    }
}

/// Jaeger's name for an OTLP span kind in operation lists (`""` when unspecified).
pub fn operation_kind(kind: i32) -> &'static str {
    kind_text(kind).unwrap_or("")
}

/// Go's `time.Time.String()` of a UTC time: `2026-11-30 15:34:10.06739788 +0000 UTC`.
fn go_time(ns: u64) -> String {
    let rfc = crate::shared::format_rfc3339_nanos(ns);
    let (date_time, _) = rfc.split_once('Z').unwrap_or((&rfc, ""));
    let date_time = date_time.replacen('T', " ", 1);
    let trimmed = match date_time.split_once('.') {
        Some((whole, fraction)) => match fraction.trim_end_matches('0') {
            "" => whole.to_string(),
            f => format!("{whole}.{f}"),
        },
        None => date_time,
    };
    format!("{trimmed} +0000 UTC")
}

/// The traces among `resource_spans` in Jaeger's model, in the order their first spans come.
pub fn traces(resource_spans: &[ResourceSpans]) -> Vec<Trace> {
    struct Building {
        trace: Trace,
        processes: Vec<Process>,
    }
    let mut building: Vec<Building> = Vec::new();
    for rs in resource_spans {
        let resource = rs.resource.clone().unwrap_or_default();
        let service = service_of(&resource);
        let resource_tags: Vec<Tag> = tags_of(&resource.attributes).into_iter().filter(|t| t.key != "service.name").collect();
        for ss in &rs.scope_spans {
            let scope = ss.scope.clone().unwrap_or_default();
            for span in &ss.spans {
                let trace_id = trace_id_text(&span.trace_id);
                let at = match building.iter().position(|b| b.trace.trace_id == trace_id) {
                    Some(i) => i,
                    None => {
                        building.push(Building {
                            trace: Trace { trace_id: trace_id.clone(), spans: Vec::new(), processes: BTreeMap::new(), warnings: None },
                            processes: Vec::new(),
                        });
                        building.len() - 1
                    }
                };
                let mut process = Process { service_name: service.clone(), tags: resource_tags.clone() };
                let mut tags = Vec::with_capacity(span.attributes.len() + 6);
                if !scope.name.is_empty() {
                    tags.push(text_tag("otel.scope.name", &scope.name));
                }
                if !scope.version.is_empty() {
                    tags.push(text_tag("otel.scope.version", &scope.version));
                }
                for kv in &span.attributes {
                    let t = tag(&kv.key, kv.value.as_ref());
                    if LIBRARY_KEYS.contains(&kv.key.as_str()) {
                        process.tags.push(t);
                    } else {
                        tags.push(t);
                    }
                }
                if let Some(kind) = kind_text(span.kind) {
                    tags.push(text_tag("span.kind", kind));
                }
                let status = span.status.clone().unwrap_or_default();
                if status.code == StatusCode::Ok as i32 {
                    tags.push(text_tag("otel.status_code", "OK"));
                } else if status.code == StatusCode::Error as i32 {
                    tags.push(text_tag("otel.status_code", "ERROR"));
                    tags.push(Tag { key: "error".into(), kind: "bool", value: Value::Bool(true) });
                }
                if !status.message.is_empty() {
                    tags.push(text_tag("otel.status_description", &status.message));
                }
                if !span.trace_state.is_empty() {
                    tags.push(text_tag("w3c.tracestate", &span.trace_state));
                }
                tags.sort_by(|a, b| a.key.cmp(&b.key));
                process.tags.sort_by(|a, b| a.key.cmp(&b.key));

                let mut references = Vec::with_capacity(span.links.len() + 1);
                if !span.parent_span_id.is_empty() {
                    references.push(Reference {
                        ref_type: "CHILD_OF",
                        trace_id: trace_id.clone(),
                        span_id: hex::encode(&span.parent_span_id),
                    });
                }
                for link in span.links.iter().filter(|l| !l.trace_id.iter().all(|b| *b == 0)) {
                    references.push(Reference {
                        ref_type: "FOLLOWS_FROM",
                        trace_id: trace_id_text(&link.trace_id),
                        span_id: hex::encode(&link.span_id),
                    });
                }
                let logs = span
                    .events
                    .iter()
                    .map(|e| {
                        let mut fields = tags_of(&e.attributes);
                        fields.sort_by(|a, b| a.key.cmp(&b.key));
                        if !e.name.is_empty() {
                            fields.insert(0, text_tag("event", &e.name));
                        }
                        Log { timestamp: e.time_unix_nano / 1000, fields }
                    })
                    .collect();

                let (start, end) = (span.start_time_unix_nano, span.end_time_unix_nano);
                let mut warnings = None;
                if end <= start {
                    warnings = Some(vec![format!(
                        "Negative duration detected, sanitizing end timestamp. Original end timestamp: {}, adjusted to: {}",
                        go_time(end),
                        go_time(start + 1)
                    )]);
                }
                let b = &mut building[at];
                let process_id = match b.processes.iter().position(|p| *p == process) {
                    Some(i) => format!("p{}", i + 1),
                    None => {
                        b.processes.push(process.clone());
                        let id = format!("p{}", b.processes.len());
                        b.trace.processes.insert(id.clone(), process);
                        id
                    }
                };
                b.trace.spans.push(Span {
                    trace_id,
                    span_id: hex::encode(&span.span_id),
                    operation_name: span.name.clone(),
                    references,
                    start_time: start / 1000,
                    duration: end.saturating_sub(start) / 1000,
                    tags,
                    logs,
                    process_id,
                    warnings,
                });
            }
        }
    }
    building.into_iter().map(|b| b.trace).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, InstrumentationScope, KeyValueList};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
    use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Span as OtlpSpan, Status};
    use serde_json::json;

    fn kv(key: &str, value: AnyValueKind) -> KeyValue {
        KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
    }

    fn text(s: &str) -> AnyValueKind {
        AnyValueKind::StringValue(s.into())
    }

    /// The span Jaeger v1.76.0 was sent (as OTLP JSON) and the JSON its `/api/traces/{id}`
    /// answered, taken from a real run; every translation rule is in it.
    #[test]
    fn translates_as_jaeger_does() {
        const T: u64 = 1_796_052_850_067_297_879;
        let trace_id: Vec<u8> = hex::decode("0102030405060708090a0b0c0d0e0f10").unwrap();
        let root = OtlpSpan {
            trace_id: trace_id.clone(),
            span_id: vec![0x11; 8],
            name: "root".into(),
            kind: 2,
            start_time_unix_nano: T,
            end_time_unix_nano: T + 5_000_000,
            trace_state: "k=v".into(),
            attributes: vec![
                kv("order.id", text("A-1")),
                kv("n", AnyValueKind::IntValue(7)),
                kv("d", AnyValueKind::DoubleValue(1.5)),
                kv("b", AnyValueKind::BoolValue(true)),
                kv(
                    "arr",
                    AnyValueKind::ArrayValue(ArrayValue {
                        values: vec![AnyValue { value: Some(text("x")) }, AnyValue { value: Some(AnyValueKind::IntValue(2)) }],
                    }),
                ),
                kv("kv", AnyValueKind::KvlistValue(KeyValueList { values: vec![kv("a", text("b"))] })),
                kv("by", AnyValueKind::BytesValue(vec![1, 2, 3])),
            ],
            dropped_attributes_count: 3,
            dropped_events_count: 4,
            dropped_links_count: 5,
            status: Some(Status { code: StatusCode::Error as i32, message: "boom".into() }),
            events: vec![
                Event {
                    time_unix_nano: T + 1_000_000,
                    name: "ev1".into(),
                    attributes: vec![kv("ek", text("ev"))],
                    dropped_attributes_count: 1,
                },
                Event { time_unix_nano: T + 2_000_000, ..Default::default() },
            ],
            links: vec![Link {
                trace_id: hex::decode("aa02030405060708090a0b0c0d0e0f10").unwrap(),
                span_id: vec![0x22; 8],
                trace_state: "l=1".into(),
                attributes: vec![kv("lk", text("lv"))],
                dropped_attributes_count: 1,
                flags: 0,
            }],
            ..Default::default()
        };
        let child = OtlpSpan {
            trace_id: trace_id.clone(),
            span_id: vec![0x33; 8],
            parent_span_id: vec![0x11; 8],
            name: "child".into(),
            kind: 3,
            start_time_unix_nano: T + 100_000,
            end_time_unix_nano: T + 200_500,
            status: Some(Status { code: StatusCode::Ok as i32, message: String::new() }),
            ..Default::default()
        };
        let inner = OtlpSpan {
            trace_id,
            span_id: vec![0x44; 8],
            parent_span_id: vec![0x33; 8],
            name: "inner".into(),
            start_time_unix_nano: T + 100_000,
            end_time_unix_nano: T + 100_000,
            ..Default::default()
        };
        let rs = ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", text("svc-a")), kv("host.name", text("h1")), kv("pid", AnyValueKind::IntValue(42))],
                dropped_attributes_count: 2,
                entity_refs: vec![],
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "my.lib".into(),
                    version: "1.2.3".into(),
                    attributes: vec![kv("scope.attr", text("x"))],
                    dropped_attributes_count: 0,
                }),
                spans: vec![root, child, inner],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        };
        let got = serde_json::to_value(traces(&[rs])).unwrap();
        let scope_tags = json!([
            {"key": "otel.scope.name", "type": "string", "value": "my.lib"},
            {"key": "otel.scope.version", "type": "string", "value": "1.2.3"}
        ]);
        let with_scope = |more: Value| {
            let mut tags = scope_tags.as_array().unwrap().clone();
            tags.extend(more.as_array().unwrap().iter().cloned());
            tags.sort_by(|a, b| a["key"].as_str().cmp(&b["key"].as_str()));
            Value::Array(tags)
        };
        let expected = json!([{
            "traceID": "0102030405060708090a0b0c0d0e0f10",
            "spans": [
                {
                    "traceID": "0102030405060708090a0b0c0d0e0f10", "spanID": "1111111111111111", "operationName": "root",
                    "references": [{"refType": "FOLLOWS_FROM", "traceID": "aa02030405060708090a0b0c0d0e0f10", "spanID": "2222222222222222"}],
                    "startTime": 1796052850067297u64, "duration": 5000,
                    "tags": with_scope(json!([
                        {"key": "arr", "type": "string", "value": "[\"x\",2]"},
                        {"key": "b", "type": "bool", "value": true},
                        {"key": "by", "type": "binary", "value": "AQID"},
                        {"key": "d", "type": "float64", "value": 1.5},
                        {"key": "error", "type": "bool", "value": true},
                        {"key": "kv", "type": "string", "value": "{\"a\":\"b\"}"},
                        {"key": "n", "type": "int64", "value": 7},
                        {"key": "order.id", "type": "string", "value": "A-1"},
                        {"key": "otel.status_code", "type": "string", "value": "ERROR"},
                        {"key": "otel.status_description", "type": "string", "value": "boom"},
                        {"key": "span.kind", "type": "string", "value": "server"},
                        {"key": "w3c.tracestate", "type": "string", "value": "k=v"}
                    ])),
                    "logs": [
                        {"timestamp": 1796052850068297u64, "fields": [{"key": "event", "type": "string", "value": "ev1"}, {"key": "ek", "type": "string", "value": "ev"}]},
                        {"timestamp": 1796052850069297u64, "fields": []}
                    ],
                    "processID": "p1", "warnings": null
                },
                {
                    "traceID": "0102030405060708090a0b0c0d0e0f10", "spanID": "3333333333333333", "operationName": "child",
                    "references": [{"refType": "CHILD_OF", "traceID": "0102030405060708090a0b0c0d0e0f10", "spanID": "1111111111111111"}],
                    "startTime": 1796052850067397u64, "duration": 100,
                    "tags": with_scope(json!([
                        {"key": "otel.status_code", "type": "string", "value": "OK"},
                        {"key": "span.kind", "type": "string", "value": "client"}
                    ])),
                    "logs": [], "processID": "p1", "warnings": null
                },
                {
                    "traceID": "0102030405060708090a0b0c0d0e0f10", "spanID": "4444444444444444", "operationName": "inner",
                    "references": [{"refType": "CHILD_OF", "traceID": "0102030405060708090a0b0c0d0e0f10", "spanID": "3333333333333333"}],
                    "startTime": 1796052850067397u64, "duration": 0,
                    "tags": scope_tags,
                    "logs": [], "processID": "p1",
                    "warnings": ["Negative duration detected, sanitizing end timestamp. Original end timestamp: 2026-11-30 15:34:10.067397879 +0000 UTC, adjusted to: 2026-11-30 15:34:10.06739788 +0000 UTC"]
                }
            ],
            "processes": {"p1": {"serviceName": "svc-a", "tags": [
                {"key": "host.name", "type": "string", "value": "h1"},
                {"key": "pid", "type": "int64", "value": 42}
            ]}},
            "warnings": null
        }]);
        assert_eq!(got, expected, "{}", serde_json::to_string_pretty(&got).unwrap());
    }

    #[test]
    fn kinds_processes_and_ids() {
        let span = |kind: i32, id: u8, sdk: Option<&str>| OtlpSpan {
            trace_id: [vec![0; 8], vec![9; 8]].concat(),
            span_id: vec![id; 8],
            kind,
            start_time_unix_nano: 1_000,
            end_time_unix_nano: 2_000,
            attributes: sdk.map(|s| vec![kv("telemetry.sdk.language", text(s))]).unwrap_or_default(),
            ..Default::default()
        };
        let rs = |service: Option<&str>, spans: Vec<OtlpSpan>| ResourceSpans {
            resource: Some(Resource {
                attributes: service.map(|s| vec![kv("service.name", text(s))]).unwrap_or_default(),
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        };
        let got = traces(&[
            rs(Some("a"), vec![span(0, 1, None), span(1, 2, None), span(4, 3, Some("java"))]),
            rs(None, vec![span(5, 4, None)]),
            rs(Some("a"), vec![span(2, 5, None)]),
        ]);
        assert_eq!(got.len(), 1);
        let trace = &got[0];
        assert_eq!(trace.trace_id, "0909090909090909", "a trace id with a zero high half has 16 digits");
        let kinds: Vec<Option<&str>> =
            trace.spans.iter().map(|s| s.tags.iter().find(|t| t.key == "span.kind").and_then(|t| t.value.as_str())).collect();
        assert_eq!(kinds, [None, Some("internal"), Some("producer"), Some("consumer"), Some("server")]);
        let pids: Vec<&str> = trace.spans.iter().map(|s| s.process_id.as_str()).collect();
        assert_eq!(pids, ["p1", "p1", "p2", "p3", "p1"], "equal resources share a process; telemetry.sdk.* moves to it");
        assert_eq!(trace.processes["p2"].tags, vec![text_tag("telemetry.sdk.language", "java")]);
        assert_eq!(trace.processes["p3"].service_name, "missing-service-name");
        let mut padded = vec![0u8; 8];
        padded.extend([0x09; 8]);
        assert_eq!(parse_trace_id("909090909090909").unwrap(), padded, "short ids are zero-padded on the left");
        assert_eq!(parse_trace_id("0909090909090909").unwrap(), padded);
        assert_eq!(parse_trace_id(&trace.trace_id).unwrap(), padded, "ids read back as written");
        assert!(parse_trace_id("xyz").is_err());
        assert!(parse_trace_id(&"1".repeat(33)).is_err());
    }
}
