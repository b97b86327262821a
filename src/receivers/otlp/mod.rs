//! The `otlp` receiver: OTLP/gRPC and OTLP/HTTP for traces.

mod config;
mod decode;
mod grpc;
mod http;

pub use config::{GrpcServerConfig, HttpServerConfig, OtlpReceiverConfig};
pub use decode::{decode_request, decompress, Encoding};
pub use grpc::serve_grpc;
pub use http::{otlp_http_router, serve_http, RpcStatus};
