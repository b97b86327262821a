//! Reloading the configuration without a restart (SIGHUP, `POST /api/v1/admin/reload`).
//!
//! The new file is read and validated first; any error keeps the running configuration. Then
//! what a reload can change is swapped while the listeners keep serving:
//! - exporters: added, removed or changed. An unchanged exporter keeps its queue and consumers.
//!   A changed one gets a new queue and consumers; the old consumers stop, give back what they
//!   held, and the old queue's batches move into the new one (a disk-backed queue keeps its log,
//!   so nothing is written twice). A removed exporter stops taking spans and drains its queue.
//! - processors and pipelines: a pipeline whose definition (its processors', exporters' and own
//!   configuration) is unchanged keeps its processors and their state (spans held for
//!   enrichment, the trace -> order cache). A changed pipeline gets new processors; the old ones
//!   let go of what they hold into the queues first.
//! - which pipelines a receiver feeds: swapped at once; a request in flight finishes on the set
//!   it started with, and old pipelines are retired only after the last such request.
//!
//! Everything else (listeners and receivers, `api`, `auth`, `audit`, `query`, `monitors`,
//! `notifiers`, telemetry, an exporter's `sending_queue.storage`, embedded stores) needs a
//! restart: a reload that changes them is refused whole, naming what changed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{build_exporter, correlation_keys, journal_holds, release_expired, Built};
use crate::config::{Config, ExporterConfig};
use crate::exporters::ExporterRunner;
use crate::pipeline::{ExporterQueue, Fanout, Pipeline, SpanObserver};
use crate::processors::Processor;
use crate::telemetry::Metrics;

/// The queues the API reports on `/metrics`, swapped by reloads.
pub type SharedQueues = Arc<RwLock<Vec<Arc<ExporterQueue>>>>;

/// Why a reload was refused; the running configuration stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the new configuration is invalid")]
    Invalid(#[source] crate::config::ConfigError),
    #[error("this gateway was started from a configuration in memory: there is no file to reload")]
    NoFile,
    #[error("these changes need a restart (nothing was applied): {}", .0.join(", "))]
    NeedsRestart(Vec<String>),
    /// A component of the new configuration cannot be built.
    #[error(transparent)]
    Build(#[from] super::StartError),
}

/// What a reload changed.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ReloadSummary {
    pub exporters_added: Vec<String>,
    pub exporters_changed: Vec<String>,
    pub exporters_removed: Vec<String>,
    pub pipelines_rebuilt: Vec<String>,
    pub pipelines_kept: Vec<String>,
}

pub(super) struct LiveExporter {
    pub fingerprint: String,
    pub queue: Arc<ExporterQueue>,
    pub runner: Arc<ExporterRunner>,
    pub token: CancellationToken,
    pub handles: Vec<JoinHandle<usize>>,
}

pub(super) struct LivePipeline {
    pub fingerprint: String,
    pub pipeline: Arc<Pipeline>,
    pub release: Option<tokio::task::AbortHandle>,
}

/// The parts of a running gateway that a reload swaps.
pub(super) struct Live {
    pub config: Config,
    pub exporters: BTreeMap<String, LiveExporter>,
    pub pipelines: BTreeMap<String, LivePipeline>,
    /// One per running receiver, shared by its listeners.
    pub fanouts: BTreeMap<String, Arc<Fanout>>,
    pub queues: SharedQueues,
    pub config_view: Arc<RwLock<serde_json::Value>>,
    pub stop_consumers: CancellationToken,
    pub metrics: Arc<Metrics>,
    pub readiness: Arc<crate::telemetry::Readiness>,
    pub observer: Option<Arc<dyn SpanObserver>>,
    /// Told the pipelines after a reload, so that past its hard limit it releases theirs.
    pub memory: Option<Arc<crate::pipeline::MemoryLimiter>>,
    /// Tasks started by reloads (queue transfers, release tasks), for shutdown.
    pub tasks: Vec<JoinHandle<()>>,
}

/// Exporter fingerprint: its configuration as written (secrets included, so a rotated token
/// counts as a change).
pub(super) fn exporter_fingerprint(config: &ExporterConfig) -> String {
    format!("{config:?}")
}

pub(super) fn pipeline_fingerprint(config: &Config, name: &str) -> String {
    let p = &config.service.pipelines[name];
    let processors: Vec<String> = p.processors.iter().map(|id| format!("{id}={:?}", config.processors.get(id))).collect();
    let exporters: Vec<String> = p.exporters.iter().map(|id| format!("{id}={:?}", config.exporters.get(id))).collect();
    format!("{:?}|{}|{}", p.processors, processors.join(";"), exporters.join(";"))
}

