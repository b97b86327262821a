//! `Gateway`: builds the running system from a `Config` and takes it down in stages.
//!
//! Start-up binds every listener before anything is spawned, so a taken port fails start-up and
//! tests can use port 0. Shutdown stops the receivers, lets the queues drain until the deadline,
//! then cancels what is left and reports exactly how many spans were not delivered.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiState};
use crate::audit::AuditLog;
use crate::auth::{AccessControl, Pseudonymizer};
use crate::config::{Config, ExporterConfig, ProcessorConfig, ReceiverConfig};
use crate::exporters::{
    run_retention, DebugExporter, ElasticsearchExporter, EmbeddedExporter, Exporter, ExporterRunner, OtlpExporter, QueueConfig, RetryConfig,
};
use crate::pipeline::{ExporterQueue, Fanout, Pipeline};
use crate::processors::{OrderEnrichConfig, Processor};
use crate::query::{ElasticsearchQuery, QueryBackend};
use crate::receivers::{otlp_http_router, serve_grpc, serve_http, ReceiverAuth, SenderLimiter};
use crate::store::{SpanStore, StoreError};
use crate::telemetry::Metrics;

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
    #[error("processor {id:?} cannot start: {message}")]
    Processor { id: String, message: String },
    #[error("authentication cannot start: {0}")]
    Auth(String),
    #[error("{what} would listen on {address} beyond loopback without authentication; configure auth.issuers (and auth: jwt on receivers) or set auth.allow_unauthenticated_non_loopback: true (the built-in configuration reads it from TRACEGATE_ALLOW_UNAUTHENTICATED_NON_LOOPBACK=true)")]
    Unprotected { what: String, address: String },
    #[error("the audit log cannot be opened")]
    Audit(#[source] crate::audit::AuditError),
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

/// How shutdown went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Spans accepted from clients that no exporter delivered before the deadline, summed over
    /// exporters (a span bound for two exporters that both missed counts twice).
    pub undelivered_spans: usize,
    pub drained_in_time: bool,
}

pub struct Gateway {
    pub addresses: Addresses,
    pub metrics: Arc<Metrics>,
    stop_receivers: CancellationToken,
    stop_consumers: CancellationToken,
    stop_api: CancellationToken,
    receivers: Vec<JoinHandle<()>>,
    consumers: Vec<JoinHandle<usize>>,
    background: Vec<JoinHandle<()>>,
    api: Option<JoinHandle<()>>,
    queues: Vec<Arc<ExporterQueue>>,
    pipelines: Vec<Arc<Pipeline>>,
    ready: Arc<AtomicBool>,
    shutdown_timeout: Duration,
    /// Closed last, with a shutdown checkpoint.
    audit: Option<Arc<AuditLog>>,
    audit_tasks: Vec<JoinHandle<()>>,
}

