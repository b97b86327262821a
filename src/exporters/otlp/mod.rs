//! The `otlp` exporter: Jaeger v2 or any OTLP receiver, over gRPC (default) or HTTP.

mod body;
mod config;
mod grpc;
mod http;

use bytes::Bytes;

pub use config::{Compression, OtlpExporterConfig, OtlpProtocol, TlsClientConfig};

use crate::exporters::error::{ExportError, ExportOutcome, SetupError};

pub enum OtlpExporter {
    Grpc(grpc::GrpcClient),
    Http(http::HttpClient),
}

impl OtlpExporter {
    pub fn new(config: &OtlpExporterConfig) -> Result<OtlpExporter, SetupError> {
        Ok(match config.protocol {
            OtlpProtocol::Grpc => OtlpExporter::Grpc(grpc::GrpcClient::new(config)?),
            OtlpProtocol::Http => OtlpExporter::Http(http::HttpClient::new(config)?),
        })
    }

    /// Sends request bodies that concatenate into one `ExportTraceServiceRequest`.
    pub async fn export(&self, body: Vec<Bytes>) -> Result<ExportOutcome, ExportError> {
        match self {
            OtlpExporter::Grpc(c) => c.export(body).await,
            OtlpExporter::Http(c) => c.export(body).await,
        }
    }
}
