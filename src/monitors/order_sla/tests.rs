//! The `order_sla` state machine alone: the timer set, event-time judgement, late data,
//! terminal statuses, out-of-order facts and restoring from stored clocks.

use std::time::Duration;

use super::config::OrderSlaConfig;
use super::engine::{Change, Clock, Engine, Phase};
use crate::monitors::Fact;
use crate::notifiers::NoticeKind;
use crate::orders::{AlertState, OrderAlert};

const S: u64 = 1_000_000_000;
const T0: u64 = 1_795_165_200 * S;

fn config() -> OrderSlaConfig {
    serde_yaml_ng::from_str(
        r#"
lifecycle: [new, accepted, in_production, manufactured, handed_to_courier]
terminal: [cancelled]
rules:
  - {name: crm_accepts, from: new, to: accepted, within: 2s}
  - {name: production, from: accepted, to: manufactured, within: 10s, severity: critical}
  - {name: bus_wait, from_stage: bus_publish, to_stage: bus_consume, within: 1s}
notify: [a, b]
"#,
    )
    .unwrap()
}

/// Grace 1 s; notifier `a` repeats every 60 s, `b` every 3600 s.
fn engine() -> Engine {
    Engine::new("sla", &config(), Duration::from_secs(1), vec![Duration::from_secs(60), Duration::from_secs(3600)])
}

fn status(order: &str, status: &str, t: u64) -> Fact {
    Fact { order_id: order.into(), status: Some(status.into()), stage: None, service: Some("crm-api".into()), time_ns: t }
}

fn stage(order: &str, stage: &str, t: u64) -> Fact {
    Fact { order_id: order.into(), status: None, stage: Some(stage.into()), service: Some("shop-api".into()), time_ns: t }
}

fn apply(e: &mut Engine, fact: Fact, now: u64) -> Vec<Change> {
    let mut out = Vec::new();
    e.apply(&fact, now, &mut out);
    out
}

fn tick(e: &mut Engine, now: u64) -> Vec<Change> {
    let mut out = Vec::new();
    e.tick(now, &mut out);
    out
}

fn alerts(changes: &[Change]) -> Vec<&OrderAlert> {
    changes.iter().filter_map(|c| if let Change::Alert(a) = c { Some(a) } else { None }).collect()
}

fn notices(changes: &[Change]) -> Vec<(NoticeKind, String, String, usize)> {
    changes
        .iter()
        .filter_map(|c| match c {
            Change::Notice { kind, alert, notifier } => Some((*kind, alert.order_id.clone(), alert.rule.clone(), *notifier)),
            _ => None,
        })
        .collect()
}

#[test]
fn deadlines_fire_in_order_on_the_wall_clock_only_when_due() {
    let mut e = engine();
    apply(&mut e, status("B", "new", T0 + S), T0 + S);
    apply(&mut e, status("A", "new", T0), T0 + S);
    apply(&mut e, status("C", "accepted", T0), T0 + S);
    // A: T0 + 2 s + 1 s grace; B one second later; C (production, 10 s) last.
    assert_eq!(e.next_due(), Some(T0 + 3 * S));
    assert!(tick(&mut e, T0 + 3 * S - 1).is_empty(), "nothing is due a nanosecond early");
    let fired = tick(&mut e, T0 + 3 * S);
    assert_eq!(
        notices(&fired),
        [(NoticeKind::Fired, "A".into(), "crm_accepts".into(), 0), (NoticeKind::Fired, "A".into(), "crm_accepts".into(), 1)]
    );
    let a = alerts(&fired)[0];
    assert_eq!((a.state, a.threshold_seconds, a.elapsed_seconds), (AlertState::Firing, 2.0, 3.0));
    assert_eq!(a.current_status.as_deref(), Some("new"));
    assert_eq!(e.next_due(), Some(T0 + 4 * S));
    let fired = tick(&mut e, T0 + 20 * S);
    let order: Vec<(String, String)> = alerts(&fired).iter().map(|a| (a.order_id.clone(), a.rule.clone())).collect();
    assert_eq!(order, [("B".to_string(), "crm_accepts".to_string()), ("C".into(), "production".into())]);
    assert!(tick(&mut e, T0 + 30 * S).is_empty(), "each deadline fires once");
    assert_eq!(e.firing_per_rule(), [("crm_accepts", 2), ("production", 1), ("bus_wait", 0)]);
    assert_eq!(e.pending_per_rule().map(|(_, n)| n).sum::<i64>(), 0);
}

