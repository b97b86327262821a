//! `Gateway`: builds the running system from a `Config` and takes it down in stages.
//!
//! Start-up binds every listener before anything is spawned, so a taken port fails start-up and
//! tests can use port 0. Shutdown stops the receivers, lets the queues drain until the deadline,
//! then cancels what is left and reports exactly how many spans were not delivered.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiState};
use crate::audit::AuditLog;
use crate::auth::{AccessControl, Pseudonymizer};
use crate::config::{ApiConfig, Config, ExporterConfig, ProcessorConfig, ReceiverConfig};
use crate::exporters::{
    run_retention, DebugExporter, ElasticsearchExporter, EmbeddedExporter, Exporter, ExporterRunner, OtlpExporter, QueueConfig, RetryConfig,
};
use crate::monitors::{MonitorStore, Monitors};
use crate::pipeline::{DiskLog, ExporterQueue, Fanout, MemoryLimiter, Payload, Pipeline};

mod reload;
use crate::processors::{OrderEnrichConfig, Processor};
use crate::query::{ElasticsearchQuery, QueryBackend};
use crate::receivers::{
    otlp_http_router, serve_grpc, serve_http, GrpcServerConfig, HttpServerConfig, IngestLimits, RabbitMqMetricFamilies, RabbitMqReceiver,
    RabbitMqReceiverConfig, ReceiverAuth, SenderLimiter,
};
use crate::store::{SpanStore, StoreError};
use crate::telemetry::{Metrics, Readiness};
pub use reload::{ConfigSource, ReloadError, ReloadSummary, Reloader, SharedQueues};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {address} ({what})")]
    Bind {
        what: String,
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("exporter {id:?} cannot start: {message}")]
    Exporter { id: String, message: String },
    #[error("processor {id:?} cannot start")]
    Processor {
        id: String,
        #[source]
        source: crate::processors::ProcessorBuildError,
    },
    #[error("the hold journal of pipeline {pipeline:?} cannot be opened")]
    HoldJournal {
        pipeline: String,
        #[source]
        source: crate::pipeline::DiskError,
    },
    #[error("authentication cannot start")]
    Auth(#[source] crate::auth::AuthSetupError),
    #[error("{what} would listen on {address} beyond loopback without authentication; configure auth.issuers (and auth: jwt on receivers) or set auth.allow_unauthenticated_non_loopback: true (the built-in configuration reads it from TRACEGATE_ALLOW_UNAUTHENTICATED_NON_LOOPBACK=true)")]
    Unprotected { what: String, address: String },
    #[error("the audit log cannot be opened")]
    Audit(#[source] crate::audit::AuditError),
    #[error("the order monitors cannot start")]
    Monitors(#[source] crate::monitors::MonitorStartError),
    #[error("service.memory_limiter: {0}")]
    MemoryLimiter(crate::pipeline::MemoryLimitError),
    #[error("api.jaeger_ui cannot start")]
    JaegerProxy(#[source] crate::api::ProxySetupError),
    #[error("exporter {id:?} cannot open its store")]
    Store {
        id: String,
        #[source]
        source: StoreError,
    },
}

/// The addresses the gateway actually listens on (useful with port 0).
#[derive(Debug, Clone, Default)]
pub struct Addresses {
    pub grpc: BTreeMap<String, SocketAddr>,
    pub http: BTreeMap<String, SocketAddr>,
    pub api: Option<SocketAddr>,
}

/// How shutdown went, and what the whole run did not deliver. Every figure is summed over
/// exporters (a span bound for two exporters that both missed it counts twice).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Spans left undelivered at the shutdown deadline in memory queues (or released into a
    /// queue that had already closed).
    pub undelivered_spans: usize,
    /// Spans not delivered that stay in disk-backed queues for the next start.
    pub kept_on_disk_spans: usize,
    /// Dropped during the run: a best-effort (`when_full: drop`) queue was full, or spans that
    /// `order_enrich` released found no room (release backlog full).
    pub dropped_spans: usize,
    /// Given up on during the run: permanent errors, retry budget exhausted, spans the peer
    /// refused (what bisection isolated).
    pub failed_spans: usize,
    /// Reported rejected by the peer in `partial_success` replies.
    pub rejected_by_peer_spans: usize,
    pub drained_in_time: bool,
}

impl ShutdownReport {
    /// Accepted spans that were not delivered and never will be (disk-kept ones will be).
    pub fn lost_spans(&self) -> usize {
        self.undelivered_spans + self.dropped_spans + self.failed_spans + self.rejected_by_peer_spans
    }
}

pub struct Gateway {
    pub addresses: Addresses,
    pub metrics: Arc<Metrics>,
    stop_receivers: CancellationToken,
    stop_consumers: CancellationToken,
    stop_api: CancellationToken,
    receivers: Vec<JoinHandle<()>>,
    /// Each with whether its queue is on disk (what it did not send is kept, not lost).
    consumers: Vec<(JoinHandle<usize>, bool)>,
    background: Vec<JoinHandle<()>>,
    api: Option<JoinHandle<()>>,
    queues: Vec<Arc<ExporterQueue>>,
    pipelines: Vec<Arc<Pipeline>>,
    /// What `/readyz` answers; exporters and stores report into it.
    readiness: Arc<Readiness>,
    shutdown_timeout: Duration,
    /// Closed last, with a shutdown checkpoint.
    audit: Option<Arc<AuditLog>>,
    audit_tasks: Vec<JoinHandle<()>>,
    /// What reloads swap (exporters, pipelines, fanouts); shutdown takes the current set.
    live: Arc<tokio::sync::Mutex<reload::Live>>,
    reloader: Reloader,
    /// The order monitors, stopped after the processors let go of what they held.
    monitors: Option<Monitors>,
}

struct Built {
    queue: Arc<ExporterQueue>,
    runner: Arc<ExporterRunner>,
    consumers: usize,
    store: Option<(Arc<SpanStore>, Duration)>,
    /// Batches a disk-backed queue found at start, to send before anything new waits long.
    recovered: Vec<crate::pipeline::Recovered>,
}

/// Connections the kernel completes and queues for a listener before it accepts them: a burst
/// of connections waits there instead of half-finished handshakes that no server sees (the
/// default is 128). The kernel caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: u32 = 1024;

async fn bind(endpoint: &str, what: String) -> Result<TcpListener, StartError> {
    let fail = |source| StartError::Bind { what: what.clone(), address: endpoint.into(), source };
    // Configured endpoints are IP:port (checked when the configuration is read).
    let Ok(address) = endpoint.parse::<SocketAddr>() else { return TcpListener::bind(endpoint).await.map_err(fail) };
    let socket = if address.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }.map_err(fail)?;
    // As std's bind does: a restarted gateway may listen again while old connections linger.
    socket.set_reuseaddr(true).map_err(fail)?;
    socket.bind(address).map_err(fail)?;
    socket.listen(LISTEN_BACKLOG).map_err(fail)
}

/// The correlation keys of every `order_enrich` processor (their defaults when there is none), so
/// that the store can join constructor files to orders when a timeline is read.
fn correlation_keys(config: &Config) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for p in config.processors.values() {
        if let ProcessorConfig::OrderEnrich(c) = p {
            for k in &c.correlation_keys {
                if !keys.contains(k) {
                    keys.push(k.clone());
                }
            }
        }
    }
    if keys.is_empty() {
        keys = OrderEnrichConfig::default().correlation_keys;
    }
    keys
}

