//! Per-span limits at the OTLP receivers (`receivers.<id>.span_limits`), through real sockets:
//! the OpenTelemetry SDK over gRPC, raw OTLP/HTTP protobuf and JSON, and order events. Extra
//! attributes, events and links are dropped and counted in the OTLP `dropped_*_count` fields,
//! long values are cut, and a span still too large is rejected through `partial_success` while
//! the rest of its request arrives downstream (a recording `Sink`). Receiver `otlp/default` has
//! the default limits, which leave a normal span untouched.

mod common;

use std::time::Duration;

use common::{eventually, metric, metrics_text, send, span_attr, start_gateway, when, Sink};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use tracegate::Gateway;

struct Fixture {
    gateway: Gateway,
    _dir: tempfile::TempDir,
    sink: Sink,
}

impl Fixture {
    async fn start() -> Fixture {
        let sink = Sink::start().await;
        let yaml = format!(
            r#"
receivers:
  otlp:
    grpc: {{endpoint: "127.0.0.1:0"}}
    http: {{endpoint: "127.0.0.1:0"}}
    span_limits:
      max_attributes_per_span: 4
      max_attributes_per_event: 1
      max_attribute_value_bytes: 16
      max_events_per_span: 2
      max_links_per_span: 1
      max_span_bytes: 4KiB
  otlp/default:
    grpc: {{endpoint: "127.0.0.1:0"}}
    http: {{endpoint: "127.0.0.1:0"}}
exporters:
  sink:
    type: otlp
    endpoint: "{endpoint}"
    batch: {{max_wait: 20ms}}
api:
  endpoint: "127.0.0.1:0"
service:
  pipelines:
    traces: {{receivers: [otlp, otlp/default], exporters: [sink]}}
"#,
            endpoint = sink.endpoint()
        );
        let (gateway, dir) = start_gateway(&yaml).await;
        Fixture { gateway, _dir: dir, sink }
    }

    fn url(&self, receiver: &str, path: &str) -> String {
        format!("http://{}{path}", self.gateway.addresses.http[receiver])
    }

    /// The span the sink received with this name.
    fn received(&self, name: &str) -> Span {
        let spans = self.sink.spans();
        spans.iter().find(|(_, s)| s.name == name).map(|(_, s)| s.clone()).unwrap_or_else(|| panic!("no span {name:?} downstream"))
    }

    async fn metrics(&self) -> String {
        metrics_text(self.gateway.addresses.api.unwrap()).await
    }
}

fn string(key: &str, value: &str) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }), ..Default::default() }
}

fn span(name: &str, id: u8) -> Span {
    Span {
        trace_id: vec![7; 16],
        span_id: vec![id; 8],
        name: name.into(),
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_001_000_000,
        ..Default::default()
    }
}

/// Four spans: one with too many attributes and a long value, one with too many events and
/// links, one too large even after the cuts (its name cannot be cut), one normal.
fn request(prefix: &str) -> ExportTraceServiceRequest {
    let mut wide = span(&format!("{prefix}-wide"), 1);
    wide.attributes = (0..6).map(|i| string(&format!("k{i}"), "v")).collect();
    // 15 bytes, then è at bytes 15 and 16: a cut at 16 bytes must not split it.
    wide.attributes[1] = string("k1", "caf\u{e9} au lait, \u{e8}\u{e8}");
    wide.dropped_attributes_count = 1;
    let mut busy = span(&format!("{prefix}-busy"), 2);
    busy.events = (0..5)
        .map(|i| Event { name: format!("e{i}"), attributes: vec![string("a", "1"), string("b", "2")], ..Default::default() })
        .collect();
    busy.links = (0..3).map(|i| Link { trace_id: vec![8; 16], span_id: vec![10 + i; 8], ..Default::default() }).collect();
    let huge = span(&format!("{prefix}-huge-{}", "x".repeat(8000)), 3);
    let normal = Span { attributes: vec![string("order.id", "A-1001")], ..span(&format!("{prefix}-normal"), 4) };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: vec![string("service.name", "shop-api")], ..Default::default() }),
            scope_spans: vec![ScopeSpans { spans: vec![wide, busy, huge, normal], ..Default::default() }],
            ..Default::default()
        }],
    }
}

