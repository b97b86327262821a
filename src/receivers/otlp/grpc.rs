//! OTLP/gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export`.
//!
//! The stack of a request, outermost first: the shared connection handling
//! (`crate::net::serve`: limits, timeouts, keepalive), the rewrite of tonic's own refusals to
//! INVALID_ARGUMENT, the memory limiter and authentication on the headers (before a byte of the
//! message is read), then tonic's unary handling with a codec of ours (decompression, size limit,
//! decoding) and the export handler (span validation and limits, admission).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Buf;
use hyper::body::Incoming;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use prost::Message;
use tokio::net::TcpListener;
use tonic::codec::CompressionEncoding;
use tonic::transport::server::TcpConnectInfo;
use tonic::{Request, Response, Status};
use tower::{Service, ServiceExt};

use super::config::GrpcServerConfig;
use crate::audit::{Actor, AuditEvent};
use crate::auth::{AccessControl, AuthError, Principal};
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

#[tonic::async_trait]
impl TraceService for GrpcTraceService {
    async fn export(&self, request: Request<ExportTraceServiceRequest>) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let started = std::time::Instant::now();
        let source = request.remote_addr().map(|a| a.ip().to_string());
        // `Authenticate` verified the token before the message was read and left the principal.
        let principal = match &self.access {
            Some(_) => match request.extensions().get::<Principal>() {
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
        let mut resource_spans = request.into_inner().resource_spans;
        strip_credentials(&mut resource_spans);
        let invalid = drop_invalid_spans(&mut resource_spans);
        let limited = self.ingest.limit_spans(&mut resource_spans, None, &self.metrics);
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
                Ok(Response::new(admission.reply()))
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
        max_decoding: config.max_recv_msg_size.as_usize(),
    };
    let service = tower::ServiceBuilder::new()
        // tonic answers bytes it cannot decode with INTERNAL (which reads as a server fault) and
        // a message over the limit with OUT_OF_RANGE (which OTLP clients retry).
        .map_response(permanent_request_errors)
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

/// The TraceService: `Export` through tonic's unary handling (compression, size limit, status
/// replies) with the codec below; any other method is UNIMPLEMENTED.
///
/// tonic inflates a compressed message on the executor thread, into at most `max_recv_msg_size`
/// (16 MiB by default). Unlike OTLP/HTTP's large bodies it does not go to the blocking pool.
#[derive(Clone)]
struct ExportServer {
    handler: Arc<GrpcTraceService>,
    max_decoding: usize,
}

impl<B> Service<http::Request<B>> for ExportServer
where
    B: hyper::body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != EXPORT_PATH {
            let response = Status::unimplemented(format!("{} is not a method of this server", request.uri().path())).into_http();
            return Box::pin(async move { Ok(response) });
        }
        let method = ExportMethod(self.handler.clone());
        let max_decoding = self.max_decoding;
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(ExportCodec)
                .max_decoding_message_size(max_decoding)
                .accept_compressed(CompressionEncoding::Gzip)
                .accept_compressed(CompressionEncoding::Zstd)
                .send_compressed(CompressionEncoding::Gzip);
            Ok(grpc.unary(method, request).await)
        })
    }
}

struct ExportMethod(Arc<GrpcTraceService>);

impl tonic::server::UnaryService<ExportTraceServiceRequest> for ExportMethod {
    type Response = ExportTraceServiceResponse;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ExportTraceServiceResponse>, Status>> + Send>>;

    fn call(&mut self, request: Request<ExportTraceServiceRequest>) -> Self::Future {
        let handler = self.0.clone();
        Box::pin(async move { handler.export(request).await })
    }
}

/// The Export method's codec. tonic's prost codec decodes through `bytes::Buf` over its receive
/// buffer, a bounds-checked advance per field; this one takes the message as one `Bytes` (no
/// copy: tonic holds a message in one contiguous buffer) and decodes from the slice, which is
/// markedly cheaper (decoding is the largest share of a request's CPU time). Errors are what
/// tonic's codec gives: INTERNAL with prost's message (turned into INVALID_ARGUMENT by
/// `permanent_request_errors`).
#[derive(Clone, Copy, Default)]
struct ExportCodec;

impl tonic::codec::Codec for ExportCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = ExportTraceServiceRequest;
    type Encoder = ExportCodec;
    type Decoder = ExportCodec;

    fn encoder(&mut self) -> ExportCodec {
        ExportCodec
    }

    fn decoder(&mut self) -> ExportCodec {
        ExportCodec
    }
}

impl tonic::codec::Encoder for ExportCodec {
    type Item = ExportTraceServiceResponse;
    type Error = Status;

    fn encode(&mut self, item: ExportTraceServiceResponse, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst).map_err(|e| Status::internal(e.to_string()))
    }
}

impl tonic::codec::Decoder for ExportCodec {
    type Item = ExportTraceServiceRequest;
    type Error = Status;

    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<ExportTraceServiceRequest>, Status> {
        let message = src.copy_to_bytes(src.remaining());
        ExportTraceServiceRequest::decode(message.as_ref()).map(Some).map_err(|e| Status::internal(e.to_string()))
    }
}

/// The export handler itself never answers INTERNAL or OUT_OF_RANGE, so either code comes from
/// tonic refusing the request as sent: INVALID_ARGUMENT tells the client not to retry it. So does
/// RESOURCE_EXHAUSTED without details: tonic's answer to a compressed message that inflates past
/// `max_recv_msg_size` (the handler's own, a sender over its rate, always carries `RetryInfo`).
fn permanent_request_errors<B>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers();
    let code = headers.get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<i32>().ok()).map(tonic::Code::from);
    let inflated_too_far = code == Some(tonic::Code::ResourceExhausted) && !headers.contains_key("grpc-status-details-bin");
    if matches!(code, Some(tonic::Code::Internal | tonic::Code::OutOfRange)) || inflated_too_far {
        response.headers_mut().insert("grpc-status", http::HeaderValue::from(tonic::Code::InvalidArgument as i32));
    }
    response
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