#[test]
fn reaching_to_or_a_later_status_in_time_meets_the_rule_silently() {
    let mut e = engine();
    apply(&mut e, status("A", "new", T0), T0);
    let met = apply(&mut e, status("A", "accepted", T0 + S), T0 + S);
    assert!(alerts(&met).is_empty() && notices(&met).is_empty());
    assert!(met.iter().any(|c| matches!(c, Change::Clock { rule, clock, .. } if rule == "crm_accepts" && clock.phase == Phase::Met)));
    // B skips `accepted`: `in_production` is later in the lifecycle and satisfies the rule.
    apply(&mut e, status("B", "new", T0), T0);
    apply(&mut e, status("B", "in_production", T0 + S), T0 + S);
    assert!(tick(&mut e, T0 + 100 * S).iter().all(|c| !matches!(c, Change::Alert(a) if a.order_id == "B")));
}

#[test]
fn data_arriving_after_the_deadline_but_in_time_by_event_time_resolves_as_late_data() {
    let mut e = engine();
    apply(&mut e, status("A", "new", T0), T0);
    assert_eq!(alerts(&tick(&mut e, T0 + 3 * S)).len(), 1);
    // The `accepted` span happened 1.5 s after `new` but reaches the monitor 10 s later.
    let resolved = apply(&mut e, status("A", "accepted", T0 + 3 * S / 2), T0 + 10 * S);
    let a = alerts(&resolved)[0];
    assert_eq!((a.state, a.late_data, a.elapsed_seconds, a.resolved_at), (AlertState::Resolved, true, 1.5, Some(T0 + 10 * S)));
    assert_eq!(a.fired_at, T0 + 3 * S, "the alert keeps its firing time");
    assert_eq!(
        notices(&resolved),
        [(NoticeKind::Resolved, "A".into(), "crm_accepts".into(), 0), (NoticeKind::Resolved, "A".into(), "crm_accepts".into(), 1)]
    );
    assert_eq!(e.firing_per_rule()[0], ("crm_accepts", 0));
}

#[test]
fn reaching_to_too_late_by_event_time_fires_once_and_resolves_with_the_real_duration() {
    let mut e = engine();
    apply(&mut e, status("A", "new", T0), T0);
    // Delivered promptly (before the wall-clock deadline), but 2.5 s after `new` by event time.
    let changes = apply(&mut e, status("A", "accepted", T0 + 5 * S / 2), T0 + S);
    let kinds: Vec<NoticeKind> = notices(&changes).iter().map(|n| n.0).collect();
    assert_eq!(kinds, [NoticeKind::Fired, NoticeKind::Fired, NoticeKind::Resolved, NoticeKind::Resolved]);
    let a = alerts(&changes)[0];
    assert_eq!((a.state, a.late_data, a.elapsed_seconds), (AlertState::Resolved, false, 2.5));
    assert_eq!(e.take_fired().len(), 1, "counted as fired once");
    let later = tick(&mut e, T0 + 100 * S);
    assert!(alerts(&later).iter().all(|a| a.rule == "production"), "crm_accepts never fires again: {later:?}");
    // A firing alert whose order then reaches `to` too late resolves without late_data.
    apply(&mut e, status("B", "new", T0), T0);
    tick(&mut e, T0 + 3 * S);
    let a = alerts(&apply(&mut e, status("B", "accepted", T0 + 4 * S), T0 + 4 * S))[0].clone();
    assert_eq!((a.state, a.late_data, a.elapsed_seconds), (AlertState::Resolved, false, 4.0));
}

