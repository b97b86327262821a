//! Monitor state shared by several instances through Elasticsearch (the read API's backend is
//! an `elasticsearch` exporter). Each instance runs its own engines on the facts it sees; the
//! documents (`exporters::elasticsearch_monitor_state`) are where their knowledge meets:
//!
//! - Before a turn decides anything, it reads the documents of the orders its facts name and of
//!   the orders whose timers are due, and joins them into its engines (`Engine::merge`: the
//!   earliest start and end win; an alert another instance fired is held as fired). So a
//!   deadline does not fire here when another instance has seen the order move on.
//! - Every document that changed is written conditionally. **Notices follow from the write, not
//!   from the engine**: the instance whose write moves a document's alert from none to firing
//!   sends `fired`, from firing to resolved sends `resolved`; a write that loses (409) is read
//!   again, joined and decided again, and by then the alert is out. A repeat is claimed by
//!   moving the document's `repeated_ns` for its notifier. So each notice goes out from exactly
//!   one instance.
//! - The notices are recorded in the document by the same write (its outbox, with this
//!   instance as owner) and removed once the notifier confirmed them. After a crash, an owner's
//!   claims older than [`LEASE`] are taken over by whichever instance's conditional write wins.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::order_sla::{Change, Clock, Phase};
use super::service::{hand_over, link, wall_ns, MonitorTask};
use crate::exporters::elasticsearch_monitor_state::{EsMonitorState, NoticeEntry, StateDocument, Versioned, Written};
use crate::exporters::EsError;
use crate::notifiers::{Notice, NoticeKind};
use crate::orders::{AlertState, OrderAlert};

/// How long a notice claimed by another instance may stay unconfirmed before this one takes it
/// over (that instance crashed). An instance renews its claims on the notices its notifiers
/// still hold every third of this, so a slow notifier or a long queue keeps them its own.
pub const LEASE: Duration = Duration::from_secs(30);
/// How often the outbox is searched while some notices wait (for a full delivery queue, or for
/// another instance's lease to pass).
const SCAN_EVERY: Duration = Duration::from_secs(5);
/// Rounds of read, join, write for documents another instance wrote in between.
const CONFLICT_ROUNDS: usize = 5;

/// (order id, rule).
type Key = (String, String);

/// The Elasticsearch side of the monitor task.
pub(super) struct Shared {
    pub(super) es: EsMonitorState,
    /// This process, as the owner of the notices it claims.
    owner: String,
    next_id: i64,
    /// Outbox ids handed to a delivery task -> (document key, entry id).
    handed: HashMap<i64, (String, String)>,
    /// Deliveries confirmed and not yet removed from their documents.
    confirmed: Vec<(String, String)>,
    /// Per watch: clocks changed and not written yet, resolved alerts and repeats they carry.
    dirty: Vec<HashSet<Key>>,
    resolved: Vec<HashMap<Key, OrderAlert>>,
    repeats: Vec<HashMap<Key, Vec<(usize, OrderAlert)>>>,
    last_scan: Option<tokio::time::Instant>,
    /// When the claims on handed notices were last renewed.
    last_renewal: tokio::time::Instant,
}

fn clock_of(doc: &StateDocument) -> Option<Clock> {
    Some(Clock { from_ns: doc.from_ns, end_ns: doc.end_ns, phase: Phase::parse(&doc.phase)? })
}

fn kind_of(text: &str) -> Option<NoticeKind> {
    [NoticeKind::Fired, NoticeKind::Resolved, NoticeKind::Repeat].into_iter().find(|k| k.as_str() == text)
}

