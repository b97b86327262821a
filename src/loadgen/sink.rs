//! `tracegate bench-sink`: an OTLP endpoint that counts the spans it is sent and answers OK, at
//! almost no cost, so that a benchmark can count delivery without the sink being the limit.
//!
//! A real collector as the sink decodes every span; sharing the load core with the load
//! generator, it became the limit before the gateway did. This sink counts the spans of a request
//! by walking the protobuf wire format (`ExportTraceServiceRequest` -> `ResourceSpans` ->
//! `ScopeSpans` -> `Span`) without decoding anything or allocating, and answers an empty
//! `ExportTraceServiceResponse`.
//!
//! Every address it listens on serves the same three things:
//! - OTLP/gRPC `TraceService/Export` (HTTP/2);
//! - OTLP/HTTP `POST /v1/traces` with a protobuf body;
//! - `GET /count`: the counts so far as one JSON object,
//!   `{"spans":…,"requests":…,"bytes":…,"refused":…}`.
//!
//! OTLP JSON, compressed HTTP bodies, gRPC encodings other than gzip and bodies that are not a
//! well-formed request are refused (gRPC `UNIMPLEMENTED` / `INVALID_ARGUMENT`, HTTP 415 / 400)
//! and counted under `refused`. gzip-ed gRPC messages are inflated before the count: rotel
//! compresses its exports whatever it is told.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use tokio::net::TcpListener;

use crate::net::grpc::{read_unary, status_trailers, ReplyBody as Reply, PREFIX_LEN};
use crate::net::ConnectionLimits;

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
const HTTP_TRACES_PATH: &str = "/v1/traces";
const COUNT_PATH: &str = "/count";
/// Larger than any request a gateway sends (tracegate cuts at 4 MiB, like gRPC's default limit).
const MAX_BODY_BYTES: usize = 64 << 20;

/// Listens for OTLP and counts spans; see the module documentation.
#[derive(clap::Args, Debug, Clone)]
pub struct SinkArgs {
    /// Address for OTLP/gRPC; it answers OTLP/HTTP and `GET /count` as well.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:14317")]
    pub grpc: String,

    /// Address for OTLP/HTTP; it answers OTLP/gRPC and `GET /count` as well.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:14318")]
    pub http: String,

    /// Print the counts on stderr this often (and once more when stopped); `0s`: only when stopped.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub report_every: Duration,
}

/// Why the sink could not run.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot start the sink's runtime")]
    Runtime(#[source] std::io::Error),
    #[error("cannot listen on {addr}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the listener on {addr} failed")]
    Serve {
        addr: String,
        #[source]
        source: std::io::Error,
    },
}

/// What the sink has been sent so far.
#[derive(Debug, Default)]
pub struct SinkCounts {
    spans: AtomicU64,
    requests: AtomicU64,
    bytes: AtomicU64,
    refused: AtomicU64,
}

