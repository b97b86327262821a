//! OTLP/HTTP: `POST /v1/traces`, protobuf or JSON, plain, gzip or zstd.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTracePartialSuccess, ExportTraceServiceResponse};
use prost::Message;
use tokio::net::TcpListener;

use super::config::HttpServerConfig;
use super::decode::{decode_request, decompress, Encoding};
use crate::pipeline::{count_spans, Fanout};
use crate::receivers::error::{IngestError, RETRY_HINT};
use crate::telemetry::ReceiverMetrics;

#[derive(Clone)]
struct HttpReceiver {
    fanout: Arc<Fanout>,
    metrics: ReceiverMetrics,
    config: Arc<HttpServerConfig>,
}

/// `google.rpc.Status`, the error body OTLP/HTTP requires.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

/// The router for the OTLP/HTTP port; later receivers (order events) add their routes beside it.
pub fn otlp_http_router(config: HttpServerConfig, fanout: Arc<Fanout>, metrics: ReceiverMetrics) -> Router {
    let state = HttpReceiver { fanout, metrics, config: Arc::new(config) };
    Router::new().route("/v1/traces", post(export_traces)).with_state(state)
}

/// Serves a router on an already bound listener until `shutdown` resolves.
pub async fn serve_http(listener: TcpListener, router: Router, shutdown: impl std::future::Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // Replies are small: without TCP_NODELAY they can wait for the client's delayed ACK.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router).with_graceful_shutdown(shutdown).await
}

async fn export_traces(State(rx): State<HttpReceiver>, headers: HeaderMap, body: Body) -> Response {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let encoding = match Encoding::from_content_type(content_type) {
        Ok(e) => e,
        Err(e) => return refuse(&rx, e, Encoding::Json, 0),
    };
    let limit = rx.config.max_request_body_size.as_usize();
    let raw = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => return refuse(&rx, IngestError::TooLarge { limit }, encoding, 0),
        Err(e) => return refuse(&rx, IngestError::Malformed(format!("cannot read body: {e}")), encoding, 0),
    };
    let content_encoding = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok());
    let request = match decompress(&raw, content_encoding, &rx.config).and_then(|body| decode_request(&body, encoding)) {
        Ok(r) => r,
        Err(e) => return refuse(&rx, e, encoding, 0),
    };
    drop(raw);
    let spans = count_spans(&request.resource_spans);
    match rx.fanout.admit(request.resource_spans) {
        Ok(admission) => {
            rx.metrics.accepted(admission.accepted_spans);
            let partial_success = (admission.rejected_spans > 0).then(|| ExportTracePartialSuccess {
                rejected_spans: admission.rejected_spans as i64,
                error_message: admission.rejected_message,
            });
            let reply = ExportTraceServiceResponse { partial_success };
            let body = match encoding {
                Encoding::Protobuf => reply.encode_to_vec(),
                // Serializing a generated message to JSON cannot fail.
                Encoding::Json => serde_json::to_vec(&reply).unwrap_or_else(|_| b"{}".to_vec()),
            };
            (StatusCode::OK, [(header::CONTENT_TYPE, encoding.content_type())], body).into_response()
        }
        Err(e) => refuse(&rx, e.into(), encoding, spans),
    }
}

/// The one place an ingest error becomes an HTTP reply.
fn refuse(rx: &HttpReceiver, error: IngestError, encoding: Encoding, spans: usize) -> Response {
    rx.metrics.refused(spans, error.reason());
    tracing::debug!(%error, spans, "refused an OTLP/HTTP request");
    let status = error.http_status();
    let grpc_code = error.grpc_code() as i32;
    let rpc = RpcStatus { code: grpc_code, message: error.to_string() };
    let body = match encoding {
        Encoding::Protobuf => rpc.encode_to_vec(),
        Encoding::Json => serde_json::to_vec(&rpc).unwrap_or_default(),
    };
    let mut response = (status, [(header::CONTENT_TYPE, encoding.content_type())], body).into_response();
    if error.retryable() {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_HINT.as_secs()));
    }
    response
}

