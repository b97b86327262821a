//! Receivers: where spans enter. Authentication and limits happen here, then the batch goes to
//! the receiver's `Fanout`.

mod error;
mod otlp;

pub use error::{IngestError, RETRY_HINT};
pub use otlp::{decode_request, decompress, otlp_http_router, serve_grpc, serve_http, Encoding, GrpcServerConfig, HttpServerConfig, OtlpReceiverConfig, RpcStatus};