struct Built {
    queue: Arc<ExporterQueue>,
    runner: Arc<ExporterRunner>,
    consumers: usize,
    store: Option<(Arc<SpanStore>, Duration)>,
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

fn build_exporter(id: &str, config: &ExporterConfig, metrics: &Metrics, correlation_keys: &[String]) -> Result<Built, StartError> {
    let fail = |message: String| StartError::Exporter { id: id.into(), message };
    let no_retry_needed = RetryConfig { enabled: false, ..Default::default() };
    let (exporter, queue_cfg, batch, retry, timeout, store): (Exporter, &QueueConfig, _, _, _, _) = match config {
        ExporterConfig::Otlp(c) => (
            Exporter::Otlp(OtlpExporter::new(c).map_err(fail)?),
            &c.sending_queue,
            c.batch.clone(),
            c.retry_on_failure.clone(),
            c.timeout,
            None,
        ),
        ExporterConfig::Embedded(c) => {
            let store = Arc::new(SpanStore::open(&c.path, correlation_keys).map_err(|source| StartError::Store { id: id.into(), source })?);
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
            let exporter = ElasticsearchExporter::new(id, c, correlation_keys, metrics.elasticsearch(id)).map_err(fail)?;
            // One export call runs its own item retries; the runner's timeout covers them all.
            let timeout = exporter.attempt_budget();
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
    let queue = ExporterQueue::new(id, queue_cfg.queue_size, queue_cfg.when_full, metrics.exporter(id));
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
    });
    Ok(Built { queue, runner, consumers: queue_cfg.num_consumers, store })
}

impl Gateway {
    pub async fn start(config: Config) -> Result<Gateway, StartError> {
        let metrics = Metrics::new();

        // 0. Who may call: refuse to listen beyond loopback unprotected unless acknowledged.
        check_exposure(&config)?;
        let mut audit_tasks = Vec::new();
        let audit = match &config.audit.path {
            Some(path) => {
                let mut mirror = None;
                if let Some(m) = &config.audit.elasticsearch {
                    if let Some(ExporterConfig::Elasticsearch(es)) = config.exporters.get(&m.exporter) {
                        let client = crate::exporters::EsClient::new(es)
                            .map_err(|message| StartError::Exporter { id: m.exporter.clone(), message })?;
                        mirror = Some(crate::audit::AuditMirror::start(client, m.index.clone()));
                    }
                }
                let log = AuditLog::open_mirrored(&config.audit, path, mirror).map_err(StartError::Audit)?;
                Some(Arc::new(log))
            }
            None => None,
        };
        if let Some(audit) = &audit {
            // Summaries of suppressed failed authentications, once their minute is over.
            let audit = audit.clone();
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            audit_tasks.push(tokio::spawn(async move {
                loop {
                    tick.tick().await;
                    let audit = audit.clone();
                    let _ = tokio::task::spawn_blocking(move || audit.flush_failed_auth(false)).await;
                }
            }));
        }
        let audit_log = audit.clone();
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
        // One limiter per receiver, shared by its gRPC and HTTP listeners.
        let limiters: BTreeMap<String, Arc<SenderLimiter>> = config
            .receivers
            .iter()
            .filter_map(|(id, r)| match r {
                ReceiverConfig::Otlp(c) => c.rate_limit.as_ref().map(|l| (id.clone(), Arc::new(SenderLimiter::new(l)))),
            })
            .collect();
        let receiver_limiter = |id: &str| limiters.get(id).cloned();
        let receiver_access = |id: &str| match config.receivers.get(id) {
            Some(ReceiverConfig::Otlp(c)) if c.auth == ReceiverAuth::Jwt => Some(access.clone()),
            _ => None,
        };

        // 1. Every listener, before anything runs. Each serves a bounded number of connections,
        //    within the open-file limit (first raised to its hard limit).
        let open_files = crate::net::raise_open_file_limit();
        let mut grpc_listeners = Vec::new();
        let mut http_listeners = Vec::new();
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
                        grpc_listeners.push((id.clone(), g.clone(), l));
                    }
                    if let Some(h) = &c.http {
                        let l = bind(&h.endpoint, format!("receivers.{id}.http")).await?;
                        addresses.http.insert(
                            id.clone(),
                            l.local_addr().map_err(|source| StartError::Bind { what: id.clone(), address: h.endpoint.clone(), source })?,
                        );
                        http_listeners.push((id.clone(), h.clone(), l));
                    }
                }
            }
        }
        let api_listener = bind(&config.api.endpoint, "api".into()).await?;
        addresses.api = api_listener.local_addr().ok();
        let default_max_connections = crate::net::default_max_connections(open_files, grpc_listeners.len() + http_listeners.len() + 1);
        let configured = grpc_listeners.iter().map(|(_, g, _)| g.max_connections);
        let configured = configured.chain(http_listeners.iter().map(|(_, h, _)| h.max_connections)).chain([config.api.max_connections]);
        let max_connections: usize = configured.map(|m| m.unwrap_or(default_max_connections)).sum();
        if let Some(open_files) = open_files.filter(|&n| max_connections as u64 > n / 2) {
            tracing::warn!(max_connections, open_files, "the listeners' max_connections together exceed half the open-file limit; accepting will fail (and back off) when descriptors run out");
        }

        // 2. Exporters, their queues and stores.
        let mut built: BTreeMap<String, Built> = BTreeMap::new();
        let keys = correlation_keys(&config);
        for (id, exporter) in &config.exporters {
            if config.service.pipelines.values().any(|p| p.exporters.contains(id)) {
                built.insert(id.clone(), build_exporter(id, exporter, &metrics, &keys)?);
            } else {
                tracing::warn!(exporter = %id, "exporter is in no pipeline; not started");
            }
        }
        let query_backend = match config.query_backend().map(|id| (id, &config.exporters[id])) {
            // An Elasticsearch backend reads the indices even when no pipeline here writes them.
            Some((id, ExporterConfig::Elasticsearch(c))) => Some(QueryBackend::Elasticsearch(
                ElasticsearchQuery::from_config(c).map_err(|message| StartError::Exporter { id: id.into(), message })?,
            )),
            Some((id, _)) => built.get(id).and_then(|b| b.store.as_ref()).map(|(s, _)| QueryBackend::Embedded(s.clone())),
            None => None,
        };

        // 3. Consumers and background tasks.
        let stop_consumers = CancellationToken::new();
        let mut consumers = Vec::new();
        let mut background = Vec::new();
        for (id, b) in &built {
            for _ in 0..b.consumers {
                consumers.push(tokio::spawn(b.runner.clone().consume(stop_consumers.clone())));
            }
            if let Some((store, retention)) = &b.store {
                background.push(tokio::spawn(run_retention(store.clone(), *retention, id.clone())));
            }
        }
        let queues: Vec<Arc<ExporterQueue>> = built.values().map(|b| b.queue.clone()).collect();

        // 4. Pipelines, each with its own processor instances.
        let mut pipelines: BTreeMap<String, Arc<Pipeline>> = BTreeMap::new();
        for (name, p) in &config.service.pipelines {
            let mut processors = Vec::new();
            for id in &p.processors {
                let processor = Processor::build(&config.processors[id], name, &metrics)
                    .map_err(|message| StartError::Processor { id: id.clone(), message })?;
                processors.push(processor);
            }
            let exporters = p.exporters.iter().filter_map(|e| built.get(e)).map(|b| b.queue.clone()).collect();
            let keep_decoded = p.exporters.iter().filter_map(|e| built.get(e)).any(|b| b.runner.exporter.reads_spans());
            pipelines.insert(name.clone(), Arc::new(Pipeline::new(name.clone(), processors, exporters, keep_decoded)));
        }
        // Processors that hold spans (order_enrich) let them go when their wait is over.
        for pipeline in pipelines.values().filter(|p| !p.processors.is_empty()) {
            background.push(tokio::spawn(release_expired(pipeline.clone())));
        }
        let fanout_for = |receiver: &str| {
            let feeds = config
                .service
                .pipelines
                .iter()
                .filter(|(_, p)| p.receivers.iter().any(|r| r == receiver))
                .map(|(name, _)| pipelines[name].clone())
                .collect();
            Arc::new(Fanout::new(feeds))
        };
        let stop_receivers = CancellationToken::new();
        let mut receivers = Vec::new();
        for (id, cfg, listener) in grpc_listeners {
            let fanout = fanout_for(&id);
            let stop = stop_receivers.clone().cancelled_owned();
            let m = metrics.receiver(&id, "grpc");
            let access = receiver_access(&id);
            let limiter = receiver_limiter(&id);
            let limits = cfg.connection_limits(default_max_connections);
            receivers.push(tokio::spawn(async move {
                let name = format!("receivers.{id}.grpc");
                if let Err(error) = serve_grpc(listener, &name, cfg, limits, fanout, m, access, limiter, stop).await {
                    tracing::error!(%error, receiver = %id, "OTLP/gRPC server failed");
                }
            }));
        }
        for (id, cfg, listener) in http_listeners {
            let limits = cfg.connection_limits(default_max_connections);
            let router = otlp_http_router(
                cfg,
                fanout_for(&id),
                metrics.receiver(&id, "http"),
                metrics.receiver(&id, "order_events"),
                receiver_access(&id),
                receiver_limiter(&id),
            );
            let stop = stop_receivers.clone().cancelled_owned();
            receivers.push(tokio::spawn(async move {
                let name = format!("receivers.{id}.http");
                if let Err(error) = serve_http(listener, &name, limits, router, stop).await {
                    tracing::error!(%error, receiver = %id, "OTLP/HTTP server failed");
                }
            }));
        }

        // 5. The API.
        let ready = Arc::new(AtomicBool::new(true));
        let stop_api = CancellationToken::new();
        let state = ApiState {
            backend: query_backend,
            metrics: metrics.clone(),
            queues: queues.clone(),
            ready: ready.clone(),
            access: access.clone(),
            config_view: Arc::new(config.redacted.clone()),
            pseudonyms: Arc::new(Pseudonymizer::new(&config.auth.personal_data)),
        };
        let api_stop = stop_api.clone().cancelled_owned();
        let app = api::router(state);
        let limits = config.api.connection_limits(default_max_connections);
        let api = tokio::spawn(async move {
            if let Err(error) = crate::net::serve_router(api_listener, "api", limits, app, api_stop).await {
                tracing::error!(%error, "API server failed");
            }
        });

        tracing::info!(
            grpc = ?addresses.grpc.values().collect::<Vec<_>>(),
            http = ?addresses.http.values().collect::<Vec<_>>(),
            api = %addresses.api.map(|a| a.to_string()).unwrap_or_default(),
            exporters = ?built.keys().collect::<Vec<_>>(),
            "tracegate started"
        );
        Ok(Gateway {
            addresses,
            metrics,
            stop_receivers,
            stop_consumers,
            stop_api,
            receivers,
            consumers,
            background,
            api: Some(api),
            queues,
            pipelines: pipelines.into_values().collect(),
            ready,
            shutdown_timeout: config.service.shutdown_timeout,
            audit: audit_log,
            audit_tasks,
        })
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
        self.ready.store(false, Ordering::Relaxed);

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
            let held = pipeline.released(tokio::time::Instant::now(), true);
            let patience = deadline.saturating_duration_since(tokio::time::Instant::now());
            pipeline.admit_released(held, patience).await;
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
        let mut pending = Vec::new();
        for mut handle in self.consumers.drain(..) {
            match tokio::time::timeout_at(deadline, &mut handle).await {
                Ok(Ok(n)) => undelivered += n,
                Ok(Err(_)) => {}
                Err(_) => {
                    drained_in_time = false;
                    pending.push(handle);
                }
            }
        }
        progress.abort();
        // Stage 3: the deadline passed; stop sending and count what is left.
        self.stop_consumers.cancel();
        for handle in pending {
            undelivered += handle.await.unwrap_or(0);
        }
        for q in &self.queues {
            let left: usize = q.drain_now().iter().map(|b| b.payload.span_count()).sum();
            if left > 0 {
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
            if let Err(error) = tokio::task::spawn_blocking(move || audit.close()).await.unwrap_or(Ok(())) {
                tracing::error!(error = %crate::shared::error_chain(&error), "cannot write the audit log's shutdown checkpoint");
            }
        }
        if undelivered == 0 {
            tracing::info!("shutdown complete; every accepted span was delivered");
        } else {
            tracing::warn!(undelivered_spans = undelivered, "shutdown deadline passed; {undelivered} spans could not be delivered");
        }
        ShutdownReport { undelivered_spans: undelivered, drained_in_time }
    }
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
        let ReceiverConfig::Otlp(c) = receiver;
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
            let released = pipeline.released(now, false);
            if !released.is_empty() {
                pipeline.admit_released(released, crate::pipeline::RELEASE_PATIENCE).await;
            }
            next_expiry = now + Duration::from_millis(100);
        }
    }
}