#[test]
fn a_terminal_status_cancels_pending_rules() {
    let mut e = engine();
    apply(&mut e, status("A", "new", T0), T0);
    apply(&mut e, stage("A", "bus_publish", T0), T0);
    let changes = apply(&mut e, status("A", "cancelled", T0 + S / 2), T0 + S / 2);
    let phases: Vec<(String, Phase)> = changes
        .iter()
        .filter_map(|c| if let Change::Clock { rule, clock, .. } = c { Some((rule.clone(), clock.phase)) } else { None })
        .collect();
    // `production` has not started: it waits for its start, which may still come with an
    // earlier event time (see the next test).
    assert_eq!(
        phases,
        [("crm_accepts".into(), Phase::Cancelled), ("production".into(), Phase::Idle), ("bus_wait".into(), Phase::Cancelled)]
    );
    assert!(tick(&mut e, T0 + 100 * S).is_empty());
    let changes = apply(&mut e, status("A", "accepted", T0 + S), T0 + S);
    assert!(notices(&changes).is_empty() && alerts(&changes).is_empty(), "{changes:?}");
    assert_eq!(e.snapshot("A", "crm_accepts").unwrap().0.phase, Phase::Cancelled, "a cancelled clock never starts again");
    assert_eq!(e.snapshot("A", "production").unwrap().0.phase, Phase::Cancelled, "started after the cancellation: cancelled");
    assert!(tick(&mut e, T0 + 100 * S).is_empty());
}

#[test]
fn a_cancellation_arriving_before_the_start_is_judged_when_the_start_arrives() {
    let mut e = engine();
    // The cancellation (20 s after the order was placed) arrives first; the order's `new`
    // comes later, from a client that held its spans back.
    apply(&mut e, status("A", "cancelled", T0 + 20 * S), T0 + 20 * S);
    assert_eq!(e.next_due(), None);
    let changes = apply(&mut e, status("A", "new", T0), T0 + 21 * S);
    let a = alerts(&changes);
    assert_eq!(a.len(), 1, "{changes:?}");
    assert_eq!((a[0].rule.as_str(), a[0].elapsed_seconds, a[0].state), ("crm_accepts", 20.0, AlertState::Resolved));
    assert_eq!(notices(&changes).iter().filter(|n| n.0 == NoticeKind::Fired).count(), 2, "fired once to each notifier");
    // In time: cancelled, silently.
    apply(&mut e, status("B", "cancelled", T0 + S), T0 + 20 * S);
    let changes = apply(&mut e, status("B", "new", T0), T0 + 21 * S);
    assert!(alerts(&changes).is_empty() && notices(&changes).is_empty(), "{changes:?}");
    assert_eq!(e.snapshot("B", "crm_accepts").unwrap().0.phase, Phase::Cancelled);
}

#[test]
fn the_end_arriving_before_the_start_is_judged_when_the_start_arrives() {
    let mut e = engine();
    apply(&mut e, stage("A", "bus_consume", T0 + 3 * S), T0);
    assert_eq!(e.next_due(), None);
    let changes = apply(&mut e, stage("A", "bus_publish", T0), T0 + S);
    let a = alerts(&changes)[0];
    assert_eq!(
        (a.rule.as_str(), a.from.as_str(), a.elapsed_seconds, a.state),
        ("bus_wait", "stage:bus_publish", 3.0, AlertState::Resolved)
    );
    apply(&mut e, stage("B", "bus_consume", T0 + S / 2), T0);
    assert!(alerts(&apply(&mut e, stage("B", "bus_publish", T0), T0)).is_empty());
}

#[test]
fn repeats_go_to_each_notifier_at_its_own_interval_while_firing() {
    let mut e = engine();
    apply(&mut e, status("A", "new", T0), T0);
    tick(&mut e, T0 + 3 * S);
    let repeats = tick(&mut e, T0 + 63 * S);
    assert_eq!(notices(&repeats), [(NoticeKind::Repeat, "A".into(), "crm_accepts".into(), 0)]);
    let Change::Notice { alert, .. } = &repeats[0] else { panic!() };
    assert_eq!(alert.elapsed_seconds, 63.0, "a repeat says how long it has been");
    assert_eq!(notices(&tick(&mut e, T0 + 123 * S)).len(), 1);
    assert_eq!(notices(&tick(&mut e, T0 + 1000 * S)).len(), 1, "a late tick sends one repeat, not the missed ones in a burst");
    apply(&mut e, status("A", "accepted", T0 + 200 * S), T0 + 200 * S);
    let later = notices(&tick(&mut e, T0 + 10_000 * S));
    assert!(later.iter().all(|n| n.2 == "production"), "no repeats of crm_accepts after resolution: {later:?}");
}