impl Shared {
    pub(super) fn new(es: EsMonitorState, watches: usize) -> Shared {
        let owner = format!("{}-{}-{:x}", hostname(), std::process::id(), wall_ns() & 0xffff_ffff);
        Shared {
            es,
            owner,
            next_id: 1,
            handed: HashMap::new(),
            confirmed: Vec::new(),
            dirty: vec![HashSet::new(); watches],
            resolved: vec![HashMap::new(); watches],
            repeats: vec![HashMap::new(); watches],
            last_scan: None,
            last_renewal: tokio::time::Instant::now(),
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "tracegate".into())
}

/// Joins stored documents into an engine; what the join changed is to be written too.
fn join(task: &mut MonitorTask, i: usize, docs: &HashMap<String, Versioned>, now: u64) {
    let mut changes = Vec::new();
    for v in docs.values() {
        let Some(clock) = clock_of(&v.doc) else {
            tracing::warn!(key = %v.doc.key, phase = %v.doc.phase, "unknown clock phase in the monitor index; ignored");
            continue;
        };
        let alert = v.doc.alert();
        task.watches[i].engine.merge(&v.doc.order_id, &v.doc.rule, clock, alert.as_ref(), now, &mut changes);
    }
    collect(task, i, changes);
}

/// Notes what an engine changed: the keys to write, resolved alerts and repeats to claim.
/// Engine notices of firing and resolving are not used here: they follow from the writes.
fn collect(task: &mut MonitorTask, i: usize, changes: Vec<Change>) {
    let Some(shared) = task.shared.as_mut() else { return };
    for change in changes {
        match change {
            Change::Clock { order_id, rule, .. } => {
                shared.dirty[i].insert((order_id, rule));
            }
            Change::Alert(alert) => {
                let key = (alert.order_id.clone(), alert.rule.clone());
                if alert.state == AlertState::Resolved {
                    shared.resolved[i].insert(key.clone(), alert);
                }
                shared.dirty[i].insert(key);
            }
            Change::Notice { kind: NoticeKind::Repeat, alert, notifier } => {
                let key = (alert.order_id.clone(), alert.rule.clone());
                shared.repeats[i].entry(key.clone()).or_default().push((notifier, alert));
                shared.dirty[i].insert(key);
            }
            Change::Notice { .. } => {}
        }
    }
}

impl MonitorTask {
    /// One turn with Elasticsearch state: read and join, apply and tick, write conditionally,
    /// send what the winning writes recorded.
    pub(super) async fn turn_shared(&mut self, batch: &[super::Fact], delivered: Vec<i64>) {
        let Some(shared) = self.shared.as_mut() else { return };
        for id in delivered {
            self.in_flight.remove(&id);
            if let Some(entry) = shared.handed.remove(&id) {
                shared.confirmed.push(entry);
            }
        }
        let now = wall_ns();
        for i in 0..self.watches.len() {
            let monitor = self.watches[i].engine.monitor.clone();
            // Orders whose stored state must be known before deciding: those the facts name,
            // those whose timers are due, and those with writes or confirmations outstanding.
            let engine = &self.watches[i].engine;
            let mut orders: Vec<String> = batch.iter().filter(|f| engine.wants(f)).map(|f| f.order_id.to_string()).collect();
            orders.extend(engine.due_orders(now));
            orders.sort_unstable();
            orders.dedup();
            let rules: Vec<String> = engine.rule_names().map(String::from).collect();
            let shared = self.shared.as_ref().expect("shared state");
            let m = monitor.as_str();
            let mut keys: Vec<String> = orders.iter().flat_map(|o| rules.iter().map(move |r| StateDocument::key(m, r, o))).collect();
            keys.extend(shared.dirty[i].iter().map(|(o, r)| StateDocument::key(&monitor, r, o)));
            keys.extend(shared.confirmed.iter().filter(|(k, _)| k.starts_with(&format!("{monitor}/"))).map(|(k, _)| k.clone()));
            keys.sort_unstable();
            keys.dedup();
            let es = shared.es.clone();
            let mut docs = match es.get(&keys).await {
                Ok(docs) => docs,
                Err(error) => {
                    tracing::error!(monitor = %monitor, %error, "cannot read monitor state from Elasticsearch; facts are judged without it, writes wait");
                    HashMap::new()
                }
            };
            join(self, i, &docs, now);
            let mut changes = Vec::new();
            for fact in batch {
                self.watches[i].engine.apply(fact, now, &mut changes);
            }
            self.watches[i].engine.tick(now, &mut changes);
            self.watches[i].engine.take_fired();
            collect(self, i, changes);

            for round in 0..CONFLICT_ROUNDS {
                let again = self.write_round(i, &docs, now).await;
                if again.is_empty() {
                    break;
                }
                if round + 1 == CONFLICT_ROUNDS {
                    tracing::warn!(monitor = %monitor, documents = again.len(), "monitor documents still contended; written next turn");
                    break;
                }
                match es.get(&again).await {
                    Ok(fresh) => {
                        for k in &again {
                            docs.remove(k);
                        }
                        join(self, i, &fresh, now);
                        docs.extend(fresh);
                    }
                    Err(error) => {
                        tracing::error!(monitor = %monitor, %error, "cannot read monitor state from Elasticsearch");
                        break;
                    }
                }
            }
            let watch = &self.watches[i];
            for (rule, n) in watch.engine.pending_per_rule() {
                self.metrics.set_pending(&monitor, rule, n);
            }
            for (rule, n) in watch.engine.firing_per_rule() {
                self.metrics.set_firing(&monitor, rule, n);
            }
            let shared = self.shared.as_ref().expect("shared state");
            if shared.dirty[i].is_empty() {
                for id in self.watches[i].engine.evict_finished() {
                    self.watches[i].stored.insert(&id);
                }
            }
        }
        self.renew_claims().await;
        self.hand_over_shared_outbox().await;
    }