/// The pipelines each running receiver feeds under `config`.
fn feeds(config: &Config, receiver: &str) -> Vec<String> {
    config.service.pipelines.iter().filter(|(_, p)| p.receivers.iter().any(|r| r == receiver)).map(|(n, _)| n.clone()).collect()
}

/// Sections a reload cannot change, by path.
fn needs_restart(old: &Config, new: &Config, running_receivers: &[String]) -> Vec<String> {
    let mut changed = Vec::new();
    let mut differs = |what: &str, a: String, b: String| {
        if a != b {
            changed.push(what.to_string());
        }
    };
    differs("receivers", format!("{:?}", old.receivers), format!("{:?}", new.receivers));
    differs("api", format!("{:?}", old.api), format!("{:?}", new.api));
    differs("auth", format!("{:?}", old.auth), format!("{:?}", new.auth));
    differs("audit", format!("{:?}", old.audit), format!("{:?}", new.audit));
    differs("query", format!("{:?}", old.query), format!("{:?}", new.query));
    differs("monitors", format!("{:?}", old.monitors), format!("{:?}", new.monitors));
    differs("notifiers", format!("{:?}", old.notifiers), format!("{:?}", new.notifiers));
    differs("service.telemetry", format!("{:?}", old.service.telemetry), format!("{:?}", new.service.telemetry));
    differs("service.memory_limiter", format!("{:?}", old.service.memory_limiter), format!("{:?}", new.service.memory_limiter));
    differs("service.readiness", format!("{:?}", old.service.readiness), format!("{:?}", new.service.readiness));
    for id in running_receivers {
        if feeds(new, id).is_empty() {
            changed.push(format!("receivers.{id} (no longer in any pipeline)"));
        }
    }
    for id in new.receivers.keys() {
        if !running_receivers.contains(id) && !feeds(new, id).is_empty() {
            changed.push(format!("receivers.{id} (not running; now in a pipeline)"));
        }
    }
    let query_backend = old.query_backend().map(str::to_string);
    for (id, new_exporter) in &new.exporters {
        let Some(old_exporter) = old.exporters.get(id) else { continue };
        if exporter_fingerprint(old_exporter) == exporter_fingerprint(new_exporter) {
            continue;
        }
        if old_exporter.sending_queue().storage != new_exporter.sending_queue().storage {
            changed.push(format!("exporters.{id}.sending_queue.storage"));
        }
        if matches!(old_exporter, ExporterConfig::Embedded(_)) || query_backend.as_deref() == Some(id) {
            changed.push(format!("exporters.{id} (a store the read API uses)"));
        }
    }
    changed
}