impl SinkCounts {
    pub fn spans(&self) -> u64 {
        self.spans.load(Ordering::Relaxed)
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    fn json(&self) -> String {
        format!(
            r#"{{"spans":{},"requests":{},"bytes":{},"refused":{}}}"#,
            self.spans(),
            self.requests(),
            self.bytes.load(Ordering::Relaxed),
            self.refused()
        )
    }

    fn accepted(&self, spans: u64, bytes: usize) {
        self.spans.fetch_add(spans, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// Runs the sink on a single-threaded runtime of its own until SIGINT or SIGTERM, then prints the
/// final counts on stderr.
pub fn run_sink(args: SinkArgs) -> Result<(), SinkError> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(SinkError::Runtime)?;
    runtime.block_on(async {
        let counts = Arc::new(SinkCounts::default());
        let mut listeners = Vec::new();
        for addr in [&args.grpc, &args.http] {
            let listener = TcpListener::bind(addr.as_str()).await.map_err(|source| SinkError::Listen { addr: addr.clone(), source })?;
            listeners.push((addr.clone(), listener));
        }
        eprintln!("bench-sink: OTLP/gRPC on {}, OTLP/HTTP on {}, counts at GET http://{}{COUNT_PATH}", args.grpc, args.http, args.http);
        let mut servers = tokio::task::JoinSet::new();
        for (addr, listener) in listeners {
            let counts = Arc::clone(&counts);
            servers.spawn(async move { serve(listener, counts).await.map_err(|source| SinkError::Serve { addr, source }) });
        }
        if !args.report_every.is_zero() {
            tokio::spawn(report_periodically(Arc::clone(&counts), args.report_every));
        }
        let outcome = tokio::select! {
            // Stopped: the normal end.
            () = stopped() => Ok(()),
            // A listener gave up (it only does on a failure of the listening socket).
            Some(joined) = servers.join_next() => match joined {
                Ok(result) => result,
                Err(error) => std::panic::resume_unwind(error.into_panic()),
            },
        };
        eprintln!("bench-sink: {}", counts.json());
        outcome
    })
}

/// Serves one listener with the sink's service; returns only if the listener fails.
pub async fn serve(listener: TcpListener, counts: Arc<SinkCounts>) -> std::io::Result<()> {
    // Connections live as long as the gateway keeps them: no idle or age limit.
    let limits = ConnectionLimits::http(1024, Duration::from_secs(10), Duration::from_secs(24 * 3600));
    let make_service = move |_peer| {
        let counts = Arc::clone(&counts);
        tower::service_fn(move |request: Request<Incoming>| {
            let counts = Arc::clone(&counts);
            async move { Ok::<_, Infallible>(handle(request, &counts).await) }
        })
    };
    crate::net::serve(listener, "bench-sink", limits, make_service, std::future::pending()).await
}

async fn stopped() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn report_periodically(counts: Arc<SinkCounts>, every: Duration) {
    let mut last = 0;
    let mut timer = tokio::time::interval(every);
    timer.tick().await;
    loop {
        timer.tick().await;
        let now = counts.spans();
        eprintln!("bench-sink: {} (+{} spans in {every:?})", counts.json(), now - last);
        last = now;
    }
}

async fn handle(request: Request<Incoming>, counts: &SinkCounts) -> Response<Reply> {
    let grpc = request.headers().get(CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    match (request.method(), request.uri().path()) {
        (&Method::POST, EXPORT_PATH) if grpc => export_grpc(request, counts).await,
        (&Method::POST, HTTP_TRACES_PATH) => export_http(request, counts).await,
        (&Method::GET, COUNT_PATH) => plain(StatusCode::OK, "application/json", counts.json()),
        _ => plain(
            StatusCode::NOT_FOUND,
            "text/plain",
            format!("bench-sink serves {EXPORT_PATH}, POST {HTTP_TRACES_PATH} and GET {COUNT_PATH}\n"),
        ),
    }
}

async fn export_grpc(request: Request<Incoming>, counts: &SinkCounts) -> Response<Reply> {
    // rotel 0.0.1a15 compresses its messages with gzip even when told `--otlp-exporter-compression
    // none`, so gzip is taken (at a cost to the sink), as is a set flag with no or identity encoding.
    let gzip = match request.headers().get("grpc-encoding").map(HeaderValue::as_bytes) {
        None | Some(b"identity") => false,
        Some(b"gzip") => true,
        Some(other) => {
            let message = format!("bench-sink takes gzip or uncompressed messages, not {}", String::from_utf8_lossy(other));
            return grpc_status(counts, GrpcCode::Unimplemented, &message);
        }
    };
    // The one length-prefixed message of the call: a compressed flag, its length, the message.
    let message = match read_unary(request.into_body(), MAX_BODY_BYTES).await {
        Ok(message) => message,
        Err(error) => return grpc_status(counts, GrpcCode::InvalidArgument, &error.to_string()),
    };
    let inflated;
    let bytes = if message.compressed && gzip {
        let mut out = Vec::with_capacity(message.bytes.len() * 4);
        if let Err(error) = std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&message.bytes[..]), &mut out) {
            return grpc_status(counts, GrpcCode::InvalidArgument, &format!("bad gzip message: {error}"));
        }
        inflated = out;
        &inflated[..]
    } else {
        &message.bytes[..]
    };
    let spans = match count_spans(bytes) {
        Ok(n) => n,
        Err(error) => return grpc_status(counts, GrpcCode::InvalidArgument, &format!("not an ExportTraceServiceRequest: {error}")),
    };
    counts.accepted(spans, PREFIX_LEN + message.bytes.len());
    // An empty ExportTraceServiceResponse: uncompressed, length 0.
    let mut response =
        Response::new(Reply::new(Some(Bytes::from_static(&[0, 0, 0, 0, 0])), Some(status_trailers(GrpcCode::Ok as i32, ""))));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    response
}

async fn export_http(request: Request<Incoming>, counts: &SinkCounts) -> Response<Reply> {
    let headers = request.headers();
    if headers.get(CONTENT_ENCODING).is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity")) {
        return refuse(counts, StatusCode::UNSUPPORTED_MEDIA_TYPE, "bench-sink takes uncompressed bodies only\n");
    }
    if !headers.get(CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/x-protobuf")) {
        return refuse(counts, StatusCode::UNSUPPORTED_MEDIA_TYPE, "bench-sink takes application/x-protobuf only\n");
    }
    let body = match Limited::new(request.into_body(), MAX_BODY_BYTES).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) => return refuse(counts, StatusCode::BAD_REQUEST, &format!("unreadable request body: {error}\n")),
    };
    match count_spans(&body) {
        Ok(spans) => {
            counts.accepted(spans, body.len());
            // An empty ExportTraceServiceResponse encodes as no bytes.
            plain(StatusCode::OK, "application/x-protobuf", String::new())
        }
        Err(error) => refuse(counts, StatusCode::BAD_REQUEST, &format!("not an ExportTraceServiceRequest: {error}\n")),
    }
}

