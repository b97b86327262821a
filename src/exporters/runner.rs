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
use crate::shared::{AttemptError, Backoff, BatchConfig, GaveUp, RetryConfig, RetryPolicy, Stopped, Verdict};
use crate::telemetry::ExporterHealth;

/// Everything a consumer needs.
pub struct ExporterRunner {
    pub id: String,
    pub exporter: Arc<Exporter>,
    pub queue: Arc<ExporterQueue>,
    pub batch: BatchConfig,
    pub retry: RetryConfig,
    /// Per attempt; zero: none (the exporter bounds each of its requests itself). An attempt
    /// never runs past `retry.max_elapsed_time` either.
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

    /// The retry layer for one batch: `retry_on_failure` with the exporter's attempt timeout
    /// (none when zero: the exporter bounds each of its requests itself). A disk-backed queue
    /// keeps what it acknowledged until it is delivered: its retry budget never runs out
    /// (`storage` holds the spans, bounded by the queue's size).
    fn policy(&self) -> RetryPolicy {
        let backoff = Backoff::from_config(&self.retry);
        RetryPolicy {
            backoff: if self.queue.log().is_some() { backoff.without_time_limit() } else { backoff },
            attempt_timeout: (!self.timeout.is_zero()).then_some(self.timeout),
        }
    }

