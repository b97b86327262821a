//! Span documents and bulk bodies.
//!
//! One document per span, in the OpenTelemetry-native shape of Elasticsearch's own OTel mapping
//! (`@timestamp`, `trace_id`, `span_id`, `parent_span_id`, `name`, `kind`, `duration` in ns,
//! `attributes.*`, `resource.attributes.*`, `scope.*`, `status.*`, `links`, `events`), plus the
//! order fields a support query filters on as top-level keywords: `service.name`, `order.id`,
//! `order.stage`, `order.status` (and `order.correlation` for spans that join an order through a
//! correlation value). Every document is written with `create` and an `_id` made of its trace id
//! and span id, so a re-sent span is refused with 409 instead of stored twice.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use std::sync::{Arc, Mutex};

use bytes::{BufMut, Bytes, BytesMut};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValueKind;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode, ResourceSpans, ScopeSpans, Span};
use prost::Message;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

use super::config::{TargetConfig, TargetMode};
use crate::store::{format_rfc3339_nanos, string_attr};

/// One bulk item: the action line and the document line, both ending in `\n`.
#[derive(Debug, Clone)]
pub struct BulkItem {
    pub id: String,
    /// Shared by the items of one day (or the data stream).
    pub index: Arc<str>,
    /// `{"create":...}\n{...}\n`
    pub lines: Bytes,
}

impl BulkItem {
    /// The document line without its newline.
    pub fn document(&self) -> &[u8] {
        let body = &self.lines[..self.lines.len().saturating_sub(1)];
        match body.iter().position(|b| *b == b'\n') {
            Some(i) => &body[i + 1..],
            None => body,
        }
    }
}

/// Turns spans into bulk items for one target.
pub struct SpanEncoder {
    target: TargetConfig,
    correlation_keys: Vec<String>,
    /// The index of the last day seen (daily indices), or the data stream.
    index: Mutex<(u64, Arc<str>)>,
}

const DAY_NS: u64 = 86_400 * 1_000_000_000;

impl SpanEncoder {
    pub fn new(target: TargetConfig, correlation_keys: Vec<String>) -> SpanEncoder {
        let first = match target.mode {
            TargetMode::DataStream => Arc::from(target.data_stream()),
            TargetMode::Index => Arc::from(""),
        };
        SpanEncoder { target, correlation_keys, index: Mutex::new((u64::MAX, first)) }
    }

    /// The first correlation value a span carries (e.g. `constructor.file_id`).
    pub fn correlation(&self, span: &Span) -> Option<String> {
        self.correlation_keys.iter().find_map(|k| string_attr(&span.attributes, k).filter(|v| !v.is_empty()))
    }

    /// The `_id` of a span's document.
    pub fn document_id(trace_id: &[u8], span_id: &[u8]) -> String {
        let mut id = hex::encode(trace_id);
        id.push_str(&hex::encode(span_id));
        id
    }

    fn index_for(&self, start_ns: u64) -> Arc<str> {
        let mut last = self.index.lock().unwrap_or_else(|e| e.into_inner());
        if self.target.mode == TargetMode::DataStream || last.0 == start_ns / DAY_NS {
            return last.1.clone();
        }
        let day = &format_rfc3339_nanos(start_ns)[..10];
        *last = (start_ns / DAY_NS, Arc::from(format!("{}-{}", self.target.index, day.replace('-', "."))));
        last.1.clone()
    }

