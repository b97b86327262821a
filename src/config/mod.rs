//! Configuration: the Collector's shape (receivers, processors, exporters, service.pipelines),
//! read from YAML with `${env:...}` substitution, every error reported with its path.

mod env;
mod load;
mod model;
mod registry;

pub use load::{ConfigError, ConfigIssue, Issues, DEFAULT_CONFIG};
pub use model::{
    ApiConfig, Config, ExporterConfig, LogEncoding, LogsConfig, MonitorConfig, PipelineConfig, ProcessorConfig, QueryConfig,
    ReceiverConfig, ServiceConfig, TelemetryConfig,
};
