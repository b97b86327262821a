//! `Pipeline` and `Fanout`: what a receiver hands its batches to. Capacity for the request is
//! reserved in every exporter queue of every pipeline first, all or nothing; only then do the
//! processors run and the results enter the queues. A refused request therefore changed nothing,
//! neither the queues nor the processors' state, and the client's retry duplicates nothing.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::{ExportTracePartialSuccess, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use tokio::time::Instant;

use super::payload::{count_spans, Payload};
use super::queue::{ExporterQueue, Reservation, ReserveError};
use crate::processors::Processor;
use crate::shared::WhenFull;

/// How long spans released by a processor (with no client waiting) wait for queue room.
pub const RELEASE_PATIENCE: Duration = Duration::from_secs(30);

/// One pipeline: its processors in order, then its exporters' queues.
pub struct Pipeline {
    pub name: String,
    pub processors: Vec<Processor>,
    pub exporters: Vec<Arc<ExporterQueue>>,
    /// Some exporter reads spans decoded; otherwise payloads are kept encoded only.
    pub keep_decoded: bool,
}

/// The pipelines fed by one receiver.
pub struct Fanout {
    pipelines: Vec<Arc<Pipeline>>,
}

/// What happened to an accepted request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Admission {
    pub accepted_spans: usize,
    /// Spans of the request that processors rejected (reported in `partial_success`).
    pub rejected_spans: usize,
    pub rejected_message: String,
}

impl Admission {
    /// The OTLP reply: `partial_success` only when processors rejected spans.
    pub fn reply(self) -> ExportTraceServiceResponse {
        let partial_success = (self.rejected_spans > 0)
            .then(|| ExportTracePartialSuccess { rejected_spans: self.rejected_spans as i64, error_message: self.rejected_message });
        ExportTraceServiceResponse { partial_success }
    }
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum AdmitError {
    #[error("the queue of exporter {exporter:?} is full")]
    QueueFull { exporter: String },
    #[error("the request holds {spans} spans, more than the queue of exporter {exporter:?} can ever hold")]
    TooLarge { exporter: String, spans: usize },
    #[error("the gateway is shutting down")]
    ShuttingDown,
}

impl Pipeline {
    /// Runs the processors from `start` on.
    fn process_from(&self, start: usize, mut batch: Vec<ResourceSpans>, now: Instant) -> Vec<ResourceSpans> {
        for p in &self.processors[start..] {
            if batch.is_empty() {
                break;
            }
            batch = p.process(batch, now);
        }
        batch
    }

    pub fn process(&self, batch: Vec<ResourceSpans>, now: Instant) -> Vec<ResourceSpans> {
        self.process_from(0, batch, now)
    }

    /// Spans that processors let go of on their own (their wait is over), run through the rest
    /// of the pipeline. With `all`, everything they hold (shutdown).
    pub fn released(&self, now: Instant, all: bool) -> Vec<ResourceSpans> {
        let mut out = Vec::new();
        for (i, p) in self.processors.iter().enumerate() {
            let let_go = if all { p.flush() } else { p.expire(now) };
            if !let_go.is_empty() {
                out.extend(self.process_from(i + 1, let_go, now));
            }
        }
        out
    }

    /// Puts released spans in every queue, waiting for room up to `patience`; what still finds
    /// no room is dropped and counted.
    fn payload(&self, batch: Vec<ResourceSpans>) -> Payload {
        if self.keep_decoded {
            Payload::new(batch)
        } else {
            Payload::encoded_only(batch)
        }
    }

    pub async fn admit_released(&self, batch: Vec<ResourceSpans>, patience: Duration) {
        let payload = Arc::new(self.payload(batch));
        let n = payload.span_count();
        if n == 0 {
            return;
        }
        for queue in &self.exporters {
            let reserved = match queue.when_full {
                WhenFull::Drop => queue.reserve(n),
                WhenFull::Refuse => queue.reserve_wait(n, patience).await,
            };
            match reserved.and_then(|r| r.commit(payload.clone())) {
                Ok(()) => {}
                Err(ReserveError::Closed) => {
                    queue.metrics.dropped_shutdown.inc_by(n as u64);
                }
                Err(error) => {
                    queue.metrics.dropped_full.inc_by(n as u64);
                    tracing::warn!(exporter = %queue.exporter, pipeline = %self.name, spans = n, ?error, "no queue room for released spans; dropped");
                }
            }
        }
    }
}

impl Fanout {
    pub fn new(pipelines: Vec<Arc<Pipeline>>) -> Fanout {
        Fanout { pipelines }
    }

