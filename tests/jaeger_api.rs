//! The Jaeger-compatible query API (`/api/...`, `/api/v3/...`, docs/jaeger.md).
//!
//! - Conformance with a real Jaeger v2: one gateway stores every span (embedded) and exports it
//!   to Jaeger; `tracegate demo` and a request using every OTLP feature go through it; then
//!   tracegate's answers must equal Jaeger's for services, operations, every trace by id, and
//!   searches by service, operation, tags and duration, after the normalisation the documented
//!   differences need (process ids; the service graph, where tracegate adds bus hops).
//! - Roles, masking and audit over the Jaeger API (no Jaeger needed).
//! - The same answers from Elasticsearch (noida-db and osmem-server) as from the embedded store.
//!
//! The conformance test needs `JAEGER_BIN` (set by `scripts/test.sh`); without it it says SKIPPED.

mod common;
#[path = "common/es_servers.rs"]
mod es_servers;
#[path = "common/auth.rs"]
mod fixture;
#[path = "common/jaeger.rs"]
mod jaeger;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use common::{eventually, get_json, send, start_gateway, when};
use es_servers::{EsKind, EsServer};
use jaeger::{jaeger_bin, start_quickstart_gateway, url_encode, Jaeger};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
use opentelemetry_proto::tonic::trace::v1::{status::StatusCode, ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use serde_json::{json, Value};

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}

fn text(s: &str) -> any_value::Value {
    any_value::Value::StringValue(s.into())
}

/// Spans that use what OTLP has: every value type, a status with a message, events (one
/// without a name), links, trace state, dropped counts, scope attributes, a zero-length span,
/// an unspecified kind and a resource without `service.name`. Trace ids 0x5a.., 0x5b.., 0x5c...
fn rich_request(t0: u64) -> ExportTraceServiceRequest {
    use any_value::Value as V;
    let trace = vec![0x5a; 16];
    let root = Span {
        trace_id: trace.clone(),
        span_id: vec![0x01; 8],
        name: "PUT /orders/{id}/status".into(),
        kind: 2,
        start_time_unix_nano: t0,
        end_time_unix_nano: t0 + 42_345_678,
        trace_state: "shop=1".into(),
        attributes: vec![
            kv("order.id", text("R-1")),
            kv("order.status", text("accepted")),
            kv("http.response.status_code", V::IntValue(500)),
            kv("retry.ratio", V::DoubleValue(0.25)),
            kv("cache.hit", V::BoolValue(false)),
            kv("payload", V::BytesValue(vec![0xde, 0xad, 0xbe, 0xef])),
            kv(
                "tags",
                V::ArrayValue(ArrayValue { values: vec![AnyValue { value: Some(text("a")) }, AnyValue { value: Some(V::IntValue(2)) }] }),
            ),
            kv("detail", V::KvlistValue(KeyValueList { values: vec![kv("z", text("last")), kv("a", V::DoubleValue(1.5))] })),
            kv("telemetry.sdk.language", text("java")),
        ],
        dropped_attributes_count: 2,
        dropped_events_count: 1,
        dropped_links_count: 3,
        events: vec![
            Event {
                time_unix_nano: t0 + 1_000_000,
                name: "exception".into(),
                attributes: vec![kv("exception.type", text("Boom"))],
                dropped_attributes_count: 1,
            },
            Event {
                time_unix_nano: t0 + 2_000_000,
                name: String::new(),
                attributes: vec![kv("note", text("unnamed"))],
                dropped_attributes_count: 0,
            },
        ],
        links: vec![Link {
            trace_id: vec![0x5b; 16],
            span_id: vec![0x02; 8],
            trace_state: "l=1".into(),
            attributes: vec![kv("link.kind", text("bus"))],
            ..Default::default()
        }],
        status: Some(Status { code: StatusCode::Error as i32, message: "status store down".into() }),
        ..Default::default()
    };
    let child = Span {
        trace_id: trace.clone(),
        span_id: vec![0x03; 8],
        parent_span_id: vec![0x01; 8],
        name: "UPDATE orders".into(),
        kind: 3,
        start_time_unix_nano: t0 + 5_000_000,
        end_time_unix_nano: t0 + 9_500_500,
        attributes: vec![kv("db.system", text("postgresql")), kv("order.id", text("R-1"))],
        status: Some(Status { code: StatusCode::Ok as i32, message: String::new() }),
        ..Default::default()
    };
    let instant = Span {
        trace_id: trace.clone(),
        span_id: vec![0x04; 8],
        parent_span_id: vec![0x03; 8],
        name: "cache mark".into(),
        start_time_unix_nano: t0 + 6_000_000,
        end_time_unix_nano: t0 + 6_000_000,
        ..Default::default()
    };
    let producer = Span {
        trace_id: vec![0x5b; 16],
        span_id: vec![0x02; 8],
        name: "orders publish".into(),
        kind: 4,
        start_time_unix_nano: t0 - 3_000_000,
        end_time_unix_nano: t0 - 1_000_000,
        attributes: vec![kv("messaging.system", text("rabbitmq"))],
        ..Default::default()
    };
    let anonymous = Span {
        trace_id: vec![0x5c; 16],
        span_id: vec![0x05; 8],
        name: "nameless service".into(),
        kind: 1,
        start_time_unix_nano: t0 + 1_000,
        end_time_unix_nano: t0 + 2_000_000,
        ..Default::default()
    };
    let scope = |name: &str, version: &str| InstrumentationScope {
        name: name.into(),
        version: version.into(),
        attributes: vec![kv("scope.attr", text("x"))],
        dropped_attributes_count: 0,
    };
    ExportTraceServiceRequest {
        resource_spans: vec![
            ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", text("status-api")),
                        kv("host.name", text("node-7")),
                        kv("process.pid", V::IntValue(4242)),
                    ],
                    dropped_attributes_count: 1,
                    entity_refs: vec![],
                }),
                scope_spans: vec![
                    ScopeSpans {
                        scope: Some(scope("io.opentelemetry.spring-webmvc-6.0", "2.10.0-alpha")),
                        spans: vec![root, child],
                        schema_url: String::new(),
                    },
                    ScopeSpans { scope: Some(scope("", "")), spans: vec![instant], schema_url: String::new() },
                ],
                schema_url: String::new(),
            },
            ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", text("status-api")), kv("host.name", text("node-8"))],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans { scope: Some(scope("amqp", "1")), spans: vec![producer], schema_url: String::new() }],
                schema_url: String::new(),
            },
            ResourceSpans {
                resource: Some(Resource { attributes: vec![kv("host.name", text("node-9"))], ..Default::default() }),
                scope_spans: vec![ScopeSpans { scope: None, spans: vec![anonymous], schema_url: String::new() }],
                schema_url: String::new(),
            },
        ],
    }
}

