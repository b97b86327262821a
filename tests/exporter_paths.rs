//! The `otlp` exporter's other paths: TLS with a custom CA, the HTTP protocol (into a second
//! tracegate), and the server's retry hints (gRPC RetryInfo, HTTP Retry-After) taking precedence
//! over the configured backoff.

mod common;

use std::time::{Duration, Instant};

use common::{eventually, metric, metrics_text, start_gateway, wait_metric, when, Sink, SinkMode};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

fn request(first: u8, n: u8) -> ExportTraceServiceRequest {
    let spans = (first..first + n)
        .map(|i| Span { trace_id: vec![3; 16], span_id: vec![i; 8], name: format!("span-{i}"), ..Default::default() })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans { scope_spans: vec![ScopeSpans { spans, ..Default::default() }], ..Default::default() }],
    }
}

fn pipeline(exporter: &str) -> String {
    format!(
        r#"
receivers:
  otlp: {{grpc: {{endpoint: "127.0.0.1:0"}}, http: {{endpoint: "127.0.0.1:0"}}}}
exporters:
  out: {exporter}
api: {{endpoint: "127.0.0.1:0"}}
service:
  pipelines:
    traces: {{receivers: [otlp], exporters: [out]}}
"#
    )
}

async fn send_grpc(gateway: &tracegate::Gateway, req: ExportTraceServiceRequest) {
    let mut client = TraceServiceClient::connect(format!("http://{}", gateway.grpc_addr().unwrap())).await.unwrap();
    client.export(req).await.unwrap();
}

/// A CA and a server certificate for 127.0.0.1 signed by it: (ca.pem, cert.pem, key.pem).
fn certificates() -> (String, String, String) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap()).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().signed_by(&key, &ca).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_over_tls_with_a_custom_ca() {
    let (ca, cert, key) = certificates();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    let sink = Sink::start_tls(&cert, &key).await;
    let endpoint = format!("https://{}", sink.addr);

    let trusted = pipeline(&format!(
        "{{type: otlp, endpoint: \"{endpoint}\", tls: {{ca_file: \"{}\"}}, batch: {{max_wait: 5ms}}}}",
        ca_file.display()
    ));
    let (gateway, _d) = start_gateway(&trusted).await;
    send_grpc(&gateway, request(1, 4)).await;
    sink.wait_for(4, Duration::from_secs(10)).await;
    assert_eq!(sink.span_count(), 4);
    gateway.shutdown_within(Duration::from_secs(2)).await;

    // Without the CA the certificate is not trusted: nothing is delivered, the exporter retries.
    let untrusted = pipeline(&format!(
        "{{type: otlp, endpoint: \"{endpoint}\", batch: {{max_wait: 5ms}}, retry_on_failure: {{initial_interval: 50ms}}}}"
    ));
    let (gateway, _d) = start_gateway(&untrusted).await;
    send_grpc(&gateway, request(10, 2)).await;
    let api = gateway.api_addr().unwrap();
    // A retry after the TLS failure.
    wait_metric(api, "tracegate_exporter_retries_total", &[("exporter", "out")], |v| v >= 1.0, Duration::from_secs(10)).await;
    assert_eq!(sink.span_count(), 4, "nothing crossed an untrusted connection");
    assert_eq!(gateway.shutdown_within(Duration::from_millis(200)).await.undelivered_spans, 2);
}

/// Each protocol and compression into a second gateway, with batches of several requests (the
/// exporter sends a batch as the requests' parts one after the other).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_protocol_and_compression_into_a_second_gateway() {
    let sink = Sink::start().await;
    let (downstream, _d1) =
        start_gateway(&pipeline(&format!("{{type: otlp, endpoint: \"{}\", batch: {{max_wait: 5ms}}}}", sink.endpoint()))).await;
    let http = format!("http://{}", downstream.http_addr().unwrap());
    let grpc = format!("http://{}", downstream.grpc_addr().unwrap());
    let mut sent = 0;
    for (protocol, endpoint) in [("http", &http), ("grpc", &grpc)] {
        for compression in ["gzip", "none"] {
            let (upstream, _d2) = start_gateway(&pipeline(&format!(
                "{{type: otlp, protocol: {protocol}, compression: {compression}, endpoint: \"{endpoint}\", batch: {{max_wait: 300ms}}}}"
            )))
            .await;
            let before = sink.span_count();
            // Three requests within one batch's wait: one call of three parts.
            for first in [1, 7, 13] {
                send_grpc(&upstream, request(first, 6)).await;
            }
            sent += 18;
            sink.wait_for(before + 18, Duration::from_secs(10)).await;
            let m = metrics_text(upstream.api_addr().unwrap()).await;
            assert_eq!(metric(&m, "tracegate_exporter_sent_spans_total", &[("exporter", "out")]), 18.0, "{protocol} {compression}");
            upstream.shutdown_within(Duration::from_secs(2)).await;
        }
    }
    let names: Vec<String> = sink.spans().into_iter().map(|(_, s)| s.name).collect();
    assert_eq!(names.len(), sent);
    for i in 1..=18 {
        assert_eq!(names.iter().filter(|n| **n == format!("span-{i}")).count(), 4, "span-{i}");
    }
    downstream.shutdown_within(Duration::from_secs(2)).await;
}

