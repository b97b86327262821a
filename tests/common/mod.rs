//! Shared test fixtures: a gateway on port 0, a recording OTLP sink that can fail on demand,
//! OpenTelemetry SDK pipelines, and small readers for the gateway's replies.
#![allow(dead_code)]

pub mod ports;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::trace::v1::Span;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracegate::{Config, Gateway};

/// `uncompressed` zero bytes, gzip-compressed without ever holding them in memory.
pub fn gzip_zeros(uncompressed: usize) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..uncompressed / zeros.len() {
        encoder.write_all(&zeros).unwrap();
    }
    encoder.finish().unwrap()
}

/// Starts a gateway from YAML; `{data}` in the text is replaced by a fresh temp dir.
pub async fn start_gateway(yaml: &str) -> (Gateway, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let yaml = yaml.replace("{data}", dir.path().to_str().unwrap());
    let config = Config::from_yaml(&yaml).unwrap_or_else(|e| panic!("test config invalid: {e}"));
    let gateway = Gateway::start(config).await.expect("gateway starts");
    (gateway, dir)
}

/// How the sink answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SinkMode {
    Accept,
    /// UNAVAILABLE (retryable).
    Unavailable,
    /// INVALID_ARGUMENT (permanent).
    Reject,
    /// RESOURCE_EXHAUSTED with a RetryInfo of 200 ms (throttling).
    Throttle,
    /// INVALID_ARGUMENT for any request holding a span with this name, as a strict downstream
    /// refuses a whole request for one span it cannot take; other requests are accepted.
    RefuseSpansNamed(&'static str),
}

/// A downstream OTLP/gRPC receiver that records every span it accepts.
#[derive(Clone)]
pub struct Sink {
    pub addr: SocketAddr,
    state: Arc<SinkState>,
    stop: CancellationToken,
}

struct SinkState {
    requests: Mutex<Vec<ExportTraceServiceRequest>>,
    mode: Mutex<SinkMode>,
    attempts: AtomicUsize,
    slow: AtomicBool,
    /// The metadata (headers) of the last call.
    metadata: Mutex<Option<tonic::metadata::MetadataMap>>,
}

struct SinkService(Arc<SinkState>);

#[tonic::async_trait]
impl TraceService for SinkService {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.attempts.fetch_add(1, Ordering::SeqCst);
        *self.0.metadata.lock().unwrap() = Some(request.metadata().clone());
        if self.0.slow.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        let mode = *self.0.mode.lock().unwrap();
        match mode {
            SinkMode::RefuseSpansNamed(name) => {
                let request = request.into_inner();
                let poisoned = request.resource_spans.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans).any(|s| s.name == name);
                if poisoned {
                    return Err(tonic::Status::invalid_argument(format!("span {name} is not acceptable")));
                }
                self.0.requests.lock().unwrap().push(request);
                Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
            }
            SinkMode::Accept => {
                self.0.requests.lock().unwrap().push(request.into_inner());
                Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
            }
            SinkMode::Unavailable => Err(tonic::Status::unavailable("sink is down for the test")),
            SinkMode::Reject => Err(tonic::Status::invalid_argument("sink rejects for the test")),
            SinkMode::Throttle => {
                use tonic_types::{ErrorDetails, StatusExt};
                let details = ErrorDetails::with_retry_info(Some(Duration::from_millis(200)));
                Err(tonic::Status::with_error_details(tonic::Code::ResourceExhausted, "slow down", details))
            }
        }
    }
}

impl Sink {
    pub async fn start() -> Sink {
        Sink::start_on("127.0.0.1:0").await
    }

    pub async fn start_on(addr: &str) -> Sink {
        Sink::start_with(addr, None).await
    }

    /// A sink that speaks TLS with the given certificate chain and key (PEM).
    pub async fn start_tls(cert_pem: &str, key_pem: &str) -> Sink {
        Sink::start_with("127.0.0.1:0", Some(tonic::transport::Identity::from_pem(cert_pem, key_pem))).await
    }