fn build_exporter(
    id: &str,
    config: &ExporterConfig,
    metrics: &Metrics,
    readiness: &Readiness,
    correlation_keys: &[String],
    reuse_log: Option<DiskLog>,
) -> Result<Built, StartError> {
    let fail = |message: String| StartError::Exporter { id: id.into(), message };
    let no_retry_needed = RetryConfig { enabled: false, ..Default::default() };
    let (exporter, queue_cfg, batch, retry, timeout, store): (Exporter, &QueueConfig, _, _, _, _) = match config {
        ExporterConfig::Otlp(c) => (
            Exporter::Otlp(OtlpExporter::new(c).map_err(|e| fail(crate::shared::error_chain(&e)))?),
            &c.sending_queue,
            c.batch.clone(),
            c.retry_on_failure.clone(),
            c.timeout,
            None,
        ),
        ExporterConfig::Embedded(c) => {
            let store = Arc::new(SpanStore::open(&c.path, correlation_keys).map_err(|source| StartError::Store { id: id.into(), source })?);
            store.report_to(readiness.store(store.file()));
            (
                Exporter::Embedded(EmbeddedExporter::new(store.clone())),
                &c.sending_queue,
                c.batch.clone(),
                c.retry_on_failure.clone(),
                Duration::from_secs(30),
                Some((store, c.retention)),
            )
        }
        ExporterConfig::Elasticsearch(c) => {
            let exporter = ElasticsearchExporter::new(id, c, correlation_keys, metrics.elasticsearch(id))
                .map_err(|e| fail(crate::shared::error_chain(&e)))?;
            // Each bulk request has its own timeout; no runner timeout around a whole call.
            let timeout = exporter.attempt_timeout();
            (Exporter::Elasticsearch(exporter), &c.sending_queue, c.batch.clone(), c.retry_on_failure.clone(), timeout, None)
        }
        ExporterConfig::Debug(c) => (
            Exporter::Debug(DebugExporter { id: id.into(), verbosity: c.verbosity }),
            &c.sending_queue,
            c.batch.clone(),
            no_retry_needed,
            Duration::from_secs(5),
            None,
        ),
    };
    let exporter_metrics = metrics.exporter(id);
    let (log, recovered) = match (&queue_cfg.storage, reuse_log) {
        // A reload that reconfigures the exporter keeps writing the log it had.
        (Some(_), Some(log)) => (Some(log), Vec::new()),
        (Some(dir), None) => {
            let (log, recovered, report) = DiskLog::open(dir, &format!("queue-{id}"), queue_cfg.sync, queue_cfg.segment_size.0)
                .map_err(|e| fail(format!("sending_queue.storage: {e}")))?;
            exporter_metrics.storage_torn.inc_by(report.torn as u64);
            exporter_metrics.queue_bytes.set(log.live_bytes() as i64);
            if report.records > 0 || report.torn > 0 {
                tracing::info!(exporter = %id, dir = %dir.display(), batches = report.records, bytes = report.bytes, torn = report.torn, "disk queue recovered; sending what was not delivered before the last stop");
            }
            (Some(log), recovered)
        }
        (None, _) => (None, Vec::new()),
    };
    let mut queue = ExporterQueue::with_log(id, queue_cfg.queue_size, queue_cfg.when_full, log, exporter_metrics);
    if let Some(max_bytes) = queue_cfg.max_bytes {
        queue = queue.bounded_in_bytes(max_bytes.as_usize());
    }
    // OTLP requests stay under the usual 4 MiB gRPC receive limit unless configured otherwise.
    let max_bytes = match (&exporter, batch.max_bytes) {
        (_, Some(limit)) => Some(limit.as_usize()),
        (Exporter::Otlp(_), None) => Some(4 << 20),
        _ => None,
    };
    let runner = Arc::new(ExporterRunner {
        id: id.into(),
        exporter: Arc::new(exporter),
        queue: queue.clone(),
        batch,
        retry,
        timeout,
        max_bytes,
        destination: config.destination(),
        dead_letter: match config {
            ExporterConfig::Otlp(c) => c.dead_letter_path.clone(),
            _ => None,
        },
        health: readiness.exporter(id, queue_cfg.when_full != crate::shared::WhenFull::Drop),
    });
    Ok(Built { queue, runner, consumers: queue_cfg.num_consumers, store, recovered })
}

impl Gateway {
    /// Starts from a configuration built in memory (it cannot be reloaded).
    pub async fn start(config: Config) -> Result<Gateway, StartError> {
        Gateway::start_from(config, ConfigSource::Memory).await
    }

