//! tracegate: an OpenTelemetry trace gateway that knows which business order each span belongs to.
//!
//! The data path, module by module:
//! - [`net`] is what every listener shares: the accept loop with its connection limit,
//!   header, idle and age timeouts and accept back-off, and the open-file limit;
//! - [`receivers`] take OTLP over gRPC and HTTP, authenticate senders, enforce limits, strip
//!   credential attributes and hand each request to its receiver's [`pipeline::Fanout`];
//! - [`processors`] tag spans with their order and stage (`order_enrich`) and sample
//!   (`order_sampling`);
//! - [`pipeline`] runs processors and admits the batch to every exporter queue of its pipelines,
//!   all or nothing ([`pipeline::ExporterQueue`] is bounded, counted in spans);
//! - [`exporters`] drain their queues: batching, per-attempt timeout, retry with backoff, then
//!   OTLP (Jaeger v2), Elasticsearch (span documents and an orders index), the embedded store,
//!   or the log;
//! - [`store`] is the embedded SQLite store the read API queries;
//! - [`api`] serves the read API (from the embedded store or Elasticsearch,
//!   `api::QueryBackend`), `/metrics`, `/healthz` and `/readyz`, every request through the policy
//!   door;
//! - [`auth`] verifies JWTs (configured keys and JWKS), maps roles, holds the route ->
//!   permission table and the service-identity check on ingest, and pseudonymises personal data;
//! - [`audit`] keeps the hash-chained, signed audit trail and verifies it;
//! - [`config`] reads the YAML configuration and reports every error with its path;
//! - [`gateway`] wires it all together and shuts it down in stages;
//! - [`telemetry`] holds the gateway's own metrics and log set-up;
//! - [`loadgen`] is the load generator behind `tracegate loadgen`;
//! - [`offline`] runs a pipeline's processors over a file for `tracegate process`.

pub mod api;
pub mod audit;
pub mod auth;
pub mod config;
pub mod exporters;
pub mod gateway;
pub mod loadgen;
pub mod net;
pub mod offline;
pub mod pipeline;
pub mod processors;
pub mod receivers;
pub mod store;
pub mod telemetry;

pub use config::Config;
pub use gateway::{Gateway, ShutdownReport, StartError};
