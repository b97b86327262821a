//! The `tracegate` binary on SIGTERM: stops accepting, drains its queues within the deadline,
//! exits 0 and logs exactly how many spans could not be delivered.

mod common;

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::ports::free_port;
use common::{send, Sink, SinkMode};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

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
    api: u16,
    _config: tempfile::NamedTempFile,
}

fn start(sink: &Sink, batch_wait: &str, shutdown_timeout: &str) -> Running {
    start_with(sink, &format!("batch: {{max_wait: {batch_wait}}}"), shutdown_timeout)
}

/// `jaeger_settings`: more YAML lines of the `jaeger` exporter (indented by the caller's text).
fn start_with(sink: &Sink, jaeger_settings: &str, shutdown_timeout: &str) -> Running {
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
    retry_on_failure: {{initial_interval: 50ms, max_interval: 100ms, max_elapsed_time: 0s}}
    {jaeger_settings}
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
    Running { child, http, api, _config: config }
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
    common::wait_listening(running.http, Duration::from_secs(20)).await;
    let (status, _, _) =
        send("POST", &format!("http://127.0.0.1:{}/v1/traces", running.http), &[("content-type", "application/x-protobuf")], spans(7))
            .await;
    assert_eq!(status, 200);
    let (code, stderr) = tokio::task::spawn_blocking(move || terminate(running)).await.unwrap();
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(sink.span_count(), 7, "{stderr}");
    assert!(stderr.contains("every accepted span was delivered"), "{stderr}");
}