    /// Starts; `source` is where a reload reads the configuration again.
    pub async fn start_from(config: Config, source: ConfigSource) -> Result<Gateway, StartError> {
        let metrics = Metrics::new();
        // 0. Who may call: refuse to listen beyond loopback unprotected unless acknowledged.
        check_exposure(&config)?;
        let audit = open_audit(&config, &metrics)?;
        let audit_tasks = audit.iter().map(summarize_failed_auth).collect();
        let callers = Callers::build(&config, audit.clone())?;
        // 1. Every listener, before anything runs.
        let Listeners { receivers: receiver_listeners, api: api_listener, addresses, default_max_connections } =
            bind_listeners(&config).await?;
        // 2. Exporters, their queues and stores, reporting to `/readyz`.
        let readiness = Readiness::new(&config.service.readiness);
        let mut built = build_exporters(&config, &metrics, &readiness)?;
        let query_backend = query_backend(&config, &built)?;
        // 3. Consumers and background tasks; the order monitors, fed by every pipeline.
        let stop_consumers = CancellationToken::new();
        let mut background = Vec::new();
        let live_exporters = start_consumers(&config, &mut built, &stop_consumers, &mut background);
        let queues: Vec<Arc<ExporterQueue>> = built.values().map(|b| b.queue.clone()).collect();
        let monitors = start_monitors(&config, &built, &metrics).await?;
        // 4. Pipelines, what lets go of the spans they hold, and the process's memory limiter.
        let pipelines = build_pipelines(&config, &built, &metrics, monitors.as_ref())?;
        let releases = start_releases(&pipelines, &mut background);
        let memory = start_memory_limiter(&config, &metrics, &pipelines, &mut background)?;
        // 5. Receivers, each feeding its pipelines through one fanout.
        let fanouts = build_fanouts(&config, &receiver_listeners, &pipelines);
        let stop_receivers = CancellationToken::new();
        let wiring = ReceiverWiring {
            config: &config,
            metrics: &metrics,
            readiness: &readiness,
            callers: &callers,
            memory: &memory,
            fanouts: &fanouts,
        };
        let receivers = wiring.start(receiver_listeners, default_max_connections, &stop_receivers);
        // 6. What a reload swaps.
        let handles = Handles {
            metrics: metrics.clone(),
            readiness: readiness.clone(),
            queues: Arc::new(std::sync::RwLock::new(queues.clone())),
            config_view: Arc::new(std::sync::RwLock::new(config.redacted.clone())),
            stop_consumers: stop_consumers.clone(),
        };
        let live_pipelines = live_pipelines(&config, &pipelines, &releases);
        let live = live_state(&config, live_exporters, live_pipelines, fanouts, memory, monitors.as_ref(), &handles);
        let reloadable = !matches!(source, ConfigSource::Memory);
        let reloader = Reloader { live: live.clone(), source, metrics: metrics.clone() };
        // 7. The API.
        let reload = reloadable.then(|| Arc::new(reloader.clone()) as Arc<dyn api::Reload>);
        let state = api_state(&config, callers, query_backend, audit.clone(), &handles, reload)?;
        let stop_api = CancellationToken::new();
        let api = serve_api(api_listener, state, &config.api, default_max_connections, &stop_api);

        log_started(&addresses, &built);
        Ok(Gateway {
            addresses,
            metrics,
            stop_receivers,
            stop_consumers,
            stop_api,
            receivers,
            consumers: Vec::new(),
            background,
            api: Some(api),
            queues,
            pipelines: pipelines.into_values().collect(),
            live,
            reloader,
            readiness,
            shutdown_timeout: config.service.shutdown_timeout,
            audit,
            audit_tasks,
            monitors,
        })
    }
    /// Reloads the configuration (SIGHUP, `POST /api/v1/admin/reload`).
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
    }

    /// The first OTLP/gRPC address, for tests and tools.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.addresses.grpc.values().next().copied()
    }

    /// The first OTLP/HTTP address.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.addresses.http.values().next().copied()
    }

    pub fn api_addr(&self) -> Option<SocketAddr> {
        self.addresses.api
    }

    /// A handle on the spans still queued for export, readable while the gateway shuts down.
    pub fn backlog(&self) -> Backlog {
        Backlog { queues: self.queues.clone() }
    }

    /// Stops receivers, drains the queues within the configured deadline, stops exporters.
    pub async fn shutdown(self) -> ShutdownReport {
        let timeout = self.shutdown_timeout;
        self.shutdown_within(timeout).await
    }

    pub async fn shutdown_within(mut self, timeout: Duration) -> ShutdownReport {
        let deadline = tokio::time::Instant::now() + timeout;
        // The exporters and pipelines running now, after any reloads (a reload in progress
        // finishes first: it holds the lock).
        {
            let (consumers, queues, pipelines, tasks) = self.live.lock().await.take_for_shutdown();
            self.consumers = consumers;
            self.queues = queues;
            self.pipelines = pipelines;
            self.background.extend(tasks);
        }
        self.readiness.stopping();

        // Stage 1: no new data. Servers finish the requests in flight.
        self.stop_receivers.cancel();
        for handle in self.receivers.drain(..) {
            let mut handle = handle;
            if tokio::time::timeout_at(deadline, &mut handle).await.is_err() {
                handle.abort();
            }
        }

        // Spans that processors still hold go out untagged, before the queues close.
        for task in self.background.drain(..) {
            task.abort();
        }
        for pipeline in &self.pipelines {
            let patience = deadline.saturating_duration_since(tokio::time::Instant::now());
            pipeline.drain_backlog(patience).await;
            let held = pipeline.released_all(tokio::time::Instant::now());
            let patience = deadline.saturating_duration_since(tokio::time::Instant::now());
            let dropped = pipeline.admit_released(held, patience).await;
            // The correlation hold forgets what it let go of if all of it is in the queues;
            // otherwise that goes again at the next start.
            pipeline.confirm_released(dropped == 0 && pipeline.backlog_spans() == 0 && !pipeline.release_interrupted());
            if let Some(journal) = pipeline.hold_journal() {
                // Everything held is in the queues now, unless some found no room: then the
                // journal keeps it for the next start.
                if dropped == 0 && pipeline.backlog_spans() == 0 && !pipeline.release_interrupted() {
                    journal.settle_all();
                }
                journal.log().flush().await;
                journal.log().close();
            }
        }
        // Every span has been seen: the monitors write their last facts and stop.
        if let Some(monitors) = self.monitors.take() {
            monitors.stop(deadline.saturating_duration_since(tokio::time::Instant::now()).min(Duration::from_secs(5))).await;
        }

        // Stage 2: let the exporters drain their queues until the deadline, saying how it goes.
        for q in &self.queues {
            q.close();
        }
        let progress = {
            let backlog = self.backlog();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(DRAIN_REPORT_EVERY);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let left = backlog.spans();
                    let per_exporter: Vec<String> =
                        backlog.queues.iter().filter(|q| !q.is_empty()).map(|q| format!("{}: {}", q.exporter, q.len())).collect();
                    let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
                    tracing::info!(spans_left = left, exporters = %per_exporter.join(", "), gives_up_in = ?remaining, "draining exporter queues before exit; a second signal exits at once");
                }
            })
        };
        let mut drained_in_time = true;
        let mut undelivered = 0;
        let mut kept_on_disk = 0;
        let mut pending = Vec::new();
        for (mut handle, durable) in self.consumers.drain(..) {
            match tokio::time::timeout_at(deadline, &mut handle).await {
                Ok(Ok(n)) if durable => kept_on_disk += n,
                Ok(Ok(n)) => undelivered += n,
                Ok(Err(_)) => {}
                Err(_) => {
                    drained_in_time = false;
                    pending.push((handle, durable));
                }
            }
        }
        progress.abort();
        // Stage 3: the deadline passed; stop sending and count what is left.
        self.stop_consumers.cancel();
        for (handle, durable) in pending {
            let n = handle.await.unwrap_or(0);
            if durable {
                kept_on_disk += n;
            } else {
                undelivered += n;
            }
        }
        for q in &self.queues {
            let left: usize = q.drain_now().iter().map(|b| b.payload.span_count()).sum();
            if let Some(log) = q.log() {
                // Written batches stay for the next start; acknowledgements reach the disk.
                kept_on_disk += left;
                log.flush().await;
                log.close();
            } else if left > 0 {
                q.metrics.dropped_shutdown.inc_by(left as u64);
                undelivered += left;
            }
        }
        self.stop_api.cancel();
        if let Some(api) = self.api.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), api).await;
        }
        for task in self.audit_tasks.drain(..) {
            task.abort();
        }
        if let Some(audit) = self.audit.take() {
            // The last record of a clean run: a verifier then knows the log was not cut short.
            // A file that takes no writes (a hung mount) does not hold the stop past the deadline
            // (at least 2s); the log then ends without its checkpoint, as after a crash.
            let log = audit.clone();
            let patience = deadline.saturating_duration_since(tokio::time::Instant::now()).max(Duration::from_secs(2));
            match tokio::time::timeout(patience, tokio::task::spawn_blocking(move || audit.close())).await {
                Ok(closed) => {
                    if let Err(error) = closed.unwrap_or(Ok(())) {
                        tracing::error!(error = %crate::shared::error_chain(&error), "cannot write the audit log's shutdown checkpoint");
                    }
                }
                Err(_) => {
                    tracing::error!(waited = ?patience, "the audit file took no writes until the shutdown deadline; stopping without the shutdown checkpoint")
                }
            }
            // The Elasticsearch copy sends what it holds (the checkpoint too), then stops; what
            // it cannot send is counted and logged (it is in the file).
            if let Some(mirror) = log.mirror() {
                mirror.stop(deadline.saturating_duration_since(tokio::time::Instant::now()).max(Duration::from_secs(2))).await;
            }
        }
        if kept_on_disk > 0 {
            tracing::info!(spans = kept_on_disk, "undelivered spans stay in the disk queues and are sent after the next start");
        }
        // The counters see every loss of the run, wherever it happened (they include what was
        // counted above as left at the deadline).
        let losses = self.metrics.exporter_losses();
        let report = ShutdownReport {
            undelivered_spans: undelivered.max(losses.dropped_shutdown as usize),
            kept_on_disk_spans: kept_on_disk,
            dropped_spans: losses.dropped_full as usize,
            failed_spans: losses.failed as usize,
            rejected_by_peer_spans: losses.rejected_by_peer as usize,
            drained_in_time,
        };
        log_report(&report);
        report
    }
}

