//! Spans shaped the way real instrumentation emits them, sent through the OpenTelemetry Rust SDK:
//! the Java agent (JDBC with h2, RabbitMQ publish and process, a JDBC call wrapped twice), Node
//! (amqplib send without an operation attribute, `pg.query:INSERT` with a leading comment), Python
//! (pika parenting the consumer on the publisher, sqlite3 with `WITH ... INSERT`), old and new
//! semantic conventions side by side; a consumer that continues the publisher's trace and one that
//! starts a new trace with a link; a consume span that sets the status. Then the correlation hold:
//! a constructor file saved before its order, held on disk across a restart, released tagged when
//! the order claims it; another expired and counted; nothing else order-less leaves.

mod common;

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use common::{get_json, metric, metrics_text, span_attr, wait_metric, wait_timeline, Sink};
use opentelemetry::trace::{Link, Span as _, SpanContext, SpanKind, TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracegate::{Config, Gateway};

fn provider(endpoint: &str, service: &str) -> SdkTracerProvider {
    let exporter = SpanExporter::builder().with_tonic().with_endpoint(endpoint).build().unwrap();
    SdkTracerProvider::builder()
        .with_simple_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service.to_string()).build())
        .build()
}

fn kv(pairs: &[(&'static str, &'static str)]) -> Vec<KeyValue> {
    pairs.iter().map(|(k, v)| KeyValue::new(*k, *v)).collect()
}

/// One span as an agent reports it: name, kind, attributes, start at `t0 + ms`, a parent context.
struct Emit<'a> {
    tracer: &'a opentelemetry_sdk::trace::SdkTracer,
    t0: SystemTime,
}

impl Emit<'_> {
    fn start(
        &self,
        name: &str,
        kind: SpanKind,
        ms: u64,
        attrs: &[(&'static str, &'static str)],
        parent: Option<&Context>,
        links: Vec<Link>,
    ) -> opentelemetry_sdk::trace::Span {
        let builder = self
            .tracer
            .span_builder(name.to_string())
            .with_kind(kind)
            .with_start_time(self.t0 + Duration::from_millis(ms))
            .with_attributes(kv(attrs))
            .with_links(links);
        match parent {
            Some(cx) => builder.start_with_context(self.tracer, cx),
            None => builder.start_with_context(self.tracer, &Context::new()),
        }
    }

    fn end(&self, mut span: opentelemetry_sdk::trace::Span, ms: u64) {
        span.end_with_timestamp(self.t0 + Duration::from_millis(ms));
    }
}

fn child_of(span: &opentelemetry_sdk::trace::Span) -> Context {
    Context::new().with_remote_span_context(span.span_context().clone())
}

