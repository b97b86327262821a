//! The `elasticsearch` exporter: span documents through the bulk API, an orders entity index,
//! and the read API's Elasticsearch backend.
//!
//! One `export` call encodes its spans, cuts them into bulk requests of at most `flush.bytes`,
//! sends up to `max_requests_in_flight` of them at once and reads every reply item by item
//! (`retry.rs`): created and 409 items are delivered, 429 / 5xx items are sent again (up to
//! `item_retries` rounds with the shared `Backoff`, then the batch goes back to the runner's
//! `retry_on_failure`; each bulk request has the configured `timeout`), other 4xx
//! items go to the dead-letter file. Since every document is written with `create` and an `_id`
//! derived from its trace and span ids, sending a span twice never stores it twice.

pub mod bench;
mod config;
mod dead_letter;
mod document;
mod encoder;
mod error;
mod json;
pub mod monitor_state;
mod multi_get;
mod orders;
mod retry;
mod service;
mod templates;

use std::sync::Arc;
use std::time::{Duration, Instant};

pub use config::{ElasticsearchExporterConfig, OrdersConfig, TargetMode};
pub use encoder::{BulkItem, SpanEncoder};
/// The document format, for the Elasticsearch read backend (the `query` module) that reads what
/// this exporter writes.
pub mod read {
    pub use super::config::TargetConfig;
    pub use super::document::{document_order_span, field, kind_number, SearchReply, SpanDocument, StoredSpan};
}
pub use error::{DocumentError, EsError};
pub use retry::{classify, ItemOutcome, RequestOutcome};
pub use service::EsClient;

use dead_letter::DeadLetter;
use orders::OrdersIndex;

use crate::exporters::error::{ExportError, ExportOutcome, SetupError};
use crate::pipeline::Payload;
use crate::shared::{error_chain, on_blocking_pool, Backoff, RetryPolicy};
use crate::telemetry::ElasticsearchMetrics;

pub struct ElasticsearchExporter {
    id: String,
    client: EsClient,
    /// Shared with the blocking pool, where batches are encoded.
    encoder: Arc<SpanEncoder>,
    config: ElasticsearchExporterConfig,
    dead_letter: DeadLetter,
    metrics: ElasticsearchMetrics,
    orders: Option<OrdersIndex>,
    /// Templates are installed before the first bulk request (once it succeeds).
    setup: tokio::sync::OnceCell<()>,
}

/// What became of one bulk request's items.
enum Sent {
    Done { retry: Vec<usize>, dead: Vec<(usize, u16, serde_json::Value)>, indexed: u64 },
    Split(Vec<usize>),
    RetryAll { items: Vec<usize>, reason: String, retry_after: Option<Duration> },
    Unauthorized { items: Vec<usize>, status: u16, reason: String },
    RejectAll { items: Vec<usize>, status: u16, reason: String },
}

impl ElasticsearchExporter {
    pub fn new(
        id: &str,
        config: &ElasticsearchExporterConfig,
        correlation_keys: &[String],
        metrics: ElasticsearchMetrics,
    ) -> Result<ElasticsearchExporter, SetupError> {
        let client = EsClient::new(config)?;
        let orders =
            (!config.orders.index.is_empty()).then(|| OrdersIndex::new(client.clone(), config.orders.clone(), config.mapping.pattern()));
        Ok(ElasticsearchExporter {
            id: id.into(),
            encoder: Arc::new(SpanEncoder::new(config.mapping.clone(), correlation_keys.to_vec())),
            dead_letter: DeadLetter::new(config.dead_letter_path.clone()),
            client,
            config: config.clone(),
            metrics,
            orders,
            setup: tokio::sync::OnceCell::new(),
        })
    }

    /// The runner's timeout for one `export` call: none (zero). Each bulk request has its own
    /// `timeout`, the item retries are bounded by `item_retries` and `max_elapsed_time`, and the
    /// runner bounds the whole retry by `retry_on_failure.max_elapsed_time`: no timeout here
    /// depends on another loop's settings.
    pub fn attempt_timeout(&self) -> Duration {
        Duration::ZERO
    }