/// The shutdown's last line: "every accepted span was delivered" only when nothing was lost or
/// kept; otherwise each figure, which together are every accepted span not delivered.
fn log_report(r: &ShutdownReport) {
    let lost = r.lost_spans();
    if lost == 0 && r.kept_on_disk_spans == 0 {
        tracing::info!("shutdown complete; every accepted span was delivered");
    } else if lost == 0 {
        tracing::info!(
            kept_on_disk = r.kept_on_disk_spans,
            "shutdown complete; no accepted span was lost, {} wait in the disk queues",
            r.kept_on_disk_spans
        );
    } else {
        tracing::warn!(
            lost,
            left_at_deadline = r.undelivered_spans,
            dropped_queue_full = r.dropped_spans,
            failed = r.failed_spans,
            rejected_by_peer = r.rejected_by_peer_spans,
            kept_on_disk = r.kept_on_disk_spans,
            "shutdown complete; {lost} spans could not be delivered: {} left at the shutdown deadline, {} dropped during the run (queue or release backlog full), {} failed (permanent error, retries exhausted or refused by the peer), {} rejected by the peer",
            r.undelivered_spans,
            r.dropped_spans,
            r.failed_spans,
            r.rejected_by_peer_spans
        );
    }
}

// The steps of start-up, in the order `Gateway::start_from` takes them.

/// Opens the audit log, mirrored to Elasticsearch when configured.
fn open_audit(config: &Config, metrics: &Metrics) -> Result<Option<Arc<AuditLog>>, StartError> {
    let Some(path) = &config.audit.path else { return Ok(None) };
    let mut mirror = None;
    if let Some(m) = &config.audit.elasticsearch {
        if let Some(ExporterConfig::Elasticsearch(es)) = config.exporters.get(&m.exporter) {
            let client = crate::exporters::EsClient::new(es)
                .map_err(|e| StartError::Exporter { id: m.exporter.clone(), message: crate::shared::error_chain(&e) })?;
            mirror = Some(crate::audit::AuditMirror::start(client, m.index.clone(), &m.retry_on_failure));
        }
    }
    let log = AuditLog::open_mirrored(&config.audit, path, mirror).map_err(StartError::Audit)?;
    let failures = prometheus_client::metrics::counter::Counter::default();
    metrics.register("tracegate_audit_write_failures", "Audit records that could not be written", failures.clone());
    log.count_failures(failures);
    Ok(Some(Arc::new(log)))
}

/// Writes summaries of suppressed failed authentications, once their minute is over.
fn summarize_failed_auth(audit: &Arc<AuditLog>) -> JoinHandle<()> {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let audit = audit.clone();
    tokio::spawn(async move {
        loop {
            tick.tick().await;
            let audit = audit.clone();
            let _ = tokio::task::spawn_blocking(move || audit.flush_failed_auth(false)).await;
        }
    })
}

/// Who may call and how often: access control, pseudonyms, the Jaeger UI proxy and the
/// per-sender rate limiters of the receivers.
struct Callers {
    access: Arc<AccessControl>,
    pseudonyms: Arc<Pseudonymizer>,
    jaeger_proxy: Option<Arc<api::JaegerProxy>>,
    /// One limiter per receiver, shared by its gRPC and HTTP listeners.
    limiters: BTreeMap<String, Arc<SenderLimiter>>,
}

impl Callers {
    /// Built before anything is spawned: a bad CA file fails start-up cleanly.
    fn build(config: &Config, audit: Option<Arc<AuditLog>>) -> Result<Callers, StartError> {
        let access = Arc::new(AccessControl::new(&config.auth, audit).map_err(StartError::Auth)?);
        if access.enabled() && access.audit().is_none() {
            tracing::warn!(
                "no audit log is configured (audit.path): admins cannot unmask personal data, and nothing records who read what"
            );
        }
        if !access.enabled() {
            tracing::warn!("authentication is not configured (no auth.issuers): every caller is anonymous and may send and read spans");
        } else if config.auth.personal_data.pseudonym_key.is_none() {
            tracing::warn!("auth.personal_data.pseudonym_key is not set: pseudonyms change when tracegate restarts");
        }
        let pseudonyms = Arc::new(Pseudonymizer::new(&config.auth.personal_data));
        let jaeger_proxy = match &config.api.jaeger_ui {
            Some(c) => Some(Arc::new(api::JaegerProxy::new(c, access.clone(), pseudonyms.clone()).map_err(StartError::JaegerProxy)?)),
            None => None,
        };
        let limiters = config
            .receivers
            .iter()
            .filter_map(|(id, r)| match r {
                ReceiverConfig::Otlp(c) => c.rate_limit.as_ref().map(|l| (id.clone(), Arc::new(SenderLimiter::new(l)))),
                ReceiverConfig::RabbitMq(_) => None,
            })
            .collect();
        Ok(Callers { access, pseudonyms, jaeger_proxy, limiters })
    }

