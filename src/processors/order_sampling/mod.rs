//! The `order_sampling` processor: nothing needs keeping before an order exists. Spans that
//! belong to an order are always kept; of the rest, errors are kept and a fraction of traces,
//! chosen by trace id so that a trace is kept or dropped whole (and the same way on every
//! tracegate instance).

use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};
use serde::{Deserialize, Serialize};

use crate::processors::attrs;
use crate::shared::Issues;
use crate::telemetry::SamplingMetrics;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OrderSamplingConfig {
    /// Share of order-less traces kept, 0.0 to 1.0.
    pub fraction: f64,
    /// Keep order-less spans whose status is ERROR.
    pub keep_errors: bool,
}

impl Default for OrderSamplingConfig {
    fn default() -> Self {
        OrderSamplingConfig { fraction: 0.1, keep_errors: true }
    }
}

impl OrderSamplingConfig {
    pub fn validate(&self, path: &str, issues: &mut Issues) {
        if !(0.0..=1.0).contains(&self.fraction) || self.fraction.is_nan() {
            issues.push(format!("{path}.fraction"), "must be between 0.0 and 1.0");
        }
    }
}

pub struct OrderSampler {
    threshold: u64,
    keep_all: bool,
    keep_errors: bool,
    metrics: SamplingMetrics,
}

impl OrderSampler {
    pub fn new(config: &OrderSamplingConfig, metrics: SamplingMetrics) -> OrderSampler {
        OrderSampler {
            threshold: (config.fraction * u64::MAX as f64) as u64,
            keep_all: config.fraction >= 1.0,
            keep_errors: config.keep_errors,
            metrics,
        }
    }

    /// Whether a trace id falls in the kept fraction: its last 8 bytes (random in W3C ids)
    /// compared against the threshold.
    fn sampled(&self, trace_id: &[u8]) -> bool {
        if self.keep_all {
            return true;
        }
        let n = trace_id.len();
        let tail: [u8; 8] = if n >= 8 { trace_id[n - 8..].try_into().unwrap_or([0; 8]) } else { [0; 8] };
        u64::from_be_bytes(tail) < self.threshold
    }

    fn keep(&self, span: &Span) -> bool {
        if attrs::has(&span.attributes, "order.id") {
            self.metrics.kept_order.inc();
            true
        } else if self.keep_errors && span.status.as_ref().is_some_and(|s| s.code == StatusCode::Error as i32) {
            self.metrics.kept_error.inc();
            true
        } else if self.sampled(&span.trace_id) {
            self.metrics.kept_fraction.inc();
            true
        } else {
            self.metrics.dropped.inc();
            false
        }
    }

    /// Whether a span without `order.id` of trace `trace_id` (`error`: its status is an error)
    /// is dropped, decided before the span is even decoded; a drop is counted. A span this keeps
    /// still goes through [`OrderSampler::process`], which decides the same and counts the keep.
    pub fn drops_untagged(&self, trace_id: &[u8], error: bool) -> bool {
        let dropped = !(self.keep_errors && error) && !self.sampled(trace_id);
        if dropped {
            self.metrics.dropped.inc();
        }
        dropped
    }

    pub fn process(&self, mut batch: Vec<ResourceSpans>) -> Vec<ResourceSpans> {
        for rs in &mut batch {
            for ss in &mut rs.scope_spans {
                ss.spans.retain(|s| self.keep(s));
            }
            rs.scope_spans.retain(|ss| !ss.spans.is_empty());
        }
        batch.retain(|rs| !rs.scope_spans.is_empty());
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::ScopeSpans;

    fn batch(spans: Vec<Span>) -> Vec<ResourceSpans> {
        vec![ResourceSpans { scope_spans: vec![ScopeSpans { spans, ..Default::default() }], ..Default::default() }]
    }

    #[test]
    fn keeps_orders_errors_and_a_deterministic_fraction() {
        let sampler = OrderSampler::new(&OrderSamplingConfig { fraction: 0.25, keep_errors: true }, SamplingMetrics::default());
        let mut spans = Vec::new();
        for i in 0..4000u32 {
            let mut trace = vec![0u8; 16];
            trace[8..].copy_from_slice(&(u64::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_be_bytes());
            spans.push(Span { trace_id: trace.clone(), span_id: vec![1; 8], ..Default::default() });
            spans.push(Span { trace_id: trace, span_id: vec![2; 8], ..Default::default() });
        }
        let mut order = Span { trace_id: vec![0xff; 16], ..Default::default() };
        attrs::set(&mut order.attributes, "order.id", "A-1");
        let error = Span {
            trace_id: vec![0xff; 16],
            status: Some(opentelemetry_proto::tonic::trace::v1::Status { code: 2, ..Default::default() }),
            ..Default::default()
        };
        spans.push(order);
        spans.push(error);
        let kept = sampler.process(batch(spans));
        let kept: Vec<&Span> = kept.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans).collect();
        assert!(kept.iter().any(|s| attrs::has(&s.attributes, "order.id")));
        assert!(kept.iter().any(|s| s.status.is_some()));
        let sampled = kept.len() - 2;
        assert_eq!(sampled % 2, 0, "traces are kept whole");
        assert!((900..1100).contains(&(sampled / 2)), "about a quarter of 4000 traces: {}", sampled / 2);
        assert_eq!(sampler.metrics.dropped.get() as usize + sampled, 8000);
    }
}
