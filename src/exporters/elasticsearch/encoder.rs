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

use super::config::{TargetConfig, TargetMode};
use super::json;
use crate::shared::format_rfc3339_nanos;

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
    /// `"data_stream":{...},` for a data stream target, empty otherwise.
    data_stream: Bytes,
}

const DAY_NS: u64 = 86_400 * 1_000_000_000;

impl SpanEncoder {
    pub fn new(target: TargetConfig, correlation_keys: Vec<String>) -> SpanEncoder {
        let mut data_stream = BytesMut::new();
        let first = match target.mode {
            TargetMode::DataStream => {
                data_stream.extend_from_slice(b"\"data_stream\":{\"type\":\"traces\",\"dataset\":");
                json::string(&mut data_stream, &target.dataset);
                data_stream.extend_from_slice(b",\"namespace\":");
                json::string(&mut data_stream, &target.namespace);
                data_stream.extend_from_slice(b"},");
                Arc::from(target.data_stream())
            }
            TargetMode::Index => Arc::from(""),
        };
        SpanEncoder { target, correlation_keys, index: Mutex::new((u64::MAX, first)), data_stream: data_stream.freeze() }
    }

    /// The first correlation value a span carries (e.g. `constructor.file_id`).
    pub fn correlation(&self, span: &Span) -> Option<String> {
        crate::shared::first_value(&span.attributes, &self.correlation_keys)
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
        let spans: usize = resource_spans.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len()).sum();
        let mut buf = BytesMut::with_capacity(spans * 1536);
        for rs in resource_spans {
            let resource_attrs = rs.resource.as_ref().map(|r| r.attributes.as_slice()).unwrap_or(&[]);
            let service = str_attr(resource_attrs, "service.name");
            let (resource, resource_exact) = resource_field(rs);
            let mut resource_otlp = None;
            for ss in &rs.scope_spans {
                let (scope, scope_exact) = scope_field(ss);
                let mut scope_otlp = None;
                for span in &ss.spans {
                    buf.reserve(4096);
                    let index = self.index_for(span.start_time_unix_nano);
                    // {"create":{"_index":"...","_id":"<trace><span>"}}
                    buf.extend_from_slice(b"{\"create\":{\"_index\":");
                    json::string(&mut buf, &index);
                    buf.extend_from_slice(b",\"_id\":\"");
                    let id_at = buf.len();
                    json::hex_raw(&mut buf, &span.trace_id);
                    json::hex_raw(&mut buf, &span.span_id);
                    // Hex digits are ASCII.
                    let id = String::from_utf8_lossy(&buf[id_at..]).into_owned();
                    buf.extend_from_slice(b"\"}}\n");

                    let exact = self.write_span(&mut buf, span, &resource, &scope, service) && resource_exact && scope_exact;
                    if !exact {
                        // The document alone would not give the span back exactly: keep the protobuf too.
                        let resource_otlp = resource_otlp.get_or_insert_with(|| {
                            BASE64.encode(
                                ResourceSpans { resource: rs.resource.clone(), scope_spans: vec![], schema_url: rs.schema_url.clone() }
                                    .encode_to_vec(),
                            )
                        });
                        let scope_otlp = scope_otlp.get_or_insert_with(|| {
                            BASE64.encode(
                                ScopeSpans { scope: ss.scope.clone(), spans: vec![], schema_url: ss.schema_url.clone() }.encode_to_vec(),
                            )
                        });
                        buf.extend_from_slice(b",\"otlp\":{\"resource\":");
                        json::string(&mut buf, resource_otlp);
                        buf.extend_from_slice(b",\"scope\":");
                        json::string(&mut buf, scope_otlp);
                        buf.extend_from_slice(b",\"span\":");
                        json::string(&mut buf, &BASE64.encode(span.encode_to_vec()));
                        buf.put_u8(b'}');
                    }
                    buf.extend_from_slice(b"}\n");
                    out.push(BulkItem { id, index, lines: buf.split().freeze() });
                }
            }
        }
    }

    /// Writes the document of one span without its closing brace; true when the span can be
    /// rebuilt exactly from the document's fields (see `query::SpanDocument`).
    fn write_span(&self, buf: &mut BytesMut, span: &Span, resource: &[u8], scope: &[u8], service: Option<&str>) -> bool {
        let mut exact = true;
        buf.extend_from_slice(b"{\"@timestamp\":");
        json::timestamp(buf, span.start_time_unix_nano);
        buf.put_u8(b',');
        buf.extend_from_slice(&self.data_stream);
        buf.extend_from_slice(b"\"trace_id\":");
        json::hex(buf, &span.trace_id);
        buf.extend_from_slice(b",\"span_id\":");
        json::hex(buf, &span.span_id);
        if !span.parent_span_id.is_empty() {
            buf.extend_from_slice(b",\"parent_span_id\":");
            json::hex(buf, &span.parent_span_id);
        }
        if !span.trace_state.is_empty() {
            buf.extend_from_slice(b",\"trace_state\":");
            json::string(buf, &span.trace_state);
        }
        buf.extend_from_slice(b",\"name\":");
        json::string(buf, &span.name);
        buf.extend_from_slice(b",\"kind\":\"");
        let kind = SpanKind::try_from(span.kind).ok();
        exact &= kind.is_some();
        buf.extend_from_slice(kind_name(kind.unwrap_or(SpanKind::Unspecified)).as_bytes());
        buf.extend_from_slice(b"\",\"duration\":");
        exact &= span.end_time_unix_nano >= span.start_time_unix_nano;
        json::u64(buf, span.end_time_unix_nano.saturating_sub(span.start_time_unix_nano));
        buf.extend_from_slice(b",\"attributes\":");
        exact &= attributes(buf, &span.attributes);
        counter(buf, "dropped_attributes_count", span.dropped_attributes_count);
        buf.put_u8(b',');
        buf.extend_from_slice(resource);
        buf.put_u8(b',');
        buf.extend_from_slice(scope);
        if let Some(status) = &span.status {
            let code = StatusCode::try_from(status.code).ok();
            exact &= code.is_some();
            buf.extend_from_slice(b",\"status\":{\"code\":\"");
            buf.extend_from_slice(status_name(code.unwrap_or(StatusCode::Unset)).as_bytes());
            buf.put_u8(b'"');
            if !status.message.is_empty() {
                buf.extend_from_slice(b",\"message\":");
                json::string(buf, &status.message);
            }
            buf.put_u8(b'}');
        }
        buf.extend_from_slice(b",\"links\":[");
        for (i, link) in span.links.iter().enumerate() {
            if i > 0 {
                buf.put_u8(b',');
            }
            buf.extend_from_slice(b"{\"trace_id\":");
            json::hex(buf, &link.trace_id);
            buf.extend_from_slice(b",\"span_id\":");
            json::hex(buf, &link.span_id);
            if !link.trace_state.is_empty() {
                buf.extend_from_slice(b",\"trace_state\":");
                json::string(buf, &link.trace_state);
            }
            buf.extend_from_slice(b",\"attributes\":");
            exact &= attributes(buf, &link.attributes);
            counter(buf, "dropped_attributes_count", link.dropped_attributes_count);
            counter(buf, "flags", link.flags);
            buf.put_u8(b'}');
        }
        buf.extend_from_slice(b"],\"events\":[");
        for (i, event) in span.events.iter().enumerate() {
            if i > 0 {
                buf.put_u8(b',');
            }
            buf.extend_from_slice(b"{\"@timestamp\":");
            json::timestamp(buf, event.time_unix_nano);
            buf.extend_from_slice(b",\"name\":");
            json::string(buf, &event.name);
            buf.extend_from_slice(b",\"attributes\":");
            exact &= attributes(buf, &event.attributes);
            counter(buf, "dropped_attributes_count", event.dropped_attributes_count);
            buf.put_u8(b'}');
        }
        buf.put_u8(b']');
        if let Some(service) = service {
            buf.extend_from_slice(b",\"service.name\":");
            json::string(buf, service);
        }
        for key in ["order.id", "order.stage", "order.status"] {
            keyword_attr(buf, &span.attributes, key);
        }
        if let Some(value) = self.correlation(span) {
            buf.extend_from_slice(b",\"order.correlation\":");
            json::string(buf, &value);
        }
        counter(buf, "flags", span.flags);
        counter(buf, "dropped_events_count", span.dropped_events_count);
        counter(buf, "dropped_links_count", span.dropped_links_count);
        exact
    }
}