    async fn deliver(&self, payloads: Vec<Arc<Payload>>, spans: usize, cancel: &CancellationToken) -> Delivery {
        let metrics = &self.queue.metrics;
        let exporter = &self.exporter;
        let result = self
            .policy()
            .run(
                cancel,
                || {
                    let payloads = payloads.clone();
                    async move {
                        let attempt = Instant::now();
                        let result = exporter.export(payloads).await;
                        metrics.latency.observe(attempt.elapsed().as_secs_f64());
                        result
                    }
                },
                // A refused batch (`Refused`) is an answer from a working peer: neither healthy
                // nor failed; it is not retried but bisected by the caller.
                |error| match error {
                    AttemptError::Failed(ExportError::Refused { .. }) => Verdict::Stop,
                    AttemptError::Failed(e @ ExportError::Permanent { .. }) => {
                        self.health.failed(e);
                        Verdict::Stop
                    }
                    AttemptError::Failed(e @ ExportError::Retryable { retry_after, .. }) => {
                        self.health.failed(e);
                        Verdict::Retry { retry_after: *retry_after }
                    }
                    AttemptError::TimedOut(after) => {
                        metrics.latency.observe(after.as_secs_f64());
                        self.health.failed(&format_args!("attempt timed out after {after:?}"));
                        Verdict::Retry { retry_after: None }
                    }
                },
                |error, delay| {
                    metrics.retries.inc();
                    tracing::warn!(%error, exporter = %self.id, to = %self.destination, spans, retry_in = ?delay, "export failed; will retry");
                },
            )
            .await;
        match result {
            Ok(outcome) => {
                self.health.succeeded();
                let rejected = (outcome.rejected_spans as usize).min(spans);
                metrics.sent.inc_by((spans - rejected) as u64);
                if rejected > 0 {
                    metrics.rejected_by_peer.inc_by(rejected as u64);
                    tracing::warn!(exporter = %self.id, rejected, message = %outcome.message, "peer rejected part of a batch");
                }
                Delivery::Done
            }
            Err(Stopped::Cancelled) => Delivery::Cancelled,
            Err(Stopped::Permanent(error @ ExportError::Refused { .. })) => Delivery::Refused(error),
            Err(Stopped::Permanent(error)) => {
                metrics.failed.inc_by(spans as u64);
                tracing::error!(%error, exporter = %self.id, to = %self.destination, spans, "export failed permanently; not retried");
                Delivery::Done
            }
            Err(Stopped::GaveUp { last: error, why: GaveUp::Disabled, .. }) => {
                metrics.failed.inc_by(spans as u64);
                tracing::error!(%error, exporter = %self.id, to = %self.destination, spans, "export failed and retry is disabled; spans dropped");
                Delivery::Done
            }
            Err(Stopped::GaveUp { last: error, why, attempts }) => {
                metrics.failed.inc_by(spans as u64);
                tracing::error!(%error, exporter = %self.id, to = %self.destination, spans, attempts, %why, "export still failing at retry_on_failure.max_elapsed_time; spans dropped");
                Delivery::Done
            }
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

#[cfg(test)]
mod tests {
    //! The runner's batching and retry, in paused time: no test waits for real.

    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    use super::*;
    use crate::exporters::scripted::{Answer, Scripted};
    use crate::shared::WhenFull;
    use crate::telemetry::{Metrics, Readiness, ReadinessConfig};

    fn payload(spans: usize) -> Arc<Payload> {
        let spans = (0..spans)
            .map(|i| Span { trace_id: vec![1; 16], span_id: (i as u64 + 1).to_be_bytes().to_vec(), name: "s".into(), ..Default::default() })
            .collect();
        Arc::new(Payload::new(vec![ResourceSpans { scope_spans: vec![ScopeSpans { spans, ..Default::default() }], ..Default::default() }]))
    }

    fn retry() -> RetryConfig {
        RetryConfig {
            enabled: true,
            initial_interval: Duration::from_secs(1),
            max_interval: Duration::from_secs(5),
            max_elapsed_time: Duration::from_secs(60),
            multiplier: 2.0,
            randomization_factor: 0.0,
        }
    }

    struct Harness {
        runner: Arc<ExporterRunner>,
        script: Arc<Scripted>,
        cancel: CancellationToken,
        consumer: tokio::task::JoinHandle<usize>,
    }

    fn start(answers: Vec<Answer>, batch: BatchConfig, retry: RetryConfig, timeout: Duration) -> Harness {
        let script = Arc::new(Scripted::new(answers));
        let metrics = Metrics::new();
        let queue = ExporterQueue::new("t", 10_000, WhenFull::Refuse, metrics.exporter("t"));
        let readiness = Readiness::new(&ReadinessConfig::default());
        let runner = Arc::new(ExporterRunner {
            id: "t".into(),
            exporter: Arc::new(Exporter::Scripted(script.clone())),
            queue,
            batch,
            retry,
            timeout,
            max_bytes: None,
            destination: "the script".into(),
            dead_letter: None,
            health: readiness.exporter("t", true),
        });
        let cancel = CancellationToken::new();
        let consumer = tokio::spawn(runner.clone().consume(cancel.clone()));
        Harness { runner, script, cancel, consumer }
    }

    impl Harness {
        fn send(&self, spans: usize) {
            self.runner.queue.reserve(spans).unwrap().commit(payload(spans)).unwrap();
        }

        async fn stop(self) -> (Vec<(f64, usize)>, crate::telemetry::ExporterMetrics) {
            self.runner.queue.close();
            let _ =
                tokio::time::timeout(Duration::from_secs(3600), self.consumer).await.expect("the consumer ends once the queue is closed");
            self.cancel.cancel();
            (self.script.calls(), self.runner.queue.metrics.clone())
        }
    }

    fn batch(max_spans: usize, max_wait: Duration) -> BatchConfig {
        BatchConfig { max_spans, max_wait, max_bytes: None }
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_batch_goes_at_once_and_the_rest_after_max_wait() {
        let h = start(vec![], batch(25, Duration::from_secs(2)), retry(), Duration::from_secs(5));
        for _ in 0..3 {
            h.send(10);
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
        h.send(5);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(h.script.calls().len(), 1, "the second batch waits for max_wait");
        h.send(5);
        tokio::time::sleep(Duration::from_secs(10)).await;
        let (calls, metrics) = h.stop().await;
        // 30 spans at once (full at 25); then 5 + 5 once 2 s passed since the first of them.
        assert_eq!(calls, vec![(0.0, 30), (12.0, 10)]);
        assert_eq!(metrics.sent.get(), 40);
        assert_eq!(metrics.retries.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_retried_with_backoff_and_the_peers_hint() {
        let answers = vec![
            Answer::Fail(ExportError::retryable("unavailable")),
            Answer::Fail(ExportError::retryable("unavailable")),
            Answer::Fail(ExportError::Retryable { message: "throttled".into(), retry_after: Some(Duration::from_secs(7)) }),
            Answer::Hang,
        ];
        let h = start(answers, batch(10, Duration::from_millis(100)), retry(), Duration::from_secs(3));
        h.send(10);
        tokio::time::sleep(Duration::from_secs(60)).await;
        let (calls, metrics) = h.stop().await;
        // Backoff 1 s, 2 s; the hint 7 s (the interval still grows, to 5 s: capped); a hang
        // ended by the 3 s timeout at 13 s; then the backoff's 5 s.
        let times: Vec<f64> = calls.iter().map(|c| c.0).collect();
        assert_eq!(times, vec![0.0, 1.0, 3.0, 10.0, 18.0]);
        assert!(calls.iter().all(|c| c.1 == 10));
        assert_eq!(metrics.retries.get(), 4);
        assert_eq!(metrics.sent.get(), 10);
        assert_eq!(metrics.failed.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_at_max_elapsed_time() {
        let answers = (0..100).map(|_| Answer::Fail(ExportError::retryable("down"))).collect();
        let h = start(
            answers,
            batch(10, Duration::from_millis(100)),
            RetryConfig { max_elapsed_time: Duration::from_secs(20), ..retry() },
            Duration::from_secs(3),
        );
        h.send(10);
        tokio::time::sleep(Duration::from_secs(120)).await;
        let (calls, metrics) = h.stop().await;
        let times: Vec<f64> = calls.iter().map(|c| c.0).collect();
        // 0, 1, 3, 7, 12, 17; the next (22) would be past 20 s.
        assert_eq!(times, vec![0.0, 1.0, 3.0, 7.0, 12.0, 17.0]);
        assert_eq!(metrics.failed.get(), 10);
        assert_eq!(metrics.sent.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_are_not_retried() {
        let h = start(
            vec![Answer::Fail(ExportError::permanent("unauthorized"))],
            batch(10, Duration::from_millis(100)),
            retry(),
            Duration::from_secs(3),
        );
        h.send(10);
        tokio::time::sleep(Duration::from_secs(60)).await;
        h.send(4);
        tokio::time::sleep(Duration::from_secs(60)).await;
        let (calls, metrics) = h.stop().await;
        assert_eq!(calls.len(), 2, "{calls:?}");
        assert_eq!((calls[0], calls[1].1), ((0.0, 10), 4));
        assert!((calls[1].0 - 60.1).abs() < 1e-6, "the second batch after its max_wait: {calls:?}");
        assert_eq!(metrics.failed.get(), 10);
        assert_eq!(metrics.sent.get(), 4);
        assert_eq!(metrics.retries.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_batch_is_bisected_not_retried() {
        let refused = || Answer::Fail(ExportError::Refused { message: "invalid".into() });
        // The whole batch and its first half are refused; the second half and the quarters go.
        let h = start(vec![refused(), refused()], batch(8, Duration::from_millis(100)), retry(), Duration::from_secs(3));
        h.send(8);
        tokio::time::sleep(Duration::from_secs(10)).await;
        let (calls, metrics) = h.stop().await;
        let sizes: Vec<usize> = calls.iter().map(|c| c.1).collect();
        assert_eq!(sizes, vec![8, 4, 2, 2, 4]);
        assert!(calls.iter().all(|c| c.0 == 0.0), "no backoff for refusals: {calls:?}");
        assert_eq!(metrics.sent.get(), 8);
        assert_eq!(metrics.retries.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_disabled_tries_once() {
        let h = start(
            vec![Answer::Fail(ExportError::retryable("down"))],
            batch(10, Duration::from_millis(100)),
            RetryConfig { enabled: false, ..retry() },
            Duration::from_secs(3),
        );
        h.send(10);
        tokio::time::sleep(Duration::from_secs(60)).await;
        let (calls, metrics) = h.stop().await;
        assert_eq!(calls.len(), 1);
        assert_eq!(metrics.failed.get(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_during_backoff_gives_the_batch_back() {
        let answers = (0..100).map(|_| Answer::Fail(ExportError::retryable("down"))).collect();
        let h = start(answers, batch(10, Duration::from_millis(100)), retry(), Duration::from_secs(3));
        h.send(10);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        h.cancel.cancel();
        let _ = h.consumer.await;
        assert_eq!(h.script.calls().len(), 2);
        let left: usize = h.runner.queue.drain_now().iter().map(|b| b.payload.span_count()).sum();
        assert_eq!(left, 10, "the batch is back in the queue");
        assert_eq!(h.runner.queue.metrics.failed.get(), 0);
    }
}