    pub fn admit(&self, resource_spans: Vec<ResourceSpans>) -> Result<Admission, AdmitError> {
        let spans = count_spans(&resource_spans);
        if spans == 0 {
            return Ok(Admission::default());
        }
        // 1. Room for the whole request everywhere, or nothing. Dropping `reserved` on an early
        //    return gives back everything taken so far.
        let mut reserved: Vec<Vec<Option<Reservation>>> = Vec::with_capacity(self.pipelines.len());
        for pipeline in &self.pipelines {
            let mut per_queue = Vec::with_capacity(pipeline.exporters.len());
            for queue in &pipeline.exporters {
                match queue.reserve(spans) {
                    Ok(r) => per_queue.push(Some(r)),
                    Err(ReserveError::Full) if queue.when_full == WhenFull::Drop => {
                        queue.metrics.dropped_full.inc_by(spans as u64);
                        per_queue.push(None);
                    }
                    Err(ReserveError::Full) => return Err(AdmitError::QueueFull { exporter: queue.exporter.clone() }),
                    Err(ReserveError::TooLarge) => return Err(AdmitError::TooLarge { exporter: queue.exporter.clone(), spans }),
                    Err(ReserveError::Closed) => return Err(AdmitError::ShuttingDown),
                }
            }
            reserved.push(per_queue);
        }

        // 2. Each pipeline processes its own copy; the result enters its queues.
        let now = Instant::now();
        let last = self.pipelines.len() - 1;
        let mut input = Some(resource_spans);
        for (i, (pipeline, reservations)) in self.pipelines.iter().zip(reserved).enumerate() {
            let batch = if i == last { input.take().unwrap_or_default() } else { input.clone().unwrap_or_default() };
            let out = pipeline.process(batch, now);
            let produced = count_spans(&out);
            if produced == 0 {
                continue;
            }
            let payload = Arc::new(pipeline.payload(out));
            for (queue, reservation) in pipeline.exporters.iter().zip(reservations) {
                let Some(reservation) = reservation else {
                    continue;
                };
                // Processors may have held back spans, or released earlier ones with these.
                match reservation.resize(produced) {
                    Ok(r) => r.commit(payload.clone()).map_err(|_| AdmitError::ShuttingDown)?,
                    Err(_) => {
                        // Released spans found no room right now: they wait for it without
                        // holding up the client, whose own spans are already accepted.
                        let (queue, payload) = (queue.clone(), payload.clone());
                        tokio::spawn(async move {
                            match queue.reserve_wait(produced, RELEASE_PATIENCE).await.and_then(|r| r.commit(payload)) {
                                Ok(()) => {}
                                Err(_) => {
                                    queue.metrics.dropped_full.inc_by(produced as u64);
                                }
                            }
                        });
                    }
                }
            }
        }
        Ok(Admission { accepted_spans: spans, ..Default::default() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Metrics;
    use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Span};

    fn spans(n: usize) -> Vec<ResourceSpans> {
        vec![ResourceSpans {
            scope_spans: vec![ScopeSpans { spans: vec![Span::default(); n], ..Default::default() }],
            ..Default::default()
        }]
    }

    fn pipeline(exporters: Vec<Arc<ExporterQueue>>) -> Arc<Pipeline> {
        Arc::new(Pipeline { name: "p".into(), processors: vec![], exporters, keep_decoded: true })
    }

    #[tokio::test]
    async fn a_full_queue_refuses_and_leaves_the_others_untouched() {
        let metrics = Metrics::new();
        let a = ExporterQueue::new("a", 100, WhenFull::Refuse, metrics.exporter("a"));
        let b = ExporterQueue::new("b", 5, WhenFull::Refuse, metrics.exporter("b"));
        let fanout = Fanout::new(vec![pipeline(vec![a.clone(), b.clone()])]);
        assert_eq!(fanout.admit(spans(4)).unwrap().accepted_spans, 4);
        assert_eq!(fanout.admit(spans(4)), Err(AdmitError::QueueFull { exporter: "b".into() }));
        assert_eq!(a.len(), 4, "the refused batch went nowhere");
        assert_eq!(b.len(), 4);
    }

    #[tokio::test]
    async fn a_best_effort_queue_drops_without_refusing() {
        let metrics = Metrics::new();
        let a = ExporterQueue::new("a", 100, WhenFull::Refuse, metrics.exporter("a"));
        let b = ExporterQueue::new("b", 5, WhenFull::Drop, metrics.exporter("b"));
        let fanout = Fanout::new(vec![pipeline(vec![a.clone(), b.clone()])]);
        fanout.admit(spans(4)).unwrap();
        fanout.admit(spans(4)).unwrap();
        assert_eq!(a.len(), 8);
        assert_eq!(b.len(), 4);
        assert_eq!(b.metrics.dropped_full.get(), 4);
    }
}