/// `"resource":{...}` once per resource; true when it reads back exactly.
fn resource_field(rs: &ResourceSpans) -> (BytesMut, bool) {
    let mut field = BytesMut::with_capacity(512);
    field.extend_from_slice(b"\"resource\":{\"attributes\":");
    let exact = match &rs.resource {
        Some(r) => {
            let exact = attributes(&mut field, &r.attributes) && r.entity_refs.is_empty();
            counter(&mut field, "dropped_attributes_count", r.dropped_attributes_count);
            exact
        }
        // An absent resource would read back as an empty one: the copy keeps it absent.
        None => {
            field.extend_from_slice(b"{}");
            false
        }
    };
    if !rs.schema_url.is_empty() {
        field.extend_from_slice(b",\"schema_url\":");
        json::string(&mut field, &rs.schema_url);
    }
    field.put_u8(b'}');
    (field, exact)
}

/// `"scope":{...}` once per scope; true when it reads back exactly.
fn scope_field(ss: &ScopeSpans) -> (BytesMut, bool) {
    let mut field = BytesMut::with_capacity(256);
    field.extend_from_slice(b"\"scope\":{");
    let exact = match &ss.scope {
        Some(scope) => {
            if !scope.name.is_empty() {
                field.extend_from_slice(b"\"name\":");
                json::string(&mut field, &scope.name);
                field.put_u8(b',');
            }
            if !scope.version.is_empty() {
                field.extend_from_slice(b"\"version\":");
                json::string(&mut field, &scope.version);
                field.put_u8(b',');
            }
            field.extend_from_slice(b"\"attributes\":");
            let exact = attributes(&mut field, &scope.attributes);
            counter(&mut field, "dropped_attributes_count", scope.dropped_attributes_count);
            exact
        }
        None => {
            field.extend_from_slice(b"\"attributes\":{}");
            false
        }
    };
    if !ss.schema_url.is_empty() {
        field.extend_from_slice(b",\"schema_url\":");
        json::string(&mut field, &ss.schema_url);
    }
    field.put_u8(b'}');
    (field, exact)
}

