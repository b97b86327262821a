//! Self-telemetry: metrics and logs of the gateway itself.

mod health;
mod logs;
mod metrics;

pub use health::{ExporterHealth, Readiness, ReadinessConfig, StoreHealth};
pub use logs::{init_logs, LogEncoding, LogsConfig};
pub use metrics::{
    ElasticsearchMetrics, EnrichMetrics, ExporterLosses, ExporterMetrics, MemoryMetrics, Metrics, MonitorMetrics, NotifierMetrics,
    ReceiverMetrics, SamplingMetrics,
};