    async fn start_with(addr: &str, tls: Option<tonic::transport::Identity>) -> Sink {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(SinkState {
            requests: Mutex::default(),
            mode: Mutex::new(SinkMode::Accept),
            attempts: AtomicUsize::new(0),
            slow: AtomicBool::new(false),
            metadata: Mutex::default(),
        });
        let stop = CancellationToken::new();
        // Replies are gzip-compressed to a client that accepts it (the exporter does: grpc-go
        // servers compress replies).
        let service = TraceServiceServer::new(SinkService(state.clone()))
            .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
            .send_compressed(tonic::codec::CompressionEncoding::Gzip)
            .max_decoding_message_size(64 << 20);
        let shutdown = stop.clone().cancelled_owned();
        let mut builder = tonic::transport::Server::builder();
        if let Some(identity) = tls {
            builder = builder.tls_config(tonic::transport::ServerTlsConfig::new().identity(identity)).unwrap();
        }
        tokio::spawn(async move {
            builder
                .add_service(service)
                .serve_with_incoming_shutdown(tokio_stream::wrappers::TcpListenerStream::new(listener), shutdown)
                .await
                .unwrap();
        });
        Sink { addr, state, stop }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_mode(&self, mode: SinkMode) {
        *self.state.mode.lock().unwrap() = mode;
    }

    /// Replies never come (to test per-attempt timeouts).
    pub fn set_slow(&self, slow: bool) {
        self.state.slow.store(slow, Ordering::SeqCst);
    }

    /// The metadata (headers) of the last call, if there was one.
    pub fn last_metadata(&self) -> Option<tonic::metadata::MetadataMap> {
        self.state.metadata.lock().unwrap().clone()
    }

    pub fn attempts(&self) -> usize {
        self.state.attempts.load(Ordering::SeqCst)
    }

    pub fn stop(&self) {
        self.stop.cancel();
    }

    pub fn spans(&self) -> Vec<(String, Span)> {
        let mut out = Vec::new();
        for req in self.state.requests.lock().unwrap().iter() {
            for rs in &req.resource_spans {
                let service = rs
                    .resource
                    .as_ref()
                    .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
                    .map(|kv| attr_string(kv.value.as_ref()))
                    .unwrap_or_default();
                for ss in &rs.scope_spans {
                    for span in &ss.spans {
                        out.push((service.clone(), span.clone()));
                    }
                }
            }
        }
        out
    }

    /// The encoded size of every request received.
    pub fn request_sizes(&self) -> Vec<usize> {
        use prost::Message;
        self.state.requests.lock().unwrap().iter().map(|r| r.encoded_len()).collect()
    }

    pub fn span_count(&self) -> usize {
        self.spans().len()
    }

    /// Waits until the sink holds at least `n` spans, or panics after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) {
        eventually(&format!("the sink holding {n} spans"), timeout, || async { when(self.span_count(), |&c| c >= n) }).await;
    }
}

/// What one look at an awaited condition found: the value once it holds, otherwise what was seen.
/// `Option<T>` (nothing to show while waiting) and `Result<T, String>` (`Err` says what was seen).
pub trait Observed<T> {
    fn observed(self) -> Result<T, String>;
}

impl<T> Observed<T> for Option<T> {
    fn observed(self) -> Result<T, String> {
        self.ok_or_else(|| "None".to_string())
    }
}

impl<T> Observed<T> for Result<T, String> {
    fn observed(self) -> Result<T, String> {
        self
    }
}

