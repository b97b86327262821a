//! The `otlp` receiver: OTLP/gRPC and OTLP/HTTP for traces, and order events on the HTTP port
//! (their reading and conversion to spans is `receivers/order_events.rs`, shared with `rabbitmq`).

mod config;
mod decode;
mod grpc;
mod http;

pub use config::{GrpcServerConfig, HttpServerConfig, OtlpReceiverConfig, ReceiverAuth};
pub use decode::{decode_request, decompress, Encoding};
pub use grpc::serve_grpc;
pub use http::{otlp_http_router, serve_http, RpcStatus};
