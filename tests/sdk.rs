//! The OpenTelemetry Rust SDK sends over gRPC, HTTP protobuf and HTTP JSON into a gateway on
//! port 0; the spans arrive attribute for attribute at a downstream OTLP receiver and in the
//! embedded store through the read API.

mod common;

use std::time::Duration;

use common::{eventually, get_json, span_attr, start_gateway, when, Sink};
use opentelemetry::trace::{Span as _, SpanKind, TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;

#[derive(Clone, Copy, Debug)]
enum Transport {
    Grpc,
    HttpProtobuf,
    HttpJson,
}

/// Emits one Shop order trace (server span, DB insert child, RabbitMQ publish child) the way an
/// instrumented service does, and returns its trace id in hex.
async fn emit_order_trace(transport: Transport, endpoint: String, order: &'static str) -> String {
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        // The SDK's simple processor blocks on each export; the tonic and hyper clients need the
        // runtime's reactor, which this handle provides.
        let _guard = handle.enter();
        let exporter = match transport {
            Transport::Grpc => SpanExporter::builder().with_tonic().with_endpoint(endpoint).build(),
            Transport::HttpProtobuf => SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpBinary)
                .with_endpoint(format!("{endpoint}/v1/traces"))
                .build(),
            Transport::HttpJson => {
                SpanExporter::builder().with_http().with_protocol(Protocol::HttpJson).with_endpoint(format!("{endpoint}/v1/traces")).build()
            }
        }
        .expect("exporter builds");
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter)
            .with_resource(
                Resource::builder()
                    .with_service_name("shop-api")
                    .with_attribute(KeyValue::new("deployment.environment.name", "test"))
                    .build(),
            )
            .build();
        let tracer = provider.tracer("shop-api-tests");
        let mut root = tracer
            .span_builder("POST /orders")
            .with_kind(SpanKind::Server)
            .with_attributes(vec![
                KeyValue::new("http.request.method", "POST"),
                KeyValue::new("url.path", "/orders"),
                KeyValue::new("order.id", order),
                KeyValue::new("http.response.status_code", 201),
                KeyValue::new("shop.discount", 0.15),
                KeyValue::new("shop.express", true),
            ])
            .start(&tracer);
        let trace_id = root.span_context().trace_id().to_string();
        let cx = opentelemetry::Context::current().with_remote_span_context(root.span_context().clone());
        let mut db = tracer
            .span_builder("INSERT orders")
            .with_kind(SpanKind::Client)
            .with_attributes(vec![KeyValue::new("db.system.name", "postgresql"), KeyValue::new("db.operation.name", "INSERT")])
            .start_with_context(&tracer, &cx);
        db.end();
        let mut publish = tracer
            .span_builder("orders publish")
            .with_kind(SpanKind::Producer)
            .with_attributes(vec![KeyValue::new("messaging.system", "rabbitmq"), KeyValue::new("messaging.destination.name", "orders")])
            .start_with_context(&tracer, &cx);
        publish.add_event("handed to the bus", vec![KeyValue::new("attempt", 1)]);
        publish.end();
        root.end();
        provider.shutdown().expect("provider flushes");
        trace_id
    })
    .await
    .unwrap()
}

