//! Configuration: the Collector's shape (receivers, processors, exporters, service.pipelines),
//! read from YAML with `${env:...}` substitution, every error reported with its path.

mod env;
mod load;
mod model;

pub use load::{ConfigError, ConfigIssue, Issues, DEFAULT_CONFIG};
pub use model::{
    ApiConfig, Config, ExporterConfig, LogEncoding, LogsConfig, PipelineConfig, ProcessorConfig, QueryConfig, ReceiverConfig,
    ServiceConfig, TelemetryConfig,
};
// The building blocks, for callers that know them by their old home.
pub use crate::shared::{check_readable_file, check_writable, redact_url, redact_urls, ByteSize};
