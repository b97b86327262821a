//! Connection hygiene on every listener and authentication before decoding on OTLP/gRPC, all
//! through real sockets: a flood of idle and half-open connections is shed while the API still
//! answers, running out of file descriptors backs off instead of spinning, idle keep-alive
//! connections are closed (HTTP/1 and gRPC), and a forged token is refused before its message is
//! inflated.

mod common;
#[path = "common/auth.rs"]
mod fixture;

use std::io::Write;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::ports::free_port;
use fixture::{mint, service_claims, service_request, spec, Idp};
use http_body_util::{BodyExt, Full};
use prost::Message;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The tests of this file run one at a time: they measure the CPU time and the peak memory of
/// the test process, which a concurrently running flood would disturb.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// CPU time (user + system) process `pid` ("self" for this one) has used, from `/proc/<pid>/stat`.
fn cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("procfs");
    // After the command name: field 3 (state) first, so utime (14) and stime (15) are 11 and 12.
    let fields: Vec<&str> = stat.rsplit_once(')').expect("the command name ends with ')'").1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

fn proc_status_bytes(key: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("{key} in /proc/self/status"));
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// Starts measuring the peak resident size afresh (`VmHWM` := `VmRSS`).
fn reset_peak_rss() {
    std::fs::write("/proc/self/clear_refs", "5").expect("resetting VmHWM through /proc/self/clear_refs");
}

/// What became of one connection of a flood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// The connection could not be made at all.
    NotConnected,
    /// The gateway closed (or reset) it.
    Closed,
    /// Still open when the test stopped watching.
    Open,
}

/// Opens one connection, sends the start of a request that never ends when `half_open`, and
/// waits up to `watch` for the gateway to close it. `connecting` bounds how many connections are
/// being made at once: the gateway shares the test's two threads, and a burst larger than the
/// kernel's accept queue would leave handshakes half done, unseen by any server.
async fn flood_connection(
    addr: SocketAddr,
    half_open: bool,
    watch: Duration,
    connecting: Arc<tokio::sync::Semaphore>,
    settled: Arc<AtomicUsize>,
) -> Fate {
    let permit = connecting.acquire_owned().await.unwrap();
    let connected = tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(addr)).await;
    let Ok(Ok(mut stream)) = connected else {
        settled.fetch_add(1, Ordering::SeqCst);
        return Fate::NotConnected;
    };
    if half_open {
        let _ = stream.write_all(b"POST /v1/traces HTTP/1.1\r\nHost: tracegate\r\nContent-Type: application/x-proto").await;
    }
    drop(permit);
    settled.fetch_add(1, Ordering::SeqCst);
    let mut buf = [0u8; 512];
    let closed = tokio::time::timeout(watch, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    if closed.is_ok() {
        Fate::Closed
    } else {
        Fate::Open
    }
}

/// The status line of `GET path` on a fresh connection, if the reply comes within `patience`.
async fn get_status(addr: SocketAddr, path: &str, patience: Duration) -> Option<String> {
    tokio::time::timeout(patience, async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: tracegate\r\nConnection: close\r\n\r\n").as_bytes()).await.ok()?;
        let mut reply = Vec::new();
        stream.read_to_end(&mut reply).await.ok()?;
        String::from_utf8_lossy(&reply).lines().next().map(str::to_string)
    })
    .await
    .ok()
    .flatten()
}

