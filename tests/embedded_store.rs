//! The embedded store through the read API: retention deletes old spans, re-delivery never
//! duplicates, and the health and metrics endpoints answer.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{eventually, get_json, send, start_gateway, when};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

fn trace(trace_byte: u8, ended_ago: Duration, spans: u8) -> Vec<u8> {
    let end = now_ns() - ended_ago.as_nanos() as u64;
    let spans = (1..=spans)
        .map(|i| Span {
            trace_id: vec![trace_byte; 16],
            span_id: vec![i; 8],
            name: format!("s{i}"),
            start_time_unix_nano: end - 1_000_000,
            end_time_unix_nano: end,
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans { scope_spans: vec![ScopeSpans { spans, ..Default::default() }], ..Default::default() }],
    }
    .encode_to_vec()
}

const CONFIG: &str = r#"
receivers:
  otlp: {http: {endpoint: "127.0.0.1:0"}}
exporters:
  local: {type: embedded, path: "{data}", retention: 4s, batch: {max_wait: 5ms}}
api: {endpoint: "127.0.0.1:0"}
service:
  pipelines:
    traces: {receivers: [otlp], exporters: [local]}
"#;

async fn stored_spans(api: std::net::SocketAddr, trace_byte: u8) -> (u16, usize) {
    let (status, body) = get_json(&format!("http://{api}/api/v1/traces/{}", hex::encode([trace_byte; 16]))).await;
    let n = body["resourceSpans"]
        .as_array()
        .map(|rs| rs.iter().flat_map(|r| r["scopeSpans"].as_array().unwrap().iter()).map(|s| s["spans"].as_array().unwrap().len()).sum())
        .unwrap_or(0);
    (status, n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_old_spans_and_redelivery_does_not_duplicate() {
    let (gateway, _dir) = start_gateway(CONFIG).await;
    let url = format!("http://{}/v1/traces", gateway.http_addr().unwrap());
    let api = gateway.api_addr().unwrap();
    let pb = [("content-type", "application/x-protobuf")];

    let fresh = trace(1, Duration::ZERO, 3);
    assert_eq!(send("POST", &url, &pb, fresh.clone()).await.0, 200);
    assert_eq!(send("POST", &url, &pb, fresh).await.0, 200, "a client retry of the same request");
    assert_eq!(send("POST", &url, &pb, trace(2, Duration::from_secs(3600), 2)).await.0, 200);

    let fresh_count =
        eventually("the fresh trace stored", Duration::from_secs(2), || async { when(stored_spans(api, 1).await, |&c| c == (200, 3)) })
            .await;
    assert_eq!(fresh_count, (200, 3), "three spans, stored once although sent twice");

    // The hour-old trace is past the 4 s retention: the sweep (every second) removes it.
    let old =
        eventually("the expired trace deleted", Duration::from_secs(3), || async { when(stored_spans(api, 2).await, |c| c.0 == 404) })
            .await;
    assert_eq!(old, (404, 0), "expired trace deleted");
    assert_eq!(stored_spans(api, 1).await, (200, 3), "fresh trace kept");
    gateway.shutdown_within(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_unknown_paths() {
    let (gateway, _dir) = start_gateway(CONFIG).await;
    let api = gateway.api_addr().unwrap();
    assert_eq!(send("GET", &format!("http://{api}/healthz"), &[], vec![]).await.0, 200);
    assert_eq!(send("GET", &format!("http://{api}/readyz"), &[], vec![]).await.0, 200);
    let (status, headers, body) = send("GET", &format!("http://{api}/metrics"), &[], vec![]).await;
    assert_eq!(status, 200);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = String::from_utf8(body).unwrap();
    assert_eq!(common::metric(&text, "tracegate_exporter_queue_capacity", &[("exporter", "local")]), 200000.0);
    let (status, body) = get_json(&format!("http://{api}/api/v1/nothing-here")).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "not_found");
    let http = gateway.http_addr().unwrap();
    assert_eq!(send("GET", &format!("http://{http}/v1/other"), &[], vec![]).await.0, 404);
    gateway.shutdown_within(Duration::from_secs(2)).await;
}