#[test]
fn an_order_restored_from_stored_clocks_continues_where_it_was() {
    let mut e = engine();
    apply(&mut e, status("A", "new", T0), T0);
    apply(&mut e, status("A", "accepted", T0 + S), T0 + S);
    e.evict_finished();
    // crm_accepts met, production pending: A stays; after `manufactured` nothing runs.
    assert!(e.knows("A"));
    let done = apply(&mut e, status("A", "manufactured", T0 + 2 * S), T0 + 2 * S);
    e.evict_finished();
    assert!(!e.knows("A"), "orders with nothing running leave memory");
    let stored: Vec<(String, Clock)> =
        done.iter().filter_map(|c| if let Change::Clock { rule, clock, .. } = c { Some((rule.clone(), *clock)) } else { None }).collect();
    let mut all = vec![("crm_accepts".to_string(), Clock { from_ns: T0, end_ns: T0 + S, phase: Phase::Met })];
    all.extend(stored);
    // A duplicate `new` comes back: restored first, it changes nothing.
    let mut fresh = engine();
    fresh.restore("A", &all, &[], T0 + 5 * S);
    assert!(apply(&mut fresh, status("A", "new", T0), T0 + 5 * S).is_empty());
    assert_eq!(fresh.next_due(), None);

    // A pending clock whose deadline passed while the gateway was down fires once at start.
    let mut restarted = engine();
    restarted.restore("B", &[("crm_accepts".into(), Clock { from_ns: T0, end_ns: 0, phase: Phase::Pending })], &[], T0 + 60 * S);
    assert_eq!(alerts(&tick(&mut restarted, T0 + 60 * S)).len(), 1);
    assert!(tick(&mut restarted, T0 + 61 * S).is_empty());
    // A firing alert restored keeps its identity and resolves once.
    let firing = alerts(&tick(&mut engine_with_b(), T0 + 3 * S))[0].clone();
    let mut again = engine();
    again.restore(
        "B",
        &[("crm_accepts".into(), Clock { from_ns: T0, end_ns: 0, phase: Phase::Firing })],
        std::slice::from_ref(&firing),
        T0 + 10 * S,
    );
    assert_eq!(again.next_due(), Some(T0 + 70 * S), "the repeat to notifier a is scheduled from the restart");
    let resolved = alerts(&apply(&mut again, status("B", "accepted", T0 + S), T0 + 11 * S))[0].clone();
    assert_eq!((resolved.fired_at, resolved.late_data), (firing.fired_at, true));
}

fn engine_with_b() -> Engine {
    let mut e = engine();
    apply(&mut e, status("B", "new", T0), T0);
    e
}

#[test]
fn facts_no_rule_names_are_ignored() {
    let mut e = engine();
    assert!(apply(&mut e, status("A", "returned", T0), T0).is_empty());
    assert!(apply(&mut e, stage("A", "db_save", T0), T0).is_empty());
    e.evict_finished();
    assert!(!e.knows("A"));
}

/// What one instance stored for (order, rule), as another instance joins it.
fn stored(e: &mut Engine, order: &str, rule: &str, clock: Clock, alert: Option<&OrderAlert>, now: u64) -> Vec<Change> {
    let mut out = Vec::new();
    e.merge(order, rule, clock, alert, now, &mut out);
    out
}

#[test]
fn a_stored_end_from_another_instance_stops_the_deadline_here() {
    let mut e = engine();
    apply(&mut e, status("A-1", "new", T0), T0);
    // Another instance saw only `accepted`, 1 s later (its clock is idle with an end).
    let joined = stored(&mut e, "A-1", "crm_accepts", Clock { from_ns: 0, end_ns: T0 + S, phase: Phase::Idle }, None, T0 + S);
    assert!(alerts(&joined).is_empty());
    assert_eq!(e.snapshot("A-1", "crm_accepts").unwrap().0, Clock { from_ns: T0, end_ns: T0 + S, phase: Phase::Met });
    assert!(tick(&mut e, T0 + 10 * S).is_empty(), "no deadline left");
    // Joining the same stored clock again changes nothing.
    assert!(stored(&mut e, "A-1", "crm_accepts", Clock { from_ns: 0, end_ns: T0 + S, phase: Phase::Idle }, None, T0 + 2 * S).is_empty());
}