    /// The access control a receiver checks callers with: only one configured with `auth: jwt`.
    fn receiver_access(&self, config: &Config, id: &str) -> Option<Arc<AccessControl>> {
        match config.receivers.get(id) {
            Some(ReceiverConfig::Otlp(c)) if c.auth == ReceiverAuth::Jwt => Some(self.access.clone()),
            _ => None,
        }
    }

    fn receiver_limiter(&self, id: &str) -> Option<Arc<SenderLimiter>> {
        self.limiters.get(id).cloned()
    }
}

/// The receivers' listeners, and the receivers that connect out to a broker rather than listen.
struct ReceiverListeners {
    grpc: Vec<(String, GrpcServerConfig, TcpListener)>,
    http: Vec<(String, HttpServerConfig, TcpListener)>,
    bus: Vec<(String, RabbitMqReceiverConfig)>,
}

struct Listeners {
    receivers: ReceiverListeners,
    api: TcpListener,
    addresses: Addresses,
    /// The `max_connections` of a listener that does not configure its own.
    default_max_connections: usize,
}

/// Binds every listener of a receiver in a pipeline, then the API's. Each serves a bounded number
/// of connections, within the open-file limit (first raised to its hard limit).
async fn bind_listeners(config: &Config) -> Result<Listeners, StartError> {
    let open_files = crate::net::raise_open_file_limit();
    let mut receivers = ReceiverListeners { grpc: Vec::new(), http: Vec::new(), bus: Vec::new() };
    let mut addresses = Addresses::default();
    for (id, receiver) in &config.receivers {
        let used = config.service.pipelines.values().any(|p| p.receivers.contains(id));
        if !used {
            tracing::warn!(receiver = %id, "receiver is in no pipeline; not started");
            continue;
        }
        match receiver {
            ReceiverConfig::Otlp(c) => {
                if let Some(g) = &c.grpc {
                    let l = bind(&g.endpoint, format!("receivers.{id}.grpc")).await?;
                    addresses.grpc.insert(
                        id.clone(),
                        l.local_addr().map_err(|source| StartError::Bind { what: id.clone(), address: g.endpoint.clone(), source })?,
                    );
                    receivers.grpc.push((id.clone(), g.clone(), l));
                }
                if let Some(h) = &c.http {
                    let l = bind(&h.endpoint, format!("receivers.{id}.http")).await?;
                    addresses.http.insert(
                        id.clone(),
                        l.local_addr().map_err(|source| StartError::Bind { what: id.clone(), address: h.endpoint.clone(), source })?,
                    );
                    receivers.http.push((id.clone(), h.clone(), l));
                }
            }
            ReceiverConfig::RabbitMq(c) => receivers.bus.push((id.clone(), c.clone())),
        }
    }
    let api = bind(&config.api.endpoint, "api".into()).await?;
    addresses.api = api.local_addr().ok();
    let default_max_connections = connection_budget(config, &receivers, open_files);
    Ok(Listeners { receivers, api, addresses, default_max_connections })
}

/// The default `max_connections` of a listener; warns when the listeners together may run out
/// of file descriptors.
fn connection_budget(config: &Config, receivers: &ReceiverListeners, open_files: Option<u64>) -> usize {
    let default_max_connections = crate::net::default_max_connections(open_files, receivers.grpc.len() + receivers.http.len() + 1);
    let configured = receivers.grpc.iter().map(|(_, g, _)| g.max_connections);
    let configured = configured.chain(receivers.http.iter().map(|(_, h, _)| h.max_connections)).chain([config.api.max_connections]);
    let max_connections: usize = configured.map(|m| m.unwrap_or(default_max_connections)).sum();
    if let Some(open_files) = open_files.filter(|&n| max_connections as u64 > n / 2) {
        tracing::warn!(max_connections, open_files, "the listeners' max_connections together exceed half the open-file limit; accepting will fail (and back off) when descriptors run out");
    }
    default_max_connections
}

/// Builds every exporter in a pipeline, with its queue and store.
fn build_exporters(config: &Config, metrics: &Metrics, readiness: &Readiness) -> Result<BTreeMap<String, Built>, StartError> {
    let mut built = BTreeMap::new();
    let keys = correlation_keys(config);
    for (id, exporter) in &config.exporters {
        if config.service.pipelines.values().any(|p| p.exporters.contains(id)) {
            built.insert(id.clone(), build_exporter(id, exporter, metrics, readiness, &keys, None)?);
        } else {
            tracing::warn!(exporter = %id, "exporter is in no pipeline; not started");
        }
    }
    Ok(built)
}

/// What the read API reads: Elasticsearch indices, or the store of an embedded exporter.
fn query_backend(config: &Config, built: &BTreeMap<String, Built>) -> Result<Option<QueryBackend>, StartError> {
    Ok(match config.query_backend().map(|id| (id, &config.exporters[id])) {
        // An Elasticsearch backend reads the indices even when no pipeline here writes them.
        Some((id, ExporterConfig::Elasticsearch(c))) => Some(QueryBackend::Elasticsearch(
            ElasticsearchQuery::from_config(c)
                .map_err(|e| StartError::Exporter { id: id.into(), message: crate::shared::error_chain(&e) })?,
        )),
        Some((id, _)) => built.get(id).and_then(|b| b.store.as_ref()).map(|(s, _)| QueryBackend::Embedded(s.clone())),
        None => None,
    })
}

/// Starts each exporter's consumers, the restoring of what its disk queue recovered and its
/// store's retention; returns the exporters as a reload sees them.
fn start_consumers(
    config: &Config,
    built: &mut BTreeMap<String, Built>,
    stop_consumers: &CancellationToken,
    background: &mut Vec<JoinHandle<()>>,
) -> BTreeMap<String, reload::LiveExporter> {
    let mut live_exporters = BTreeMap::new();
    for (id, b) in built.iter_mut() {
        // Each exporter's consumers stop with the gateway, or alone when a reload replaces it.
        let token = stop_consumers.child_token();
        let handles = (0..b.consumers).map(|_| tokio::spawn(b.runner.clone().consume(token.clone()))).collect();
        live_exporters.insert(
            id.clone(),
            reload::LiveExporter {
                fingerprint: reload::exporter_fingerprint(&config.exporters[id]),
                queue: b.queue.clone(),
                runner: b.runner.clone(),
                token,
                handles,
            },
        );
        let recovered = std::mem::take(&mut b.recovered);
        if !recovered.is_empty() {
            let keep_decoded = b.runner.exporter.reads_spans();
            background.push(tokio::spawn(restore_queue(b.queue.clone(), recovered, keep_decoded)));
        }
        if let Some((store, retention)) = &b.store {
            background.push(tokio::spawn(run_retention(store.clone(), *retention, id.clone())));
        }
    }
    live_exporters
}

