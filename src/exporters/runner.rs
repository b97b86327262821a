//! `ExporterRunner`: the consumers of one exporter's queue. Each takes batches off the queue up
//! to `batch.max_spans` or `batch.max_wait`, sends them with a per-attempt timeout and retries
//! with backoff, and only then gives the queue capacity back.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::error::ExportError;
use super::Exporter;
use crate::pipeline::{ExporterQueue, Payload, QueuedBatch};
use crate::shared::{BatchConfig, RetryConfig};
use crate::telemetry::ExporterHealth;

/// Everything a consumer needs.
pub struct ExporterRunner {
    pub id: String,
    pub exporter: Arc<Exporter>,
    pub queue: Arc<ExporterQueue>,
    pub batch: BatchConfig,
    pub retry: RetryConfig,
    /// Per attempt.
    pub timeout: Duration,
    /// Largest request body; batches stop short of it and larger requests are split.
    pub max_bytes: Option<usize>,
    /// Where the spans go (endpoint or path, secrets redacted), named in every failure log so
    /// that `dns error` says which host.
    pub destination: String,
    /// Where spans the peer refused for good are kept (`dead_letter_path`), if anywhere.
    pub dead_letter: Option<std::path::PathBuf>,
    /// Every attempt's outcome, for `/readyz`.
    pub health: ExporterHealth,
}

/// At most this many pieces are sent while a refused batch is bisected; what is still refused
/// then is dropped whole (a peer that refuses everything is not asked thousands of times).
const MAX_BISECT_PIECES: usize = 64;

/// How one batch ended.
enum Delivery {
    Done,
    /// The peer refused the content (`ExportError::Refused`): the caller may bisect.
    Refused(ExportError),
    /// The shutdown deadline passed before the batch was delivered.
    Cancelled,
}

impl ExporterRunner {
    /// Runs one consumer until the queue is closed and empty or `cancel` fires; what it holds
    /// when cancelled goes back to the queue (`ExporterQueue::give_back`). Returns 0 (kept for
    /// the callers that sum what consumers left).
    pub async fn consume(self: Arc<Self>, cancel: CancellationToken) -> usize {
        loop {
            let Some(batch) = self.next_batch(&cancel).await else {
                self.queue.metrics.queue_oldest_seconds.set(0.0);
                return 0;
            };
            let oldest = batch.iter().map(|b| b.enqueued).min().unwrap_or_else(std::time::SystemTime::now);
            self.queue.metrics.queue_oldest_seconds.set(oldest.elapsed().map_or(0.0, |d| d.as_secs_f64()));
            // One request, unless a single payload is larger than a request may be.
            let units: Vec<Vec<Arc<Payload>>> = match self.max_bytes {
                Some(limit) if batch.len() == 1 && batch[0].payload.encoded_len() > limit => {
                    batch[0].payload.split(limit).into_iter().map(|p| vec![Arc::new(p)]).collect()
                }
                _ => vec![batch.iter().map(|b| b.payload.clone()).collect()],
            };
            // Units in sending order; a refused unit of several spans is replaced by its halves,
            // so the spans the peer refuses end up alone and the rest is delivered.
            let mut pending: Vec<Vec<Arc<Payload>>> = units.into_iter().rev().collect();
            let mut pieces = 0;
            while let Some(unit) = pending.pop() {
                let spans: usize = unit.iter().map(|p| p.span_count()).sum();
                match self.deliver(unit.clone(), spans, &cancel).await {
                    Delivery::Done => {}
                    Delivery::Refused(error) if spans > 1 && pieces < MAX_BISECT_PIECES => {
                        pieces += 2;
                        let (first, second) = halves(unit);
                        tracing::debug!(%error, exporter = %self.id, spans, "peer refused a batch; sending its halves apart");
                        pending.push(second);
                        pending.push(first);
                    }
                    Delivery::Refused(error) => {
                        self.queue.metrics.failed.inc_by(spans as u64);
                        let ids = span_ids(&unit);
                        match &self.dead_letter {
                            Some(file) => match dead_letter(file, &self.id, &error, &unit).await {
                                Ok(()) => {
                                    tracing::error!(%error, exporter = %self.id, to = %self.destination, spans, span_ids = %ids, file = %file.display(), "peer refused these spans permanently; written to the dead-letter file (the rest of their batch was delivered)")
                                }
                                Err(io) => {
                                    tracing::error!(%error, exporter = %self.id, to = %self.destination, spans, span_ids = %ids, file = %file.display(), write_error = %io, "peer refused these spans permanently and the dead-letter file cannot be written; dropped")
                                }
                            },
                            None => {
                                tracing::error!(%error, exporter = %self.id, to = %self.destination, spans, span_ids = %ids, "peer refused these spans permanently; dropped (the rest of their batch was delivered)")
                            }
                        }
                    }
                    Delivery::Cancelled => {
                        // Stopped (shutdown deadline, or a reload retiring this exporter): the
                        // batch goes back to the queue, whose owner counts what is left (or
                        // moves it to the exporter's replacement). Parts already delivered are
                        // sent again: at least once.
                        self.queue.give_back(batch);
                        return 0;
                    }
                }
            }
            // Done with it: its record on disk goes, and dropping it returns its capacity.
            for b in batch {
                self.queue.done(b);
            }
            match self.queue.log() {
                Some(log) => {
                    self.queue.metrics.queue_bytes.set(log.live_bytes() as i64);
                }
                None if self.queue.bounded_by_bytes() => {
                    self.queue.metrics.queue_bytes.set(self.queue.bytes_held() as i64);
                }
                None => {}
            }
        }
    }