    /// Every third of [`LEASE`], moves the claim time of the notices this instance handed to its
    /// notifiers and that are not confirmed yet (a notifier retrying, a queue working through a
    /// burst), by conditional writes: no other instance takes over a notice this one still
    /// sends. A write that loses is tried again at the next renewal, well within the lease.
    async fn renew_claims(&mut self) {
        let Some(shared) = self.shared.as_mut() else { return };
        if shared.handed.is_empty() || shared.last_renewal.elapsed() < LEASE / 3 {
            return;
        }
        shared.last_renewal = tokio::time::Instant::now();
        let handed: HashSet<(String, String)> = shared.handed.values().cloned().collect();
        let mut keys: Vec<String> = handed.iter().map(|(k, _)| k.clone()).collect();
        keys.sort_unstable();
        keys.dedup();
        let (es, owner) = (shared.es.clone(), shared.owner.clone());
        let docs = match es.get(&keys).await {
            Ok(docs) => docs,
            Err(error) => {
                tracing::warn!(%error, "cannot read the monitor index to renew the claims on notices in delivery");
                return;
            }
        };
        let now = wall_ns();
        let mut writes = Vec::new();
        for v in docs.into_values() {
            let mut doc = v.doc;
            let mut renewed = false;
            for entry in &mut doc.outbox {
                if handed.contains(&(doc.key.clone(), entry.id.clone())) {
                    if entry.owner == owner {
                        entry.claimed_ns = now;
                        renewed = true;
                    } else {
                        tracing::warn!(key = %doc.key, notice = %entry.id, owner = %entry.owner, "a notice still in delivery here was taken over by another instance; it may go out twice");
                    }
                }
            }
            if renewed {
                writes.push((Some((v.seq_no, v.primary_term)), doc));
            }
        }
        if let Err(error) = es.put(&writes).await {
            tracing::warn!(%error, "cannot renew the claims on notices in delivery");
        }
    }

