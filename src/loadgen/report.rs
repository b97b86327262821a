//! Counting replies during a run, and the report at its end.

use std::fmt;
use std::time::Duration;

use super::args::Protocol;
use super::client::Reply;
use super::spans::TrafficMix;

/// The result of a load run; `--json` prints it as one line.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LoadReport {
    pub protocol: Protocol,
    pub endpoint: String,
    pub spans_per_request: u32,
    pub concurrency: u32,
    /// The offered load asked for; 0 = as fast as possible.
    pub target_spans_per_sec: u64,
    /// False when at least 5% of the requests the target rate called for were never sent
    /// (all workers were waiting for replies); always true without a target.
    pub target_rate_reached: bool,
    pub sent_spans: u64,
    /// Spans of OK / 2xx replies, minus those `partial_success` rejected.
    pub acked_spans: u64,
    /// Spans of non-OK replies plus those `partial_success` rejected.
    pub refused_spans: u64,
    /// Requests that got no reply (connection error, reset, timeout).
    pub errors: u64,
    /// From the first request to the last reply.
    pub elapsed_seconds: f64,
    pub offered_spans_per_sec: f64,
    pub acked_spans_per_sec: f64,
    /// Acknowledgement latency (request start to OK reply); `null` when nothing was acked.
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub latency_max_ms: Option<f64>,
    /// Share of the traces sent that never get an order (catalogue browsing).
    pub orderless_trace_share: f64,
    /// Share of the spans sent that belong to such traces.
    pub orderless_span_share: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_refusal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

/// The counts of one worker, merged at the end of a run.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) sent_requests: u64,
    sent_spans: u64,
    acked_spans: u64,
    refused_spans: u64,
    errors: u64,
    /// Microseconds from request start to an OK reply.
    latencies_us: Vec<u32>,
    /// With `--latency-log`: (start since the run's start, latency) of each OK reply, in µs.
    pub(crate) timeline: Option<Vec<(u64, u32)>>,
    first_refusal: Option<String>,
    first_error: Option<String>,
}

impl Tally {
    pub(crate) fn record(&mut self, spans: u64, latency: Duration, reply: Reply) {
        self.sent_requests += 1;
        self.sent_spans += spans;
        match reply {
            Reply::Accepted { rejected_spans } => {
                let rejected = rejected_spans.min(spans);
                self.acked_spans += spans - rejected;
                self.refused_spans += rejected;
                self.latencies_us.push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
            }
            Reply::Refused(message) => {
                self.refused_spans += spans;
                self.first_refusal.get_or_insert(message);
            }
            Reply::Failed(message) => {
                self.errors += 1;
                self.first_error.get_or_insert(message);
            }
        }
    }

