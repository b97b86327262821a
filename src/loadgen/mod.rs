//! `tracegate loadgen`: a load generator that sends realistic shop traffic to an OTLP endpoint.
//!
//! It pre-builds a pool of encoded export requests (order flows across Shop, CRM and MES, and
//! catalogue browsing), then sends them over OTLP/gRPC or OTLP/HTTP, either as fast as the
//! gateway acknowledges or at a fixed offered rate, and reports acknowledged spans per second
//! and acknowledgement latency. The benchmark script (`bench/run.sh`) drives it.
//!
//! - `args`: the command-line flags.
//! - `spans`: the synthetic traffic.
//! - `pool`: the encoded requests, built before the clock starts.
//! - `client`: one export request over gRPC or HTTP, and how its reply counts.
//! - `driver`: workers, pacing and the deadline.
//! - `report`: the tally and the final report.
//! - `enrich_bench`: `tracegate bench-enrich`, the same traffic through one `order_enrich`
//!   processor from 1, 2, ... threads at once.
//! - `metrics_bench`: `tracegate bench-metrics`, the same traffic through a pipeline with the
//!   `span_metrics` processor off and on.
//! - `sink`: `tracegate bench-sink`, an OTLP endpoint that counts spans without decoding them,
//!   for benchmarks that count delivery.

mod args;
mod client;
mod driver;
pub mod enrich_bench;
mod error;
pub mod metrics_bench;
mod pool;
mod report;
mod sink;
mod spans;

pub use args::{LoadgenArgs, Protocol, RequestHeader};
pub use driver::run;
pub use error::{BenchError, LoadgenError};
pub use report::LoadReport;
pub use sink::{count_spans, run_sink, SinkArgs, SinkCounts, SinkError, WireError};
pub use spans::{text, GeneratedOrder, TrafficGenerator, TrafficMix};

// For `tracegate demo`, which sends one order's requests the way a load run sends many.
pub(crate) use client::{ExportClient, Reply as ExportReply};