/// Starts the order monitors, if any are configured, on the read API's backend: the store of its
/// embedded exporter, or the monitor index of its Elasticsearch exporter (shared with other
/// instances). The default grace is the longest enrichment wait plus a margin: a span may reach
/// the monitors that much after its order's other spans.
async fn start_monitors(config: &Config, built: &BTreeMap<String, Built>, metrics: &Metrics) -> Result<Option<Monitors>, StartError> {
    if config.monitors.is_empty() {
        return Ok(None);
    }
    let backend = config.query_backend().unwrap_or_default();
    let (store, retention) = match config.exporters.get(backend) {
        Some(ExporterConfig::Elasticsearch(c)) => {
            let es = crate::exporters::elasticsearch_monitor_state::EsMonitorState::from_config(c)
                .map_err(|e| StartError::Exporter { id: backend.into(), message: crate::shared::error_chain(&e) })?;
            (MonitorStore::Elasticsearch(es), c.templates.retention)
        }
        _ => match built.get(backend).and_then(|b| b.store.clone()) {
            Some((store, retention)) => (MonitorStore::Embedded(store), retention),
            None => {
                return Err(StartError::Exporter {
                    id: backend.into(),
                    message: "the order monitors keep their state in this embedded store, but no pipeline uses it".into(),
                })
            }
        },
    };
    let wait = config
        .processors
        .values()
        .filter_map(|p| match p {
            ProcessorConfig::OrderEnrich(c) => Some(c.wait),
            _ => None,
        })
        .max()
        .unwrap_or_default();
    let grace = wait + crate::monitors::DEFAULT_GRACE_MARGIN;
    let public_url = config.api.public_url.clone();
    Monitors::start(&config.monitors, &config.notifiers, grace, retention, public_url, store, metrics)
        .await
        .map(Some)
        .map_err(StartError::Monitors)
}

/// Builds every pipeline, each with its own processor instances, observed by the order monitors;
/// a pipeline that holds spans takes back what its journal held before the last stop.
fn build_pipelines(
    config: &Config,
    built: &BTreeMap<String, Built>,
    metrics: &Metrics,
    monitors: Option<&Monitors>,
) -> Result<BTreeMap<String, Arc<Pipeline>>, StartError> {
    let mut pipelines = BTreeMap::new();
    for (name, p) in &config.service.pipelines {
        let mut processors = Vec::new();
        for id in &p.processors {
            let processor = Processor::build(&config.processors[id], name, metrics)
                .map_err(|source| StartError::Processor { id: id.clone(), source })?;
            processors.push(processor);
        }
        let exporters = p.exporters.iter().filter_map(|e| built.get(e)).map(|b| b.queue.clone()).collect();
        let keep_decoded = p.exporters.iter().filter_map(|e| built.get(e)).any(|b| b.runner.exporter.reads_spans());
        let mut pipeline = Pipeline::new(name.clone(), processors, exporters, keep_decoded);
        if let Some(m) = monitors {
            pipeline = pipeline.observed_by(m.feed());
        }
        let (pipeline, held) = journal_holds(pipeline, name, p, config)?;
        let pipeline = Arc::new(pipeline);
        if !held.is_empty() {
            pipeline.recover_held(held, tokio::time::Instant::now());
        }
        pipelines.insert(name.clone(), pipeline);
    }
    Ok(pipelines)
}

/// Processors that hold spans (order_enrich) let them go when their wait is over: one task per
/// pipeline with processors, which a reload can stop.
fn start_releases(
    pipelines: &BTreeMap<String, Arc<Pipeline>>,
    background: &mut Vec<JoinHandle<()>>,
) -> BTreeMap<String, tokio::task::AbortHandle> {
    let mut releases = BTreeMap::new();
    for (name, pipeline) in pipelines.iter().filter(|(_, p)| !p.processors.is_empty()) {
        let task = tokio::spawn(release_expired(pipeline.clone()));
        releases.insert(name.clone(), task.abort_handle());
        background.push(task);
    }
    releases
}

/// The memory limiter of the process, shared by every receiver, when configured.
fn start_memory_limiter(
    config: &Config,
    metrics: &Metrics,
    pipelines: &BTreeMap<String, Arc<Pipeline>>,
    background: &mut Vec<JoinHandle<()>>,
) -> Result<Option<Arc<MemoryLimiter>>, StartError> {
    let Some(c) = &config.service.memory_limiter else { return Ok(None) };
    let (soft, hard) = c.limits().map_err(StartError::MemoryLimiter)?;
    let limiter = MemoryLimiter::new(soft, hard, metrics.memory());
    tracing::info!(soft_limit_mib = soft >> 20, hard_limit_mib = hard >> 20, rss_mib = limiter.rss() >> 20, "memory limiter on");
    limiter.set_pipelines(pipelines.values().cloned().collect());
    background.push(tokio::spawn(limiter.clone().run(c.check_interval)));
    Ok(Some(limiter))
}

/// One fanout per running receiver, shared by its listeners, feeding the pipelines it is in; a
/// reload swaps what it feeds.
fn build_fanouts(
    config: &Config,
    listeners: &ReceiverListeners,
    pipelines: &BTreeMap<String, Arc<Pipeline>>,
) -> BTreeMap<String, Arc<Fanout>> {
    let mut fanouts = BTreeMap::new();
    let listener_ids = listeners.grpc.iter().map(|(id, _, _)| id).chain(listeners.http.iter().map(|(id, _, _)| id));
    for id in listener_ids.chain(listeners.bus.iter().map(|(id, _)| id)) {
        let feeds = config
            .service
            .pipelines
            .iter()
            .filter(|(_, p)| p.receivers.iter().any(|r| r == id))
            .map(|(name, _)| pipelines[name].clone())
            .collect();
        fanouts.entry(id.clone()).or_insert_with(|| Arc::new(Fanout::new(feeds)));
    }
    fanouts
}

/// What every receiver is given: its fanout, metrics, access control, rate limiter and limits.
struct ReceiverWiring<'a> {
    config: &'a Config,
    metrics: &'a Metrics,
    readiness: &'a Readiness,
    callers: &'a Callers,
    memory: &'a Option<Arc<MemoryLimiter>>,
    fanouts: &'a BTreeMap<String, Arc<Fanout>>,
}

