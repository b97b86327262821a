//! Golden tests for the exact bulk NDJSON, and the orders fold.

use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

use super::config::{TargetConfig, TargetMode};
use super::encoder::{chunk_by_bytes, BulkItem, SpanEncoder};
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

/// The NDJSON body of a bulk request made of these items.
fn bulk_body(items: &[BulkItem]) -> String {
    items.iter().map(|i| std::str::from_utf8(&i.lines).unwrap()).collect()
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
    let body = bulk_body(&items);
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
    golden("bulk_index.ndjson", &bulk_body(&items));
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

/// Encodes, reads each document back as the query backend does, and compares with the input.
fn round_trip(input: &[ResourceSpans]) -> Vec<bool> {
    use super::document::SpanDocument;
    let encoder = SpanEncoder::new(TargetConfig::default(), vec!["constructor.file_id".into()]);
    let mut items = Vec::new();
    encoder.encode(input, &mut items);
    let originals: Vec<(&ResourceSpans, &ScopeSpans, &Span)> =
        input.iter().flat_map(|rs| rs.scope_spans.iter().flat_map(move |ss| ss.spans.iter().map(move |sp| (rs, ss, sp)))).collect();
    assert_eq!(items.len(), originals.len());
    let mut copies = Vec::new();
    for (item, (rs, ss, span)) in items.iter().zip(originals) {
        let text = std::str::from_utf8(item.document()).unwrap();
        // (Servers that parse and re-serialize sources keep key order and number text: Elasticsearch
        // returns the source as sent, the Python emulators use ordered dicts and repr(float); the
        // integration tests read documents back through both.)
        for doc in [text] {
            let stored = serde_json::from_str::<SpanDocument>(doc).unwrap_or_else(|e| panic!("{e}: {doc}")).into_span().unwrap();
            assert_eq!(&stored.span, span, "{doc}");
            let resource = ResourceSpans { resource: rs.resource.clone(), scope_spans: vec![], schema_url: rs.schema_url.clone() };
            assert_eq!(stored.resource, resource, "{doc}");
            let scope = ScopeSpans { scope: ss.scope.clone(), spans: vec![], schema_url: ss.schema_url.clone() };
            assert_eq!(stored.scope, scope, "{doc}");
        }
        copies.push(text.contains(r#""otlp":{"#));
    }
    copies
}

#[test]
fn documents_give_their_spans_back_exactly() {
    // Plain spans need no protobuf copy.
    assert_eq!(round_trip(&sample()), vec![false, false]);

    // Everything a document can say, and nothing it cannot.
    let t0 = 1_795_165_200_123_456_789u64;
    let full = Span {
        trace_id: vec![0xab; 16],
        span_id: vec![0xcd; 8],
        parent_span_id: vec![0xef; 8],
        trace_state: "congo=t61rcWkgMzE".into(),
        flags: 0x301,
        name: "quote \" backslash \\ newline \n ünï 🚀".into(),
        kind: 5,
        start_time_unix_nano: t0,
        end_time_unix_nano: t0,
        attributes: vec![
            kv("int.min", V::IntValue(i64::MIN)),
            kv("int.max", V::IntValue(i64::MAX)),
            kv("double.whole", V::DoubleValue(2.0)),
            kv("double.tiny", V::DoubleValue(-1e-300)),
            kv("empty", s("")),
            KeyValue { key: "no.value".into(), value: Some(AnyValue { value: None }), ..Default::default() },
            kv(
                "nested",
                V::KvlistValue(opentelemetry_proto::tonic::common::v1::KeyValueList {
                    values: vec![kv("z", s("1")), kv("a", V::IntValue(2))],
                }),
            ),
            kv(
                "mixed",
                V::ArrayValue(ArrayValue {
                    values: vec![
                        AnyValue { value: Some(V::IntValue(1)) },
                        AnyValue { value: Some(V::DoubleValue(1.5)) },
                        AnyValue { value: Some(V::ArrayValue(ArrayValue { values: vec![] })) },
                    ],
                }),
            ),
        ],
        dropped_attributes_count: 3,
        events: vec![Event { time_unix_nano: 0, name: String::new(), attributes: vec![], dropped_attributes_count: 7 }],
        dropped_events_count: 1,
        links: vec![Link {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            trace_state: "a=b".into(),
            attributes: vec![kv("link.kind", s("follows"))],
            dropped_attributes_count: 2,
            flags: 0x100,
        }],
        dropped_links_count: 4,
        status: Some(Status { code: 0, message: String::new() }),
    };
    let resource = ResourceSpans {
        resource: Some(Resource {
            attributes: vec![kv("service.name", s("mes-api")), kv("host.cpus", V::IntValue(2))],
            dropped_attributes_count: 1,
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            scope: Some(InstrumentationScope {
                name: "mes".into(),
                version: String::new(),
                attributes: vec![kv("x", V::BoolValue(false))],
                dropped_attributes_count: 9,
            }),
            spans: vec![full.clone()],
            schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
        }],
        schema_url: "https://opentelemetry.io/schemas/1.27.0".into(),
    };
    assert_eq!(round_trip(std::slice::from_ref(&resource)), vec![false]);

    // What JSON cannot carry makes the document keep the protobuf, and reads stay exact.
    let lossy = |f: &dyn Fn(&mut Span)| {
        let mut span = full.clone();
        f(&mut span);
        let mut rs = resource.clone();
        rs.scope_spans[0].spans = vec![span];
        round_trip(&[rs])
    };
    assert_eq!(lossy(&|s| s.attributes.push(kv("bytes", V::BytesValue(vec![0, 255])))), vec![true]);
    assert_eq!(lossy(&|s| s.attributes.push(kv("inf", V::DoubleValue(f64::INFINITY)))), vec![true]);
    assert_eq!(lossy(&|s| s.attributes.push(kv("int.min", V::IntValue(1)))), vec![true]);
    assert_eq!(lossy(&|s| s.attributes.push(KeyValue { key: "absent".into(), value: None, ..Default::default() })), vec![true]);
    assert_eq!(lossy(&|s| s.kind = 9), vec![true]);
    assert_eq!(lossy(&|s| s.status = Some(Status { code: 7, message: "?".into() })), vec![true]);
    assert_eq!(lossy(&|s| s.end_time_unix_nano = s.start_time_unix_nano - 1), vec![true]);
    assert_eq!(lossy(&|s| s.status = None), vec![false]);
    let mut no_resource = resource.clone();
    no_resource.resource = None;
    no_resource.scope_spans[0].scope = None;
    assert_eq!(round_trip(&[no_resource]), vec![true]);
}

#[test]
fn random_spans_come_back_exactly() {
    let mut rng = fastrand::Rng::with_seed(42);
    fn random_value(rng: &mut fastrand::Rng, depth: u32) -> V {
        match rng.u32(0..if depth > 2 { 4 } else { 6 }) {
            0 => V::StringValue(
                (0..rng.usize(0..12)).map(|_| rng.choice(['a', '"', '\\', '\n', 'é', '\u{1}', '😀', '.']).unwrap()).collect(),
            ),
            1 => V::IntValue(rng.i64(..)),
            2 => V::DoubleValue(f64::from_bits(rng.u64(..)) % 1e12),
            3 => V::BoolValue(rng.bool()),
            4 => V::ArrayValue(ArrayValue {
                values: (0..rng.usize(0..4)).map(|_| AnyValue { value: Some(random_value(rng, depth + 1)) }).collect(),
            }),
            _ => V::KvlistValue(opentelemetry_proto::tonic::common::v1::KeyValueList {
                values: (0..rng.usize(0..4)).map(|i| kv(&format!("k{i}"), random_value(rng, depth + 1))).collect(),
            }),
        }
    }
    let mut copies = 0;
    for case in 0..300u64 {
        let spans: Vec<Span> = (0..rng.usize(1..5))
            .map(|i| {
                let start = rng.u64(0..4_000_000_000_000_000_000);
                Span {
                    trace_id: rng.u128(..).to_be_bytes().to_vec(),
                    span_id: (case * 10 + i as u64).to_be_bytes().to_vec(),
                    name: format!("span {case}/{i}"),
                    kind: rng.i32(0..6),
                    start_time_unix_nano: start,
                    end_time_unix_nano: start + rng.u64(0..10_000_000_000),
                    attributes: (0..rng.usize(0..10)).map(|k| kv(&format!("attr.{k}"), random_value(&mut rng, 0))).collect(),
                    status: rng
                        .bool()
                        .then(|| Status { code: rng.i32(0..3), message: if rng.bool() { "m".into() } else { String::new() } }),
                    ..Default::default()
                }
            })
            .collect();
        let rs = ResourceSpans {
            resource: Some(Resource { attributes: vec![kv("service.name", s(&format!("svc-{}", case % 3)))], ..Default::default() }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope { name: "s".into(), ..Default::default() }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        };
        copies += round_trip(&[rs]).into_iter().filter(|c| *c).count();
    }
    // NaN never comes up (finite by construction): no document needed the copy.
    assert_eq!(copies, 0);
}

/// A call wrapped twice, stored as documents and read back: the timeline shows it once.
#[test]
fn a_call_wrapped_twice_is_one_step_in_documents_too() {
    let t0 = 1_795_165_200_000_000_000u64;
    let save = |id: u8, parent: Option<u8>| Span {
        trace_id: vec![0x22; 16],
        span_id: vec![id; 8],
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
        name: "INSERT shopdb.orders".into(),
        kind: 3,
        start_time_unix_nano: t0 + u64::from(id),
        end_time_unix_nano: t0 + 1_000,
        attributes: vec![
            kv("order.id", s("A-1")),
            kv("order.stage", s("db_save")),
            kv("db.system", s("h2")),
            kv("db.statement", s("insert into orders values (?)")),
        ],
        ..Default::default()
    };
    let input = vec![ResourceSpans {
        resource: Some(Resource { attributes: vec![kv("service.name", s("shop-api"))], ..Default::default() }),
        scope_spans: vec![ScopeSpans { spans: vec![save(1, None), save(2, Some(1))], ..Default::default() }],
        ..Default::default()
    }];
    let encoder = SpanEncoder::new(TargetConfig::default(), vec![]);
    let mut items = Vec::new();
    encoder.encode(&input, &mut items);
    let spans: Vec<_> = items
        .iter()
        .map(|i| serde_json::from_slice::<serde_json::Value>(i.document()).unwrap())
        .map(|doc| super::document::document_order_span(&doc, false).unwrap())
        .collect();
    assert_eq!(spans[1].parent_span_id, vec![1; 8]);
    assert!(spans[1].step_key.contains("db.statement=insert into orders values (?)"), "{}", spans[1].step_key);
    let timeline = crate::orders::OrderTimeline::assemble("A-1", spans).unwrap();
    assert_eq!(timeline.events.len(), 1);
    assert_eq!(timeline.events[0].span_id, "0101010101010101");
}