impl Live {
    /// Applies `new`, or changes nothing and says why.
    pub async fn reload(&mut self, new: Config) -> Result<ReloadSummary, ReloadError> {
        let running: Vec<String> = self.fanouts.keys().cloned().collect();
        let restart = needs_restart(&self.config, &new, &running);
        if !restart.is_empty() {
            return Err(ReloadError::NeedsRestart(restart));
        }
        let mut summary = ReloadSummary::default();
        let keys = correlation_keys(&new);

        // 1. Exporters to build (new or changed); nothing runs yet, so a failure changes nothing.
        let mut fresh: BTreeMap<String, Built> = BTreeMap::new();
        for (id, cfg) in &new.exporters {
            if !new.service.pipelines.values().any(|p| p.exporters.contains(id)) {
                continue;
            }
            let fingerprint = exporter_fingerprint(cfg);
            let reuse_log = match self.exporters.get(id) {
                Some(live) if live.fingerprint == fingerprint => continue,
                Some(live) => {
                    summary.exporters_changed.push(id.clone());
                    live.queue.log().cloned()
                }
                None => {
                    summary.exporters_added.push(id.clone());
                    None
                }
            };
            let built = build_exporter(id, cfg, &self.metrics, &self.readiness, &keys, reuse_log)?;
            fresh.insert(id.clone(), built);
        }
        summary.exporters_removed =
            self.exporters.keys().filter(|id| !new.service.pipelines.values().any(|p| p.exporters.contains(id))).cloned().collect();

        // 2. Pipelines: kept when nothing in them changed, otherwise built anew.
        let queue_of = |id: &str, fresh: &BTreeMap<String, Built>, live: &BTreeMap<String, LiveExporter>| {
            fresh
                .get(id)
                .map(|b| (b.queue.clone(), b.runner.exporter.reads_spans()))
                .or_else(|| live.get(id).map(|l| (l.queue.clone(), l.runner.exporter.reads_spans())))
        };
        let mut next: BTreeMap<String, (String, Arc<Pipeline>, bool)> = BTreeMap::new();
        for (name, p) in &new.service.pipelines {
            let fingerprint = pipeline_fingerprint(&new, name);
            if let Some(live) = self.pipelines.get(name).filter(|l| l.fingerprint == fingerprint) {
                summary.pipelines_kept.push(name.clone());
                next.insert(name.clone(), (fingerprint, live.pipeline.clone(), false));
                continue;
            }
            let mut processors = Vec::new();
            for id in &p.processors {
                processors.push(
                    Processor::build(&new.processors[id], name, &self.metrics)
                        .map_err(|source| ReloadError::Build(super::StartError::Processor { id: id.clone(), source }))?,
                );
            }
            let mut queues = Vec::new();
            let mut keep_decoded = false;
            for id in &p.exporters {
                if let Some((queue, reads)) = queue_of(id, &fresh, &self.exporters) {
                    queues.push(queue);
                    keep_decoded |= reads;
                }
            }
            let mut pipeline = Pipeline::new(name.clone(), processors, queues, keep_decoded);
            if let Some(observer) = &self.observer {
                pipeline = pipeline.observed_by(observer.clone());
            }
            // The journal of held spans is the pipeline's, whatever its processors: a rebuilt
            // pipeline keeps writing to the one it had (its records settle as before).
            let pipeline = match self.pipelines.get(name).and_then(|l| l.pipeline.hold_journal().cloned()) {
                Some(journal) => pipeline.with_hold_journal(journal),
                None => {
                    let (pipeline, held) = journal_holds(pipeline, name, p, &new)?;
                    if !held.is_empty() {
                        tracing::warn!(pipeline = %name, records = held.len(), "a journal of held spans from an earlier run is processed again");
                        let p = Arc::new(pipeline);
                        p.recover_held(held, tokio::time::Instant::now());
                        next.insert(name.clone(), (fingerprint, p, true));
                        summary.pipelines_rebuilt.push(name.clone());
                        continue;
                    }
                    pipeline
                }
            };
            summary.pipelines_rebuilt.push(name.clone());
            next.insert(name.clone(), (fingerprint, Arc::new(pipeline), true));
        }

        // 3. New exporters start sending; new pipelines get their release tasks.
        let mut new_live: BTreeMap<String, LiveExporter> = BTreeMap::new();
        for (id, built) in fresh {
            let token = self.stop_consumers.child_token();
            let handles = (0..built.consumers).map(|_| tokio::spawn(built.runner.clone().consume(token.clone()))).collect();
            let fingerprint = exporter_fingerprint(&new.exporters[&id]);
            new_live.insert(id, LiveExporter { fingerprint, queue: built.queue, runner: built.runner, token, handles });
        }
        let mut pipelines: BTreeMap<String, LivePipeline> = BTreeMap::new();
        for (name, (fingerprint, pipeline, rebuilt)) in next {
            let release = match (rebuilt, self.pipelines.get(&name)) {
                (false, Some(live)) => live.release.clone(),
                _ if !pipeline.processors.is_empty() => {
                    let task = tokio::spawn(release_expired(pipeline.clone()));
                    let handle = task.abort_handle();
                    self.tasks.push(task);
                    Some(handle)
                }
                _ => None,
            };
            pipelines.insert(name, LivePipeline { fingerprint, pipeline, release });
        }

        // 4. Receivers feed the new set from now on; wait for requests still on the old one.
        let mut old_feeds = Vec::new();
        for (receiver, fanout) in &self.fanouts {
            let set: Vec<Arc<Pipeline>> = feeds(&new, receiver).iter().map(|n| pipelines[n].pipeline.clone()).collect();
            old_feeds.push(fanout.replace(set));
        }
        for feeds in &old_feeds {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while Arc::strong_count(feeds) > 1 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        drop(old_feeds);

        // 5. Retired pipelines let go of what they hold, into the queues they fed.
        let old_pipelines = std::mem::replace(&mut self.pipelines, pipelines);
        for (name, old) in old_pipelines {
            let kept = self.pipelines.get(&name).is_some_and(|l| Arc::ptr_eq(&l.pipeline, &old.pipeline));
            if kept {
                continue;
            }
            if let Some(release) = &old.release {
                release.abort();
            }
            old.pipeline.drain_backlog(Duration::from_secs(5)).await;
            let held = old.pipeline.released_all(tokio::time::Instant::now());
            let dropped = old.pipeline.admit_released(held, Duration::from_secs(5)).await;
            // As at shutdown: the correlation hold forgets its releases once all are admitted.
            let admitted = dropped == 0 && old.pipeline.backlog_spans() == 0 && !old.pipeline.release_interrupted();
            old.pipeline.confirm_released(admitted);
        }

        // 6. Replaced exporters stop and hand their batches to their replacements; removed ones
        //    drain what they have and stop.
        let old_exporters = std::mem::take(&mut self.exporters);
        for (id, old) in old_exporters {
            if new_live.contains_key(&id) {
                old.token.cancel();
                for handle in old.handles {
                    let _ = handle.await;
                }
                old.queue.close();
                let batches = old.queue.drain_now();
                let target = new_live[&id].queue.clone();
                let moved: usize = batches.iter().map(|b| b.payload.span_count()).sum();
                tracing::info!(exporter = %id, spans = moved, "exporter reconfigured; its queued spans move to the new one");
                self.tasks.push(tokio::spawn(async move {
                    for batch in batches {
                        if target.adopt(batch).await.is_err() {
                            tracing::warn!(exporter = %target.exporter, "queue closed while reconfigured batches moved in");
                            return;
                        }
                    }
                }));
            } else if summary.exporters_removed.contains(&id) {
                self.readiness.forget_exporter(&id);
                old.queue.close();
                tracing::info!(exporter = %id, spans = old.queue.len(), "exporter removed; it sends what it has queued, then stops");
                self.tasks.push(tokio::spawn(async move {
                    for handle in old.handles {
                        let _ = handle.await;
                    }
                }));
            } else {
                self.exporters.insert(id, old);
            }
        }
        self.exporters.extend(new_live);

        if let Some(memory) = &self.memory {
            memory.set_pipelines(self.pipelines.values().map(|p| p.pipeline.clone()).collect());
        }

        // 7. The new configuration is the running one.
        *self.queues.write().unwrap_or_else(|p| p.into_inner()) = self.exporters.values().map(|e| e.queue.clone()).collect();
        *self.config_view.write().unwrap_or_else(|p| p.into_inner()) = new.redacted.clone();
        self.config = new;
        Ok(summary)
    }

    /// Everything running, for shutdown: (consumers with whether their queue is on disk, queues,
    /// pipelines, tasks).
    #[allow(clippy::type_complexity)]
    pub fn take_for_shutdown(
        &mut self,
    ) -> (Vec<(JoinHandle<usize>, bool)>, Vec<Arc<ExporterQueue>>, Vec<Arc<Pipeline>>, Vec<JoinHandle<()>>) {
        let mut consumers = Vec::new();
        for live in self.exporters.values_mut() {
            let durable = live.queue.log().is_some();
            consumers.extend(live.handles.drain(..).map(|h| (h, durable)));
        }
        let queues = self.exporters.values().map(|e| e.queue.clone()).collect();
        let pipelines = self.pipelines.values().map(|p| p.pipeline.clone()).collect();
        (consumers, queues, pipelines, std::mem::take(&mut self.tasks))
    }
}

/// Where a reload reads the configuration from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    File(PathBuf),
    /// `tracegate` with no `--config`.
    BuiltIn,
    /// Built by a program (tests); cannot be reloaded.
    Memory,
}

