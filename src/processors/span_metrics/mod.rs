//! The `span_metrics` processor: metrics derived from the spans that pass, served on the API
//! port's `/metrics` beside the gateway's own. It passes every span on unchanged; placed after
//! `order_enrich` it sees the order attributes (also on spans the enricher held and released).
//!
//! - `red`: calls and durations per service, span name, kind and status (exemplars: trace ids);
//! - `graph`: the service graph, including the edges through the bus;
//! - `orders`: transition times, orders per status, steps, bus wait;
//! - `series`: families with a series limit, and their exposition.
//!
//! The state is one per process (`Metrics::sections`, key [`SECTION`]): every pipeline that
//! lists the processor adds to the same series, and a reload that keeps its configuration keeps
//! its counts. See docs/metrics.md.

mod config;
mod graph;
mod orders;
mod processor;
mod red;
mod series;

pub use config::{ExemplarsConfig, GraphStoreConfig, HistogramConfig, Naming, OrdersConfig, ServiceGraphConfig, SpanMetricsConfig};
pub use processor::{SpanMetrics, SpanMetricsState, SECTION};
pub use red::route_template;
pub use series::OVERFLOW_LABEL;
