//! `tracegate process`: runs a pipeline's processors over one OTLP JSON request, offline, so
//! that enrichment rules can be tried before they are deployed.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use tokio::time::Instant;

use crate::config::Config;
use crate::processors::{Processor, ProcessorConfig};
use crate::telemetry::Metrics;

#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error("the configuration has no pipeline named {0:?}")]
    UnknownPipeline(String),
    #[error("the configuration has several pipelines ({0}); choose one with --pipeline")]
    WhichPipeline(String),
    #[error("processor {id:?} cannot start")]
    Processor {
        id: String,
        #[source]
        source: crate::processors::ProcessorBuildError,
    },
    #[error("the input is not an OTLP JSON ExportTraceServiceRequest")]
    Input(#[source] serde_json::Error),
}

/// Runs the processors of `pipeline` (or the only pipeline) over `input`. Spans a processor
/// would hold waiting for their order are let go at the end, as at shutdown.
pub fn process_json(config: &Config, pipeline: Option<&str>, input: &[u8]) -> Result<ExportTraceServiceRequest, OfflineError> {
    let name = match pipeline {
        Some(p) if config.service.pipelines.contains_key(p) => p.to_string(),
        Some(p) => return Err(OfflineError::UnknownPipeline(p.into())),
        None if config.service.pipelines.len() == 1 => config.service.pipelines.keys().next().cloned().unwrap_or_default(),
        None => return Err(OfflineError::WhichPipeline(config.service.pipelines.keys().cloned().collect::<Vec<_>>().join(", "))),
    };
    let request: ExportTraceServiceRequest = serde_json::from_slice(input).map_err(OfflineError::Input)?;
    let metrics = Metrics::new();
    let processors = config.service.pipelines[&name]
        .processors
        .iter()
        .map(|id| {
            // Offline, nothing is kept on disk: spans the correlation hold would keep go on.
            let processor = match &config.processors[id] {
                ProcessorConfig::OrderEnrich(c) => {
                    ProcessorConfig::OrderEnrich(crate::processors::OrderEnrichConfig { correlation_hold: None, ..c.clone() })
                }
                other => other.clone(),
            };
            Processor::build(&processor, &name, &metrics).map_err(|source| OfflineError::Processor { id: id.clone(), source })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let now = Instant::now();
    let mut batch = request.resource_spans;
    for p in &processors {
        batch = p.process(batch, now);
    }
    for (i, p) in processors.iter().enumerate() {
        let mut held = p.flush();
        for later in &processors[i + 1..] {
            held = later.process(held, now);
        }
        batch.extend(held);
    }
    Ok(ExportTraceServiceRequest { resource_spans: batch })
}
