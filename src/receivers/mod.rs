//! Receivers: where spans enter. Authentication and limits happen here, then the batch goes to
//! the receiver's `Fanout`.

mod error;
mod limits;
mod otlp;
mod scrub;
mod validate;

pub use error::{IngestError, RETRY_HINT};
pub use limits::{RateLimitConfig, SenderLimiter};
pub use otlp::{
    decode_request, decompress, otlp_http_router, parse_order_events, serve_grpc, serve_http, to_resource_spans, Encoding,
    GrpcServerConfig, HttpServerConfig, OrderEvent, OtlpReceiverConfig, ParsedOrderEvents, ReceiverAuth, Rejection, RpcStatus,
};
pub use scrub::{is_credential_attribute, strip_credentials};
pub use validate::{drop_invalid_spans, InvalidSpans};

/// One receiver's configuration, by kind: the receivers' registry.
#[derive(Debug, Clone)]
pub enum ReceiverConfig {
    Otlp(OtlpReceiverConfig),
}
