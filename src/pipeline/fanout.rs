//! `Fanout`: what a receiver hands its batches to. It runs each pipeline's processors and admits
//! the result to every exporter queue of every pipeline, all or nothing.

use std::sync::Arc;

use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

use super::payload::{count_spans, Payload};
use super::queue::{ExporterQueue, ReserveError};
use crate::exporters::WhenFull;

/// One pipeline as seen from a receiver.
pub struct Pipeline {
    pub name: String,
    pub exporters: Vec<Arc<ExporterQueue>>,
}

/// The pipelines fed by one receiver.
pub struct Fanout {
    pipelines: Vec<Pipeline>,
}

/// What happened to an accepted request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Admission {
    pub accepted_spans: usize,
    /// Spans of the request that processors rejected (reported in `partial_success`).
    pub rejected_spans: usize,
    pub rejected_message: String,
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

impl Fanout {
    pub fn new(pipelines: Vec<Pipeline>) -> Fanout {
        Fanout { pipelines }
    }

    pub fn admit(&self, resource_spans: Vec<ResourceSpans>) -> Result<Admission, AdmitError> {
        let spans = count_spans(&resource_spans);
        if spans == 0 {
            return Ok(Admission::default());
        }
        // One payload per pipeline: processors (when configured) may change each copy
        // differently. Without processors every pipeline shares the request as received.
        let payload = Arc::new(Payload::new(resource_spans));
        let mut reservations = Vec::new();
        for pipeline in &self.pipelines {
            for queue in &pipeline.exporters {
                match queue.reserve(payload.span_count()) {
                    Ok(r) => reservations.push(r),
                    Err(ReserveError::Full) if queue.when_full == WhenFull::Drop => {
                        queue.metrics.dropped_full.inc_by(payload.span_count() as u64);
                    }
                    // Dropping `reservations` on return gives back everything taken so far.
                    Err(ReserveError::Full) => return Err(AdmitError::QueueFull { exporter: queue.exporter.clone() }),
                    Err(ReserveError::TooLarge) => return Err(AdmitError::TooLarge { exporter: queue.exporter.clone(), spans }),
                    Err(ReserveError::Closed) => return Err(AdmitError::ShuttingDown),
                }
            }
        }
        for r in reservations {
            // A queue closes only after every receiver has stopped, so this cannot fail while a
            // request is being answered; if it ever did, the client still sees an error.
            r.commit(payload.clone()).map_err(|_| AdmitError::ShuttingDown)?;
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
        vec![ResourceSpans { scope_spans: vec![ScopeSpans { spans: vec![Span::default(); n], ..Default::default() }], ..Default::default() }]
    }

    #[test]
    fn a_full_queue_refuses_and_leaves_the_others_untouched() {
        let metrics = Metrics::new();
        let a = ExporterQueue::new("a", 100, WhenFull::Refuse, metrics.exporter("a"));
        let b = ExporterQueue::new("b", 5, WhenFull::Refuse, metrics.exporter("b"));
        let fanout = Fanout::new(vec![Pipeline { name: "p".into(), exporters: vec![a.clone(), b.clone()] }]);
        assert_eq!(fanout.admit(spans(4)).unwrap().accepted_spans, 4);
        assert_eq!(fanout.admit(spans(4)), Err(AdmitError::QueueFull { exporter: "b".into() }));
        assert_eq!(a.len(), 4, "the refused batch went nowhere");
        assert_eq!(b.len(), 4);
    }

    #[test]
    fn a_best_effort_queue_drops_without_refusing() {
        let metrics = Metrics::new();
        let a = ExporterQueue::new("a", 100, WhenFull::Refuse, metrics.exporter("a"));
        let b = ExporterQueue::new("b", 5, WhenFull::Drop, metrics.exporter("b"));
        let fanout = Fanout::new(vec![Pipeline { name: "p".into(), exporters: vec![a.clone(), b.clone()] }]);
        fanout.admit(spans(4)).unwrap();
        fanout.admit(spans(4)).unwrap();
        assert_eq!(a.len(), 8);
        assert_eq!(b.len(), 4);
        assert_eq!(b.metrics.dropped_full.get(), 4);
    }
}
