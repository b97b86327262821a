//! The `elasticsearch` exporter and the Elasticsearch read backend against two independent
//! Elasticsearch-API servers: noida-db (Elasticsearch 8; data stream target) and osmem-server
//! (OpenSearch, strict bulk, no data streams; daily indices). One gateway writes every span to
//! the embedded store and to Elasticsearch and reads from the store; a second one reads from
//! Elasticsearch. Both must answer the read API with exactly the same JSON.
//!
//! Also: an outage (noida stopped under load and started again) after which every accepted span
//! is indexed exactly once, and a run against a real cluster (ignored unless asked for, see
//! docs/development.md).
//!
//! The order scenario is tests/common/orders.rs, which tests/order_timeline.rs runs against the
//! embedded store: here it runs against the Elasticsearch reader.

mod common;
#[path = "common/es_servers.rs"]
mod es_servers;
#[path = "common/orders.rs"]
mod orders;

use std::time::Duration;

use common::{eventually, get_json, metric, metrics_text, send, start_gateway, when};
use es_servers::{EsKind, EsServer};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList};
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{status::StatusCode, ScopeSpans, Span, Status};
use orders::{post, request, span, MS, SEC, T0};
use prost::Message;
use serde_json::json;

/// How long the tests wait for something to be indexed or folded.
const WITHIN: Duration = Duration::from_secs(15);

const WRITER: &str = r#"
receivers:
  otlp: {grpc: {endpoint: "127.0.0.1:0"}, http: {endpoint: "127.0.0.1:0"}}
exporters:
  local: {type: embedded, path: "{data}", retention: 87600h, batch: {max_wait: 5ms}}
  es:
    type: elasticsearch
    endpoints: ["{url}"]
    mapping: {mode: {mode}}
    dead_letter_path: "{data}/dead-letter.jsonl"
    batch: {max_wait: 5ms}
    retry_on_failure: {initial_interval: 100ms, max_interval: 500ms}
api: {endpoint: "127.0.0.1:0"}
query: {backend: local}
service:
  pipelines:
    traces: {receivers: [otlp], exporters: [local, es]}
"#;

fn config(template: &str, url: &str, mode: &str) -> String {
    template.replace("{url}", url).replace("{mode}", mode)
}

/// A trace whose spans use everything OTLP has: typed and nested attributes, events, links,
/// trace state, flags, dropped counts, schema URLs, and a bytes value (which JSON cannot carry,
/// so that document also keeps the span's protobuf). One scope without a name.
fn rich_request() -> ExportTraceServiceRequest {
    use any_value::Value as V;
    let value = |v: V| Some(AnyValue { value: Some(v) });
    let typed = |k: &str, v: V| KeyValue { key: k.into(), value: value(v), ..Default::default() };
    let mut first = span(0x66, 0x01, "MES plan \"step\" ✓", 0, 5 * MS, &[("mes.line", "L2")]);
    first.attributes.extend([
        typed("mes.batch", V::IntValue(-42)),
        typed("mes.load", V::DoubleValue(0.75)),
        typed("mes.whole", V::DoubleValue(3.0)),
        typed("mes.ok", V::BoolValue(true)),
        typed(
            "mes.tags",
            V::ArrayValue(ArrayValue {
                values: vec![value(V::StringValue("a".into())).unwrap(), value(V::StringValue("b".into())).unwrap()],
            }),
        ),
        typed(
            "mes.detail",
            V::KvlistValue(KeyValueList { values: vec![typed("z", V::StringValue("last".into())), typed("a", V::IntValue(1))] }),
        ),
    ]);
    first.trace_state = "mes=1".into();
    first.flags = 0x301;
    first.dropped_attributes_count = 2;
    first.events = vec![Event {
        time_unix_nano: T0 + MS,
        name: "planned".into(),
        attributes: vec![typed("n", V::IntValue(3))],
        dropped_attributes_count: 1,
    }];
    first.links =
        vec![Link { trace_id: vec![0x44; 16], span_id: vec![0x07; 8], trace_state: "x=y".into(), flags: 0x100, ..Default::default() }];
    first.status = Some(Status { code: StatusCode::Ok as i32, message: String::new() });
    let mut second = span(0x66, 0x02, "MES checksum", 2 * MS as i64, MS, &[]);
    second.parent_span_id = vec![0x01; 8];
    second.attributes.push(typed("mes.digest", V::BytesValue(vec![0xde, 0xad, 0xbe, 0xef])));
    let mut request = request("mes-api", vec![first]);
    let rs = &mut request.resource_spans[0];
    rs.schema_url = "https://opentelemetry.io/schemas/1.27.0".into();
    rs.scope_spans[0].schema_url = "https://opentelemetry.io/schemas/1.26.0".into();
    rs.scope_spans.push(ScopeSpans { scope: Some(InstrumentationScope::default()), spans: vec![second], ..Default::default() });
    request
}