#[test]
fn an_alert_another_instance_fired_is_held_as_fired_and_resolves_once() {
    let mut e = engine();
    apply(&mut e, status("A-2", "new", T0), T0);
    let mut other = engine();
    apply(&mut other, status("A-2", "new", T0), T0);
    let fired = tick(&mut other, T0 + 3 * S);
    let alert = alerts(&fired)[0].clone();
    stored(&mut e, "A-2", "crm_accepts", Clock { from_ns: T0, end_ns: 0, phase: Phase::Firing }, Some(&alert), T0 + 3 * S);
    // The deadline does not fire here again; the alert is the stored one.
    assert!(tick(&mut e, T0 + 4 * S).iter().all(|c| !matches!(c, Change::Alert(_))));
    assert_eq!(e.snapshot("A-2", "crm_accepts").unwrap().1.unwrap().fired_at, alert.fired_at);
    // `accepted` in time by event time, delivered late: resolves with late data.
    let resolved = apply(&mut e, status("A-2", "accepted", T0 + S), T0 + 5 * S);
    let a = alerts(&resolved);
    assert_eq!((a.len(), a[0].state, a[0].late_data, a[0].fired_at), (1, AlertState::Resolved, true, alert.fired_at));
}

#[test]
fn an_alert_both_instances_fired_is_the_stored_one_here_too_until_it_resolves() {
    let mut e = engine();
    // This instance joined the order from the index: it knows no service for it.
    stored(&mut e, "A-4", "crm_accepts", Clock { from_ns: T0, end_ns: 0, phase: Phase::Pending }, None, T0);
    let mut other = engine();
    apply(&mut other, status("A-4", "new", T0), T0);
    // Both fire on the same deadline; the other's write wins.
    let here = alerts(&tick(&mut e, T0 + 3 * S))[0].clone();
    let won = alerts(&tick(&mut other, T0 + 3 * S))[0].clone();
    assert_ne!(here.service, won.service, "the copies differ: {here:?} {won:?}");
    stored(&mut e, "A-4", "crm_accepts", Clock { from_ns: T0, end_ns: 0, phase: Phase::Firing }, Some(&won), T0 + 3 * S);
    assert_eq!(e.snapshot("A-4", "crm_accepts").unwrap().1.as_ref(), Some(&won), "the stored alert is held here");
    let resolved = apply(&mut e, status("A-4", "accepted", T0 + 4 * S), T0 + 4 * S);
    let a = alerts(&resolved)[0];
    assert_eq!((a.state, a.service.as_deref(), a.fired_at), (AlertState::Resolved, won.service.as_deref(), won.fired_at));
}

#[test]
fn an_order_this_instance_met_but_another_fired_resolves_as_late_data() {
    let mut e = engine();
    apply(&mut e, status("A-3", "new", T0), T0);
    apply(&mut e, status("A-3", "accepted", T0 + S), T0 + S);
    let joined = stored(&mut e, "A-3", "crm_accepts", Clock { from_ns: T0, end_ns: 0, phase: Phase::Firing }, None, T0 + 4 * S);
    let a = alerts(&joined);
    assert_eq!((a.len(), a[0].state, a[0].late_data), (1, AlertState::Resolved, true));
    assert_eq!(e.snapshot("A-3", "crm_accepts").unwrap().0.phase, Phase::Resolved);
}

