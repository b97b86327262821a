//! `Monitors`: the one monitor task and the delivery tasks.
//!
//! The monitor task owns every engine. Each turn it takes the facts that arrived (restoring
//! orders that left memory from the store first), fires what is due on the wall clock, writes
//! everything that changed in one store transaction — clocks, alerts and the notices they cause,
//! into the outbox — and only then hands the notices to the delivery tasks, one per notifier,
//! over bounded channels. A delivery task confirms each notice after its notifier delivered it
//! (or gave up for good and dead-lettered it); the next turn deletes it from the outbox. So a
//! crash re-sends exactly the notices that were not confirmed, and a slow notifier never stalls
//! the timers: its channel fills, and the outbox keeps the rest until it drains.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::known::StoredOrders;
use super::order_sla::{Change, Clock, Engine, Phase};
use super::shared::Shared;
use super::{Fact, FactQueue, MonitorConfig, MonitorFeed, ALERTMANAGER_REPEAT_INTERVAL};
use crate::exporters::elasticsearch_monitor_state::EsMonitorState;
use crate::notifiers::{Notice, NoticeKind, Notifier, NotifierConfig};
use crate::orders::OrderAlert;
use crate::store::{ClockRow, MonitorWrite, OrderClocks, SpanStore, StoreError};
use crate::telemetry::{Metrics, MonitorMetrics};

/// Facts waiting for the monitor task at most; beyond, new ones are dropped and counted.
pub const FACT_QUEUE_FACTS: usize = 200_000;
/// Notices waiting for one notifier beyond what the outbox holds anyway.
const DELIVERY_QUEUE: usize = 256;
/// At most this long between two turns, so that the outbox is looked at again.
const MAX_TURN: Duration = Duration::from_secs(1);
/// Outbox rows read per page of a scan, and pages per scan at most.
const OUTBOX_SCAN: usize = 1000;
const OUTBOX_PAGES: usize = 64;
/// Under load, turns that apply facts are at least this far apart: the facts of every request
/// that arrived meanwhile join one turn (one wake-up of the task, one store transaction with
/// each changed order written once, or one Elasticsearch read and bulk write) instead of one
/// turn per request. A transaction's cost is mostly the pages it writes, so fewer, larger ones
/// cost much less per order (bench-monitor: +23 % CPU per span at 50 ms, +10 % at 200 ms).
/// Capped at a fifth of the smallest `grace` (see [`pace`]), so that alerts are not late.
pub(super) const MIN_TURN: Duration = Duration::from_millis(200);
/// The pace is never below this, whatever the grace.
const MIN_PACE: Duration = Duration::from_millis(10);