    /// The retry of 429 / 5xx items within one `export` call: 100 ms doubling up to 30 s (or
    /// Elasticsearch's `Retry-After`), `item_retries` times at most.
    fn item_retry(&self) -> RetryPolicy {
        RetryPolicy {
            backoff: Backoff {
                initial_interval: Duration::from_millis(100),
                multiplier: 2.0,
                max_interval: Duration::from_secs(30),
                max_elapsed: self.config.retry_on_failure.max_elapsed_time,
                jitter: 0.0,
                max_attempts: Some(self.config.item_retries + 1),
            },
            attempt_timeout: Some(self.config.timeout),
        }
    }

    pub async fn export(&self, payloads: Vec<Arc<Payload>>) -> Result<ExportOutcome, ExportError> {
        self.setup
            .get_or_try_init(|| templates::install(&self.client, &self.config, &self.id))
            .await
            .map_err(|e| ExportError::retryable(error_chain(&e)))?;
        let items = Arc::new(self.encode(&payloads).await?);
        let mut pending: Vec<usize> = (0..items.len()).collect();
        let mut dead_lettered = 0u64;
        let mut last_error = String::new();
        let mut retry_after;
        let policy = self.item_retry();
        let mut schedule = policy.backoff.start();
        loop {
            let mut queue: Vec<Vec<usize>> =
                encoder::chunk_by_bytes(&pending, self.config.flush.bytes.as_usize(), |i| items[i].lines.len());
            pending = Vec::new();
            retry_after = None;
            while !queue.is_empty() {
                let wave: Vec<Vec<usize>> = queue.drain(..queue.len().min(self.config.max_requests_in_flight)).collect();
                let mut tasks = tokio::task::JoinSet::new();
                for chunk in wave {
                    let (client, items, metrics, policy) = (self.client.clone(), items.clone(), self.metrics.clone(), policy.clone());
                    tasks.spawn(async move { send_chunk(&client, &items, chunk, &metrics, &policy).await });
                }
                while let Some(done) = tasks.join_next().await {
                    let sent = done.map_err(|e| ExportError::retryable(format!("bulk task failed: {e}")))?;
                    match sent {
                        Sent::Done { retry, dead, indexed } => {
                            self.metrics.indexed.inc_by(indexed);
                            if !retry.is_empty() {
                                last_error = format!("{} bulk items answered 429 / 5xx", retry.len());
                            }
                            pending.extend(retry);
                            dead_lettered += self.reject(&items, dead).await? as u64;
                        }
                        Sent::Split(chunk) if chunk.len() > 1 => {
                            let (a, b) = chunk.split_at(chunk.len() / 2);
                            queue.push(a.to_vec());
                            queue.push(b.to_vec());
                        }
                        Sent::Split(chunk) => {
                            let dead = chunk.into_iter().map(|i| (i, 413, serde_json::json!({"type": "request_too_large"}))).collect();
                            dead_lettered += self.reject(&items, dead).await? as u64;
                        }
                        Sent::RetryAll { items: chunk, reason, retry_after: after } => {
                            tracing::warn!(exporter = %self.id, error = %reason, documents = chunk.len(), "bulk request failed; will retry");
                            last_error = reason;
                            retry_after = retry_after.max(after);
                            pending.extend(chunk);
                        }
                        Sent::Unauthorized { items: chunk, status, reason } => {
                            tracing::error!(
                                exporter = %self.id, status, error = %reason,
                                "Elasticsearch refused these credentials; check exporters.{}.auth. The batch goes to the dead-letter file",
                                self.id
                            );
                            let dead = chunk
                                .into_iter()
                                .map(|i| (i, status, serde_json::json!({"type": "unauthorized", "reason": reason})))
                                .collect();
                            let n = self.reject(&items, dead).await?;
                            return Err(ExportError::permanent(format!(
                                "Elasticsearch answered HTTP {status} to the bulk request ({n} documents dead-lettered): {reason}"
                            )));
                        }
                        Sent::RejectAll { items: chunk, status, reason } => {
                            let dead = chunk
                                .into_iter()
                                .map(|i| (i, status, serde_json::json!({"type": "request_rejected", "reason": reason})))
                                .collect();
                            dead_lettered += self.reject(&items, dead).await? as u64;
                        }
                    }
                }
            }
            if pending.is_empty() {
                break;
            }
            match schedule.next_delay(retry_after.map(|d: Duration| d.min(Duration::from_secs(30)))) {
                Ok(delay) => {
                    self.metrics.retried.inc_by(pending.len() as u64);
                    tokio::time::sleep(delay).await;
                }
                // The rest is the runner's `retry_on_failure`.
                Err(_) => break,
            }
        }
        if !pending.is_empty() {
            return Err(ExportError::Retryable {
                message: format!("{} of {} documents not indexed yet: {last_error}", pending.len(), items.len()),
                retry_after,
            });
        }
        if let Some(orders) = &self.orders {
            let n = orders.update(&payloads, &self.encoder).await.map_err(|e| ExportError::retryable(error_chain(&e)))?;
            self.metrics.orders_updated.inc_by(n as u64);
        }
        Ok(ExportOutcome {
            rejected_spans: dead_lettered,
            message: if dead_lettered > 0 {
                format!("{dead_lettered} documents refused by Elasticsearch; see {}", self.config.dead_letter_path.display())
            } else {
                String::new()
            },
        })
    }

