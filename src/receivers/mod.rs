//! Receivers: where spans enter. Authentication and limits happen here, then the batch goes to
//! the receiver's `Fanout`.

mod error;
mod limits;
mod order_events;
mod otlp;
mod rabbitmq;
mod scrub;
mod span_limits;
mod validate;

pub use error::{IngestError, RETRY_HINT};
pub use limits::{RateLimitConfig, SenderLimiter};
pub use order_events::{
    parse_order_events, read_order_event, to_resource_spans, OrderEvent, OrderEventsError, ParsedOrderEvents, Rejection,
};
pub use otlp::{
    decode_request, decompress, otlp_http_router, serve_grpc, serve_http, Encoding, GrpcServerConfig, HttpServerConfig, OtlpReceiverConfig,
    ReceiverAuth, RpcStatus,
};
pub use rabbitmq::{
    map_message, AmqpTlsConfig, BindConfig, DeadLetterConfig, FieldSource, MappingConfig, RabbitMqMetricFamilies, RabbitMqMetrics,
    RabbitMqReceiver, RabbitMqReceiverConfig, ReconnectConfig, Unmappable,
};
pub use scrub::{is_credential_attribute, strip_credentials};
pub use span_limits::{LimitedSpans, SpanLimitsConfig};
pub use validate::{drop_invalid_spans, InvalidSpans};

use std::sync::Arc;

use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

use crate::pipeline::MemoryLimiter;
use crate::telemetry::ReceiverMetrics;

/// What every request of one receiver is held to besides authentication and its rate limit:
/// its per-span limits and the process's memory limiter (`service.memory_limiter`).
#[derive(Clone, Default)]
pub struct IngestLimits {
    pub spans: SpanLimitsConfig,
    pub memory: Option<Arc<MemoryLimiter>>,
}

impl IngestLimits {
    /// Refuses (503 / `UNAVAILABLE` with a retry hint) while the process is past its soft
    /// memory limit.
    pub fn check_memory(&self) -> Result<(), IngestError> {
        match &self.memory {
            Some(memory) if memory.refuses() => Err(IngestError::MemoryLimit),
            _ => Ok(()),
        }
    }

    /// Applies the span limits to a request and counts what they changed; spans they rejected
    /// are counted as refused with reason `span_too_large` (and reported by the caller in
    /// `partial_success`). Returns the rejected spans' count and message, if any.
    pub fn limit_spans(&self, batch: &mut Vec<ResourceSpans>, size_bound: Option<usize>, metrics: &ReceiverMetrics) -> LimitedSpans {
        let limited = self.spans.apply(batch, size_bound);
        if limited.changed() {
            for (what, n) in limited.counts().into_iter().filter(|(_, n)| *n > 0) {
                metrics.span_limited(what, n);
            }
            if !limited.rejected.is_empty() {
                metrics.rejected(limited.rejected.len(), "span_too_large");
            }
            tracing::debug!(
                attributes = limited.attributes,
                values = limited.values,
                events = limited.events,
                links = limited.links,
                rejected = limited.rejected.len(),
                "span limits applied"
            );
        }
        limited
    }
}

/// One receiver's configuration, by kind (the configuration reads each `receivers.<id>` into one
/// of these through its registry, `config/registry.rs`).
#[derive(Debug, Clone)]
pub enum ReceiverConfig {
    Otlp(OtlpReceiverConfig),
    RabbitMq(RabbitMqReceiverConfig),
}

impl ReceiverConfig {
    /// The receiver's own checks; those that involve other sections are the configuration's.
    pub fn validate(&self, path: &str, issues: &mut crate::shared::Issues) {
        match self {
            ReceiverConfig::Otlp(c) => c.validate(path, issues),
            ReceiverConfig::RabbitMq(c) => c.validate(path, issues),
        }
    }
}