/// How far apart turns that apply facts are: [`MIN_TURN`], or a fifth of the smallest grace of
/// the monitors when that is less (a fact waits at most this long before it is judged).
pub(super) fn pace(graces: impl IntoIterator<Item = Duration>) -> Duration {
    graces.into_iter().map(|g| g / 5).fold(MIN_TURN, Duration::min).max(MIN_PACE)
}
/// The fact buffers keep at most this many facts' room between turns (about 5 MiB): kept, they
/// are not allocated (and their pages faulted in) again every turn.
const KEEP_FACTS: usize = 1 << 16;
/// How often finished monitor state older than the retention is forgotten.
const PURGE_EVERY: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum MonitorStartError {
    #[error("monitor state cannot be read from the store")]
    Store(#[source] StoreError),
    #[error("the monitor state read task failed")]
    Task(#[source] tokio::task::JoinError),
    #[error("monitor state cannot be read from Elasticsearch")]
    Elasticsearch(#[source] crate::exporters::EsError),
    #[error("notifier {id:?} cannot start")]
    Notifier {
        id: String,
        #[source]
        source: crate::notifiers::NotifierSetupError,
    },
}

/// Where the monitors keep their state: the read API's backend.
#[derive(Clone)]
pub enum MonitorStore {
    /// One instance; one SQLite transaction per turn.
    Embedded(Arc<SpanStore>),
    /// Shared by every instance that names the same index; conditional writes (shared.rs).
    Elasticsearch(EsMonitorState),
}

/// The running monitors: the feed the pipelines call, the monitor task and the delivery tasks.
pub struct Monitors {
    feed: Arc<MonitorFeed>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
    /// Asks the task for a turn now, answered once it is done (`settle`).
    settle: mpsc::Sender<tokio::sync::oneshot::Sender<()>>,
    /// CPU time the task's turns took (see [`Monitors::turns_cpu`]).
    turns_cpu_us: Arc<AtomicU64>,
}

/// One monitor's engine and the notifier ids its notices go to (by index).
pub(super) struct Watch {
    pub(super) engine: Engine,
    pub(super) notify: Vec<String>,
    /// Orders that may have clocks in the store (the others need no read).
    pub(super) stored: StoredOrders,
}

/// A notice and its outbox id, for one notifier.
pub(super) struct Outgoing {
    id: i64,
    notice: Notice,
}

pub(super) fn wall_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// `{public_url}/orders/{id}`, the id percent-encoded outside the unreserved characters.
pub(super) fn link(public_url: Option<&str>, order_id: &str) -> Option<String> {
    let base = public_url?.trim_end_matches('/');
    let mut id = String::with_capacity(order_id.len());
    for b in order_id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            id.push(b as char);
        } else {
            id.push_str(&format!("%{b:02X}"));
        }
    }
    Some(format!("{base}/orders/{id}"))
}

impl Monitors {
    /// Builds every monitor, restores its running clocks and firing alerts from `store`, starts
    /// the notifiers the monitors name and the monitor task. `grace` is the default for monitors
    /// that set none; `retention` is how long finished state is kept.
    pub async fn start(
        configs: &BTreeMap<String, MonitorConfig>,
        notifiers: &BTreeMap<String, NotifierConfig>,
        grace: Duration,
        retention: Duration,
        public_url: Option<String>,
        store: MonitorStore,
        metrics: &Metrics,
    ) -> Result<Monitors, MonitorStartError> {
        let monitor_metrics = metrics.monitors();
        register_thresholds(configs, metrics);
        let mut watches = Vec::new();
        let mut statuses = HashSet::new();
        let mut stages = HashSet::new();
        let mut used: BTreeMap<String, Arc<Notifier>> = BTreeMap::new();
        let mut graces = Vec::new();
        for (id, config) in configs {
            let MonitorConfig::OrderSla(c) = config;
            let repeat: Vec<Duration> = c
                .notify
                .iter()
                .map(|n| match notifiers.get(n) {
                    Some(NotifierConfig::Alertmanager(_)) => c.repeat_interval.min(ALERTMANAGER_REPEAT_INTERVAL),
                    _ => c.repeat_interval,
                })
                .collect();
            for n in &c.notify {
                if !used.contains_key(n) {
                    let Some(nc) = notifiers.get(n) else { continue };
                    let notifier =
                        Notifier::build(n, nc, metrics).map_err(|source| MonitorStartError::Notifier { id: n.clone(), source })?;
                    used.insert(n.clone(), Arc::new(notifier));
                }
            }
            statuses.extend(c.lifecycle.iter().chain(&c.terminal).cloned());
            for rule in &c.rules {
                stages.extend(rule.from_stage.iter().chain(&rule.to_stage).cloned());
            }
            graces.push(c.grace.unwrap_or(grace));
            let engine = Engine::new(id, c, c.grace.unwrap_or(grace), repeat);
            watches.push(Watch { engine, notify: c.notify.clone(), stored: StoredOrders::default() });
        }

        // What was running when the gateway stopped (or was killed) comes back; deadlines that
        // passed meanwhile fire on the first turn.
        let now = wall_ns();
        let (store, shared) = match store {
            MonitorStore::Embedded(store) => {
                for watch in &mut watches {
                    let monitor = watch.engine.monitor.clone();
                    let s = store.clone();
                    let (clocks, alerts, ids) = tokio::task::spawn_blocking(move || {
                        let (clocks, alerts) = s.monitor_running(&monitor)?;
                        Ok((clocks, alerts, s.monitor_order_ids(&monitor)?))
                    })
                    .await
                    .map_err(MonitorStartError::Task)?
                    .map_err(MonitorStartError::Store)?;
                    for id in &ids {
                        watch.stored.insert(id);
                    }
                    let restored = restore(&mut watch.engine, &clocks, &alerts, now);
                    if restored > 0 {
                        tracing::info!(monitor = %watch.engine.monitor, orders = restored, "order monitor state restored from the store");
                    }
                    // The store keeps an order's clocks in one row: each turn writes the orders
                    // that changed, whole (see turn_embedded).
                    watch.engine.track_changed_orders();
                }
                (Some(store), None)
            }
            MonitorStore::Elasticsearch(es) => {
                es.install().await.map_err(MonitorStartError::Elasticsearch)?;
                es.refresh().await.map_err(MonitorStartError::Elasticsearch)?;
                for watch in &mut watches {
                    let restored = super::shared::restore(&es, &mut watch.engine, now).await.map_err(MonitorStartError::Elasticsearch)?;
                    if restored > 0 {
                        tracing::info!(monitor = %watch.engine.monitor, clocks = restored, index = %es.index(), "order monitor state restored from Elasticsearch");
                    }
                }
                let n = watches.len();
                (None, Some(Shared::new(es, n)))
            }
        };

        let queue = FactQueue::new(FACT_QUEUE_FACTS);
        let feed = Arc::new(MonitorFeed::new(queue.clone(), statuses, stages, monitor_metrics.dropped_facts.clone()));
        let (ack_tx, ack_rx) = mpsc::channel(DELIVERY_QUEUE * used.len().max(1));
        let mut deliveries = HashMap::new();
        let mut delivery_tasks = Vec::new();
        for (id, notifier) in used {
            let (dtx, drx) = mpsc::channel(DELIVERY_QUEUE);
            deliveries.insert(id, dtx);
            delivery_tasks.push(tokio::spawn(deliver(notifier, drx, ack_tx.clone())));
        }
        drop(ack_tx);
        let stop = CancellationToken::new();
        let (settle, settle_rx) = mpsc::channel(4);
        let turns_cpu_us = Arc::new(AtomicU64::new(0));
        let task = MonitorTask {
            watches,
            store,
            shared,
            metrics: monitor_metrics,
            public_url,
            deliveries,
            delivery_tasks,
            in_flight: HashSet::new(),
            outbox_behind: true,
            notifiers_behind: HashSet::new(),
            unwritten: Vec::new(),
            retention,
            pace: pace(graces),
            spare_rows: Vec::new(),
            turns_cpu_us: turns_cpu_us.clone(),
        };
        let handle = tokio::spawn(task.run(queue, ack_rx, settle_rx, stop.clone()));
        Ok(Monitors { feed, stop, task: Some(handle), settle, turns_cpu_us })
    }

    /// Waits until every fact queued before the call is applied and written: the task takes a
    /// turn at once instead of at its pace (`tracegate bench-monitor` measures a monitor that
    /// keeps running between its rounds this way).
    pub async fn settle(&self) {
        let (done, wait) = tokio::sync::oneshot::channel();
        if self.settle.send(done).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// CPU time the monitor task's turns took so far with the embedded store: applying facts
    /// and firing deadlines, and writing the store (on its blocking thread), measured per
    /// thread. `tracegate bench-monitor` reports it beside the process's whole CPU time.
    pub fn turns_cpu(&self) -> Duration {
        Duration::from_micros(self.turns_cpu_us.load(Ordering::Relaxed))
    }

    /// What the pipelines show their batches to.
    pub fn feed(&self) -> Arc<MonitorFeed> {
        self.feed.clone()
    }

    /// Stops the monitor task: facts already queued are applied and written, notices in
    /// delivery get up to `patience` to be confirmed; the rest stay in the outbox for the next
    /// start.
    pub async fn stop(mut self, patience: Duration) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let mut task = task;
            if tokio::time::timeout(patience + Duration::from_secs(5), &mut task).await.is_err() {
                task.abort();
                tracing::warn!("the order monitor task did not stop in time; unconfirmed notices stay in the outbox");
            }
        }
    }
}

