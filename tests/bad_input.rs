//! Bad input at the OTLP receivers: every malformed, oversized or unsupported request gets the
//! status the OTLP specification asks for, nothing of it reaches the downstream receiver, and a
//! valid request sent afterwards arrives whole. Each test runs its own gateway (OTLP receivers on
//! port 0, an `otlp` exporter to a recording `Sink`).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{gzip_zeros, metric, metrics_text, send, span_attr, start_gateway, Sink};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use tracegate::receivers::RpcStatus;
use tracegate::Gateway;

/// The tests of this file run one at a time: the bomb test measures the process's memory, which
/// a concurrently running test would disturb.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const PROTOBUF: (&str, &str) = ("content-type", "application/x-protobuf");
const JSON: (&str, &str) = ("content-type", "application/json");

/// Spans an exporter queue holds; a request with more is refused as too large.
const QUEUE_SIZE: usize = 1000;

struct Fixture {
    gateway: Gateway,
    _dir: tempfile::TempDir,
    sink: Sink,
}

impl Fixture {
    /// Receiver `otlp` (gRPC and HTTP) takes messages and bodies up to 64 KiB; receiver `otlp/roomy`
    /// takes messages and bodies up to 4 MiB, enough for a compressed decompression bomb.
    async fn start() -> Fixture {
        let sink = Sink::start().await;
        let yaml = format!(
            r#"
receivers:
  otlp:
    grpc: {{endpoint: "127.0.0.1:0", max_recv_msg_size: 64KiB}}
    http: {{endpoint: "127.0.0.1:0", max_request_body_size: 64KiB}}
  otlp/roomy:
    grpc: {{endpoint: "127.0.0.1:0", max_recv_msg_size: 4MiB}}
    http: {{endpoint: "127.0.0.1:0", max_request_body_size: 4MiB}}
exporters:
  sink:
    type: otlp
    endpoint: "{endpoint}"
    sending_queue: {{queue_size: {QUEUE_SIZE}}}
    batch: {{max_wait: 50ms}}
    retry_on_failure: {{initial_interval: 100ms}}
api:
  endpoint: "127.0.0.1:0"
service:
  pipelines:
    traces: {{receivers: [otlp, otlp/roomy], exporters: [sink]}}
"#,
            endpoint = sink.endpoint()
        );
        let (gateway, dir) = start_gateway(&yaml).await;
        Fixture { gateway, _dir: dir, sink }
    }

    fn traces_url(&self) -> String {
        format!("http://{}/v1/traces", self.gateway.addresses.http["otlp"])
    }

    fn roomy_traces_url(&self) -> String {
        format!("http://{}/v1/traces", self.gateway.addresses.http["otlp/roomy"])
    }

    fn grpc_addr(&self) -> SocketAddr {
        self.gateway.addresses.grpc["otlp"]
    }

    fn roomy_grpc_addr(&self) -> SocketAddr {
        self.gateway.addresses.grpc["otlp/roomy"]
    }

    fn api_addr(&self) -> SocketAddr {
        self.gateway.api_addr().expect("the API listens")
    }

    /// Sends a valid request of `n` spans and checks that the sink then holds exactly
    /// `n` spans more than `before`: the bad requests before it lost nothing and leaked nothing.
    async fn assert_still_delivers(&self, n: usize) {
        let before = self.sink.span_count();
        let (status, _, body) = send("POST", &self.traces_url(), &[PROTOBUF], request(n, "after").encode_to_vec()).await;
        assert_eq!(status, 200, "a valid request after bad ones: {}", String::from_utf8_lossy(&body));
        self.sink.wait_for(before + n, Duration::from_secs(10)).await;
        settle().await;
        let after: Vec<String> = self.sink.spans().into_iter().map(|(_, s)| s.name).collect();
        assert_eq!(after.len(), before + n, "exactly the valid spans arrive, nothing of the bad requests");
        assert_eq!(after.iter().filter(|name| name.starts_with("after-")).count(), n);
    }
}

/// Longer than the exporter's batch wait: whatever was going to arrive has arrived.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(300)).await;
}

