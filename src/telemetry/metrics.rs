//! The gateway's own metrics, served as Prometheus text on `GET /metrics`.
//!
//! Components take handles (`ReceiverMetrics`, `ExporterMetrics`) once at start-up, so the data
//! path only increments atomics.

use std::sync::{Arc, Mutex};

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReceiverLabels {
    receiver: String,
    transport: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    receiver: String,
    transport: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SpanLimitedLabels {
    receiver: String,
    transport: String,
    what: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MemoryLimitLabels {
    limit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExporterLabels {
    exporter: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DroppedLabels {
    exporter: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PipelineLabels {
    pipeline: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaggedLabels {
    pipeline: String,
    how: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HoldLabels {
    pipeline: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    pipeline: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    pipeline: String,
    cache: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SamplingLabels {
    pipeline: String,
    decision: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NotifierLabels {
    notifier: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MonitorRuleLabels {
    monitor: String,
    rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlertLabels {
    monitor: String,
    rule: String,
    severity: String,
}

type HistogramCtor = fn() -> Histogram;

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Every metric family of the process.
pub struct Metrics {
    registry: Mutex<Registry>,
    accepted: Family<ReceiverLabels, Counter>,
    ack_latency: Family<ReceiverLabels, Histogram, HistogramCtor>,
    refused: Family<RefusedLabels, Counter>,
    refused_requests: Family<RefusedLabels, Counter>,
    span_limited: Family<SpanLimitedLabels, Counter>,
    memory_rss: Gauge,
    memory_limit: Family<MemoryLimitLabels, Gauge>,
    memory_refusing: Gauge,
    memory_hard_limit_reached: Counter,
    sent: Family<ExporterLabels, Counter>,
    failed: Family<ExporterLabels, Counter>,
    dropped: Family<DroppedLabels, Counter>,
    rejected_by_peer: Family<ExporterLabels, Counter>,
    retries: Family<ExporterLabels, Counter>,
    queue_size: Family<ExporterLabels, Gauge>,
    queue_capacity: Family<ExporterLabels, Gauge>,
    queue_bytes: Family<ExporterLabels, Gauge>,
    queue_oldest: Family<ExporterLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    storage_errors: Family<ExporterLabels, Counter>,
    config_reloads: Family<OutcomeLabels, Counter>,
    storage_recovered: Family<ExporterLabels, Counter>,
    storage_torn: Family<ExporterLabels, Counter>,
    latency: Family<ExporterLabels, Histogram, HistogramCtor>,
    tagged: Family<TaggedLabels, Counter>,
    untagged: Family<ReasonLabels, Counter>,
    buffer_spans: Family<PipelineLabels, Gauge>,
    buffer_traces: Family<PipelineLabels, Gauge>,
    hold: Family<HoldLabels, Counter>,
    hold_spans: Family<PipelineLabels, Gauge>,
    hold_bytes: Family<PipelineLabels, Gauge>,
    cache_entries: Family<CacheLabels, Gauge>,
    cache_evictions: Family<CacheLabels, Counter>,
    sampling: Family<SamplingLabels, Counter>,
    es_indexed: Family<ExporterLabels, Counter>,
    es_retried: Family<ExporterLabels, Counter>,
    es_dead_lettered: Family<ExporterLabels, Counter>,
    es_orders_updated: Family<ExporterLabels, Counter>,
    es_bytes_sent: Family<ExporterLabels, Counter>,
    es_bulk_latency: Family<ExporterLabels, Histogram, HistogramCtor>,
    order_alerts: Family<AlertLabels, Counter>,
    order_alerts_firing: Family<MonitorRuleLabels, Gauge>,
    monitor_pending: Family<MonitorRuleLabels, Gauge>,
    monitor_dropped_facts: Counter,
    /// Every exporter id handed metrics, for the shutdown report's totals.
    exporter_ids: Mutex<std::collections::BTreeSet<String>>,
    notifications: Family<NotifierLabels, Counter>,
    /// Families components render themselves (the `span_metrics` processor).
    pub sections: super::sections::Sections,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::default();
        let m = Metrics {
            registry: Mutex::new(Registry::default()),
            accepted: Family::default(),
            ack_latency: Family::new_with_constructor(latency_histogram as HistogramCtor),
            refused: Family::default(),
            refused_requests: Family::default(),
            span_limited: Family::default(),
            memory_rss: Gauge::default(),
            memory_limit: Family::default(),
            memory_refusing: Gauge::default(),
            memory_hard_limit_reached: Counter::default(),
            sent: Family::default(),
            failed: Family::default(),
            dropped: Family::default(),
            rejected_by_peer: Family::default(),
            retries: Family::default(),
            queue_size: Family::default(),
            queue_capacity: Family::default(),
            queue_bytes: Family::default(),
            queue_oldest: Family::default(),
            storage_errors: Family::default(),
            config_reloads: Family::default(),
            storage_recovered: Family::default(),
            storage_torn: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as HistogramCtor),
            tagged: Family::default(),
            untagged: Family::default(),
            buffer_spans: Family::default(),
            buffer_traces: Family::default(),
            hold: Family::default(),
            hold_spans: Family::default(),
            hold_bytes: Family::default(),
            cache_entries: Family::default(),
            cache_evictions: Family::default(),
            sampling: Family::default(),
            es_indexed: Family::default(),
            es_retried: Family::default(),
            es_dead_lettered: Family::default(),
            es_orders_updated: Family::default(),
            es_bytes_sent: Family::default(),
            es_bulk_latency: Family::new_with_constructor(latency_histogram as HistogramCtor),
            order_alerts: Family::default(),
            order_alerts_firing: Family::default(),
            monitor_pending: Family::default(),
            monitor_dropped_facts: Counter::default(),
            exporter_ids: Mutex::default(),
            notifications: Family::default(),
            sections: Default::default(),
        };
        registry.register("tracegate_receiver_accepted_spans", "Spans accepted by a receiver and queued for export", m.accepted.clone());
        registry.register(
            "tracegate_receiver_ack_latency_seconds",
            "Time from a request reaching the receiver's handler to its acknowledgement (accepted requests)",
            m.ack_latency.clone(),
        );
        registry.register(
            "tracegate_receiver_refused_spans",
            "Spans refused by a receiver, by reason (0 when the body could not be read)",
            m.refused.clone(),
        );
        registry.register("tracegate_receiver_refused_requests", "Requests refused by a receiver, by reason", m.refused_requests.clone());
        registry.register(
            "tracegate_receiver_span_limited",
            "Attributes, events and links dropped and attribute values cut by a receiver's span_limits, by what",
            m.span_limited.clone(),
        );
        registry.register("tracegate_memory_rss_bytes", "Resident set size at the memory limiter's last sample", m.memory_rss.clone());
        registry.register(
            "tracegate_memory_limit_bytes",
            "The memory limiter's soft (ingest refused past it) and hard limits",
            m.memory_limit.clone(),
        );
        registry.register("tracegate_memory_limiter_refusing", "1 while ingest is refused for memory", m.memory_refusing.clone());
        registry.register(
            "tracegate_memory_limiter_hard_limit_reached",
            "Checks that found the RSS past the hard limit (held spans released)",
            m.memory_hard_limit_reached.clone(),
        );
        registry.register("tracegate_exporter_sent_spans", "Spans an exporter delivered", m.sent.clone());
        registry.register(
            "tracegate_exporter_send_failed_spans",
            "Spans an exporter gave up on (permanent error or retries exhausted)",
            m.failed.clone(),
        );
        registry.register(
            "tracegate_exporter_dropped_spans",
            "Spans an exporter never tried to send (best-effort queue full, shutdown deadline)",
            m.dropped.clone(),
        );
        registry.register(
            "tracegate_exporter_rejected_by_peer_spans",
            "Spans the peer reported rejected in a partial_success reply",
            m.rejected_by_peer.clone(),
        );
        registry.register("tracegate_exporter_retries", "Export attempts that failed and were retried", m.retries.clone());
        registry.register(
            "tracegate_exporter_queue_size",
            "Spans in an exporter's queue, including those being sent",
            m.queue_size.clone(),
        );
        registry.register("tracegate_exporter_queue_capacity", "Capacity of an exporter's queue in spans", m.queue_capacity.clone());
        registry.register(
            "tracegate_exporter_queue_bytes",
            "Bytes an exporter holds: not yet delivered from its disk queue (sending_queue.storage), or held against sending_queue.max_bytes",
            m.queue_bytes.clone(),
        );
        registry.register(
            "tracegate_exporter_queue_oldest_seconds",
            "Age of the oldest batch an exporter is sending or retrying (0 when idle)",
            m.queue_oldest.clone(),
        );
        registry.register(
            "tracegate_config_reloads",
            "Configuration reloads (SIGHUP or POST /api/v1/admin/reload), by outcome: applied or refused",
            m.config_reloads.clone(),
        );
        registry.register(
            "tracegate_exporter_queue_storage_errors",
            "Writes to an exporter's disk queue that failed; their requests were refused",
            m.storage_errors.clone(),
        );
        registry.register(
            "tracegate_exporter_queue_recovered_batches",
            "Batches found on disk at start and sent again",
            m.storage_recovered.clone(),
        );
        registry.register(
            "tracegate_exporter_queue_torn_records",
            "Torn or corrupt record tails cut off a disk queue at start (a crash mid-write)",
            m.storage_torn.clone(),
        );
        registry.register("tracegate_exporter_send_latency_seconds", "Duration of one export attempt", m.latency.clone());
        registry.register(
            "tracegate_order_enrich_tagged_spans",
            "Spans given an order id, by how the order was found (own, trace, link, correlation)",
            m.tagged.clone(),
        );
        registry.register(
            "tracegate_order_enrich_untagged_spans",
            "Spans sent on without an order id, by reason (timeout, buffer_full, no_wait, ambiguous)",
            m.untagged.clone(),
        );
        registry.register("tracegate_order_enrich_buffer_spans", "Spans waiting for their trace's order", m.buffer_spans.clone());
        registry.register("tracegate_order_enrich_buffer_traces", "Traces waiting for their order", m.buffer_traces.clone());
        registry.register(
            "tracegate_order_enrich_hold_spans",
            "Spans with a correlation value and no order, by what the correlation hold did (held, released, expired, full)",
            m.hold.clone(),
        );
        registry.register(
            "tracegate_order_enrich_hold_held_spans",
            "Spans in the correlation hold, waiting for an order to claim their value",
            m.hold_spans.clone(),
        );
        registry.register("tracegate_order_enrich_hold_bytes", "Bytes the correlation hold's spans take on disk", m.hold_bytes.clone());
        registry.register(
            "tracegate_order_enrich_cache_entries",
            "Entries in the trace -> order and correlation -> order caches",
            m.cache_entries.clone(),
        );
        registry.register(
            "tracegate_order_enrich_cache_evictions",
            "Cache entries evicted before their time because the cache was full",
            m.cache_evictions.clone(),
        );
        registry.register("tracegate_order_sampling_spans", "Spans kept or dropped by order sampling, by reason", m.sampling.clone());
        registry.register(
            "tracegate_elasticsearch_documents_indexed",
            "Span documents Elasticsearch created (or already had: 409)",
            m.es_indexed.clone(),
        );
        registry.register("tracegate_elasticsearch_documents_retried", "Bulk items sent again after a 429 or 5xx", m.es_retried.clone());
        registry.register(
            "tracegate_elasticsearch_documents_dead_lettered",
            "Documents Elasticsearch refused for good, written to the dead-letter file",
            m.es_dead_lettered.clone(),
        );
        registry.register(
            "tracegate_elasticsearch_orders_updated",
            "Order documents written to the orders index",
            m.es_orders_updated.clone(),
        );
        registry.register(
            "tracegate_elasticsearch_bulk_bytes_sent",
            "Bytes of bulk request bodies sent (after compression)",
            m.es_bytes_sent.clone(),
        );
        registry.register("tracegate_elasticsearch_bulk_latency_seconds", "Duration of one bulk request", m.es_bulk_latency.clone());
        registry.register(
            "tracegate_notifications",
            "Order-alert notices by notifier and outcome (sent, retry, failed, dead_lettered)",
            m.notifications.clone(),
        );
        registry.register("tracegate_order_alerts", "Order alerts fired, by monitor, rule and severity", m.order_alerts.clone());
        registry.register("tracegate_order_alerts_firing", "Order alerts firing now", m.order_alerts_firing.clone());
        registry.register("tracegate_order_monitor_pending", "Order monitor clocks waiting for their deadline", m.monitor_pending.clone());
        registry.register(
            "tracegate_order_monitor_dropped_facts",
            "Order facts the monitors never saw because their queue was full",
            m.monitor_dropped_facts.clone(),
        );
        *m.registry.lock().unwrap_or_else(|e| e.into_inner()) = registry;
        Arc::new(m)
    }

    pub fn receiver(&self, receiver: &str, transport: &str) -> ReceiverMetrics {
        let labels = ReceiverLabels { receiver: receiver.into(), transport: transport.into() };
        ReceiverMetrics {
            accepted: self.accepted.get_or_create(&labels).clone(),
            ack_latency: self.ack_latency.get_or_create(&labels).clone(),
            refused: self.refused.clone(),
            refused_requests: self.refused_requests.clone(),
            span_limited: self.span_limited.clone(),
            receiver: receiver.into(),
            transport: transport.into(),
            refusal_log: Arc::new(std::sync::Mutex::new(RefusalLog::default())),
        }
    }

    /// The `elasticsearch` exporter's own counters, under its `exporter` label (one family per
    /// metric however many such exporters there are).
    pub fn elasticsearch(&self, exporter: &str) -> ElasticsearchMetrics {
        // One statement per family (see `exporter`).
        let labels = ExporterLabels { exporter: exporter.into() };
        let indexed = self.es_indexed.get_or_create(&labels).clone();
        let retried = self.es_retried.get_or_create(&labels).clone();
        let dead_lettered = self.es_dead_lettered.get_or_create(&labels).clone();
        let orders_updated = self.es_orders_updated.get_or_create(&labels).clone();
        let bytes_sent = self.es_bytes_sent.get_or_create(&labels).clone();
        let bulk_latency = self.es_bulk_latency.get_or_create(&labels).clone();
        ElasticsearchMetrics { indexed, retried, dead_lettered, orders_updated, bytes_sent, bulk_latency }
    }

    /// Counts one configuration reload: `applied` or `refused`.
    pub fn config_reload(&self, outcome: &str) {
        self.config_reloads.get_or_create(&OutcomeLabels { outcome: outcome.into() }).inc();
    }

    pub fn exporter(&self, exporter: &str) -> ExporterMetrics {
        // One statement per family: `get_or_create` holds a read lock until its statement ends,
        // and a second call on the same family in one expression would wait for it for ever.
        self.exporter_ids.lock().unwrap_or_else(|e| e.into_inner()).insert(exporter.to_string());
        let labels = ExporterLabels { exporter: exporter.into() };
        let dropped =
            |reason: &str| self.dropped.get_or_create(&DroppedLabels { exporter: exporter.into(), reason: reason.into() }).clone();
        let dropped_full = dropped("queue_full");
        let dropped_shutdown = dropped("shutdown");
        let sent = self.sent.get_or_create(&labels).clone();
        let failed = self.failed.get_or_create(&labels).clone();
        let rejected_by_peer = self.rejected_by_peer.get_or_create(&labels).clone();
        let retries = self.retries.get_or_create(&labels).clone();
        let queue_size = self.queue_size.get_or_create(&labels).clone();
        let queue_capacity = self.queue_capacity.get_or_create(&labels).clone();
        let latency = self.latency.get_or_create(&labels).clone();
        let queue_bytes = self.queue_bytes.get_or_create(&labels).clone();
        let queue_oldest_seconds = self.queue_oldest.get_or_create(&labels).clone();
        let storage_errors = self.storage_errors.get_or_create(&labels).clone();
        let storage_recovered = self.storage_recovered.get_or_create(&labels).clone();
        let storage_torn = self.storage_torn.get_or_create(&labels).clone();
        ExporterMetrics {
            sent,
            failed,
            rejected_by_peer,
            retries,
            queue_size,
            queue_capacity,
            queue_bytes,
            queue_oldest_seconds,
            storage_errors,
            storage_recovered,
            storage_torn,
            latency,
            dropped_full,
            dropped_shutdown,
        }
    }

    /// Spans exporters did not deliver, summed over every exporter this process ran (those a
    /// reload replaced or removed too): what the shutdown report states.
    pub fn exporter_losses(&self) -> ExporterLosses {
        let ids: Vec<String> = self.exporter_ids.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect();
        let mut losses = ExporterLosses::default();
        for id in ids {
            let m = self.exporter(&id);
            losses.dropped_full += m.dropped_full.get();
            losses.dropped_shutdown += m.dropped_shutdown.get();
            losses.failed += m.failed.get();
            losses.rejected_by_peer += m.rejected_by_peer.get();
        }
        losses
    }

    pub fn enrich(&self, pipeline: &str) -> EnrichMetrics {
        let p = || pipeline.to_string();
        let tagged = |how: &str| self.tagged.get_or_create(&TaggedLabels { pipeline: p(), how: how.into() }).clone();
        let untagged = |reason: &str| self.untagged.get_or_create(&ReasonLabels { pipeline: p(), reason: reason.into() }).clone();
        let entries = |cache: &str| self.cache_entries.get_or_create(&CacheLabels { pipeline: p(), cache: cache.into() }).clone();
        let evictions = |cache: &str| self.cache_evictions.get_or_create(&CacheLabels { pipeline: p(), cache: cache.into() }).clone();
        let tagged_own = tagged("own");
        let tagged_trace = tagged("trace");
        let tagged_link = tagged("link");
        let tagged_correlation = tagged("correlation");
        let untagged_timeout = untagged("timeout");
        let untagged_buffer_full = untagged("buffer_full");
        let untagged_no_wait = untagged("no_wait");
        let untagged_ambiguous = untagged("ambiguous");
        let trace_cache_entries = entries("trace");
        let correlation_cache_entries = entries("correlation");
        let trace_cache_evictions = evictions("trace");
        let correlation_cache_evictions = evictions("correlation");
        let buffer_spans = self.buffer_spans.get_or_create(&PipelineLabels { pipeline: p() }).clone();
        let buffer_traces = self.buffer_traces.get_or_create(&PipelineLabels { pipeline: p() }).clone();
        let hold = |outcome: &str| self.hold.get_or_create(&HoldLabels { pipeline: p(), outcome: outcome.into() }).clone();
        let (hold_held, hold_released, hold_expired, hold_full) = (hold("held"), hold("released"), hold("expired"), hold("full"));
        let hold_spans = self.hold_spans.get_or_create(&PipelineLabels { pipeline: p() }).clone();
        let hold_bytes = self.hold_bytes.get_or_create(&PipelineLabels { pipeline: p() }).clone();
        EnrichMetrics {
            tagged_own,
            tagged_trace,
            tagged_link,
            tagged_correlation,
            untagged_timeout,
            untagged_buffer_full,
            untagged_no_wait,
            untagged_ambiguous,
            buffer_spans,
            buffer_traces,
            hold_held,
            hold_released,
            hold_expired,
            hold_full,
            hold_spans,
            hold_bytes,
            trace_cache_entries,
            correlation_cache_entries,
            trace_cache_evictions,
            correlation_cache_evictions,
        }
    }

    pub fn sampling(&self, pipeline: &str) -> SamplingMetrics {
        let c = |decision: &str, reason: &str| {
            self.sampling
                .get_or_create(&SamplingLabels { pipeline: pipeline.into(), decision: decision.into(), reason: reason.into() })
                .clone()
        };
        let kept_order = c("kept", "order");
        let kept_error = c("kept", "error");
        let kept_fraction = c("kept", "fraction");
        let dropped = c("dropped", "not_sampled");
        SamplingMetrics { kept_order, kept_error, kept_fraction, dropped }
    }

    /// A notifier's counters of `tracegate_notifications_total{notifier,outcome}`.
    pub fn notifier(&self, notifier: &str) -> NotifierMetrics {
        let c = |outcome: &str| {
            self.notifications.get_or_create(&NotifierLabels { notifier: notifier.into(), outcome: outcome.into() }).clone()
        };
        let sent = c("sent");
        let retry = c("retry");
        let failed = c("failed");
        let dead_lettered = c("dead_lettered");
        NotifierMetrics { sent, retry, failed, dead_lettered }
    }

    /// The memory limiter's gauges and counter.
    pub fn memory(&self) -> MemoryMetrics {
        let soft_limit = self.memory_limit.get_or_create(&MemoryLimitLabels { limit: "soft".into() }).clone();
        let hard_limit = self.memory_limit.get_or_create(&MemoryLimitLabels { limit: "hard".into() }).clone();
        MemoryMetrics {
            rss: self.memory_rss.clone(),
            soft_limit,
            hard_limit,
            refusing: self.memory_refusing.clone(),
            hard_limit_reached: self.memory_hard_limit_reached.clone(),
        }
    }

    /// The order monitors' counters and gauges.
    pub fn monitors(&self) -> MonitorMetrics {
        MonitorMetrics {
            alerts: self.order_alerts.clone(),
            firing: self.order_alerts_firing.clone(),
            pending: self.monitor_pending.clone(),
            dropped_facts: self.monitor_dropped_facts.clone(),
        }
    }

    /// Registers a family that a component owns (e.g. the `rabbitmq` receiver's
    /// `tracegate_rabbitmq_*`); the caller registers each name once per process.
    pub fn register(&self, name: &str, help: &str, metric: impl prometheus_client::registry::Metric) {
        self.registry.lock().unwrap_or_else(|e| e.into_inner()).register(name, help, metric);
    }

    /// The Prometheus text exposition (0.0.4).
    pub fn render(&self) -> String {
        let mut out = super::sections::openmetrics_to_text(&self.registry_openmetrics());
        self.sections.encode(&mut out, false);
        out
    }

    /// The OpenMetrics 1.0 exposition (with exemplars).
    pub fn render_openmetrics(&self) -> String {
        let mut out = self.registry_openmetrics();
        if out.ends_with("# EOF\n") {
            out.truncate(out.len() - "# EOF\n".len());
        }
        self.sections.encode(&mut out, true);
        out.push_str("# EOF\n");
        out
    }

    fn registry_openmetrics(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }
}

/// A receiver's counters.
#[derive(Clone)]
pub struct ReceiverMetrics {
    accepted: Counter,
    ack_latency: Histogram,
    refused: Family<RefusedLabels, Counter>,
    refused_requests: Family<RefusedLabels, Counter>,
    span_limited: Family<SpanLimitedLabels, Counter>,
    receiver: String,
    transport: String,
    refusal_log: Arc<std::sync::Mutex<RefusalLog>>,
}

/// Refusals logged at INFO at most once per [`REFUSAL_LOG_EVERY`]: the first at once, the rest
/// counted by reason and written with the next refusal after the interval.
#[derive(Default)]
struct RefusalLog {
    last_logged: Option<std::time::Instant>,
    requests: u64,
    spans: u64,
    reasons: std::collections::BTreeMap<String, u64>,
}

/// How often refused requests are summarised in the log (every refusal is counted in metrics).
pub const REFUSAL_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl ReceiverMetrics {
    /// An accepted request was answered; `since`: when its handler started.
    pub fn acknowledged(&self, since: std::time::Instant) {
        self.ack_latency.observe(since.elapsed().as_secs_f64());
    }

    pub fn accepted(&self, spans: usize) {
        self.accepted.inc_by(spans as u64);
    }
    /// Spans taken out of an accepted request as invalid (reported in `partial_success`):
    /// counted as refused spans with reason `invalid_span`, not as a refused request.
    pub fn rejected_invalid(&self, spans: usize) {
        self.rejected(spans, "invalid_span");
    }

    /// Spans taken out of an accepted request (reported in `partial_success`) for `reason`.
    pub fn rejected(&self, spans: usize, reason: &str) {
        let labels = RefusedLabels { receiver: self.receiver.clone(), transport: self.transport.clone(), reason: reason.into() };
        self.refused.get_or_create(&labels).inc_by(spans as u64);
    }

    /// What a receiver's `span_limits` dropped or cut (`what`: attributes, attribute_values,
    /// events, links).
    pub fn span_limited(&self, what: &str, n: usize) {
        let labels = SpanLimitedLabels { receiver: self.receiver.clone(), transport: self.transport.clone(), what: what.into() };
        self.span_limited.get_or_create(&labels).inc_by(n as u64);
    }

    pub fn refused(&self, spans: usize, reason: &str) {
        let labels = RefusedLabels { receiver: self.receiver.clone(), transport: self.transport.clone(), reason: reason.into() };
        let counter = self.refused.get_or_create(&labels).clone();
        counter.inc_by(spans as u64);
        let requests = self.refused_requests.get_or_create(&labels).clone();
        requests.inc();
        let mut log = self.refusal_log.lock().unwrap_or_else(|p| p.into_inner());
        log.requests += 1;
        log.spans += spans as u64;
        *log.reasons.entry(reason.to_string()).or_insert(0) += 1;
        if log.last_logged.is_none_or(|t| t.elapsed() >= REFUSAL_LOG_EVERY) {
            let reasons: Vec<String> = log.reasons.iter().map(|(r, n)| format!("{r}: {n}")).collect();
            tracing::info!(
                receiver = %self.receiver,
                transport = %self.transport,
                requests = log.requests,
                spans = log.spans,
                reasons = %reasons.join(", "),
                "refused requests since the last report (tracegate_receiver_refused_requests_total counts them all)"
            );
            *log = RefusalLog { last_logged: Some(std::time::Instant::now()), ..Default::default() };
        }
    }
}

/// An exporter's counters.
#[derive(Clone)]
pub struct ExporterMetrics {
    pub sent: Counter,
    pub failed: Counter,
    pub rejected_by_peer: Counter,
    pub retries: Counter,
    pub queue_size: Gauge,
    pub queue_capacity: Gauge,
    pub queue_bytes: Gauge,
    pub queue_oldest_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub storage_errors: Counter,
    pub storage_recovered: Counter,
    pub storage_torn: Counter,
    pub latency: Histogram,
    pub dropped_full: Counter,
    pub dropped_shutdown: Counter,
}

/// Spans accepted and not delivered, by why (the counters of `ExporterMetrics`, summed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExporterLosses {
    /// A best-effort queue was full, or released spans found no room (release backlog full).
    pub dropped_full: u64,
    /// Left in a memory queue at the shutdown deadline, or met a queue already closed.
    pub dropped_shutdown: u64,
    /// Permanent errors, retries exhausted, spans the peer refused (after bisection).
    pub failed: u64,
    /// Reported rejected by the peer in a `partial_success` reply.
    pub rejected_by_peer: u64,
}

/// The `elasticsearch` exporter's counters (see `Metrics::elasticsearch`).
#[derive(Clone)]
pub struct ElasticsearchMetrics {
    pub indexed: Counter,
    pub retried: Counter,
    pub dead_lettered: Counter,
    pub orders_updated: Counter,
    pub bytes_sent: Counter,
    pub bulk_latency: Histogram,
}

/// The memory limiter's metrics (see `Metrics::memory`).
#[derive(Clone, Default)]
pub struct MemoryMetrics {
    pub rss: Gauge,
    pub soft_limit: Gauge,
    pub hard_limit: Gauge,
    pub refusing: Gauge,
    pub hard_limit_reached: Counter,
}

/// The order monitors' metrics (see `Metrics::monitors`).
#[derive(Clone)]
pub struct MonitorMetrics {
    alerts: Family<AlertLabels, Counter>,
    firing: Family<MonitorRuleLabels, Gauge>,
    pending: Family<MonitorRuleLabels, Gauge>,
    pub dropped_facts: Counter,
}

impl MonitorMetrics {
    pub fn fired(&self, monitor: &str, rule: &str, severity: &str) {
        let labels = AlertLabels { monitor: monitor.into(), rule: rule.into(), severity: severity.into() };
        let counter = self.alerts.get_or_create(&labels).clone();
        counter.inc();
    }

    pub fn set_firing(&self, monitor: &str, rule: &str, n: i64) {
        let gauge = self.firing.get_or_create(&MonitorRuleLabels { monitor: monitor.into(), rule: rule.into() }).clone();
        gauge.set(n);
    }

    pub fn set_pending(&self, monitor: &str, rule: &str, n: i64) {
        let gauge = self.pending.get_or_create(&MonitorRuleLabels { monitor: monitor.into(), rule: rule.into() }).clone();
        gauge.set(n);
    }
}

/// A notifier's counters (see `Metrics::notifier`).
#[derive(Clone, Default)]
pub struct NotifierMetrics {
    /// Notices delivered.
    pub sent: Counter,
    /// Attempts that failed and were tried again.
    pub retry: Counter,
    /// Notices given up on (permanent error or retries exhausted).
    pub failed: Counter,
    /// Notices given up on and written to the dead-letter file.
    pub dead_lettered: Counter,
}

/// The `order_enrich` processor's counters and gauges.
#[derive(Clone, Default)]
pub struct EnrichMetrics {
    pub tagged_own: Counter,
    pub tagged_trace: Counter,
    pub tagged_link: Counter,
    pub tagged_correlation: Counter,
    pub untagged_timeout: Counter,
    pub untagged_buffer_full: Counter,
    pub untagged_no_wait: Counter,
    pub untagged_ambiguous: Counter,
    pub buffer_spans: Gauge,
    pub buffer_traces: Gauge,
    /// The correlation hold: spans put in, claimed and let go of, dropped at their ttl, refused
    /// for want of room; and what it holds now.
    pub hold_held: Counter,
    pub hold_released: Counter,
    pub hold_expired: Counter,
    pub hold_full: Counter,
    pub hold_spans: Gauge,
    pub hold_bytes: Gauge,
    pub trace_cache_entries: Gauge,
    pub correlation_cache_entries: Gauge,
    pub trace_cache_evictions: Counter,
    pub correlation_cache_evictions: Counter,
}

/// The `order_sampling` processor's counters.
#[derive(Clone, Default)]
pub struct SamplingMetrics {
    pub kept_order: Counter,
    pub kept_error: Counter,
    pub kept_fraction: Counter,
    pub dropped: Counter,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_elasticsearch_exporters_share_one_family_per_metric() {
        let metrics = Metrics::new();
        metrics.elasticsearch("es-a").indexed.inc_by(3);
        metrics.elasticsearch("es-b").indexed.inc_by(5);
        let text = metrics.render();
        assert_eq!(text.matches("# HELP tracegate_elasticsearch_documents_indexed_total ").count(), 1, "{text}");
        assert!(text.contains(r#"tracegate_elasticsearch_documents_indexed_total{exporter="es-a"} 3"#), "{text}");
        assert!(text.contains(r#"tracegate_elasticsearch_documents_indexed_total{exporter="es-b"} 5"#), "{text}");
    }
}
