//! The `debug` exporter: logs what passes, as counts or span by span.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::exporters::error::{ExportError, ExportOutcome};
use crate::pipeline::Payload;
use crate::shared::attr_string;
use crate::shared::{BatchConfig, QueueConfig};

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DebugExporterConfig {
    #[serde(default)]
    pub verbosity: Verbosity,
    #[serde(default)]
    pub sending_queue: QueueConfig,
    #[serde(default)]
    pub batch: BatchConfig,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verbosity {
    #[default]
    Basic,
    Detailed,
}

pub struct DebugExporter {
    pub id: String,
    pub verbosity: Verbosity,
}

impl DebugExporter {
    pub async fn export(&self, payloads: Vec<Arc<Payload>>) -> Result<ExportOutcome, ExportError> {
        let spans: usize = payloads.iter().map(|p| p.span_count()).sum();
        tracing::info!(exporter = %self.id, spans, "debug exporter received spans");
        if self.verbosity == Verbosity::Detailed {
            for rs in payloads.iter().flat_map(|p| p.resource_spans().into_owned()) {
                let service = rs.resource.as_ref().and_then(|r| attr_string(&r.attributes, "service.name")).unwrap_or_default();
                for span in rs.scope_spans.iter().flat_map(|s| &s.spans) {
                    let attributes: Vec<String> =
                        span.attributes.iter().map(|kv| format!("{}={}", kv.key, show(kv.value.as_ref()))).collect();
                    tracing::info!(
                        exporter = %self.id,
                        service = %service,
                        trace_id = %hex::encode(&span.trace_id),
                        span_id = %hex::encode(&span.span_id),
                        name = %span.name,
                        kind = span.kind,
                        attributes = %attributes.join(" "),
                        "span"
                    );
                }
            }
        }
        Ok(ExportOutcome::default())
    }
}

fn show(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    match value.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}