/// A valid request of `n` spans named `{tag}-{i}` in one trace of service `shop-api`.
fn request(n: usize, tag: &str) -> ExportTraceServiceRequest {
    let spans = (0..n)
        .map(|i| Span {
            trace_id: vec![0xab; 16],
            span_id: ((i as u64) + 1).to_be_bytes().to_vec(),
            name: format!("{tag}-{i}"),
            kind: 2,
            start_time_unix_nano: 1_763_719_200_000_000_000,
            end_time_unix_nano: 1_763_719_200_010_000_000,
            attributes: vec![string_kv("order.id", "A-1001")],
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: vec![string_kv("service.name", "shop-api")], ..Default::default() }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
}

fn string_kv(key: &str, value: &str) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_protobuf_is_400_with_a_google_rpc_status() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::start().await;
    // 0x74 opens field 14 with wire type 4 (end group) that no group started: never valid.
    let garbage = b"this is not protobuf \xff\xff\xff\xff".to_vec();
    let (status, headers, body) = send("POST", &fx.traces_url(), &[PROTOBUF], garbage).await;
    assert_eq!(status, 400);
    assert_eq!(headers["content-type"], "application/x-protobuf");
    let rpc = RpcStatus::decode(body.as_slice()).expect("the error body is a google.rpc.Status");
    assert_eq!(rpc.code, 3, "INVALID_ARGUMENT");
    assert!(rpc.message.contains("protobuf"), "the message says what was wrong: {:?}", rpc.message);
    fx.assert_still_delivers(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_json_is_400_with_a_json_status() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::start().await;
    let (status, headers, body) = send("POST", &fx.traces_url(), &[JSON], br#"{"resourceSpans": [{"scopeSpans": "#.to_vec()).await;
    assert_eq!(status, 400);
    assert_eq!(headers["content-type"], "application/json");
    let error: serde_json::Value = serde_json::from_slice(&body).expect("the error body is JSON");
    assert_eq!(error["code"], 3, "{error}");
    let message = error["message"].as_str().expect("a message string");
    assert!(message.contains("JSON"), "{message}");
    fx.assert_still_delivers(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_content_type_is_415() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::start().await;
    let (status, _, _) = send("POST", &fx.traces_url(), &[("content-type", "text/plain")], request(2, "plain").encode_to_vec()).await;
    assert_eq!(status, 415);
    let (status, _, _) = send("POST", &fx.traces_url(), &[], request(2, "untyped").encode_to_vec()).await;
    assert_eq!(status, 415, "no content type at all");
    fx.assert_still_delivers(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_is_405() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::start().await;
    let (status, headers, _) = send("GET", &fx.traces_url(), &[], vec![]).await;
    assert_eq!(status, 405);
    assert_eq!(headers["allow"], "POST");
    fx.assert_still_delivers(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_max_request_body_size_is_413() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::start().await;
    // A well-formed request of about 100 KiB against the 64 KiB limit.
    let mut big = request(1, "big");
    big.resource_spans[0].scope_spans[0].spans[0].attributes.push(string_kv("padding", &"x".repeat(100 << 10)));
    let body = big.encode_to_vec();
    assert!(body.len() > 64 << 10);
    let (status, _, body) = send("POST", &fx.traces_url(), &[PROTOBUF], body).await;
    assert_eq!(status, 413);
    let rpc = RpcStatus::decode(body.as_slice()).expect("a google.rpc.Status");
    assert!(rpc.message.contains("65536"), "the message names the limit: {:?}", rpc.message);
    fx.assert_still_delivers(2).await;
}

/// A line of `/proc/self/status` in bytes; the gateway runs in-process, so its memory shows here.
fn proc_status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("no {field} line"));
    let kib: u64 = line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("a size in kB");
    kib * 1024
}

/// Starts measuring the peak resident size afresh (`VmHWM` := `VmRSS`). Memory freed before the
/// measurement ends would not show in `VmRSS`; the peak catches a buffer that was inflated and
/// dropped again.
fn reset_peak_rss() {
    std::fs::write("/proc/self/clear_refs", "5").expect("resetting VmHWM through /proc/self/clear_refs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_bomb_is_413_without_inflating_it() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::start().await;
    let bomb = tokio::task::spawn_blocking(|| gzip_zeros(1 << 30)).await.unwrap();
    assert!(bomb.len() < 4 << 20, "the compressed bomb ({} bytes) passes the 4 MiB body limit", bomb.len());

    reset_peak_rss();
    let before = proc_status_bytes("VmRSS:");
    let (status, _, body) = send("POST", &fx.roomy_traces_url(), &[PROTOBUF, ("content-encoding", "gzip")], bomb).await;
    let grown = proc_status_bytes("VmHWM:").saturating_sub(before);
    assert_eq!(status, 413);
    let rpc = RpcStatus::decode(body.as_slice()).expect("a google.rpc.Status");
    assert!(rpc.message.contains("decompression bomb"), "{:?}", rpc.message);
    assert!(grown < 16 << 20, "the process grew by {} MiB at its peak while refusing a 1 GiB bomb", grown >> 20);
    fx.assert_still_delivers(4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zstd_body_is_accepted() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::start().await;
    let body = zstd::encode_all(request(7, "zstd").encode_to_vec().as_slice(), 3).unwrap();
    let (status, _, reply) = send("POST", &fx.traces_url(), &[PROTOBUF, ("content-encoding", "zstd")], body).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&reply));
    fx.sink.wait_for(7, Duration::from_secs(10)).await;
    let names: Vec<String> = fx.sink.spans().into_iter().map(|(_, s)| s.name).collect();
    assert_eq!(names.iter().filter(|n| n.starts_with("zstd-")).count(), 7);
    fx.assert_still_delivers(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_content_encoding_is_415() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::start().await;
    let (status, _, body) =
        send("POST", &fx.traces_url(), &[PROTOBUF, ("content-encoding", "br")], request(2, "brotli").encode_to_vec()).await;
    assert_eq!(status, 415);
    let rpc = RpcStatus::decode(body.as_slice()).expect("a google.rpc.Status");
    assert!(rpc.message.contains("\"br\""), "the message names the encoding: {:?}", rpc.message);
    fx.assert_still_delivers(2).await;
}

/// OTLP/JSON as the specification writes it: hex trace and span ids, camelCase keys, the span
/// kind as an integer, 64-bit integers as strings.
const HAND_WRITTEN_JSON: &str = r#"{
  "resourceSpans": [{
    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "crm-api"}}]},
    "scopeSpans": [{
      "scope": {"name": "hand-written", "version": "1.0"},
      "spans": [{
        "traceId": "5b8efff798038103d269b633813fc60c",
        "spanId": "eee19b7ec3c1b174",
        "parentSpanId": "",
        "name": "PUT /orders/A-1001/status",
        "kind": 2,
        "startTimeUnixNano": "1763719200000000000",
        "endTimeUnixNano": "1763719200012500000",
        "attributes": [
          {"key": "order.id", "value": {"stringValue": "A-1001"}},
          {"key": "order.new_status", "value": {"stringValue": "accepted"}},
          {"key": "http.response.status_code", "value": {"intValue": "200"}},
          {"key": "crm.priority", "value": {"boolValue": true}}
        ],
        "status": {"code": 1}
      }]
    }]
  }]
}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_written_otlp_json_arrives_intact() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::start().await;
    let (status, headers, body) = send("POST", &fx.traces_url(), &[JSON], HAND_WRITTEN_JSON.as_bytes().to_vec()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(headers["content-type"], "application/json");
    fx.sink.wait_for(1, Duration::from_secs(10)).await;
    let spans = fx.sink.spans();
    assert_eq!(spans.len(), 1);
    let (service, span) = &spans[0];
    assert_eq!(service, "crm-api");
    assert_eq!(span.trace_id, hex::decode("5b8efff798038103d269b633813fc60c").unwrap());
    assert_eq!(span.span_id, [0xee, 0xe1, 0x9b, 0x7e, 0xc3, 0xc1, 0xb1, 0x74]);
    assert!(span.parent_span_id.is_empty());
    assert_eq!(span.name, "PUT /orders/A-1001/status");
    assert_eq!(span.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(span.start_time_unix_nano, 1_763_719_200_000_000_000);
    assert_eq!(span.end_time_unix_nano, 1_763_719_200_012_500_000);
    assert_eq!(span_attr(span, "order.id").as_deref(), Some("A-1001"));
    assert_eq!(span_attr(span, "order.new_status").as_deref(), Some("accepted"));
    let status_code = span.attributes.iter().find(|kv| kv.key == "http.response.status_code").and_then(|kv| kv.value.clone());
    assert_eq!(status_code.and_then(|v| v.value), Some(any_value::Value::IntValue(200)), "an integer, not a string");
    assert_eq!(span_attr(span, "crm.priority").as_deref(), Some("true"));
    assert_eq!(span.status.as_ref().map(|s| s.code), Some(1));
    fx.assert_still_delivers(1).await;
}

/// A gRPC codec that sends its bytes as they are, so a test can put anything on the wire.
#[derive(Clone, Copy, Default)]
struct RawCodec;

struct RawEncoder;

struct RawDecoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let mut out = vec![0u8; bytes::Buf::remaining(src)];
        bytes::Buf::copy_to_slice(src, &mut out);
        Ok(Some(out))
    }
}

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

