//! OTLP/HTTP: `POST /v1/traces`, protobuf or JSON, plain, gzip or zstd; and beside it
//! `POST /v1/order-events` (JSON, see `receivers/order_events.rs`) under the same limits.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use prost::Message;
use tokio::net::TcpListener;

use super::config::HttpServerConfig;
use super::decode::{decode_request, inflate_and_parse, Compression, Encoding};
use crate::audit::{Actor, AuditEvent};
use crate::auth::{check_ingest, service_name, AccessControl, AuthError, Principal};
use crate::net::ConnectionLimits;
use crate::pipeline::{count_spans, Fanout};
use crate::receivers::error::IngestError;
use crate::receivers::order_events::{parse_order_events, to_resource_spans, OrderEvent, ParsedOrderEvents, Rejection};
use crate::receivers::{drop_invalid_spans, strip_credentials, IngestLimits, LimitedSpans, SenderLimiter};
use crate::telemetry::ReceiverMetrics;

#[derive(Clone)]
struct HttpReceiver {
    fanout: Arc<Fanout>,
    metrics: ReceiverMetrics,
    /// Counted apart from OTLP: transport label `order_events`.
    order_event_metrics: ReceiverMetrics,
    config: Arc<HttpServerConfig>,
    /// Set when the receiver has `auth: jwt`.
    access: Option<Arc<AccessControl>>,
    limiter: Option<Arc<SenderLimiter>>,
    ingest: IngestLimits,
}

/// Who sent a request, as the authentication layer found it (`None` principal: auth off).
#[derive(Clone)]
struct Sender {
    principal: Option<Principal>,
    source: Option<String>,
}

impl Sender {
    /// The receiver's rate limit for this sender.
    fn throttle(&self, rx: &HttpReceiver, spans: usize) -> Result<(), std::time::Duration> {
        match &rx.limiter {
            Some(limiter) => limiter.admit(self.principal.as_ref(), spans),
            None => Ok(()),
        }
    }

    /// Refuses spans that claim a service other than the token's identity (audited).
    fn check(&self, rx: &HttpReceiver, claimed: Vec<&str>, what: &str) -> Result<(), AuthError> {
        let (Some(access), Some(principal)) = (&rx.access, &self.principal) else { return Ok(()) };
        check_ingest(principal, claimed).inspect_err(|error| {
            let event = AuditEvent::new(Actor::of(principal), "ingest", what, error.outcome())
                .from_source(self.source.clone())
                .because(error.to_string());
            access.record(&event);
        })
    }
}

/// `google.rpc.Status`, the error body OTLP/HTTP requires.
#[derive(Clone, PartialEq, prost::Message, serde::Serialize)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

/// The router for the OTLP/HTTP port: OTLP traces and order events, both admitted to `fanout`.
pub fn otlp_http_router(
    config: HttpServerConfig,
    fanout: Arc<Fanout>,
    metrics: ReceiverMetrics,
    order_event_metrics: ReceiverMetrics,
    access: Option<Arc<AccessControl>>,
    limiter: Option<Arc<SenderLimiter>>,
    ingest: IngestLimits,
) -> Router {
    let state = HttpReceiver { fanout, metrics, order_event_metrics, config: Arc::new(config), access, limiter, ingest };
    Router::new()
        .route("/v1/traces", post(export_traces))
        .route("/v1/order-events", post(export_order_events))
        // Authentication happens on the headers, before any body is read.
        .layer(axum::middleware::from_fn_with_state(state.clone(), authenticate_sender))
        .with_state(state)
}

async fn authenticate_sender(
    State(rx): State<HttpReceiver>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let source = request.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip().to_string());
    let principal = match &rx.access {
        None => None,
        Some(access) => match access.authenticate(request.headers(), source.as_deref(), request.uri().path()).await {
            Ok(principal) => Some(principal),
            // Order events answer in their own JSON; OTLP clients get a `google.rpc.Status`.
            Err(error) if request.uri().path() == "/v1/order-events" => {
                rx.order_event_metrics.refused(0, error.outcome());
                return error.into_response();
            }
            Err(error) => {
                rx.metrics.refused(0, error.outcome());
                return refuse_auth(error, request_encoding(request.headers()));
            }
        },
    };
    request.extensions_mut().insert(Sender { principal, source });
    next.run(request).await
}

/// Serves a router on an already bound listener until `shutdown` resolves, under the
/// listener's connection limits.
pub async fn serve_http(
    listener: TcpListener,
    name: &str,
    limits: ConnectionLimits,
    router: Router,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    crate::net::serve_router(listener, name, limits, router, shutdown).await
}

