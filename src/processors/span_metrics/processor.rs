//! The processor and the process's derived-metrics state: each batch is recorded by `red`,
//! `orders` and `graph`; the state renders itself on `/metrics` (a `MetricSection`).

use std::any::Any;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};
use tokio::time::Instant;

use super::config::SpanMetricsConfig;
use super::graph::ServiceGraph;
use super::orders::{OrderMetrics, OrderSpan};
use super::red::Red;
use super::series::{format_float, header, Family};
use crate::shared::{attr_text, kv_text};
use crate::telemetry::{MetricSection, Metrics};

/// The key of the derived metrics in `Metrics::sections`.
pub const SECTION: &str = "span_metrics";

/// The derived metrics of a process.
pub struct SpanMetricsState {
    config: SpanMetricsConfig,
    red: Red,
    orders: Option<OrderMetrics>,
    graph: Option<ServiceGraph>,
}

/// The processor: a handle on the process's [`SpanMetricsState`].
pub struct SpanMetrics {
    state: Arc<SpanMetricsState>,
}

impl SpanMetrics {
    /// The processor over the process's state: the one already registered when its
    /// configuration is the same (another pipeline, a reload), else a new one.
    pub fn new(config: &SpanMetricsConfig, metrics: &Metrics) -> SpanMetrics {
        if let Some(existing) = metrics.sections.get(SECTION) {
            if let Ok(state) = existing.as_any().downcast::<SpanMetricsState>() {
                if state.config == *config {
                    return SpanMetrics { state };
                }
            }
        }
        let state = Arc::new(SpanMetricsState::new(config));
        metrics.sections.set(SECTION, state.clone());
        SpanMetrics { state }
    }

    pub fn state(&self) -> &Arc<SpanMetricsState> {
        &self.state
    }

    pub fn process(&self, batch: Vec<ResourceSpans>, now: Instant) -> Vec<ResourceSpans> {
        self.state.record(&batch, now);
        batch
    }
}

impl SpanMetricsState {
    pub fn new(config: &SpanMetricsConfig) -> SpanMetricsState {
        SpanMetricsState {
            config: config.clone(),
            red: Red::new(config),
            orders: config.orders.enabled.then(|| OrderMetrics::new(config)),
            graph: config.service_graph.enabled.then(|| ServiceGraph::new(config)),
        }
    }

    /// Records one batch.
    pub fn record(&self, batch: &[ResourceSpans], now: Instant) {
        let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
        let mut services: Vec<&str> = Vec::with_capacity(batch.len());
        for rs in batch {
            let service =
                rs.resource.as_ref().and_then(|r| attr_text(&r.attributes, "service.name")).unwrap_or(std::borrow::Cow::Borrowed(""));
            // A service name that is not a plain string is rare; it is read as "unknown_service"
            // rather than allocated for every batch.
            let service: &str = match service {
                std::borrow::Cow::Borrowed(s) if !s.is_empty() => s,
                _ => "unknown_service",
            };
            services.push(service);
            for span in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
                self.red.record(service, span, now_ms);
                if let Some(orders) = &self.orders {
                    record_order(orders, service, span, now, now_ms);
                }
            }
        }
        if let Some(graph) = &self.graph {
            let spans = batch
                .iter()
                .zip(&services)
                .flat_map(|(rs, service)| rs.scope_spans.iter().flat_map(|ss| &ss.spans).map(move |span| (*service, span)));
            graph.record(spans, now);
        }
    }

    /// Every family of the derived metrics (tests, the benchmark).
    fn families(&self) -> Vec<&Family> {
        let mut f = vec![&self.red.duration];
        if let Some(o) = &self.orders {
            f.extend([&o.transition, &o.steps, &o.bus_wait]);
        }
        if let Some(g) = &self.graph {
            f.extend([&g.requests, &g.failed, &g.server_seconds, &g.client_seconds]);
        }
        f
    }

    /// Series held, over every family (the overflow series not included).
    pub fn series(&self) -> usize {
        self.families().iter().map(|f| f.series()).sum()
    }

    /// The order metrics' evictions so far.
    pub fn evicted_orders(&self) -> u64 {
        self.orders.as_ref().map_or(0, |o| o.evicted.load(Ordering::Relaxed))
    }
}

/// One span's order facts, in one pass over its attributes.
fn record_order(orders: &OrderMetrics, service: &str, span: &Span, now: Instant, now_ms: u64) {
    let (mut order, mut status, mut stage, mut destination) = (None, None, None, None);
    for kv in &span.attributes {
        match kv.key.as_str() {
            "order.id" => order = kv_text(kv),
            "order.status" => status = kv_text(kv),
            "order.stage" => stage = kv_text(kv),
            "messaging.destination.name" => destination = kv_text(kv),
            _ => {}
        }
    }
    let Some(order) = order.filter(|o| !o.is_empty()) else { return };
    let fact = OrderSpan {
        order_id: &order,
        service,
        status: status.as_deref().filter(|s| !s.is_empty()),
        stage: stage.as_deref().filter(|s| !s.is_empty()),
        destination: destination.as_deref(),
        time_ns: span.start_time_unix_nano,
        trace_id: span.trace_id.as_slice().try_into().ok(),
    };
    orders.record(&fact, now, now_ms);
}

impl MetricSection for SpanMetricsState {
    fn encode(&self, out: &mut String, openmetrics: bool) {
        let now = Instant::now();
        self.red.encode(out, openmetrics);
        if let Some(o) = &self.orders {
            o.encode(out, openmetrics, now);
        }
        if let Some(g) = &self.graph {
            g.encode(out, openmetrics, now);
        }
        let name = "tracegate_span_metrics_overflow";
        let family = if openmetrics { name.to_string() } else { format!("{name}_total") };
        header(
            out,
            &family,
            "Observations that went to a metric's overflow series (its aggregation_cardinality_limit was reached)",
            "counter",
        );
        let calls = (self.red.calls.as_str(), self.red.duration.overflowed());
        let families = self.families().into_iter().map(|f| (f.name(), f.overflowed()));
        for (metric, overflowed) in std::iter::once(calls).chain(families) {
            out.push_str(&format!("{name}_total{{metric=\"{metric}\"}} {}\n", format_float(overflowed as f64)));
        }
    }

    fn as_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