async fn post_otlp(http: &str, request: &ExportTraceServiceRequest, headers: &[(&str, &str)]) -> u16 {
    let mut all = vec![("content-type", "application/x-protobuf")];
    all.extend_from_slice(headers);
    send("POST", &format!("{http}/v1/traces"), &all, request.encode_to_vec()).await.0
}

/// Attributes Jaeger moves from spans to their resource: in its memory storage the move changes
/// the stored trace, so where they show depends on which queries ran before. Compared apart.
const LIBRARY_KEYS: [&str; 5] =
    ["telemetry.sdk.language", "telemetry.sdk.name", "telemetry.sdk.version", "telemetry.distro.name", "telemetry.distro.version"];

/// A trace of `/api/traces` with each span's process written into it (process ids are per
/// answer), spans by id, logs by time (Jaeger's memory storage sorts a stored trace's events by
/// name once a search has read it), library attributes apart.
fn normalize_trace(trace: &Value) -> Value {
    let mut spans: Vec<Value> = trace["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let mut s = s.clone();
            let pid = s["processID"].as_str().unwrap().to_string();
            s["process"] = trace["processes"][&pid].clone();
            s.as_object_mut().unwrap().remove("processID");
            let library = |t: &Value| LIBRARY_KEYS.contains(&t["key"].as_str().unwrap_or(""));
            s["tags"].as_array_mut().unwrap().retain(|t| !library(t));
            s["process"]["tags"].as_array_mut().unwrap().retain(|t| !library(t));
            s["logs"].as_array_mut().unwrap().sort_by_key(|l| (l["timestamp"].as_u64(), l.to_string()));
            s
        })
        .collect();
    spans.sort_by(|a, b| a["spanID"].as_str().cmp(&b["spanID"].as_str()));
    json!({"traceID": trace["traceID"], "spans": spans, "warnings": trace["warnings"]})
}

