//! Golden tests for the exact bulk NDJSON, and the orders fold.

use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

use super::config::{TargetConfig, TargetMode};
use super::encoder::{bulk_body, chunk_by_bytes, SpanEncoder};
use super::orders::{order_span, OrderDocument};

fn kv(k: &str, v: V) -> KeyValue {
    KeyValue { key: k.into(), value: Some(AnyValue { value: Some(v) }), ..Default::default() }
}

fn s(v: &str) -> V {
    V::StringValue(v.into())
}

fn sample() -> Vec<ResourceSpans> {
    let t0 = 1_795_165_200_000_000_000u64; // 2026-11-20T09:00:00Z
    let created = Span {
        trace_id: vec![0x11; 16],
        span_id: vec![0x01; 8],
        name: "POST /orders".into(),
        kind: 2,
        start_time_unix_nano: t0,
        end_time_unix_nano: t0 + 12_500_000,
        attributes: vec![
            kv("http.route", s("/orders")),
            kv("http.response.status_code", V::IntValue(201)),
            kv("order.id", s("A-1001")),
            kv("order.stage", s("created")),
            kv("order.status", s("new")),
            kv("sampled", V::BoolValue(true)),
            kv("ratio", V::DoubleValue(0.5)),
            kv("tags", V::ArrayValue(ArrayValue { values: vec![AnyValue { value: Some(s("a")) }] })),
        ],
        events: vec![Event {
            time_unix_nano: t0 + 1_000,
            name: "validated".into(),
            attributes: vec![kv("ok", V::BoolValue(true))],
            dropped_attributes_count: 0,
        }],
        ..Default::default()
    };
    let publish = Span {
        trace_id: vec![0x11; 16],
        span_id: vec![0x02; 8],
        parent_span_id: vec![0x01; 8],
        name: "orders publish".into(),
        kind: 4,
        start_time_unix_nano: t0 + 5_000_000,
        end_time_unix_nano: t0 + 6_000_000,
        attributes: vec![kv("messaging.system", s("rabbitmq")), kv("order.id", s("A-1001")), kv("order.stage", s("bus_publish"))],
        links: vec![Link { trace_id: vec![0x22; 16], span_id: vec![0x03; 8], ..Default::default() }],
        status: Some(Status { code: 2, message: "broker slow".into() }),
        ..Default::default()
    };
    vec![ResourceSpans {
        resource: Some(Resource { attributes: vec![kv("service.name", s("shop-api"))], ..Default::default() }),
        scope_spans: vec![ScopeSpans {
            scope: Some(InstrumentationScope { name: "shop".into(), version: "1.0".into(), ..Default::default() }),
            spans: vec![created, publish],
            schema_url: String::new(),
        }],
        schema_url: String::new(),
    }]
}

fn golden(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/exporters/elasticsearch/testdata").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert_eq!(actual, expected, "bulk body differs from {}", path.display());
}

