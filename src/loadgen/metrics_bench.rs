//! `tracegate bench-metrics`: what the `span_metrics` processor costs. The load generator's shop
//! traffic goes through a pipeline (`order_enrich`, a memory queue drained as it fills) without
//! and with `span_metrics` after the enricher, in alternating rounds; the least CPU time of this
//! process per span is kept for each mode (the machine's other load only ever adds).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

use super::{BenchError, TrafficGenerator};
use crate::pipeline::{count_spans, AdmitError, ExporterQueue, Fanout, Pipeline};
use crate::processors::span_metrics::{SpanMetricsConfig, SECTION};
use crate::processors::{Processor, ProcessorConfig};
use crate::shared::WhenFull;
use crate::telemetry::Metrics;

pub struct MetricsBenchFigures {
    pub spans: usize,
    pub rounds: usize,
    pub cpu_per_span_off: Duration,
    pub cpu_per_span_on: Duration,
    /// Label sets the derived metrics held after a run (bounded by the cardinality limit).
    pub series: usize,
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

pub async fn run(spans: usize, rounds: usize) -> Result<MetricsBenchFigures, BenchError> {
    let mut generator = TrafficGenerator::new(11, now_ns());
    let requests: Vec<Vec<ResourceSpans>> = (0..spans.div_ceil(100)).map(|_| generator.request(100).resource_spans).collect();
    let total: usize = requests.iter().map(|r| count_spans(r)).sum();
    let _warm = through_pipeline(requests[..requests.len().min(50)].to_vec(), true).await?;
    let (mut off, mut on, mut series) = (Duration::MAX, Duration::MAX, 0);
    for round in 0..rounds.max(1) {
        let modes = if round % 2 == 0 { [false, true] } else { [true, false] };
        for metrics_on in modes {
            let (spent, held) = through_pipeline(requests.clone(), metrics_on).await?;
            if metrics_on {
                on = on.min(spent);
                series = held;
            } else {
                off = off.min(spent);
            }
        }
    }
    Ok(MetricsBenchFigures {
        spans: total,
        rounds: rounds.max(1),
        cpu_per_span_off: off / total.max(1) as u32,
        cpu_per_span_on: on / total.max(1) as u32,
        series,
    })
}

/// CPU time of this process to admit `requests`, and the label sets the derived metrics hold.
async fn through_pipeline(requests: Vec<Vec<ResourceSpans>>, metrics_on: bool) -> Result<(Duration, usize), BenchError> {
    let metrics = Metrics::new();
    let queue = ExporterQueue::new("bench", 1_000_000, WhenFull::Refuse, metrics.exporter("bench"));
    let drain = {
        let queue = queue.clone();
        tokio::spawn(async move { while queue.recv().await.is_some() {} })
    };
    let mut processors = vec![Processor::build(&ProcessorConfig::OrderEnrich(Default::default()), "bench", &metrics)?];
    if metrics_on {
        processors.push(Processor::build(&ProcessorConfig::SpanMetrics(SpanMetricsConfig::default()), "bench", &metrics)?);
    }
    let fanout = Fanout::new(vec![Arc::new(Pipeline::new("bench".into(), processors, vec![queue.clone()], false))]);
    let cpu = crate::shared::process_cpu_time();
    for request in requests {
        // Room comes back as the drain task takes batches.
        loop {
            match fanout.admit(request.clone()).await {
                Ok(_) => break,
                Err(AdmitError::QueueFull { .. }) => tokio::task::yield_now().await,
                Err(e) => return Err(e.into()),
            }
        }
    }
    while !queue.is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let spent = crate::shared::process_cpu_time().saturating_sub(cpu);
    queue.close();
    drain.abort();
    let series = match metrics.sections.get(SECTION) {
        Some(section) => section.as_any().downcast::<crate::processors::span_metrics::SpanMetricsState>().map(|s| s.series()).unwrap_or(0),
        None => 0,
    };
    if metrics_on && series == 0 {
        return Err(BenchError::NothingRecorded);
    }
    Ok((spent, series))
}
