//! The `embedded` exporter: keeps spans in the embedded SQLite store for the read API.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::exporters::error::{ExportError, ExportOutcome};
use crate::pipeline::Payload;
use crate::shared::Issues;
use crate::shared::{validate_common, BatchConfig, QueueConfig, RetryConfig};
use crate::store::SpanStore;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedExporterConfig {
    #[serde(default = "default_path")]
    pub path: PathBuf,
    /// Spans that ended longer ago than this are deleted.
    #[serde(default = "default_retention", with = "humantime_serde")]
    pub retention: Duration,
    #[serde(default)]
    pub retry_on_failure: RetryConfig,
    #[serde(default)]
    pub sending_queue: QueueConfig,
    #[serde(default)]
    pub batch: BatchConfig,
}

fn default_path() -> PathBuf {
    PathBuf::from("./data")
}

fn default_retention() -> Duration {
    Duration::from_secs(72 * 3600)
}

impl EmbeddedExporterConfig {
    pub fn validate(&self, path: &str, issues: &mut Issues) {
        if self.retention.is_zero() {
            issues.push(format!("{path}.retention"), "must be greater than 0");
        }
        crate::shared::check_writable(issues, format!("{path}.path"), &self.path);
        validate_common(path, &self.sending_queue, &self.batch, &self.retry_on_failure, issues);
    }
}

pub struct EmbeddedExporter {
    store: Arc<SpanStore>,
}

impl EmbeddedExporter {
    pub fn new(store: Arc<SpanStore>) -> EmbeddedExporter {
        EmbeddedExporter { store }
    }

    pub async fn export(&self, payloads: Vec<Arc<Payload>>) -> Result<ExportOutcome, ExportError> {
        let store = self.store.clone();
        let result = tokio::task::spawn_blocking(move || {
            let refs: Vec<&Payload> = payloads.iter().map(Arc::as_ref).collect();
            store.insert(&refs)
        })
        .await;
        match result {
            Ok(Ok(_)) => Ok(ExportOutcome::default()),
            // A busy or full disk may clear up; the batch is retried.
            Ok(Err(e)) => Err(ExportError::retryable(format!("embedded store write failed: {}", crate::shared::error_chain(&e)))),
            Err(e) => Err(ExportError::retryable(format!("embedded store task failed: {e}"))),
        }
    }
}

/// Deletes expired spans periodically until the task is aborted.
pub async fn run_retention(store: Arc<SpanStore>, retention: Duration, exporter: String) {
    let every = (retention / 4).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let cutoff = SystemTime::now().checked_sub(retention).unwrap_or(UNIX_EPOCH);
        let cutoff_ns = cutoff.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
        let store = store.clone();
        match tokio::task::spawn_blocking(move || store.purge_before(cutoff_ns)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => {
                tracing::info!(exporter = %exporter, deleted = n, "retention removed expired spans")
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %crate::shared::error_chain(&e), exporter = %exporter, "retention sweep failed")
            }
            Err(_) => return,
        }
    }
}