/// The traces of a `/api/traces` answer, normalised, by trace id.
fn normalize_traces(body: &Value) -> BTreeMap<String, Value> {
    body["data"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|t| (t["traceID"].as_str().unwrap().to_string(), normalize_trace(t)))
        .collect()
}

fn sorted(mut values: Vec<Value>) -> Vec<Value> {
    values.sort_by_key(|v| v.to_string());
    values
}

/// Both answers of one path: Jaeger's and tracegate's.
struct Pair {
    jaeger: String,
    tracegate: String,
}

impl Pair {
    async fn get(&self, path: &str) -> (Value, Value) {
        let (js, jb) = get_json(&format!("{}{path}", self.jaeger)).await;
        let (ts, tb) = get_json(&format!("{}{path}", self.tracegate)).await;
        assert_eq!(ts, js, "{path}: status differs; Jaeger {jb}, tracegate {tb}");
        (jb, tb)
    }

    /// A search: the same traces, equal after normalisation.
    async fn same_traces(&self, path: &str) -> usize {
        let (j, t) = self.get(path).await;
        let (j, t) = (normalize_traces(&j), normalize_traces(&t));
        assert_eq!(j.keys().collect::<Vec<_>>(), t.keys().collect::<Vec<_>>(), "{path}: different traces");
        for (id, jt) in &j {
            assert_eq!(&t[id], jt, "{path}: trace {id} differs\nJaeger:    {jt}\ntracegate: {}", t[id]);
        }
        j.len()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_equal_a_real_jaegers() {
    let Some(bin) = jaeger_bin("jaeger_api::answers_equal_a_real_jaegers") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let jaeger = Jaeger::start(&bin, dir.path());
    let data = dir.path().join("data");
    let gateway = start_quickstart_gateway(&jaeger, &data).await;
    let http = format!("http://{}", gateway.http_addr().unwrap());
    let api = format!("http://{}", gateway.api_addr().unwrap());
    let ui = jaeger.ports.ui_url();

    let t0 = now_ns() - 60_000_000_000;
    assert_eq!(post_otlp(&http, &rich_request(t0), &[]).await, 200);
    // `tracegate demo` waits until Jaeger finds every order.
    let demo = {
        let (http, api, ui) = (http.clone(), api.clone(), ui.clone());
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_tracegate"))
                .args(["demo", "--otlp-http", &http, "--api", &api, "--jaeger-ui", &ui, "--orders", "3", "--timeout", "60s"])
                .output()
                .unwrap()
        })
        .await
        .unwrap()
    };
    assert!(demo.status.success(), "demo failed: {}\nJaeger:\n{}", String::from_utf8_lossy(&demo.stderr), jaeger.logs());
    let demo_out = String::from_utf8_lossy(&demo.stdout).into_owned();
    let orders: Vec<String> =
        demo_out.lines().filter(|l| l.trim_start().starts_with("A-")).map(|l| l.split_whitespace().next().unwrap().to_string()).collect();
    assert_eq!(orders.len(), 3, "{demo_out}");

    let pair = Pair { jaeger: ui.clone(), tracegate: api.clone() };
    // Both have every span: the services agree and every service's span count is equal.
    let window = format!("start={}&end={}", (t0 - 3_600_000_000_000) / 1000, (now_ns() + 3_600_000_000_000) / 1000);
    let services: Vec<String> = eventually("Jaeger and tracegate agreeing on the services", Duration::from_secs(30), || async {
        let (j, t) = (get_json(&format!("{ui}/api/services")).await.1, get_json(&format!("{api}/api/services")).await.1);
        let mut js: Vec<String> = serde_json::from_value(j["data"].clone()).unwrap_or_default();
        js.sort();
        let mut counts = Vec::new();
        for s in &js {
            let path = format!("/api/traces?service={}&{window}&limit=1500", url_encode(s));
            let count = |b: &Value| b["data"].as_array().map(|d| d.iter().map(|t| t["spans"].as_array().unwrap().len()).sum::<usize>());
            counts.push((count(&get_json(&format!("{ui}{path}")).await.1), count(&get_json(&format!("{api}{path}")).await.1)));
        }
        if t["data"] == json!(js) && js.len() >= 5 && counts.iter().all(|(a, b)| a == b) {
            assert_eq!(t["total"], json!(js.len()));
            Ok(js)
        } else {
            Err(format!("Jaeger {j} and tracegate {t} ({counts:?})"))
        }
    })
    .await;
    for expected in ["shop-api", "crm-api", "mes-api", "status-api", "missing-service-name"] {
        assert!(services.contains(&expected.to_string()), "{expected} among {services:?}");
    }

