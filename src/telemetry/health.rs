//! `Readiness`: what `GET /readyz` answers. Components report into it (each exporter after every
//! export attempt, the embedded store after every write), and the answer lists the reasons the
//! gateway should not be sent traffic: a store that cannot be written, an exporter that has
//! failed for longer than `service.readiness.exporter_failing_after`, a receiver that has had no
//! connection to its broker for longer than `service.readiness.receiver_disconnected_after` (a
//! `rabbitmq` receiver), or a shutdown under way.
//! `/healthz` stays liveness only: none of this makes it fail.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// `service.readiness`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReadinessConfig {
    /// An exporter whose attempts have all failed for this long (no success in between) makes
    /// the gateway not ready, until one succeeds. Short outages that retries absorb do not.
    #[serde(with = "humantime_serde")]
    pub exporter_failing_after: Duration,
    /// A receiver that consumes from a broker (`rabbitmq`) and has had no connection to it for
    /// this long (since start, or since the connection was lost) makes the gateway not ready,
    /// until it is connected again. A broker restart that reconnects within it does not.
    #[serde(with = "humantime_serde")]
    pub receiver_disconnected_after: Duration,
}

impl Default for ReadinessConfig {
    fn default() -> Self {
        ReadinessConfig { exporter_failing_after: Duration::from_secs(60), receiver_disconnected_after: Duration::from_secs(60) }
    }
}

/// The gateway's readiness, shared by the components that report into it and the API.
pub struct Readiness {
    exporter_failing_after: Duration,
    receiver_disconnected_after: Duration,
    stopping: AtomicBool,
    exporters: Mutex<Vec<Arc<ExporterState>>>,
    stores: Mutex<Vec<Arc<StoreState>>>,
    receivers: Mutex<Vec<Arc<ReceiverState>>>,
}

struct ReceiverState {
    id: String,
    /// Since when the receiver has had no connection to its broker, and why; `None` while
    /// connected.
    disconnected: Mutex<Option<(Instant, String)>>,
}

struct ExporterState {
    id: String,
    /// Set by the first failure after a success (or after start), cleared by a success.
    failing: Mutex<Option<(Instant, String)>>,
    /// A cheap check on the hot path: most exports succeed and find nothing to clear.
    any_failure: AtomicBool,
}

struct StoreState {
    file: String,
    /// The cause of the last write's failure; `None` once a write succeeded.
    failed: Mutex<Option<String>>,
}

impl Readiness {
    pub fn new(config: &ReadinessConfig) -> Arc<Readiness> {
        Arc::new(Readiness {
            exporter_failing_after: config.exporter_failing_after,
            receiver_disconnected_after: config.receiver_disconnected_after,
            stopping: AtomicBool::new(false),
            exporters: Mutex::default(),
            stores: Mutex::default(),
            receivers: Mutex::default(),
        })
    }

    /// The handle an exporter reports its attempts to. A best-effort exporter (`when_full:
    /// drop`) reports too, but its failures never make the gateway not ready: its outage does
    /// not refuse ingest either. An exporter of the same id built before (a reload replaced it)
    /// no longer counts: its replacement starts with a clean slate.
    pub fn exporter(&self, id: &str, counts: bool) -> ExporterHealth {
        let state = Arc::new(ExporterState { id: id.into(), failing: Mutex::new(None), any_failure: AtomicBool::new(false) });
        let mut exporters = self.exporters.lock().unwrap_or_else(|p| p.into_inner());
        exporters.retain(|e| e.id != id);
        if counts {
            exporters.push(state.clone());
        }
        ExporterHealth { state }
    }

    /// An exporter a reload removed no longer counts.
    pub fn forget_exporter(&self, id: &str) {
        self.exporters.lock().unwrap_or_else(|p| p.into_inner()).retain(|e| e.id != id);
    }

    /// The handle a store reports its writes to; `file` names it in the reasons.
    pub fn store(&self, file: &Path) -> StoreHealth {
        let state = Arc::new(StoreState { file: file.display().to_string(), failed: Mutex::new(None) });
        self.stores.lock().unwrap_or_else(|p| p.into_inner()).push(state.clone());
        StoreHealth { state }
    }

    /// The handle a receiver that connects to a broker reports its connection to; it starts
    /// disconnected ("not connected yet").
    pub fn receiver(&self, id: &str) -> ReceiverHealth {
        let state = Arc::new(ReceiverState { id: id.into(), disconnected: Mutex::new(Some((Instant::now(), "not connected yet".into()))) });
        let mut receivers = self.receivers.lock().unwrap_or_else(|p| p.into_inner());
        receivers.retain(|r| r.id != id);
        receivers.push(state.clone());
        ReceiverHealth { state }
    }

    /// Shutdown began: load balancers should stop sending.
    pub fn stopping(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }

