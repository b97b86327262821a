//! `tracegate bench-monitor`: what the order monitor costs. Memory: an engine holding
//! `--orders` orders in flight with three running rules each, measured as the growth of this
//! process's resident memory per pending timer. CPU: the load generator's shop traffic through a
//! pipeline (`order_enrich`, a memory queue drained as it fills) with the monitor off and on —
//! the monitor task, its store writes included — per span, in CPU time of this process. One
//! monitor and its embedded store run through all rounds, as in a gateway; each round is new
//! traffic.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

use super::{Fact, MonitorConfig, Monitors, OrderSlaConfig};
use crate::loadgen::TrafficGenerator;
use crate::pipeline::{ExporterQueue, Fanout, Pipeline};
use crate::processors::{Processor, ProcessorConfig};
use crate::shared::WhenFull;
use crate::telemetry::Metrics;

/// Why the benchmark could not give its figures.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("the memory run holds {in_memory} orders in memory, expected {expected}")]
    Orders { in_memory: usize, expected: usize },
    #[error("the bench's order_enrich processor cannot start")]
    Processor(#[from] crate::processors::ProcessorBuildError),
    #[error("the bench's embedded store cannot open")]
    Store(#[from] crate::store::StoreError),
    #[error("the monitors cannot start")]
    Start(#[from] super::service::MonitorStartError),
    #[error("the pipeline refused a request")]
    Admit(#[from] crate::pipeline::AdmitError),
}

pub struct MonitorBenchFigures {
    pub orders: usize,
    pub timers: usize,
    pub bytes_per_timer: f64,
    pub apply_facts_per_second: f64,
    pub spans: usize,
    pub cpu_per_span_off: Duration,
    pub cpu_per_span_on: Duration,
    /// The request path's share: facts picked out and sent, nothing applied.
    pub cpu_per_span_feed_only: Duration,
    /// The monitor task's turns, in CPU time of the threads that ran them (the least of the
    /// rounds, as for the other figures).
    pub cpu_per_span_turns: Duration,
    /// Clocks still running after the traffic (the generated orders stop mid-way).
    pub pending_after: u64,
    /// Orders the running monitor was given before the CPU rounds, and its pending timers then.
    pub in_flight: usize,
    pub in_flight_timers: u64,
    /// Per round that ran both, on against off in that round (`on / off - 1`), sorted. The
    /// least of each mode can come from different rounds: a round's own pair is less exposed
    /// to the drift of a long run.
    pub round_differences: Vec<f64>,
}

/// Resident memory of this process in bytes (Linux `/proc/self/statm`).
fn resident_bytes() -> u64 {
    let Ok(text) = std::fs::read_to_string("/proc/self/statm") else { return 0 };
    let pages: u64 = text.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// The shop's rules; the memory run uses three that all start at `new`, so that every order
/// holds three pending timers at once.
fn config(three_from_new: bool) -> OrderSlaConfig {
    let rules = if three_from_new {
        "rules:
  - {name: crm_accepts, from: new, to: accepted, within: 15m}
  - {name: production, from: new, to: manufactured, within: 48h}
  - {name: delivery, from: new, to: handed_to_courier, within: 72h}"
    } else {
        "rules:
  - {name: crm_accepts, from: new, to: accepted, within: 15m}
  - {name: production, from: accepted, to: manufactured, within: 48h}
  - {name: courier, from: manufactured, to: handed_to_courier, within: 24h}"
    };
    let yaml = format!("lifecycle: [new, accepted, in_production, manufactured, handed_to_courier]\nterminal: [cancelled]\n{rules}\n");
    serde_yaml_ng::from_str(&yaml).expect("the bench's own configuration parses")
}

/// `only`: run just these modes of the CPU figure (`off`, `feed`, `on`), e.g. to profile one;
/// the others are reported as zero.
/// `in_flight`: orders the running monitor holds before the CPU rounds (three pending rules
/// each), as a gateway would with that many orders between their statuses.
pub async fn run(
    orders: usize,
    spans: usize,
    rounds: usize,
    only: Option<&str>,
    in_flight: usize,
) -> Result<MonitorBenchFigures, BenchError> {
    let wanted = |mode: Mode| only.is_none_or(|list| list.split(',').any(|m| m.trim() == mode.name()));
    // 1. Memory per pending timer.
    let facts: Vec<Fact> = (0..orders)
        .map(|i| Fact {
            order_id: format!("A-{:08}", i).into(),
            status: Some("new".into()),
            stage: Some("created".into()),
            service: Some("shop-api".into()),
            time_ns: now_ns(),
        })
        .collect();
    let before = resident_bytes();
    let mut engine = super::Engine::new("bench", &config(true), Duration::from_secs(10), Vec::new());
    let started = Instant::now();
    let mut changes = Vec::new();
    for fact in &facts {
        engine.apply(fact, fact.time_ns, &mut changes);
        // The caller writes changes to the store and lets them go; so does the bench.
        changes.clear();
    }
    let apply_secs = started.elapsed().as_secs_f64();
    let grown = resident_bytes().saturating_sub(before);
    let (in_memory, timers) = engine.sizes();
    drop(engine);
    drop(facts);
    if in_memory != orders {
        return Err(BenchError::Orders { in_memory, expected: orders });
    }

    // 2. CPU per span, monitor off and on.
    let mut generator = TrafficGenerator::new(11, now_ns());
    let mut traffic =
        |requests: usize| -> Vec<Vec<ResourceSpans>> { (0..requests).map(|_| generator.request(100).resource_spans).collect() };
    let per_round = spans.div_ceil(100).max(1);
    through_pipeline(traffic(per_round.min(50)), Mode::Off, None).await?;
    // The monitor runs through every round, as a gateway's runs through its traffic: its engine
    // and the embedded store it writes live on between rounds (opening the store, creating its
    // file and growing the engine's tables are costs of the gateway's start, not of its spans).
    // So each round is new traffic (new orders, and orders carrying on from the round before),
    // the same for the three modes; after the on mode's traffic the monitor takes a turn at once
    // and the round ends when that turn is written.
    let dir = std::env::temp_dir().join(format!("tracegate-bench-monitor-{}-{}", std::process::id(), now_ns()));
    let store = Arc::new(crate::store::SpanStore::open(&dir, &[])?);
    let monitor_metrics = Metrics::new();
    let monitors = if wanted(Mode::On) {
        let configs = [("order_sla".to_string(), MonitorConfig::OrderSla(config(in_flight > 0)))].into_iter().collect();
        let store = super::MonitorStore::Embedded(store.clone());
        Some(
            Monitors::start(
                &configs,
                &Default::default(),
                Duration::from_secs(10),
                Duration::from_secs(3600),
                None,
                store,
                &monitor_metrics,
            )
            .await?,
        )
    } else {
        None
    };
    let mut in_flight_timers = 0;
    if let (Some(m), true) = (&monitors, in_flight > 0) {
        preload(m, in_flight).await;
        in_flight_timers = pending(&monitor_metrics);
    }
    // Rounds in alternating order (off, feed-only, on; then on, feed-only, off; ...), the
    // smallest figure of each mode kept: the process's heap and the machine's other load drift
    // during a run, and a fixed order would charge the drift to whichever mode runs last.
    let (mut off, mut feed_only, mut on, mut turns) = (Duration::ZERO, Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut total = 0;
    let mut round_differences = Vec::new();
    for round in 0..rounds.max(1) {
        let (mut round_off, mut round_on) = (None, None);
        let requests = traffic(per_round);
        total = requests.iter().map(|r| crate::pipeline::count_spans(r)).sum::<usize>().max(1);
        let mut modes = [Mode::Off, Mode::FeedOnly, Mode::On];
        if round % 2 == 1 {
            modes.reverse();
        }
        for mode in modes.into_iter().filter(|m| wanted(*m)) {
            let turns_before = monitors.as_ref().map(Monitors::turns_cpu).unwrap_or_default();
            let spent = through_pipeline(requests.clone(), mode, monitors.as_ref()).await?;
            let per_span = spent / total as u32;
            let least = |kept: Duration, new: Duration| if kept.is_zero() { new } else { kept.min(new) };
            match mode {
                Mode::Off => {
                    off = least(off, per_span);
                    round_off = Some(per_span);
                }
                Mode::FeedOnly => feed_only = least(feed_only, per_span),
                Mode::On => {
                    on = least(on, per_span);
                    round_on = Some(per_span);
                    let spent_in_turns = monitors.as_ref().map(Monitors::turns_cpu).unwrap_or_default().saturating_sub(turns_before);
                    turns = least(turns, spent_in_turns / total as u32);
                }
            }
        }
        if let (Some(off), Some(on)) = (round_off, round_on) {
            round_differences.push(on.as_secs_f64() / off.as_secs_f64().max(1e-12) - 1.0);
        }
    }
    round_differences.sort_by(f64::total_cmp);
    if let Some(m) = monitors {
        m.stop(Duration::from_secs(1)).await;
    }
    let dropped = metric_sum(&monitor_metrics, "tracegate_order_monitor_dropped_facts_total");
    if dropped > 0.0 {
        tracing::warn!(dropped, "the monitor dropped facts during the bench");
    }
    let pending_after = pending(&monitor_metrics);
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(MonitorBenchFigures {
        orders,
        timers,
        bytes_per_timer: grown as f64 / timers.max(1) as f64,
        apply_facts_per_second: orders as f64 / apply_secs.max(1e-9),
        spans: total,
        cpu_per_span_off: off,
        cpu_per_span_on: on,
        cpu_per_span_feed_only: feed_only,
        cpu_per_span_turns: turns,
        pending_after,
        in_flight,
        in_flight_timers,
        round_differences,
    })
}

/// The sum of the metric series whose lines start with `prefix`.
fn metric_sum(metrics: &Metrics, prefix: &str) -> f64 {
    metrics.render().lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

/// Clocks pending in the monitor now (`tracegate_order_monitor_pending`, all rules).
fn pending(metrics: &Metrics) -> u64 {
    metric_sum(metrics, "tracegate_order_monitor_pending") as u64
}

/// Gives the running monitor `orders` new orders (one `new` status span each, through its feed
/// as a pipeline would), in parts its queue takes, each applied and written before the next.
async fn preload(monitors: &Monitors, orders: usize) {
    use crate::loadgen::text;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Span};
    const PART: usize = 50_000;
    let feed = monitors.feed();
    let now = now_ns();
    let mut done = 0;
    while done < orders {
        let part = PART.min(orders - done);
        let spans = (done..done + part)
            .map(|i| Span {
                trace_id: (i as u128).to_be_bytes().to_vec(),
                span_id: (i as u64).to_be_bytes().to_vec(),
                name: "POST /orders".into(),
                start_time_unix_nano: now,
                end_time_unix_nano: now,
                attributes: vec![text("order.id", format!("F-{i:08}")), text("order.status", "new")],
                ..Default::default()
            })
            .collect();
        let batch = vec![ResourceSpans {
            resource: Some(Resource { attributes: vec![text("service.name", "shop-api")], ..Default::default() }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }];
        crate::pipeline::SpanObserver::observe(feed.as_ref(), &batch);
        monitors.settle().await;
        done += part;
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Off,
    /// The feed hands facts to a task that drops them: the request path's cost alone.
    FeedOnly,
    On,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::FeedOnly => "feed",
            Mode::On => "on",
        }
    }
}

/// CPU time of this process to admit `requests` in the given mode; with `Mode::On`, through
/// `monitors` until their turn after the traffic is written.
async fn through_pipeline(requests: Vec<Vec<ResourceSpans>>, mode: Mode, monitors: Option<&Monitors>) -> Result<Duration, BenchError> {
    let metrics = Metrics::new();
    let queue = ExporterQueue::new("bench", 1_000_000, WhenFull::Refuse, metrics.exporter("bench"));
    let drain = {
        let queue = queue.clone();
        tokio::spawn(async move { while queue.recv().await.is_some() {} })
    };
    let enrich = Processor::build(&ProcessorConfig::OrderEnrich(Default::default()), "bench", &metrics)?;
    let mut pipeline = Pipeline::new("bench".into(), vec![enrich], vec![queue.clone()], false);
    let mut sink = None;
    if mode == Mode::FeedOnly {
        let queue = super::FactQueue::new(super::FACT_QUEUE_FACTS);
        let statuses = ["new", "accepted", "in_production", "manufactured", "handed_to_courier", "cancelled"].map(String::from).into();
        let feed = Arc::new(super::MonitorFeed::new(queue.clone(), statuses, Default::default(), Default::default()));
        // Takes the facts at the monitor task's pace (at most one turn per MIN_TURN), so that
        // the request path is measured with the wake-ups it has with the monitor on.
        sink = Some(tokio::spawn(async move {
            let mut spare = Vec::new();
            loop {
                queue.ready().await;
                tokio::time::sleep(super::service::MIN_TURN).await;
                // As the monitor task does: the two buffers take turns.
                queue.take_into(&mut spare);
                spare.clear();
            }
        }));
        pipeline = pipeline.observed_by(feed);
    }
    let monitors = monitors.filter(|_| mode == Mode::On);
    if let Some(m) = monitors {
        pipeline = pipeline.observed_by(m.feed());
    }
    let fanout = Fanout::new(vec![Arc::new(pipeline)]);
    let cpu = crate::shared::process_cpu_time();
    for request in requests {
        // Room comes back as the drain task takes batches.
        loop {
            match fanout.admit(request.clone()).await {
                Ok(_) => break,
                Err(crate::pipeline::AdmitError::QueueFull { .. }) => tokio::task::yield_now().await,
                Err(e) => return Err(e.into()),
            }
        }
    }
    while !queue.is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    if let Some(m) = monitors {
        // Everything the traffic gave the monitor is applied and written.
        m.settle().await;
    }
    let spent = crate::shared::process_cpu_time().saturating_sub(cpu);
    if let Some(sink) = sink {
        sink.abort();
    }
    queue.close();
    drain.abort();
    Ok(spent)
}