    // Operations, both forms, and by kind.
    for service in &services {
        let s = url_encode(service);
        let (j, t) = pair.get(&format!("/api/services/{s}/operations")).await;
        assert_eq!(sorted(j["data"].as_array().unwrap().clone()), sorted(t["data"].as_array().unwrap().clone()), "{service}");
        assert_eq!(j["total"], t["total"]);
        for kind in ["", "&spanKind=server", "&spanKind=producer", "&spanKind=internal"] {
            let (j, t) = pair.get(&format!("/api/operations?service={s}{kind}")).await;
            assert_eq!(sorted(j["data"].as_array().unwrap().clone()), sorted(t["data"].as_array().unwrap().clone()), "{service} {kind}");
        }
        let (j, t) = pair.get(&format!("/api/v3/operations?service={s}")).await;
        assert_eq!(sorted(j["operations"].as_array().unwrap().clone()), sorted(t["operations"].as_array().unwrap().clone()), "{service}");
    }
    let (j, t) = pair.get("/api/v3/services").await;
    assert_eq!(sorted(j["services"].as_array().unwrap().clone()), sorted(t["services"].as_array().unwrap().clone()));

    // Searches by service find the same traces, and each trace is the same by id.
    let mut all_traces = BTreeSet::new();
    for service in &services {
        let path = format!("/api/traces?service={}&{window}&limit=1500", url_encode(service));
        assert!(pair.same_traces(&path).await > 0, "{service} has traces");
        let (_, t) = pair.get(&path).await;
        all_traces.extend(normalize_traces(&t).into_keys());
    }
    for id in &all_traces {
        let (j, t) = pair.get(&format!("/api/traces/{id}")).await;
        assert_eq!(normalize_traces(&j), normalize_traces(&t), "trace {id}");
        // api_v3: the same OTLP spans (Jaeger adds its warnings as an attribute).
        let (j, t) = pair.get(&format!("/api/v3/traces/{id}")).await;
        assert_eq!(otlp_spans(&j), otlp_spans(&t), "api_v3 trace {id}");
    }
    assert!(all_traces.len() >= 12, "{all_traces:?}");
    let rich = pair.get("/api/traces/5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a").await.1;
    let tags = rich["data"][0]["spans"].as_array().unwrap().iter().flat_map(|s| s["tags"].as_array().unwrap().clone()).collect::<Vec<_>>();
    for tag in [json!({"key": "error", "type": "bool", "value": true}), json!({"key": "payload", "type": "binary", "value": "3q2+7w=="})] {
        assert!(tags.contains(&tag), "{tag} in {tags:?}");
    }

