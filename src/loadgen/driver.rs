//! A load run: workers send requests from the pool until the deadline, paced when a rate is set.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use super::args::LoadgenArgs;
use super::client::{ExportClient, Reply};
use super::error::LoadgenError;
use super::pool::RequestPool;
use super::report::{LoadReport, RunFacts, Tally};

/// Runs the load described by `args` and reports what the gateway acknowledged.
///
/// `--concurrency` workers each keep one request in flight. Without `--rate` a worker sends its
/// next request as soon as the previous one is answered. With `--rate` a pacer issues one ticket
/// per request on a fixed schedule and a worker sends only with a ticket: tickets that find every
/// worker busy wait, and are sent as soon as a worker is free, so the offered load keeps its
/// average until the workers cannot keep up; the report then says the target was not reached.
pub async fn run(args: LoadgenArgs) -> Result<LoadReport, LoadgenError> {
    let endpoint = args.endpoint_or_default();
    let spans_per_request = args.spans_per_request;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    if args.unique_spans && args.rate == 0 {
        return Err(LoadgenError::UniqueSpansWithoutRate);
    }
    // A tenth more than the run needs: a paced run may catch up after a stall.
    let unique = args.unique_spans.then(|| (args.rate as f64 * args.duration.as_secs_f64() * 1.1).ceil() as u64);
    let pool = Arc::new(match args.placed_orders {
        Some(orders) => RequestPool::placed_orders(orders, spans_per_request as usize, now.as_nanos() as u64, now.as_nanos() as u64),
        None => RequestPool::build(spans_per_request as usize, now.as_nanos() as u64, now.as_nanos() as u64, args.orderless_share, unique),
    });
    tracing::debug!(requests = pool.len(), bytes = pool.encoded_bytes(), "request pool built");
    let clients = ExportClient::connect_many(args.protocol, &endpoint, &args.headers, args.concurrency as usize).await?;

    let start = Instant::now();
    let deadline = start + args.duration;
    let requests_per_sec = args.rate as f64 / f64::from(spans_per_request);
    let tickets = (args.rate > 0).then(|| Arc::new(Semaphore::new(0)));
    let pacer = tickets.clone().map(|tickets| tokio::spawn(pace(tickets, requests_per_sec, start, deadline)));

    let mut workers = JoinSet::new();
    for client in clients {
        workers.spawn(work(Worker {
            client,
            pool: Arc::clone(&pool),
            tickets: tickets.clone(),
            deadline,
            request_timeout: args.request_timeout,
            backoff_on_refusal: args.backoff_on_refusal,
            resend_refused: args.placed_orders.is_some(),
            start,
            timeline: args.latency_log.is_some(),
        }));
    }
    let mut tally = Tally::default();
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok(worker_tally) => tally.merge(worker_tally),
            // A worker only panics on a bug; surface it as such.
            Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
            Err(error) => unreachable!("load workers are never cancelled: {error}"),
        }
    }
    let elapsed = start.elapsed();
    if let Some(pacer) = pacer {
        pacer.abort();
    }
    if let (Some(path), Some(timeline)) = (&args.latency_log, tally.timeline.as_mut()) {
        write_latency_log(path, timeline).map_err(|error| LoadgenError::LatencyLog(path.clone(), error))?;
    }

    Ok(tally.into_report(RunFacts {
        protocol: args.protocol,
        endpoint,
        spans_per_request,
        concurrency: args.concurrency,
        target_spans_per_sec: args.rate,
        expected_requests: (args.rate > 0).then(|| Schedule::new(requests_per_sec, args.duration).total()),
        elapsed,
        mix: pool.mix(),
    }))
}

struct Worker {
    client: ExportClient,
    pool: Arc<RequestPool>,
    /// One permit per request to send; `None` = as fast as possible.
    tickets: Option<Arc<Semaphore>>,
    deadline: Instant,
    request_timeout: Duration,
    backoff_on_refusal: Duration,
    /// Send a refused request again (placed orders) instead of going on to the next.
    resend_refused: bool,
    start: Instant,
    /// Keep when each acknowledged request started (`--latency-log`).
    timeline: bool,
}

