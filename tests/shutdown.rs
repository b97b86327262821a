//! The `tracegate` binary on SIGTERM: stops accepting, drains its queues within the deadline,
//! exits 0 and logs exactly how many spans could not be delivered.

mod common;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{send, Sink, SinkMode};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn spans(n: u8) -> Vec<u8> {
    let spans = (1..=n).map(|i| Span { trace_id: vec![9; 16], span_id: vec![i; 8], name: format!("s{i}"), ..Default::default() }).collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans { scope_spans: vec![ScopeSpans { spans, ..Default::default() }], ..Default::default() }],
    }
    .encode_to_vec()
}

struct Running {
    child: Child,
    http: u16,
    _config: tempfile::NamedTempFile,
}

fn start(sink: &Sink, batch_wait: &str, shutdown_timeout: &str) -> Running {
    let (http, grpc, api) = (free_port(), free_port(), free_port());
    let mut config = tempfile::NamedTempFile::new().unwrap();
    write!(
        config,
        r#"
receivers:
  otlp: {{grpc: {{endpoint: "127.0.0.1:{grpc}"}}, http: {{endpoint: "127.0.0.1:{http}"}}}}
exporters:
  jaeger:
    type: otlp
    endpoint: "{}"
    batch: {{max_wait: {batch_wait}}}
    retry_on_failure: {{initial_interval: 50ms, max_interval: 100ms, max_elapsed_time: 0s}}
api: {{endpoint: "127.0.0.1:{api}"}}
service:
  shutdown_timeout: {shutdown_timeout}
  pipelines:
    traces: {{receivers: [otlp], exporters: [jaeger]}}
"#,
        sink.endpoint()
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_tracegate"))
        .args(["run", "--config", config.path().to_str().unwrap()])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    Running { child, http, _config: config }
}

async fn wait_until_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        assert!(Instant::now() < deadline, "tracegate did not start listening");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sends SIGTERM and returns (exit code, stderr).
fn terminate(mut running: Running) -> (Option<i32>, String) {
    let pid = running.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = running.child.try_wait().unwrap() {
            let mut stderr = String::new();
            std::io::Read::read_to_string(running.child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
            return (status.code(), stderr);
        }
        assert!(Instant::now() < deadline, "tracegate did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_waiting_batches_before_exit() {
    let sink = Sink::start().await;
    // A long batch wait: without a drain on shutdown these spans would still be waiting.
    let running = start(&sink, "30s", "10s");
    wait_until_listening(running.http).await;
    let (status, _, _) =
        send("POST", &format!("http://127.0.0.1:{}/v1/traces", running.http), &[("content-type", "application/x-protobuf")], spans(7))
            .await;
    assert_eq!(status, 200);
    let (code, stderr) = tokio::task::spawn_blocking(move || terminate(running)).await.unwrap();
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(sink.span_count(), 7, "{stderr}");
    assert!(stderr.contains("every accepted span was delivered"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_dead_downstream_exits_at_the_deadline_and_counts_the_loss() {
    let sink = Sink::start().await;
    sink.set_mode(SinkMode::Unavailable);
    let running = start(&sink, "10ms", "1s");
    wait_until_listening(running.http).await;
    for _ in 0..3 {
        let (status, _, _) =
            send("POST", &format!("http://127.0.0.1:{}/v1/traces", running.http), &[("content-type", "application/x-protobuf")], spans(4))
                .await;
        assert_eq!(status, 200);
    }
    let started = Instant::now();
    let (code, stderr) = tokio::task::spawn_blocking(move || terminate(running)).await.unwrap();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(5), "exit took {:?}", started.elapsed());
    assert!(stderr.contains("12 spans could not be delivered"), "{stderr}");
    assert_eq!(sink.span_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_drain_says_how_it_goes_and_a_second_signal_exits_at_once() {
    let sink = Sink::start().await;
    sink.set_mode(SinkMode::Unavailable);
    let running = start(&sink, "10ms", "60s");
    wait_until_listening(running.http).await;
    for _ in 0..3 {
        let (status, _, _) =
            send("POST", &format!("http://127.0.0.1:{}/v1/traces", running.http), &[("content-type", "application/x-protobuf")], spans(4))
                .await;
        assert_eq!(status, 200);
    }
    let mut running = running;
    let pid = running.child.id().to_string();
    let (code, stderr, took) = tokio::task::spawn_blocking(move || {
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        // Past the first progress report (every 5 s), well before the 60 s deadline.
        std::thread::sleep(Duration::from_millis(6500));
        assert!(running.child.try_wait().unwrap().is_none(), "still draining towards its 60 s deadline");
        let second = Instant::now();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let status = loop {
            if let Some(status) = running.child.try_wait().unwrap() {
                break status;
            }
            assert!(second.elapsed() < Duration::from_secs(10), "a second signal must end the process");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(running.child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        (status.code(), stderr, second.elapsed())
    })
    .await
    .unwrap();
    assert!(took < Duration::from_secs(2), "the second signal took {took:?}");
    assert_ne!(code, Some(0), "a forced exit is not a clean one: {stderr}");
    assert!(stderr.contains("draining exporter queues before exit") && stderr.contains("spans_left=12"), "{stderr}");
    assert!(stderr.contains("second signal") && stderr.contains("abandoned_spans=12"), "{stderr}");
    assert!(stderr.contains(&format!("to={}", sink.endpoint())), "retry logs name the destination: {stderr}");
    assert!(!stderr.contains("\x1b["), "no colour codes in a log that is not a terminal");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_does_not_end_the_process_or_lose_spans() {
    let sink = Sink::start().await;
    let running = start(&sink, "10ms", "10s");
    wait_until_listening(running.http).await;
    let pid = running.child.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _, _) =
        send("POST", &format!("http://127.0.0.1:{}/v1/traces", running.http), &[("content-type", "application/x-protobuf")], spans(5))
            .await;
    assert_eq!(status, 200, "still serving after SIGHUP");
    sink.wait_for(5, Duration::from_secs(10)).await;
    let (code, stderr) = tokio::task::spawn_blocking(move || terminate(running)).await.unwrap();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("SIGHUP") && stderr.contains("the file is valid"), "{stderr}");
}
