//! OTLP/gRPC: `opentelemetry.proto.collector.trace.v1.TraceService/Export`.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use tokio::net::TcpListener;
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

use super::config::GrpcServerConfig;
use crate::audit::{Actor, AuditEvent};
use crate::auth::AccessControl;
use crate::pipeline::{count_spans, Fanout};
use crate::receivers::error::IngestError;
use crate::receivers::{strip_credentials, SenderLimiter};
use crate::telemetry::ReceiverMetrics;

struct GrpcTraceService {
    fanout: Arc<Fanout>,
    metrics: ReceiverMetrics,
    /// Set when the receiver has `auth: jwt`.
    access: Option<Arc<AccessControl>>,
    limiter: Option<Arc<SenderLimiter>>,
}

#[tonic::async_trait]
impl TraceService for GrpcTraceService {
    async fn export(&self, request: Request<ExportTraceServiceRequest>) -> Result<Response<ExportTraceServiceResponse>, Status> {
        // The interceptor turned away requests without a plausible token before decoding; the
        // signature and claims are checked here (fetching JWKS keys may need to wait).
        let source = request.remote_addr().map(|a| a.ip().to_string());
        let principal = match &self.access {
            Some(access) => {
                let headers = request.metadata().clone().into_headers();
                match access.authenticate(&headers, source.as_deref(), "otlp/grpc").await {
                    Ok(p) => Some(p),
                    Err(error) => {
                        self.metrics.refused(0, error.outcome());
                        return Err(error.into());
                    }
                }
            }
            None => None,
        };
        let mut resource_spans = request.into_inner().resource_spans;
        strip_credentials(&mut resource_spans);
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
        match self.fanout.admit(resource_spans) {
            Ok(admission) => {
                self.metrics.accepted(admission.accepted_spans);
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
pub async fn serve_grpc(
    listener: TcpListener,
    config: GrpcServerConfig,
    fanout: Arc<Fanout>,
    metrics: ReceiverMetrics,
    access: Option<Arc<AccessControl>>,
    limiter: Option<Arc<SenderLimiter>>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let refused = metrics.clone();
    let service = TraceServiceServer::new(GrpcTraceService { fanout, metrics, access: access.clone(), limiter })
        .max_decoding_message_size(config.max_recv_msg_size.as_usize())
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Zstd)
        .send_compressed(CompressionEncoding::Gzip);
    // A first look at the token runs on the metadata, before the message is read and decoded.
    let service = tonic::service::interceptor::InterceptedService::new(service, move |request: Request<()>| {
        if let Some(access) = &access {
            let source = request.remote_addr().map(|a| a.ip().to_string());
            let headers = request.metadata().clone().into_headers();
            match access.precheck(&headers, source.as_deref(), "otlp/grpc") {
                Ok(()) => {}
                Err(error) => {
                    refused.refused(0, error.outcome());
                    return Err(error.into());
                }
            }
        }
        Ok(request)
    });
    // Replies are small: without TCP_NODELAY they can wait ~40 ms for the client's delayed ACK.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        // tonic answers bytes it cannot decode with INTERNAL (which reads as a server fault) and
        // a message over the limit with OUT_OF_RANGE (which OTLP clients retry).
        .layer(tower::util::MapResponseLayer::new(permanent_request_errors))
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}

/// The export handler itself never answers INTERNAL or OUT_OF_RANGE, so either code comes from
/// tonic refusing the request as sent: INVALID_ARGUMENT tells the client not to retry it.
fn permanent_request_errors<B>(mut response: http::Response<B>) -> http::Response<B> {
    let code =
        response.headers().get("grpc-status").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<i32>().ok()).map(tonic::Code::from);
    if matches!(code, Some(tonic::Code::Internal | tonic::Code::OutOfRange)) {
        response.headers_mut().insert("grpc-status", http::HeaderValue::from(tonic::Code::InvalidArgument as i32));
    }
    response
}