/// What the limits must have done to the spans of `request(prefix)` downstream.
async fn assert_limited(fx: &Fixture, prefix: &str) {
    fx.sink.wait_for_named(&[&format!("{prefix}-wide"), &format!("{prefix}-busy"), &format!("{prefix}-normal")]).await;
    let wide = fx.received(&format!("{prefix}-wide"));
    let keys: Vec<&str> = wide.attributes.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["k0", "k1", "k2", "k3"], "the first four attributes are kept");
    assert_eq!(wide.dropped_attributes_count, 1 + 2, "the SDK's own count plus the two dropped here");
    assert_eq!(span_attr(&wide, "k1").unwrap(), "caf\u{e9} au lait, ", "cut to 16 bytes at a character boundary (15)");
    let busy = fx.received(&format!("{prefix}-busy"));
    assert_eq!((busy.events.len(), busy.dropped_events_count), (2, 3));
    assert_eq!((busy.links.len(), busy.dropped_links_count), (1, 2));
    assert!(busy.events.iter().all(|e| e.attributes.len() == 1 && e.dropped_attributes_count == 1));
    let normal = fx.received(&format!("{prefix}-normal"));
    assert_eq!(normal.attributes, vec![string("order.id", "A-1001")]);
    assert_eq!((normal.dropped_attributes_count, normal.dropped_events_count, normal.dropped_links_count), (0, 0, 0));
    assert!(
        fx.sink.spans().iter().all(|(_, s)| !s.name.starts_with(&format!("{prefix}-huge"))),
        "the too large span never goes downstream"
    );
}

trait WaitNamed {
    async fn wait_for_named(&self, names: &[&str]);
}

impl WaitNamed for Sink {
    async fn wait_for_named(&self, names: &[&str]) {
        eventually(&format!("spans {names:?} downstream"), Duration::from_secs(10), || async {
            let arrived: Vec<String> = self.spans().into_iter().map(|(_, s)| s.name).collect();
            when(arrived, |arrived| names.iter().all(|n| arrived.iter().any(|a| a == n)))
        })
        .await;
    }
}

#[tokio::test]
async fn otlp_http_protobuf_and_json_truncate_and_reject_with_counts() {
    let fx = Fixture::start().await;

    let (status, _, body) =
        send("POST", &fx.url("otlp", "/v1/traces"), &[("content-type", "application/x-protobuf")], request("proto").encode_to_vec()).await;
    assert_eq!(status, 200);
    let reply = ExportTraceServiceResponse::decode(&body[..]).unwrap();
    let partial = reply.partial_success.expect("partial_success names the rejected span");
    assert_eq!(partial.rejected_spans, 1);
    assert!(partial.error_message.contains("max_span_bytes (4KiB)"), "{}", partial.error_message);
    assert_limited(&fx, "proto").await;

    let json = serde_json::to_vec(&request("json")).unwrap();
    let (status, _, body) = send("POST", &fx.url("otlp", "/v1/traces"), &[("content-type", "application/json")], json).await;
    assert_eq!(status, 200);
    let reply: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        reply["partialSuccess"]["rejectedSpans"]
            .as_i64()
            .or(reply["partialSuccess"]["rejectedSpans"].as_str().and_then(|s| s.parse().ok())),
        Some(1),
        "{reply}"
    );
    assert_limited(&fx, "json").await;

    let text = fx.metrics().await;
    let limited =
        |what: &str| metric(&text, "tracegate_receiver_span_limited_total", &[("receiver", "otlp"), ("transport", "http"), ("what", what)]);
    // Per request: attributes 2 of the wide span + 1 on each of the busy span's 2 kept events
    // (its 3 dropped events count as events); 1 value cut; 3 events; 2 links.
    assert_eq!(limited("attributes"), 2.0 * (2.0 + 2.0), "{text}");
    assert_eq!(limited("attribute_values"), 2.0);
    assert_eq!(limited("events"), 2.0 * 3.0);
    assert_eq!(limited("links"), 2.0 * 2.0);
    let rejected = metric(
        &text,
        "tracegate_receiver_refused_spans_total",
        &[("receiver", "otlp"), ("transport", "http"), ("reason", "span_too_large")],
    );
    assert_eq!(rejected, 2.0);
}

