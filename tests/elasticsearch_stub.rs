//! The `elasticsearch` exporter against a scripted Elasticsearch (an axum server in the test) for
//! what the emulators cannot do on demand: per-item 429 / 400 / 409 / 503 mixes, a whole-request
//! 429 with Retry-After, 413, 503, 401, and a data stream refusing an `index` operation.

mod common;

use std::collections::VecDeque;
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use axum::Router;
use common::{metric, metrics_text, send, start_gateway};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use serde_json::{json, Value};

/// What the stub answers to one bulk request, given its item count.
#[derive(Clone)]
enum Script {
    /// One status per item (201 created, 409, 429, 400, 503 ...).
    Items(Vec<u16>),
    /// Every item created.
    AllCreated,
    /// The whole request fails with this status (and `Retry-After` if given).
    Whole(u16, Option<&'static str>),
}

#[derive(Default)]
struct Stub {
    script: Mutex<VecDeque<Script>>,
    /// Per bulk request: when it came, its action lines and document ids.
    requests: Mutex<Vec<(Instant, Vec<Value>)>>,
}

async fn bulk(State(stub): State<Arc<Stub>>, headers: HeaderMap, body: Bytes) -> Response {
    let text = if headers.get("content-encoding").is_some_and(|v| v == "gzip") {
        let mut out = String::new();
        flate2::read::GzDecoder::new(body.as_ref()).read_to_string(&mut out).expect("gzip body");
        out
    } else {
        String::from_utf8(body.to_vec()).unwrap()
    };
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).expect("NDJSON line")).collect();
    let actions: Vec<Value> = lines.iter().step_by(2).cloned().collect();
    stub.requests.lock().unwrap().push((Instant::now(), actions.clone()));
    let script = stub.script.lock().unwrap().pop_front().unwrap_or(Script::AllCreated);
    let statuses = match script {
        Script::Whole(status, retry_after) => {
            let mut r = (StatusCode::from_u16(status).unwrap(), json!({"error": {"type": "scripted"}, "status": status}).to_string())
                .into_response();
            if let Some(after) = retry_after {
                r.headers_mut().insert("retry-after", after.parse().unwrap());
            }
            return r;
        }
        Script::AllCreated => vec![201; actions.len()],
        Script::Items(s) => s,
    };
    let items: Vec<Value> = actions
        .iter()
        .zip(statuses)
        .map(|(action, status)| {
            let (op, meta) = action.as_object().unwrap().iter().next().unwrap();
            let mut item = json!({"_index": meta["_index"], "_id": meta["_id"], "status": status});
            // A data stream refuses anything but `create`.
            let status = if op != "create" { 400 } else { status };
            item["status"] = json!(status);
            match status {
                200..=299 => item["result"] = json!("created"),
                409 => item["error"] = json!({"type": "version_conflict_engine_exception", "reason": "document already exists"}),
                429 => item["error"] = json!({"type": "es_rejected_execution_exception", "reason": "rejected execution"}),
                400 if op != "create" => {
                    item["error"] = json!({"type": "illegal_argument_exception", "reason": "only write ops with an op_type of create are allowed in data streams"})
                }
                400 => item["error"] = json!({"type": "document_parsing_exception", "reason": "failed to parse field [duration]"}),
                _ => item["error"] = json!({"type": "unavailable_shards_exception", "reason": "primary shard is not active"}),
            }
            json!({op.clone(): item})
        })
        .collect();
    let errors = items.iter().any(|i| i.as_object().unwrap().values().next().unwrap()["status"].as_u64().unwrap() >= 300);
    axum::Json(json!({"took": 1, "errors": errors, "items": items})).into_response()
}

fn stub_app(script: Vec<Script>) -> (Router, Arc<Stub>) {
    let stub = Arc::new(Stub { script: Mutex::new(script.into()), ..Default::default() });
    let app = Router::new()
        .route("/_bulk", post(bulk))
        .route("/{*path}", put(|| async { axum::Json(json!({"acknowledged": true})) }))
        .with_state(stub.clone());
    (app, stub)
}

async fn start_stub(script: Vec<Script>) -> (String, Arc<Stub>) {
    let (app, stub) = stub_app(script);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, stub)
}

/// The stub over HTTPS with a certificate for 127.0.0.1 from a private CA; returns its URL, the
/// stub, the CA's PEM and a count of failed TLS handshakes.
async fn start_tls_stub(script: Vec<Script>) -> (String, Arc<Stub>, String, Arc<AtomicUsize>) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap()).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().signed_by(&key, &ca).unwrap();
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into())
        .unwrap();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let (app, stub) = stub_app(script);
    let failures = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let counted = failures.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let (acceptor, app, failures) = (acceptor.clone(), app.clone(), counted.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else {
                    failures.fetch_add(1, Ordering::SeqCst);
                    return;
                };
                let service = hyper_util::service::TowerToHyperService::new(app);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
            });
        }
    });
    (url, stub, ca.pem(), failures)
}

