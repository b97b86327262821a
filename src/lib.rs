//! tracegate: an OpenTelemetry trace gateway that knows which business order each span belongs to.
//!
//! The data path, module by module:
//! - [`receivers`] take OTLP over gRPC and HTTP, enforce limits and hand each request to its
//!   receiver's [`pipeline::Fanout`];
//! - [`processors`] tag spans with their order and stage (`order_enrich`) and sample
//!   (`order_sampling`);
//! - [`pipeline`] runs processors and admits the batch to every exporter queue of its pipelines,
//!   all or nothing ([`pipeline::ExporterQueue`] is bounded, counted in spans);
//! - [`exporters`] drain their queues: batching, per-attempt timeout, retry with backoff, then
//!   OTLP (Jaeger v2), the embedded store, or the log;
//! - [`store`] is the embedded SQLite store the read API queries;
//! - [`api`] serves the read API, `/metrics`, `/healthz` and `/readyz`;
//! - [`config`] reads the YAML configuration and reports every error with its path;
//! - [`gateway`] wires it all together and shuts it down in stages;
//! - [`telemetry`] holds the gateway's own metrics and log set-up;
//! - [`loadgen`] is the load generator behind `tracegate loadgen`;
//! - [`offline`] runs a pipeline's processors over a file for `tracegate process`.

pub mod api;
pub mod config;
pub mod exporters;
pub mod gateway;
pub mod loadgen;
pub mod offline;
pub mod pipeline;
pub mod processors;
pub mod receivers;
pub mod store;
pub mod telemetry;

pub use config::Config;
pub use gateway::{Gateway, ShutdownReport, StartError};
