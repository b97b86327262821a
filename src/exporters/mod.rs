//! Exporters: where spans leave. Each exporter has its own queue (`pipeline::ExporterQueue`),
//! consumers that batch, time out and retry (`runner`), and one of the implementations below.

mod debug;
mod elasticsearch;
mod embedded;
mod error;
mod otlp;
mod runner;
mod settings;

use std::sync::Arc;

pub use debug::{DebugExporter, DebugExporterConfig, Verbosity};
pub use elasticsearch::bench as elasticsearch_bench;
pub use elasticsearch::{
    ElasticsearchExporter, ElasticsearchExporterConfig, ElasticsearchQuery, EsClient, OrdersConfig as ElasticsearchOrdersConfig, TargetMode,
};
pub use embedded::{error_chain, run_retention, EmbeddedExporter, EmbeddedExporterConfig};
pub use error::{ExportError, ExportOutcome};
pub use otlp::{Compression, OtlpExporter, OtlpExporterConfig, OtlpProtocol, TlsClientConfig};
pub use runner::ExporterRunner;
pub use settings::{BatchConfig, QueueConfig, RetryConfig, WhenFull};

use crate::pipeline::Payload;

/// Every exporter kind; an exhaustive match instead of a plugin registry.
pub enum Exporter {
    Otlp(OtlpExporter),
    Embedded(EmbeddedExporter),
    Elasticsearch(ElasticsearchExporter),
    Debug(DebugExporter),
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
        }
    }
}