    /// Appends one item per span.
    pub fn encode(&self, resource_spans: &[ResourceSpans], out: &mut Vec<BulkItem>) {
        let mut buf = BytesMut::new();
        let mut proto = Vec::with_capacity(1024);
        for rs in resource_spans {
            let resource_attrs = rs.resource.as_ref().map(|r| r.attributes.as_slice()).unwrap_or(&[]);
            let service = string_attr(resource_attrs, "service.name");
            let resource_otlp = BASE64.encode(
                ResourceSpans { resource: rs.resource.clone(), scope_spans: vec![], schema_url: rs.schema_url.clone() }.encode_to_vec(),
            );
            for ss in &rs.scope_spans {
                let scope_otlp =
                    BASE64.encode(ScopeSpans { scope: ss.scope.clone(), spans: vec![], schema_url: ss.schema_url.clone() }.encode_to_vec());
                for span in &ss.spans {
                    buf.reserve(4096);
                    proto.clear();
                    // Encoding into a Vec cannot fail.
                    let _ = span.encode(&mut proto);
                    let id = Self::document_id(&span.trace_id, &span.span_id);
                    let index = self.index_for(span.start_time_unix_nano);
                    let correlation = self.correlation(span);
                    let doc = SpanDocument {
                        timestamp: format_rfc3339_nanos(span.start_time_unix_nano),
                        data_stream: (self.target.mode == TargetMode::DataStream).then(|| DataStreamField {
                            kind: "traces",
                            dataset: &self.target.dataset,
                            namespace: &self.target.namespace,
                        }),
                        trace_id: hex::encode(&span.trace_id),
                        span_id: hex::encode(&span.span_id),
                        parent_span_id: hex::encode(&span.parent_span_id),
                        trace_state: &span.trace_state,
                        name: &span.name,
                        kind: kind_name(span.kind),
                        duration: span.end_time_unix_nano.saturating_sub(span.start_time_unix_nano),
                        attributes: Attributes(&span.attributes),
                        dropped_attributes_count: span.dropped_attributes_count,
                        resource: ResourceField { attributes: Attributes(resource_attrs), schema_url: &rs.schema_url },
                        scope: ScopeField {
                            name: ss.scope.as_ref().map(|s| s.name.as_str()).unwrap_or(""),
                            version: ss.scope.as_ref().map(|s| s.version.as_str()).unwrap_or(""),
                            attributes: Attributes(ss.scope.as_ref().map(|s| s.attributes.as_slice()).unwrap_or(&[])),
                        },
                        status: status_field(span),
                        links: Links(span),
                        events: Events(span),
                        service_name: service.as_deref(),
                        order_id: string_attr(&span.attributes, "order.id"),
                        order_stage: string_attr(&span.attributes, "order.stage"),
                        order_status: string_attr(&span.attributes, "order.status"),
                        order_correlation: correlation,
                        flags: span.flags,
                        dropped_events_count: span.dropped_events_count,
                        dropped_links_count: span.dropped_links_count,
                        otlp: OtlpField { resource: &resource_otlp, scope: &scope_otlp, span: BASE64.encode(&proto) },
                    };
                    let action = Action { create: ActionMeta { index: &index, id: &id } };
                    // Serializing plain structs into memory cannot fail.
                    let mut writer = (&mut buf).writer();
                    let _ = serde_json::to_writer(&mut writer, &action);
                    buf.put_u8(b'\n');
                    let mut writer = (&mut buf).writer();
                    let _ = serde_json::to_writer(&mut writer, &doc);
                    buf.put_u8(b'\n');
                    out.push(BulkItem { id, index, lines: buf.split().freeze() });
                }
            }
        }
    }
}

/// Concatenates items into one NDJSON bulk body.
pub fn bulk_body<'a>(items: impl IntoIterator<Item = &'a BulkItem>) -> Bytes {
    let items: Vec<&BulkItem> = items.into_iter().collect();
    let mut body = BytesMut::with_capacity(items.iter().map(|i| i.lines.len()).sum());
    for item in items {
        body.extend_from_slice(&item.lines);
    }
    body.freeze()
}

/// Splits items into groups whose bodies stay under `max_bytes` (an item larger than that goes
/// alone).
pub fn chunk_by_bytes(items: &[usize], max_bytes: usize, sizes: impl Fn(usize) -> usize) -> Vec<Vec<usize>> {
    let mut chunks = Vec::new();
    let mut current = Vec::new();
    let mut size = 0;
    for &i in items {
        let s = sizes(i);
        if !current.is_empty() && size + s > max_bytes {
            chunks.push(std::mem::take(&mut current));
            size = 0;
        }
        size += s;
        current.push(i);
    }
    if !current.is_empty() {
        chunks.push(current);
    }
    chunks
}

fn kind_name(kind: i32) -> &'static str {
    match SpanKind::try_from(kind).unwrap_or(SpanKind::Unspecified) {
        SpanKind::Unspecified => "Unspecified",
        SpanKind::Internal => "Internal",
        SpanKind::Server => "Server",
        SpanKind::Client => "Client",
        SpanKind::Producer => "Producer",
        SpanKind::Consumer => "Consumer",
    }
}

fn status_field(span: &Span) -> StatusField<'_> {
    match &span.status {
        Some(s) => StatusField {
            code: match StatusCode::try_from(s.code).unwrap_or(StatusCode::Unset) {
                StatusCode::Unset => "Unset",
                StatusCode::Ok => "Ok",
                StatusCode::Error => "Error",
            },
            message: &s.message,
        },
        None => StatusField { code: "Unset", message: "" },
    }
}

#[derive(Serialize)]
struct Action<'a> {
    create: ActionMeta<'a>,
}

#[derive(Serialize)]
struct ActionMeta<'a> {
    #[serde(rename = "_index")]
    index: &'a str,
    #[serde(rename = "_id")]
    id: &'a str,
}