    // Searches by operation, tags, duration and the order of an order, across its traces.
    let mut searches = vec![
        format!("/api/traces?service=shop-api&operation={}&{window}", url_encode("POST /orders")),
        format!("/api/traces?service=status-api&tags={}&{window}", url_encode(r#"{"error":"true"}"#)),
        format!("/api/traces?service=status-api&tags={}&{window}", url_encode(r#"{"host.name":"node-8"}"#)),
        format!(
            "/api/traces?service=status-api&tags={}&{window}",
            url_encode(r#"{"http.response.status_code":"500","retry.ratio":"0.25"}"#)
        ),
        format!("/api/traces?service=status-api&tags={}&{window}", url_encode(r#"{"exception.type":"Boom"}"#)),
        format!("/api/traces?service=status-api&tag=cache.hit:false&{window}"),
        format!("/api/traces?service=status-api&minDuration=40ms&{window}"),
        format!("/api/traces?service=status-api&maxDuration=3ms&{window}"),
        format!("/api/traces?service=status-api&minDuration=1ms&maxDuration=5ms&{window}"),
        format!("/api/traces?service=crm-api&tags={}&{window}", url_encode(r#"{"order.stage":"bus_consume"}"#)),
        format!("/api/traces?service=shop-api&tags={}&{window}", url_encode(r#"{"order.id":"A-0"}"#)),
    ];
    for order in &orders {
        for service in ["shop-api", "crm-api", "mes-api"] {
            searches.push(format!(
                "/api/traces?service={service}&tags={}&{window}&limit=100",
                url_encode(&json!({"order.id": order}).to_string())
            ));
        }
    }
    let mut found = Vec::new();
    for path in &searches {
        found.push(pair.same_traces(path).await);
    }
    assert!(found.iter().filter(|n| **n > 0).count() >= searches.len() - 1, "{found:?}");
    assert_eq!(found[10], 0, "an unknown order finds nothing");
    // The shop's searches for an order find its trace and the constructor upload's.
    assert_eq!(found[11], 2, "{searches:?} {found:?}");

    // Limit: both return that many.
    let (j, t) = pair.get(&format!("/api/traces?service=shop-api&{window}&limit=2")).await;
    assert_eq!((j["data"].as_array().unwrap().len(), t["data"].as_array().unwrap().len()), (2, 2));

    // Errors: the same status and message.
    for path in [
        "/api/traces",
        "/api/traces?service=a&tags=notjson",
        "/api/traces?service=a&limit=abc",
        "/api/operations",
        "/api/traces/zz",
        "/api/traces/0102030405060708090a0b0c0d0e0f11",
    ] {
        let (j, t) = pair.get(path).await;
        assert_eq!(j["errors"][0]["code"], t["errors"][0]["code"], "{path}: {j} {t}");
        assert_eq!(t["data"], Value::Null, "{path}");
        let (jm, tm) = (j["errors"][0]["msg"].as_str().unwrap(), t["errors"][0]["msg"].as_str().unwrap());
        match path {
            // Go's and Rust's JSON parsers word their errors differently; the trace id check too.
            "/api/traces?service=a&tags=notjson" => {
                let prefix = "malformed 'tags' parameter, cannot unmarshal JSON: ";
                assert!(jm.starts_with(prefix) && tm.starts_with(prefix), "{jm} / {tm}");
            }
            "/api/traces/zz" => {}
            _ => assert_eq!(jm, tm, "{path}"),
        }
    }

    // api_v3 search: the same traces.
    let rfc = |ns: u64| humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_nanos(ns)).to_string();
    let v3 = format!(
        "/api/v3/traces?query.service_name=shop-api&query.start_time_min={}&query.start_time_max={}&query.num_traces=100",
        rfc(t0 - 3_600_000_000_000),
        rfc(now_ns() + 3_600_000_000_000)
    );
    let (j, t) = pair.get(&v3).await;
    assert_eq!(otlp_spans(&j), otlp_spans(&t));

    // The service graph: every call Jaeger counts, and the bus hops between traces too.
    let graph = format!("/api/dependencies?endTs={}&lookback=7200000", now_ns() / 1_000_000 + 60_000);
    let (j, t) = pair.get(&graph).await;
    let edges = |b: &Value| -> BTreeMap<(String, String), u64> {
        b["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| ((e["parent"].as_str().unwrap().into(), e["child"].as_str().unwrap().into()), e["callCount"].as_u64().unwrap()))
            .collect()
    };
    let (je, te) = (edges(&j), edges(&t));
    for (pair_, calls) in &je {
        assert!(te.get(pair_).is_some_and(|c| c >= calls), "{pair_:?}: Jaeger {calls}, tracegate {:?}", te.get(pair_));
    }
    assert!(te.contains_key(&("shop-api".to_string(), "crm-api".to_string())), "the bus hop shop -> crm: {te:?}");
    assert!(!je.contains_key(&("shop-api".to_string(), "crm-api".to_string())), "Jaeger has no bus hops: {je:?}");

    let report = gateway.shutdown_within(Duration::from_secs(10)).await;
    assert_eq!(report.undelivered_spans, 0);
}

/// The spans of an api_v3 answer as OTLP, by trace and span id, with their resource and scope,
/// attributes in key order, without Jaeger's `@jaeger@warnings`.
fn otlp_spans(body: &Value) -> BTreeMap<(String, String), Value> {
    let mut out = BTreeMap::new();
    // Nested maps in key order too: tracegate answers every attribute list in key order.
    fn nested_sorted(v: &mut Value) {
        match v {
            Value::Object(map) => {
                if let Some(Value::Array(values)) = map.get_mut("kvlistValue").and_then(|l| l.get_mut("values")) {
                    values.sort_by(|x, y| x["key"].as_str().cmp(&y["key"].as_str()));
                }
                map.values_mut().for_each(nested_sorted);
            }
            Value::Array(items) => items.iter_mut().for_each(nested_sorted),
            _ => {}
        }
    }
    let key_sorted = |v: &Value| {
        let mut a = v.as_array().cloned().unwrap_or_default();
        a.retain(|kv| kv["key"] != "@jaeger@warnings" && !LIBRARY_KEYS.contains(&kv["key"].as_str().unwrap_or("")));
        a.sort_by(|x, y| x["key"].as_str().cmp(&y["key"].as_str()));
        let mut a = Value::Array(a);
        nested_sorted(&mut a);
        a
    };
    for rs in body["result"]["resourceSpans"].as_array().unwrap_or(&Vec::new()) {
        let resource = key_sorted(&rs["resource"]["attributes"]);
        for ss in rs["scopeSpans"].as_array().unwrap_or(&Vec::new()) {
            let scope = json!([ss["scope"]["name"], ss["scope"]["version"]]);
            for span in ss["spans"].as_array().unwrap_or(&Vec::new()) {
                let mut span = span.clone();
                span["attributes"] = key_sorted(&span["attributes"]);
                if span["attributes"] == json!([]) {
                    span.as_object_mut().unwrap().remove("attributes");
                }
                // Jaeger stores a span that does not end after it starts with an end 1 ns later.
                let ns = |k: &str| span[k].as_str().and_then(|t| t.parse::<u64>().ok()).unwrap_or(0);
                if ns("endTimeUnixNano") <= ns("startTimeUnixNano") {
                    span["endTimeUnixNano"] = json!((ns("startTimeUnixNano") + 1).to_string());
                }
                let mut events = span["events"].as_array().cloned().unwrap_or_default();
                events.sort_by_key(|e| e.to_string());
                span["events"] = Value::Array(events);
                let id = (span["traceId"].as_str().unwrap_or("").to_lowercase(), span["spanId"].as_str().unwrap_or("").to_lowercase());
                out.insert(id, json!({"resource": resource, "scope": scope, "span": span}));
            }
        }
    }
    out
}

/// The Jaeger API behind the door: 401 without a token, 403 for a service, personal data masked
/// for support (in traces and in tag searches, which never confirm a clear value), every read
/// audited with its action.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_masking_and_audit() {
    use fixture::*;
    let yaml = fixture::secured_config()
        .replace("  leeway: 5s\n", "  leeway: 5s\n  personal_data: {pseudonym_key: \"pseudonym-key-0123456789abcdefghijkl\"}\n");
    let (gateway, dir) = start_gateway(&yaml).await;
    let api = gateway.api_addr().unwrap();
    let idp = Idp::Keycloak;
    let tokens = mint(&[
        spec(idp, service_claims(idp, "status-api")),
        spec(idp, claims(idp, "sam", &["support"])),
        spec(idp, claims(idp, "ada", &["admin"])),
    ]);
    let (service, sam, ada) = (&tokens[0], &tokens[1], &tokens[2]);

    let t0 = now_ns() - 10_000_000_000;
    let mut request = rich_request(t0);
    request.resource_spans.truncate(2);
    request.resource_spans[0].scope_spans[0].spans[0].attributes.push(kv("enduser.id", text("u-4711-clear")));
    let http = format!("http://{}", gateway.http_addr().unwrap());
    let auth = format!("Bearer {service}");
    assert_eq!(post_otlp(&http, &request, &[("authorization", &auth)]).await, 200);

    let get = |path: String, token: Option<String>| async move {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth.as_deref().map(|a| vec![("authorization", a)]).unwrap_or_default();
        let (status, _, body) = send("GET", &format!("http://{api}{path}"), &headers, vec![]).await;
        (status, serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null))
    };
    let trace_path = format!("/api/traces/{}", "5a".repeat(16));
    let (_, trace) = eventually("the trace readable by support", Duration::from_secs(5), || async {
        when(get(trace_path.clone(), Some(sam.clone())).await, |(status, _)| *status == 200)
    })
    .await;
    assert_eq!(trace["data"][0]["traceID"], "5a".repeat(16), "{trace}");
    let shown = trace.to_string();
    assert!(!shown.contains("u-4711-clear"), "support sees the clear user id: {shown}");
    let pseudonym = trace["data"][0]["spans"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s["tags"].as_array().unwrap())
        .find(|t| t["key"] == "enduser.id")
        .map(|t| t["value"].as_str().unwrap().to_string())
        .expect("enduser.id shown masked");
    assert!(pseudonym.starts_with("pseud:"), "{pseudonym}");

    for path in [
        "/api/services",
        "/api/operations?service=status-api",
        &trace_path,
        "/api/traces?service=status-api",
        "/api/dependencies",
        "/api/v3/services",
        "/api/v3/traces/5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a",
    ] {
        assert_eq!(get(path.to_string(), None).await.0, 401, "{path} without a token");
        assert_eq!(get(path.to_string(), Some(service.clone())).await.0, 403, "{path} for a service");
        assert_eq!(get(path.to_string(), Some(sam.clone())).await.0, 200, "{path} for support");
        assert_eq!(get(path.to_string(), Some(ada.clone())).await.0, 200, "{path} for an admin");
    }
    let (_, v3) = get("/api/v3/traces/5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a".into(), Some(ada.clone())).await;
    assert!(!v3.to_string().contains("u-4711-clear") && v3.to_string().contains(&pseudonym), "api_v3 masks too: {v3}");

    // A tag search never confirms a clear personal value; the pseudonym finds the trace.
    let search =
        |value: &str| format!("/api/traces?service=status-api&tags={}&lookback=1h", url_encode(&json!({"enduser.id": value}).to_string()));
    let (status, by_clear) = get(search("u-4711-clear"), Some(sam.clone())).await;
    assert_eq!((status, by_clear["data"].as_array().map(Vec::len)), (200, Some(0)), "{by_clear}");
    let (_, by_pseudonym) = get(search(&pseudonym), Some(sam.clone())).await;
    assert_eq!(by_pseudonym["data"][0]["traceID"], "5a".repeat(16), "{by_pseudonym}");
    let (_, by_order) = get("/api/traces?service=status-api&tag=order.id:R-1".to_string(), Some(sam.clone())).await;
    assert_eq!(by_order["data"].as_array().unwrap().len(), 1, "{by_order}");

    // Every read is in the audit log with its action and actor; the search's tags are not.
    let _ = gateway.shutdown_within(Duration::from_secs(10)).await;
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    let records: Vec<Value> = audit.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let find = |action: &str, outcome: &str| {
        records
            .iter()
            .filter(|r| r.to_string().contains(&format!("\"{action}\"")) && r.to_string().contains(&format!("\"{outcome}\"")))
            .count()
    };
    for action in ["jaeger.services", "jaeger.operations", "jaeger.trace.read", "jaeger.traces.search", "jaeger.dependencies"] {
        assert!(find(action, "allowed") >= 2, "{action} allowed: {audit}");
        assert!(find(action, "forbidden") >= 1, "{action} forbidden: {audit}");
    }
    assert!(audit.contains("sam") && audit.contains("ada"), "actors named");
    assert!(!audit.contains("u-4711-clear") && !audit.contains(&pseudonym), "no tag values in the audit log");
}

const ES_WRITER: &str = r#"
receivers:
  otlp: {http: {endpoint: "127.0.0.1:0"}}
exporters:
  local: {type: embedded, path: "{data}", retention: 87600h, batch: {max_wait: 5ms}}
  es: {type: elasticsearch, endpoints: ["{url}"], mapping: {mode: {mode}}, batch: {max_wait: 5ms}}
api: {endpoint: "127.0.0.1:0"}
query: {backend: local}
service:
  pipelines:
    traces: {receivers: [otlp], exporters: [local, es]}
"#;

/// The embedded store and Elasticsearch give the same Jaeger answers for the same spans.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticsearch_answers_like_the_embedded_store() {
    for (kind, mode) in [(EsKind::Noida, "data_stream"), (EsKind::Osmem, "index")] {
        let es = EsServer::start(kind);
        let (writer, _w) = start_gateway(&ES_WRITER.replace("{url}", &es.url).replace("{mode}", mode)).await;
        let (reader, _r) = start_gateway(&es_servers::READER.replace("{url}", &es.url).replace("{mode}", mode)).await;
        let t0 = now_ns() - 30_000_000_000;
        let http = format!("http://{}", writer.http_addr().unwrap());
        // noida-db refuses a list of mixed types (`["a", 2]`) where Elasticsearch would coerce it;
        // that span would go to the dead-letter file, so this test sends a list of one type.
        let mut request = rich_request(t0);
        let root = &mut request.resource_spans[0].scope_spans[0].spans[0];
        root.attributes.retain(|kv| kv.key != "tags");
        root.attributes.push(kv(
            "tags",
            any_value::Value::ArrayValue(ArrayValue {
                values: vec![AnyValue { value: Some(text("a")) }, AnyValue { value: Some(text("b")) }],
            }),
        ));
        assert_eq!(post_otlp(&http, &request, &[]).await, 200);
        let embedded: SocketAddr = writer.api_addr().unwrap();
        let elastic: SocketAddr = reader.api_addr().unwrap();
        let pair = Pair { jaeger: format!("http://{embedded}"), tracegate: format!("http://{elastic}") };
        // Wait until Elasticsearch has all five spans.
        let window = format!("start={}&end={}", (t0 - 3_600_000_000_000) / 1000, (now_ns() + 3_600_000_000_000) / 1000);
        eventually(&format!("{kind:?}: 4 status-api spans in Elasticsearch"), Duration::from_secs(30), || async {
            let (_, body) = get_json(&format!("http://{elastic}/api/traces?service=status-api&{window}")).await;
            let spans: usize = body["data"].as_array().map(|d| d.iter().map(|t| t["spans"].as_array().unwrap().len()).sum()).unwrap_or(0);
            if spans == 4 {
                Ok(())
            } else {
                Err(format!("{spans} spans: {body}"))
            }
        })
        .await;
        let (e, s) = pair.get("/api/services").await;
        assert_eq!(e, s, "{kind:?}");
        assert_eq!(e["data"], json!(["missing-service-name", "status-api"]));
        for path in [
            "/api/services/status-api/operations",
            "/api/operations?service=status-api",
            "/api/operations?service=status-api&spanKind=client",
            "/api/v3/operations?service=status-api",
        ] {
            let (e, s) = pair.get(path).await;
            assert_eq!(e, s, "{kind:?} {path}");
        }
        for path in [
            format!("/api/traces?service=status-api&{window}"),
            format!("/api/traces?service=status-api&operation=UPDATE%20orders&{window}"),
            format!("/api/traces?service=status-api&tags={}&{window}", url_encode(r#"{"order.id":"R-1"}"#)),
            format!("/api/traces?service=status-api&tags={}&{window}", url_encode(r#"{"host.name":"node-8"}"#)),
            format!("/api/traces?service=status-api&tag=error:true&{window}"),
            format!("/api/traces?service=status-api&minDuration=40ms&{window}"),
            format!("/api/traces?service=missing-service-name&{window}"),
            "/api/traces/5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a".to_string(),
        ] {
            assert!(pair.same_traces(&path).await > 0, "{kind:?} {path}");
        }
        let graph = format!("/api/dependencies?endTs={}&lookback=7200000", now_ns() / 1_000_000 + 60_000);
        let (e, s) = pair.get(&graph).await;
        assert_eq!(e, s, "{kind:?}");
        assert_eq!(
            e["data"],
            json!([
                {"parent": "status-api", "child": "status-api", "callCount": 3}
            ]),
            "two calls and the link to the producer"
        );
        let _ = writer.shutdown_within(Duration::from_secs(10)).await;
        let _ = reader.shutdown_within(Duration::from_secs(10)).await;
    }
}
