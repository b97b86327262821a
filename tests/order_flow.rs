//! One order's whole life, as the shop produces it: Shop, CRM and a constructor file through the
//! OpenTelemetry Rust SDK, MES through order events, plus unrelated browsing. Every exported span
//! is checked, then the order's timeline.

mod common;

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{get_json, send, span_attr, start_gateway, Sink};
use opentelemetry::trace::{Link, Span as _, SpanContext, SpanKind, TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;

const ORDER: &str = "A-1001";

fn provider(endpoint: &str, service: &str) -> SdkTracerProvider {
    let exporter = SpanExporter::builder().with_tonic().with_endpoint(endpoint).build().unwrap();
    SdkTracerProvider::builder()
        .with_simple_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service.to_string()).build())
        .build()
}

/// Shop and CRM as instrumented services would report them; returns the trace ids (file, shop,
/// crm, browsing).
fn instrumented_services(endpoint: String) -> (String, String, String, Vec<String>) {
    // The constructor saves a file before the order exists.
    let shop = provider(&endpoint, "shop-api");
    let tracer = shop.tracer("shop");
    let mut file = tracer
        .span_builder("POST /constructor/files")
        .with_kind(SpanKind::Server)
        .with_attributes(vec![KeyValue::new("http.request.method", "POST"), KeyValue::new("constructor.file_id", "F-42")])
        .start(&tracer);
    let file_trace = file.span_context().trace_id().to_string();
    file.end();

    // The order: its id is on the server span only. Children end (and are exported) first.
    let mut root = tracer
        .span_builder("POST /orders")
        .with_kind(SpanKind::Server)
        .with_attributes(vec![
            KeyValue::new("http.request.method", "POST"),
            KeyValue::new("http.route", "/orders"),
            KeyValue::new("enduser.id", "u-42"),
            KeyValue::new("constructor.file_id", "F-42"),
        ])
        .start(&tracer);
    let shop_trace = root.span_context().trace_id().to_string();
    let cx = opentelemetry::Context::current().with_remote_span_context(root.span_context().clone());
    tracer
        .span_builder("INSERT shop.orders")
        .with_kind(SpanKind::Client)
        .with_attributes(vec![KeyValue::new("db.system.name", "postgresql"), KeyValue::new("db.operation.name", "INSERT")])
        .start_with_context(&tracer, &cx)
        .end();
    let mut publish = tracer
        .span_builder("orders publish")
        .with_kind(SpanKind::Producer)
        .with_attributes(vec![KeyValue::new("messaging.system", "rabbitmq"), KeyValue::new("messaging.destination.name", "orders")])
        .start_with_context(&tracer, &cx);
    let publish_context: SpanContext = publish.span_context().clone();
    let publish_context_again = publish_context.clone();
    publish.end();
    root.set_attribute(KeyValue::new("order.id", ORDER));
    root.end();

    // Browsing that never becomes an order.
    let mut browsing = Vec::new();
    for page in ["/catalog", "/catalog/chairs"] {
        let mut s = tracer
            .span_builder(format!("GET {page}"))
            .with_kind(SpanKind::Server)
            .with_attributes(vec![KeyValue::new("url.path", page)])
            .start(&tracer);
        browsing.push(s.span_context().trace_id().to_string());
        s.end();
    }
    shop.shutdown().unwrap();

    // CRM consumes the message in a new trace, linked to Shop's publish.
    let crm = provider(&endpoint, "crm-api");
    let tracer = crm.tracer("crm");
    let mut consume = tracer
        .span_builder("orders process")
        .with_kind(SpanKind::Consumer)
        .with_links(vec![Link::with_context(publish_context)])
        .with_attributes(vec![KeyValue::new("messaging.system", "rabbitmq"), KeyValue::new("messaging.operation.type", "process")])
        .start(&tracer);
    let crm_trace = consume.span_context().trace_id().to_string();
    let cx = opentelemetry::Context::current().with_remote_span_context(consume.span_context().clone());
    tracer
        .span_builder("UPDATE crm.orders")
        .with_kind(SpanKind::Client)
        .with_attributes(vec![KeyValue::new("db.system.name", "mssql"), KeyValue::new("db.operation.name", "UPDATE")])
        .start_with_context(&tracer, &cx)
        .end();
    tracer
        .span_builder("order accepted")
        .with_attributes(vec![KeyValue::new("order.new_status", "accepted")])
        .start_with_context(&tracer, &cx)
        .end();
    tracer
        .span_builder("POST")
        .with_kind(SpanKind::Client)
        .with_attributes(vec![
            KeyValue::new("http.request.method", "POST"),
            KeyValue::new("url.full", format!("http://mes/orders/{ORDER}/production")),
        ])
        .start_with_context(&tracer, &cx)
        .end();
    consume.end();
    // A second consumer of the same message (customer notification): no order id anywhere, only
    // the link.
    let mut notify = tracer
        .span_builder("orders.notify process")
        .with_kind(SpanKind::Consumer)
        .with_links(vec![Link::with_context(publish_context_again)])
        .with_attributes(vec![KeyValue::new("messaging.system", "rabbitmq")])
        .start(&tracer);
    let cx = opentelemetry::Context::current().with_remote_span_context(notify.span_context().clone());
    tracer
        .span_builder("INSERT crm.notifications")
        .with_kind(SpanKind::Client)
        .with_attributes(vec![KeyValue::new("db.system.name", "mssql"), KeyValue::new("db.operation.name", "INSERT")])
        .start_with_context(&tracer, &cx)
        .end();
    notify.end();
    crm.shutdown().unwrap();
    (file_trace, shop_trace, crm_trace, browsing)
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_from_shop_to_courier() {
    let sink = Sink::start().await;
    let yaml = format!(
        r#"
receivers:
  otlp: {{grpc: {{endpoint: "127.0.0.1:0"}}, http: {{endpoint: "127.0.0.1:0"}}}}
processors:
  order_enrich: {{wait: 1s}}
exporters:
  jaeger: {{type: otlp, endpoint: "{}", batch: {{max_wait: 10ms}}}}
  local: {{type: embedded, path: "{{data}}", batch: {{max_wait: 10ms}}}}
api: {{endpoint: "127.0.0.1:0"}}
service:
  pipelines:
    traces: {{receivers: [otlp], processors: [order_enrich], exporters: [jaeger, local]}}
"#,
        sink.endpoint()
    );
    let (gateway, _dir) = start_gateway(&yaml).await;
    let grpc = format!("http://{}", gateway.grpc_addr().unwrap());
    let handle = tokio::runtime::Handle::current();
    let (file_trace, shop_trace, crm_trace, browsing) = tokio::task::spawn_blocking(move || {
        let _guard = handle.enter();
        instrumented_services(grpc)
    })
    .await
    .unwrap();

    // MES cannot emit OTLP: it posts order events, the last one an hour after production ended.
    let t0 = now_ns();
    let at = |secs: u64| tracegate::shared::format_rfc3339_nanos(t0 + secs * 1_000_000_000);
    let events = serde_json::json!([
        {"order_id": ORDER, "service": "mes-api", "status": "in_production", "time": at(10), "attributes": {"mes.line": "3"}},
        {"order_id": ORDER, "service": "mes-api", "status": "manufactured", "time": at(20)},
        {"order_id": ORDER, "service": "mes-api", "status": "handed_to_courier", "time": at(3620)},
    ]);
    let url = format!("http://{}/v1/order-events", gateway.http_addr().unwrap());
    let (status, _, body) = send("POST", &url, &[("content-type", "application/json")], events.to_string().into_bytes()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));

    // 4 file+shop spans, 6 CRM spans, 3 MES events, 2 browsing spans (after their 1 s wait).
    sink.wait_for(15, Duration::from_secs(10)).await;
    let spans: HashMap<String, (String, opentelemetry_proto::tonic::trace::v1::Span)> =
        sink.spans().into_iter().map(|(svc, s)| (s.name.clone(), (svc, s))).collect();
    assert_eq!(sink.span_count(), 15, "every span exported once");
    let tags = |name: &str| {
        let (service, span) = spans.get(name).unwrap_or_else(|| panic!("span {name:?} not exported"));
        (
            service.as_str(),
            span_attr(span, "order.id"),
            span_attr(span, "order.stage"),
            span_attr(span, "order.status"),
            span_attr(span, "enduser.id"),
        )
    };
    let o = || Some(ORDER.to_string());
    let s = |v: &str| Some(v.to_string());
    assert_eq!(tags("POST /constructor/files"), ("shop-api", o(), s("file_link"), None, None));
    assert_eq!(tags("POST /orders"), ("shop-api", o(), s("created"), s("new"), s("u-42")));
    assert_eq!(tags("INSERT shop.orders"), ("shop-api", o(), s("db_save"), None, s("u-42")));
    assert_eq!(tags("orders publish"), ("shop-api", o(), s("bus_publish"), None, s("u-42")));
    assert_eq!(tags("orders process"), ("crm-api", o(), s("bus_consume"), None, None));
    assert_eq!(tags("UPDATE crm.orders"), ("crm-api", o(), s("db_save"), None, None));
    assert_eq!(tags("order accepted"), ("crm-api", o(), s("status_change"), s("accepted"), None));
    assert_eq!(tags("POST"), ("crm-api", o(), None, None, None));
    assert_eq!(tags("orders.notify process"), ("crm-api", o(), s("bus_consume"), None, None));
    assert_eq!(tags("INSERT crm.notifications"), ("crm-api", o(), s("db_save"), None, None));
    assert_eq!(tags("order status_change").0, "mes-api");
    assert_eq!(tags("GET /catalog"), ("shop-api", None, None, None, None));
    assert_eq!(tags("GET /catalog/chairs"), ("shop-api", None, None, None, None));

    // The timeline support reads.
    let api = gateway.api_addr().unwrap();
    let timeline = common::wait_timeline(api, ORDER, 12, Duration::from_secs(5)).await;
    assert_eq!(timeline["order_id"], ORDER, "timeline: {timeline}");
    assert_eq!(timeline["status"], "handed_to_courier");
    assert_eq!(timeline["services"], serde_json::json!(["crm-api", "mes-api", "shop-api"]));
    let trace_ids: Vec<&str> = timeline["trace_ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    for t in [&file_trace, &shop_trace, &crm_trace] {
        assert!(trace_ids.contains(&t.as_str()), "{t} missing from {trace_ids:?}");
    }
    for t in &browsing {
        assert!(!trace_ids.contains(&t.as_str()));
    }
    let stages: Vec<&str> = timeline["events"].as_array().unwrap().iter().map(|e| e["stage"].as_str().unwrap()).collect();
    assert_eq!(
        stages,
        [
            "file_link",
            "created",
            "db_save",
            "bus_publish",
            "bus_consume",
            "db_save",
            "status_change",
            "bus_consume",
            "db_save",
            "status_change",
            "status_change",
            "status_change"
        ],
        "events in time order: {timeline}"
    );
    let transitions: Vec<(String, String, f64)> = timeline["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["from"].as_str().unwrap().to_string(), t["to"].as_str().unwrap().to_string(), t["seconds"].as_f64().unwrap()))
        .collect();
    let steps: Vec<(&str, &str)> = transitions.iter().map(|(f, t, _)| (f.as_str(), t.as_str())).collect();
    assert_eq!(
        steps,
        [("new", "accepted"), ("accepted", "in_production"), ("in_production", "manufactured"), ("manufactured", "handed_to_courier")]
    );
    assert_eq!(transitions[2].2, 10.0);
    assert_eq!(transitions[3].2, 3600.0);

    let (code, list) = get_json(&format!("http://{api}/api/v1/orders?status=handed_to_courier&service=crm-api")).await;
    assert_eq!(code, 200);
    assert_eq!(list["orders"].as_array().unwrap().len(), 1);
    assert_eq!(list["orders"][0]["order_id"], ORDER);

    let m = common::metrics_text(api).await;
    assert_eq!(
        common::metric(&m, "tracegate_order_enrich_tagged_spans_total", &[("how", "link")]),
        2.0,
        "the notification trace joined through its link"
    );
    // The main CRM trace names the order in the URL of its call to MES.
    assert_eq!(
        common::metric(&m, "tracegate_order_enrich_tagged_spans_total", &[("how", "own")]),
        5.0,
        "POST /orders, the MES call and 3 events"
    );
    assert_eq!(
        common::metric(&m, "tracegate_order_enrich_tagged_spans_total", &[("how", "correlation")]),
        1.0,
        "the file joined through its id"
    );
    assert_eq!(common::metric(&m, "tracegate_order_enrich_untagged_spans_total", &[("reason", "timeout")]), 2.0, "browsing");
    gateway.shutdown_within(Duration::from_secs(5)).await;
}