/// `,"name":n` unless n is zero.
fn counter(buf: &mut BytesMut, name: &str, n: u32) {
    if n != 0 {
        buf.put_u8(b',');
        json::key(buf, name);
        json::u64(buf, u64::from(n));
    }
}

/// `,"order.id":"..."` from a string (or integer) attribute, if the span has it (written in place:
/// `string_attr` would allocate on every order span).
fn keyword_attr(buf: &mut BytesMut, attrs: &[KeyValue], key: &str) {
    let Some(kv) = attrs.iter().find(|kv| kv.key == key) else { return };
    match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(AnyValueKind::StringValue(s)) => {
            buf.put_u8(b',');
            json::key(buf, key);
            json::string(buf, s);
        }
        Some(AnyValueKind::IntValue(i)) => {
            buf.put_u8(b',');
            json::key(buf, key);
            buf.put_u8(b'"');
            json::i64(buf, *i);
            buf.put_u8(b'"');
        }
        _ => {}
    }
}

fn str_attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
        AnyValueKind::StringValue(s) => Some(s.as_str()),
        _ => None,
    })
}

/// Attributes as one JSON object, keys as written (`order.id` stays one key), in their order.
/// True when they read back exactly: no bytes, no non-finite doubles, no dictionary indices, no
/// missing values, no key twice.
fn attributes(buf: &mut BytesMut, attrs: &[KeyValue]) -> bool {
    let mut exact = true;
    buf.put_u8(b'{');
    for (i, kv) in attrs.iter().enumerate() {
        if i > 0 {
            buf.put_u8(b',');
        }
        json::key(buf, &kv.key);
        exact &= kv.key_strindex == 0;
        match &kv.value {
            Some(v) => exact &= value(buf, v),
            None => {
                buf.extend_from_slice(b"null");
                exact = false;
            }
        }
    }
    buf.put_u8(b'}');
    exact && unique_keys(attrs)
}

fn unique_keys(attrs: &[KeyValue]) -> bool {
    if attrs.len() <= 24 {
        return attrs.iter().enumerate().all(|(i, a)| attrs[i + 1..].iter().all(|b| a.key != b.key));
    }
    let mut keys: Vec<&str> = attrs.iter().map(|kv| kv.key.as_str()).collect();
    keys.sort_unstable();
    keys.windows(2).all(|w| w[0] != w[1])
}

fn value(buf: &mut BytesMut, v: &AnyValue) -> bool {
    match &v.value {
        None => {
            buf.extend_from_slice(b"null");
            true
        }
        Some(AnyValueKind::StringValue(s)) => {
            json::string(buf, s);
            true
        }
        Some(AnyValueKind::BoolValue(b)) => {
            buf.extend_from_slice(if *b { b"true" } else { b"false" });
            true
        }
        Some(AnyValueKind::IntValue(i)) => {
            json::i64(buf, *i);
            true
        }
        Some(AnyValueKind::DoubleValue(d)) if d.is_finite() => {
            json::f64(buf, *d);
            true
        }
        Some(AnyValueKind::DoubleValue(d)) => {
            json::string(buf, &d.to_string());
            false
        }
        Some(AnyValueKind::BytesValue(b)) => {
            json::hex(buf, b);
            false
        }
        Some(AnyValueKind::ArrayValue(a)) => {
            let mut exact = true;
            buf.put_u8(b'[');
            for (i, v) in a.values.iter().enumerate() {
                if i > 0 {
                    buf.put_u8(b',');
                }
                exact &= value(buf, v);
            }
            buf.put_u8(b']');
            exact
        }
        Some(AnyValueKind::KvlistValue(kv)) => attributes(buf, &kv.values),
        // An index into a dictionary that OTLP/JSON and protobuf exports do not carry.
        Some(AnyValueKind::StringValueStrindex(_)) => {
            buf.extend_from_slice(b"null");
            false
        }
    }
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

fn kind_name(kind: SpanKind) -> &'static str {
    match kind {
        SpanKind::Unspecified => "Unspecified",
        SpanKind::Internal => "Internal",
        SpanKind::Server => "Server",
        SpanKind::Client => "Client",
        SpanKind::Producer => "Producer",
        SpanKind::Consumer => "Consumer",
    }
}

fn status_name(code: StatusCode) -> &'static str {
    match code {
        StatusCode::Unset => "Unset",
        StatusCode::Ok => "Ok",
        StatusCode::Error => "Error",
    }
}