/// Shop (Java agent), CRM (Node) and MES (Python) handling order A-7; returns the trace ids of
/// Shop and of CRM+MES.
fn agents(endpoint: String) -> (String, String) {
    let t0 = SystemTime::now() - Duration::from_secs(60);

    // Shop API, Java agent: the order is created, saved through a JDBC connection wrapped twice
    // (pool and driver: two nested spans alike), a product read (not a step), the hand-over.
    let shop = provider(&endpoint, "shop-api");
    let tracer = shop.tracer("io.opentelemetry.jdbc");
    let e = Emit { tracer: &tracer, t0 };
    let root = e.start(
        "POST /orders",
        SpanKind::Server,
        0,
        &[("http.method", "POST"), ("http.target", "/orders"), ("http.route", "/orders"), ("order.id", "A-7")],
        None,
        vec![],
    );
    let shop_trace = root.span_context().trace_id().to_string();
    let cx = child_of(&root);
    let jdbc = [("db.system", "h2"), ("db.name", "shopdb"), ("db.statement", "insert into orders (id, status) values (?, ?)")];
    let outer = e.start("INSERT shopdb.orders", SpanKind::Client, 1, &jdbc, Some(&cx), vec![]);
    let inner = e.start("INSERT shopdb.orders", SpanKind::Client, 2, &jdbc, Some(&child_of(&outer)), vec![]);
    e.end(inner, 3);
    e.end(outer, 4);
    let read = e.start(
        "SELECT shopdb.products",
        SpanKind::Client,
        5,
        &[("db.system.name", "h2"), ("db.query.text", "select * from products where id = ?")],
        Some(&cx),
        vec![],
    );
    e.end(read, 6);
    let publish = e.start(
        "orders publish",
        SpanKind::Producer,
        7,
        &[("messaging.system", "rabbitmq"), ("messaging.destination.name", "orders"), ("messaging.operation", "publish")],
        Some(&cx),
        vec![],
    );
    let publish_context: SpanContext = publish.span_context().clone();
    e.end(publish, 8);
    e.end(root, 9);
    shop.shutdown().unwrap();

    // CRM API, Node: amqplib starts a new trace linked to the publish; the consume span is the
    // only span the developer reaches, so it carries the new status. pg writes with a comment
    // before the statement; the amqplib send has no operation attribute, only its kind.
    let crm = provider(&endpoint, "crm-api");
    let tracer = crm.tracer("@opentelemetry/instrumentation-amqplib");
    let e = Emit { tracer: &tracer, t0 };
    let consume = e.start(
        "orders process",
        SpanKind::Consumer,
        10,
        &[
            ("messaging.system", "rabbitmq"),
            ("messaging.destination", "orders"),
            ("messaging.operation", "process"),
            ("order.new_status", "accepted"),
        ],
        None,
        vec![Link::with_context(publish_context)],
    );
    let crm_trace = consume.span_context().trace_id().to_string();
    let cx = child_of(&consume);
    let pg = e.start(
        "pg.query:INSERT crm",
        SpanKind::Client,
        11,
        &[
            ("db.system", "postgresql"),
            ("db.name", "crm"),
            ("db.statement", "/* crm-api */ INSERT INTO notes(order_id, text) VALUES($1, $2)"),
        ],
        Some(&cx),
        vec![],
    );
    e.end(pg, 12);
    let send = e.start(
        "crm -> production send",
        SpanKind::Producer,
        13,
        &[("messaging.system", "rabbitmq"), ("messaging.destination", "crm"), ("messaging.rabbitmq.routing_key", "production")],
        Some(&cx),
        vec![],
    );
    let send_cx = child_of(&send);
    e.end(send, 14);
    e.end(consume, 15);
    crm.shutdown().unwrap();

    // MES, Python: pika parents the consumer on the publisher (the same trace, no link); the
    // receive span sets the status; sqlite3 writes with `WITH ... INSERT`; a publish in the old
    // conventions.
    let mes = provider(&endpoint, "mes-api");
    let tracer = mes.tracer("opentelemetry.instrumentation.pika");
    let e = Emit { tracer: &tracer, t0 };
    let receive = e.start(
        "production receive",
        SpanKind::Consumer,
        20,
        &[
            ("messaging.system", "rabbitmq"),
            ("messaging.destination.name", "production"),
            ("messaging.operation", "receive"),
            ("order.status", "in_production"),
        ],
        Some(&send_cx),
        vec![],
    );
    let cx = child_of(&receive);
    let sqlite = e.start(
        "INSERT",
        SpanKind::Client,
        21,
        &[
            ("db.system", "sqlite"),
            ("db.statement", "WITH job AS (SELECT ? AS order_id) INSERT INTO jobs(order_id) SELECT order_id FROM job"),
        ],
        Some(&cx),
        vec![],
    );
    e.end(sqlite, 22);
    let courier = e.start(
        "courier publish",
        SpanKind::Producer,
        23,
        &[("messaging.system", "rabbitmq"), ("messaging.destination", "courier"), ("messaging.operation", "publish")],
        Some(&cx),
        vec![],
    );
    e.end(courier, 24);
    e.end(receive, 25);
    mes.shutdown().unwrap();
    (shop_trace, crm_trace)
}