    /// Waits for a first batch, then gathers more until the batch is full or `max_wait` passed.
    async fn next_batch(&self, cancel: &CancellationToken) -> Option<Vec<QueuedBatch>> {
        let mut rx = tokio::select! {
            biased;
            _ = cancel.cancelled() => return None,
            rx = self.queue.lock_receiver() => rx,
        };
        let first = match self.queue.take_front() {
            Some(first) => first,
            None => tokio::select! {
                biased;
                _ = cancel.cancelled() => return None,
                // `None`: the queue is closed and empty.
                first = rx.recv() => first?,
            },
        };
        let mut spans = first.payload.span_count();
        let mut bytes = if self.max_bytes.is_some() { first.payload.encoded_len() } else { 0 };
        let mut batch = vec![first];
        let deadline = Instant::now() + self.batch.max_wait;
        while spans < self.batch.max_spans {
            tokio::select! {
                biased;
                // Shutdown: send what we have.
                _ = cancel.cancelled() => break,
                // The batch waited long enough.
                _ = tokio::time::sleep_until(deadline) => break,
                // One more request joins the batch, or the queue closed.
                next = rx.recv() => match next {
                    Some(next) => {
                        if let Some(limit) = self.max_bytes {
                            let size = next.payload.encoded_len();
                            if bytes + size > limit {
                                // Too big for this request: it starts the next one.
                                self.queue.put_back(next);
                                break;
                            }
                            bytes += size;
                        }
                        spans += next.payload.span_count();
                        batch.push(next);
                    }
                    None => break,
                },
            }
        }
        Some(batch)
    }