const CONFIG: &str = r#"
receivers:
  otlp: {http: {endpoint: "127.0.0.1:0"}}
exporters:
  es:
    type: elasticsearch
    endpoints: ["{url}"]
    orders: {index: ""}
    templates: {install: false}
    dead_letter_path: "{data}/dead-letter.jsonl"
    item_retries: 3
    flush: {bytes: 64KiB}
    batch: {max_wait: 5ms}
    retry_on_failure: {initial_interval: 50ms, max_interval: 200ms}
api: {endpoint: "127.0.0.1:0"}
service:
  pipelines:
    traces: {receivers: [otlp], exporters: [es]}
"#;

fn request(spans: u8) -> ExportTraceServiceRequest {
    let kv = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }),
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: vec![kv("service.name", "shop-api")], ..Default::default() }),
            scope_spans: vec![ScopeSpans {
                spans: (1..=spans)
                    .map(|i| Span {
                        trace_id: vec![0xab; 16],
                        span_id: vec![i; 8],
                        name: format!("span {i}"),
                        start_time_unix_nano: 1_795_165_200_000_000_000 + i as u64,
                        end_time_unix_nano: 1_795_165_200_000_000_000 + 1000 + i as u64,
                        attributes: vec![kv("order.id", "A-1")],
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

struct Running {
    gateway: tracegate::Gateway,
    dir: tempfile::TempDir,
}

fn id(i: u8) -> String {
    format!("{}{}", "ab".repeat(16), hex::encode([i; 8]))
}

fn ids(actions: &[Value]) -> Vec<String> {
    actions.iter().map(|a| a["create"]["_id"].as_str().expect("a create action").to_string()).collect()
}

async fn run(script: Vec<Script>, spans: u8, requests: usize) -> (Arc<Stub>, Running) {
    let (url, stub) = start_stub(script).await;
    let (gateway, dir) = start_gateway(&CONFIG.replace("{url}", &url)).await;
    let http = gateway.http_addr().unwrap();
    let (status, _, _) =
        send("POST", &format!("http://{http}/v1/traces"), &[("content-type", "application/x-protobuf")], request(spans).encode_to_vec())
            .await;
    assert_eq!(status, 200);
    common::eventually(&format!("{requests} bulk requests at the stub"), Duration::from_secs(20), || async {
        common::when(stub.requests.lock().unwrap().len(), |&n| n >= requests)
    })
    .await;
    (stub, Running { gateway, dir })
}

fn dead_letters(g: &Running) -> Vec<Value> {
    match std::fs::read_to_string(g.dir.path().join("dead-letter.jsonl")) {
        Ok(text) => text.lines().map(|l| serde_json::from_str(l).unwrap()).collect(),
        Err(_) => Vec::new(),
    }
}

async fn wait_metric(g: &Running, name: &str, want: f64) {
    common::wait_metric(g.gateway.api_addr().unwrap(), name, &[("exporter", "es")], |v| v == want, Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_item_results_retry_only_what_needs_it_and_dead_letter_the_rest() {
    let (stub, g) = run(vec![Script::Items(vec![201, 409, 429, 400, 503])], 5, 2).await;
    wait_metric(&g, "tracegate_elasticsearch_documents_indexed_total", 4.0).await;
    let requests = stub.requests.lock().unwrap().clone();
    assert_eq!(ids(&requests[0].1), (1..=5).map(id).collect::<Vec<_>>());
    // Only the 429 and the 503 item are sent again; the 409 counts as delivered.
    assert_eq!(ids(&requests[1].1), vec![id(3), id(5)]);
    assert_eq!(requests.len(), 2);
    let dead = dead_letters(&g);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["id"], id(4));
    assert_eq!(dead[0]["status"], 400);
    assert_eq!(dead[0]["error"]["type"], "document_parsing_exception");
    assert_eq!(dead[0]["document"]["span_id"], hex::encode([4u8; 8]));
    assert_eq!(dead[0]["document"]["order.id"], "A-1");
    let text = metrics_text(g.gateway.api_addr().unwrap()).await;
    assert_eq!(metric(&text, "tracegate_elasticsearch_documents_dead_lettered_total", &[("exporter", "es")]), 1.0);
    assert_eq!(metric(&text, "tracegate_elasticsearch_documents_retried_total", &[("exporter", "es")]), 2.0);
    assert!(metric(&text, "tracegate_elasticsearch_bulk_bytes_sent_total", &[("exporter", "es")]) > 0.0);
    assert_eq!(metric(&text, "tracegate_exporter_sent_spans_total", &[("exporter", "es")]), 4.0);
    assert_eq!(metric(&text, "tracegate_exporter_rejected_by_peer_spans_total", &[("exporter", "es")]), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_request_waits_for_retry_after_then_sends_the_same_documents() {
    let (stub, g) = run(vec![Script::Whole(429, Some("1"))], 3, 2).await;
    wait_metric(&g, "tracegate_elasticsearch_documents_indexed_total", 3.0).await;
    let requests = stub.requests.lock().unwrap().clone();
    assert_eq!(ids(&requests[0].1), ids(&requests[1].1));
    let waited = requests[1].0 - requests[0].0;
    assert!(waited >= Duration::from_millis(950), "retried after {waited:?}, Retry-After said 1s");
    assert!(dead_letters(&g).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_too_large_is_split_in_halves() {
    let (stub, g) = run(vec![Script::Whole(413, None)], 4, 3).await;
    wait_metric(&g, "tracegate_elasticsearch_documents_indexed_total", 4.0).await;
    let requests = stub.requests.lock().unwrap().clone();
    let sizes: Vec<usize> = requests.iter().map(|r| r.1.len()).collect();
    assert_eq!(sizes, vec![4, 2, 2]);
    let mut resent: Vec<String> = requests[1..].iter().flat_map(|r| ids(&r.1)).collect();
    resent.sort();
    assert_eq!(resent, (1..=4).map(id).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_cluster_is_retried() {
    let (stub, g) = run(vec![Script::Whole(503, None), Script::Whole(502, None)], 2, 3).await;
    wait_metric(&g, "tracegate_elasticsearch_documents_indexed_total", 2.0).await;
    assert_eq!(stub.requests.lock().unwrap().len(), 3);
    assert!(dead_letters(&g).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_stop_and_dead_letter_the_batch() {
    let (stub, g) = run(vec![Script::Whole(401, None)], 3, 1).await;
    wait_metric(&g, "tracegate_elasticsearch_documents_dead_lettered_total", 3.0).await;
    // The subject: no retry follows. A fixed time for a stray one.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stub.requests.lock().unwrap().len(), 1, "a 401 is not retried");
    let dead = dead_letters(&g);
    assert_eq!(dead.len(), 3);
    assert!(dead.iter().all(|d| d["status"] == 401 && d["error"]["type"] == "unauthorized"));
    let text = metrics_text(g.gateway.api_addr().unwrap()).await;
    assert_eq!(metric(&text, "tracegate_exporter_send_failed_spans_total", &[("exporter", "es")]), 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_stream_gets_only_create_operations() {
    // The stub refuses anything but `create`, as a data stream does; every document arrives.
    let (stub, g) = run(vec![], 5, 1).await;
    wait_metric(&g, "tracegate_elasticsearch_documents_indexed_total", 5.0).await;
    let requests = stub.requests.lock().unwrap().clone();
    let actions: Vec<&Value> = requests.iter().flat_map(|r| &r.1).collect();
    assert_eq!(actions.len(), 5);
    for action in actions {
        let (op, meta) = action.as_object().unwrap().iter().next().unwrap();
        assert_eq!(op, "create", "{action}");
        assert_eq!(meta["_index"], "traces-tracegate-default", "{action}");
    }
    assert!(dead_letters(&g).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_custom_ca() {
    let (url, stub, ca, failures) = start_tls_stub(vec![]).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let post = |gateway: &tracegate::Gateway| {
        let http = gateway.http_addr().unwrap();
        async move {
            let (status, _, _) = send(
                "POST",
                &format!("http://{http}/v1/traces"),
                &[("content-type", "application/x-protobuf")],
                request(4).encode_to_vec(),
            )
            .await;
            assert_eq!(status, 200);
        }
    };

    // Trusting the CA: delivered over HTTPS.
    let trusted = CONFIG
        .replace("{url}", &url)
        .replace("    item_retries: 3\n", &format!("    item_retries: 3\n    tls: {{ca_file: \"{}\"}}\n", ca_file.display()));
    let (gateway, gdir) = start_gateway(&trusted).await;
    post(&gateway).await;
    let g = Running { gateway, dir: gdir };
    wait_metric(&g, "tracegate_elasticsearch_documents_indexed_total", 4.0).await;
    assert_eq!(stub.requests.lock().unwrap().len(), 1);
    assert_eq!(failures.load(Ordering::SeqCst), 0);
    g.gateway.shutdown_within(Duration::from_secs(2)).await;

    // Without it the server's certificate is not trusted: handshakes fail, nothing is sent.
    let (gateway, gdir) = start_gateway(&CONFIG.replace("{url}", &url)).await;
    post(&gateway).await;
    common::eventually("a refused TLS handshake", Duration::from_secs(10), || async {
        common::when(failures.load(Ordering::SeqCst), |&n| n > 0)
    })
    .await;
    // The subject: nothing gets through later either. A fixed time for a stray request.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stub.requests.lock().unwrap().len(), 1, "no bulk request got through without the CA");
    let text = metrics_text(gateway.api_addr().unwrap()).await;
    assert_eq!(metric(&text, "tracegate_elasticsearch_documents_indexed_total", &[("exporter", "es")]), 0.0);
    drop(gdir);
}
