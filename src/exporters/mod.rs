//! Exporters: where spans leave. Each exporter has its own queue (`pipeline::ExporterQueue`),
//! consumers that batch, time out and retry (`runner`), and one of the implementations below.

mod debug;
mod elasticsearch;
mod embedded;
mod error;
mod otlp;
mod runner;
#[cfg(test)]
mod scripted;

use std::sync::Arc;

pub use crate::shared::{BatchConfig, QueueConfig, RetryConfig, WhenFull};
pub use debug::{DebugExporter, DebugExporterConfig, Verbosity};
pub use elasticsearch::bench as elasticsearch_bench;
pub use elasticsearch::monitor_state as elasticsearch_monitor_state;
pub use elasticsearch::read as elasticsearch_read;
pub use elasticsearch::{
    DocumentError as ElasticsearchDocumentError, ElasticsearchExporter, ElasticsearchExporterConfig, EsClient, EsError,
    OrdersConfig as ElasticsearchOrdersConfig, TargetMode,
};
pub use embedded::{run_retention, EmbeddedExporter, EmbeddedExporterConfig};
pub use error::{ExportError, ExportOutcome, SetupError};
pub use otlp::{Compression, OtlpExporter, OtlpExporterConfig, OtlpProtocol, TlsClientConfig};
pub use runner::ExporterRunner;

use crate::pipeline::Payload;

/// Every exporter kind; an exhaustive match instead of a plugin registry.
pub enum Exporter {
    Otlp(OtlpExporter),
    Embedded(EmbeddedExporter),
    Elasticsearch(ElasticsearchExporter),
    Debug(DebugExporter),
    /// Tests only: answers from a script (`scripted.rs`).
    #[cfg(test)]
    Scripted(Arc<scripted::Scripted>),
}

impl Exporter {
    /// Whether the exporter reads spans decoded (otherwise it only sends the encoded form).
    pub fn reads_spans(&self) -> bool {
        !matches!(self, Exporter::Otlp(_))
    }

    pub async fn export(&self, payloads: Vec<Arc<Payload>>) -> Result<ExportOutcome, ExportError> {
        match self {
            Exporter::Otlp(e) => e.export(payloads.iter().flat_map(|p| p.parts().iter().cloned()).collect()).await,
            Exporter::Embedded(e) => e.export(payloads).await,
            Exporter::Elasticsearch(e) => e.export(payloads).await,
            Exporter::Debug(e) => e.export(payloads).await,
            #[cfg(test)]
            Exporter::Scripted(e) => e.export(payloads).await,
        }
    }
}

/// One exporter's configuration, by kind: the exporters' registry.
#[derive(Debug, Clone)]
pub enum ExporterConfig {
    Otlp(OtlpExporterConfig),
    Embedded(EmbeddedExporterConfig),
    Elasticsearch(ElasticsearchExporterConfig),
    Debug(DebugExporterConfig),
}

impl ExporterConfig {
    /// Where the exporter sends (endpoints or a path), with secrets in URLs redacted: for logs.
    pub fn destination(&self) -> String {
        use crate::shared::redact_url;
        match self {
            ExporterConfig::Otlp(c) => redact_url(&c.endpoint).into_owned(),
            ExporterConfig::Elasticsearch(c) => c.endpoints.iter().map(|e| redact_url(e).into_owned()).collect::<Vec<_>>().join(", "),
            ExporterConfig::Embedded(c) => c.path.display().to_string(),
            ExporterConfig::Debug(_) => "the log".into(),
        }
    }

    /// The exporter's queue settings.
    pub fn sending_queue(&self) -> &QueueConfig {
        match self {
            ExporterConfig::Otlp(c) => &c.sending_queue,
            ExporterConfig::Embedded(c) => &c.sending_queue,
            ExporterConfig::Elasticsearch(c) => &c.sending_queue,
            ExporterConfig::Debug(c) => &c.sending_queue,
        }
    }

    pub fn validate(&self, path: &str, issues: &mut crate::shared::Issues) {
        match self {
            ExporterConfig::Otlp(c) => c.validate(path, issues),
            ExporterConfig::Embedded(c) => c.validate(path, issues),
            ExporterConfig::Elasticsearch(c) => c.validate(path, issues),
            ExporterConfig::Debug(_) => {}
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            ExporterConfig::Otlp(_) => "otlp",
            ExporterConfig::Embedded(_) => "embedded",
            ExporterConfig::Elasticsearch(_) => "elasticsearch",
            ExporterConfig::Debug(_) => "debug",
        }
    }
}