    /// Builds and writes every dirty document of watch `i` (and those with confirmed notices)
    /// against the versions in `docs`; hands over the notices of the writes that won. Returns
    /// the keys to read again (another instance wrote first).
    async fn write_round(&mut self, i: usize, docs: &HashMap<String, Versioned>, now: u64) -> Vec<String> {
        let monitor = self.watches[i].engine.monitor.clone();
        let shared = self.shared.as_mut().expect("shared state");
        let prefix = format!("{monitor}/");
        let mut confirmed: HashMap<String, Vec<String>> = HashMap::new();
        for (k, e) in shared.confirmed.iter().filter(|(k, _)| k.starts_with(&prefix)) {
            confirmed.entry(k.clone()).or_default().push(e.clone());
        }
        let mut keys: Vec<(String, Option<Key>)> =
            shared.dirty[i].iter().map(|(o, r)| (StateDocument::key(&monitor, r, o), Some((o.clone(), r.clone())))).collect();
        for k in confirmed.keys() {
            if !keys.iter().any(|(key, _)| key == k) {
                keys.push((k.clone(), None));
            }
        }
        let engine = &self.watches[i].engine;
        let notify = &self.watches[i].notify;
        let mut writes = Vec::new();
        // Per write: its key, the dirty key it clears, the notices it claims, the confirmations it removes.
        let mut meta: Vec<(String, Option<Key>, Vec<NoticeEntry>, Vec<String>)> = Vec::new();
        for (key, dirty) in keys {
            let stored = docs.get(&key);
            let mut doc = stored.map(|v| v.doc.clone()).unwrap_or_default();
            let mut claims = Vec::new();
            if let Some((order, rule)) = &dirty {
                let Some((clock, firing)) = engine.snapshot(order, rule) else {
                    // Left memory with nothing to write (the join found it final).
                    shared.dirty[i].remove(&(order.clone(), rule.clone()));
                    continue;
                };
                doc.key = key.clone();
                doc.monitor = monitor.clone();
                doc.rule = rule.clone();
                doc.order_id = order.clone();
                doc.from_ns = clock.from_ns;
                doc.end_ns = clock.end_ns;
                doc.phase = clock.phase.as_str().into();
                let alert = firing.or_else(|| shared.resolved[i].get(&(order.clone(), rule.clone())).cloned()).or_else(|| doc.alert());
                let before = stored.and_then(|v| v.doc.state.clone());
                let after = alert.as_ref().map(|a| a.state);
                let mut kinds: Vec<(NoticeKind, OrderAlert)> = Vec::new();
                if let Some(a) = &alert {
                    match (before.as_deref(), after) {
                        (None, Some(AlertState::Firing)) => kinds.push((NoticeKind::Fired, a.clone())),
                        (None, Some(AlertState::Resolved)) => {
                            let mut fired = a.clone();
                            fired.state = AlertState::Firing;
                            fired.resolved_at = None;
                            fired.late_data = false;
                            kinds.push((NoticeKind::Fired, fired));
                            kinds.push((NoticeKind::Resolved, a.clone()));
                        }
                        (Some("firing"), Some(AlertState::Resolved)) => kinds.push((NoticeKind::Resolved, a.clone())),
                        _ => {}
                    }
                    if before.is_none() {
                        self.metrics.fired(&monitor, rule, a.severity.as_str());
                    }
                }
                let mut outbox = std::mem::take(&mut doc.outbox);
                for (kind, a) in kinds {
                    for n in notify {
                        let entry = NoticeEntry {
                            id: format!("{n}/{}/{now}", kind.as_str()),
                            notifier: n.clone(),
                            kind: kind.as_str().into(),
                            owner: shared.owner.clone(),
                            claimed_ns: now,
                            alert: crate::store::alert_value(&a),
                        };
                        claims.push(entry.clone());
                        outbox.push(entry);
                    }
                }
                if after == Some(AlertState::Firing) {
                    for (notifier, a) in shared.repeats[i].get(&(order.clone(), rule.clone())).into_iter().flatten() {
                        let n = &notify[*notifier];
                        let every = engine.repeat_every(*notifier);
                        let last = doc.repeated_ns.get(n).copied().unwrap_or(0);
                        // Another instance repeated it lately: this repeat is that one.
                        if now.saturating_sub(last) < every / 2 {
                            continue;
                        }
                        doc.repeated_ns.insert(n.clone(), now);
                        let entry = NoticeEntry {
                            id: format!("{n}/repeat/{now}"),
                            notifier: n.clone(),
                            kind: NoticeKind::Repeat.as_str().into(),
                            owner: shared.owner.clone(),
                            claimed_ns: now,
                            alert: crate::store::alert_value(a),
                        };
                        claims.push(entry.clone());
                        outbox.push(entry);
                    }
                }
                doc.set_alert(alert.as_ref());
                doc.outbox = outbox;
            }
            let removed: Vec<String> = confirmed.get(&key).cloned().unwrap_or_default();
            let outbox: Vec<NoticeEntry> = std::mem::take(&mut doc.outbox).into_iter().filter(|e| !removed.contains(&e.id)).collect();
            doc.set_outbox(outbox);
            if stored.is_none() && dirty.is_none() {
                continue;
            }
            if let Some(v) = stored {
                doc.updated_ns = v.doc.updated_ns;
                if v.doc == doc {
                    // Nothing new: the stored document already says all of it (its resolved
                    // alert and its repeats too, which would otherwise stay here for good).
                    if let Some(k) = &dirty {
                        shared.dirty[i].remove(k);
                        shared.resolved[i].remove(k);
                        shared.repeats[i].remove(k);
                    }
                    shared.confirmed.retain(|(k, e)| !(k == &key && removed.contains(e)));
                    continue;
                }
            }
            doc.updated_ns = now;
            writes.push((stored.map(|v| (v.seq_no, v.primary_term)), doc));
            meta.push((key, dirty, claims, removed));
        }
        if writes.is_empty() {
            return Vec::new();
        }
        let es = shared.es.clone();
        let outcomes = match es.put(&writes).await {
            Ok(outcomes) => outcomes,
            Err(error) => {
                tracing::error!(monitor = %monitor, %error, "cannot write monitor state to Elasticsearch; trying again next turn, its notices wait");
                // Elasticsearch may have applied the write all the same (a timeout): the next
                // turn then finds nothing to write, and only the outbox scan hands its notices
                // over.
                self.outbox_behind = true;
                return Vec::new();
            }
        };
        let mut again = Vec::new();
        for ((key, dirty, claims, removed), outcome) in meta.into_iter().zip(outcomes) {
            let shared = self.shared.as_mut().expect("shared state");
            match outcome {
                Written::Done => {
                    if let Some(k) = &dirty {
                        shared.dirty[i].remove(k);
                        shared.resolved[i].remove(k);
                        shared.repeats[i].remove(k);
                    }
                    shared.confirmed.retain(|(k, e)| !(k == &key && removed.contains(e)));
                    for entry in claims {
                        self.hand_over_entry(&key, entry);
                    }
                }
                Written::Again => again.push(key),
                Written::Refused(error) => {
                    tracing::error!(monitor = %monitor, key = %key, %error, "Elasticsearch refused a monitor document; its change is dropped");
                    if let Some(k) = &dirty {
                        shared.dirty[i].remove(k);
                        shared.resolved[i].remove(k);
                        shared.repeats[i].remove(k);
                    }
                }
            }
        }
        again
    }

