//! The `order_sla` state machine: one clock per (order, rule), every pending deadline in a
//! calendar queue per rule (see `deadlines.rs`), alerts computed by event time. No I/O: the
//! monitor task feeds it facts and the wall clock, persists what it reports ([`Change`]) and
//! sends the notices.
//!
//! Memory holds only orders with a clock that is running (pending) or an alert that is firing;
//! every other clock that learnt something is in the store and is read back when a fact of its
//! order arrives again (`Engine::restore`). So memory grows with orders in flight, not with
//! orders ever seen.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use super::config::{OrderSlaConfig, RuleKind};
use super::deadlines::RuleDeadlines;
use crate::monitors::Fact;
use crate::orders::{AlertState, LastEvent, OrderAlert, Severity};

/// Index into the engine's name table (statuses, stages, services).
type Sym = u16;

/// The engine's maps are looked up for every fact: a fast, randomly seeded hash.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
const NO_SYM: Sym = Sym::MAX;

/// Where a clock is. Running clocks are `Pending` (timer set) or `Firing` (alert out); the last
/// three are final: nothing changes them again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// `from` not reached yet (the end may be known: data arrived out of order).
    Idle,
    Pending,
    Firing,
    /// Reached `to` in time; no alert.
    Met,
    Resolved,
    Cancelled,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Pending => "pending",
            Phase::Firing => "firing",
            Phase::Met => "met",
            Phase::Resolved => "resolved",
            Phase::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Phase> {
        Some(match text {
            "idle" => Phase::Idle,
            "pending" => Phase::Pending,
            "firing" => Phase::Firing,
            "met" => Phase::Met,
            "resolved" => Phase::Resolved,
            "cancelled" => Phase::Cancelled,
            _ => return None,
        })
    }

    fn is_final(self) -> bool {
        matches!(self, Phase::Met | Phase::Resolved | Phase::Cancelled)
    }

    fn running(self) -> bool {
        matches!(self, Phase::Pending | Phase::Firing)
    }
}

/// One (order, rule): event times in Unix nanoseconds, 0 = not seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Clock {
    pub from_ns: u64,
    /// The event time of the first status (or stage) that satisfied or cancelled the rule.
    pub end_ns: u64,
    pub phase: Phase,
}

const IDLE: Clock = Clock { from_ns: 0, end_ns: 0, phase: Phase::Idle };

/// What the caller must persist or send, in this order.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Clock {
        order_id: String,
        rule: String,
        clock: Clock,
    },
    /// The alert as it now stands (upserted: exactly one per (order, monitor, rule)).
    Alert(OrderAlert),
    /// Tell notifier number `notifier` (index into the monitor's `notify`).
    Notice {
        kind: crate::notifiers::NoticeKind,
        alert: OrderAlert,
        notifier: usize,
    },
}

struct Rule {
    name: String,
    from_label: String,
    to_label: String,
    kind: Kind,
    within_ns: u64,
    severity: Severity,
}

enum Kind {
    /// `satisfied`: `to` and every status after it in the lifecycle.
    Status {
        from: Sym,
        satisfied: Vec<Sym>,
    },
    Stage {
        from: Sym,
        to: Sym,
    },
}

/// An order in flight.
struct Slot {
    /// Shared with the `orders` index and with the rows the caller writes.
    id: Arc<str>,
    /// In `changed` (see `track_changed_orders`).
    changed: bool,
    clocks: Box<[Clock]>,
    /// The latest status by event time, for `current_status`.
    status: Sym,
    status_ns: u64,
    last_service: Sym,
    last_stage: Sym,
    last_ns: u64,
    /// The event time of the order's earliest terminal status (0: none seen since the order came
    /// into memory): a clock whose end is this time was cancelled, even when its start arrived
    /// after the cancellation.
    terminal_ns: u64,
}

/// A timer: when, which order slot, which rule, and what (0: the deadline; n >= 1: the repeat
/// for notifier n - 1). Ordered by time first: the earliest is the first element.
type Timer = (u64, u32, u16, u16);

/// A rule's queue is swept of cancelled deadlines once it holds this many more than twice the
/// rule's pending clocks.
const SWEEP_SLACK: usize = 4096;