/// Sends `body` as the message of one `TraceService/Export` call.
async fn grpc_export_raw(addr: SocketAddr, body: Vec<u8>) -> Result<Vec<u8>, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.expect("connects");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("channel ready");
    let path = http::uri::PathAndQuery::from_static("/opentelemetry.proto.collector.trace.v1.TraceService/Export");
    grpc.unary(tonic::Request::new(body), path, RawCodec).await.map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_garbage_is_invalid_argument() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::start().await;
    let status = grpc_export_raw(fx.grpc_addr(), b"this is not protobuf \xff\xff\xff\xff".to_vec()).await.expect_err("garbage is refused");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "OTLP asks for INVALID_ARGUMENT on malformed data: {status:?}");

    // The same raw path carries a valid request, so the refusal above was about the bytes.
    let reply = grpc_export_raw(fx.grpc_addr(), request(5, "grpc-raw").encode_to_vec()).await.expect("a valid raw request is accepted");
    assert!(reply.is_empty(), "an empty ExportTraceServiceResponse: {reply:?}");
    fx.sink.wait_for(5, Duration::from_secs(10)).await;
    fx.assert_still_delivers(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_message_over_max_recv_msg_size_is_refused_without_retry() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::start().await;
    let mut big = request(1, "big");
    big.resource_spans[0].scope_spans[0].spans[0].attributes.push(string_kv("padding", &"x".repeat(100 << 10)));
    let status = grpc_export_raw(fx.grpc_addr(), big.encode_to_vec()).await.expect_err("a message over 64 KiB is refused");
    // OTLP clients retry CANCELLED, DEADLINE_EXCEEDED, ABORTED, OUT_OF_RANGE, UNAVAILABLE and
    // DATA_LOSS: a request that can never fit must not be answered with one of them.
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "too large for ever, so not retryable: {status:?}");
    fx.assert_still_delivers(2).await;
}