    /// Gives a notice recorded in document `key` to its notifier's delivery task.
    fn hand_over_entry(&mut self, key: &str, entry: NoticeEntry) {
        let Some(shared) = self.shared.as_mut() else { return };
        let (Some(kind), Some(alert)) = (kind_of(&entry.kind), crate::store::alert_from_value(&entry.alert)) else {
            tracing::warn!(key, notice = %entry.id, "unreadable notice in the monitor index; skipped");
            return;
        };
        let id = shared.next_id;
        shared.next_id += 1;
        shared.handed.insert(id, (key.to_string(), entry.id.clone()));
        let link = link(self.public_url.as_deref(), &alert.order_id);
        hand_over(
            &self.deliveries,
            &mut self.in_flight,
            &mut self.outbox_behind,
            &mut self.notifiers_behind,
            &entry.notifier,
            id,
            Notice { kind, alert, link },
        );
        if !self.in_flight.contains(&id) {
            shared.handed.remove(&id);
        }
    }

    /// Hands over notices waiting in the monitor index: this instance's own that a full queue
    /// held back (or a restart left), and other instances' claims older than [`LEASE`], taken
    /// over by a conditional write.
    pub(super) async fn hand_over_shared_outbox(&mut self) {
        let Some(shared) = self.shared.as_mut() else { return };
        if !self.outbox_behind || shared.last_scan.is_some_and(|t| t.elapsed() < SCAN_EVERY) {
            return;
        }
        shared.last_scan = Some(tokio::time::Instant::now());
        self.outbox_behind = false;
        self.notifiers_behind.clear();
        let es = shared.es.clone();
        if let Err(error) = es.refresh().await {
            tracing::warn!(%error, "cannot refresh the monitor index before reading its outbox");
        }
        let now = wall_ns();
        let lease = u64::try_from(LEASE.as_nanos()).unwrap_or(u64::MAX);
        let monitors: Vec<String> = self.watches.iter().map(|w| w.engine.monitor.clone()).collect();
        for monitor in monitors {
            let docs = match es.with_outbox(&monitor).await {
                Ok(docs) => docs,
                Err(error) => {
                    tracing::error!(monitor = %monitor, %error, "cannot read the monitor outbox");
                    self.outbox_behind = true;
                    continue;
                }
            };
            let shared = self.shared.as_ref().expect("shared state");
            // In delivery, or delivered and waiting for its removal from the document.
            let handed: HashSet<(&str, &str)> =
                shared.handed.values().chain(&shared.confirmed).map(|(k, e)| (k.as_str(), e.as_str())).collect();
            // This instance's own notices that its notifiers do not hold (a full queue held them
            // back), and other instances' past their lease: each is claimed again by a
            // conditional write before it is sent, so that an instance taking it over at the
            // same time sends it instead, not as well.
            let mut claim = Vec::new();
            for doc in &docs {
                for entry in &doc.outbox {
                    if handed.contains(&(doc.key.as_str(), entry.id.as_str())) || !self.deliveries.contains_key(&entry.notifier) {
                        continue;
                    }
                    if entry.owner == shared.owner || entry.claimed_ns.saturating_add(lease) < now {
                        claim.push(doc.key.clone());
                    } else {
                        // Another instance is sending it; looked at again after its lease.
                        self.outbox_behind = true;
                    }
                }
            }
            claim.sort_unstable();
            claim.dedup();
            if !claim.is_empty() {
                self.take_over(&es, &claim, now, lease).await;
            }
        }
    }