fn refuse(counts: &SinkCounts, status: StatusCode, message: &str) -> Response<Reply> {
    counts.refused.fetch_add(1, Ordering::Relaxed);
    plain(status, "text/plain", message.to_string())
}

fn plain(status: StatusCode, content_type: &'static str, body: String) -> Response<Reply> {
    let mut response = Response::new(Reply::new((!body.is_empty()).then(|| Bytes::from(body)), None));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GrpcCode {
    Ok = 0,
    InvalidArgument = 3,
    Unimplemented = 12,
}

/// A refusal as a trailers-only gRPC response: the status in the headers, no body.
fn grpc_status(counts: &SinkCounts, code: GrpcCode, message: &str) -> Response<Reply> {
    counts.refused.fetch_add(1, Ordering::Relaxed);
    let mut response = Response::new(Reply::default());
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    response.headers_mut().extend(status_trailers(code as i32, message));
    response
}

/// Why bytes are not an encoded `ExportTraceServiceRequest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("a field runs past the end of its message")]
    Truncated,
    #[error("a varint is longer than 10 bytes")]
    LongVarint,
    #[error("field number 0")]
    FieldZero,
    #[error("unsupported wire type {0}")]
    WireType(u8),
    #[error("field {field} of a {message} is not length-delimited")]
    NotLengthDelimited { message: &'static str, field: u32 },
}

/// The spans in an encoded `ExportTraceServiceRequest`, counted by walking the wire format:
/// field 1 (`resource_spans`) of the request, field 2 (`scope_spans`) of each, field 2
/// (`spans`) of each of those. Nothing is decoded or allocated; every other field is skipped by
/// its wire type, and the lengths are checked as prost would check them.
pub fn count_spans(request: &[u8]) -> Result<u64, WireError> {
    let mut spans = 0;
    for_each_field(request, "ExportTraceServiceRequest", 1, |resource_spans| {
        for_each_field(resource_spans, "ResourceSpans", 2, |scope_spans| {
            for_each_field(scope_spans, "ScopeSpans", 2, |span| {
                // A span's own fields are skipped, but its framing must hold.
                for_each_field(span, "Span", 0, |_| Ok(()))?;
                spans += 1;
                Ok(())
            })
        })
    })?;
    Ok(spans)
}

/// Calls `visit` with the value of every occurrence of length-delimited field `wanted` of
/// `message`, skipping every other field; `wanted` 0 only checks the framing.
fn for_each_field(
    mut message: &[u8],
    name: &'static str,
    wanted: u32,
    mut visit: impl FnMut(&[u8]) -> Result<(), WireError>,
) -> Result<(), WireError> {
    while !message.is_empty() {
        let key = varint(&mut message)?;
        let field = u32::try_from(key >> 3).map_err(|_| WireError::Truncated)?;
        let wire_type = (key & 0x7) as u8;
        if field == 0 {
            return Err(WireError::FieldZero);
        }
        if field == wanted && wire_type != 2 {
            return Err(WireError::NotLengthDelimited { message: name, field });
        }
        message = match wire_type {
            0 => {
                varint(&mut message)?;
                message
            }
            1 => message.get(8..).ok_or(WireError::Truncated)?,
            2 => {
                let len = usize::try_from(varint(&mut message)?).map_err(|_| WireError::Truncated)?;
                if len > message.len() {
                    return Err(WireError::Truncated);
                }
                let (value, rest) = message.split_at(len);
                if field == wanted {
                    visit(value)?;
                }
                rest
            }
            5 => message.get(4..).ok_or(WireError::Truncated)?,
            other => return Err(WireError::WireType(other)),
        };
    }
    Ok(())
}

/// Reads one base-128 varint from the front of `buf`.
fn varint(buf: &mut &[u8]) -> Result<u64, WireError> {
    let mut value: u64 = 0;
    for (i, &byte) in buf.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *buf = &buf[i + 1..];
            return Ok(value);
        }
    }
    Err(if buf.len() >= 10 { WireError::LongVarint } else { WireError::Truncated })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::client::{ExportClient, Reply as ExportReply};
    use crate::loadgen::{Protocol, TrafficGenerator};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;

    const NOW: u64 = 1_763_700_000_000_000_000;

    fn decoded_spans(request: &ExportTraceServiceRequest) -> u64 {
        request.resource_spans.iter().flat_map(|r| &r.scope_spans).map(|s| s.spans.len() as u64).sum()
    }

    #[test]
    fn the_count_matches_a_full_decode() {
        let mut generator = TrafficGenerator::new(3, NOW);
        for size in [1, 7, 100, 1000] {
            let request = generator.request(size);
            assert_eq!(count_spans(&request.encode_to_vec()), Ok(size as u64));
        }
        // Empty spans, an empty scope, a resource without scopes, and unknown fields of every
        // wire type on the way are all skipped the way prost skips them.
        let request = ExportTraceServiceRequest {
            resource_spans: vec![
                ResourceSpans::default(),
                ResourceSpans {
                    scope_spans: vec![ScopeSpans::default(), ScopeSpans { spans: vec![Span::default(); 3], ..Default::default() }],
                    schema_url: "https://opentelemetry.io/schemas/1.30.0".into(),
                    ..Default::default()
                },
            ],
        };
        let mut bytes = request.encode_to_vec();
        assert_eq!(count_spans(&bytes), Ok(3));
        // Unknown fields at the top level, one of each wire type.
        bytes.extend_from_slice(&[9 << 3, 0x96, 0x01]); // 9: varint 150
        bytes.extend_from_slice(&[(10 << 3) | 1, 1, 2, 3, 4, 5, 6, 7, 8]); // 10: fixed64
        bytes.extend_from_slice(&[(11 << 3) | 2, 2, 0xff, 0xff]); // 11: two bytes
        bytes.extend_from_slice(&[(12 << 3) | 5, 1, 2, 3, 4]); // 12: fixed32
        let decoded = ExportTraceServiceRequest::decode(&bytes[..]).unwrap();
        assert_eq!(count_spans(&bytes), Ok(decoded_spans(&decoded)));
        assert_eq!(count_spans(&[]), Ok(0));
    }

    #[test]
    fn malformed_requests_are_refused_like_prost_refuses_them() {
        let bytes = TrafficGenerator::new(4, NOW).request(20).encode_to_vec();
        for cut in [1, 2, 10, bytes.len() / 2, bytes.len() - 1] {
            let truncated = &bytes[..cut];
            assert!(ExportTraceServiceRequest::decode(truncated).is_err(), "prost takes a cut at {cut}");
            assert!(count_spans(truncated).is_err(), "cut at {cut}");
        }
        assert_eq!(count_spans(&[0x08, 0x01]), Err(WireError::NotLengthDelimited { message: "ExportTraceServiceRequest", field: 1 }));
        assert_eq!(count_spans(&[0x00]), Err(WireError::FieldZero));
        assert_eq!(count_spans(&[(2 << 3) | 3]), Err(WireError::WireType(3)));
        assert_eq!(count_spans(&[0x48, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]), Err(WireError::LongVarint));
        assert!(count_spans(b"{\"resourceSpans\":[]}").is_err(), "OTLP JSON is not protobuf");
    }

    async fn count_at(addr: std::net::SocketAddr) -> serde_json::Value {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<http_body_util::Empty<Bytes>>();
        let response = client.get(format!("http://{addr}{COUNT_PATH}").parse().unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap()
    }

    #[tokio::test]
    async fn counts_what_grpc_and_http_clients_send_and_serves_the_count() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counts = Arc::new(SinkCounts::default());
        let server = tokio::spawn(serve(listener, Arc::clone(&counts)));

        let mut generator = TrafficGenerator::new(5, NOW);
        let (first, second) = (generator.request(100), generator.request(37));
        let mut grpc = ExportClient::connect(Protocol::Grpc, &format!("http://{addr}"), &[]).await.unwrap();
        assert_eq!(grpc.export(first.encode_to_vec().into()).await, ExportReply::Accepted { rejected_spans: 0 });
        let mut http = ExportClient::connect(Protocol::Http, &format!("http://{addr}"), &[]).await.unwrap();
        assert_eq!(http.export(second.encode_to_vec().into()).await, ExportReply::Accepted { rejected_spans: 0 });

        // Garbage is refused over both protocols and not counted as spans.
        assert!(matches!(grpc.export(Bytes::from_static(&[0x08, 0x01])).await, ExportReply::Refused(m) if m.contains("InvalidArgument")));
        assert!(matches!(http.export(Bytes::from_static(&[0x0a, 0x05])).await, ExportReply::Refused(m) if m.contains("400")));

        let json = count_at(addr).await;
        assert_eq!(json["spans"], 137);
        assert_eq!(json["requests"], 2);
        assert_eq!(json["refused"], 2);
        assert_eq!(counts.spans(), 137);
        server.abort();
    }

    #[tokio::test]
    async fn a_real_otlp_exporter_is_answered_ok() {
        // tonic's generated client (what tracegate's OTLP exporter uses) decodes the reply and
        // reads the trailers: an OK here means the framing is right.
        use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counts = Arc::new(SinkCounts::default());
        let server = tokio::spawn(serve(listener, Arc::clone(&counts)));
        let mut client = TraceServiceClient::connect(format!("http://{addr}")).await.unwrap();
        let request = TrafficGenerator::new(6, NOW).request(250);
        let reply = client.export(request).await.unwrap().into_inner();
        assert_eq!(reply.partial_success, None);
        assert_eq!(counts.spans(), 250);
        assert_eq!(counts.requests(), 1);
        // gzip-ed, as rotel sends whatever it is told.
        let mut client = client.send_compressed(tonic::codec::CompressionEncoding::Gzip);
        client.export(TrafficGenerator::new(7, NOW).request(40)).await.unwrap();
        assert_eq!(counts.spans(), 290);
        assert_eq!(counts.refused(), 0);
        server.abort();
    }
}