/// A compressed message that inflates past `max_recv_msg_size` is refused with INVALID_ARGUMENT,
/// as a message too large as sent is (RESOURCE_EXHAUSTED, tonic's own answer, is retried by the
/// Java SDK).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_message_inflating_past_max_recv_msg_size_is_refused_without_retry() {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    let _serial = SERIAL.lock().await;
    let fx = Fixture::start().await;
    let mut big = request(1, "big");
    big.resource_spans[0].scope_spans[0].spans[0].attributes.push(string_kv("padding", &"x".repeat(1 << 20)));
    let mut client = TraceServiceClient::connect(format!("http://{}", fx.grpc_addr()))
        .await
        .unwrap()
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    let status = client.export(big).await.expect_err("1 MiB inflated is over 64 KiB");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "too large for ever, so not retryable: {status:?}");
    fx.assert_still_delivers(2).await;
}

/// What a raw gRPC call got back: the HTTP status, the headers, and `grpc-status` and
/// `grpc-message` (from the headers of a trailers-only reply, else from the trailers).
struct RawReply {
    http: u16,
    headers: http::HeaderMap,
    code: Option<i32>,
    message: String,
}

/// One `TraceService/Export` call over its own HTTP/2 connection, with a body as given.
async fn grpc_call(addr: SocketAddr, content_type: &str, grpc_encoding: Option<&str>, body: Vec<u8>) -> RawReply {
    use http_body_util::{BodyExt, Full};
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(stream)).await.unwrap();
    tokio::spawn(connection);
    let mut request = http::Request::post("http://tracegate/opentelemetry.proto.collector.trace.v1.TraceService/Export")
        .header("content-type", content_type)
        .header("te", "trailers");
    if let Some(encoding) = grpc_encoding {
        request = request.header("grpc-encoding", encoding);
    }
    let response = sender.send_request(request.body(Full::new(bytes::Bytes::from(body))).unwrap()).await.expect("a reply");
    let (parts, body) = response.into_parts();
    let trailers = body.collect().await.expect("the reply's body").trailers().cloned().unwrap_or_default();
    let status_from = if parts.headers.contains_key("grpc-status") { &parts.headers } else { &trailers };
    let header = |name: &str| status_from.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    RawReply {
        http: parts.status.as_u16(),
        code: header("grpc-status").and_then(|code| code.parse().ok()),
        message: header("grpc-message").map(|m| percent_decode(&m)).unwrap_or_default(),
        headers: parts.headers,
    }
}

