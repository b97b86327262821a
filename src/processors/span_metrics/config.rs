//! Configuration of the `span_metrics` processor: the shape of the Collector's `spanmetrics` and
//! `servicegraph` connectors (`histogram`, `exemplars`, `aggregation_cardinality_limit`,
//! `store: {ttl, max_items}`), plus the order metrics tracegate derives from its own attributes.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::shared::Issues;

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpanMetricsConfig {
    /// Names and labels of the call and duration metrics: `tracegate`
    /// (`tracegate_span_calls_total{service,span_name,span_kind,status_code}`,
    /// `tracegate_span_duration_seconds`) or `spm`, what Jaeger's Monitor tab queries
    /// (`traces_span_metrics_calls_total{service_name,...}`,
    /// `traces_span_metrics_duration_milliseconds`; service graph `traces_service_graph_*`).
    pub naming: Naming,
    /// The most series one metric holds; past it new label sets go to one series labelled
    /// `otel_metric_overflow="true"` (counted in `tracegate_span_metrics_overflow_total`).
    pub aggregation_cardinality_limit: usize,
    /// Bucket bounds of the span duration histogram.
    pub histogram: HistogramConfig,
    pub exemplars: ExemplarsConfig,
    pub orders: OrdersConfig,
    pub service_graph: ServiceGraphConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Naming {
    Tracegate,
    Spm,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistogramConfig {
    #[serde(with = "durations")]
    pub buckets: Vec<Duration>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExemplarsConfig {
    /// Trace ids on histogram buckets, in the OpenMetrics exposition.
    pub enabled: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OrdersConfig {
    pub enabled: bool,
    /// `tracegate_orders_in_status` counts orders seen within this window; an order not seen for
    /// this long is forgotten.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Orders remembered at once (their last status and its time); past it the least recently
    /// seen are forgotten (counted in `tracegate_order_metrics_evicted_orders_total`).
    pub max_orders: usize,
    /// Bucket bounds of the transition and bus-wait histograms.
    #[serde(with = "durations")]
    pub buckets: Vec<Duration>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceGraphConfig {
    pub enabled: bool,
    /// Spans waiting for the other side of their edge.
    pub store: GraphStoreConfig,
    #[serde(with = "durations")]
    pub buckets: Vec<Duration>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GraphStoreConfig {
    /// How long a span waits for its peer; then it counts as unpaired.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// Spans waiting at once; past it new ones are dropped (counted).
    pub max_items: usize,
}

fn ms(v: &[u64]) -> Vec<Duration> {
    v.iter().map(|m| Duration::from_millis(*m)).collect()
}

impl Default for SpanMetricsConfig {
    fn default() -> Self {
        SpanMetricsConfig {
            naming: Naming::Tracegate,
            aggregation_cardinality_limit: 1000,
            histogram: HistogramConfig::default(),
            exemplars: ExemplarsConfig { enabled: true },
            orders: OrdersConfig::default(),
            service_graph: ServiceGraphConfig::default(),
        }
    }
}

impl Default for HistogramConfig {
    /// The Collector's `spanmetrics` defaults.
    fn default() -> Self {
        HistogramConfig { buckets: ms(&[2, 4, 6, 8, 10, 50, 100, 200, 400, 800, 1000, 1400, 2000, 5000, 10_000, 15_000]) }
    }
}

impl Default for ExemplarsConfig {
    fn default() -> Self {
        ExemplarsConfig { enabled: true }
    }
}

impl Default for OrdersConfig {
    fn default() -> Self {
        let s = |v: &[u64]| v.iter().map(|s| Duration::from_secs(*s)).collect();
        OrdersConfig {
            enabled: true,
            window: Duration::from_secs(24 * 3600),
            max_orders: 100_000,
            buckets: s(&[1, 5, 10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14_400, 28_800, 43_200, 86_400, 172_800]),
        }
    }
}

impl Default for ServiceGraphConfig {
    fn default() -> Self {
        ServiceGraphConfig {
            enabled: true,
            store: GraphStoreConfig::default(),
            buckets: ms(&[2, 4, 6, 8, 10, 50, 100, 200, 400, 800, 1000, 1400, 2000, 5000, 10_000, 15_000]),
        }
    }
}

impl Default for GraphStoreConfig {
    fn default() -> Self {
        GraphStoreConfig { ttl: Duration::from_secs(10), max_items: 10_000 }
    }
}

fn check_buckets(path: &str, buckets: &[Duration], issues: &mut Issues) {
    if buckets.is_empty() {
        issues.push(path, "needs at least one bucket bound");
    } else if buckets.windows(2).any(|w| w[0] >= w[1]) {
        issues.push(path, "bucket bounds must be in ascending order, each once");
    } else if buckets.len() > 64 {
        issues.push(path, "at most 64 bucket bounds");
    }
}

impl SpanMetricsConfig {
    pub fn validate(&self, path: &str, issues: &mut Issues) {
        if self.aggregation_cardinality_limit == 0 {
            issues.push(format!("{path}.aggregation_cardinality_limit"), "must be at least 1");
        }
        check_buckets(&format!("{path}.histogram.buckets"), &self.histogram.buckets, issues);
        check_buckets(&format!("{path}.orders.buckets"), &self.orders.buckets, issues);
        check_buckets(&format!("{path}.service_graph.buckets"), &self.service_graph.buckets, issues);
        if self.orders.enabled {
            if self.orders.window.is_zero() {
                issues.push(format!("{path}.orders.window"), "must be more than 0s");
            }
            if self.orders.max_orders == 0 {
                issues.push(format!("{path}.orders.max_orders"), "must be at least 1");
            }
        }
        if self.service_graph.enabled {
            if self.service_graph.store.ttl.is_zero() {
                issues.push(format!("{path}.service_graph.store.ttl"), "must be more than 0s");
            }
            if self.service_graph.store.max_items == 0 {
                issues.push(format!("{path}.service_graph.store.max_items"), "must be at least 1");
            }
        }
    }
}

/// A list of durations as humantime strings (`["5ms", "1s"]`).
mod durations {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        let text: Vec<String> = v.iter().map(|d| humantime::format_duration(*d).to_string()).collect();
        text.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        let text = Vec::<String>::deserialize(d)?;
        text.iter()
            .map(|t| humantime::parse_duration(t).map_err(|e| serde::de::Error::custom(format!("{t:?} is not a duration: {e}"))))
            .collect()
    }
}