/// Polls `look` (every 25 ms) until it yields a value and returns it; panics after `within`,
/// naming `what` was awaited and the last thing `look` saw. The one way tests wait for something
/// to happen: never a fixed sleep.
pub async fn eventually<T, O, F, Fut>(what: &str, within: Duration, mut look: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = O>,
    O: Observed<T>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let last = match look().await.observed() {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        if tokio::time::Instant::now() >= deadline {
            panic!("waited {within:?} for {what}; last seen: {last}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `Ok(value)` when `ready(&value)`, else `Err` with the value's `Debug`: for `eventually`.
pub fn when<T: std::fmt::Debug>(value: T, ready: impl FnOnce(&T) -> bool) -> Result<T, String> {
    if ready(&value) {
        Ok(value)
    } else {
        Err(format!("{value:?}"))
    }
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port` (a gateway started as a
/// process).
pub async fn wait_listening(port: u16, within: Duration) {
    eventually(&format!("a listener on port {port}"), within, || async {
        match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            // Nothing listens yet but the kernel joined the socket to itself (its source port
            // happened to be `port`): not a listener.
            Ok(s) if s.local_addr().ok() == s.peer_addr().ok() => Err("connected to itself".to_string()),
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await
}

/// Waits until `GET /api/v1/orders/{order}` answers 200 with `events` events; returns the timeline.
pub async fn wait_timeline(api: SocketAddr, order: &str, events: usize, within: Duration) -> serde_json::Value {
    let url = format!("http://{api}/api/v1/orders/{order}");
    let ready = |(s, b): &(u16, serde_json::Value)| *s == 200 && b["events"].as_array().map(Vec::len) == Some(events);
    eventually(&format!("the timeline of {order} with {events} events"), within, || async { when(get_json(&url).await, ready) }).await.1
}

/// Waits until the gateway's metric `name` (summed over `labels`, see [`metric`]) satisfies
/// `ready`; returns its value.
/// A gateway that is not listening yet (or again, after a reload) is waited for too.
pub async fn wait_metric(api: SocketAddr, name: &str, labels: &[(&str, &str)], ready: impl Fn(f64) -> bool, within: Duration) -> f64 {
    eventually(&format!("{name}{labels:?}"), within, || async {
        let text = try_metrics_text(api).await?;
        when(metric(&text, name, labels), |&v| ready(v))
    })
    .await
}

/// `GET /metrics`, or why it could not be had.
pub async fn try_metrics_text(api: SocketAddr) -> Result<String, String> {
    use http_body_util::BodyExt;
    let req = http::Request::get(format!("http://{api}/metrics")).body(http_body_util::Full::new(bytes::Bytes::new())).unwrap();
    let resp = http_client().request(req).await.map_err(|e| format!("GET /metrics: {e}"))?;
    let body = resp.into_body().collect().await.map_err(|e| format!("GET /metrics body: {e}"))?.to_bytes();
    String::from_utf8(body.to_vec()).map_err(|e| e.to_string())
}

pub fn attr_string(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    match value.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        _ => String::new(),
    }
}

/// The value of a span attribute as a string.
pub fn span_attr(span: &Span, key: &str) -> Option<String> {
    span.attributes.iter().find(|kv| kv.key == key).map(|kv| attr_string(kv.value.as_ref()))
}

/// A plain HTTP/1 client for the tests' own requests.
pub fn http_client(
) -> hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, http_body_util::Full<bytes::Bytes>> {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// Sends one request and returns status, headers and body.
pub async fn send(method: &str, url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> (u16, http::HeaderMap, Vec<u8>) {
    use http_body_util::BodyExt;
    let mut req = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = http_client().request(req.body(http_body_util::Full::new(bytes::Bytes::from(body))).unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes().to_vec();
    (status, headers, body)
}

pub async fn get_json(url: &str) -> (u16, serde_json::Value) {
    let (status, _, body) = send("GET", url, &[], vec![]).await;
    (status, serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
}

/// A counter from the Prometheus text, summed over label sets that contain every `labels` pair.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub async fn metrics_text(api: SocketAddr) -> String {
    let (_, _, body) = send("GET", &format!("http://{api}/metrics"), &[], vec![]).await;
    String::from_utf8(body).unwrap()
}