/// Puts stored clocks and alerts of a monitor back in its engine; returns how many orders.
fn restore(engine: &mut Engine, clocks: &[ClockRow], alerts: &[OrderAlert], now: u64) -> usize {
    let mut by_order: BTreeMap<&str, Vec<(String, Clock)>> = BTreeMap::new();
    for row in clocks {
        let Some(phase) = Phase::parse(&row.phase) else {
            tracing::warn!(order_id = %row.order_id, rule = %row.rule, phase = %row.phase, "unknown clock phase in the store; ignored");
            continue;
        };
        by_order.entry(&row.order_id).or_default().push((row.rule.clone(), Clock { from_ns: row.from_ns, end_ns: row.end_ns, phase }));
    }
    let mut firing: HashMap<&str, Vec<OrderAlert>> = HashMap::new();
    for a in alerts {
        firing.entry(&a.order_id).or_default().push(a.clone());
    }
    for (order, clocks) in &by_order {
        engine.restore(order, clocks, firing.get(order).map(Vec::as_slice).unwrap_or(&[]), now);
    }
    by_order.len()
}

pub(super) struct MonitorTask {
    pub(super) watches: Vec<Watch>,
    /// The embedded store, or `shared` for Elasticsearch (exactly one is set).
    store: Option<Arc<SpanStore>>,
    pub(super) shared: Option<Shared>,
    pub(super) metrics: MonitorMetrics,
    pub(super) public_url: Option<String>,
    pub(super) deliveries: HashMap<String, mpsc::Sender<Outgoing>>,
    delivery_tasks: Vec<JoinHandle<()>>,
    /// Outbox ids handed to a delivery task and not confirmed yet.
    pub(super) in_flight: HashSet<i64>,
    /// Some outbox rows were not handed over (a delivery queue was full, or at start).
    pub(super) outbox_behind: bool,
    /// Notifiers whose delivery queue was full since the last outbox scan: their notices wait
    /// in the outbox and go out in the scan's order, so that none overtakes an older one.
    pub(super) notifiers_behind: HashSet<String>,
    /// Writes that failed, tried again first next turn (their notices wait with them).
    unwritten: Vec<(MonitorWrite, Vec<(usize, Notice)>)>,
    retention: Duration,
    /// Turns that apply facts are at least this far apart (see [`pace`]).
    pace: Duration,
    /// Room for the rows of a turn's changed orders, kept from the turn before. The rows are
    /// written on a blocking thread and come back to be let go of here: a busy monitor then
    /// writes each turn into memory it already has, instead of growing new buffers every turn
    /// and freeing them on another thread.
    spare_rows: Vec<OrderClocks>,
    turns_cpu_us: Arc<AtomicU64>,
}