/// Polls until both gateways answer `path` alike with 200; returns the answer.
async fn same_answer(es: &EsServer, embedded: std::net::SocketAddr, elastic: std::net::SocketAddr, path: &str) -> serde_json::Value {
    eventually(&format!("both backends answering {path} alike"), WITHIN, || async {
        let (s1, a) = get_json(&format!("http://{embedded}{path}")).await;
        es.json("POST", "/_refresh", None).await;
        let (s2, b) = get_json(&format!("http://{elastic}{path}")).await;
        if s1 == 200 && s2 == 200 && a == b {
            Ok(a)
        } else {
            Err(format!("\nembedded ({s1}):      {a}\nelasticsearch ({s2}): {b}"))
        }
    })
    .await
}

async fn both_backends_answer_alike(kind: EsKind, mode: &str, index: &str) {
    let es = EsServer::start(kind);
    let (writer, dir) = start_gateway(&config(WRITER, &es.url, mode)).await;
    let (reader, _dir2) = start_gateway(&config(es_servers::READER, &es.url, mode)).await;
    let (w, r) = (writer.api_addr().unwrap(), reader.api_addr().unwrap());
    // The files are searchable before the order names one.
    let files_indexed = async {
        eventually("2 files indexed", WITHIN, || async {
            when(es.count(index, json!({"exists": {"field": "order.correlation"}})).await, |&n| n == 2)
        })
        .await;
    };
    orders::send_order_flow(&writer, files_indexed).await;
    post(writer.http_addr().unwrap(), rich_request()).await;

    // The embedded store has everything first.
    eventually("the embedded timeline complete", WITHIN, || async {
        when(get_json(&format!("http://{w}/api/v1/orders/A-1001")).await.1, |b| b["events"].as_array().map(Vec::len) == Some(8))
    })
    .await;
    same_answer(&es, w, r, "/api/v1/orders/A-1001").await;
    same_answer(&es, w, r, "/api/v1/orders/B-2002").await;
    for query in ["", "?status=accepted", "?service=crm-api", "?since=2026-11-20T09:30:00Z", "?until=2026-11-20T09:00:00Z", "?limit=1"] {
        let page = same_answer(&es, w, r, &format!("/api/v1/orders{query}")).await;
        assert!(!page["orders"].as_array().unwrap().is_empty(), "{query}: {page}");
    }
    let all = same_answer(&es, w, r, "/api/v1/orders").await;
    // Paging one order at a time walks the same list on both backends (search_after there).
    let mut cursor = same_answer(&es, w, r, "/api/v1/orders?limit=1").await["next_cursor"].as_str().map(String::from);
    let mut paged = vec![all["orders"][0]["order_id"].clone()];
    while let Some(c) = cursor {
        let page = same_answer(&es, w, r, &format!("/api/v1/orders?limit=1&cursor={c}")).await;
        paged.push(page["orders"][0]["order_id"].clone());
        cursor = page["next_cursor"].as_str().map(String::from);
    }
    let ids: Vec<serde_json::Value> = all["orders"].as_array().unwrap().iter().map(|o| o["order_id"].clone()).collect();
    assert_eq!(paged, ids);
    // The scenario's own checks (timeline, list with span counts and each order's current
    // service and stage, filters, pages, bad parameters) against the Elasticsearch reader.
    orders::check_order_flow(r).await;
    // An id prefix (literal, case-sensitive) and the longest-waiting order, paged alike.
    for (query, expected) in [
        ("?id_prefix=A-", vec!["A-1001"]),
        ("?id_prefix=A-1001", vec!["A-1001"]),
        ("?id_prefix=a-", vec![]),
        ("?id_prefix=A*", vec![]),
        ("?sort=waiting", vec!["A-1001", "B-2002"]),
        ("?sort=waiting&alert=none", vec!["A-1001", "B-2002"]),
        ("?sort=newest&service=mes-api", vec!["B-2002"]),
        ("?sort=waiting&exclude_status=accepted", vec!["A-1001"]),
        ("?sort=waiting&exclude_status=in_production,accepted", vec![]),
    ] {
        let page = same_answer(&es, w, r, &format!("/api/v1/orders{query}")).await;
        let found: Vec<&str> = page["orders"].as_array().unwrap().iter().map(|o| o["order_id"].as_str().unwrap()).collect();
        assert_eq!(found, expected, "{query}");
    }
    let first = same_answer(&es, w, r, "/api/v1/orders?sort=waiting&limit=1").await;
    assert_eq!(first["orders"][0]["order_id"], "A-1001");
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = same_answer(&es, w, r, &format!("/api/v1/orders?sort=waiting&limit=1&cursor={cursor}")).await;
    assert_eq!((second["orders"][0]["order_id"].as_str(), second.get("next_cursor")), (Some("B-2002"), None));
    for trace in ["11", "22", "33", "44", "55"] {
        same_answer(&es, w, r, &format!("/api/v1/traces/{}", trace.repeat(16))).await;
    }
    let rich = same_answer(&es, w, r, &format!("/api/v1/traces/{}", "66".repeat(16))).await;
    let first = &rich["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
    assert_eq!(first["attributes"].as_array().unwrap().len(), 7, "{rich}");
    assert_eq!(rich["resourceSpans"][0]["scopeSpans"].as_array().unwrap().len(), 2, "{rich}");

    // Documents carry the span's protobuf only when JSON cannot say it all (the bytes value).
    let (_, all) = es.json("POST", &format!("/{index}/_search"), Some(json!({"size": 100, "query": {"match_all": {}}}))).await;
    let with_copy: Vec<&str> = all["hits"]["hits"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["_source"].get("otlp").is_some())
        .map(|h| h["_source"]["name"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(with_copy, vec!["MES checksum"]);
    let (status, _) = get_json(&format!("http://{r}/api/v1/orders/Z-404")).await;
    assert_eq!(status, 404);
    let (status, _) = get_json(&format!("http://{r}/api/v1/traces/{}", "99".repeat(16))).await;
    assert_eq!(status, 404);

    // Searchable by order.id, each span once; the orders index has one document per order.
    assert_eq!(es.count(index, json!({"term": {"order.id": "A-1001"}})).await, 8);
    assert_eq!(es.count(index, json!({"term": {"service.name": "crm-api"}})).await, 4);
    assert_eq!(es.count(index, json!({"match_all": {}})).await, 13);
    assert_eq!(es.count("tracegate-orders", json!({"match_all": {}})).await, 2);
    let (_, order) = es.json("GET", "/tracegate-orders/_doc/A-1001", None).await;
    let order = &order["_source"];
    assert_eq!(order["status"], "in_production");
    assert_eq!(order["services"], json!(["crm-api", "shop-api"]));
    assert_eq!(order["status_reached"]["accepted"], "2026-11-20T09:00:42.000000000Z");
    assert_eq!(order["correlations"], json!(["F-77"]));
    assert!(!std::path::Path::new(&dir.path().join("dead-letter.jsonl")).exists(), "nothing refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noida_data_stream_answers_like_the_embedded_store() {
    both_backends_answer_alike(EsKind::Noida, "data_stream", "traces-tracegate-default").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn osmem_daily_indices_answer_like_the_embedded_store() {
    both_backends_answer_alike(EsKind::Osmem, "index", "tracegate-spans-*").await;
}

/// Re-delivering the same spans (a client retry, a second gateway) changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_sent_twice_by_two_gateways_are_indexed_once() {
    let es = EsServer::start(EsKind::Osmem);
    let cfg = config(WRITER, &es.url, "index");
    let (a, _d1) = start_gateway(&cfg).await;
    let (b, _d2) = start_gateway(&cfg).await;
    let spans = |n: u8| {
        request(
            "crm-api",
            (1..=n)
                .map(|i| {
                    span(
                        0x70,
                        i,
                        "PUT /orders/{id}/status",
                        i as i64 * SEC as i64,
                        MS,
                        &[("order.id", "C-7"), ("order.status", if i % 2 == 0 { "accepted" } else { "new" })],
                    )
                })
                .collect(),
        )
    };
    let (ha, hb) = (a.http_addr().unwrap(), b.http_addr().unwrap());
    tokio::join!(post(ha, spans(20)), post(hb, spans(20)), post(ha, spans(10)));
    eventually("20 spans of C-7 indexed", WITHIN, || async {
        when(es.count("tracegate-spans-*", json!({"term": {"order.id": "C-7"}})).await, |&n| n == 20)
    })
    .await;
    // The subject of the test: no duplicate turns up later. A fixed time to let one arrive.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(es.count("tracegate-spans-*", json!({"match_all": {}})).await, 20);
    eventually("order C-7 folded as accepted", WITHIN, || async {
        when(es.json("GET", "/tracegate-orders/_doc/C-7", None).await.1, |o| o["_source"]["status"] == "accepted")
    })
    .await;
    let (_, order) = es.json("GET", "/tracegate-orders/_doc/C-7", None).await;
    assert_eq!(order["_source"]["events"].as_array().unwrap().len(), 20);
    assert_eq!(order["_source"]["last_seen"], "2026-11-20T09:00:20.001000000Z");
}

/// noida is stopped while spans stream in and started again: afterwards every accepted span
/// is indexed exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_under_load_loses_nothing_and_duplicates_nothing() {
    let mut es = EsServer::start(EsKind::Noida);
    let cfg = r#"
receivers:
  otlp: {http: {endpoint: "127.0.0.1:0"}}
exporters:
  es:
    type: elasticsearch
    endpoints: ["{url}"]
    mapping: {mode: index}
    orders: {index: ""}
    item_retries: 1
    timeout: 2s
    batch: {max_wait: 20ms, max_spans: 1000}
    retry_on_failure: {initial_interval: 100ms, max_interval: 400ms, max_elapsed_time: 0s}
api: {endpoint: "127.0.0.1:0"}
service:
  pipelines:
    traces: {receivers: [otlp], exporters: [es]}
"#;
    let (gateway, _dir) = start_gateway(&config(cfg, &es.url, "index")).await;
    let http = gateway.http_addr().unwrap();
    const REQUESTS: u32 = 60;
    const PER_REQUEST: u32 = 200;
    let sender = tokio::spawn(async move {
        for r in 0..REQUESTS {
            // OTLP forbids an all-zero trace id: the bytes after the request number are not zero.
            let mut trace = vec![0x5a_u8; 16];
            trace[..4].copy_from_slice(&r.to_be_bytes());
            let spans = (0..PER_REQUEST)
                .map(|i| Span {
                    trace_id: trace.clone(),
                    span_id: [[0xee; 4], i.to_be_bytes()].concat(),
                    name: "load".into(),
                    start_time_unix_nano: T0 + (r * PER_REQUEST + i) as u64,
                    end_time_unix_nano: T0 + (r * PER_REQUEST + i) as u64 + MS,
                    ..Default::default()
                })
                .collect();
            let body = request("load", spans).encode_to_vec();
            // A refused request was enqueued nowhere: the client sends it again.
            loop {
                let (status, _, _) =
                    send("POST", &format!("http://{http}/v1/traces"), &[("content-type", "application/x-protobuf")], body.clone()).await;
                if status == 200 {
                    break;
                }
                assert_eq!(status, 503);
                // The client's back-off before it sends again.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            // The load's pace: the stream lasts across the outage.
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    });
    // The subject of the test, in real time: let some spans through, then take Elasticsearch
    // away for 1.5 s.
    tokio::time::sleep(Duration::from_millis(400)).await;
    tokio::task::block_in_place(|| es.stop());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    tokio::task::block_in_place(|| es.restart());
    sender.await.unwrap();
    let total = (REQUESTS * PER_REQUEST) as u64;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let n = es.count("tracegate-spans-*", json!({"match_all": {}})).await;
        if n >= total {
            break;
        }
        if std::time::Instant::now() > deadline {
            // What the exporter says about the missing spans (retrying, dead-lettered, failed).
            let text = metrics_text(gateway.api_addr().unwrap()).await;
            let exporter: Vec<&str> = text.lines().filter(|l| l.contains("exporter=\"es\"") && !l.starts_with('#')).collect();
            panic!("waited 30 s for {total} spans indexed; last seen: {n}; the exporter's metrics:\n{}", exporter.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(es.count("tracegate-spans-*", json!({"match_all": {}})).await, total, "every accepted span exactly once");
    let text = metrics_text(gateway.api_addr().unwrap()).await;
    // The outage was felt: documents were sent again, some batches went back to the runner.
    let retried = metric(&text, "tracegate_elasticsearch_documents_retried_total", &[("exporter", "es")]);
    let batch_retries = metric(&text, "tracegate_exporter_retries_total", &[("exporter", "es")]);
    eprintln!("outage: {retried} documents re-sent, {batch_retries} batch retries");
    assert!(retried > 0.0 && batch_retries > 0.0, "no retry seen: {retried} {batch_retries}");
    assert_eq!(metric(&text, "tracegate_elasticsearch_documents_dead_lettered_total", &[("exporter", "es")]), 0.0);
    assert_eq!(metric(&text, "tracegate_exporter_send_failed_spans_total", &[("exporter", "es")]), 0.0);
}

/// Against a real cluster: `ELASTICSEARCH_URL=https://user:pass@host:9200` (or with
/// `ELASTICSEARCH_API_KEY`, `ELASTICSEARCH_CA_FILE`) and `--ignored`, as docs/development.md says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a real cluster: ELASTICSEARCH_URL=... cargo test --test elasticsearch -- --ignored (docs/development.md)"]
async fn a_real_cluster_when_elasticsearch_url_is_set() {
    let url =
        std::env::var("ELASTICSEARCH_URL").expect("ELASTICSEARCH_URL names the real cluster this test runs against (docs/development.md)");
    let mut cfg = format!(
        "receivers:\n  otlp: {{http: {{endpoint: \"127.0.0.1:0\"}}}}\nexporters:\n  es:\n    type: elasticsearch\n    endpoints: [\"{url}\"]\n    dataset: x\n"
    )
    .replace("    dataset: x\n", "    mapping: {dataset: tracegate_test}\n    dead_letter_path: \"{data}/dlq.jsonl\"\n    batch: {max_wait: 5ms}\n");
    if let Ok(key) = std::env::var("ELASTICSEARCH_API_KEY") {
        cfg += &format!("    auth: {{api_key: \"{key}\"}}\n");
    }
    if let Ok(ca) = std::env::var("ELASTICSEARCH_CA_FILE") {
        cfg += &format!("    tls: {{ca_file: \"{ca}\"}}\n");
    }
    cfg += "api: {endpoint: \"127.0.0.1:0\"}\nquery: {backend: es}\nservice:\n  pipelines:\n    traces: {receivers: [otlp], exporters: [es]}\n";
    let (gateway, _dir) = start_gateway(&cfg).await;
    let order = format!("REAL-{}", std::process::id());
    let trace = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos().to_be_bytes().to_vec();
    let mut s = span(0, 1, "POST /orders", 0, MS, &[("order.id", &order), ("order.stage", "created"), ("order.status", "new")]);
    s.trace_id = trace;
    post(gateway.http_addr().unwrap(), request("shop-api", vec![s])).await;
    let api = gateway.api_addr().unwrap();
    eventually(&format!("order {order} readable"), WITHIN, || async {
        when(get_json(&format!("http://{api}/api/v1/orders/{order}")).await.0, |&s| s == 200)
    })
    .await;
    let (_, timeline) = get_json(&format!("http://{api}/api/v1/orders/{order}")).await;
    assert_eq!(timeline["status"], "new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_updating_one_order_at_once_lose_no_event() {
    // Each gateway holds half of the order's spans; both fold them into the same orders document
    // at the same moments. Without conditional writes one would overwrite the other's events.
    let es = EsServer::start(EsKind::Noida);
    let cfg = config(WRITER, &es.url, "index");
    let (a, _d1) = start_gateway(&cfg).await;
    let (b, _d2) = start_gateway(&cfg).await;
    let one = |i: u8| {
        let status = ["new", "accepted", "in_production"][(i as usize - 1) * 3 / 24];
        request(
            "crm-api",
            vec![span(0x71, i, "PUT /orders/{id}/status", i as i64 * SEC as i64, MS, &[("order.id", "D-8"), ("order.status", status)])],
        )
    };
    let (ha, hb) = (a.http_addr().unwrap(), b.http_addr().unwrap());
    for round in 0..12u8 {
        tokio::join!(post(ha, one(2 * round + 1)), post(hb, one(2 * round + 2)));
    }
    eventually("all 24 events in the orders document", WITHIN, || async {
        when(es.json("GET", "/tracegate-orders/_doc/D-8", None).await.1, |o| o["_source"]["events"].as_array().map(Vec::len) == Some(24))
    })
    .await;
    let (_, order) = es.json("GET", "/tracegate-orders/_doc/D-8", None).await;
    let order = &order["_source"];
    assert_eq!(order["status"], "in_production");
    assert_eq!(order["last_seen"], "2026-11-20T09:00:24.001000000Z");
    assert_eq!(order["status_reached"]["accepted"], "2026-11-20T09:00:09.000000000Z");
    assert_eq!(es.count("tracegate-spans-*", json!({"term": {"order.id": "D-8"}})).await, 24);
}