async fn export_traces(
    State(rx): State<HttpReceiver>,
    axum::Extension(sender): axum::Extension<Sender>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = std::time::Instant::now();
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let encoding = match Encoding::from_content_type(content_type) {
        Ok(e) => e,
        Err(e) => return refuse(&rx, e, Encoding::Json, 0),
    };
    // The decompressed body's size too: no span of a protobuf body is larger than the body.
    let decoded = read_body(&rx, &headers, body, move |body| Ok((body.len(), decode_request(&body, encoding)?))).await;
    let (size, mut request) = match decoded {
        Ok(decoded) => decoded,
        Err(e) => return refuse(&rx, e, encoding, 0),
    };
    let size_bound = (encoding == Encoding::Protobuf).then_some(size);
    strip_credentials(&mut request.resource_spans);
    let invalid = drop_invalid_spans(&mut request.resource_spans);
    let limited = rx.ingest.limit_spans(&mut request.resource_spans, size_bound, &rx.metrics);
    let spans = count_spans(&request.resource_spans);
    if let Err(error) = sender.check(&rx, request.resource_spans.iter().map(service_name).collect(), "/v1/traces") {
        rx.metrics.refused(spans, error.outcome());
        return refuse_auth(error, encoding);
    }
    if let Err(wait) = sender.throttle(&rx, spans) {
        return refuse(&rx, IngestError::Throttled(wait), encoding, spans);
    }
    match rx.fanout.admit(request.resource_spans).await {
        Ok(admission) => {
            rx.metrics.accepted(admission.accepted_spans);
            rx.metrics.acknowledged(started);
            if let Some(invalid) = &invalid {
                rx.metrics.rejected_invalid(invalid.spans);
            }
            let admission = match &invalid {
                Some(invalid) => admission.with_rejected(invalid.spans, &invalid.message),
                None => admission,
            };
            let admission = match limited.rejected.len() {
                0 => admission,
                n => admission.with_rejected(n, &limited.rejection_message(&rx.ingest.spans)),
            };
            let reply = admission.reply();
            let body = match encoding {
                Encoding::Protobuf => reply.encode_to_vec(),
                // `{}` for a full success, as OTLP/JSON receivers answer; never `"partialSuccess": null`.
                Encoding::Json if reply.partial_success.is_none() => b"{}".to_vec(),
                // Serializing a generated message to JSON cannot fail.
                Encoding::Json => serde_json::to_vec(&reply).unwrap_or_else(|_| b"{}".to_vec()),
            };
            (StatusCode::OK, [(header::CONTENT_TYPE, encoding.content_type())], body).into_response()
        }
        Err(e) => refuse(&rx, e.into(), encoding, spans),
    }
}

/// The body within the size limit, decompressed within the decompression limits. Past the soft
/// memory limit the request is refused once its body is read (so the client reads the reply
/// rather than a reset connection) and before it is decompressed; then `parse` runs over it.
/// Large bodies are inflated and parsed on the blocking pool, in one hand-off
/// (`decode::inflate_and_parse`).
async fn read_body<T, F>(rx: &HttpReceiver, headers: &HeaderMap, body: Body, parse: F) -> Result<T, IngestError>
where
    T: Send + 'static,
    F: FnOnce(Bytes) -> Result<T, IngestError> + Send + 'static,
{
    let config = &rx.config;
    let limit = config.max_request_body_size.as_usize();
    let raw = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => return Err(IngestError::TooLarge { limit }),
        Err(e) => return Err(IngestError::Malformed(format!("cannot read body: {e}"))),
    };
    rx.ingest.check_memory()?;
    let content_encoding = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok());
    inflate_and_parse(raw, Compression::from_header(content_encoding)?, config.as_ref().into(), parse).await
}

/// `POST /v1/order-events`: valid events are admitted as spans; invalid ones are named in the
/// reply. 200 when any event was accepted (or the array was empty), 400 when none was valid.
async fn export_order_events(
    State(rx): State<HttpReceiver>,
    axum::Extension(sender): axum::Extension<Sender>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    if !matches!(Encoding::from_content_type(content_type), Ok(Encoding::Json)) {
        return refuse_events(&rx, IngestError::UnsupportedMediaType(content_type.unwrap_or("").to_string()), 0);
    }
    let now_ns = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    let parsed = read_body(&rx, &headers, body, move |body| {
        parse_order_events(&body, now_ns).map_err(|error| IngestError::Malformed(crate::shared::error_chain(&error)))
    })
    .await;
    let ParsedOrderEvents { events, mut rejected } = match parsed {
        Ok(parsed) => parsed,
        Err(error) => return refuse_events(&rx, error, 0),
    };
    if !rejected.is_empty() {
        rx.order_event_metrics.refused(rejected.len(), "malformed");
        tracing::debug!(rejected = rejected.len(), accepted = events.len(), "refused invalid order events");
    }
    if let Err(error) = sender.check(&rx, events.iter().map(|e| e.service.as_str()).collect(), "/v1/order-events") {
        rx.order_event_metrics.refused(events.len(), error.outcome());
        return error.into_response();
    }
    if let Err(wait) = sender.throttle(&rx, events.len()) {
        return refuse_events(&rx, IngestError::Throttled(wait), events.len());
    }
    if events.is_empty() && !rejected.is_empty() {
        let reply = serde_json::json!({"error": "no valid order event in the request", "accepted": 0, "rejected": rejected});
        return (StatusCode::BAD_REQUEST, Json(reply)).into_response();
    }
    let mut resource_spans = to_resource_spans(&events);
    strip_credentials(&mut resource_spans);
    let limited = rx.ingest.limit_spans(&mut resource_spans, None, &rx.order_event_metrics);
    if !limited.rejected.is_empty() {
        rejected = with_limit_rejections(rejected, &events, &limited, &limited.rejection_message(&rx.ingest.spans));
        if count_spans(&resource_spans) == 0 {
            let reply = serde_json::json!({"error": "no valid order event in the request", "accepted": 0, "rejected": rejected});
            return (StatusCode::BAD_REQUEST, Json(reply)).into_response();
        }
    }
    match rx.fanout.admit(resource_spans).await {
        Ok(admission) => {
            rx.order_event_metrics.accepted(admission.accepted_spans);
            let mut reply = serde_json::json!({"accepted": admission.accepted_spans});
            if !rejected.is_empty() {
                reply["rejected"] = serde_json::json!(rejected);
            }
            (StatusCode::OK, Json(reply)).into_response()
        }
        Err(e) => refuse_events(&rx, e.into(), events.len()),
    }
}