async fn work(mut worker: Worker) -> Tally {
    let mut tally = Tally::default();
    tally.timeline = worker.timeline.then(Vec::new);
    let stop = tokio::time::sleep_until(worker.deadline);
    tokio::pin!(stop);
    loop {
        match &worker.tickets {
            Some(tickets) => tokio::select! {
                biased;
                // The run is over; tickets still waiting were never sent.
                () = &mut stop => break,
                // Time to send the next request.
                ticket = tickets.acquire() => match ticket {
                    Ok(ticket) => ticket.forget(),
                    Err(_closed) => break,
                },
            },
            None if Instant::now() >= worker.deadline => break,
            None => {}
        }
        // Placed orders: each sent once.
        let Some((body, spans)) = worker.pool.next_body() else { break };
        loop {
            let started = Instant::now();
            let reply = match tokio::time::timeout(worker.request_timeout, worker.client.export(body.clone())).await {
                Ok(reply) => reply,
                Err(_elapsed) => Reply::Failed(format!("no reply within {:?}", worker.request_timeout)),
            };
            let refused = matches!(reply, Reply::Refused(_));
            let latency = started.elapsed();
            if let (Some(timeline), Reply::Accepted { .. }) = (tally.timeline.as_mut(), &reply) {
                let at = started.duration_since(worker.start).as_micros() as u64;
                timeline.push((at, u32::try_from(latency.as_micros()).unwrap_or(u32::MAX)));
            }
            tally.record(spans, latency, reply);
            if refused && !worker.backoff_on_refusal.is_zero() {
                // Back off as an SDK would, but never past the end of the run.
                tokio::select! {
                    () = &mut stop => return tally,
                    () = tokio::time::sleep(worker.backoff_on_refusal) => {}
                }
            }
            // Placed orders are all to arrive: a refused request is sent again, as an SDK
            // retries one; the traffic goes on with its next request.
            if !(refused && worker.resend_refused) || Instant::now() >= worker.deadline {
                break;
            }
        }
    }
    tally
}

/// `--latency-log`: one line per acknowledged request, `SENT_MS LATENCY_MS`, by start.
fn write_latency_log(path: &std::path::Path, timeline: &mut [(u64, u32)]) -> std::io::Result<()> {
    use std::io::Write;
    timeline.sort_unstable();
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for (at, latency) in timeline.iter() {
        writeln!(out, "{:.3} {:.3}", *at as f64 / 1e3, *latency as f64 / 1e3)?;
    }
    out.flush()
}

/// Issues tickets so that `requests_per_sec` requests are due on average from `start` on.
async fn pace(tickets: Arc<Semaphore>, requests_per_sec: f64, start: Instant, deadline: Instant) {
    let schedule = Schedule::new(requests_per_sec, deadline.duration_since(start));
    let mut timer = tokio::time::interval_at(start, schedule.wake_period());
    // A late wake-up is caught up by counting what is due, not by a burst of ticks.
    timer.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut issued: u64 = 0;
    loop {
        let now = timer.tick().await;
        let due = schedule.due_at(now.duration_since(start));
        if due > issued {
            tickets.add_permits((due - issued) as usize);
            issued = due;
        }
        if issued >= schedule.total() || now >= deadline {
            break;
        }
    }
}

/// Request `k` of a paced run is scheduled at `k / requests_per_sec`, for every such time
/// before the end of the run.
///
/// The pacer counts what is due from the elapsed time rather than sending one ticket per
/// timer tick, because the timer's granularity is a millisecond and the interval between
/// requests can be shorter.
#[derive(Debug, Clone, Copy)]
struct Schedule {
    requests_per_sec: f64,
    total: u64,
}