#[derive(Serialize)]
struct SpanDocument<'a> {
    #[serde(rename = "@timestamp")]
    timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_stream: Option<DataStreamField<'a>>,
    trace_id: String,
    span_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    parent_span_id: String,
    #[serde(skip_serializing_if = "str::is_empty")]
    trace_state: &'a str,
    name: &'a str,
    kind: &'static str,
    duration: u64,
    attributes: Attributes<'a>,
    #[serde(skip_serializing_if = "is_zero")]
    dropped_attributes_count: u32,
    resource: ResourceField<'a>,
    scope: ScopeField<'a>,
    status: StatusField<'a>,
    links: Links<'a>,
    events: Events<'a>,
    #[serde(rename = "service.name", skip_serializing_if = "Option::is_none")]
    service_name: Option<&'a str>,
    #[serde(rename = "order.id", skip_serializing_if = "Option::is_none")]
    order_id: Option<String>,
    #[serde(rename = "order.stage", skip_serializing_if = "Option::is_none")]
    order_stage: Option<String>,
    #[serde(rename = "order.status", skip_serializing_if = "Option::is_none")]
    order_status: Option<String>,
    #[serde(rename = "order.correlation", skip_serializing_if = "Option::is_none")]
    order_correlation: Option<String>,
    #[serde(skip_serializing_if = "is_zero")]
    flags: u32,
    #[serde(skip_serializing_if = "is_zero")]
    dropped_events_count: u32,
    #[serde(skip_serializing_if = "is_zero")]
    dropped_links_count: u32,
    /// The span, its scope and its resource exactly as received (protobuf, base64), not indexed:
    /// the read API returns traces from it unchanged.
    otlp: OtlpField<'a>,
}

#[derive(Serialize)]
struct OtlpField<'a> {
    resource: &'a str,
    scope: &'a str,
    span: String,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[derive(Serialize)]
struct DataStreamField<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    dataset: &'a str,
    namespace: &'a str,
}

#[derive(Serialize)]
struct ResourceField<'a> {
    attributes: Attributes<'a>,
    #[serde(skip_serializing_if = "str::is_empty")]
    schema_url: &'a str,
}

#[derive(Serialize)]
struct ScopeField<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    name: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    version: &'a str,
    attributes: Attributes<'a>,
}

#[derive(Serialize)]
struct StatusField<'a> {
    code: &'static str,
    #[serde(skip_serializing_if = "str::is_empty")]
    message: &'a str,
}

/// Attributes as one JSON object, keys as written (`order.id` stays one key).
struct Attributes<'a>(&'a [KeyValue]);

impl Serialize for Attributes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for kv in self.0 {
            map.serialize_entry(&kv.key, &Value(kv.value.as_ref()))?;
        }
        map.end()
    }
}

struct Value<'a>(Option<&'a AnyValue>);

impl Serialize for Value<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.and_then(|v| v.value.as_ref()) {
            None => s.serialize_none(),
            Some(AnyValueKind::StringValue(v)) => s.serialize_str(v),
            Some(AnyValueKind::BoolValue(v)) => s.serialize_bool(*v),
            Some(AnyValueKind::IntValue(v)) => s.serialize_i64(*v),
            Some(AnyValueKind::DoubleValue(v)) if v.is_finite() => s.serialize_f64(*v),
            Some(AnyValueKind::DoubleValue(v)) => s.serialize_str(&v.to_string()),
            Some(AnyValueKind::BytesValue(v)) => s.serialize_str(&hex::encode(v)),
            Some(AnyValueKind::ArrayValue(a)) => {
                let mut seq = s.serialize_seq(Some(a.values.len()))?;
                for v in &a.values {
                    seq.serialize_element(&Value(Some(v)))?;
                }
                seq.end()
            }
            Some(AnyValueKind::KvlistValue(kv)) => Attributes(&kv.values).serialize(s),
            // An index into a dictionary that OTLP/JSON and protobuf exports do not carry.
            Some(AnyValueKind::StringValueStrindex(_)) => s.serialize_none(),
        }
    }
}

struct Links<'a>(&'a Span);

impl Serialize for Links<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Link<'a> {
            trace_id: String,
            span_id: String,
            #[serde(skip_serializing_if = "str::is_empty")]
            trace_state: &'a str,
            attributes: Attributes<'a>,
        }
        let mut seq = s.serialize_seq(Some(self.0.links.len()))?;
        for l in &self.0.links {
            seq.serialize_element(&Link {
                trace_id: hex::encode(&l.trace_id),
                span_id: hex::encode(&l.span_id),
                trace_state: &l.trace_state,
                attributes: Attributes(&l.attributes),
            })?;
        }
        seq.end()
    }
}

struct Events<'a>(&'a Span);

impl Serialize for Events<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Event<'a> {
            #[serde(rename = "@timestamp")]
            timestamp: String,
            name: &'a str,
            attributes: Attributes<'a>,
        }
        let mut seq = s.serialize_seq(Some(self.0.events.len()))?;
        for e in &self.0.events {
            seq.serialize_element(&Event {
                timestamp: format_rfc3339_nanos(e.time_unix_nano),
                name: &e.name,
                attributes: Attributes(&e.attributes),
            })?;
        }
        seq.end()
    }
}