impl ReceiverWiring<'_> {
    /// Starts the OTLP/gRPC, then the OTLP/HTTP, then the RabbitMQ receivers.
    fn start(&self, listeners: ReceiverListeners, default_max_connections: usize, stop: &CancellationToken) -> Vec<JoinHandle<()>> {
        let mut receivers = Vec::new();
        for (id, cfg, listener) in listeners.grpc {
            receivers.push(self.spawn_grpc(id, cfg, listener, default_max_connections, stop));
        }
        for (id, cfg, listener) in listeners.http {
            receivers.push(self.spawn_http(id, cfg, listener, default_max_connections, stop));
        }
        if !listeners.bus.is_empty() {
            // One set of `tracegate_rabbitmq_*` families for every rabbitmq receiver.
            let families = RabbitMqMetricFamilies::register(self.metrics);
            for (id, config) in listeners.bus {
                let receiver = RabbitMqReceiver {
                    fanout: self.fanouts[&id].clone(),
                    ingest: self.ingest(&id),
                    metrics: self.metrics.receiver(&id, "amqp"),
                    bus: families.for_receiver(&id),
                    health: self.readiness.receiver(&id),
                    config,
                    id,
                };
                receivers.push(tokio::spawn(receiver.run(stop.clone())));
            }
        }
        receivers
    }

    fn spawn_grpc(
        &self,
        id: String,
        cfg: GrpcServerConfig,
        listener: TcpListener,
        default_max: usize,
        stop: &CancellationToken,
    ) -> JoinHandle<()> {
        let fanout = self.fanouts[&id].clone();
        let stop = stop.clone().cancelled_owned();
        let m = self.metrics.receiver(&id, "grpc");
        let access = self.callers.receiver_access(self.config, &id);
        let limiter = self.callers.receiver_limiter(&id);
        let ingest = self.ingest(&id);
        let limits = cfg.connection_limits(default_max);
        tokio::spawn(async move {
            let name = format!("receivers.{id}.grpc");
            if let Err(error) = serve_grpc(listener, &name, cfg, limits, fanout, m, access, limiter, ingest, stop).await {
                tracing::error!(%error, receiver = %id, "OTLP/gRPC server failed");
            }
        })
    }

    fn spawn_http(
        &self,
        id: String,
        cfg: HttpServerConfig,
        listener: TcpListener,
        default_max: usize,
        stop: &CancellationToken,
    ) -> JoinHandle<()> {
        let limits = cfg.connection_limits(default_max);
        let router = otlp_http_router(
            cfg,
            self.fanouts[&id].clone(),
            self.metrics.receiver(&id, "http"),
            self.metrics.receiver(&id, "order_events"),
            self.callers.receiver_access(self.config, &id),
            self.callers.receiver_limiter(&id),
            self.ingest(&id),
        );
        let stop = stop.clone().cancelled_owned();
        tokio::spawn(async move {
            let name = format!("receivers.{id}.http");
            if let Err(error) = serve_http(listener, &name, limits, router, stop).await {
                tracing::error!(%error, receiver = %id, "OTLP/HTTP server failed");
            }
        })
    }

    /// A receiver's span limits, and the process's memory limiter.
    fn ingest(&self, id: &str) -> IngestLimits {
        IngestLimits {
            spans: match self.config.receivers.get(id) {
                Some(ReceiverConfig::Otlp(c)) => c.span_limits.clone(),
                Some(ReceiverConfig::RabbitMq(c)) => c.span_limits.clone(),
                None => Default::default(),
            },
            memory: self.memory.clone(),
        }
    }
}

/// Handles that a reload and the API share.
struct Handles {
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
    queues: SharedQueues,
    config_view: Arc<std::sync::RwLock<serde_json::Value>>,
    stop_consumers: CancellationToken,
}

/// The pipelines as a reload sees them, each with its release task.
fn live_pipelines(
    config: &Config,
    pipelines: &BTreeMap<String, Arc<Pipeline>>,
    releases: &BTreeMap<String, tokio::task::AbortHandle>,
) -> BTreeMap<String, reload::LivePipeline> {
    pipelines
        .iter()
        .map(|(name, p)| {
            let live = reload::LivePipeline {
                fingerprint: reload::pipeline_fingerprint(config, name),
                pipeline: p.clone(),
                release: releases.get(name).cloned(),
            };
            (name.clone(), live)
        })
        .collect()
}

/// What a reload swaps.
fn live_state(
    config: &Config,
    exporters: BTreeMap<String, reload::LiveExporter>,
    pipelines: BTreeMap<String, reload::LivePipeline>,
    fanouts: BTreeMap<String, Arc<Fanout>>,
    memory: Option<Arc<MemoryLimiter>>,
    monitors: Option<&Monitors>,
    handles: &Handles,
) -> Arc<tokio::sync::Mutex<reload::Live>> {
    Arc::new(tokio::sync::Mutex::new(reload::Live {
        config: config.clone(),
        exporters,
        pipelines,
        fanouts,
        queues: handles.queues.clone(),
        config_view: handles.config_view.clone(),
        stop_consumers: handles.stop_consumers.clone(),
        metrics: handles.metrics.clone(),
        readiness: handles.readiness.clone(),
        observer: monitors.map(|m| m.feed() as Arc<dyn crate::pipeline::SpanObserver>),
        memory,
        tasks: Vec::new(),
    }))
}

/// What the API serves from, with browser sign-in whose sessions live in the read API's
/// embedded store (so a restart keeps them), or in memory only.
fn api_state(
    config: &Config,
    callers: Callers,
    backend: Option<QueryBackend>,
    audit: Option<Arc<AuditLog>>,
    handles: &Handles,
    reload: Option<Arc<dyn api::Reload>>,
) -> Result<ApiState, StartError> {
    let session_store = match &backend {
        Some(QueryBackend::Embedded(store)) => Some(store.clone() as Arc<dyn crate::auth::SessionPersistence>),
        _ => None,
    };
    let signin = crate::auth::SignIn::new(&config.auth, audit, session_store).map_err(StartError::Auth)?.map(Arc::new);
    Ok(ApiState {
        backend,
        metrics: handles.metrics.clone(),
        queues: handles.queues.clone(),
        readiness: handles.readiness.clone(),
        access: callers.access,
        config_view: handles.config_view.clone(),
        pseudonyms: callers.pseudonyms,
        reload,
        jaeger_proxy: callers.jaeger_proxy,
        jaeger_ui_url: config.api.jaeger_link_base(),
        signin,
        order_rules: Arc::new(crate::monitors::OrderThresholds::from_monitors(&config.monitors)),
    })
}

/// Serves the API until `stop` is cancelled.
fn serve_api(
    listener: TcpListener,
    state: ApiState,
    config: &ApiConfig,
    default_max_connections: usize,
    stop: &CancellationToken,
) -> JoinHandle<()> {
    let stop = stop.clone().cancelled_owned();
    let app = api::router(state);
    let limits = config.connection_limits(default_max_connections);
    tokio::spawn(async move {
        if let Err(error) = crate::net::serve_router(listener, "api", limits, app, stop).await {
            tracing::error!(%error, "API server failed");
        }
    })
}