    async fn deliver(&self, payloads: Vec<Arc<Payload>>, spans: usize, cancel: &CancellationToken) -> Delivery {
        let metrics = &self.queue.metrics;
        let started = Instant::now();
        let mut backoff = self.retry.initial_interval;
        loop {
            let attempt = Instant::now();
            let payloads = payloads.clone();
            let result = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Delivery::Cancelled,
                r = tokio::time::timeout(self.timeout, self.exporter.export(payloads)) => r,
            };
            metrics.latency.observe(attempt.elapsed().as_secs_f64());
            // A refused batch (`Refused`) is an answer from a working peer: neither way.
            match &result {
                Ok(Ok(_)) => self.health.succeeded(),
                Ok(Err(ExportError::Refused { .. })) => {}
                Ok(Err(e)) => self.health.failed(e),
                Err(_) => self.health.failed(&format_args!("attempt timed out after {:?}", self.timeout)),
            }
            let error = match result {
                Ok(Ok(outcome)) => {
                    let rejected = (outcome.rejected_spans as usize).min(spans);
                    metrics.sent.inc_by((spans - rejected) as u64);
                    if rejected > 0 {
                        metrics.rejected_by_peer.inc_by(rejected as u64);
                        tracing::warn!(exporter = %self.id, rejected, message = %outcome.message, "peer rejected part of a batch");
                    }
                    return Delivery::Done;
                }
                Ok(Err(e)) => e,
                Err(_) => ExportError::retryable(format!("attempt timed out after {:?}", self.timeout)),
            };
            let retry_after = match &error {
                ExportError::Refused { .. } => return Delivery::Refused(error),
                ExportError::Permanent { .. } => {
                    metrics.failed.inc_by(spans as u64);
                    tracing::error!(%error, exporter = %self.id, to = %self.destination, spans, "export failed permanently; not retried");
                    return Delivery::Done;
                }
                ExportError::Retryable { retry_after, .. } => *retry_after,
            };
            if !self.retry.enabled {
                metrics.failed.inc_by(spans as u64);
                tracing::error!(%error, exporter = %self.id, to = %self.destination, spans, "export failed and retry is disabled; spans dropped");
                return Delivery::Done;
            }
            let delay = retry_after.unwrap_or_else(|| jitter(backoff, self.retry.randomization_factor));
            // A disk-backed queue keeps what it acknowledged until it is delivered: its retry
            // budget never runs out (`storage` holds the spans, bounded by the queue's size).
            let limit = if self.queue.log().is_some() { Duration::ZERO } else { self.retry.max_elapsed_time };
            if !limit.is_zero() && started.elapsed() + delay > limit {
                metrics.failed.inc_by(spans as u64);
                tracing::error!(%error, exporter = %self.id, to = %self.destination, spans, elapsed = ?started.elapsed(), "export still failing at retry_on_failure.max_elapsed_time; spans dropped");
                return Delivery::Done;
            }
            metrics.retries.inc();
            tracing::warn!(%error, exporter = %self.id, to = %self.destination, spans, retry_in = ?delay, "export failed; will retry");
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Delivery::Cancelled,
                _ = tokio::time::sleep(delay) => {}
            }
            backoff = backoff.mul_f64(self.retry.multiplier).min(self.retry.max_interval);
        }
    }
}

/// Appends refused spans to the dead-letter file: one line `{"time", "exporter", "error",
/// "resourceSpans"}` (the spans as OTLP JSON, so a fixed line can be sent again as a request).
async fn dead_letter(file: &std::path::Path, exporter: &str, error: &ExportError, unit: &[Arc<Payload>]) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let request = opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
        resource_spans: unit.iter().flat_map(|p| p.resource_spans().into_owned()).collect(),
    };
    let line = serde_json::json!({
        "time": crate::shared::format_rfc3339_nanos(crate::shared::now_unix_nanos()),
        "exporter": exporter,
        "error": error.to_string(),
        "resourceSpans": serde_json::to_value(&request)?.get("resourceSpans").cloned().unwrap_or_default(),
    });
    let mut text = serde_json::to_vec(&line)?;
    text.push(b'\n');
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        tokio::fs::create_dir_all(dir).await?;
    }
    let mut out = tokio::fs::OpenOptions::new().create(true).append(true).open(file).await?;
    out.write_all(&text).await?;
    out.sync_data().await
}

/// A unit cut in two: several payloads by number, one payload by its spans.
fn halves(mut unit: Vec<Arc<Payload>>) -> (Vec<Arc<Payload>>, Vec<Arc<Payload>>) {
    if unit.len() > 1 {
        let second = unit.split_off(unit.len() / 2);
        return (unit, second);
    }
    match unit.pop() {
        Some(payload) => {
            let (a, b) = payload.halves();
            (vec![Arc::new(a)], vec![Arc::new(b)])
        }
        None => (Vec::new(), Vec::new()),
    }
}

/// `trace_id/span_id` of a few spans of a unit, for the log of refused spans.
fn span_ids(unit: &[Arc<Payload>]) -> String {
    let mut ids = Vec::new();
    for payload in unit {
        for rs in payload.resource_spans().iter() {
            for span in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
                if ids.len() == 10 {
                    ids.push("...".to_string());
                    return ids.join(", ");
                }
                ids.push(format!("{}/{}", hex::encode(&span.trace_id), hex::encode(&span.span_id)));
            }
        }
    }
    ids.join(", ")
}

/// `interval` randomized by ±`factor`.
fn jitter(interval: Duration, factor: f64) -> Duration {
    let spread = (fastrand::f64() * 2.0 - 1.0) * factor;
    interval.mul_f64((1.0 + spread).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_the_factor() {
        for _ in 0..1000 {
            let d = jitter(Duration::from_secs(10), 0.5);
            assert!(d >= Duration::from_secs(5) && d <= Duration::from_secs(15), "{d:?}");
        }
        assert_eq!(jitter(Duration::from_secs(3), 0.0), Duration::from_secs(3));
    }
}