async fn round_trip(transport: Transport) {
    let sink = Sink::start().await;
    let yaml = format!(
        r#"
receivers:
  otlp: {{grpc: {{endpoint: "127.0.0.1:0"}}, http: {{endpoint: "127.0.0.1:0"}}}}
exporters:
  jaeger: {{type: otlp, endpoint: "{}", batch: {{max_wait: 20ms}}}}
  local: {{type: embedded, path: "{{data}}", batch: {{max_wait: 20ms}}}}
api: {{endpoint: "127.0.0.1:0"}}
service:
  pipelines:
    traces: {{receivers: [otlp], exporters: [jaeger, local]}}
"#,
        sink.endpoint()
    );
    let (gateway, _dir) = start_gateway(&yaml).await;
    let endpoint = match transport {
        Transport::Grpc => format!("http://{}", gateway.grpc_addr().unwrap()),
        _ => format!("http://{}", gateway.http_addr().unwrap()),
    };
    let trace_id = emit_order_trace(transport, endpoint, "A-1001").await;

    // Downstream: all three spans, attribute for attribute.
    sink.wait_for(3, Duration::from_secs(10)).await;
    let spans = sink.spans();
    assert_eq!(spans.len(), 3, "{transport:?}: exactly the three spans, once each");
    let root = spans.iter().map(|(_, s)| s).find(|s| s.name == "POST /orders").expect("root span");
    assert_eq!(hex::encode(&root.trace_id), trace_id);
    assert_eq!(root.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(span_attr(root, "order.id").as_deref(), Some("A-1001"));
    assert_eq!(span_attr(root, "http.response.status_code").as_deref(), Some("201"));
    assert_eq!(span_attr(root, "shop.discount").as_deref(), Some("0.15"));
    assert_eq!(span_attr(root, "shop.express").as_deref(), Some("true"));
    assert!(spans.iter().all(|(service, _)| service == "shop-api"));
    let publish = spans.iter().map(|(_, s)| s).find(|s| s.name == "orders publish").unwrap();
    assert_eq!(publish.parent_span_id, root.span_id);
    assert_eq!(publish.kind, 4, "SPAN_KIND_PRODUCER");
    assert_eq!(publish.events.len(), 1);
    assert_eq!(publish.events[0].name, "handed to the bus");

    // The embedded store, through the read API.
    let api = gateway.api_addr().unwrap();
    let url = format!("http://{api}/api/v1/traces/{trace_id}");
    let (_, body) = eventually(&format!("{transport:?}: the trace stored with 3 spans"), Duration::from_secs(5), || async {
        when(get_json(&url).await, |(status, b)| {
            *status == 200 && b["resourceSpans"][0]["scopeSpans"][0]["spans"].as_array().map(Vec::len).unwrap_or(0) == 3
        })
    })
    .await;
    let stored = body["resourceSpans"][0]["scopeSpans"][0]["spans"]
        .as_array()
        .unwrap_or_else(|| panic!("{transport:?}: trace not in the store: {body}"));
    assert_eq!(stored.len(), 3);
    let service = &body["resourceSpans"][0]["resource"]["attributes"];
    assert!(service.to_string().contains("shop-api"), "{service}");
    let root_json = stored.iter().find(|s| s["name"] == "POST /orders").unwrap();
    assert_eq!(root_json["traceId"], trace_id, "ids are hex in OTLP JSON");
    assert!(root_json["attributes"].to_string().contains("A-1001"));

    // Unknown and malformed ids.
    let (status, err) = get_json(&format!("http://{api}/api/v1/traces/{}", "0".repeat(31) + "1")).await;
    assert_eq!(status, 404);
    assert_eq!(err["error"], "not_found");
    let (status, _) = get_json(&format!("http://{api}/api/v1/traces/not-hex")).await;
    assert_eq!(status, 400);

    // The sink records a batch before it replies, so the sent counters may trail it briefly.
    common::wait_metric(api, "tracegate_exporter_sent_spans_total", &[("exporter", "jaeger")], |v| v >= 3.0, Duration::from_secs(5)).await;
    let metrics = common::metrics_text(api).await;
    let transport_label = if matches!(transport, Transport::Grpc) { "grpc" } else { "http" };
    assert_eq!(common::metric(&metrics, "tracegate_receiver_accepted_spans_total", &[("transport", transport_label)]), 3.0);
    assert_eq!(common::metric(&metrics, "tracegate_exporter_sent_spans_total", &[("exporter", "jaeger")]), 3.0);
    assert_eq!(common::metric(&metrics, "tracegate_exporter_sent_spans_total", &[("exporter", "local")]), 3.0);
    assert_eq!(common::metric(&metrics, "tracegate_exporter_queue_size", &[("exporter", "jaeger")]), 0.0);

    let report = gateway.shutdown_within(Duration::from_secs(5)).await;
    assert_eq!(report.undelivered_spans, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_over_grpc_reaches_downstream_and_store() {
    round_trip(Transport::Grpc).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_over_http_protobuf_reaches_downstream_and_store() {
    round_trip(Transport::HttpProtobuf).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_over_http_json_reaches_downstream_and_store() {
    round_trip(Transport::HttpJson).await;
}