fn log_started(addresses: &Addresses, built: &BTreeMap<String, Built>) {
    tracing::info!(
        grpc = ?addresses.grpc.values().collect::<Vec<_>>(),
        http = ?addresses.http.values().collect::<Vec<_>>(),
        api = %addresses.api.map(|a| a.to_string()).unwrap_or_default(),
        exporters = ?built.keys().collect::<Vec<_>>(),
        "tracegate started"
    );
}

/// How often shutdown says how much is left to drain.
const DRAIN_REPORT_EVERY: Duration = Duration::from_secs(5);

/// The spans queued for export, summed over exporters.
#[derive(Clone)]
pub struct Backlog {
    queues: Vec<Arc<ExporterQueue>>,
}

impl Backlog {
    pub fn spans(&self) -> usize {
        self.queues.iter().map(|q| q.len()).sum()
    }
}

/// DESIGN.md §2 "Secure by default": a listener without authentication stays on loopback unless
/// the configuration acknowledges otherwise.
fn check_exposure(config: &Config) -> Result<(), StartError> {
    if config.auth.allow_unauthenticated_non_loopback {
        return Ok(());
    }
    let exposed = |endpoint: &str| endpoint.parse::<SocketAddr>().is_ok_and(|a| !a.ip().is_loopback());
    let refuse = |what: String, address: &str| Err(StartError::Unprotected { what, address: address.to_string() });
    for (id, receiver) in &config.receivers {
        // A receiver that listens on nothing exposes nothing.
        let ReceiverConfig::Otlp(c) = receiver else { continue };
        if c.auth == ReceiverAuth::Jwt {
            continue;
        }
        for (kind, endpoint) in [("grpc", c.grpc.as_ref().map(|g| &g.endpoint)), ("http", c.http.as_ref().map(|h| &h.endpoint))] {
            if let Some(endpoint) = endpoint.filter(|e| exposed(e)) {
                return refuse(format!("receivers.{id}.{kind}"), endpoint);
            }
        }
    }
    if !config.auth.enabled() && exposed(&config.api.endpoint) {
        return refuse("api".into(), &config.api.endpoint);
    }
    Ok(())
}

/// A journaled batch of held spans: its record and its spans.
type HeldRecord = (u64, Vec<opentelemetry_proto::tonic::trace::v1::ResourceSpans>);

/// A pipeline that holds spans (`order_enrich`) and sends to a disk-backed queue journals what
/// it holds in that queue's directory (`hold-{pipeline}`), so nothing acknowledged lives only in
/// memory. Returns the pipeline and the held spans found from before the last stop.
fn journal_holds(
    pipeline: Pipeline,
    name: &str,
    p: &crate::config::PipelineConfig,
    config: &Config,
) -> Result<(Pipeline, Vec<HeldRecord>), StartError> {
    let wait = p
        .processors
        .iter()
        .filter_map(|id| match &config.processors[id] {
            ProcessorConfig::OrderEnrich(c) => Some(c.wait),
            _ => None,
        })
        .max();
    let storage = p
        .exporters
        .iter()
        .filter_map(|id| config.exporters.get(id))
        .find_map(|e| e.sending_queue().storage.clone().map(|dir| (dir, e.sending_queue().sync)));
    let (Some(wait), Some((dir, sync))) = (wait, storage) else { return Ok((pipeline, Vec::new())) };
    let (log, recovered, report) = DiskLog::open(&dir, &format!("hold-{name}"), sync, 16 << 20)
        .map_err(|source| StartError::HoldJournal { pipeline: name.to_string(), source })?;
    if report.records > 0 {
        tracing::info!(pipeline = %name, records = report.records, torn = report.torn, "spans held for enrichment before the last stop are processed again");
    }
    let mut held = Vec::new();
    for record in recovered {
        match Payload::from_request_bytes(&record.data, true) {
            Ok(payload) => held.push((record.seq, payload.resource_spans().into_owned())),
            Err(error) => {
                tracing::error!(pipeline = %name, seq = record.seq, %error, "a journaled batch of held spans does not decode; skipped");
                log.ack(record.seq);
            }
        }
    }
    Ok((pipeline.with_hold_journal(Arc::new(crate::pipeline::HoldJournal::new(log, wait))), held))
}

/// Puts the batches a disk-backed queue found at start back in it, oldest first, waiting for
/// room (the consumers are already sending).
async fn restore_queue(queue: Arc<ExporterQueue>, recovered: Vec<crate::pipeline::Recovered>, keep_decoded: bool) {
    for record in recovered {
        match Payload::from_request_bytes(&record.data, keep_decoded) {
            Ok(payload) => {
                if queue.restore(Arc::new(payload), record.seq, record.written_at_ns).await.is_err() {
                    return;
                }
                queue.metrics.storage_recovered.inc();
            }
            Err(error) => {
                // The checksum matched, so this is not a torn write; keep going without it.
                tracing::error!(exporter = %queue.exporter, seq = record.seq, %error, "a recovered batch does not decode; skipped");
                if let Some(log) = queue.log() {
                    log.ack(record.seq);
                }
            }
        }
    }
}

/// Sends on the spans a pipeline's processors let go of when their wait is over.
/// Spans released beyond a request's reservation (the pipeline's backlog) are admitted here
/// too, one batch at a time with back-pressure: this task is the only one that waits for room.
async fn release_expired(pipeline: Arc<Pipeline>) {
    let mut next_expiry = tokio::time::Instant::now();
    loop {
        // Woken by a released batch in the backlog, or every 100 ms for expired waits.
        pipeline.backlog_waiting(next_expiry.saturating_duration_since(tokio::time::Instant::now())).await;
        pipeline.drain_backlog(crate::pipeline::RELEASE_PATIENCE).await;
        let now = tokio::time::Instant::now();
        if now >= next_expiry {
            // In slices, the requests on this thread answered in between.
            loop {
                let (released, more) = pipeline.released_some(now, crate::pipeline::RELEASE_SLICE_SPANS);
                let dropped =
                    if released.is_empty() { 0 } else { pipeline.admit_released(released, crate::pipeline::RELEASE_PATIENCE).await };
                // What the correlation hold let go of is forgotten once it is in the queues;
                // if some found no room, it goes again after a restart (at least once).
                pipeline.confirm_released(dropped == 0);
                if !more {
                    break;
                }
                tokio::task::yield_now().await;
            }
            // What the processors let go of by `now` is in the queues (on disk) once the backlog
            // is empty too: the journal of held spans can forget it.
            if let Some(journal) = pipeline.hold_journal() {
                if pipeline.backlog_spans() == 0 {
                    journal.settle(now);
                }
            }
            next_expiry = now + Duration::from_millis(100);
        }
    }
}