    pub(crate) fn merge(&mut self, other: Tally) {
        self.sent_requests += other.sent_requests;
        self.sent_spans += other.sent_spans;
        self.acked_spans += other.acked_spans;
        self.refused_spans += other.refused_spans;
        self.errors += other.errors;
        self.latencies_us.extend(other.latencies_us);
        if let Some(theirs) = other.timeline {
            self.timeline.get_or_insert_with(Vec::new).extend(theirs);
        }
        if self.first_refusal.is_none() {
            self.first_refusal = other.first_refusal;
        }
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    pub(crate) fn into_report(mut self, run: RunFacts) -> LoadReport {
        self.latencies_us.sort_unstable();
        let seconds = run.elapsed.as_secs_f64();
        let per_sec = |spans: u64| {
            if seconds > 0.0 {
                spans as f64 / seconds
            } else {
                0.0
            }
        };
        LoadReport {
            protocol: run.protocol,
            endpoint: run.endpoint,
            spans_per_request: run.spans_per_request,
            concurrency: run.concurrency,
            target_spans_per_sec: run.target_spans_per_sec,
            target_rate_reached: run.expected_requests.is_none_or(|expected| self.sent_requests as f64 >= 0.95 * expected as f64),
            sent_spans: self.sent_spans,
            acked_spans: self.acked_spans,
            refused_spans: self.refused_spans,
            errors: self.errors,
            elapsed_seconds: seconds,
            offered_spans_per_sec: per_sec(self.sent_spans),
            acked_spans_per_sec: per_sec(self.acked_spans),
            latency_p50_ms: percentile_ms(&self.latencies_us, 0.50),
            latency_p99_ms: percentile_ms(&self.latencies_us, 0.99),
            latency_max_ms: self.latencies_us.last().map(|&us| f64::from(us) / 1000.0),
            orderless_trace_share: run.mix.orderless_trace_share(),
            orderless_span_share: run.mix.orderless_span_share(),
            first_refusal: self.first_refusal,
            first_error: self.first_error,
        }
    }
}

/// What the report needs to know about the run besides the counts.
pub(crate) struct RunFacts {
    pub(crate) protocol: Protocol,
    pub(crate) endpoint: String,
    pub(crate) spans_per_request: u32,
    pub(crate) concurrency: u32,
    pub(crate) target_spans_per_sec: u64,
    /// Requests the target rate called for over the whole duration; `None` without a target.
    pub(crate) expected_requests: Option<u64>,
    pub(crate) elapsed: Duration,
    /// The traffic sent (every pass over the request pool sends the same mix).
    pub(crate) mix: TrafficMix,
}

/// Nearest-rank percentile of sorted microseconds, in milliseconds.
fn percentile_ms(sorted_us: &[u32], quantile: f64) -> Option<f64> {
    if sorted_us.is_empty() {
        return None;
    }
    let rank = (quantile * sorted_us.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted_us.len()) - 1;
    Some(f64::from(sorted_us[index]) / 1000.0)
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let target = match self.target_spans_per_sec {
            0 => "as fast as acknowledged".to_string(),
            rate => format!("target {rate} spans/s"),
        };
        writeln!(
            f,
            "loadgen: {} {}, {} spans/request, {} in flight, {target}",
            self.protocol, self.endpoint, self.spans_per_request, self.concurrency
        )?;
        writeln!(
            f,
            "  sent     {:>12} spans in {:.2} s ({:.0} spans/s offered)",
            self.sent_spans, self.elapsed_seconds, self.offered_spans_per_sec
        )?;
        writeln!(f, "  acked    {:>12} spans ({:.0} spans/s)", self.acked_spans, self.acked_spans_per_sec)?;
        writeln!(f, "  refused  {:>12} spans", self.refused_spans)?;
        writeln!(f, "  errors   {:>12} requests", self.errors)?;
        writeln!(
            f,
            "  traffic  {:.2} of the traces ({:.2} of the spans) never get an order",
            self.orderless_trace_share, self.orderless_span_share
        )?;
        let ms = |v: Option<f64>| v.map_or_else(|| "n/a".to_string(), |v| format!("{v:.2} ms"));
        write!(f, "  latency  p50 {}, p99 {}, max {}", ms(self.latency_p50_ms), ms(self.latency_p99_ms), ms(self.latency_max_ms))?;
        if !self.target_rate_reached {
            write!(
                f,
                "\n  warning: target rate not reached ({:.0} of {} spans/s offered; raise --concurrency?)",
                self.offered_spans_per_sec, self.target_spans_per_sec
            )?;
        }
        if let Some(refusal) = &self.first_refusal {
            write!(f, "\n  first refusal: {refusal}")?;
        }
        if let Some(error) = &self.first_error {
            write!(f, "\n  first error: {error}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(expected_requests: Option<u64>) -> RunFacts {
        RunFacts {
            protocol: Protocol::Grpc,
            endpoint: "http://127.0.0.1:4317".to_string(),
            spans_per_request: 100,
            concurrency: 4,
            target_spans_per_sec: expected_requests.map_or(0, |r| r * 100 / 2),
            expected_requests,
            elapsed: Duration::from_secs(2),
            mix: TrafficMix { traces: 4, orderless_traces: 2, spans: 26, orderless_spans: 8 },
        }
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let sorted: Vec<u32> = (1..=100).map(|ms| ms * 1000).collect();
        assert_eq!(percentile_ms(&sorted, 0.50), Some(50.0));
        assert_eq!(percentile_ms(&sorted, 0.99), Some(99.0));
        assert_eq!(percentile_ms(&[1500], 0.99), Some(1.5));
        assert_eq!(percentile_ms(&[], 0.5), None);
    }

    #[test]
    fn replies_are_counted_by_kind() {
        let mut first = Tally::default();
        first.record(100, Duration::from_millis(3), Reply::Accepted { rejected_spans: 0 });
        first.record(100, Duration::from_millis(1), Reply::Accepted { rejected_spans: 10 });
        let mut second = Tally::default();
        second.record(100, Duration::from_millis(9), Reply::Refused("gRPC Unavailable: queue full".into()));
        second.record(100, Duration::from_millis(9), Reply::Failed("connection reset".into()));
        first.merge(second);
        let report = first.into_report(facts(Some(4)));
        assert_eq!(report.sent_spans, 400);
        assert_eq!(report.acked_spans, 190);
        assert_eq!(report.refused_spans, 110);
        assert_eq!(report.errors, 1);
        assert_eq!(report.acked_spans_per_sec, 95.0);
        assert_eq!(report.offered_spans_per_sec, 200.0);
        assert_eq!(report.latency_p50_ms, Some(1.0));
        assert_eq!(report.latency_p99_ms, Some(3.0));
        assert_eq!(report.latency_max_ms, Some(3.0));
        assert!(report.target_rate_reached);
        assert_eq!(report.first_refusal.as_deref(), Some("gRPC Unavailable: queue full"));
        assert_eq!(report.first_error.as_deref(), Some("connection reset"));
    }

    #[test]
    fn a_shortfall_against_the_target_is_reported() {
        let mut tally = Tally::default();
        for _ in 0..90 {
            tally.record(100, Duration::from_millis(1), Reply::Accepted { rejected_spans: 0 });
        }
        let report = tally.into_report(facts(Some(100)));
        assert!(!report.target_rate_reached);
        assert!(report.to_string().contains("warning: target rate not reached (4500 of 5000 spans/s offered"));
    }

    #[test]
    fn json_form_has_every_field_and_null_latency_without_acks() {
        let report = Tally::default().into_report(facts(None));
        let json: serde_json::Value = serde_json::to_value(&report).unwrap();
        assert_eq!(json["protocol"], "grpc");
        assert_eq!(json["acked_spans"], 0);
        assert_eq!(json["target_rate_reached"], true);
        assert!(json["latency_p99_ms"].is_null());
        assert!(json.get("first_error").is_none());
        assert_eq!(json["orderless_trace_share"], 0.5);
        assert_eq!(json["orderless_span_share"], 8.0 / 26.0);
        for key in ["sent_spans", "refused_spans", "errors", "elapsed_seconds", "acked_spans_per_sec", "latency_p50_ms", "latency_max_ms"] {
            assert!(json.get(key).is_some(), "{key}");
        }
    }
}