impl MonitorTask {
    async fn run(
        mut self,
        facts: Arc<FactQueue>,
        mut acks: mpsc::Receiver<i64>,
        mut settles: mpsc::Receiver<tokio::sync::oneshot::Sender<()>>,
        stop: CancellationToken,
    ) {
        let mut last_purge = tokio::time::Instant::now();
        let mut last_facts = tokio::time::Instant::now() - self.pace;
        let mut delivered: Vec<i64> = Vec::new();
        // The facts of a turn; emptied after it and swapped with the queue's buffer next turn.
        let mut batch: Vec<Fact> = Vec::new();
        let mut settled: Option<tokio::sync::oneshot::Sender<()>> = None;
        loop {
            let now = wall_ns();
            let next = self.watches.iter().filter_map(|w| w.engine.next_due()).min();
            let wait = next.map(|at| Duration::from_nanos(at.saturating_sub(now))).unwrap_or(MAX_TURN).min(MAX_TURN);
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                _ = facts.ready() => {
                    // Facts right after a turn wait for more to join them (see MIN_TURN); the
                    // queue does not wake the task again meanwhile.
                    let ready = last_facts + self.pace;
                    if ready > tokio::time::Instant::now() {
                        tokio::select! {
                            _ = stop.cancelled() => {}
                            _ = tokio::time::sleep_until(ready) => {}
                            // Asked to settle: the turn is taken now.
                            Some(done) = settles.recv() => settled = Some(done),
                        }
                    }
                    last_facts = tokio::time::Instant::now();
                }
                Some(id) = acks.recv() => delivered.push(id),
                Some(done) = settles.recv() => settled = Some(done),
                _ = tokio::time::sleep(wait) => {}
            }
            // Whatever is queued joins this turn (one store transaction).
            facts.take_into(&mut batch);
            while let Ok(id) = acks.try_recv() {
                delivered.push(id);
            }
            self.turn(&batch, std::mem::take(&mut delivered)).await;
            if let Some(done) = settled.take() {
                let _ = done.send(());
            }
            batch.clear();
            batch.shrink_to(KEEP_FACTS);
            if last_purge.elapsed() >= PURGE_EVERY {
                last_purge = tokio::time::Instant::now();
                self.purge().await;
            }
        }
        self.shut_down(&facts, acks).await;
    }

    /// Applies `batch`, fires what is due, writes, hands notices over.
    async fn turn(&mut self, batch: &[Fact], delivered: Vec<i64>) {
        match self.store.clone() {
            Some(store) => self.turn_embedded(store, batch, delivered).await,
            None => self.turn_shared(batch, delivered).await,
        }
    }

    async fn turn_embedded(&mut self, store: Arc<SpanStore>, batch: &[Fact], delivered: Vec<i64>) {
        // Confirmed notices stay in flight until the write that removes them from the outbox
        // succeeds: a scan before then must not send them again.
        // Orders that left memory come back from the store before their new facts apply.
        for i in 0..self.watches.len() {
            let (engine, stored) = (&self.watches[i].engine, &self.watches[i].stored);
            let mut unknown: Vec<String> = batch
                .iter()
                .filter(|f| !engine.knows(&f.order_id) && engine.wants(f) && stored.may_contain(&f.order_id))
                .map(|f| f.order_id.to_string())
                .collect();
            unknown.sort();
            unknown.dedup();
            if unknown.is_empty() {
                continue;
            }
            let monitor = engine.monitor.clone();
            let store = store.clone();
            let read = tokio::task::spawn_blocking(move || {
                let ids: Vec<&str> = unknown.iter().map(String::as_str).collect();
                store.monitor_orders(&monitor, &ids)
            })
            .await;
            match read {
                Ok(Ok((clocks, alerts))) => {
                    restore(&mut self.watches[i].engine, &clocks, &alerts, wall_ns());
                }
                Ok(Err(error)) => {
                    tracing::error!(monitor = %self.watches[i].engine.monitor, error = %crate::shared::error_chain(&error), "cannot read monitor state; facts of returning orders are judged without it");
                }
                Err(error) => tracing::error!(%error, "monitor state read task failed"),
            }
        }

        let engine_cpu = crate::shared::thread_cpu_time();
        let now = wall_ns();
        let mut writes = Vec::new();
        for watch in &mut self.watches {
            let mut changes = Vec::new();
            for fact in batch {
                watch.engine.apply(fact, now, &mut changes);
            }
            watch.engine.tick(now, &mut changes);
            let monitor = watch.engine.monitor.clone();
            let mut write = MonitorWrite { monitor: monitor.clone(), now_ns: now, ..Default::default() };
            write.orders = std::mem::take(&mut self.spare_rows);
            let mut notices = Vec::new();
            for change in changes {
                match change {
                    // Not reported here (track_changed_orders): the orders that changed are
                    // taken below.
                    Change::Clock { .. } => {}
                    Change::Alert(alert) => {
                        write.alerts.push(alert);
                    }
                    Change::Notice { kind, alert, notifier } => {
                        let id = watch.notify[notifier].clone();
                        let link = link(self.public_url.as_deref(), &alert.order_id);
                        write.notices.push((id, kind.as_str().to_string(), alert.clone()));
                        notices.push((notifier, Notice { kind, alert, link }));
                    }
                }
            }
            // The store keeps an order's clocks in one row: each order that changed is written
            // once per turn, with all its clocks as they end the turn.
            watch.engine.take_changed_orders(|order_id, clocks| {
                let mut row = OrderClocks::new(order_id.clone());
                for (rule, clock) in clocks {
                    row.push(rule, clock.from_ns, clock.end_ns, clock.phase.as_str());
                }
                if !row.is_empty() {
                    write.orders.push(row);
                }
            });
            for (rule, severity) in watch.engine.take_fired() {
                self.metrics.fired(&monitor, &rule, severity.as_str());
            }
            for (rule, n) in watch.engine.pending_per_rule() {
                self.metrics.set_pending(&monitor, rule, n);
            }
            for (rule, n) in watch.engine.firing_per_rule() {
                self.metrics.set_firing(&monitor, rule, n);
            }
            writes.push((write, notices));
        }
        if let Some((first, _)) = writes.first_mut() {
            first.delivered = delivered;
        }
        self.count_cpu(crate::shared::thread_cpu_time().saturating_sub(engine_cpu));
        let mut all = std::mem::take(&mut self.unwritten);
        all.extend(writes.into_iter().filter(|(w, _)| !w.is_empty()));
        if all.is_empty() {
            self.evict();
            self.hand_over_outbox().await;
            return;
        }
        let store = store.clone();
        let turns_cpu_us = self.turns_cpu_us.clone();
        let result = tokio::task::spawn_blocking(move || {
            let cpu = crate::shared::thread_cpu_time();
            let mut done = Vec::new();
            let mut failed = false;
            for (write, notices) in all {
                if failed {
                    // Not tried: written after one that failed, it would be overwritten by
                    // that older one when it succeeds. They go again together, in order.
                    done.push(Err((None, write, notices)));
                    continue;
                }
                match store.monitor_write(&write) {
                    Ok(ids) => done.push(Ok((write, ids, notices))),
                    Err(error) => {
                        failed = true;
                        done.push(Err((Some(error), write, notices)));
                    }
                }
            }
            let spent = crate::shared::thread_cpu_time().saturating_sub(cpu);
            turns_cpu_us.fetch_add(spent.as_micros() as u64, Ordering::Relaxed);
            done
        })
        .await;
        let Ok(results) = result else {
            tracing::error!("the monitor's store write task failed");
            return;
        };
        for r in results {
            match r {
                Ok((mut write, ids, notices)) => {
                    for id in &write.delivered {
                        self.in_flight.remove(id);
                    }
                    if write.orders.capacity() > self.spare_rows.capacity() {
                        write.orders.clear();
                        // A burst far larger than usual does not keep its room for ever.
                        write.orders.shrink_to(KEEP_FACTS);
                        self.spare_rows = std::mem::take(&mut write.orders);
                    }
                    let Some(watch) = self.watches.iter().find(|w| w.engine.monitor == write.monitor) else { continue };
                    for (id, (notifier, notice)) in ids.into_iter().zip(notices) {
                        let target = &watch.notify[notifier];
                        hand_over(
                            &self.deliveries,
                            &mut self.in_flight,
                            &mut self.outbox_behind,
                            &mut self.notifiers_behind,
                            target,
                            id,
                            notice,
                        );
                    }
                }
                Err((error, write, notices)) => {
                    if let Some(error) = error {
                        tracing::error!(monitor = %write.monitor, error = %crate::shared::error_chain(&error), "cannot write monitor state; trying again next turn, its notices wait");
                    }
                    self.unwritten.push((write, notices));
                }
            }
        }
        if self.unwritten.is_empty() {
            self.evict();
        }
        self.hand_over_outbox().await;
    }

    fn count_cpu(&self, spent: Duration) {
        self.turns_cpu_us.fetch_add(spent.as_micros() as u64, Ordering::Relaxed);
    }

    /// Orders with nothing running leave memory once their clocks are written.
    fn evict(&mut self) {
        for watch in &mut self.watches {
            for id in watch.engine.evict_finished() {
                watch.stored.insert(&id);
            }
        }
    }

    /// Hands outbox rows not in flight to their notifiers (at start, and after a delivery
    /// queue was full).
    async fn hand_over_outbox(&mut self) {
        let Some(store) = self.store.clone() else {
            return self.hand_over_shared_outbox().await;
        };
        if !self.outbox_behind {
            return;
        }
        self.outbox_behind = false;
        // The scan hands notices over oldest first: a notifier that is behind again during it
        // takes none of its later ones.
        self.notifiers_behind.clear();
        let monitors: Vec<String> = self.watches.iter().map(|w| w.engine.monitor.clone()).collect();
        for monitor in monitors {
            // Page by page, oldest first: rows nobody can send now (a notifier no longer
            // configured, one already in delivery) do not hide the rows behind them.
            // Rows that could go out, looked at this scan: a slow notifier's backlog is read
            // as far as before (a window of them), not to its end every turn.
            let (mut after, mut looked_at) = (0, 0);
            for _ in 0..OUTBOX_PAGES {
                let (monitor, store) = (monitor.clone(), store.clone());
                let page = match tokio::task::spawn_blocking(move || store.monitor_outbox(&monitor, after, OUTBOX_SCAN)).await {
                    Ok(Ok(page)) => page,
                    Ok(Err(error)) => {
                        tracing::error!(error = %crate::shared::error_chain(&error), "cannot read the monitor outbox");
                        self.outbox_behind = true;
                        break;
                    }
                    Err(_) => break,
                };
                let Some(last) = page.last_id else { break };
                after = last;
                looked_at += self.hand_over_rows(page.rows);
                if !page.full || looked_at >= OUTBOX_SCAN + DELIVERY_QUEUE * 8 {
                    break;
                }
            }
        }
    }

    /// Hands outbox rows to their notifiers, in the order given; returns how many of them a
    /// configured notifier could take (those not already in delivery).
    fn hand_over_rows(&mut self, rows: Vec<crate::store::OutboxRow>) -> usize {
        let mut sendable = 0;
        for row in rows {
            if self.in_flight.contains(&row.id) {
                continue;
            }
            if !self.deliveries.contains_key(&row.notifier) {
                // A notifier no longer configured: nobody can send it; it stays for an
                // operator (and is not retried in a loop).
                continue;
            }
            sendable += 1;
            let Some(kind) = notice_kind(&row.kind) else {
                tracing::warn!(id = row.id, kind = %row.kind, "unknown notice kind in the outbox; skipped");
                continue;
            };
            let link = link(self.public_url.as_deref(), &row.alert.order_id);
            let notice = Notice { kind, alert: row.alert, link };
            hand_over(
                &self.deliveries,
                &mut self.in_flight,
                &mut self.outbox_behind,
                &mut self.notifiers_behind,
                &row.notifier,
                row.id,
                notice,
            );
        }
        sendable
    }

    async fn purge(&self) {
        let cutoff = wall_ns().saturating_sub(u64::try_from(self.retention.as_nanos()).unwrap_or(u64::MAX));
        let Some(store) = self.store.clone() else {
            return self.purge_shared(cutoff).await;
        };
        match tokio::task::spawn_blocking(move || store.purge_monitor_state(cutoff)).await {
            Ok(Ok(n)) if n > 0 => tracing::debug!(rows = n, "finished monitor state past retention forgotten"),
            Ok(Err(error)) => tracing::warn!(error = %crate::shared::error_chain(&error), "cannot purge monitor state"),
            _ => {}
        }
    }

    /// The last turn: facts still queued are applied and written; deliveries in progress may
    /// finish and be confirmed for a few seconds; what is left stays in the outbox.
    async fn shut_down(mut self, facts: &FactQueue, mut acks: mpsc::Receiver<i64>) {
        let batch = facts.close();
        let mut delivered = Vec::new();
        while let Ok(id) = acks.try_recv() {
            delivered.push(id);
        }
        self.turn(&batch, delivered).await;
        // No new notices: the delivery tasks end when their queues are empty.
        self.deliveries.clear();
        let deadline = tokio::time::Instant::now() + SHUTDOWN_DELIVERY_PATIENCE;
        let mut delivered = Vec::new();
        while !self.in_flight.is_empty() {
            match tokio::time::timeout_at(deadline, acks.recv()).await {
                Ok(Some(id)) => {
                    self.in_flight.remove(&id);
                    delivered.push(id);
                }
                _ => break,
            }
        }
        for task in self.delivery_tasks.drain(..) {
            task.abort();
        }
        if self.store.is_none() {
            if !delivered.is_empty() {
                // Confirmations are removed from their documents by one more turn.
                self.turn_shared(&[], delivered).await;
            }
        } else if !delivered.is_empty() || !self.unwritten.is_empty() {
            let Some(store) = self.store.clone() else { return };
            let mut writes: Vec<MonitorWrite> = self.unwritten.drain(..).map(|(w, _)| w).collect();
            writes.push(MonitorWrite { monitor: String::new(), delivered, now_ns: wall_ns(), ..Default::default() });
            let _ = tokio::task::spawn_blocking(move || {
                for w in writes {
                    if let Err(error) = store.monitor_write(&w) {
                        tracing::error!(error = %crate::shared::error_chain(&error), "cannot write monitor state at shutdown");
                    }
                }
            })
            .await;
        }
        if !self.in_flight.is_empty() {
            tracing::info!(
                notices = self.in_flight.len(),
                "notices not confirmed before shutdown stay in the outbox and are sent at the next start"
            );
        }
        tracing::info!("order monitors stopped");
    }
}

