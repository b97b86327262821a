//! Reloading the configuration without a restart (issue 14): the `tracegate` binary under load
//! from real gRPC clients is reloaded with SIGHUP and with `POST /api/v1/admin/reload`, with a
//! good configuration (an exporter changed, one added) and a bad one. Nothing is refused or
//! lost, the bad one leaves the running configuration in place, and changes a reload cannot make
//! are refused with their names.

mod common;

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::ports::free_port;
use common::Sink;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

fn request(sender: u8, n: u32) -> ExportTraceServiceRequest {
    let spans = (0..20u16)
        .map(|i| {
            let mut span_id = [0u8; 8];
            span_id[0] = sender + 1;
            span_id[1..5].copy_from_slice(&n.to_be_bytes());
            span_id[5..7].copy_from_slice(&i.to_be_bytes());
            let mut trace_id = [7u8; 16];
            trace_id[0] = sender + 1;
            trace_id[1..5].copy_from_slice(&n.to_be_bytes());
            Span { trace_id: trace_id.to_vec(), span_id: span_id.to_vec(), name: "step".into(), ..Default::default() }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans { scope_spans: vec![ScopeSpans { spans, ..Default::default() }], ..Default::default() }],
    }
}

struct Ports {
    grpc: u16,
    api: u16,
}

fn config(ports: &Ports, exporters: &str, pipeline_exporters: &str) -> String {
    format!(
        r#"
receivers:
  otlp: {{grpc: {{endpoint: "127.0.0.1:{}"}}}}
exporters:
{exporters}
api: {{endpoint: "127.0.0.1:{}"}}
service:
  pipelines:
    traces: {{receivers: [otlp], exporters: [{pipeline_exporters}]}}
"#,
        ports.grpc, ports.api
    )
}

fn otlp_exporter(id: &str, sink: &Sink, max_wait: &str) -> String {
    format!(
        "  {id}:\n    type: otlp\n    endpoint: \"{}\"\n    batch: {{max_wait: {max_wait}}}\n    retry_on_failure: {{initial_interval: 50ms, max_interval: 200ms, max_elapsed_time: 0s}}\n",
        sink.endpoint()
    )
}

fn spawn(path: &std::path::Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tracegate"))
        .args(["run", "--config", path.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Four clients sending until `stop`; returns the acknowledged span ids and the refusals.
fn start_load(port: u16, stop: Arc<std::sync::atomic::AtomicBool>) -> tokio::task::JoinHandle<(HashSet<Vec<u8>>, usize)> {
    tokio::spawn(async move {
        let acknowledged = Arc::new(Mutex::new(HashSet::new()));
        let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for sender in 0..4u8 {
            let (acknowledged, refused, stop) = (acknowledged.clone(), refused.clone(), stop.clone());
            tasks.push(tokio::spawn(async move {
                let mut client = TraceServiceClient::connect(format!("http://127.0.0.1:{port}")).await.unwrap();
                let mut n = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let req = request(sender, n);
                    let ids: Vec<Vec<u8>> = req.resource_spans[0].scope_spans[0].spans.iter().map(|s| s.span_id.clone()).collect();
                    match client.export(req).await {
                        Ok(_) => acknowledged.lock().unwrap().extend(ids),
                        Err(status) => {
                            eprintln!("refused: {status}");
                            refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                    n += 1;
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let set = acknowledged.lock().unwrap().clone();
        (set, refused.load(std::sync::atomic::Ordering::Relaxed))
    })
}

async fn reload_over_api(api: u16) -> (u16, serde_json::Value) {
    let (status, _, body) = common::send("POST", &format!("http://127.0.0.1:{api}/api/v1/admin/reload"), &[], Vec::new()).await;
    (status, serde_json::from_slice(&body).unwrap_or_default())
}

fn ids(sink: &Sink) -> HashSet<Vec<u8>> {
    sink.spans().into_iter().map(|(_, s)| s.span_id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reload_under_load_refuses_and_loses_nothing() {
    let (first, second) = (Sink::start().await, Sink::start().await);
    let ports = Ports { grpc: free_port(), api: free_port() };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tracegate.yaml");
    std::fs::write(&path, config(&ports, &otlp_exporter("first", &first, "200ms"), "first")).unwrap();
    let mut child = spawn(&path);
    common::wait_listening(ports.grpc, Duration::from_secs(30)).await;
    common::wait_listening(ports.api, Duration::from_secs(30)).await;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = start_load(ports.grpc, stop.clone());
    // The subject: reloads under load. Let the load run a while first.
    tokio::time::sleep(Duration::from_millis(700)).await;

    // 1. SIGHUP with `first` reconfigured (its batching) and `second` added.
    let exporters = format!("{}{}", otlp_exporter("first", &first, "20ms"), otlp_exporter("second", &second, "20ms"));
    std::fs::write(&path, config(&ports, &exporters, "first, second")).unwrap();
    assert!(Command::new("kill").args(["-HUP", &child.id().to_string()]).status().unwrap().success());
    common::eventually("spans at the exporter added by SIGHUP", Duration::from_secs(10), || async {
        common::when(second.span_count(), |&n| n > 0)
    })
    .await;
    let after_sighup = Instant::now();

    // 2. A broken file: refused over the API, and the running configuration stays.
    std::fs::write(&path, "receivers: [this is not a configuration").unwrap();
    let (status, body) = reload_over_api(ports.api).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"].as_str().unwrap().contains("invalid"), "{body}");
    // A change a reload cannot make: named, nothing applied.
    std::fs::write(&path, config(&Ports { grpc: free_port(), api: ports.api }, &exporters, "first, second")).unwrap();
    let (status, body) = reload_over_api(ports.api).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"].as_str().unwrap().contains("receivers"), "{body}");

    // 3. Over the API: `second` removed again.
    std::fs::write(&path, config(&ports, &otlp_exporter("first", &first, "20ms"), "first")).unwrap();
    let (status, body) = reload_over_api(ports.api).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["changes"]["exporters_removed"], serde_json::json!(["second"]), "{body}");
    // Load after the last reload too (the subject).
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acknowledged, refused) = load.await.unwrap();

    // Everything acknowledged reaches `first`, which was never removed.
    common::eventually("every acknowledged span at the exporter never removed", Duration::from_secs(20), || async {
        let missing = acknowledged.difference(&ids(&first)).count();
        if missing == 0 {
            Ok(())
        } else {
            Err(format!("{missing} of {} acknowledged spans missing", acknowledged.len()))
        }
    })
    .await;
    println!(
        "reloads under load: {} spans acknowledged, {refused} requests refused, {} reached the added exporter",
        acknowledged.len(),
        second.span_count()
    );
    assert_eq!(refused, 0, "no request is refused during a reload");
    assert!(acknowledged.len() > 5_000, "the load was too light: {}", acknowledged.len());
    let _ = after_sighup;
    let metrics = common::metrics_text(format!("127.0.0.1:{}", ports.api).parse().unwrap()).await;
    assert_eq!(common::metric(&metrics, "tracegate_config_reloads_total", &[("outcome", "applied")]), 2.0);
    assert_eq!(common::metric(&metrics, "tracegate_config_reloads_total", &[("outcome", "refused")]), 2.0);
    child.kill().unwrap();
    child.wait().unwrap();
}
