//! OTLP/gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export`.
//!
//! The stack of a request, outermost first: the shared connection handling
//! (`crate::net::serve`: limits, timeouts, keepalive), the memory limiter and authentication on
//! the headers (before a byte of the message is read), then the call itself: the message read
//! within `max_recv_msg_size`, inflated and decoded (on the blocking pool when large, as OTLP/HTTP
//! bodies are), span validation and limits, admission, and the reply.
//!
//! The call is answered here rather than by tonic's server: tonic would inflate a message on
//! the executor thread, into as much as the size limit (16 MiB by default), and decode it
//! through `bytes::Buf` a bounds-checked advance per field, where decoding from the slice is
//! markedly cheaper. The wire format of a unary call is in `crate::net::grpc`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::body::Incoming;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use prost::Message;
use tokio::net::TcpListener;
use tonic::transport::server::TcpConnectInfo;
use tonic::Status;
use tower::{Service, ServiceExt};

use super::config::GrpcServerConfig;
use super::decode::{decode_request, inflate_and_parse, Compression, Encoding, InflateLimits};
use crate::audit::{Actor, AuditEvent};
use crate::auth::{AccessControl, AuthError, Principal};
use crate::net::grpc::{frame, read_unary, status_trailers, FrameError, ReplyBody};
use crate::net::{ConnectionLimits, Peer};
use crate::pipeline::{count_spans, Fanout};
use crate::receivers::error::IngestError;
use crate::receivers::{drop_invalid_spans, strip_credentials, IngestLimits, SenderLimiter};
use crate::telemetry::ReceiverMetrics;

struct GrpcTraceService {
    fanout: Arc<Fanout>,
    metrics: ReceiverMetrics,
    /// Set when the receiver has `auth: jwt`.
    access: Option<Arc<AccessControl>>,
    limiter: Option<Arc<SenderLimiter>>,
    ingest: IngestLimits,
}

impl GrpcTraceService {
    /// `Export`: the message as sent, then span validation and limits, the sender's checks and
    /// admission. `extensions` are the call's: the principal `Authenticate` left, the peer.
    async fn export(
        &self,
        extensions: &http::Extensions,
        headers: &http::HeaderMap,
        body: Incoming,
        limits: InflateLimits,
    ) -> Result<ExportTraceServiceResponse, Status> {
        let started = std::time::Instant::now();
        let source = extensions.get::<TcpConnectInfo>().and_then(|info| info.remote_addr).map(|a| a.ip().to_string());
        // `Authenticate` verified the token before the message was read and left the principal.
        let principal = match &self.access {
            Some(_) => match extensions.get::<Principal>() {
                Some(principal) => Some(principal.clone()),
                // Only a stack without the layer gets here: fail closed.
                None => {
                    let error = AuthError::Missing;
                    self.metrics.refused(0, error.outcome());
                    return Err(error.into());
                }
            },
            None => None,
        };
        let (size, request) = match read_request(headers, body, limits).await {
            Ok(read) => read,
            Err(refusal) => {
                self.metrics.refused(0, refusal.reason());
                return Err(refusal.into());
            }
        };
        let mut resource_spans = request.resource_spans;
        strip_credentials(&mut resource_spans);
        let invalid = drop_invalid_spans(&mut resource_spans);
        // No span of a message is larger than the message.
        let limited = self.ingest.limit_spans(&mut resource_spans, Some(size), &self.metrics);
        let spans = count_spans(&resource_spans);
        if let (Some(access), Some(principal)) = (&self.access, &principal) {
            if let Err(error) = access.check_ingest(principal, &resource_spans) {
                self.metrics.refused(spans, error.outcome());
                let event = AuditEvent::new(Actor::of(principal), "ingest", "otlp/grpc", error.outcome())
                    .from_source(source)
                    .because(error.to_string());
                access.record(&event);
                return Err(error.into());
            }
        }
        if let Some(limiter) = &self.limiter {
            if let Err(wait) = limiter.admit(principal.as_ref(), spans) {
                let e = IngestError::Throttled(wait);
                self.metrics.refused(spans, e.reason());
                return Err(e.into());
            }
        }
        match self.fanout.admit(resource_spans).await {
            Ok(admission) => {
                self.metrics.accepted(admission.accepted_spans);
                self.metrics.acknowledged(started);
                let admission = match &invalid {
                    Some(invalid) => {
                        self.metrics.rejected_invalid(invalid.spans);
                        admission.with_rejected(invalid.spans, &invalid.message)
                    }
                    None => admission,
                };
                let admission = match limited.rejected.len() {
                    0 => admission,
                    n => admission.with_rejected(n, &limited.rejection_message(&self.ingest.spans)),
                };
                Ok(admission.reply())
            }
            Err(e) => {
                let e = IngestError::from(e);
                self.metrics.refused(spans, e.reason());
                tracing::debug!(error = %e, spans, "refused an OTLP/gRPC request");
                Err(e.into())
            }
        }
    }
}