    /// Claims, in these documents, this instance's notices that no notifier of it holds and
    /// other instances' stale ones; sends those whose write won.
    async fn take_over(&mut self, es: &EsMonitorState, keys: &[String], now: u64, lease: u64) {
        let Ok(docs) = es.get(keys).await else {
            self.outbox_behind = true;
            return;
        };
        let shared = self.shared.as_ref().expect("shared state");
        let owner = shared.owner.clone();
        let handed: HashSet<(String, String)> = shared.handed.values().chain(&shared.confirmed).cloned().collect();
        let mut writes = Vec::new();
        let mut claims = Vec::new();
        for v in docs.into_values() {
            let mut doc = v.doc;
            let mut mine = Vec::new();
            let mut taken = 0;
            for entry in &mut doc.outbox {
                let held_back = entry.owner == owner && !handed.contains(&(doc.key.clone(), entry.id.clone()));
                let stale = entry.owner != owner && entry.claimed_ns.saturating_add(lease) < now;
                if (held_back || stale) && self.deliveries.contains_key(&entry.notifier) {
                    taken += usize::from(stale);
                    entry.owner = owner.clone();
                    entry.claimed_ns = now;
                    mine.push(entry.clone());
                }
            }
            if !mine.is_empty() {
                claims.push((doc.key.clone(), mine, taken));
                writes.push((Some((v.seq_no, v.primary_term)), doc));
            }
        }
        match es.put(&writes).await {
            Ok(outcomes) => {
                for ((key, entries, taken), outcome) in claims.into_iter().zip(outcomes) {
                    if outcome == Written::Done {
                        if taken > 0 {
                            tracing::info!(key = %key, notices = taken, "took over notices another instance did not confirm within its lease");
                        }
                        for entry in entries {
                            self.hand_over_entry(&key, entry);
                        }
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, "cannot claim stale notices");
                self.outbox_behind = true;
            }
        }
    }

    pub(super) async fn purge_shared(&self, cutoff_ns: u64) {
        let Some(shared) = self.shared.as_ref() else { return };
        match shared.es.purge(cutoff_ns).await {
            Ok(n) if n > 0 => tracing::debug!(documents = n, "finished monitor state past retention forgotten"),
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "cannot purge monitor state"),
        }
    }
}

/// Puts the running clocks and firing alerts stored in Elasticsearch back into an engine at
/// start; returns how many documents.
pub(super) async fn restore(es: &EsMonitorState, engine: &mut super::Engine, now: u64) -> Result<usize, EsError> {
    let docs = es.running(&engine.monitor).await?;
    let mut changes = Vec::new();
    for doc in &docs {
        if let Some(clock) = clock_of(doc) {
            engine.merge(&doc.order_id, &doc.rule, clock, doc.alert().as_ref(), now, &mut changes);
        }
    }
    Ok(docs.len())
}