/// The outbox's word for a notice kind, read back (`NoticeKind::as_str` wrote it).
fn notice_kind(text: &str) -> Option<NoticeKind> {
    [NoticeKind::Fired, NoticeKind::Resolved, NoticeKind::Repeat].into_iter().find(|k| k.as_str() == text)
}

/// How long shutdown waits for notices being delivered to be confirmed.
const SHUTDOWN_DELIVERY_PATIENCE: Duration = Duration::from_secs(3);

pub(super) fn hand_over(
    deliveries: &HashMap<String, mpsc::Sender<Outgoing>>,
    in_flight: &mut HashSet<i64>,
    behind: &mut bool,
    notifiers_behind: &mut HashSet<String>,
    notifier: &str,
    id: i64,
    notice: Notice,
) {
    let Some(tx) = deliveries.get(notifier) else { return };
    // Older notices of this notifier wait in the outbox: this one waits behind them (a
    // `resolved` must not reach it before the `fired` it follows).
    if notifiers_behind.contains(notifier) {
        *behind = true;
        return;
    }
    match tx.try_send(Outgoing { id, notice }) {
        Ok(()) => {
            in_flight.insert(id);
        }
        // Full (a slow notifier) or closed (shutdown): the outbox keeps it.
        Err(_) => {
            *behind = true;
            notifiers_behind.insert(notifier.to_string());
        }
    }
}

