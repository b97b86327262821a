//! Processors: run synchronously on the request path, in pipeline order, each over the whole
//! request. `order_enrich` tags spans with their order; `order_sampling` keeps what matters;
//! `span_metrics` derives metrics from the spans that pass.

mod attrs;
mod order_enrich;
mod order_sampling;
pub mod span_metrics;

use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use tokio::time::Instant;

pub use order_enrich::{default_rules, CorrelationHoldConfig, HoldError, OrderEnrichConfig, OrderEnricher, RuleConfig};
pub use order_sampling::{OrderSampler, OrderSamplingConfig};
pub use span_metrics::{SpanMetrics, SpanMetricsConfig};

use crate::telemetry::Metrics;

/// One processor's configuration, by kind (the configuration reads each `processors.<id>` into
/// one of these through its registry, `config/registry.rs`; `Processor::build` makes it run).
#[derive(Debug, Clone)]
pub enum ProcessorConfig {
    OrderEnrich(OrderEnrichConfig),
    OrderSampling(OrderSamplingConfig),
    SpanMetrics(SpanMetricsConfig),
}

impl ProcessorConfig {
    pub fn validate(&self, path: &str, issues: &mut crate::shared::Issues) {
        match self {
            ProcessorConfig::OrderEnrich(c) => c.validate(path, issues),
            ProcessorConfig::OrderSampling(c) => c.validate(path, issues),
            ProcessorConfig::SpanMetrics(c) => c.validate(path, issues),
        }
    }
}

/// Why a processor cannot be built from its configuration.
#[derive(Debug, thiserror::Error)]
pub enum ProcessorBuildError {
    /// An order id pattern or a rule's pattern does not compile (validation checks them first).
    #[error("a pattern does not compile")]
    Pattern(#[from] regex::Error),
    #[error(transparent)]
    Hold(#[from] HoldError),
}

/// For `monitors/bench.rs`, which still reports its errors as text (its whole chain).
/// Every processor kind; an exhaustive match instead of a plugin registry.
pub enum Processor {
    OrderEnrich(OrderEnricher),
    OrderSampling(OrderSampler),
    SpanMetrics(SpanMetrics),
}

impl Processor {
    /// Builds one processor instance for one pipeline (each pipeline has its own state).
    pub fn build(config: &ProcessorConfig, pipeline: &str, metrics: &Metrics) -> Result<Processor, ProcessorBuildError> {
        Ok(match config {
            ProcessorConfig::OrderEnrich(c) => {
                Processor::OrderEnrich(OrderEnricher::new(c.clone(), metrics.enrich(pipeline))?.with_correlation_hold(pipeline)?)
            }
            ProcessorConfig::OrderSampling(c) => Processor::OrderSampling(OrderSampler::new(c, metrics.sampling(pipeline))),
            ProcessorConfig::SpanMetrics(c) => Processor::SpanMetrics(SpanMetrics::new(c, metrics)),
        })
    }

    pub fn process(&self, batch: Vec<ResourceSpans>, now: Instant) -> Vec<ResourceSpans> {
        match self {
            Processor::OrderEnrich(p) => p.process(batch, now),
            Processor::OrderSampling(p) => p.process(batch),
            Processor::SpanMetrics(p) => p.process(batch, now),
        }
    }

    /// Whether the processor may hold spans back and let them go with a later request.
    pub fn holds_spans(&self) -> bool {
        matches!(self, Processor::OrderEnrich(_))
    }

    /// Spans the processor held and now lets go of on its own (their wait is over).
    pub fn expire(&self, now: Instant) -> Vec<ResourceSpans> {
        self.expire_some(now, usize::MAX, None).0
    }

    /// [`Processor::expire`], about `max_spans` at most: `true` when more may be due at `now`.
    /// `next` is the processor the spans go to next: spans it would drop untouched are dropped
    /// here, before they are decoded (see `OrderSampler::drops_untagged`).
    pub fn expire_some(&self, now: Instant, max_spans: usize, next: Option<&Processor>) -> (Vec<ResourceSpans>, bool) {
        match self {
            // Only the sampler drops spans; the others keep everything.
            Processor::OrderEnrich(p) => match next {
                Some(Processor::OrderSampling(s)) => p.expire_some(now, max_spans, Some(&|t, error| s.drops_untagged(t, error))),
                _ => p.expire_some(now, max_spans, None),
            },
            Processor::OrderSampling(_) | Processor::SpanMetrics(_) => (Vec::new(), false),
        }
    }

    /// Settles what the processor let go of since the last call: `admitted`, all of it is in
    /// the queues and it need not keep it any longer; else it keeps it for a restart.
    pub fn confirm_released(&self, admitted: bool) {
        match self {
            Processor::OrderEnrich(p) => p.confirm_released(admitted),
            Processor::OrderSampling(_) | Processor::SpanMetrics(_) => {}
        }
    }

    /// Everything the processor holds in memory, and what it keeps on disk that is due to go
    /// (shutdown, reload); the caller confirms once everything is admitted
    /// ([`Processor::confirm_released`]).
    pub fn flush(&self) -> Vec<ResourceSpans> {
        match self {
            Processor::OrderEnrich(p) => p.flush(),
            Processor::OrderSampling(_) | Processor::SpanMetrics(_) => Vec::new(),
        }
    }

    /// Everything the processor holds in memory, nothing of what it keeps on disk (the memory
    /// limiter's hard limit, beside the release task).
    pub fn flush_memory(&self) -> Vec<ResourceSpans> {
        match self {
            Processor::OrderEnrich(p) => p.flush_memory(),
            Processor::OrderSampling(_) | Processor::SpanMetrics(_) => Vec::new(),
        }
    }
}