#[test]
fn an_alert_keeps_the_service_it_fired_with_until_it_resolves() {
    let mut e = engine();
    let mut published = stage("A", "bus_publish", T0);
    published.status = Some("new".into());
    apply(&mut e, published, T0);
    let fired = tick(&mut e, T0 + 3 * S);
    let a = alerts(&fired)[0];
    assert_eq!((a.service.as_deref(), a.state), (Some("shop-api"), AlertState::Firing));
    // The resolution comes from the CRM: the last event moves on, the alert's service does not.
    let resolved = apply(&mut e, status("A", "accepted", T0 + 4 * S), T0 + 4 * S);
    let a = alerts(&resolved).into_iter().find(|a| a.rule == "crm_accepts").unwrap();
    assert_eq!(a.state, AlertState::Resolved);
    assert_eq!(a.service.as_deref(), Some("shop-api"));
    assert_eq!(a.last_event.as_ref().and_then(|e| e.service.as_deref()), Some("crm-api"));
}

#[test]
fn an_order_s_clocks_are_read_whole_for_its_row() {
    let mut e = engine();
    apply(&mut e, status("A", "new", T0), T0);
    apply(&mut e, status("A", "accepted", T0 + S), T0 + S);
    let clocks: Vec<(String, Phase)> = e.order_clocks("A").map(|(rule, c)| (rule.to_string(), c.phase)).collect();
    assert_eq!(clocks, [("crm_accepts".to_string(), Phase::Met), ("production".to_string(), Phase::Pending)]);
    assert_eq!(e.order_clocks("B").count(), 0);
}

#[test]
fn tracked_orders_are_taken_once_each_with_all_their_clocks_and_stay_until_taken() {
    let mut e = engine();
    e.track_changed_orders();
    let taken = |e: &mut Engine| {
        let mut out: Vec<(String, Vec<(String, Phase)>)> = Vec::new();
        e.take_changed_orders(|id, clocks| out.push((id.to_string(), clocks.map(|(r, c)| (r.to_string(), c.phase)).collect())));
        out
    };
    // Clock changes are noted, not reported one by one; alerts and notices still are.
    assert!(apply(&mut e, status("A", "new", T0), T0).is_empty());
    apply(&mut e, status("A", "accepted", T0 + S), T0 + S);
    apply(&mut e, status("B", "new", T0), T0 + S);
    apply(&mut e, status("C", "in_production", T0), T0 + S);
    assert_eq!(
        taken(&mut e),
        [
            ("A".to_string(), vec![("crm_accepts".to_string(), Phase::Met), ("production".to_string(), Phase::Pending)]),
            ("B".to_string(), vec![("crm_accepts".to_string(), Phase::Pending)]),
            // Its end is known before its start (data out of order).
            ("C".to_string(), vec![("crm_accepts".to_string(), Phase::Idle)])
        ],
        "each changed order once, in the order of its first change"
    );
    assert!(taken(&mut e).is_empty());
    let fired = tick(&mut e, T0 + 4 * S);
    assert_eq!(alerts(&fired).len(), 1);
    assert!(!fired.iter().any(|c| matches!(c, Change::Clock { .. })));
    // An order that finished is not evicted before its clocks were taken (and written).
    apply(&mut e, status("B", "cancelled", T0 + 5 * S), T0 + 5 * S);
    let evicted = |e: &mut Engine| e.evict_finished().iter().map(|id| id.to_string()).collect::<Vec<_>>();
    assert_eq!(evicted(&mut e), ["C"], "A runs; B finished but is not taken yet");
    assert!(e.knows("B"));
    // The rules B never started wait for a start that may still come (out of order).
    let cancelled =
        vec![("crm_accepts".to_string(), Phase::Resolved), ("production".to_string(), Phase::Idle), ("bus_wait".to_string(), Phase::Idle)];
    assert_eq!(taken(&mut e), [("B".to_string(), cancelled)]);
    assert_eq!(evicted(&mut e), ["B"]);
    assert!(e.knows("A") && !e.knows("B") && !e.knows("C"));
}