impl Schedule {
    fn new(requests_per_sec: f64, duration: Duration) -> Self {
        let total = (duration.as_secs_f64() * requests_per_sec).ceil() as u64;
        Schedule { requests_per_sec, total }
    }

    /// Requests scheduled at or before `elapsed`.
    fn due_at(&self, elapsed: Duration) -> u64 {
        ((elapsed.as_secs_f64() * self.requests_per_sec) as u64 + 1).min(self.total)
    }

    fn total(&self) -> u64 {
        self.total
    }

    fn wake_period(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.requests_per_sec).max(Duration::from_millis(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_latency_log_has_a_line_per_acked_request_by_start() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: LoadgenArgs,
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counts = Arc::new(super::super::sink::SinkCounts::default());
        let sink = tokio::spawn(super::super::sink::serve(listener, Arc::clone(&counts)));
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("latency.txt");
        let endpoint = format!("http://{addr}");
        let cli = Cli::parse_from([
            "loadgen",
            "--endpoint",
            &endpoint,
            "--rate",
            "2000",
            "--duration",
            "500ms",
            "--spans-per-request",
            "10",
            "--concurrency",
            "2",
            "--latency-log",
            log.to_str().unwrap(),
        ]);
        let report = run(cli.args).await.unwrap();
        let lines: Vec<(f64, f64)> = std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(|l| {
                let (at, latency) = l.split_once(' ').unwrap();
                (at.parse().unwrap(), latency.parse().unwrap())
            })
            .collect();
        assert_eq!(lines.len() as u64 * 10, report.acked_spans, "one line per acked request");
        assert!(lines.len() >= 90, "about 100 requests in half a second at 200 a second: {}", lines.len());
        assert!(lines.windows(2).all(|w| w[0].0 <= w[1].0), "sorted by start");
        assert!(lines.iter().all(|&(at, latency)| (0.0..1000.0).contains(&at) && latency > 0.0 && latency < 10_000.0));
        let p99 = report.latency_p99_ms.unwrap();
        let mut latencies: Vec<f64> = lines.iter().map(|l| l.1).collect();
        latencies.sort_by(f64::total_cmp);
        assert!(latencies.iter().any(|&l| (l - p99).abs() < 0.01), "the report's p99 {p99} ms is one of the logged latencies");
        sink.abort();
    }

    #[test]
    fn schedule_spreads_requests_evenly_over_the_run() {
        // 100k spans/s in requests of 100 spans: one request per millisecond.
        let schedule = Schedule::new(1000.0, Duration::from_secs(20));
        assert_eq!(schedule.total(), 20_000);
        assert_eq!(schedule.due_at(Duration::ZERO), 1, "the first request goes out at once");
        assert_eq!(schedule.due_at(Duration::from_micros(999)), 1);
        assert_eq!(schedule.due_at(Duration::from_millis(1)), 2);
        assert_eq!(schedule.due_at(Duration::from_secs(10)), 10_001);
        assert_eq!(schedule.due_at(Duration::from_secs(25)), 20_000, "nothing after the end");
        assert_eq!(schedule.wake_period(), Duration::from_millis(1));
    }

    #[test]
    fn schedule_faster_than_the_timer_sends_several_per_wake_up() {
        let schedule = Schedule::new(6000.0, Duration::from_secs(2));
        assert_eq!(schedule.wake_period(), Duration::from_millis(1));
        let per_wake_up = schedule.due_at(Duration::from_millis(501)) - schedule.due_at(Duration::from_millis(500));
        assert_eq!(per_wake_up, 6);
        assert_eq!(schedule.total(), 12_000);
    }

    #[test]
    fn schedule_slower_than_the_timer_wakes_once_per_request() {
        let schedule = Schedule::new(10.0, Duration::from_secs(3));
        assert_eq!(schedule.wake_period(), Duration::from_millis(100));
        assert_eq!(schedule.total(), 30);
        assert_eq!(schedule.due_at(Duration::from_millis(2_950)), 30);
    }
}