/// `grpc-message` is percent-encoded.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], text.get(i + 1..i + 3).and_then(|hex| u8::from_str_radix(hex, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `message` behind a gRPC prefix with the given compressed flag and length.
fn grpc_frame(flag: u8, length: u32, message: &[u8]) -> Vec<u8> {
    [&[flag][..], &length.to_be_bytes(), message].concat()
}

/// Calls that are not one well-formed message each get their own clear refusal, are counted,
/// and lose nothing else: the same connection-less client then delivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_that_are_not_one_message_are_refused_each_with_its_reason() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::start().await;
    let valid = request(1, "bad").encode_to_vec();
    let len = valid.len() as u32;
    let gzipped = {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(&valid).unwrap();
        encoder.finish().unwrap()
    };
    // (what, content type, grpc-encoding, body, HTTP status, grpc-status, words of the message)
    type Case = (&'static str, &'static str, Option<&'static str>, Vec<u8>, u16, i32, &'static str);
    let cases: Vec<Case> = vec![
        ("JSON content type", "application/json", None, grpc_frame(0, len, &valid), 415, 3, "not gRPC"),
        ("no message", "application/grpc", None, vec![], 200, 3, "no message"),
        ("a cut prefix", "application/grpc", None, vec![0, 0, 0], 200, 3, "cut short"),
        ("a cut message", "application/grpc", None, grpc_frame(0, len + 10, &valid), 200, 3, "cut short"),
        (
            "two messages",
            "application/grpc",
            None,
            [grpc_frame(0, len, &valid), grpc_frame(0, len, &valid)].concat(),
            200,
            3,
            "one message",
        ),
        ("flag 7", "application/grpc", None, grpc_frame(7, len, &valid), 200, 3, "compressed flag 7"),
        ("announced over 64 KiB", "application/grpc", None, grpc_frame(0, 100 << 20, &valid), 200, 3, "larger than 65536"),
        (
            "compressed, no encoding",
            "application/grpc",
            None,
            grpc_frame(1, gzipped.len() as u32, &gzipped),
            200,
            3,
            "names no grpc-encoding",
        ),
        ("brotli", "application/grpc", Some("br"), grpc_frame(1, len, &valid), 200, 12, "\"br\" are not accepted"),
        ("corrupt gzip", "application/grpc", Some("gzip"), grpc_frame(1, len, &valid), 200, 3, "cannot decompress"),
        ("garbage", "application/grpc+proto", None, grpc_frame(0, 8, b"\x74garbage"), 200, 3, "invalid protobuf"),
    ];
    for (what, content_type, encoding, body, http, code, words) in cases {
        let reply = grpc_call(fx.grpc_addr(), content_type, encoding, body).await;
        assert_eq!(reply.http, http, "{what}");
        assert_eq!(reply.code, Some(code), "{what}: {}", reply.message);
        assert!(reply.message.contains(words), "{what}: {:?} should say {words:?}", reply.message);
        if code == 12 {
            let accepted = reply.headers.get("grpc-accept-encoding").map(|v| v.to_str().unwrap().to_string());
            assert_eq!(accepted.as_deref(), Some("gzip,zstd,deflate"), "{what}: the reply names what is accepted");
        }
    }
    // The same bytes, well formed: accepted, compressed or not, and the reply is a gRPC reply.
    let plain = grpc_call(fx.grpc_addr(), "application/grpc", None, grpc_frame(0, len, &valid)).await;
    assert_eq!((plain.http, plain.code), (200, Some(0)), "{}", plain.message);
    assert_eq!(plain.headers["content-type"], "application/grpc");
    let compressed = grpc_call(fx.grpc_addr(), "application/grpc", Some("gzip"), grpc_frame(1, gzipped.len() as u32, &gzipped)).await;
    assert_eq!((compressed.http, compressed.code), (200, Some(0)), "{}", compressed.message);
    fx.sink.wait_for(2, Duration::from_secs(10)).await;
    fx.assert_still_delivers(3).await;

    let text = metrics_text(fx.api_addr()).await;
    let refused = |reason: &str| {
        metric(&text, "tracegate_receiver_refused_requests_total", &[("receiver", "otlp"), ("transport", "grpc"), ("reason", reason)])
    };
    assert_eq!(refused("malformed"), 8.0, "{text}");
    assert_eq!(refused("unsupported"), 2.0, "{text}");
    assert_eq!(refused("too_large"), 1.0, "{text}");
}