/// The stored spans of a trace (read API), as (name, attributes) pairs.
async fn stored(api: std::net::SocketAddr, trace: &str) -> Vec<(String, HashMap<String, String>)> {
    let (code, body) = get_json(&format!("http://{api}/api/v1/traces/{trace}")).await;
    assert_eq!(code, 200, "{body}");
    let mut out = Vec::new();
    for rs in body["resourceSpans"].as_array().unwrap() {
        for ss in rs["scopeSpans"].as_array().unwrap() {
            for s in ss["spans"].as_array().unwrap() {
                let attrs = s["attributes"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|kv| Some((kv["key"].as_str()?.to_string(), kv["value"]["stringValue"].as_str()?.to_string())))
                            .collect()
                    })
                    .unwrap_or_default();
                out.push((s["name"].as_str().unwrap().to_string(), attrs));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_agents_emit_makes_one_timeline() {
    let sink = Sink::start().await;
    let yaml = format!(
        r#"
receivers:
  otlp: {{grpc: {{endpoint: "127.0.0.1:0"}}}}
processors:
  order_enrich: {{wait: 2s}}
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
    let (gateway, _dir) = common::start_gateway(&yaml).await;
    let grpc = format!("http://{}", gateway.grpc_addr().unwrap());
    let handle = tokio::runtime::Handle::current();
    let (shop_trace, crm_trace) = tokio::task::spawn_blocking(move || {
        let _guard = handle.enter();
        agents(grpc)
    })
    .await
    .unwrap();

    sink.wait_for(11, Duration::from_secs(10)).await;
    assert_eq!(sink.span_count(), 11, "every span exported once");
    type Tags = (String, Option<String>, Option<String>, Option<String>);
    let exported: Vec<Tags> = sink
        .spans()
        .into_iter()
        .map(|(_, s)| (s.name.clone(), span_attr(&s, "order.id"), span_attr(&s, "order.stage"), span_attr(&s, "order.status")))
        .collect();
    let tags = |name: &str| -> Vec<(Option<String>, Option<String>, Option<String>)> {
        exported.iter().filter(|e| e.0 == name).map(|e| (e.1.clone(), e.2.clone(), e.3.clone())).collect()
    };
    let o = || Some("A-7".to_string());
    let s = |v: &str| Some(v.to_string());
    assert_eq!(tags("POST /orders"), [(o(), s("created"), s("new"))]);
    assert_eq!(tags("INSERT shopdb.orders"), [(o(), s("db_save"), None), (o(), s("db_save"), None)], "both wrapped spans are kept");
    assert_eq!(tags("SELECT shopdb.products"), [(o(), None, None)], "a read is not a step");
    assert_eq!(tags("orders publish"), [(o(), s("bus_publish"), None)]);
    assert_eq!(tags("orders process"), [(o(), s("bus_consume"), s("accepted"))], "hand-over and status on one span");
    assert_eq!(tags("pg.query:INSERT crm"), [(o(), s("db_save"), None)]);
    assert_eq!(tags("crm -> production send"), [(o(), s("bus_publish"), None)]);
    assert_eq!(tags("production receive"), [(o(), s("bus_consume"), s("in_production"))]);
    assert_eq!(tags("INSERT"), [(o(), s("db_save"), None)]);
    assert_eq!(tags("courier publish"), [(o(), s("bus_publish"), None)]);

    // The timeline: the call wrapped twice is one step; every status counts for transitions.
    let api = gateway.api_addr().unwrap();
    let timeline = wait_timeline(api, "A-7", 9, Duration::from_secs(10)).await;
    let events: Vec<(&str, &str, &str, Option<&str>)> = timeline["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["service"].as_str().unwrap(), e["span_name"].as_str().unwrap(), e["stage"].as_str().unwrap(), e["status"].as_str()))
        .collect();
    assert_eq!(
        events,
        [
            ("shop-api", "POST /orders", "created", Some("new")),
            ("shop-api", "INSERT shopdb.orders", "db_save", None),
            ("shop-api", "orders publish", "bus_publish", None),
            ("crm-api", "orders process", "bus_consume", Some("accepted")),
            ("crm-api", "pg.query:INSERT crm", "db_save", None),
            ("crm-api", "crm -> production send", "bus_publish", None),
            ("mes-api", "production receive", "bus_consume", Some("in_production")),
            ("mes-api", "INSERT", "db_save", None),
            ("mes-api", "courier publish", "bus_publish", None),
        ],
        "{timeline}"
    );
    assert_eq!(timeline["status"], "in_production");
    let transitions: Vec<(&str, &str)> =
        timeline["transitions"].as_array().unwrap().iter().map(|t| (t["from"].as_str().unwrap(), t["to"].as_str().unwrap())).collect();
    assert_eq!(transitions, [("new", "accepted"), ("accepted", "in_production")]);
    assert_eq!(timeline["services"], serde_json::json!(["crm-api", "mes-api", "shop-api"]));
    let mut traces: Vec<&str> = timeline["trace_ids"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    traces.sort();
    let mut expected = vec![shop_trace.as_str(), crm_trace.as_str()];
    expected.sort();
    assert_eq!(traces, expected, "the linked consumer and the parented one both joined");

    // The stored spans: the trace keeps both wrapped spans, tagged alike.
    let shop = stored(api, &shop_trace).await;
    let wrapped: Vec<_> = shop.iter().filter(|(n, _)| n == "INSERT shopdb.orders").collect();
    assert_eq!(wrapped.len(), 2);
    for (_, a) in wrapped {
        assert_eq!((a.get("order.id").map(String::as_str), a.get("order.stage").map(String::as_str)), (Some("A-7"), Some("db_save")));
    }
    let crm = stored(api, &crm_trace).await;
    assert_eq!(crm.len(), 6, "CRM and MES share the trace pika continued");
    let receive = &crm.iter().find(|(n, _)| n == "production receive").unwrap().1;
    assert_eq!(receive.get("order.stage").map(String::as_str), Some("bus_consume"));
    assert_eq!(receive.get("order.status").map(String::as_str), Some("in_production"));
    assert_eq!(receive.get("messaging.operation").map(String::as_str), Some("receive"), "the input attributes stay");
    gateway.shutdown_within(Duration::from_secs(5)).await;
}

/// A span to send: name, kind, attributes, and whether it is a child of the span before it.
type SpanSpec = (&'static str, SpanKind, Vec<(&'static str, &'static str)>, bool);

/// Sends spans of one service through the SDK, each ended at once; returns their trace ids.
async fn send_spans(endpoint: String, service: &'static str, spans: Vec<SpanSpec>) -> Vec<String> {
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let _guard = handle.enter();
        let p = provider(&endpoint, service);
        let tracer = p.tracer("shop");
        let mut traces = Vec::new();
        // A span marked `true` is a child of the span before it.
        let mut parent: Option<Context> = None;
        let mut open = Vec::new();
        for (name, kind, attrs, child) in spans {
            let builder = tracer.span_builder(name).with_kind(kind).with_attributes(kv(&attrs));
            let cx = if child { parent.clone().unwrap_or_default() } else { Context::new() };
            let span = builder.start_with_context(&tracer, &cx);
            traces.push(span.span_context().trace_id().to_string());
            parent = Some(child_of(&span));
            open.push(span);
        }
        // Children end first, as they do in a service.
        for mut span in open.into_iter().rev() {
            span.end();
        }
        p.shutdown().unwrap();
        traces
    })
    .await
    .unwrap()
}

fn hold_config(sink: &Sink, dir: &std::path::Path) -> Config {
    let yaml = format!(
        r#"
receivers:
  otlp: {{grpc: {{endpoint: "127.0.0.1:0"}}}}
processors:
  order_enrich:
    wait: 300ms
    correlation_hold: {{directory: "{dir}/hold", ttl: 10s, max_bytes: 1MiB}}
  order_sampling: {{fraction: 0.0, keep_errors: true}}
exporters:
  jaeger: {{type: otlp, endpoint: "{sink}", batch: {{max_wait: 10ms}}}}
  local: {{type: embedded, path: "{dir}/store", batch: {{max_wait: 10ms}}}}
api: {{endpoint: "127.0.0.1:0"}}
service:
  pipelines:
    traces: {{receivers: [otlp], processors: [order_enrich, order_sampling], exporters: [jaeger, local]}}
"#,
        sink = sink.endpoint(),
        dir = dir.display()
    );
    Config::from_yaml(&yaml).unwrap()
}

const HOLD: &str = "tracegate_order_enrich_hold_spans_total";
const HELD_NOW: &str = "tracegate_order_enrich_hold_held_spans";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_constructor_file_waits_on_disk_for_its_order() {
    let sink = Sink::start().await;
    let dir = tempfile::tempdir().unwrap();
    let started = tokio::time::Instant::now();
    let gateway = Gateway::start(hold_config(&sink, dir.path())).await.unwrap();
    let grpc = format!("http://{}", gateway.grpc_addr().unwrap());
    let api = gateway.api_addr().unwrap();

    // Before any order: two constructor files (the upload request and the save inside it), and
    // browsing. Nothing of it may leave yet.
    send_spans(
        grpc.clone(),
        "shop-api",
        vec![
            ("POST /constructor/files", SpanKind::Server, vec![("http.request.method", "POST"), ("url.path", "/constructor/files")], false),
            ("save constructor file", SpanKind::Internal, vec![("constructor.file_id", "F-1")], true),
        ],
    )
    .await;
    send_spans(grpc.clone(), "shop-api", vec![("save constructor file F-2", SpanKind::Internal, vec![("file.id", "F-2")], false)]).await;
    send_spans(grpc.clone(), "shop-api", vec![("GET /catalog", SpanKind::Server, vec![("url.path", "/catalog")], false)]).await;
    wait_metric(api, HOLD, &[("outcome", "held")], |v| v == 2.0, Duration::from_secs(5)).await;
    wait_metric(api, "tracegate_order_sampling_spans_total", &[("decision", "dropped")], |v| v == 2.0, Duration::from_secs(5)).await;
    // The subject: nothing leaves later either. A fixed time for a stray span to arrive.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.span_count(), 0, "nothing order-less left the gateway");

    // A restart while they are held.
    gateway.shutdown_within(Duration::from_secs(5)).await;
    assert_eq!(sink.span_count(), 0, "shutdown does not let held files go");
    let gateway = Gateway::start(hold_config(&sink, dir.path())).await.unwrap();
    let grpc = format!("http://{}", gateway.grpc_addr().unwrap());
    let api = gateway.api_addr().unwrap();
    assert_eq!(metric(&metrics_text(api).await, HELD_NOW, &[]), 2.0, "the hold is on disk");

    // The order names file F-1: the held save is released, tagged.
    send_spans(
        grpc.clone(),
        "shop-api",
        vec![(
            "POST /orders",
            SpanKind::Server,
            vec![("http.request.method", "POST"), ("http.route", "/orders"), ("order.id", "A-9"), ("constructor.file_id", "F-1")],
            false,
        )],
    )
    .await;
    sink.wait_for(2, Duration::from_secs(10)).await;
    assert!(started.elapsed() < Duration::from_secs(10), "the test ran past the hold's ttl; too slow to tell");
    let spans = sink.spans();
    let names: Vec<&str> = spans.iter().map(|(_, s)| s.name.as_str()).collect();
    assert_eq!(spans.len(), 2, "{names:?}");
    let file = &spans.iter().find(|(_, s)| s.name == "save constructor file").expect("the held file was released").1;
    assert_eq!(span_attr(file, "order.id").as_deref(), Some("A-9"));
    assert_eq!(span_attr(file, "order.stage").as_deref(), Some("file_link"));
    assert_eq!(span_attr(file, "constructor.file_id").as_deref(), Some("F-1"));
    assert_eq!(metric(&metrics_text(api).await, HOLD, &[("outcome", "released")]), 1.0);

    let timeline = wait_timeline(api, "A-9", 2, Duration::from_secs(10)).await;
    let stages: Vec<(&str, &str)> =
        timeline["events"].as_array().unwrap().iter().map(|e| (e["span_name"].as_str().unwrap(), e["stage"].as_str().unwrap())).collect();
    assert_eq!(stages, [("save constructor file", "file_link"), ("POST /orders", "created")]);

    // F-2 is never claimed: dropped at its ttl, counted, never sent.
    wait_metric(api, HOLD, &[("outcome", "expired")], |v| v == 1.0, Duration::from_secs(20)).await;
    assert_eq!(metric(&metrics_text(api).await, HELD_NOW, &[]), 0.0);
    let late = send_spans(
        grpc.clone(),
        "shop-api",
        vec![("POST /orders", SpanKind::Server, vec![("http.request.method", "POST"), ("order.id", "A-10"), ("file.id", "F-2")], false)],
    )
    .await;
    sink.wait_for(3, Duration::from_secs(5)).await;
    // The subject: no fourth span follows. A fixed time for a stray one to arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.span_count(), 3, "only the late order's own span");
    assert!(sink.spans().iter().all(|(_, s)| s.name != "save constructor file F-2"));
    assert_eq!(late.len(), 1);
    gateway.shutdown_within(Duration::from_secs(5)).await;
}