    /// `Ok` when ready; otherwise every reason, for the `/readyz` body.
    pub fn check(&self) -> Result<(), Vec<String>> {
        let mut reasons = Vec::new();
        if self.stopping.load(Ordering::Relaxed) {
            reasons.push("shutting down".to_string());
        }
        for store in self.stores.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            if let Some(cause) = store.failed.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                reasons.push(format!("store {}: {cause}", store.file));
            }
        }
        for exporter in self.exporters.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            if let Some((since, error)) = exporter.failing.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                let failing_for = since.elapsed();
                if failing_for >= self.exporter_failing_after {
                    reasons.push(format!("exporter {} failing for {}s: {error}", exporter.id, failing_for.as_secs()));
                }
            }
        }
        for receiver in self.receivers.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            if let Some((since, error)) = receiver.disconnected.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                let for_ = since.elapsed();
                if for_ >= self.receiver_disconnected_after {
                    reasons.push(format!("receiver {} not connected to its broker for {}s: {error}", receiver.id, for_.as_secs()));
                }
            }
        }
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(reasons)
        }
    }
}

/// What an exporter reports after each attempt.
#[derive(Clone)]
pub struct ExporterHealth {
    state: Arc<ExporterState>,
}

impl ExporterHealth {
    /// A handle that reports to nothing (tools and tests that run an exporter on its own).
    pub fn detached(id: &str) -> ExporterHealth {
        Readiness::new(&ReadinessConfig::default()).exporter(id, false)
    }

    pub fn succeeded(&self) {
        if self.state.any_failure.swap(false, Ordering::Relaxed) {
            *self.state.failing.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
    }

    /// Keeps the time of the first failure in a row and the latest error.
    pub fn failed(&self, error: &dyn std::fmt::Display) {
        self.state.any_failure.store(true, Ordering::Relaxed);
        let mut failing = self.state.failing.lock().unwrap_or_else(|p| p.into_inner());
        let since = failing.as_ref().map_or_else(Instant::now, |(since, _)| *since);
        *failing = Some((since, error.to_string()));
    }
}

/// What a receiver reports about its connection to its broker.
#[derive(Clone)]
pub struct ReceiverHealth {
    state: Arc<ReceiverState>,
}

impl ReceiverHealth {
    pub fn connected(&self) {
        *self.state.disconnected.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Keeps the time the connection was lost (or of the start) and the latest error.
    pub fn disconnected(&self, error: &dyn std::fmt::Display) {
        let mut disconnected = self.state.disconnected.lock().unwrap_or_else(|p| p.into_inner());
        let since = disconnected.as_ref().map_or_else(Instant::now, |(since, _)| *since);
        *disconnected = Some((since, error.to_string()));
    }
}

/// What a store reports after each write.
#[derive(Clone)]
pub struct StoreHealth {
    state: Arc<StoreState>,
}

impl StoreHealth {
    pub fn written(&self) {
        let mut failed = self.state.failed.lock().unwrap_or_else(|p| p.into_inner());
        if failed.is_some() {
            tracing::info!(store = %self.state.file, "the store can be written again");
            *failed = None;
        }
    }

    pub fn write_failed(&self, cause: &str) {
        *self.state.failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(cause.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_come_and_go() {
        let readiness = Readiness::new(&ReadinessConfig {
            exporter_failing_after: Duration::from_millis(30),
            receiver_disconnected_after: Duration::from_millis(30),
        });
        let jaeger = readiness.exporter("jaeger", true);
        let best_effort = readiness.exporter("archive", false);
        let store = readiness.store(Path::new("/data/spans.db"));
        assert_eq!(readiness.check(), Ok(()));

        jaeger.failed(&"connection refused");
        best_effort.failed(&"connection refused");
        assert_eq!(readiness.check(), Ok(()), "not failing long enough yet");
        std::thread::sleep(Duration::from_millis(40));
        jaeger.failed(&"still refused");
        let reasons = readiness.check().unwrap_err();
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        assert!(reasons[0].starts_with("exporter jaeger failing for 0s: still refused"), "{reasons:?}");
        jaeger.succeeded();
        assert_eq!(readiness.check(), Ok(()));
        jaeger.failed(&"refused again");
        std::thread::sleep(Duration::from_millis(40));
        assert!(readiness.check().is_err());
        let _replacement = readiness.exporter("jaeger", true);
        assert_eq!(readiness.check(), Ok(()), "a reload's replacement starts clean");

        store.write_failed("read-only file system");
        assert_eq!(readiness.check(), Err(vec!["store /data/spans.db: read-only file system".to_string()]));
        store.written();

        let bus = readiness.receiver("mes_bus");
        assert_eq!(readiness.check(), Ok(()), "not disconnected long enough yet");
        std::thread::sleep(Duration::from_millis(40));
        bus.disconnected(&"connection refused");
        assert_eq!(readiness.check(), Err(vec!["receiver mes_bus not connected to its broker for 0s: connection refused".to_string()]));
        bus.connected();
        assert_eq!(readiness.check(), Ok(()));
        readiness.stopping();
        assert_eq!(readiness.check(), Err(vec!["shutting down".to_string()]));
    }
}