/// Reloads from the file the gateway was started with (or the built-in configuration).
#[derive(Clone)]
pub struct Reloader {
    pub(super) live: Arc<tokio::sync::Mutex<Live>>,
    pub(super) source: ConfigSource,
    pub(super) metrics: Arc<Metrics>,
}

impl Reloader {
    pub async fn reload(&self) -> Result<ReloadSummary, ReloadError> {
        let read = match &self.source {
            ConfigSource::File(path) => Config::from_file(path),
            ConfigSource::BuiltIn => Config::default_config(),
            ConfigSource::Memory => return Err(ReloadError::NoFile),
        };
        let result = match read {
            Err(error) => Err(ReloadError::Invalid(error)),
            Ok(config) => {
                let mut live = self.live.lock().await;
                live.reload(config).await
            }
        };
        match &result {
            Ok(summary) => {
                self.metrics.config_reload("applied");
                tracing::info!(?summary, "configuration reloaded");
            }
            Err(error) => {
                self.metrics.config_reload("refused");
                tracing::error!(error = %crate::shared::error_chain(error).replace('\n', "; "), "configuration reload refused; the running configuration stays");
            }
        }
        result
    }
}

impl crate::api::Reload for Reloader {
    fn reload(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<serde_json::Value, crate::api::ReloadRefusal>> + Send + '_>> {
        Box::pin(async move {
            Reloader::reload(self).await.map(|summary| serde_json::to_value(summary).unwrap_or_default()).map_err(|error| error.into())
        })
    }
}
