//! Server-side connections, shared by every listener (OTLP/gRPC, OTLP/HTTP and the API) the way
//! the Collector's `confighttp`/`configgrpc` sit below its receivers: the connection settings as
//! configured, the accept loop that enforces them, and the process's open-file limit.

mod config;
pub mod grpc;
mod listener;
mod rlimit;

pub use config::{
    connection_count, optional_positive_duration, positive_duration, GrpcKeepaliveConfig, KeepaliveServerParameters, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_READ_HEADER_TIMEOUT, MAX_CONNECTIONS_LIMIT,
};
pub use listener::{serve, serve_router, ConnectionLimits, Http2Keepalive, Peer, DRAIN_GRACE};
pub use rlimit::{default_max_connections, raise_open_file_limit};