/// Why a call's message was not read: the message is refused as sent (INVALID_ARGUMENT, which
/// OTLP clients do not retry), or it is compressed with an encoding this server does not take
/// (UNIMPLEMENTED with `grpc-accept-encoding`, as gRPC asks).
#[derive(Debug)]
enum ReadRefusal {
    Message(IngestError),
    Encoding(String),
}

impl ReadRefusal {
    fn reason(&self) -> &'static str {
        match self {
            ReadRefusal::Message(e) => e.reason(),
            ReadRefusal::Encoding(_) => "unsupported",
        }
    }
}

impl From<ReadRefusal> for Status {
    fn from(refusal: ReadRefusal) -> Status {
        match refusal {
            ReadRefusal::Message(e) => e.into(),
            ReadRefusal::Encoding(name) => {
                let mut status =
                    Status::unimplemented(format!("messages compressed with {name:?} are not accepted; use {ACCEPTED_ENCODINGS}"));
                status.metadata_mut().insert("grpc-accept-encoding", tonic::metadata::MetadataValue::from_static(ACCEPTED_ENCODINGS));
                status
            }
        }
    }
}

/// What a compressed message may be compressed with, as `grpc-accept-encoding` lists it.
const ACCEPTED_ENCODINGS: &str = "gzip,zstd,deflate";

/// Reads, inflates and decodes the call's message within `max_recv_msg_size` (as sent and
/// inflated): a message that announces more is refused from its 5-byte prefix. Compressed
/// messages of 64 KiB or more are inflated and decoded on the blocking pool, larger plain ones
/// decoded there, as OTLP/HTTP bodies are. Returns the decoded size with the request.
async fn read_request(
    headers: &http::HeaderMap,
    body: Incoming,
    limits: InflateLimits,
) -> Result<(usize, ExportTraceServiceRequest), ReadRefusal> {
    let message = read_unary(body, limits.max_size).await.map_err(|e| {
        ReadRefusal::Message(match e {
            FrameError::TooLarge { limit, .. } => IngestError::TooLarge { limit },
            other => IngestError::Malformed(other.to_string()),
        })
    })?;
    let compression = match (message.compressed, headers.get("grpc-encoding").map(|v| v.to_str().unwrap_or("?").trim())) {
        (false, _) => Compression::None,
        (true, None | Some("identity")) => {
            let error = "the message is flagged compressed but the call names no grpc-encoding";
            return Err(ReadRefusal::Message(IngestError::Malformed(error.into())));
        }
        (true, Some(name @ ("gzip" | "zstd" | "deflate"))) => Compression::from_header(Some(name)).map_err(ReadRefusal::Message)?,
        (true, Some(other)) => return Err(ReadRefusal::Encoding(other.to_string())),
    };
    inflate_and_parse(message.bytes, compression, limits, |message| Ok((message.len(), decode_request(&message, Encoding::Protobuf)?)))
        .await
        .map_err(ReadRefusal::Message)
}