#[tokio::test]
async fn otlp_grpc_from_the_sdk_is_limited_and_the_default_limits_leave_it_whole() {
    use opentelemetry::trace::{Span as _, Tracer, TracerProvider as _};
    use opentelemetry_otlp::{SpanExporter, WithExportConfig};

    let fx = Fixture::start().await;
    let send_with_sdk = |receiver: &'static str| {
        let endpoint = format!("http://{}", fx.gateway.addresses.grpc[receiver]);
        let handle = tokio::runtime::Handle::current();
        tokio::task::spawn_blocking(move || {
            let _guard = handle.enter();
            let exporter = SpanExporter::builder().with_tonic().with_endpoint(endpoint).build().unwrap();
            let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
                .with_simple_exporter(exporter)
                .with_max_attributes_per_span(1000)
                .with_max_events_per_span(1000)
                .build();
            let tracer = provider.tracer("span-limits-test");
            let mut span = tracer.start(format!("sdk-{receiver}"));
            for i in 0..10 {
                span.set_attribute(opentelemetry::KeyValue::new(format!("attr.{i}"), "x".repeat(40)));
            }
            for i in 0..5 {
                span.add_event(format!("event {i}"), vec![]);
            }
            span.end();
            provider.shutdown().unwrap();
        })
    };
    send_with_sdk("otlp").await.unwrap();
    send_with_sdk("otlp/default").await.unwrap();
    fx.sink.wait_for_named(&["sdk-otlp", "sdk-otlp/default"]).await;

    let limited = fx.received("sdk-otlp");
    assert_eq!((limited.attributes.len(), limited.dropped_attributes_count), (4, 6));
    assert!(limited.attributes.iter().all(|kv| common::attr_string(kv.value.as_ref()) == "x".repeat(16)));
    assert_eq!((limited.events.len(), limited.dropped_events_count), (2, 3));

    let whole = fx.received("sdk-otlp/default");
    assert_eq!(
        (whole.attributes.len(), whole.dropped_attributes_count, whole.events.len()),
        (10, 0, 5),
        "the defaults never touch a normal span"
    );
    assert!(whole.attributes.iter().all(|kv| common::attr_string(kv.value.as_ref()).len() == 40));

    let text = fx.metrics().await;
    let grpc =
        |what: &str| metric(&text, "tracegate_receiver_span_limited_total", &[("receiver", "otlp"), ("transport", "grpc"), ("what", what)]);
    assert_eq!((grpc("attributes"), grpc("attribute_values"), grpc("events")), (6.0, 4.0, 3.0));
    assert_eq!(metric(&text, "tracegate_receiver_span_limited_total", &[("receiver", "otlp/default")]), 0.0);
}

#[tokio::test]
async fn order_events_are_limited_and_a_too_large_one_is_named_by_its_index() {
    let fx = Fixture::start().await;
    let attributes: serde_json::Map<String, serde_json::Value> = (0..6).map(|i| (format!("mes.k{i}"), "y".repeat(30).into())).collect();
    let huge: serde_json::Map<String, serde_json::Value> = (0..1).map(|_| ("mes.blob".to_string(), "z".repeat(10).into())).collect();
    let body = serde_json::json!([
        {"order_id": "A-1", "service": "mes-api", "status": "manufactured", "attributes": attributes},
        {"order_id": "A-2"},
        {"order_id": "A-3", "service": "mes-api", "status": "manufactured", "stage": format!("s{}", "q".repeat(5000)), "attributes": huge},
    ]);
    let (status, _, reply) =
        send("POST", &fx.url("otlp", "/v1/order-events"), &[("content-type", "application/json")], serde_json::to_vec(&body).unwrap())
            .await;
    let reply: serde_json::Value = serde_json::from_slice(&reply).unwrap();
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["accepted"], 1, "{reply}");
    let rejected = reply["rejected"].as_array().unwrap();
    assert_eq!(rejected.iter().map(|r| r["index"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2], "{reply}");
    assert!(rejected[1]["error"].as_str().unwrap().contains("max_span_bytes"), "{reply}");

    fx.sink.wait_for_named(&["order status_change"]).await;
    let span = fx.received("order status_change");
    assert_eq!(span_attr(&span, "order.id").as_deref(), Some("A-1"), "the event's own fields come first and are kept");
    assert_eq!(span_attr(&span, "order.status").as_deref(), Some("manufactured"));
    assert_eq!((span.attributes.len(), span.dropped_attributes_count), (4, 5));
    let text = fx.metrics().await;
    let refused = metric(&text, "tracegate_receiver_refused_spans_total", &[("transport", "order_events"), ("reason", "span_too_large")]);
    assert_eq!(refused, 1.0);
}

#[test]
fn span_limits_are_validated_with_their_path() {
    let yaml = r#"
receivers:
  otlp:
    http: {endpoint: "127.0.0.1:0"}
    span_limits: {max_span_bytes: 10, max_attribute_value_bytes: 0, max_events: 3}
exporters: {log: {type: debug}}
service: {pipelines: {traces: {receivers: [otlp], exporters: [log]}}}
"#;
    let error = tracegate::Config::from_yaml(yaml).unwrap_err().to_string();
    assert!(error.contains("receivers.otlp.span_limits") && error.contains("max_events"), "{error}");
    let yaml = yaml.replace(", max_events: 3", "");
    let error = tracegate::Config::from_yaml(&yaml).unwrap_err().to_string();
    assert!(error.contains("receivers.otlp.span_limits.max_span_bytes: must be at least 1KiB"), "{error}");
    assert!(error.contains("receivers.otlp.span_limits.max_attribute_value_bytes: must be at least 1 byte"), "{error}");
}