/// Deadlines armed in every order (most in time order, some a little out of it, some hours
/// out of it: the queue's back, a place near it, the ordered set), many of them cancelled or
/// moved before they are due, slots let go of and taken by new orders: each deadline that still
/// holds fires once, in time order, and none that was cancelled does.
#[test]
fn deadlines_in_and_out_of_order_fire_once_each_in_time_order_and_cancelled_ones_never() {
    let mut e = engine();
    let mut rng = fastrand::Rng::with_seed(7);
    // (order, start) of every order whose crm_accepts deadline must fire.
    let mut expected: Vec<(u64, String)> = Vec::new();
    let now = T0 + 100_000 * S;
    for i in 0..20_000u64 {
        let order = format!("O-{i}");
        let start = match i % 50 {
            // Days before the others (further than the rule's queue reaches).
            _ if i % 1000 == 500 => T0 + 1000 * S - 3 * 86_400 * S - rng.u64(0..3600) * S,
            // Hours before the others.
            0 => T0 + 1000 * S - rng.u64(0..3600) * S,
            // A few milliseconds out of order.
            1..=9 => T0 + 1000 * S + i * 1_000_000 - rng.u64(0..40) * 1_000_000,
            _ => T0 + 1000 * S + i * 1_000_000,
        };
        apply(&mut e, status(&order, "new", start), now);
        match i % 7 {
            // Cancelled in time: the deadline is cancelled, and the order leaves memory.
            0 => {
                apply(&mut e, status(&order, "cancelled", start + S), now);
            }
            // An earlier `new` moves the clock's start: the first deadline is cancelled and
            // the earlier one set.
            1 => {
                let earlier = start - rng.u64(1..500) * 1_000_000;
                apply(&mut e, status(&order, "new", earlier), now);
                expected.push((earlier, order));
            }
            _ => expected.push((start, order)),
        }
    }
    // Orders that ended leave memory; their slots go to new orders with deadlines of their own.
    let mut changed = Vec::new();
    e.take_changed_orders(|_, _| changed.push(()));
    let evicted = e.evict_finished();
    assert!(!evicted.is_empty());
    for i in 0..evicted.len() as u64 {
        let order = format!("N-{i}");
        let start = T0 + 2000 * S + i * 1_000_000;
        apply(&mut e, status(&order, "new", start), now);
        expected.push((start, order));
    }
    expected.sort();
    let mut fired: Vec<(u64, String)> = Vec::new();
    let mut wall = 0;
    while let Some(due) = e.next_due() {
        assert!(due >= wall, "the next timer is never in the past of the last tick");
        wall = due;
        for a in alerts(&tick(&mut e, wall)) {
            assert_eq!(a.rule, "crm_accepts");
            let start = wall - 3 * S;
            fired.push((start, a.order_id.clone()));
        }
        if fired.len() == expected.len() {
            break;
        }
    }
    assert!(fired.windows(2).all(|w| w[0].0 <= w[1].0), "deadlines fire in time order");
    // Deadlines due at the same nanosecond fire in slot order: compared as sets.
    fired.sort();
    let first_difference = fired.iter().zip(&expected).position(|(f, x)| f != x);
    assert_eq!(first_difference, None, "each deadline fires once, at its time");
    assert_eq!(fired.len(), expected.len());
    assert!(tick(&mut e, wall + 1000 * S).iter().all(|c| !matches!(c, Change::Alert(_))), "nothing fires twice");
}

/// Cancelled deadlines do not pile up: orders that reach `to` in time leave their rule's queue
/// once it holds many more deadlines than pending clocks.
#[test]
fn cancelled_deadlines_are_swept_out_of_their_queue() {
    let mut e = engine();
    for i in 0..50_000u64 {
        let order = format!("O-{i}");
        apply(&mut e, status(&order, "new", T0 + i * 1_000_000), T0);
        apply(&mut e, status(&order, "cancelled", T0 + i * 1_000_000 + S), T0);
    }
    let (_, timers) = e.sizes();
    assert!(timers <= 4096 + 1, "{timers} timers held for no pending clock");
    // One order still waits; the cancelled deadlines before its own do not wake the monitor
    // once a turn has ticked.
    apply(&mut e, status("late", "new", T0 + 60 * S), T0);
    assert!(tick(&mut e, T0).is_empty());
    assert_eq!(e.next_due(), Some(T0 + 63 * S), "the next deadline that holds");
    assert_eq!(alerts(&tick(&mut e, T0 + 10_000 * S)).len(), 1);
    assert_eq!(e.next_due(), Some(T0 + 10_060 * S), "then only the firing alert's repeat (notifier a, every 60 s)");
}
