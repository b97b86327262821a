//! tracegate: an OpenTelemetry trace gateway that knows which business order each span belongs to.
//!
//! The data path, module by module:
//! - [`shared`] holds the primitives every layer uses (configuration issues and units, files a
//!   configuration names, secrets in URLs, RFC 3339 time, error chains); it imports nothing;
//! - [`net`] is what every listener shares: the accept loop with its connection limit,
//!   header, idle and age timeouts and accept back-off, and the open-file limit;
//! - [`receivers`] take OTLP over gRPC and HTTP, authenticate senders, enforce limits, strip
//!   credential attributes and hand each request to its receiver's [`pipeline::Fanout`];
//! - [`processors`] tag spans with their order and stage (`order_enrich`), sample
//!   (`order_sampling`) and derive metrics from them (`span_metrics`);
//! - [`pipeline`] runs processors and admits the batch to every exporter queue of its pipelines,
//!   all or nothing ([`pipeline::ExporterQueue`] is bounded, counted in spans);
//! - [`exporters`] drain their queues: batching, per-attempt timeout, retry with backoff, then
//!   OTLP (Jaeger v2), Elasticsearch (span documents and an orders index), the embedded store,
//!   or the log;
//! - [`orders`] is the order domain: timelines and transitions assembled from an order's spans,
//!   order lists; no storage, no wire format;
//! - [`monitors`] watch the time between an order's statuses and raise order alerts (issue 11);
//! - [`notifiers`] announce order alerts (Alertmanager, e-mail, a signed webhook);
//! - [`store`] is the embedded SQLite store the `embedded` exporter writes;
//! - [`query`] holds the read backends (the embedded store or the indices the Elasticsearch
//!   exporter writes, `query::QueryBackend`); exporters only write;
//! - [`api`] serves the read API (its JSON shapes live there), `/metrics`, `/healthz` and
//!   `/readyz`, every request through the policy door;
//! - [`auth`] verifies JWTs (configured keys and JWKS), maps roles, holds the route ->
//!   permission table and the service-identity check on ingest, and pseudonymises personal data;
//! - [`audit`] keeps the hash-chained, signed audit trail and verifies it;
//! - [`config`] reads the YAML configuration and reports every error with its path;
//! - [`gateway`] wires it all together and shuts it down in stages;
//! - [`telemetry`] holds the gateway's own metrics and log set-up;
//! - [`loadgen`] is the load generator behind `tracegate loadgen`;
//! - [`demo`] sends the quick start's orders for `tracegate demo` and waits until they are readable;
//! - [`offline`] runs a pipeline's processors over a file for `tracegate process`.
//!
//! The layering rule (kept by `tests/layers.rs`): a module uses only modules below it, bottom
//! to top `shared` < `telemetry`, `net`, `orders` < `processors` < `pipeline` < `store`,
//! `loadgen`, `notifiers` < `exporters` < `query`, `audit` < `auth`, `monitors` < `receivers`, `api`, `demo` < `config`
//! < `gateway`, `offline` (and the binary's `main.rs` on top). Each component kind's registry (the
//! `ReceiverConfig`, `ProcessorConfig` and `ExporterConfig` enums) lives with its components;
//! `config` assembles them from the YAML.

pub mod api;
pub mod audit;
pub mod auth;
pub mod config;
pub mod demo;
pub mod exporters;
pub mod gateway;
pub mod loadgen;
pub mod monitors;
pub mod net;
pub mod notifiers;
pub mod offline;
pub mod orders;
pub mod pipeline;
pub mod processors;
pub mod query;
pub mod receivers;
pub mod shared;
pub mod store;
pub mod telemetry;

pub use config::Config;
pub use gateway::{Gateway, ShutdownReport, StartError};
