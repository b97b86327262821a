//! `tracegate bench-enrich`: does enrichment scale across cores? The load generator's shop
//! traffic, decoded before the clock starts, goes through one `order_enrich` processor (default
//! configuration) from 1, 2, ... threads at once (of `n` threads, thread `k` takes requests `k`,
//! `k + n`, ...), with no network and no queue. Each thread
//! count runs `rounds` times on a fresh enricher; the fastest round is kept. Every run's result
//! (per span: `order.id`, `order.stage`, `order.status`) must equal the single-threaded run's.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

use super::{BenchError, TrafficGenerator};
use crate::pipeline::count_spans;
use crate::processors::{OrderEnrichConfig, OrderEnricher};
use crate::shared::attr_string;
use crate::telemetry::Metrics;

/// Spans per request, as `bench/run.sh` sends them.
const SPANS_PER_REQUEST: usize = 100;

pub struct EnrichBenchFigures {
    pub requests: usize,
    pub spans: usize,
    pub rounds: usize,
    pub shards: usize,
    /// Per thread count: the best round's spans per second, and whether every round's result
    /// equalled the single-threaded one.
    pub runs: Vec<ThreadFigure>,
}

pub struct ThreadFigure {
    pub threads: usize,
    pub spans_per_second: f64,
    pub identical: bool,
}

impl EnrichBenchFigures {
    /// Spans per second on `threads` threads over spans per second on one.
    pub fn speed_up(&self, threads: usize) -> Option<f64> {
        let one = self.runs.iter().find(|r| r.threads == 1)?.spans_per_second;
        let n = self.runs.iter().find(|r| r.threads == threads)?.spans_per_second;
        Some(n / one)
    }

    pub fn identical(&self) -> bool {
        self.runs.iter().all(|r| r.identical)
    }
}

/// What a run made of each span: (trace id, span id) -> (order.id, order.stage, order.status).
type Result3 = HashMap<(Vec<u8>, Vec<u8>), (Option<String>, Option<String>, Option<String>)>;

pub fn run(threads: &[usize], requests: usize, rounds: usize) -> Result<EnrichBenchFigures, BenchError> {
    if requests == 0 {
        return Err(BenchError::Argument("--requests must be at least 1"));
    }
    if threads.is_empty() || threads.contains(&0) {
        return Err(BenchError::Argument("--threads must list thread counts of at least 1 (e.g. 1,2)"));
    }
    let rounds = rounds.max(1);
    let now_ns = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    let mut generator = TrafficGenerator::new(11, now_ns);
    let traffic: Vec<Vec<ResourceSpans>> = (0..requests).map(|_| generator.request(SPANS_PER_REQUEST).resource_spans).collect();
    let spans: usize = traffic.iter().map(|r| count_spans(r)).sum();

    // The reference: one thread (also warms the allocator and the caches of the machine).
    let (_, reference, shards) = one_run(&traffic, 1)?;
    let mut figures = EnrichBenchFigures { requests, spans, rounds, shards, runs: Vec::new() };
    let mut best: Vec<(usize, Duration, bool)> = threads.iter().map(|&t| (t, Duration::MAX, true)).collect();
    // Rounds alternate over the thread counts, so that a burst of other load on the machine
    // hits all of them alike.
    for _ in 0..rounds {
        for (threads, best, identical) in best.iter_mut() {
            let (took, result, _) = one_run(&traffic, *threads)?;
            *best = (*best).min(took);
            *identical &= result == reference;
        }
    }
    for (threads, took, identical) in best {
        figures.runs.push(ThreadFigure { threads, spans_per_second: spans as f64 / took.as_secs_f64().max(1e-9), identical });
    }
    Ok(figures)
}

/// One enricher, `threads` threads each enriching its share of the requests (see
/// [`on_threads`]); the wall time until the last request is enriched, and what came out (with
/// what still waited, flushed after the clock).
fn one_run(traffic: &[Vec<ResourceSpans>], threads: usize) -> Result<(Duration, Result3, usize), BenchError> {
    let enricher = OrderEnricher::new(OrderEnrichConfig::default(), Metrics::new().enrich("bench"))?;
    let now = tokio::time::Instant::now();
    let (took, mut outs) = on_threads(&enricher, traffic, threads, now);
    outs.push(enricher.flush());
    let mut result = Result3::new();
    for s in outs.iter().flatten().flat_map(|rs| &rs.scope_spans).flat_map(|ss| &ss.spans) {
        let tags =
            (attr_string(&s.attributes, "order.id"), attr_string(&s.attributes, "order.stage"), attr_string(&s.attributes, "order.status"));
        if result.insert((s.trace_id.clone(), s.span_id.clone()), tags).is_some() {
            return Err(BenchError::Duplicate { threads });
        }
    }
    let expected: usize = traffic.iter().map(|r| count_spans(r)).sum();
    if result.len() != expected {
        return Err(BenchError::Lost { got: result.len(), expected, threads });
    }
    Ok((took, result, enricher.shard_count()))
}

/// Enriches `traffic` on `threads` threads, thread `k` taking requests `k`, `k + threads`, ...
/// Each thread first makes its own copy of its requests, as a gateway decodes a request on the
/// thread that goes on to enrich it: memory one thread allocated and another frees is a cost of
/// the allocator's (a remote free), not of enrichment. The clock runs from when all threads hold
/// their copies until the last one is done.
fn on_threads(
    enricher: &OrderEnricher,
    traffic: &[Vec<ResourceSpans>],
    threads: usize,
    now: tokio::time::Instant,
) -> (Duration, Vec<Vec<ResourceSpans>>) {
    let threads = threads.max(1);
    let ready = std::sync::Barrier::new(threads);
    let ran: Vec<(std::time::Instant, std::time::Instant, Vec<Vec<ResourceSpans>>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|k| {
                let ready = &ready;
                scope.spawn(move || {
                    let mine: Vec<Vec<ResourceSpans>> = traffic.iter().skip(k).step_by(threads).cloned().collect();
                    ready.wait();
                    let started = std::time::Instant::now();
                    let outs: Vec<_> = mine.into_iter().map(|request| enricher.process(request, now)).collect();
                    (started, std::time::Instant::now(), outs)
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    });
    let started = ran.iter().map(|r| r.0).min().unwrap_or_else(std::time::Instant::now);
    let ended = ran.iter().map(|r| r.1).max().unwrap_or(started);
    (ended - started, ran.into_iter().flat_map(|r| r.2).collect())
}