/// One notifier's delivery task: sends in order, confirms each notice once the notifier is done
/// with it (delivered, or given up on and dead-lettered by the notifier).
async fn deliver(notifier: Arc<Notifier>, mut rx: mpsc::Receiver<Outgoing>, acks: mpsc::Sender<i64>) {
    while let Some(Outgoing { id, notice }) = rx.recv().await {
        if let Err(error) = notifier.deliver(&notice).await {
            tracing::warn!(notifier = %notifier.id(), order_id = %notice.alert.order_id, rule = %notice.alert.rule, %error, "notice not delivered (given up; see the notifier's dead letters)");
        }
        if acks.send(id).await.is_err() {
            return;
        }
    }
}

/// `tracegate_order_monitor_threshold_seconds`: each rule's threshold, for dashboards to draw
/// beside the transition times of the `span_metrics` processor (registered once per process).
fn register_thresholds(configs: &BTreeMap<String, MonitorConfig>, metrics: &Metrics) {
    type Threshold = prometheus_client::metrics::gauge::Gauge<f64, std::sync::atomic::AtomicU64>;
    let thresholds = prometheus_client::metrics::family::Family::<Vec<(String, String)>, Threshold>::default();
    for (id, config) in configs {
        let MonitorConfig::OrderSla(c) = config;
        for rule in &c.rules {
            let from = rule.from.clone().or_else(|| rule.from_stage.clone()).unwrap_or_default();
            let to = rule.to.clone().or_else(|| rule.to_stage.clone()).unwrap_or_default();
            let labels = vec![
                ("monitor".to_string(), id.clone()),
                ("rule".to_string(), rule.name.clone()),
                ("from".to_string(), from),
                ("to".to_string(), to),
                ("severity".to_string(), rule.severity.as_str().to_string()),
            ];
            thresholds.get_or_create(&labels).set(rule.within.as_secs_f64());
        }
    }
    metrics.register("tracegate_order_monitor_threshold_seconds", "The threshold of each order-monitor rule", thresholds);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_is_min_turn_unless_a_grace_is_short() {
        let s = Duration::from_secs;
        assert_eq!(pace([s(10), s(30)]), MIN_TURN);
        assert_eq!(pace(Vec::new()), MIN_TURN);
        // A fact waits at most a fifth of the grace before it is judged.
        assert_eq!(pace([s(30), Duration::from_millis(500)]), Duration::from_millis(100));
        assert_eq!(pace([Duration::from_millis(1)]), MIN_PACE);
    }

    /// A notifier whose queue was full once takes none of its newer notices until the outbox
    /// scan has handed over the older ones: a `resolved` never overtakes its `fired`.
    #[test]
    fn a_notice_never_overtakes_an_older_one_waiting_in_the_outbox() {
        use crate::notifiers::NoticeKind;
        use crate::orders::OrderAlert;
        let notice = |kind| Notice { kind, alert: OrderAlert::firing_for_test("A-1"), link: None };
        let (tx, mut rx) = mpsc::channel(1);
        let deliveries: HashMap<String, mpsc::Sender<Outgoing>> = [("hook".to_string(), tx)].into();
        let (mut in_flight, mut behind, mut notifiers_behind) = (HashSet::new(), false, HashSet::new());
        let mut give = |id, kind| hand_over(&deliveries, &mut in_flight, &mut behind, &mut notifiers_behind, "hook", id, notice(kind));
        give(1, NoticeKind::Repeat);
        give(2, NoticeKind::Fired); // the queue is full: it waits in the outbox
        assert_eq!(rx.try_recv().unwrap().id, 1);
        give(3, NoticeKind::Resolved); // room now, but notice 2 is older
        assert!(rx.try_recv().is_err(), "the resolved notice overtook the fired one");
        assert!(behind);
        assert_eq!(in_flight, HashSet::from([1]));
        // The outbox scan starts afresh and hands them over oldest first.
        notifiers_behind.clear();
        hand_over(&deliveries, &mut in_flight, &mut behind, &mut notifiers_behind, "hook", 2, notice(NoticeKind::Fired));
        assert_eq!(rx.try_recv().unwrap().id, 2);
    }

    /// A span that reports `status` for `order`.
    fn status_span(order: &str, status: &str) -> opentelemetry_proto::tonic::trace::v1::ResourceSpans {
        use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
        use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
        let kv = |k: &str, v: &str| KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue(v.into())) }),
            ..Default::default()
        };
        let span = Span {
            start_time_unix_nano: wall_ns(),
            attributes: vec![kv("order.id", order), kv("order.status", status)],
            ..Default::default()
        };
        ResourceSpans { scope_spans: vec![ScopeSpans { spans: vec![span], ..Default::default() }], ..Default::default() }
    }

    /// Monitors on the embedded `store` (grace 10 s, state kept an hour).
    async fn start_on(
        store: &Arc<SpanStore>,
        configs: &BTreeMap<String, MonitorConfig>,
        notifiers: &BTreeMap<String, NotifierConfig>,
    ) -> Monitors {
        let metrics = crate::telemetry::Metrics::new();
        let store = MonitorStore::Embedded(store.clone());
        Monitors::start(configs, notifiers, Duration::from_secs(10), Duration::from_secs(3600), None, store, &metrics).await.unwrap()
    }

    /// Notices of a notifier no longer configured, more than a page of them, do not hide the
    /// older notices of a notifier that is: the scan at start reads the outbox page by page.
    #[tokio::test]
    async fn notices_nobody_can_send_do_not_hide_the_ones_behind_them() {
        use crate::orders::OrderAlert;
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SpanStore::open(dir.path(), &[]).unwrap());
        let alert = OrderAlert::firing_for_test;
        let mut notices: Vec<(String, String, OrderAlert)> =
            (0..OUTBOX_SCAN * 2 + 10).map(|i| ("gone".to_string(), "fired".to_string(), alert(&format!("G-{i}")))).collect();
        notices.push(("hook".to_string(), "fired".to_string(), alert("A-1")));
        store.monitor_write(&crate::store::MonitorWrite { monitor: "sla".into(), notices, now_ns: 1, ..Default::default() }).unwrap();

        let received: Arc<std::sync::Mutex<Vec<serde_json::Value>>> = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let kept = received.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |body: axum::body::Bytes| {
                let kept = kept.clone();
                async move {
                    kept.lock().unwrap().push(serde_json::from_slice(&body).unwrap());
                    "ok"
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let yaml = format!(
            "receivers: {{otlp: {{grpc: {{endpoint: \"127.0.0.1:0\"}}}}}}\n\
             exporters: {{local: {{type: embedded, path: \"{}\"}}}}\n\
             service: {{pipelines: {{traces: {{receivers: [otlp], exporters: [local]}}}}}}\n\
             notifiers: {{hook: {{type: webhook, url: \"{url}\"}}}}\n\
             monitors: {{sla: {{type: order_sla, lifecycle: [new, accepted], notify: [hook], \
             rules: [{{name: crm_accepts, from: new, to: accepted, within: 1h}}]}}}}\n",
            dir.path().display()
        );
        let config = crate::config::Config::from_yaml(&yaml).unwrap();
        let (configs, notifiers) = (config.monitors, config.notifiers);
        let monitors = start_on(&store, &configs, &notifiers).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while received.lock().unwrap().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let orders: Vec<String> = received.lock().unwrap().iter().map(|b| b["order_id"].as_str().unwrap().to_string()).collect();
        assert_eq!(orders, ["A-1"], "the hook's notice, behind {} nobody can send", OUTBOX_SCAN * 2 + 10);
        monitors.stop(Duration::from_secs(1)).await;
    }

    /// `settle` answers once the facts queued before it are applied and written, long before
    /// the task's own pace would have taken them (a turn is at most 200 ms away, the deadline
    /// here an hour).
    #[tokio::test]
    async fn settle_answers_when_queued_facts_are_written() {
        use crate::pipeline::SpanObserver;
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SpanStore::open(dir.path(), &[]).unwrap());
        let config: super::super::OrderSlaConfig =
            serde_yaml_ng::from_str("lifecycle: [new, accepted]\nrules:\n  - {name: crm_accepts, from: new, to: accepted, within: 1h}\n")
                .unwrap();
        let configs = [("sla".to_string(), MonitorConfig::OrderSla(config))].into_iter().collect();
        let monitors = start_on(&store, &configs, &Default::default()).await;
        // Right after the start, so that the task's pace holds the next facts back.
        monitors.feed().observe(&[status_span("A-1", "new")]);
        monitors.settle().await;
        monitors.feed().observe(&[status_span("A-2", "new")]);
        tokio::time::timeout(Duration::from_millis(180), monitors.settle()).await.expect("settled without waiting for the pace");
        let (clocks, _) = store.monitor_running("sla").unwrap();
        let mut orders: Vec<&str> = clocks.iter().map(|c| c.order_id.as_str()).collect();
        orders.sort();
        assert_eq!(orders, ["A-1", "A-2"], "both orders' running clocks are in the store");
        monitors.stop(Duration::from_secs(1)).await;
    }
}