/// Configured headers go out with every gRPC call, none of them replaces a header gRPC needs, and
/// a compressed reply is read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_carry_the_configured_headers() {
    let sink = Sink::start().await;
    let (gateway, _d) = start_gateway(&pipeline(&format!(
        "{{type: otlp, endpoint: \"{}\", headers: {{x-scope-orgid: shop, content-type: text/plain}}, batch: {{max_wait: 5ms}}}}",
        sink.endpoint()
    )))
    .await;
    send_grpc(&gateway, request(1, 3)).await;
    sink.wait_for(3, Duration::from_secs(5)).await;
    let metadata = sink.last_metadata().expect("a call");
    assert_eq!(metadata.get("x-scope-orgid").and_then(|v| v.to_str().ok()), Some("shop"));
    let headers = metadata.into_headers();
    assert_eq!(headers.get("content-type").and_then(|v| v.to_str().ok()), Some("application/grpc"));
    // The sink's reply is gzip-compressed (it compresses for a client that accepts it, as
    // grpc-go servers compress for any client): read as a success.
    let api = gateway.api_addr().unwrap();
    wait_metric(api, "tracegate_exporter_sent_spans_total", &[("exporter", "out")], |v| v == 3.0, Duration::from_secs(5)).await;
    gateway.shutdown_within(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_retry_info_wins_over_the_configured_backoff() {
    let sink = Sink::start().await;
    sink.set_mode(SinkMode::Throttle);
    // A 30 s backoff: only the server's 200 ms RetryInfo can make delivery quick.
    let (gateway, _d) = start_gateway(&pipeline(&format!(
        "{{type: otlp, endpoint: \"{}\", batch: {{max_wait: 5ms}}, retry_on_failure: {{initial_interval: 30s, randomization_factor: 0}}}}",
        sink.endpoint()
    )))
    .await;
    let started = Instant::now();
    send_grpc(&gateway, request(1, 3)).await;
    eventually("a first attempt at the sink", Duration::from_secs(2), || async { when(sink.attempts(), |&n| n > 0) }).await;
    sink.set_mode(SinkMode::Accept);
    sink.wait_for(3, Duration::from_secs(5)).await;
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    assert_eq!(sink.attempts(), 2);
    gateway.shutdown_within(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_retry_after_wins_over_the_configured_backoff() {
    // The downstream gateway's queue (10 spans) is full while its own peer is down, so it
    // answers 503 with Retry-After: 1.
    let sink = Sink::start().await;
    sink.set_mode(SinkMode::Unavailable);
    let (downstream, _d1) = start_gateway(&pipeline(&format!(
        "{{type: otlp, endpoint: \"{}\", batch: {{max_wait: 5ms}}, sending_queue: {{queue_size: 10}}, retry_on_failure: {{initial_interval: 50ms, max_interval: 50ms}}}}",
        sink.endpoint()
    )))
    .await;
    send_grpc(&downstream, request(100, 10)).await;
    let http = format!("http://{}", downstream.http_addr().unwrap());
    let (upstream, _d2) = start_gateway(&pipeline(&format!(
        "{{type: otlp, protocol: http, endpoint: \"{http}\", batch: {{max_wait: 5ms}}, retry_on_failure: {{initial_interval: 30s, randomization_factor: 0}}}}"
    )))
    .await;
    let started = Instant::now();
    send_grpc(&upstream, request(1, 5)).await;
    let api = upstream.api_addr().unwrap();
    // The 503 is retried.
    wait_metric(api, "tracegate_exporter_retries_total", &[("exporter", "out")], |v| v >= 1.0, Duration::from_secs(5)).await;
    sink.set_mode(SinkMode::Accept);
    sink.wait_for(15, Duration::from_secs(10)).await;
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}: Retry-After was not honoured", started.elapsed());
    upstream.shutdown_within(Duration::from_secs(2)).await;
    downstream.shutdown_within(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_larger_than_max_bytes_are_split_and_batches_stop_short_of_it() {
    let sink = Sink::start().await;
    let (gateway, _d) = start_gateway(&pipeline(&format!(
        "{{type: otlp, endpoint: \"{}\", compression: none, batch: {{max_wait: 50ms, max_bytes: 16KiB}}}}",
        sink.endpoint()
    )))
    .await;
    let mut client = TraceServiceClient::connect(format!("http://{}", gateway.grpc_addr().unwrap())).await.unwrap();
    // One request of 200 spans with a 500-byte attribute each (~110 KB), then ten small ones.
    let mut big = request(1, 200);
    for span in &mut big.resource_spans[0].scope_spans[0].spans {
        span.attributes.push(opentelemetry_proto::tonic::common::v1::KeyValue {
            key: "payload".into(),
            value: Some(opentelemetry_proto::tonic::common::v1::AnyValue {
                value: Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue("x".repeat(500))),
            }),
            ..Default::default()
        });
    }
    client.export(big).await.unwrap();
    for i in 0..10u8 {
        client.export(request(201 + i * 5, 5)).await.unwrap();
    }
    sink.wait_for(250, Duration::from_secs(10)).await;
    let sizes = sink.request_sizes();
    assert!(sizes.iter().all(|s| *s <= 16 * 1024), "every request within max_bytes: {sizes:?}");
    assert!(sizes.len() >= 7, "the large request was split: {sizes:?}");
    let mut ids: Vec<Vec<u8>> = sink.spans().into_iter().map(|(_, s)| s.span_id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 250, "every span exactly once");
    gateway.shutdown_within(Duration::from_secs(2)).await;
}
