//! Reading span documents back into OTLP spans, for `GET /api/v1/traces/{id}` from Elasticsearch.
//!
//! The encoder writes every field a span has, so the document alone gives the span back exactly:
//! attributes keep their order and types (integers are written without a fraction, doubles always
//! with one), ids are hex, times RFC 3339 with nanoseconds. The few spans a document cannot give
//! back exactly (bytes values, non-finite doubles, absent resource or scope, unknown enum values,
//! a key twice) carry their protobuf in the `otlp` field, which wins when present.

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValueKind;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::error::DocumentError;
use crate::shared::parse_rfc3339;

/// A search reply whose hits are read as `T`.
#[derive(Deserialize)]
pub struct SearchReply<T> {
    pub hits: Hits<T>,
}

#[derive(Deserialize)]
pub struct Hits<T> {
    #[serde(default = "Vec::new")]
    pub hits: Vec<Hit<T>>,
}

#[derive(Deserialize)]
pub struct Hit<T> {
    #[serde(rename = "_source")]
    pub source: T,
}

/// A span as it comes back, with its resource and scope (without spans).
pub struct StoredSpan {
    pub resource: ResourceSpans,
    pub scope: ScopeSpans,
    pub span: Span,
}

#[derive(Deserialize)]
pub struct SpanDocument {
    #[serde(rename = "@timestamp")]
    timestamp: String,
    #[serde(default)]
    trace_id: String,
    #[serde(default)]
    span_id: String,
    #[serde(default)]
    parent_span_id: String,
    #[serde(default)]
    trace_state: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    duration: u64,
    #[serde(default)]
    attributes: Attributes,
    #[serde(default)]
    dropped_attributes_count: u32,
    #[serde(default)]
    resource: ResourceDocument,
    #[serde(default)]
    scope: ScopeDocument,
    #[serde(default)]
    status: Option<StatusDocument>,
    #[serde(default)]
    links: Vec<LinkDocument>,
    #[serde(default)]
    events: Vec<EventDocument>,
    #[serde(default)]
    flags: u32,
    #[serde(default)]
    dropped_events_count: u32,
    #[serde(default)]
    dropped_links_count: u32,
    #[serde(default)]
    otlp: Option<OtlpCopy>,
}

#[derive(Deserialize, Default)]
struct ResourceDocument {
    #[serde(default)]
    attributes: Attributes,
    #[serde(default)]
    dropped_attributes_count: u32,
    #[serde(default)]
    schema_url: String,
}

#[derive(Deserialize, Default)]
struct ScopeDocument {
    #[serde(default)]
    name: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    attributes: Attributes,
    #[serde(default)]
    dropped_attributes_count: u32,
    #[serde(default)]
    schema_url: String,
}

#[derive(Deserialize)]
struct StatusDocument {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct LinkDocument {
    #[serde(default)]
    trace_id: String,
    #[serde(default)]
    span_id: String,
    #[serde(default)]
    trace_state: String,
    #[serde(default)]
    attributes: Attributes,
    #[serde(default)]
    dropped_attributes_count: u32,
    #[serde(default)]
    flags: u32,
}

#[derive(Deserialize)]
struct EventDocument {
    #[serde(rename = "@timestamp")]
    timestamp: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    attributes: Attributes,
    #[serde(default)]
    dropped_attributes_count: u32,
}

#[derive(Deserialize)]
struct OtlpCopy {
    resource: String,
    scope: String,
    span: String,
}

impl SpanDocument {
    pub fn into_span(self) -> Result<StoredSpan, DocumentError> {
        if let Some(copy) = self.otlp {
            fn decode<M: Message + Default>(what: &'static str, b64: &str) -> Result<M, DocumentError> {
                let bytes = BASE64.decode(b64).map_err(|source| DocumentError::Base64 { what, source })?;
                M::decode(bytes.as_slice()).map_err(|source| DocumentError::Protobuf { what, source })
            }
            return Ok(StoredSpan {
                resource: decode("resource", &copy.resource)?,
                scope: decode("scope", &copy.scope)?,
                span: decode("span", &copy.span)?,
            });
        }
        let hex = |what: &'static str, text: &str| {
            hex::decode(text).map_err(|source| DocumentError::Hex { what, text: text.to_string(), source })
        };
        let time = |text: &str| parse_rfc3339(text).map_err(DocumentError::Time);
        let start = time(&self.timestamp)?;
        let resource = ResourceSpans {
            resource: Some(Resource {
                attributes: self.resource.attributes.0,
                dropped_attributes_count: self.resource.dropped_attributes_count,
                entity_refs: Vec::new(),
            }),
            scope_spans: Vec::new(),
            schema_url: self.resource.schema_url,
        };
        let scope = ScopeSpans {
            scope: Some(InstrumentationScope {
                name: self.scope.name,
                version: self.scope.version,
                attributes: self.scope.attributes.0,
                dropped_attributes_count: self.scope.dropped_attributes_count,
            }),
            spans: Vec::new(),
            schema_url: self.scope.schema_url,
        };
        let mut links = Vec::with_capacity(self.links.len());
        for l in self.links {
            links.push(Link {
                trace_id: hex("link trace id", &l.trace_id)?,
                span_id: hex("link span id", &l.span_id)?,
                trace_state: l.trace_state,
                attributes: l.attributes.0,
                dropped_attributes_count: l.dropped_attributes_count,
                flags: l.flags,
            });
        }
        let mut events = Vec::with_capacity(self.events.len());
        for e in self.events {
            events.push(Event {
                time_unix_nano: time(&e.timestamp)?,
                name: e.name,
                attributes: e.attributes.0,
                dropped_attributes_count: e.dropped_attributes_count,
            });
        }
        let span = Span {
            trace_id: hex("trace id", &self.trace_id)?,
            span_id: hex("span id", &self.span_id)?,
            trace_state: self.trace_state,
            parent_span_id: hex("parent span id", &self.parent_span_id)?,
            flags: self.flags,
            name: self.name,
            kind: kind_number(&self.kind),
            start_time_unix_nano: start,
            end_time_unix_nano: start.saturating_add(self.duration),
            attributes: self.attributes.0,
            dropped_attributes_count: self.dropped_attributes_count,
            events,
            dropped_events_count: self.dropped_events_count,
            links,
            dropped_links_count: self.dropped_links_count,
            status: self.status.map(|s| Status { message: s.message, code: status_number(&s.code) }),
        };
        Ok(StoredSpan { resource, scope, span })
    }
}