pub struct Engine {
    pub monitor: String,
    rules: Vec<Rule>,
    grace_ns: u64,
    /// Per notifier of `notify`, how often a firing alert is sent again.
    repeat_ns: Vec<u64>,
    terminal: Vec<Sym>,
    names: Vec<Box<str>>,
    name_index: FastMap<Box<str>, Sym>,
    /// Per symbol: some stage rule starts or ends at it.
    rule_stage: Vec<bool>,
    /// The stage of a status reported without one.
    status_change: Sym,
    /// Statuses and stages some rule or the terminal list names: facts without one are ignored.
    relevant_statuses: usize,
    orders: FastMap<Arc<str>, u32>,
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
    /// Per rule, the deadlines of pending clocks. A cancelled one is left where it is: it is
    /// checked against its clock when its time comes, and swept out when the queue holds many.
    deadlines: Vec<RuleDeadlines>,
    /// Repeats of firing alerts, and deadlines hours away from the rest of their rule's.
    timers: BTreeSet<Timer>,
    /// Alerts firing now, with the next repeat per notifier.
    firing: FastMap<(u32, u16), (OrderAlert, Vec<u64>)>,
    pending_per_rule: Vec<i64>,
    /// Alerts fired since `take_fired` (rule, severity), for `tracegate_order_alerts_total`.
    fired: Vec<(String, Severity)>,
    /// Orders that may have nothing running any more; `evict_finished` looks at them.
    evictable: Vec<u32>,
    /// Whether each clock change is reported as a `Change::Clock` (the default), or only the
    /// order is noted in `changed` (see `track_changed_orders`).
    clock_changes: bool,
    /// Orders whose clocks changed since `take_changed_orders`, each once.
    changed: Vec<u32>,
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Engine {
    /// `config` must have passed `validate`. `repeat` has one interval per notifier in `notify`.
    pub fn new(monitor: &str, config: &OrderSlaConfig, grace: Duration, repeat: Vec<Duration>) -> Engine {
        let mut engine = Engine {
            monitor: monitor.into(),
            rules: Vec::new(),
            grace_ns: ns(grace),
            repeat_ns: repeat.into_iter().map(ns).collect(),
            terminal: Vec::new(),
            names: Vec::new(),
            name_index: FastMap::default(),
            rule_stage: Vec::new(),
            status_change: NO_SYM,
            relevant_statuses: 0,
            orders: FastMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
            deadlines: config.rules.iter().map(|_| RuleDeadlines::default()).collect(),
            timers: BTreeSet::new(),
            firing: FastMap::default(),
            pending_per_rule: vec![0; config.rules.len()],
            fired: Vec::new(),
            evictable: Vec::new(),
            clock_changes: true,
            changed: Vec::new(),
        };
        // Statuses first: a status fact is relevant when its symbol is below `relevant_statuses`.
        for s in config.lifecycle.iter().chain(&config.terminal) {
            engine.intern(s);
        }
        for rule in &config.rules {
            if let Some(RuleKind::Status { from, to }) = rule.kind() {
                engine.intern(&from);
                engine.intern(&to);
            }
        }
        engine.relevant_statuses = engine.names.len();
        engine.terminal = config.terminal.iter().map(|s| engine.name_index[s.as_str()]).collect();
        for rule in &config.rules {
            let (from_label, to_label) = rule.ends();
            let kind = match rule.kind() {
                Some(RuleKind::Status { from, to }) => {
                    let mut satisfied = vec![engine.name_index[to.as_str()]];
                    if let Some(rank) = config.lifecycle.iter().position(|l| *l == to) {
                        satisfied.extend(config.lifecycle[rank + 1..].iter().map(|s| engine.name_index[s.as_str()]));
                    }
                    Kind::Status { from: engine.name_index[from.as_str()], satisfied }
                }
                Some(RuleKind::Stage { from, to }) => Kind::Stage { from: engine.intern(&from), to: engine.intern(&to) },
                None => continue,
            };
            engine.rules.push(Rule {
                name: rule.name.clone(),
                from_label,
                to_label,
                kind,
                within_ns: ns(rule.within),
                severity: rule.severity,
            });
        }
        // A status without a stage is a status change, as in the timeline.
        engine.status_change = engine.intern("status_change");
        for rule in &engine.rules {
            if let Kind::Stage { from, to } = rule.kind {
                engine.rule_stage[usize::from(from)] = true;
                engine.rule_stage[usize::from(to)] = true;
            }
        }
        engine
    }

    /// A caller that writes each changed order whole (the embedded store: one row per order)
    /// asks for the orders instead of one `Change::Clock` per clock: from now on clock changes
    /// are only noted, and [`Engine::take_changed_orders`] must be called every turn.
    pub fn track_changed_orders(&mut self) {
        self.clock_changes = false;
    }

    /// Every order whose clocks changed since the last call, each once, with every clock that
    /// learnt something, in rule order: `each(order id, [(rule name, clock)])`.
    pub fn take_changed_orders(&mut self, mut each: impl FnMut(&Arc<str>, &mut dyn Iterator<Item = (&str, Clock)>)) {
        let mut changed = std::mem::take(&mut self.changed);
        for &index in &changed {
            let Some(slot) = self.slots[index as usize].as_mut() else { continue };
            slot.changed = false;
            let mut clocks = slot.clocks.iter().zip(&self.rules).filter(|(c, _)| **c != IDLE).map(|(c, r)| (r.name.as_str(), *c));
            each(&slot.id, &mut clocks);
        }
        changed.clear();
        self.changed = changed;
    }

    fn intern(&mut self, name: &str) -> Sym {
        if let Some(s) = self.name_index.get(name) {
            return *s;
        }
        // Names come from the configuration and from service names; past the table's size new
        // services are simply not named in `last_event`.
        if self.names.len() >= usize::from(NO_SYM) {
            return NO_SYM;
        }
        let sym = self.names.len() as Sym;
        self.names.push(name.into());
        self.rule_stage.push(false);
        self.name_index.insert(name.into(), sym);
        sym
    }

    fn name(&self, sym: Sym) -> Option<String> {
        self.names.get(usize::from(sym)).map(|n| n.to_string())
    }

    pub fn rule_names(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().map(|r| r.name.as_str())
    }

    /// Whether this fact can change a clock (a relevant status or stage).
    pub fn wants(&self, fact: &Fact) -> bool {
        self.symbols(fact).is_some()
    }

    /// The symbols of the fact's status and stage (when known), if the fact is relevant.
    fn symbols(&self, fact: &Fact) -> Option<(Option<Sym>, Option<Sym>)> {
        let status = fact.status.as_deref().and_then(|s| self.name_index.get(s).copied());
        let stage = fact.stage.as_deref().and_then(|s| self.name_index.get(s).copied());
        let relevant_status = status.is_some_and(|s| usize::from(s) < self.relevant_statuses);
        let relevant_stage = stage.is_some_and(|sym| self.rule_stage[usize::from(sym)]);
        (relevant_status || relevant_stage).then_some((status, stage))
    }

    /// Whether the order is in memory (otherwise the caller restores it from the store first).
    pub fn knows(&self, order_id: &str) -> bool {
        self.orders.contains_key(order_id)
    }

    /// Clocks waiting for their deadline, per rule (`tracegate_order_monitor_pending`).
    pub fn pending_per_rule(&self) -> impl Iterator<Item = (&str, i64)> {
        self.rules.iter().zip(&self.pending_per_rule).map(|(r, n)| (r.name.as_str(), *n))
    }

    /// Alerts firing now per rule.
    pub fn firing_per_rule(&self) -> Vec<(&str, i64)> {
        let mut counts = vec![0i64; self.rules.len()];
        for (_, rule) in self.firing.keys() {
            counts[usize::from(*rule)] += 1;
        }
        self.rules.iter().map(|r| r.name.as_str()).zip(counts).collect()
    }

    /// Orders in memory and timers held (for the benchmark and logs).
    pub fn sizes(&self) -> (usize, usize) {
        (self.orders.len(), self.timers.len() + self.deadlines.iter().map(RuleDeadlines::len).sum::<usize>())
    }

    /// The earliest timer (possibly a cancelled deadline: `tick` then finds nothing to do).
    pub fn next_due(&self) -> Option<u64> {
        self.first_timer().map(|(t, _)| t.0)
    }

    /// The earliest timer of all, and the rule whose queue holds it (`None`: the ordered set).
    /// Timers are taken in the same order as from one ordered set of every timer.
    fn first_timer(&self) -> Option<(Timer, Option<usize>)> {
        let mut first = self.timers.first().map(|t| (*t, None));
        for (r, queue) in self.deadlines.iter().enumerate() {
            if let Some((at, index)) = queue.first() {
                let timer = (at, index, r as u16, 0);
                if first.is_none_or(|(f, _)| timer < f) {
                    first = Some((timer, Some(r)));
                }
            }
        }
        first
    }

    /// Whether the deadline `at` of (slot, rule) is still that of a pending clock.
    fn deadline_holds(&self, at: u64, index: u32, rule: usize) -> bool {
        deadline_holds(&self.slots, &self.rules, self.grace_ns, at, index, rule)
    }

    fn slot_for(&mut self, order_id: &str) -> u32 {
        if let Some(i) = self.orders.get(order_id) {
            return *i;
        }
        let id: Arc<str> = order_id.into();
        let slot = Slot {
            id: id.clone(),
            changed: false,
            clocks: vec![IDLE; self.rules.len()].into_boxed_slice(),
            status: NO_SYM,
            status_ns: 0,
            last_service: NO_SYM,
            last_stage: NO_SYM,
            last_ns: 0,
            terminal_ns: 0,
        };
        let index = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = Some(slot);
                i
            }
            None => {
                self.slots.push(Some(slot));
                (self.slots.len() - 1) as u32
            }
        };
        self.orders.insert(id, index);
        index
    }

    /// Every clock of an order in memory that learnt something (rule name, clock), in rule
    /// order; empty when the order is not in memory. The embedded store keeps them in one row.
    pub fn order_clocks(&self, order_id: &str) -> impl Iterator<Item = (&str, Clock)> + '_ {
        let slot = self.orders.get(order_id).map(|i| self.slot(*i));
        slot.into_iter()
            .flat_map(move |slot| slot.clocks.iter().zip(&self.rules).filter(|(c, _)| **c != IDLE).map(|(c, r)| (r.name.as_str(), *c)))
    }

    fn slot(&self, index: u32) -> &Slot {
        self.slots[index as usize].as_ref().expect("live slot")
    }

    fn slot_mut(&mut self, index: u32) -> &mut Slot {
        self.slots[index as usize].as_mut().expect("live slot")
    }

    /// Drops orders from memory that have nothing running; the caller wrote their clocks to
    /// the store first (so a later fact of such an order restores them from there).
    /// Notes that the order in slot `index` may have finished. The list is emptied by
    /// [`Engine::evict_finished`], which waits while writes fail: it keeps each slot once, then.
    fn may_evict(&mut self, index: u32) {
        self.evictable.push(index);
        if self.evictable.len() >= 2 * self.slots.len() + 1024 {
            self.evictable.sort_unstable();
            self.evictable.dedup();
        }
    }

    pub fn evict_finished(&mut self) -> Vec<Arc<str>> {
        let mut evicted = Vec::new();
        let mut candidates = std::mem::take(&mut self.evictable);
        candidates.sort_unstable();
        candidates.dedup();
        for index in candidates {
            let Some(slot) = self.slots[index as usize].as_ref() else { continue };
            if slot.clocks.iter().any(|c| c.phase.running()) {
                continue;
            }
            if slot.changed {
                // Not written yet: stays until the next turn.
                self.may_evict(index);
                continue;
            }
            if let Some(slot) = self.slots[index as usize].take() {
                self.orders.remove(&slot.id);
                self.free.push(index);
                evicted.push(slot.id);
            }
        }
        evicted
    }

    /// Alerts fired since the last call: (rule, severity).
    pub fn take_fired(&mut self) -> Vec<(String, Severity)> {
        std::mem::take(&mut self.fired)
    }

    /// Puts an order back in memory from its stored clocks (and its firing alerts), before a
    /// new fact of it is applied or at start. Rules no longer configured are ignored.
    pub fn restore(&mut self, order_id: &str, clocks: &[(String, Clock)], alerts: &[OrderAlert], now_ns: u64) {
        let index = self.slot_for(order_id);
        for (rule_name, clock) in clocks {
            let Some(r) = self.rules.iter().position(|r| &r.name == rule_name) else { continue };
            let old = self.slot(index).clocks[r];
            if old.phase.running() {
                continue;
            }
            self.slot_mut(index).clocks[r] = *clock;
            match clock.phase {
                Phase::Pending => self.arm(index, r),
                Phase::Firing => {
                    let alert = alerts.iter().find(|a| a.rule == *rule_name).cloned().unwrap_or_else(|| {
                        // The clock says firing but its alert row is missing (written in one
                        // transaction, so only by hand): rebuild it from the clock.
                        self.alert(index, r, now_ns, AlertState::Firing, clock.from_ns)
                    });
                    if let Some(status) = &alert.current_status {
                        let sym = self.name_index.get(status.as_str()).copied().unwrap_or(NO_SYM);
                        self.slot_mut(index).status = sym;
                    }
                    let repeats: Vec<u64> = self.repeat_ns.iter().map(|every| now_ns.saturating_add(*every)).collect();
                    for (n, at) in repeats.iter().enumerate() {
                        self.timers.insert((*at, index, r as u16, n as u16 + 1));
                    }
                    self.firing.insert((index, r as u16), (alert, repeats));
                }
                _ => {}
            }
        }
        self.may_evict(index);
    }

    fn deadline(&self, clock: &Clock, rule: usize) -> u64 {
        deadline_of(&self.rules, self.grace_ns, clock, rule)
    }

    /// Sets the deadline of a clock that became pending, in its rule's queue (or, hours away
    /// from the rest, in the ordered set).
    fn arm(&mut self, index: u32, rule: usize) {
        let at = self.deadline(&self.slot(index).clocks[rule], rule);
        self.pending_per_rule[rule] += 1;
        if self.deadlines[rule].push((at, index)).is_err() {
            self.timers.insert((at, index, rule as u16, 0));
        }
        let pending = usize::try_from(self.pending_per_rule[rule]).unwrap_or(0);
        if self.deadlines[rule].len() > 2 * pending + SWEEP_SLACK {
            let (slots, rules, grace) = (&self.slots, &self.rules, self.grace_ns);
            self.deadlines[rule].sweep(|(at, index)| deadline_holds(slots, rules, grace, at, index, rule));
        }
    }

    /// Cancels the deadline of a pending clock (before its times change). In its rule's queue
    /// it stays until its time comes or the queue is swept, and is then found cancelled.
    fn disarm(&mut self, index: u32, rule: usize) {
        if !self.timers.is_empty() {
            let at = self.deadline(&self.slot(index).clocks[rule], rule);
            self.timers.remove(&(at, index, rule as u16, 0));
        }
        self.pending_per_rule[rule] -= 1;
    }

    fn alert(&self, index: u32, rule: usize, now_ns: u64, state: AlertState, from_ns: u64) -> OrderAlert {
        let slot = self.slot(index);
        let r = &self.rules[rule];
        let clock = slot.clocks[rule];
        let elapsed_until = if state == AlertState::Resolved && clock.end_ns != 0 { clock.end_ns } else { now_ns };
        OrderAlert {
            order_id: slot.id.to_string(),
            monitor: self.monitor.clone(),
            rule: r.name.clone(),
            from: r.from_label.clone(),
            to: r.to_label.clone(),
            severity: r.severity,
            threshold_seconds: r.within_ns as f64 / 1e9,
            elapsed_seconds: elapsed_until.saturating_sub(from_ns) as f64 / 1e9,
            state,
            fired_at: now_ns,
            resolved_at: None,
            late_data: false,
            current_status: self.name(slot.status),
            last_event: (slot.last_ns != 0).then(|| LastEvent {
                service: self.name(slot.last_service),
                stage: self.name(slot.last_stage),
                time: slot.last_ns,
            }),
            service: self.name(slot.last_service),
        }
    }

    fn notify_all(&self, kind: crate::notifiers::NoticeKind, alert: &OrderAlert, out: &mut Vec<Change>) {
        for notifier in 0..self.repeat_ns.len() {
            out.push(Change::Notice { kind, alert: alert.clone(), notifier });
        }
    }

    fn clock_change(&mut self, index: u32, rule: usize, out: &mut Vec<Change>) {
        if !self.clock_changes {
            let slot = self.slots[index as usize].as_mut().expect("live slot");
            if !slot.changed {
                slot.changed = true;
                self.changed.push(index);
            }
            return;
        }
        let slot = self.slot(index);
        out.push(Change::Clock { order_id: slot.id.to_string(), rule: self.rules[rule].name.clone(), clock: slot.clocks[rule] });
    }

    /// Applies one fact observed at wall time `now_ns`. The caller restored the order first if
    /// it was not in memory (`knows`).
    pub fn apply(&mut self, fact: &Fact, now_ns: u64, out: &mut Vec<Change>) {
        let Some((status, known_stage)) = self.symbols(fact) else { return };
        let stage = match (known_stage, fact.stage.as_deref()) {
            (Some(s), _) => Some(s),
            (None, Some(s)) => Some(self.intern(s)).filter(|s| *s != NO_SYM),
            (None, None) => None,
        };
        let service = match fact.service.as_deref() {
            Some(s) => self.intern(s),
            None => NO_SYM,
        };
        // A status without a stage is a status change, as in the timeline.
        let last_stage = match stage {
            Some(s) => s,
            None if fact.status.is_some() => self.status_change,
            None => NO_SYM,
        };
        let index = self.slot_for(&fact.order_id);
        let t = fact.time_ns.max(1);
        {
            let slot = self.slot_mut(index);
            if let Some(s) = status {
                if t >= slot.status_ns {
                    slot.status = s;
                    slot.status_ns = t;
                }
            }
            if t >= slot.last_ns {
                slot.last_ns = t;
                slot.last_service = service;
                slot.last_stage = last_stage;
            }
        }
        let terminal = status.is_some_and(|s| self.terminal.contains(&s));
        if terminal {
            let slot = self.slot_mut(index);
            if slot.terminal_ns == 0 || t < slot.terminal_ns {
                slot.terminal_ns = t;
            }
        }
        for r in 0..self.rules.len() {
            let clock = self.slot(index).clocks[r];
            if clock.phase.is_final() {
                continue;
            }
            let (starts, ends) = match &self.rules[r].kind {
                Kind::Status { from, satisfied } => (status == Some(*from), status.is_some_and(|s| satisfied.contains(&s))),
                Kind::Stage { from, to } => (stage == Some(*from), stage == Some(*to)),
            };
            let mut next = clock;
            if starts && (next.from_ns == 0 || t < next.from_ns) {
                next.from_ns = t;
            }
            if (ends || terminal) && (next.end_ns == 0 || t < next.end_ns) {
                next.end_ns = t;
            }
            if next == clock {
                continue;
            }
            self.settle(index, r, clock, next, terminal && !ends, now_ns, out);
        }
        self.may_evict(index);
    }

    /// Moves one clock from `old` to `new` times and decides its phase: the rule is judged by
    /// the event times alone; the wall clock only decides whether an alert already went out.
    #[allow(clippy::too_many_arguments)]
    fn settle(&mut self, index: u32, r: usize, old: Clock, mut new: Clock, cancelling: bool, now_ns: u64, out: &mut Vec<Change>) {
        if old.phase == Phase::Pending {
            self.disarm(index, r);
        }
        let within = self.rules[r].within_ns;
        match (new.from_ns, new.end_ns) {
            // Only the end is known: data out of order, or the order ended (or was cancelled)
            // before the rule's start. Judged when the start arrives, if it ever does: a start
            // before a late cancellation still fires.
            (0, _) => new.phase = Phase::Idle,
            (_, 0) => {
                new.phase = old.phase.max_running();
                self.slot_mut(index).clocks[r] = new;
                if new.phase == Phase::Pending {
                    self.arm(index, r);
                }
                self.clock_change(index, r, out);
                return;
            }
            (from, end) => {
                // Ended by a terminal status: this fact, or one that came before the start.
                let cancelling = cancelling || self.slot(index).terminal_ns == end;
                let late = end.saturating_sub(from) > within;
                let was_firing = old.phase == Phase::Firing;
                new.phase = match (late, was_firing, cancelling) {
                    (false, false, true) => Phase::Cancelled,
                    (false, false, false) => Phase::Met,
                    _ => Phase::Resolved,
                };
                self.slot_mut(index).clocks[r] = new;
                if new.phase == Phase::Resolved {
                    let mut alert = match self.firing.remove(&(index, r as u16)) {
                        Some((alert, repeats)) => {
                            for (n, at) in repeats.iter().enumerate() {
                                self.timers.remove(&(*at, index, r as u16, n as u16 + 1));
                            }
                            alert
                        }
                        None => {
                            // Reached the end too late by event time, never fired: fires now,
                            // once, and resolves at once with the real duration.
                            let mut fired = self.alert(index, r, now_ns, AlertState::Firing, from);
                            fired.elapsed_seconds = end.saturating_sub(from) as f64 / 1e9;
                            self.fired.push((fired.rule.clone(), fired.severity));
                            self.notify_all(crate::notifiers::NoticeKind::Fired, &fired, out);
                            fired
                        }
                    };
                    let fresh = self.alert(index, r, now_ns, AlertState::Resolved, from);
                    alert.state = AlertState::Resolved;
                    alert.elapsed_seconds = end.saturating_sub(from) as f64 / 1e9;
                    alert.resolved_at = Some(now_ns);
                    alert.late_data = !late;
                    alert.current_status = fresh.current_status;
                    alert.last_event = fresh.last_event;
                    self.clock_change(index, r, out);
                    out.push(Change::Alert(alert.clone()));
                    self.notify_all(crate::notifiers::NoticeKind::Resolved, &alert, out);
                    return;
                }
            }
        }
        self.slot_mut(index).clocks[r] = new;
        self.clock_change(index, r, out);
    }

    /// Orders with a timer due by `now_ns` (deadlines and repeats). With state shared by several
    /// instances, their stored clocks are read before the timers fire, so that what another
    /// instance learnt (an end, an alert it already sent) counts first.
    pub fn due_orders(&self, now_ns: u64) -> Vec<String> {
        let mut out: Vec<String> = self.timers.iter().take_while(|t| t.0 <= now_ns).map(|t| self.slot(t.1).id.to_string()).collect();
        for (r, queue) in self.deadlines.iter().enumerate() {
            out.extend(
                queue
                    .due(now_ns)
                    .filter(|(at, index)| self.deadline_holds(*at, *index, r))
                    .map(|(_, index)| self.slot(index).id.to_string()),
            );
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// How often notifier number `notifier` is told again about a firing alert, in nanoseconds.
    pub fn repeat_every(&self, notifier: usize) -> u64 {
        self.repeat_ns.get(notifier).copied().unwrap_or(u64::MAX)
    }

    /// The clock of (order, rule) as memory holds it, with its alert while it fires.
    pub fn snapshot(&self, order_id: &str, rule: &str) -> Option<(Clock, Option<OrderAlert>)> {
        let index = *self.orders.get(order_id)?;
        let r = self.rules.iter().position(|x| x.name == rule)?;
        let alert = self.firing.get(&(index, r as u16)).map(|(a, _)| a.clone());
        Some((self.slot(index).clocks[r], alert))
    }

    /// Joins a clock that another instance stored (with its alert) into memory: the earliest
    /// start and end win, and an alert another instance fired is held as fired here (this
    /// instance sent nothing for it). The result is judged as `apply` judges facts; what changed
    /// is reported in `out` (notices included, which a caller that derives notices from its
    /// conditional writes ignores). Joining the same stored clock twice changes nothing.
    pub fn merge(
        &mut self,
        order_id: &str,
        rule: &str,
        stored: Clock,
        stored_alert: Option<&OrderAlert>,
        now_ns: u64,
        out: &mut Vec<Change>,
    ) {
        let Some(r) = self.rules.iter().position(|x| x.name == rule) else { return };
        let index = self.slot_for(order_id);
        self.may_evict(index);
        let cur = self.slot(index).clocks[r];
        let earliest = |a: u64, b: u64| match (a, b) {
            (0, x) | (x, 0) => x,
            (a, b) => a.min(b),
        };
        let (from, end) = (earliest(cur.from_ns, stored.from_ns), earliest(cur.end_ns, stored.end_ns));
        let fired = |p: Phase| matches!(p, Phase::Firing | Phase::Resolved);
        let cancelling = stored.phase == Phase::Cancelled && stored.end_ns == end;
        if fired(stored.phase) && !fired(cur.phase) {
            if cur.phase == Phase::Pending {
                self.disarm(index, r);
            }
            if stored.phase == Phase::Resolved {
                // Decided and announced elsewhere: taken as it is.
                if let Some((_, repeats)) = self.firing.remove(&(index, r as u16)) {
                    for (n, at) in repeats.iter().enumerate() {
                        self.timers.remove(&(*at, index, r as u16, n as u16 + 1));
                    }
                }
                self.slot_mut(index).clocks[r] = Clock { from_ns: from, end_ns: end, phase: Phase::Resolved };
                self.clock_change(index, r, out);
                if let Some(alert) = stored_alert {
                    out.push(Change::Alert(alert.clone()));
                }
                return;
            }
            let firing = Clock { from_ns: from, end_ns: 0, phase: Phase::Firing };
            self.slot_mut(index).clocks[r] = firing;
            let alert = match stored_alert {
                Some(a) => a.clone(),
                None => self.alert(index, r, now_ns, AlertState::Firing, from),
            };
            let repeats: Vec<u64> = self.repeat_ns.iter().map(|every| now_ns.saturating_add(*every)).collect();
            for (n, at) in repeats.iter().enumerate() {
                self.timers.insert((*at, index, r as u16, n as u16 + 1));
            }
            self.firing.insert((index, r as u16), (alert, repeats));
            if end != 0 {
                self.settle(index, r, firing, Clock { from_ns: from, end_ns: end, phase: Phase::Firing }, cancelling, now_ns, out);
            } else {
                self.clock_change(index, r, out);
            }
            return;
        }
        if cur.phase == Phase::Firing && stored.phase == Phase::Firing {
            // Both fired it (each on the same deadline): the stored alert is the one whose write
            // won, and whose notices went out. This instance takes it as its own, so that its
            // document is not written over with another copy (its labels may differ: the
            // `service` of an order it only joined is unknown here) and its repeats and its
            // resolution carry the same labels.
            if let (Some(a), Some((own, _))) = (stored_alert, self.firing.get_mut(&(index, r as u16))) {
                if own != a {
                    *own = a.clone();
                }
            }
        }
        if cur.phase.is_final() {
            return;
        }
        let next = Clock { from_ns: from, end_ns: end, phase: cur.phase };
        if next != cur {
            self.settle(index, r, cur, next, cancelling, now_ns, out);
        }
    }

    /// Fires every deadline and repeat due at wall time `now_ns`.
    pub fn tick(&mut self, now_ns: u64, out: &mut Vec<Change>) {
        while let Some(((at, index, rule, what), queue)) = self.first_timer() {
            if at > now_ns {
                break;
            }
            match queue {
                Some(r) => {
                    self.deadlines[r].pop();
                }
                None => {
                    self.timers.pop_first();
                }
            }
            let r = usize::from(rule);
            if what == 0 {
                if !self.deadline_holds(at, index, r) {
                    // Cancelled (the clock's times changed, or it ended).
                    continue;
                }
                let mut clock = self.slot(index).clocks[r];
                clock.phase = Phase::Firing;
                self.pending_per_rule[r] -= 1;
                self.slot_mut(index).clocks[r] = clock;
                let alert = self.alert(index, r, now_ns, AlertState::Firing, clock.from_ns);
                self.fired.push((alert.rule.clone(), alert.severity));
                tracing::info!(monitor = %self.monitor, rule = %alert.rule, order_id = %alert.order_id, elapsed_seconds = alert.elapsed_seconds, "order alert fired");
                self.clock_change(index, r, out);
                out.push(Change::Alert(alert.clone()));
                self.notify_all(crate::notifiers::NoticeKind::Fired, &alert, out);
                let repeats: Vec<u64> = self.repeat_ns.iter().map(|every| now_ns.saturating_add(*every)).collect();
                for (n, at) in repeats.iter().enumerate() {
                    self.timers.insert((*at, index, rule, n as u16 + 1));
                }
                self.firing.insert((index, rule), (alert, repeats));
            } else {
                let notifier = usize::from(what - 1);
                let every = self.repeat_ns[notifier];
                let from = self.slot(index).clocks[r].from_ns;
                let fresh = self.alert(index, r, now_ns, AlertState::Firing, from);
                let Some((alert, repeats)) = self.firing.get_mut(&(index, rule)) else { continue };
                alert.elapsed_seconds = fresh.elapsed_seconds;
                alert.current_status = fresh.current_status;
                alert.last_event = fresh.last_event;
                let next = now_ns.saturating_add(every);
                repeats[notifier] = next;
                let alert = alert.clone();
                self.timers.insert((next, index, rule, what));
                out.push(Change::Notice { kind: crate::notifiers::NoticeKind::Repeat, alert, notifier });
            }
        }
        // Cancelled deadlines at the front go now, so that `next_due` names a deadline that
        // holds and the monitor task does not wake for one that was cancelled.
        for r in 0..self.deadlines.len() {
            while let Some((at, index)) = self.deadlines[r].first() {
                if self.deadline_holds(at, index, r) {
                    break;
                }
                self.deadlines[r].pop();
            }
        }
    }
}

impl Phase {
    /// A clock whose start moved stays where it was if it already fired; otherwise it runs.
    fn max_running(self) -> Phase {
        if self == Phase::Firing {
            Phase::Firing
        } else {
            Phase::Pending
        }
    }
}

/// Whether `at` is the deadline of a pending clock of (slot `index`, `rule`): a deadline left in
/// a queue after its clock changed is not (nor one whose slot went to another order since).
fn deadline_holds(slots: &[Option<Slot>], rules: &[Rule], grace_ns: u64, at: u64, index: u32, rule: usize) -> bool {
    let Some(Some(slot)) = slots.get(index as usize) else { return false };
    let clock = &slot.clocks[rule];
    clock.phase == Phase::Pending && deadline_of(rules, grace_ns, clock, rule) == at
}

/// When a clock of `rule` that started at `clock.from_ns` is late: its start, the rule's
/// threshold and the grace.
fn deadline_of(rules: &[Rule], grace_ns: u64, clock: &Clock, rule: usize) -> u64 {
    clock.from_ns.saturating_add(rules[rule].within_ns).saturating_add(grace_ns)
}