    /// One bulk item per span of the batch, encoded on the blocking pool: decoding the payloads
    /// and writing their documents is milliseconds of CPU per batch.
    async fn encode(&self, payloads: &[Arc<Payload>]) -> Result<Vec<BulkItem>, ExportError> {
        let (encoder, payloads) = (self.encoder.clone(), payloads.to_vec());
        on_blocking_pool(move || {
            let mut items = Vec::new();
            for p in &payloads {
                encoder.encode(&p.resource_spans(), &mut items);
            }
            items
        })
        .await
        .map_err(|e| ExportError::retryable(format!("cannot encode the batch: {e}")))
    }

    /// Writes refused documents to the dead-letter file; counts them.
    async fn reject(&self, items: &[BulkItem], dead: Vec<(usize, u16, serde_json::Value)>) -> Result<usize, ExportError> {
        if dead.is_empty() {
            return Ok(0);
        }
        let n = dead.len();
        let records: Vec<_> = dead.into_iter().map(|(i, status, error)| (items[i].clone(), status, error)).collect();
        self.dead_letter.write(&records).await.map_err(|e| ExportError::retryable(format!("cannot write the dead-letter file: {e}")))?;
        self.metrics.dead_lettered.inc_by(n as u64);
        tracing::error!(exporter = %self.id, documents = n, file = %self.config.dead_letter_path.display(), "Elasticsearch refused documents for good; written to the dead-letter file");
        Ok(n)
    }
}

async fn send_chunk(
    client: &EsClient,
    items: &[BulkItem],
    chunk: Vec<usize>,
    metrics: &ElasticsearchMetrics,
    policy: &RetryPolicy,
) -> Sent {
    let body = match client.bulk_body_off_thread(chunk.iter().map(|&i| items[i].lines.clone()).collect()).await {
        Ok(body) => body,
        Err(stopped) => return Sent::RetryAll { items: chunk, reason: format!("bulk request not built: {stopped}"), retry_after: None },
    };
    let started = Instant::now();
    // The request's own timeout (`timeout`), the same the transport applies.
    let result = policy.attempt(None, client.bulk(&body)).await;
    metrics.bulk_latency.observe(started.elapsed().as_secs_f64());
    let reply = match result {
        Ok((reply, sent)) => {
            metrics.bytes_sent.inc_by(sent as u64);
            reply
        }
        Err(reason) => return Sent::RetryAll { items: chunk, reason: format!("no reply: {}", error_chain(&reason)), retry_after: None },
    };
    match classify(reply.status, reply.retry_after.as_deref(), &reply.body, chunk.len()) {
        RequestOutcome::Items(outcomes) => {
            let (mut retry, mut dead, mut indexed) = (Vec::new(), Vec::new(), 0);
            for (i, outcome) in chunk.into_iter().zip(outcomes) {
                match outcome {
                    ItemOutcome::Indexed | ItemOutcome::AlreadyIndexed => indexed += 1,
                    ItemOutcome::Retry { .. } => retry.push(i),
                    ItemOutcome::Reject { status, error } => dead.push((i, status, error)),
                }
            }
            Sent::Done { retry, dead, indexed }
        }
        RequestOutcome::TooLarge => Sent::Split(chunk),
        RequestOutcome::Retry { reason, retry_after } => Sent::RetryAll { items: chunk, reason, retry_after },
        RequestOutcome::Unauthorized { status, reason } => Sent::Unauthorized { items: chunk, status, reason },
        RequestOutcome::Reject { status, reason } => Sent::RejectAll { items: chunk, status, reason },
    }
}

#[cfg(test)]
mod tests;
