//! Downstream outages: nothing accepted is lost or duplicated, full queues refuse with a retry
//! hint, and a dead exporter never holds up a healthy one.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, metric, metrics_text, send, start_gateway, wait_metric, when, Sink, SinkMode};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

/// A request of `n` spans with ids unique across the test (`seq` numbers them).
fn request(seq: u64, n: u64) -> ExportTraceServiceRequest {
    let spans = (0..n)
        .map(|i| {
            let id = seq * 1000 + i + 1;
            Span {
                trace_id: [seq.to_be_bytes(), 7u64.to_be_bytes()].concat(),
                span_id: id.to_be_bytes().to_vec(),
                name: format!("span-{id}"),
                start_time_unix_nano: 1_700_000_000_000_000_000 + id,
                end_time_unix_nano: 1_700_000_000_000_000_000 + id + 1000,
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue { value: Some(any_value::Value::StringValue("crm-api".into())) }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
}

fn config(exporters: &str, pipeline_exporters: &str) -> String {
    format!(
        r#"
receivers:
  otlp: {{grpc: {{endpoint: "127.0.0.1:0"}}, http: {{endpoint: "127.0.0.1:0"}}}}
exporters:
{exporters}
api: {{endpoint: "127.0.0.1:0"}}
service:
  pipelines:
    traces: {{receivers: [otlp], exporters: [{pipeline_exporters}]}}
"#
    )
}

fn fast_retry() -> &'static str {
    "retry_on_failure: {initial_interval: 20ms, max_interval: 100ms, max_elapsed_time: 0s}"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downstream_outage_under_load_loses_and_duplicates_nothing() {
    let first = Sink::start().await;
    let addr = first.addr;
    let yaml = config(
        &format!("  jaeger: {{type: otlp, endpoint: \"{}\", timeout: 2s, compression: none, batch: {{max_spans: 500, max_wait: 10ms}}, sending_queue: {{queue_size: 1000000}}, {}}}", first.endpoint(), fast_retry()),
        "jaeger",
    );
    let (gateway, _dir) = start_gateway(&yaml).await;
    let grpc = format!("http://{}", gateway.grpc_addr().unwrap());

    // Four clients send 100 requests of 20 spans each while the downstream goes away and back.
    let acked = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for c in 0..4u64 {
        let grpc = grpc.clone();
        let acked = acked.clone();
        clients.push(tokio::spawn(async move {
            let mut client = TraceServiceClient::connect(grpc).await.unwrap();
            for r in 0..100u64 {
                let seq = c * 1000 + r;
                if client.export(request(seq, 20)).await.is_ok() {
                    acked.fetch_add(20, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    // The subject, in real time: the downstream goes away under load for 0.8 s.
    tokio::time::sleep(Duration::from_millis(150)).await;
    first.stop();
    tokio::time::sleep(Duration::from_millis(800)).await;
    let second = Sink::start_on(&addr.to_string()).await;
    for c in clients {
        c.await.unwrap();
    }
    let acked = acked.load(Ordering::SeqCst);
    assert_eq!(acked, 8000, "the queue is large enough that every request is accepted");

    eventually(&format!("{acked} spans downstream"), Duration::from_secs(30), || async {
        when(first.span_count() + second.span_count(), |&n| n >= acked)
    })
    .await;
    let mut seen: HashMap<Vec<u8>, usize> = HashMap::new();
    for (_, span) in first.spans().into_iter().chain(second.spans()) {
        *seen.entry(span.span_id).or_default() += 1;
    }
    let duplicates = seen.values().filter(|n| **n > 1).count();
    assert_eq!(duplicates, 0, "no span delivered twice");
    assert_eq!(seen.len(), acked, "every accepted span delivered exactly once");
    assert!(second.span_count() > 0, "the outage was real: spans waited for the second sink");

    let m = metrics_text(gateway.api_addr().unwrap()).await;
    assert!(metric(&m, "tracegate_exporter_retries_total", &[("exporter", "jaeger")]) >= 1.0);
    assert_eq!(metric(&m, "tracegate_exporter_send_failed_spans_total", &[("exporter", "jaeger")]), 0.0);
    assert_eq!(gateway.shutdown_within(Duration::from_secs(5)).await.undelivered_spans, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_unavailable_and_503_with_a_retry_hint() {
    let sink = Sink::start().await;
    sink.set_mode(SinkMode::Unavailable);
    let yaml = config(
        &format!("  jaeger: {{type: otlp, endpoint: \"{}\", batch: {{max_wait: 5ms}}, sending_queue: {{queue_size: 100, num_consumers: 1}}, {}}}", sink.endpoint(), fast_retry()),
        "jaeger",
    );
    let (gateway, _dir) = start_gateway(&yaml).await;
    let mut client = TraceServiceClient::connect(format!("http://{}", gateway.grpc_addr().unwrap())).await.unwrap();
    client.export(request(1, 40)).await.expect("first 40 fit");
    client.export(request(2, 40)).await.expect("80 fit");
    let status = client.export(request(3, 40)).await.expect_err("120 do not fit in 100");
    assert_eq!(status.code(), tonic::Code::Unavailable);
    use tonic_types::StatusExt;
    let retry = status.get_details_retry_info().expect("a RetryInfo detail");
    assert_eq!(retry.retry_delay, Some(Duration::from_secs(1)));

    let http = gateway.http_addr().unwrap();
    let (code, headers, body) =
        send("POST", &format!("http://{http}/v1/traces"), &[("content-type", "application/x-protobuf")], request(4, 40).encode_to_vec())
            .await;
    assert_eq!(code, 503);
    assert_eq!(headers.get("retry-after").unwrap(), "1");
    let rpc = tracegate::receivers::RpcStatus::decode(body.as_slice()).unwrap();
    assert_eq!(rpc.code, tonic::Code::Unavailable as i32);
    assert!(rpc.message.contains("full"), "{}", rpc.message);

    let m = metrics_text(gateway.api_addr().unwrap()).await;
    assert_eq!(metric(&m, "tracegate_receiver_refused_spans_total", &[("reason", "queue_full")]), 80.0);
    assert_eq!(metric(&m, "tracegate_exporter_queue_size", &[("exporter", "jaeger")]), 80.0);

    // The downstream recovers: exactly the 80 accepted spans arrive, and new data flows again.
    sink.set_mode(SinkMode::Accept);
    sink.wait_for(80, Duration::from_secs(10)).await;
    // The queue gives its room back once the exporter has the sink's reply, just after the sink
    // recorded the spans.
    let api = gateway.api_addr().unwrap();
    wait_metric(api, "tracegate_exporter_queue_size", &[("exporter", "jaeger")], |n| n == 0.0, Duration::from_secs(10)).await;
    client.export(request(5, 40)).await.expect("room again");
    sink.wait_for(120, Duration::from_secs(10)).await;
    // The subject: nothing more arrives. A fixed time for a stray span.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(sink.span_count(), 120);
    assert_eq!(gateway.shutdown_within(Duration::from_secs(5)).await.undelivered_spans, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_exporter_neither_delays_nor_blocks_a_healthy_one() {
    let healthy = Sink::start().await;
    let dead = Sink::start().await;
    dead.set_slow(true);
    let yaml = config(
        &format!(
            "  live: {{type: otlp, endpoint: \"{}\", batch: {{max_wait: 5ms}}}}\n  dead: {{type: otlp, endpoint: \"{}\", timeout: 200ms, batch: {{max_wait: 5ms}}, sending_queue: {{queue_size: 50, when_full: drop}}, {}}}",
            healthy.endpoint(),
            dead.endpoint(),
            fast_retry()
        ),
        "live, dead",
    );
    let (gateway, _dir) = start_gateway(&yaml).await;
    let mut client = TraceServiceClient::connect(format!("http://{}", gateway.grpc_addr().unwrap())).await.unwrap();
    let started = std::time::Instant::now();
    for seq in 0..20 {
        client.export(request(seq, 10)).await.expect("a best-effort exporter's outage never refuses ingest");
    }
    healthy.wait_for(200, Duration::from_secs(5)).await;
    assert!(started.elapsed() < Duration::from_secs(3), "the healthy exporter was held up: {:?}", started.elapsed());
    assert_eq!(healthy.span_count(), 200);

    // The first attempt to the dead peer times out after 200 ms and is retried.
    let api = gateway.api_addr().unwrap();
    wait_metric(api, "tracegate_exporter_retries_total", &[("exporter", "dead")], |n| n >= 1.0, Duration::from_secs(2)).await;
    let m = metrics_text(api).await;
    assert_eq!(metric(&m, "tracegate_exporter_dropped_spans_total", &[("exporter", "dead"), ("reason", "queue_full")]), 150.0);
    assert!(metric(&m, "tracegate_exporter_retries_total", &[("exporter", "dead")]) >= 1.0, "timeouts are retried");
    assert_eq!(metric(&m, "tracegate_exporter_sent_spans_total", &[("exporter", "live")]), 200.0);

    let report = gateway.shutdown_within(Duration::from_millis(500)).await;
    assert_eq!(report.undelivered_spans, 50, "the dead exporter's queue is counted at the deadline");
    assert!(!report.drained_in_time);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_errors_are_not_retried() {
    let sink = Sink::start().await;
    sink.set_mode(SinkMode::Reject);
    let yaml = config(
        &format!("  jaeger: {{type: otlp, endpoint: \"{}\", batch: {{max_wait: 5ms}}, {}}}", sink.endpoint(), fast_retry()),
        "jaeger",
    );
    let (gateway, _dir) = start_gateway(&yaml).await;
    let mut client = TraceServiceClient::connect(format!("http://{}", gateway.grpc_addr().unwrap())).await.unwrap();
    client.export(request(1, 5)).await.unwrap();
    let api = gateway.api_addr().unwrap();
    let failed =
        wait_metric(api, "tracegate_exporter_send_failed_spans_total", &[("exporter", "jaeger")], |n| n >= 5.0, Duration::from_secs(2))
            .await;
    assert_eq!(failed, 5.0);
    // The subject: no retry follows. A fixed time for a stray attempt.
    tokio::time::sleep(Duration::from_millis(200)).await;
    // INVALID_ARGUMENT is never retried as sent: the batch is bisected instead, each piece sent
    // once (5 spans: 5, 2+3, 1+1, 1+2, 1+1 = 9 requests), then every span is counted failed.
    assert_eq!(sink.attempts(), 9, "INVALID_ARGUMENT is permanent; the batch is only bisected");
    gateway.shutdown_within(Duration::from_secs(2)).await;
}

/// A strict downstream refuses a whole merged batch for one span it cannot take: the batch is
/// split until that span is alone, everything else is delivered once, and only the poison is
/// dropped (counted as failed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_span_is_bisected_out_and_the_good_spans_arrive() {
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    let sink = Sink::start().await;
    sink.set_mode(SinkMode::RefuseSpansNamed("poison"));
    let yaml = format!(
        r#"
receivers:
  otlp: {{grpc: {{endpoint: "127.0.0.1:0"}}}}
exporters:
  strict: {{type: otlp, endpoint: "{}", batch: {{max_wait: 200ms, max_spans: 10000}}, retry_on_failure: {{initial_interval: 20ms}}, dead_letter_path: "{{data}}/dead-letter.jsonl"}}
api: {{endpoint: "127.0.0.1:0"}}
service:
  pipelines:
    traces: {{receivers: [otlp], exporters: [strict]}}
"#,
        sink.endpoint()
    );
    let (gateway, dir) = start_gateway(&yaml).await;
    let mut client = TraceServiceClient::connect(format!("http://{}", gateway.grpc_addr().unwrap())).await.unwrap();
    // 20 requests of 50 spans, merged into one batch by the 200 ms wait; two spans are poison.
    for r in 0..20u32 {
        let spans = (0..50u32)
            .map(|i| Span {
                trace_id: [&[0x77; 12][..], &r.to_be_bytes()[..]].concat(),
                span_id: [[0x55; 4], (i + 1).to_be_bytes()].concat(),
                name: if (r, i) == (3, 7) || (r, i) == (15, 40) { "poison".into() } else { format!("good-{r}-{i}") },
                ..Default::default()
            })
            .collect();
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans { scope_spans: vec![ScopeSpans { spans, ..Default::default() }], ..Default::default() }],
        };
        client.export(request).await.unwrap();
    }
    sink.wait_for(998, Duration::from_secs(15)).await;
    // The subject: no span arrives twice. A fixed time for a stray duplicate.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let names: Vec<String> = sink.spans().into_iter().map(|(_, s)| s.name).collect();
    assert_eq!(names.len(), 998, "every good span once");
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 998, "no duplicates");
    assert!(!names.iter().any(|n| n == "poison"));
    let metrics = metrics_text(gateway.api_addr().unwrap()).await;
    assert_eq!(metric(&metrics, "tracegate_exporter_send_failed_spans_total", &[("exporter", "strict")]), 2.0, "{metrics}");
    assert!(sink.attempts() < 60, "bisection stays cheap: {} requests", sink.attempts());
    // Only the poison is dead-lettered, as OTLP JSON with the peer's error.
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(dir.path().join("dead-letter.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let names: Vec<&str> = lines
        .iter()
        .flat_map(|l| l["resourceSpans"].as_array().unwrap())
        .flat_map(|rs| rs["scopeSpans"].as_array().unwrap())
        .flat_map(|ss| ss["spans"].as_array().unwrap())
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["poison", "poison"], "{lines:?}");
    assert!(lines[0]["error"].as_str().unwrap().contains("not acceptable"), "{lines:?}");
    gateway.shutdown_within(Duration::from_secs(2)).await;
}