/// Serves OTLP/gRPC on an already bound listener until `shutdown` resolves.
#[allow(clippy::too_many_arguments)]
pub async fn serve_grpc(
    listener: TcpListener,
    name: &str,
    config: GrpcServerConfig,
    limits: ConnectionLimits,
    fanout: Arc<Fanout>,
    metrics: ReceiverMetrics,
    access: Option<Arc<AccessControl>>,
    limiter: Option<Arc<SenderLimiter>>,
    ingest: IngestLimits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let memory = ingest.clone();
    let export = ExportServer {
        handler: Arc::new(GrpcTraceService { fanout, metrics: metrics.clone(), access: access.clone(), limiter, ingest }),
        // The size limit holds as sent and inflated; it bounds a bomb, so no ratio on top.
        limits: InflateLimits { max_size: config.max_recv_msg_size.as_usize(), max_ratio: u32::MAX },
    };
    let service = tower::ServiceBuilder::new()
        // Memory and the token are checked on the headers, before the message is read and decoded.
        .layer_fn(|inner| Authenticate { inner, access: access.clone(), metrics: metrics.clone(), ingest: memory.clone() })
        .service(export);
    let make_service = move |peer: Peer| {
        // Where `tonic::Request::remote_addr` looks, as under tonic's own server.
        let info = TcpConnectInfo { local_addr: Some(peer.local), remote_addr: Some(peer.remote) };
        service.clone().map_request(move |mut request: http::Request<Incoming>| {
            request.extensions_mut().insert(info.clone());
            request
        })
    };
    crate::net::serve(listener, name, limits, make_service, shutdown).await
}

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// The TraceService: `Export` read, answered and refused here (see `read_request`); any other
/// method is UNIMPLEMENTED. A call that is not gRPC (`content-type` other than
/// `application/grpc` or `application/grpc+proto`) gets HTTP 415, as gRPC asks, so that no HTTP
/// client mistakes the refusal for a success.
#[derive(Clone)]
struct ExportServer {
    handler: Arc<GrpcTraceService>,
    limits: InflateLimits,
}

impl Service<http::Request<Incoming>> for ExportServer {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Incoming>) -> Self::Future {
        if request.uri().path() != EXPORT_PATH {
            let response = Status::unimplemented(format!("{} is not a method of this server", request.uri().path())).into_http();
            return Box::pin(async move { Ok(response) });
        }
        let content_type = request.headers().get(http::header::CONTENT_TYPE).map(|v| v.as_bytes());
        if !matches!(content_type, Some(b"application/grpc" | b"application/grpc+proto")) {
            let shown = content_type.map(String::from_utf8_lossy).unwrap_or_default();
            let status = Status::invalid_argument(format!("content-type {shown:?} is not gRPC; use application/grpc"));
            let mut response = status.into_http();
            *response.status_mut() = http::StatusCode::UNSUPPORTED_MEDIA_TYPE;
            self.handler.metrics.refused(0, "unsupported");
            return Box::pin(async move { Ok(response) });
        }
        let handler = self.handler.clone();
        let limits = self.limits;
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            Ok(match handler.export(&parts.extensions, &parts.headers, body, limits).await {
                Ok(reply) => {
                    let mut response = http::Response::new(tonic::body::Body::new(ReplyBody::new(
                        Some(frame(&reply.encode_to_vec())),
                        Some(status_trailers(tonic::Code::Ok as i32, "")),
                    )));
                    let headers = response.headers_mut();
                    headers.insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/grpc"));
                    headers.insert("grpc-accept-encoding", http::HeaderValue::from_static(ACCEPTED_ENCODINGS));
                    response
                }
                Err(status) => status.into_http(),
            })
        })
    }
}

/// Verifies the bearer token of every request (JWKS fetch included) before the message is read:
/// a refused request costs no decompression and no decoding. The principal goes into the
/// request's extensions for the handler. Without `access` (`auth: none`) requests pass as they are.
/// First of all, a process past its soft memory limit refuses the request (UNAVAILABLE with a
/// retry delay) without reading its message.
#[derive(Clone)]
struct Authenticate<S> {
    inner: S,
    access: Option<Arc<AccessControl>>,
    metrics: ReceiverMetrics,
    ingest: IngestLimits,
}

impl<S, B> Service<http::Request<B>> for Authenticate<S>
where
    S: Service<http::Request<B>, Response = http::Response<tonic::body::Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if let Err(error) = self.ingest.check_memory() {
            self.metrics.refused(0, error.reason());
            // Trailers-only, like a refused token; the unread message is dropped with the stream.
            let response = Status::from(error).into_http();
            return Box::pin(async move { Ok(response) });
        }
        let Some(access) = self.access.clone() else { return Box::pin(self.inner.call(request)) };
        // The instance polled ready serves this request; a fresh clone waits for the next one.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let (mut parts, body) = request.into_parts();
            let source = parts.extensions.get::<TcpConnectInfo>().and_then(|info| info.remote_addr).map(|a| a.ip().to_string());
            match access.authenticate(&parts.headers, source.as_deref(), "otlp/grpc").await {
                Ok(principal) => {
                    parts.extensions.insert(principal);
                    inner.call(http::Request::from_parts(parts, body)).await
                }
                Err(error) => {
                    metrics.refused(0, error.outcome());
                    // A trailers-only reply; the unread message is dropped with the stream.
                    Ok(Status::from(error).into_http())
                }
            }
        })
    }
}
