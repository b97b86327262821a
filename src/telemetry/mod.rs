//! Self-telemetry: metrics and logs of the gateway itself.

mod health;
mod logs;
mod metrics;
mod sections;

pub use health::{ExporterHealth, Readiness, ReadinessConfig, ReceiverHealth, StoreHealth};
pub use logs::{init_logs, LogEncoding, LogsConfig};
pub use metrics::{
    ElasticsearchMetrics, EnrichMetrics, ExporterLosses, ExporterMetrics, MemoryMetrics, Metrics, MonitorMetrics, NotifierMetrics,
    ReceiverMetrics, SamplingMetrics,
};
pub use sections::{wants_openmetrics, MetricSection, OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE};
