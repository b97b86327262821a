//! The `otlp` receiver: OTLP/gRPC and OTLP/HTTP for traces, and order events on the HTTP port.

mod config;
mod decode;
mod grpc;
mod http;
mod order_events;

pub use config::{GrpcServerConfig, HttpServerConfig, OtlpReceiverConfig, ReceiverAuth};
pub use decode::{decode_request, decompress, Encoding};
pub use grpc::serve_grpc;
pub use http::{otlp_http_router, serve_http, RpcStatus};
pub use order_events::{parse_order_events, to_resource_spans, OrderEvent, ParsedOrderEvents, Rejection};