/// How long until `GET /healthz` on a fresh connection is answered 200, trying for `deadline`.
async fn health_answered_within(api: SocketAddr, deadline: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < deadline {
        if get_status(api, "/healthz", Duration::from_secs(1)).await.is_some_and(|l| l.starts_with("HTTP/1.1 200")) {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// A gRPC length-prefixed message.
fn grpc_frame(compressed: bool, message: &[u8]) -> Vec<u8> {
    let mut frame = vec![u8::from(compressed)];
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(message);
    frame
}

type GrpcSender = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

/// An HTTP/2 connection to a gRPC port; the handle ends when the connection closes.
async fn grpc_connect(addr: SocketAddr) -> (GrpcSender, tokio::task::JoinHandle<()>) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    (
        sender,
        tokio::spawn(async move {
            let _ = connection.await;
        }),
    )
}

/// One `TraceService/Export` call; the `grpc-status` of the reply (headers or trailers).
async fn grpc_export(sender: &mut GrpcSender, token: Option<&str>, grpc_encoding: Option<&str>, frame: Vec<u8>) -> Option<i32> {
    let mut request = http::Request::post("http://tracegate/opentelemetry.proto.collector.trace.v1.TraceService/Export")
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    if let Some(encoding) = grpc_encoding {
        request = request.header("grpc-encoding", encoding);
    }
    let response = sender.send_request(request.body(Full::new(Bytes::from(frame))).unwrap()).await.ok()?;
    let code = |headers: &http::HeaderMap| headers.get("grpc-status")?.to_str().ok()?.parse::<i32>().ok();
    if let Some(code) = code(response.headers()) {
        return Some(code);
    }
    let collected = response.into_body().collect().await.ok()?;
    collected.trailers().and_then(code)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_and_half_open_connections_is_shed_and_the_api_still_answers() {
    let _serial = SERIAL.lock().await;
    let (gateway, _dir) = common::start_gateway(
        r#"
receivers:
  otlp:
    http: {endpoint: "127.0.0.1:0", max_connections: 256, read_header_timeout: 1s}
exporters:
  local: {type: embedded, path: "{data}"}
api: {endpoint: "127.0.0.1:0", max_connections: 256, read_header_timeout: 1s}
service:
  pipelines:
    traces: {receivers: [otlp], exporters: [local]}
"#,
    )
    .await;
    let api = gateway.api_addr().unwrap();
    let watch = Duration::from_secs(6);
    let settled = Arc::new(AtomicUsize::new(0));
    let connecting = Arc::new(tokio::sync::Semaphore::new(200));
    let mut flood = Vec::new();
    for addr in [api, gateway.http_addr().unwrap()] {
        // 2000 idle connections and 500 that start a request and never finish it, per port.
        for i in 0..2500 {
            flood.push(tokio::spawn(flood_connection(addr, i >= 2000, watch, connecting.clone(), settled.clone())));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while settled.load(Ordering::SeqCst) < flood.len() {
        assert!(Instant::now() < deadline, "the flood did not settle: {} of {}", settled.load(Ordering::SeqCst), flood.len());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The flood is in place; from here on only the gateway has work to do.
    let cpu_before = cpu_time("self");
    let window = Instant::now();
    let answered = health_answered_within(api, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(window.elapsed())).await;
    let cpu = cpu_time("self") - cpu_before;
    let spent = window.elapsed();

    let mut fates = Vec::new();
    for connection in flood {
        fates.push(connection.await.unwrap());
    }
    let open = fates.iter().filter(|f| **f == Fate::Open).count();
    let closed = fates.iter().filter(|f| **f == Fate::Closed).count();
    assert!(answered.is_some(), "GET /healthz on a fresh connection was not answered within 5 s of the flood");
    assert_eq!(open, 0, "flood connections still open {watch:?} after they were made ({closed} closed); read_header_timeout is 1s");
    assert!(cpu < Duration::from_millis(500), "the process used {cpu:?} of CPU in {spent:?} under the flood");
    gateway.shutdown().await;
}

/// Kills the gateway child when a test ends, however it ends.
struct ChildGateway(Child);

impl Drop for ChildGateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_file_descriptors_backs_off_instead_of_spinning() {
    let _serial = SERIAL.lock().await;
    const FD_LIMIT: usize = 128;
    let (grpc, http, api) = (free_port(), free_port(), free_port());
    let mut config = tempfile::NamedTempFile::new().unwrap();
    // Limits far above the descriptors the process has, so that accept itself fails (EMFILE).
    write!(
        config,
        r#"
receivers:
  otlp:
    grpc: {{endpoint: "127.0.0.1:{grpc}", max_connections: 1000}}
    http: {{endpoint: "127.0.0.1:{http}", max_connections: 1000}}
exporters:
  log: {{type: debug}}
api: {{endpoint: "127.0.0.1:{api}", max_connections: 1000}}
service:
  pipelines:
    traces: {{receivers: [otlp], exporters: [log]}}
"#
    )
    .unwrap();
    let log = tempfile::NamedTempFile::new().unwrap();
    // `ulimit -n` sets the hard limit too, so the gateway cannot raise it.
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -n {FD_LIMIT} && exec \"$0\" run --config \"$1\""))
        .arg(env!("CARGO_BIN_EXE_tracegate"))
        .arg(config.path())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log.reopen().unwrap()))
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let _child = ChildGateway(child);
    let api_addr: SocketAddr = format!("127.0.0.1:{api}").parse().unwrap();
    assert!(health_answered_within(api_addr, Duration::from_secs(20)).await.is_some(), "tracegate did not start");

    // Three times as many connections as the process has descriptors, on the gRPC and HTTP ports.
    let mut held = Vec::new();
    for port in [grpc, http] {
        for _ in 0..FD_LIMIT * 3 / 2 {
            if let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(("127.0.0.1", port))).await {
                held.push(stream);
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let lines = || std::fs::read_to_string(log.path()).unwrap_or_default().lines().count();
    let (cpu_before, lines_before) = (cpu_time(&pid), lines());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (cpu, logged) = (cpu_time(&pid) - cpu_before, lines() - lines_before);

    drop(held);
    let answered = health_answered_within(api_addr, Duration::from_secs(5)).await;
    let output = std::fs::read_to_string(log.path()).unwrap_or_default();
    let tail: Vec<&str> = output.lines().rev().take(10).collect();
    assert!(cpu < Duration::from_millis(500), "the gateway used {cpu:?} of CPU in 3 s out of descriptors; log tail: {tail:#?}");
    assert!(logged <= 10, "the gateway logged {logged} lines in 3 s out of descriptors; log tail: {tail:#?}");
    assert!(answered.is_some(), "the API did not answer within 5 s once descriptors were free again; log tail: {tail:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_are_closed_on_http1_and_grpc() {
    let _serial = SERIAL.lock().await;
    let (gateway, _dir) = common::start_gateway(
        r#"
receivers:
  otlp:
    grpc: {endpoint: "127.0.0.1:0", keepalive: {server_parameters: {max_connection_idle: 1s}}}
    http: {endpoint: "127.0.0.1:0", idle_timeout: 1s}
exporters:
  log: {type: debug}
api: {endpoint: "127.0.0.1:0", idle_timeout: 1s}
service:
  pipelines:
    traces: {receivers: [otlp], exporters: [log]}
"#,
    )
    .await;

    // HTTP/1.1 keep-alive on the OTLP/HTTP and the API port: one request, then silence.
    let body = service_request("shop-api").encode_to_vec();
    let otlp = format!(
        "POST /v1/traces HTTP/1.1\r\nHost: tracegate\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut otlp = otlp.into_bytes();
    otlp.extend_from_slice(&body);
    let health = b"GET /healthz HTTP/1.1\r\nHost: tracegate\r\n\r\n".to_vec();
    for (addr, request) in [(gateway.http_addr().unwrap(), otlp), (gateway.api_addr().unwrap(), health)] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(&request).await.unwrap();
        let started = Instant::now();
        let mut reply = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(4), stream.read_to_end(&mut reply)).await;
        let reply = String::from_utf8_lossy(&reply);
        assert!(reply.starts_with("HTTP/1.1 200"), "{addr}: {reply}");
        assert!(read.is_ok(), "{addr}: an idle keep-alive connection was still open after 4 s (idle_timeout: 1s)");
        assert!(started.elapsed() >= Duration::from_millis(800), "{addr}: closed after {:?}, before idle_timeout", started.elapsed());
    }

    // gRPC: one export, then no RPC; max_connection_idle sends GOAWAY and closes.
    let (mut sender, connection) = grpc_connect(gateway.grpc_addr().unwrap()).await;
    let frame = grpc_frame(false, &service_request("shop-api").encode_to_vec());
    assert_eq!(grpc_export(&mut sender, None, None, frame).await, Some(0));
    let started = Instant::now();
    assert!(
        tokio::time::timeout(Duration::from_secs(4), connection).await.is_ok(),
        "an idle gRPC connection was still open after 4 s (max_connection_idle: 1s)"
    );
    assert!(started.elapsed() >= Duration::from_millis(800), "closed after {:?}, before max_connection_idle", started.elapsed());
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_refuses_a_forged_token_before_inflating_the_message() {
    let _serial = SERIAL.lock().await;
    let (gateway, _dir) = common::start_gateway(&fixture::secured_config()).await;
    let idp = Idp::Auth0;
    let tokens = mint(&[
        // A configured issuer and a well-formed token, signed with a secret that is not the issuer's.
        json!({"alg": "HS256", "secret": "not-the-issuers-secret-0123456789-abcdefgh", "claims": service_claims(idp, "shop-api")}),
        spec(idp, service_claims(idp, "shop-api")),
    ]);
    let (forged, genuine) = (&tokens[0], &tokens[1]);
    let (mut sender, _connection) = grpc_connect(gateway.grpc_addr().unwrap()).await;

    // 12 MiB of zeros in about 12 KiB of gzip: within max_recv_msg_size (16 MiB), not protobuf.
    let bomb = grpc_frame(true, &common::gzip_zeros(12 << 20));
    reset_peak_rss();
    let before = proc_status_bytes("VmRSS:");
    let code = grpc_export(&mut sender, Some(forged), Some("gzip"), bomb).await;
    let grown = proc_status_bytes("VmHWM:").saturating_sub(before);
    assert_eq!(code, Some(tonic::Code::Unauthenticated as i32), "a forged token with a compressed message");
    assert!(grown < 6 << 20, "the process grew by {} MiB at its peak while refusing a forged token", grown >> 20);

    // The same door lets the genuine token through, and the handler sees its principal.
    let own = grpc_frame(false, &service_request("shop-api").encode_to_vec());
    let posing = grpc_frame(false, &service_request("crm-api").encode_to_vec());
    assert_eq!(grpc_export(&mut sender, None, None, own.clone()).await, Some(tonic::Code::Unauthenticated as i32));
    assert_eq!(grpc_export(&mut sender, Some(genuine), None, posing).await, Some(tonic::Code::PermissionDenied as i32));
    assert_eq!(grpc_export(&mut sender, Some(genuine), None, own).await, Some(tonic::Code::Ok as i32));
    gateway.shutdown().await;
}

#[test]
fn zero_connection_limits_are_refused_with_their_path() {
    let config = |grpc: &str, http: &str, api: &str| {
        format!(
            r#"
receivers:
  otlp:
    grpc: {{endpoint: "127.0.0.1:0"{grpc}}}
    http: {{endpoint: "127.0.0.1:0"{http}}}
exporters:
  log: {{type: debug}}
api: {{endpoint: "127.0.0.1:0"{api}}}
service:
  pipelines:
    traces: {{receivers: [otlp], exporters: [log]}}
"#
        )
    };
    let cases = [
        (config(", max_connections: 0", "", ""), "receivers.otlp.grpc.max_connections: must be at least 1"),
        (
            config(", keepalive: {server_parameters: {max_connection_idle: 0s}}", "", ""),
            "receivers.otlp.grpc.keepalive.server_parameters.max_connection_idle: must be longer than 0s",
        ),
        (
            config(", keepalive: {server_parameters: {time: 0s}}", "", ""),
            "receivers.otlp.grpc.keepalive.server_parameters.time: must be longer than 0s",
        ),
        (config("", ", read_header_timeout: 0s", ""), "receivers.otlp.http.read_header_timeout: must be longer than 0s"),
        (config("", "", ", idle_timeout: 0s"), "api.idle_timeout: must be longer than 0s"),
    ];
    for (yaml, expected) in cases {
        let error = tracegate::Config::from_yaml(&yaml).expect_err(expected).to_string();
        assert!(error.contains(expected), "{expected:?} not in:\n{error}");
    }
    let fine =
        config(", max_connections: 64, read_header_timeout: 5s", ", header_read_timeout: 2s, idle_timeout: 30s", ", max_connections: 8");
    let config = tracegate::Config::from_yaml(&fine).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.api.max_connections, Some(8));
}
