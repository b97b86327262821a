//! Configuration: the Collector's shape (receivers, processors, exporters, service.pipelines),
//! read from YAML with `${env:...}` substitution, every error reported with its path.

mod env;
mod files;
mod load;
mod model;
mod redact;
mod units;

pub use files::{check_readable_file, check_writable};
pub use load::{ConfigError, ConfigIssue, Issues, DEFAULT_CONFIG};
pub use model::{
    ApiConfig, Config, ExporterConfig, LogEncoding, LogsConfig, PipelineConfig, ProcessorConfig, QueryConfig, ReceiverConfig,
    ServiceConfig, TelemetryConfig,
};
pub use redact::{redact_url, redact_urls};
pub use units::ByteSize;