#[test]
fn bulk_body_for_a_data_stream_is_exact() {
    let encoder = SpanEncoder::new(TargetConfig::default(), vec!["constructor.file_id".into()]);
    let mut items = Vec::new();
    encoder.encode(&sample(), &mut items);
    assert_eq!(items.len(), 2);
    assert_eq!(items[0].id, format!("{}{}", "11".repeat(16), "01".repeat(8)));
    let body = String::from_utf8(bulk_body(&items).to_vec()).unwrap();
    assert!(body.lines().step_by(2).all(|l| l.starts_with(r#"{"create":{"_index":"traces-tracegate-default","_id":""#)), "{body}");
    golden("bulk_data_stream.ndjson", &body);
}

#[test]
fn bulk_body_for_daily_indices_is_exact() {
    let target = TargetConfig { mode: TargetMode::Index, ..Default::default() };
    let encoder = SpanEncoder::new(target, vec![]);
    let mut items = Vec::new();
    encoder.encode(&sample(), &mut items);
    assert_eq!(&*items[0].index, "tracegate-spans-2026.11.20");
    golden("bulk_index.ndjson", &String::from_utf8(bulk_body(&items).to_vec()).unwrap());
}

#[test]
fn chunks_stay_under_the_byte_limit() {
    let sizes = [400, 400, 400, 1500, 10];
    let chunks = chunk_by_bytes(&[0, 1, 2, 3, 4], 1000, |i| sizes[i]);
    assert_eq!(chunks, vec![vec![0, 1], vec![2], vec![3], vec![4]]);
}

#[test]
fn order_document_folds_idempotently_in_any_order() {
    let rs = sample();
    let spans: Vec<_> = rs[0].scope_spans[0].spans.iter().map(|sp| order_span(sp, Some("shop-api".into()), false)).collect();
    let mut forward = OrderDocument { order_id: "A-1001".into(), ..Default::default() };
    assert!(forward.fold(&spans, 10));
    let once = forward.clone();
    assert!(!forward.fold(&spans, 10), "re-delivering spans changed the document");
    assert!(!forward.fold(&spans[1..], 10));
    assert_eq!(forward, once);
    let mut backward = OrderDocument { order_id: "A-1001".into(), ..Default::default() };
    backward.fold(&spans[1..], 10);
    backward.fold(&spans[..1], 10);
    assert_eq!(backward, once);
    assert_eq!(once.status.as_deref(), Some("new"));
    assert_eq!(once.first_seen, "2026-11-20T09:00:00.000000000Z");
    assert_eq!(once.last_seen, "2026-11-20T09:00:00.012500000Z");
    assert_eq!(once.status_reached.get("new").map(String::as_str), Some("2026-11-20T09:00:00.000000000Z"));
    assert_eq!(once.events.len(), 2);
    assert_eq!(once.events[1]["stage"], "bus_publish");
    assert_eq!(once.events[1]["error"], true);
    // The event list is bounded: the earliest are kept.
    let mut bounded = OrderDocument { order_id: "A-1001".into(), ..Default::default() };
    bounded.fold(&spans, 1);
    assert_eq!(bounded.events.len(), 1);
    assert_eq!(bounded.events[0]["stage"], "created");
}

#[test]
fn configuration_errors_name_their_paths() {
    let yaml = r#"
receivers: {otlp: {http: {endpoint: "127.0.0.1:0"}}}
exporters:
  es:
    type: elasticsearch
    endpoints: ["es:9200"]
    auth: {username: elastic, api_key: abc}
    mapping: {dataset: "my-app", index: "Spans"}
    orders: {index: ""}
    max_requests_in_flight: 0
    flush: {bytes: 10}
api: {endpoint: "127.0.0.1:0"}
query: {backend: es}
service: {pipelines: {traces: {receivers: [otlp], exporters: [es]}}}
"#;
    let error = crate::Config::from_yaml(yaml).unwrap_err();
    let paths: Vec<&str> = error.issues.iter().map(|i| i.path.as_str()).collect();
    for want in [
        "exporters.es.endpoints[0]",
        "exporters.es.auth",
        "exporters.es.mapping.dataset",
        "exporters.es.mapping.index",
        "exporters.es.max_requests_in_flight",
        "exporters.es.flush.bytes",
        "query.backend",
    ] {
        assert!(paths.contains(&want), "{want} not reported: {error}");
    }
    // A minimal configuration is valid and may answer the read API.
    let ok = yaml.replace(
        r#"    endpoints: ["es:9200"]
    auth: {username: elastic, api_key: abc}
    mapping: {dataset: "my-app", index: "Spans"}
    orders: {index: ""}
    max_requests_in_flight: 0
    flush: {bytes: 10}
"#,
        "    endpoints: [\"http://es:9200\"]\n    auth: {api_key: \"\"}\n",
    );
    let config = crate::Config::from_yaml(&ok).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.query_backend(), Some("es"));
}