/// Adds the events whose spans the span limits rejected to `rejected`, by their index in the body.
fn with_limit_rejections(mut rejected: Vec<Rejection>, events: &[OrderEvent], limited: &LimitedSpans, message: &str) -> Vec<Rejection> {
    // The valid events are the body's elements in order, less those refused while parsing.
    let refused: std::collections::HashSet<usize> = rejected.iter().map(|r| r.index).collect();
    let mut body_index = (0..).filter(|i| !refused.contains(i));
    for event in events {
        let index = body_index.next().unwrap_or_default();
        let (trace_id, span_id) = event.ids();
        if limited.rejected.iter().any(|(t, s)| t[..] == trace_id[..] && s[..] == span_id[..]) {
            rejected.push(Rejection { index, field: Some("attributes".into()), error: message.into() });
        }
    }
    rejected.sort_by_key(|r| r.index);
    rejected
}

/// An ingest error as an order-events reply: `{"error": ...}`, with a retry hint when retryable.
fn refuse_events(rx: &HttpReceiver, error: IngestError, events: usize) -> Response {
    rx.order_event_metrics.refused(events, error.reason());
    tracing::debug!(%error, events, "refused an order-events request");
    let message = match &error {
        IngestError::UnsupportedMediaType(found) => {
            format!("unsupported content type {found:?}; order events are application/json")
        }
        other => other.to_string(),
    };
    let mut response = (error.http_status(), Json(serde_json::json!({"error": message}))).into_response();
    if error.retryable() {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(error.retry_after().as_secs().max(1)));
    }
    response
}

/// The one place an ingest error becomes an OTLP/HTTP reply.
fn refuse(rx: &HttpReceiver, error: IngestError, encoding: Encoding, spans: usize) -> Response {
    rx.metrics.refused(spans, error.reason());
    tracing::debug!(%error, spans, "refused an OTLP/HTTP request");
    let rpc = RpcStatus { code: error.grpc_code() as i32, message: error.to_string() };
    let mut response = status_reply(error.http_status(), &rpc, encoding);
    if error.retryable() {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(error.retry_after().as_secs().max(1)));
    }
    response
}

/// An authentication or authorization refusal on `/v1/traces`: 401 or 403 with a
/// `google.rpc.Status` (UNAUTHENTICATED or PERMISSION_DENIED and the message a client may see,
/// as gRPC answers) in the request's encoding, and the 401's `WWW-Authenticate` challenge. The
/// refusal was audited where it was decided.
fn refuse_auth(error: AuthError, encoding: Encoding) -> Response {
    let (status, challenge) = (error.http_status(), error.challenge());
    let grpc = tonic::Status::from(error);
    let rpc = RpcStatus { code: grpc.code() as i32, message: grpc.message().to_string() };
    let mut response = status_reply(status, &rpc, encoding);
    if let Some(challenge) = challenge {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
    }
    response
}

/// A refusal's body in the request's encoding, as OTLP/HTTP requires.
fn status_reply(status: StatusCode, rpc: &RpcStatus, encoding: Encoding) -> Response {
    let body = match encoding {
        Encoding::Protobuf => rpc.encode_to_vec(),
        // Serializing two plain fields cannot fail.
        Encoding::Json => serde_json::to_vec(rpc).unwrap_or_default(),
    };
    (status, [(header::CONTENT_TYPE, encoding.content_type())], body).into_response()
}

/// The encoding a reply to this request is written in: the request's own, JSON when it named
/// none that OTLP knows.
fn request_encoding(headers: &HeaderMap) -> Encoding {
    Encoding::from_content_type(headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok())).unwrap_or(Encoding::Json)
}