/// Messages compressed to more than 64 KiB are inflated and decoded away from the executor
/// threads; whatever the encoding, every span arrives as sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_compressed_grpc_messages_arrive_whole_in_every_encoding() {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use tonic::codec::CompressionEncoding;
    let _serial = SERIAL.lock().await;
    let fx = Fixture::start().await;
    // 900 spans with 1 KiB of noise each: about 1 MiB, still several hundred KiB compressed.
    let large = |tag: &str| {
        let mut request = request(900, tag);
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for span in &mut request.resource_spans[0].scope_spans[0].spans {
            let noise: String = (0..1024)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    char::from(b'a' + (seed % 26) as u8)
                })
                .collect();
            span.attributes.push(string_kv("noise", &noise));
        }
        request
    };
    let mut expected = 0;
    for (tag, encoding) in [("gzip", Some(CompressionEncoding::Gzip)), ("zstd", Some(CompressionEncoding::Zstd)), ("none", None)] {
        // The queue holds 1 000 spans: the 900 before are let go of once the sink has answered
        // the export, which can be a little after it counted them.
        common::wait_metric(fx.api_addr(), "tracegate_exporter_queue_size", &[("exporter", "sink")], |n| n == 0.0, Duration::from_secs(10))
            .await;
        let sent = large(tag);
        let mut client = TraceServiceClient::connect(format!("http://{}", fx.roomy_grpc_addr())).await.unwrap();
        if let Some(encoding) = encoding {
            client = client.send_compressed(encoding);
        }
        client.export(sent.clone()).await.unwrap_or_else(|status| panic!("{tag}: {status:?}"));
        expected += 900;
        fx.sink.wait_for(expected, Duration::from_secs(10)).await;
        let arrived: Vec<_> =
            fx.sink.spans().into_iter().map(|(_, span)| span).filter(|span| span.name.starts_with(&format!("{tag}-"))).collect();
        assert_eq!(arrived.len(), 900, "{tag}");
        let noise = |span: &Span| span_attr(span, "noise");
        let sent_spans = &sent.resource_spans[0].scope_spans[0].spans;
        for span in &arrived {
            let original = sent_spans.iter().find(|s| s.name == span.name).expect("a span that was sent");
            assert_eq!(noise(span), noise(original), "{tag}: {} arrives as sent", span.name);
        }
    }
    // deflate, which tonic's client does not speak, by hand.
    let sent = large("deflate").encode_to_vec();
    let deflated = {
        use std::io::Write;
        let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(&sent).unwrap();
        encoder.finish().unwrap()
    };
    assert!(deflated.len() > 64 << 10, "{} bytes compressed", deflated.len());
    let reply = grpc_call(fx.roomy_grpc_addr(), "application/grpc", Some("deflate"), grpc_frame(1, deflated.len() as u32, &deflated)).await;
    assert_eq!(reply.code, Some(0), "{}", reply.message);
    fx.sink.wait_for(expected + 900, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_counted_and_valid_requests_still_flow() {
    let _serial = SERIAL.lock().await;
    let fx = Fixture::start().await;
    let url = fx.traces_url();
    // (what, headers, body, expected status)
    type Case = (&'static str, Vec<(&'static str, &'static str)>, Vec<u8>, u16);
    let cases: Vec<Case> = vec![
        ("garbage protobuf", vec![PROTOBUF], b"\x74garbage".to_vec(), 400),
        ("bad JSON", vec![JSON], b"{".to_vec(), 400),
        ("text/plain", vec![("content-type", "text/plain")], request(1, "x").encode_to_vec(), 415),
        ("brotli", vec![PROTOBUF, ("content-encoding", "br")], request(1, "x").encode_to_vec(), 415),
        ("corrupt gzip", vec![PROTOBUF, ("content-encoding", "gzip")], b"not gzip at all".to_vec(), 400),
        ("over 64 KiB", vec![PROTOBUF], vec![0x0a; 70 << 10], 413),
    ];
    for (what, headers, body, expected) in cases {
        let (status, _, _) = send("POST", &url, &headers, body).await;
        assert_eq!(status, expected, "{what}");
    }
    // A well-formed request with more spans than the exporter's queue can ever hold.
    let too_many = request(QUEUE_SIZE + 1, "too-many").encode_to_vec();
    let (status, _, body) = send("POST", &fx.roomy_traces_url(), &[PROTOBUF], too_many).await;
    assert_eq!(status, 413);
    let rpc = RpcStatus::decode(body.as_slice()).unwrap();
    assert!(rpc.message.contains("1001 spans"), "{:?}", rpc.message);

    fx.assert_still_delivers(6).await;

    let text = metrics_text(fx.api_addr()).await;
    let refused = "tracegate_receiver_refused_spans_total";
    assert_eq!(
        metric(&text, refused, &[("receiver", "otlp/roomy"), ("transport", "http"), ("reason", "too_large")]),
        (QUEUE_SIZE + 1) as f64,
        "{text}"
    );
    // Bodies that could not be decoded have no span count, but their reason shows up.
    for reason in ["malformed", "unsupported", "too_large"] {
        let series = format!("{refused}{{receiver=\"otlp\",transport=\"http\",reason=\"{reason}\"}}");
        assert!(text.contains(&series), "{series} missing from\n{text}");
    }
    assert_eq!(metric(&text, "tracegate_receiver_accepted_spans_total", &[("receiver", "otlp")]), 6.0, "{text}");
    assert_eq!(metric(&text, "tracegate_receiver_accepted_spans_total", &[("receiver", "otlp/roomy")]), 0.0, "{text}");
    assert_eq!(fx.sink.span_count(), 6);
}

/// OTLP requires 16-byte trace ids and 8-byte span ids, not all zero: such spans are rejected
/// through `partial_success` (HTTP and gRPC), and every good span of the same request arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_span_ids_are_rejected_through_partial_success_and_the_rest_arrives() {
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
    let _serial = SERIAL.lock().await;
    let fx = Fixture::start().await;
    let poisoned = |tag: &str| {
        let mut req = request(100, tag);
        let spans = &mut req.resource_spans[0].scope_spans[0].spans;
        for (i, span) in spans.iter_mut().enumerate().take(10) {
            match i % 3 {
                0 => span.trace_id = vec![1, 2, 3],
                1 => span.trace_id = vec![0; 16],
                _ => span.span_id = vec![],
            }
        }
        req
    };
    let (status, _, body) = send("POST", &fx.traces_url(), &[PROTOBUF], poisoned("http").encode_to_vec()).await;
    assert_eq!(status, 200);
    let reply = ExportTraceServiceResponse::decode(body.as_slice()).unwrap();
    let partial = reply.partial_success.expect("partial_success names the rejected spans");
    assert_eq!(partial.rejected_spans, 10);
    assert!(partial.error_message.contains("trace_id") && partial.error_message.contains("span_id"), "{}", partial.error_message);

    let mut client = TraceServiceClient::connect(format!("http://{}", fx.grpc_addr())).await.unwrap();
    let reply = client.export(poisoned("grpc")).await.unwrap().into_inner();
    assert_eq!(reply.partial_success.map(|p| p.rejected_spans), Some(10));

    fx.sink.wait_for(180, Duration::from_secs(10)).await;
    settle().await;
    let names: Vec<String> = fx.sink.spans().into_iter().map(|(_, s)| s.name).collect();
    assert_eq!(names.len(), 180, "the 90 good spans of each request, nothing else");
    assert!(!names.iter().any(|n| n == "http-0" || n == "grpc-9"), "no rejected span was exported");
    let metrics = metrics_text(fx.api_addr()).await;
    assert_eq!(metric(&metrics, "tracegate_receiver_refused_spans_total", &[("reason", "invalid_span")]), 20.0, "{metrics}");
    fx.gateway.shutdown().await;
}
