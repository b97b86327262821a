//! Metric families with a cap on their series, and their exposition (Prometheus text 0.0.4 and
//! OpenMetrics 1.0 with exemplars). A family holds at most `limit` label sets; past it every new
//! label set lands in one series labelled `otel_metric_overflow="true"` (as the Collector's
//! connectors do) and is counted, so that no input can grow the series without bound.
//!
//! Lookups hash the label values as borrowed `&str` and compare in place: the data path
//! allocates only when a label set is seen for the first time.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::Hasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The label of the one series that takes every label set past a family's limit.
pub const OVERFLOW_LABEL: &str = "otel_metric_overflow";

/// An exemplar: the trace behind one observation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Exemplar {
    pub trace_id: [u8; 16],
    pub value: f64,
    /// Unix milliseconds.
    pub time_ms: u64,
}

/// One histogram series: per-bucket counts (not cumulative; the last is `+Inf`), sum, count and
/// the latest exemplar of each bucket.
#[derive(Debug, Clone)]
pub struct HistogramSeries {
    counts: Box<[u64]>,
    sum: f64,
    exemplars: Box<[Option<Exemplar>]>,
}

impl HistogramSeries {
    fn new(buckets: usize) -> HistogramSeries {
        HistogramSeries { counts: vec![0; buckets + 1].into(), sum: 0.0, exemplars: vec![None; buckets + 1].into() }
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// What a family's series are.
pub enum Kind {
    Counter,
    /// Upper bounds, ascending, in the unit exposed.
    Histogram(Arc<[f64]>),
}

enum Value {
    Counter(f64),
    Histogram(HistogramSeries),
}

impl Value {
    fn new(kind: &Kind) -> Value {
        match kind {
            Kind::Counter => Value::Counter(0.0),
            Kind::Histogram(b) => Value::Histogram(HistogramSeries::new(b.len())),
        }
    }
}

struct Series {
    labels: Box<[Box<str>]>,
    value: Value,
}

#[derive(Default)]
struct Inner {
    /// Label-set hash -> indexes into `series` (a collision chain, nearly always one).
    index: HashMap<u64, Vec<usize>>,
    series: Vec<Series>,
    overflow: Option<Value>,
}

/// One metric family with a series limit.
pub struct Family {
    name: String,
    help: &'static str,
    label_names: Vec<String>,
    kind: Kind,
    limit: usize,
    inner: Mutex<Inner>,
    /// Observations that went to the overflow series.
    overflowed: AtomicU64,
}

/// FNV-1a over the label values, each followed by 0xff (not valid UTF-8, so `["ab", "c"]` and
/// `["a", "bc"]` differ). Fast on short strings; collisions are resolved by comparison.
fn hash_labels(values: &[&str]) -> u64 {
    let mut h = Fnv(0xcbf2_9ce4_8422_2325);
    for v in values {
        h.write(v.as_bytes());
        h.write_u8(0xff);
    }
    h.finish()
}

struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

impl Family {
    pub fn new(name: impl Into<String>, help: &'static str, label_names: &[&str], kind: Kind, limit: usize) -> Family {
        Family {
            name: name.into(),
            help,
            label_names: label_names.iter().map(|s| s.to_string()).collect(),
            kind,
            limit,
            inner: Mutex::default(),
            overflowed: AtomicU64::new(0),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `f` on the series of `values` (created if new and under the limit; else the
    /// overflow series).
    fn with(&self, values: &[&str], f: impl FnOnce(&mut Value)) {
        debug_assert_eq!(values.len(), self.label_names.len());
        let hash = hash_labels(values);
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let inner = &mut *guard;
        if let Some(chain) = inner.index.get(&hash) {
            for &i in chain {
                let s = &mut inner.series[i];
                if s.labels.len() == values.len() && s.labels.iter().zip(values).all(|(a, b)| &**a == *b) {
                    f(&mut s.value);
                    return;
                }
            }
        }
        if inner.series.len() >= self.limit {
            self.overflowed.fetch_add(1, Ordering::Relaxed);
            f(inner.overflow.get_or_insert_with(|| Value::new(&self.kind)));
            return;
        }
        let mut value = Value::new(&self.kind);
        f(&mut value);
        inner.index.entry(hash).or_default().push(inner.series.len());
        inner.series.push(Series { labels: values.iter().map(|v| Box::<str>::from(*v)).collect(), value });
    }

    pub fn inc(&self, values: &[&str], by: f64) {
        self.with(values, |v| {
            if let Value::Counter(c) = v {
                *c += by;
            }
        });
    }

    /// Records `observed` (in the family's unit) with an optional exemplar.
    pub fn observe(&self, values: &[&str], observed: f64, exemplar: Option<Exemplar>) {
        let Kind::Histogram(bounds) = &self.kind else { return };
        let bucket = bounds.partition_point(|b| *b < observed);
        self.with(values, |v| {
            if let Value::Histogram(h) = v {
                h.counts[bucket] += 1;
                h.sum += observed;
                if exemplar.is_some() {
                    h.exemplars[bucket] = exemplar;
                }
            }
        });
    }

    /// Series held (the overflow series not included).
    pub fn series(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).series.len()
    }

    pub fn overflowed(&self) -> u64 {
        self.overflowed.load(Ordering::Relaxed)
    }

    /// A counter's value, or a histogram's count, for `values` (tests and the benchmark).
    #[cfg(test)]
    pub fn get(&self, values: &[&str]) -> Option<f64> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let s = inner.series.iter().find(|s| s.labels.iter().zip(values).all(|(a, b)| &**a == *b))?;
        Some(match &s.value {
            Value::Counter(c) => *c,
            Value::Histogram(h) => h.count() as f64,
        })
    }

    /// Appends the family. `openmetrics`: OpenMetrics 1.0 (counters typed without `_total`,
    /// exemplars on buckets); otherwise Prometheus text 0.0.4.
    pub fn encode(&self, out: &mut String, openmetrics: bool) {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match &self.kind {
            Kind::Counter => {
                let family = if openmetrics { self.name.clone() } else { format!("{}_total", self.name) };
                header(out, &family, self.help, "counter");
                let sample = format!("{}_total", self.name);
                for s in &inner.series {
                    if let Value::Counter(c) = s.value {
                        sample_line(out, &sample, &self.label_names, &s.labels, None, c);
                    }
                }
                if let Some(Value::Counter(c)) = inner.overflow {
                    overflow_line(out, &sample, None, c);
                }
            }
            Kind::Histogram(bounds) => {
                header(out, &self.name, self.help, "histogram");
                for s in &inner.series {
                    if let Value::Histogram(h) = &s.value {
                        self.encode_histogram(out, bounds, &s.labels, h, openmetrics);
                    }
                }
                if let Some(Value::Histogram(h)) = &inner.overflow {
                    self.encode_histogram(out, bounds, &[], h, openmetrics);
                }
            }
        }
    }

    /// A histogram family's counts as a counter family `name` (calls beside durations: one
    /// lookup per span feeds both).
    pub fn encode_counts(&self, out: &mut String, name: &str, help: &str, openmetrics: bool) {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let family = if openmetrics { name.to_string() } else { format!("{name}_total") };
        header(out, &family, help, "counter");
        let sample = format!("{name}_total");
        for s in &inner.series {
            if let Value::Histogram(h) = &s.value {
                sample_line(out, &sample, &self.label_names, &s.labels, None, h.count() as f64);
            }
        }
        if let Some(Value::Histogram(h)) = &inner.overflow {
            overflow_line(out, &sample, None, h.count() as f64);
        }
    }

    /// One histogram series; `labels` empty = the overflow series.
    fn encode_histogram(&self, out: &mut String, bounds: &[f64], labels: &[Box<str>], h: &HistogramSeries, openmetrics: bool) {
        let bucket = format!("{}_bucket", self.name);
        let mut cumulative = 0u64;
        for (i, count) in h.counts.iter().enumerate() {
            cumulative += count;
            let le = match bounds.get(i) {
                Some(b) => format_float(*b),
                None => "+Inf".to_string(),
            };
            let line_start = out.len();
            if labels.is_empty() {
                overflow_line(out, &bucket, Some(&le), cumulative as f64);
            } else {
                sample_line(out, &bucket, &self.label_names, labels, Some(&le), cumulative as f64);
            }
            if openmetrics {
                if let Some(e) = &h.exemplars[i] {
                    // Before the newline that sample_line wrote.
                    out.truncate(out.len() - 1);
                    let _ = writeln!(
                        out,
                        " # {{trace_id=\"{}\"}} {} {}.{:03}",
                        hex::encode(e.trace_id),
                        format_float(e.value),
                        e.time_ms / 1000,
                        e.time_ms % 1000
                    );
                }
            }
            debug_assert!(out.len() > line_start);
        }
        let total = h.count() as f64;
        for (suffix, v) in [("_sum", h.sum), ("_count", total)] {
            let name = format!("{}{suffix}", self.name);
            if labels.is_empty() {
                overflow_line(out, &name, None, v);
            } else {
                sample_line(out, &name, &self.label_names, labels, None, v);
            }
        }
    }
}

/// `# HELP` and `# TYPE` lines.
pub fn header(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {}", help.replace('\\', "\\\\").replace('\n', "\\n"));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// One sample line; `le` is appended as the last label.
pub fn sample_line(out: &mut String, name: &str, label_names: &[String], values: &[Box<str>], le: Option<&str>, v: f64) {
    out.push_str(name);
    let mut first = true;
    let mut label = |out: &mut String, k: &str, v: &str| {
        out.push(if first { '{' } else { ',' });
        first = false;
        out.push_str(k);
        out.push_str("=\"");
        escape_into(out, v);
        out.push('"');
    };
    for (k, v) in label_names.iter().zip(values) {
        label(out, k, v);
    }
    if let Some(le) = le {
        label(out, "le", le);
    }
    if !first {
        out.push('}');
    }
    out.push(' ');
    out.push_str(&format_float(v));
    out.push('\n');
}

fn overflow_line(out: &mut String, name: &str, le: Option<&str>, v: f64) {
    let names = [OVERFLOW_LABEL.to_string()];
    sample_line(out, name, &names, &[Box::from("true")], le, v);
}

fn escape_into(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A number as both formats read it: integers without a fraction, `+Inf`/`-Inf`/`NaN`.
pub fn format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_family_past_its_limit_counts_into_one_overflow_series() {
        let f = Family::new("x_calls", "Calls.", &["service"], Kind::Counter, 2);
        f.inc(&["a"], 1.0);
        f.inc(&["b"], 1.0);
        f.inc(&["c"], 1.0);
        f.inc(&["d"], 2.0);
        f.inc(&["a"], 1.0);
        assert_eq!(f.series(), 2);
        assert_eq!(f.overflowed(), 2);
        let mut text = String::new();
        f.encode(&mut text, false);
        assert_eq!(
            text,
            "# HELP x_calls_total Calls.\n# TYPE x_calls_total counter\nx_calls_total{service=\"a\"} 2\nx_calls_total{service=\"b\"} 1\nx_calls_total{otel_metric_overflow=\"true\"} 3\n"
        );
    }

    #[test]
    fn histograms_are_cumulative_and_carry_exemplars_in_openmetrics_only() {
        let f = Family::new("d_seconds", "Durations.", &["s"], Kind::Histogram(Arc::from([0.1, 1.0])), 10);
        let e = Exemplar { trace_id: [0xab; 16], value: 0.5, time_ms: 1_700_000_000_123 };
        f.observe(&["q\"x"], 0.05, None);
        f.observe(&["q\"x"], 0.5, Some(e));
        f.observe(&["q\"x"], 5.0, None);
        let mut om = String::new();
        f.encode(&mut om, true);
        assert!(om.contains("d_seconds_bucket{s=\"q\\\"x\",le=\"0.1\"} 1\n"), "{om}");
        assert!(
            om.contains(&format!(
                "d_seconds_bucket{{s=\"q\\\"x\",le=\"1\"}} 2 # {{trace_id=\"{}\"}} 0.5 1700000000.123\n",
                "ab".repeat(16)
            )),
            "{om}"
        );
        assert!(om.contains("d_seconds_bucket{s=\"q\\\"x\",le=\"+Inf\"} 3\n"), "{om}");
        assert!(om.contains("d_seconds_sum{s=\"q\\\"x\"} 5.55\n"), "{om}");
        assert!(om.contains("d_seconds_count{s=\"q\\\"x\"} 3\n"), "{om}");
        let mut text = String::new();
        f.encode(&mut text, false);
        assert!(!text.contains("trace_id"), "{text}");
    }

    #[test]
    fn label_sets_that_concatenate_alike_are_distinct() {
        let f = Family::new("c", "C.", &["a", "b"], Kind::Counter, 10);
        f.inc(&["ab", "c"], 1.0);
        f.inc(&["a", "bc"], 1.0);
        assert_eq!(f.series(), 2);
    }
}
