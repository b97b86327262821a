//! Self-telemetry: metrics and logs of the gateway itself.

mod logs;
mod metrics;

pub use logs::{init_logs, LogEncoding, LogsConfig};
pub use metrics::{
    ElasticsearchMetrics, EnrichMetrics, ExporterMetrics, Metrics, MonitorMetrics, NotifierMetrics, ReceiverMetrics, SamplingMetrics,
};