/// A gateway (`shutdown_timeout`) whose downstream is unavailable, holding 12 accepted spans.
async fn twelve_spans_for_a_dead_downstream(shutdown_timeout: &str) -> (Sink, Running) {
    let sink = Sink::start().await;
    sink.set_mode(SinkMode::Unavailable);
    let running = start(&sink, "10ms", shutdown_timeout);
    common::wait_listening(running.http, Duration::from_secs(20)).await;
    for _ in 0..3 {
        let (status, _, _) =
            send("POST", &format!("http://127.0.0.1:{}/v1/traces", running.http), &[("content-type", "application/x-protobuf")], spans(4))
                .await;
        assert_eq!(status, 200);
    }
    (sink, running)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_dead_downstream_exits_at_the_deadline_and_counts_the_loss() {
    let (sink, running) = twelve_spans_for_a_dead_downstream("1s").await;
    let started = Instant::now();
    let (code, stderr) = tokio::task::spawn_blocking(move || terminate(running)).await.unwrap();
    assert_eq!(code, Some(0), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(5), "exit took {:?}", started.elapsed());
    assert!(stderr.contains("12 spans could not be delivered"), "{stderr}");
    assert_eq!(sink.span_count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_drain_says_how_it_goes_and_a_second_signal_exits_at_once() {
    let (sink, running) = twelve_spans_for_a_dead_downstream("60s").await;
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
    common::wait_listening(running.http, Duration::from_secs(20)).await;
    let pid = running.child.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    let api: std::net::SocketAddr = format!("127.0.0.1:{}", running.api).parse().unwrap();
    common::wait_metric(api, "tracegate_config_reloads_total", &[], |n| n >= 1.0, Duration::from_secs(10)).await;
    let (status, _, _) =
        send("POST", &format!("http://127.0.0.1:{}/v1/traces", running.http), &[("content-type", "application/x-protobuf")], spans(5))
            .await;
    assert_eq!(status, 200, "still serving after SIGHUP");
    sink.wait_for(5, Duration::from_secs(10)).await;
    let (code, stderr) = tokio::task::spawn_blocking(move || terminate(running)).await.unwrap();
    assert_eq!(code, Some(0), "{stderr}");
    // The file did not change: the reload applies it and keeps everything running as it was.
    assert!(stderr.contains("SIGHUP") && stderr.contains("configuration reloaded"), "{stderr}");
}

/// Spans of one trace with these names.
fn named_spans(names: &[&str]) -> Vec<u8> {
    let spans = names
        .iter()
        .enumerate()
        .map(|(i, name)| Span { trace_id: vec![7; 16], span_id: vec![i as u8 + 1; 8], name: name.to_string(), ..Default::default() })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans { scope_spans: vec![ScopeSpans { spans, ..Default::default() }], ..Default::default() }],
    }
    .encode_to_vec()
}

/// The number after ` name=` in the log line that holds `marker`.
fn logged_figure(stderr: &str, marker: &str, name: &str) -> usize {
    let line = stderr.lines().find(|l| l.contains(marker)).unwrap_or_else(|| panic!("no log line with {marker:?}: {stderr}"));
    let at = line.find(&format!(" {name}=")).unwrap_or_else(|| panic!("no {name}= in {line}")) + name.len() + 2;
    line[at..].chars().take_while(char::is_ascii_digit).collect::<String>().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shutdown_report_sums_every_accepted_span_that_was_not_delivered() {
    let sink = Sink::start().await;
    // A strict downstream: it refuses any request holding a span named "poison".
    sink.set_mode(SinkMode::RefuseSpansNamed("poison"));
    // Best-effort with room for 20 spans: what does not fit while the sink is down is dropped.
    let settings = "batch: {max_wait: 10ms}\n    sending_queue: {queue_size: 20, num_consumers: 1, when_full: drop}";
    let running = start_with(&sink, settings, "1s");
    common::wait_listening(running.http, Duration::from_secs(20)).await;
    let url = format!("http://127.0.0.1:{}/v1/traces", running.http);
    let pb = [("content-type", "application/x-protobuf")];
    let mut acknowledged = 0;

    // 1. Permanent failures: one poison span in each of three requests of six.
    for _ in 0..3 {
        assert_eq!(send("POST", &url, &pb, named_spans(&["a", "b", "poison", "c", "d", "e"])).await.0, 200);
        acknowledged += 6;
    }
    sink.wait_for(15, Duration::from_secs(15)).await;
    let api: std::net::SocketAddr = format!("127.0.0.1:{}", running.api).parse().unwrap();
    common::eventually("the poison spans given up on", Duration::from_secs(15), || async {
        let text = common::metrics_text(api).await;
        // Given up on, and the queue's capacity given back.
        let failed = common::metric(&text, "tracegate_exporter_send_failed_spans_total", &[]);
        let queued = common::metric(&text, "tracegate_exporter_queue_size", &[]);
        common::when((failed, queued), |&(failed, queued)| failed == 3.0 && queued == 0.0)
    })
    .await;

    // 2. The sink goes down: two requests fill the queue, three more are dropped (best-effort),
    //    and at the 1 s deadline the queued ones are left.
    sink.set_mode(SinkMode::Unavailable);
    for _ in 0..5 {
        assert_eq!(send("POST", &url, &pb, spans(8)).await.0, 200, "best-effort: acknowledged even when dropped");
        acknowledged += 8;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (code, stderr) = tokio::task::spawn_blocking(move || terminate(running)).await.unwrap();
    assert_eq!(code, Some(0), "{stderr}");

    let received = sink.span_count();
    let marker = "shutdown complete;";
    let left = logged_figure(&stderr, marker, "left_at_deadline");
    let dropped = logged_figure(&stderr, marker, "dropped_queue_full");
    let failed = logged_figure(&stderr, marker, "failed");
    let rejected = logged_figure(&stderr, marker, "rejected_by_peer");
    let lost = logged_figure(&stderr, marker, "lost");
    assert_eq!((left, dropped, failed, rejected), (16, 24, 3, 0), "{stderr}");
    assert_eq!(left + dropped + failed + rejected, acknowledged - received, "acknowledged {acknowledged}, received {received}: {stderr}");
    assert_eq!(lost, acknowledged - received);
    assert!(stderr.contains(&format!("{lost} spans could not be delivered: 16 left at the shutdown deadline, 24 dropped")), "{stderr}");
    assert!(!stderr.contains("every accepted span was delivered"), "{stderr}");
}