/// The OTLP span kind number of a document's `kind` name (`Server`, ...); 0 when unknown.
pub fn kind_number(name: &str) -> i32 {
    match name {
        "Internal" => 1,
        "Server" => 2,
        "Client" => 3,
        "Producer" => 4,
        "Consumer" => 5,
        _ => 0,
    }
}

fn status_number(name: &str) -> i32 {
    match name {
        "Ok" => 1,
        "Error" => 2,
        _ => 0,
    }
}

/// An attributes object read in document order.
#[derive(Default)]
struct Attributes(Vec<KeyValue>);

impl<'de> Deserialize<'de> for Attributes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(AttributesVisitor)
    }
}

struct AttributesVisitor;

impl<'de> Visitor<'de> for AttributesVisitor {
    type Value = Attributes;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an attributes object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Attributes, A::Error> {
        let mut out = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some((key, value)) = map.next_entry::<String, Any>()? {
            out.push(KeyValue { key, value: Some(value.0), ..Default::default() });
        }
        Ok(Attributes(out))
    }

    fn visit_unit<E>(self) -> Result<Attributes, E> {
        Ok(Attributes::default())
    }
}

/// One attribute value: JSON types map back to OTLP's (an object is a key-value list).
struct Any(AnyValue);

impl<'de> Deserialize<'de> for Any {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(AnyVisitor)
    }
}

struct AnyVisitor;

fn any(v: AnyValueKind) -> Any {
    Any(AnyValue { value: Some(v) })
}

impl<'de> Visitor<'de> for AnyVisitor {
    type Value = Any;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an attribute value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Any, E> {
        Ok(any(AnyValueKind::BoolValue(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Any, E> {
        Ok(any(AnyValueKind::IntValue(v)))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Any, E> {
        i64::try_from(v).map(|v| any(AnyValueKind::IntValue(v))).map_err(|_| E::custom(format!("integer {v} is out of range")))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Any, E> {
        Ok(any(AnyValueKind::DoubleValue(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Any, E> {
        Ok(any(AnyValueKind::StringValue(v.to_string())))
    }

    fn visit_string<E>(self, v: String) -> Result<Any, E> {
        Ok(any(AnyValueKind::StringValue(v)))
    }

    fn visit_unit<E>(self) -> Result<Any, E> {
        Ok(Any(AnyValue { value: None }))
    }

    fn visit_none<E>(self) -> Result<Any, E> {
        Ok(Any(AnyValue { value: None }))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Any, A::Error> {
        let mut values = Vec::with_capacity(seq.size_hint().unwrap_or(4));
        while let Some(v) = seq.next_element::<Any>()? {
            values.push(v.0);
        }
        Ok(any(AnyValueKind::ArrayValue(ArrayValue { values })))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Any, A::Error> {
        let Attributes(values) = AttributesVisitor.visit_map(map)?;
        Ok(any(AnyValueKind::KvlistValue(KeyValueList { values })))
    }
}

/// A string field of a span document, written flat (`order.id`) or nested.
pub fn field<'a>(doc: &'a serde_json::Value, dotted: &str) -> Option<&'a str> {
    if let Some(v) = doc.get(dotted).and_then(serde_json::Value::as_str) {
        return Some(v);
    }
    dotted.split('.').try_fold(doc, |v, k| v.get(k)).and_then(serde_json::Value::as_str)
}

/// A span document as one of its order's spans.
pub fn document_order_span(doc: &serde_json::Value, linked: bool) -> Option<crate::orders::OrderSpan> {
    let start_ns = parse_rfc3339(doc["@timestamp"].as_str()?).ok()?;
    Some(crate::orders::OrderSpan {
        trace_id: hex::decode(doc["trace_id"].as_str()?).ok()?,
        span_id: hex::decode(doc["span_id"].as_str()?).ok()?,
        parent_span_id: doc["parent_span_id"].as_str().and_then(|p| hex::decode(p).ok()).unwrap_or_default(),
        step_key: crate::orders::step_key(|k| match &doc["attributes"][k] {
            serde_json::Value::Null => None,
            serde_json::Value::String(v) => Some(v.clone()),
            v => Some(v.to_string()),
        }),
        service: field(doc, "service.name").map(String::from),
        name: doc["name"].as_str().unwrap_or_default().to_string(),
        start_ns,
        end_ns: start_ns.saturating_add(doc["duration"].as_u64().unwrap_or(0)),
        stage: field(doc, "order.stage").map(String::from),
        status: field(doc, "order.status").map(String::from),
        error: doc["status"]["code"].as_str() == Some("Error"),
        linked,
    })
}
