//! `MonitorFeed`: the monitors' side of the request path. It picks the order facts out of each
//! processed batch (one pass over each span's attributes; spans whose status and stage no rule
//! names cost that pass and nothing more) and adds them to the [`FactQueue`] without waiting:
//! when the queue is full, the facts are dropped and counted
//! (`tracegate_order_monitor_dropped_facts_total`) rather than holding up the client.
//!
//! A fact holds its order id and names inline ([`Name`]): picking one out allocates nothing
//! (unless a name is over 24 bytes), and the monitor task lets it go without touching memory or
//! reference counts that the request threads write. The queue wakes the monitor task only when
//! it was empty, so that a busy gateway wakes it once per turn, not once per request.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::Notify;

use super::{Fact, Name};
use crate::pipeline::SpanObserver;
use crate::shared::kv_text;

/// Facts waiting for the monitor task: a bounded buffer that the task empties each turn.
pub struct FactQueue {
    state: Mutex<Queued>,
    ready: Notify,
    capacity: usize,
}

struct Queued {
    facts: Vec<Fact>,
    /// The monitor task stopped: nothing takes facts any more.
    closed: bool,
}

/// What became of facts offered to the queue.
enum Pushed {
    Queued,
    /// Over capacity: dropped.
    Full,
    Closed,
}

impl FactQueue {
    /// A queue holding at most `capacity` facts.
    pub fn new(capacity: usize) -> Arc<FactQueue> {
        Arc::new(FactQueue { state: Mutex::new(Queued { facts: Vec::new(), closed: false }), ready: Notify::new(), capacity })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queued> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Moves `facts` into the queue (leaving the caller's buffer empty, its room kept).
    fn push(&self, facts: &mut Vec<Fact>) -> Pushed {
        let was_empty = {
            let mut q = self.lock();
            if q.closed {
                return Pushed::Closed;
            }
            if q.facts.len() + facts.len() > self.capacity {
                return Pushed::Full;
            }
            let was_empty = q.facts.is_empty();
            q.facts.append(facts);
            was_empty
        };
        // Facts already waiting have woken the task (or it has not taken them yet).
        if was_empty {
            self.ready.notify_one();
        }
        Pushed::Queued
    }

    /// Waits until facts may be waiting (spurious wake-ups are possible: `take` then finds none).
    pub async fn ready(&self) {
        self.ready.notified().await
    }

    /// Everything queued, in arrival order.
    pub fn take(&self) -> Vec<Fact> {
        std::mem::take(&mut self.lock().facts)
    }

    /// Everything queued, in arrival order, into `spare` (emptied by the caller), whose room
    /// the queue keeps instead: the two buffers take turns and are not grown again each turn.
    pub fn take_into(&self, spare: &mut Vec<Fact>) {
        debug_assert!(spare.is_empty());
        std::mem::swap(&mut self.lock().facts, spare);
    }

    /// Takes what is queued and refuses what comes after (shutdown).
    pub fn close(&self) -> Vec<Fact> {
        let mut q = self.lock();
        q.closed = true;
        std::mem::take(&mut q.facts)
    }
}

pub struct MonitorFeed {
    queue: Arc<FactQueue>,
    /// Statuses and stages some monitor's rules or terminal lists name (looked up for every
    /// span that names one: a fast hash).
    statuses: HashSet<String, foldhash::fast::RandomState>,
    stages: HashSet<String, foldhash::fast::RandomState>,
    dropped: Counter,
    /// When a drop was last logged: at most one line per [`DROP_LOG_EVERY`].
    drop_logged: Mutex<Option<Instant>>,
}

const DROP_LOG_EVERY: Duration = Duration::from_secs(10);

/// Room for facts a request thread keeps between batches.
const KEEP_FACTS: usize = 4096;

impl MonitorFeed {
    pub fn new(queue: Arc<FactQueue>, statuses: HashSet<String>, stages: HashSet<String>, dropped: Counter) -> MonitorFeed {
        MonitorFeed {
            queue,
            statuses: statuses.into_iter().collect(),
            stages: stages.into_iter().collect(),
            dropped,
            drop_logged: Mutex::new(None),
        }
    }

    /// The facts of one batch that some monitor wants, added to `facts`.
    pub fn facts(&self, batch: &[ResourceSpans], facts: &mut Vec<Fact>) {
        // The wall clock, read once per batch and only when a fact is dated ahead of the last read.
        let mut wall: Option<u64> = None;
        for rs in batch {
            // Looked up once per resource, and only when one of its spans is a fact.
            let mut service: Option<Option<Name>> = None;
            for ss in &rs.scope_spans {
                for span in &ss.spans {
                    let (mut order, mut status, mut stage) = (None, None, None);
                    for kv in &span.attributes {
                        // Most attributes are not the order's: a length test each.
                        let key = kv.key.as_bytes();
                        match key.len() {
                            8 if key == b"order.id" => order = Some(kv),
                            11 if key == b"order.stage" => stage = Some(kv),
                            12 if key == b"order.status" => status = Some(kv),
                            _ => continue,
                        }
                        if order.is_some() && status.is_some() && stage.is_some() {
                            break;
                        }
                    }
                    let Some(order) = order else { continue };
                    if status.is_none() && stage.is_none() {
                        continue;
                    }
                    let status = status.and_then(kv_text).filter(|s| self.statuses.contains(s.as_ref()));
                    let stage = stage.and_then(kv_text);
                    if status.is_none() && !stage.as_deref().is_some_and(|s| self.stages.contains(s)) {
                        continue;
                    }
                    let Some(order) = kv_text(order).filter(|o| !o.is_empty()) else { continue };
                    let service = service
                        .get_or_insert_with(|| {
                            let resource = rs.resource.as_ref()?;
                            let kv = resource.attributes.iter().find(|kv| kv.key == "service.name")?;
                            kv_text(kv).map(|s| Name::from(s.as_ref()))
                        })
                        .clone();
                    facts.push(Fact {
                        order_id: Name::from(order.as_ref()),
                        status: status.map(|s| Name::from(s.as_ref())),
                        // A stage no rule names still tells the alert's last event.
                        stage: stage.map(|s| Name::from(s.as_ref())),
                        service,
                        time_ns: not_ahead(event_time(span.start_time_unix_nano, span.end_time_unix_nano), &mut wall),
                    });
                }
            }
        }
    }

    fn dropped(&self, n: usize) {
        self.dropped.inc_by(n as u64);
        let mut logged = self.drop_logged.lock().unwrap_or_else(|p| p.into_inner());
        if logged.is_none_or(|t| t.elapsed() >= DROP_LOG_EVERY) {
            *logged = Some(Instant::now());
            tracing::warn!(
                facts = n,
                "the order monitors fall behind; facts dropped (tracegate_order_monitor_dropped_facts_total counts them)"
            );
        }
    }
}

/// When a span's fact happened: its start; a span without one (0, "unset" in OTLP) its end; one
/// with neither, now (when it is seen), rather than 1970, which would fire every rule it starts.
fn event_time(start_ns: u64, end_ns: u64) -> u64 {
    match (start_ns, end_ns) {
        (0, 0) => super::service::wall_ns(),
        (0, end) => end,
        (start, _) => start,
    }
}

/// How far ahead of the gateway's clock a fact may be dated: clocks of hosts drift by less.
const MAX_AHEAD_NS: u64 = 60_000_000_000;

/// A fact dated more than [`MAX_AHEAD_NS`] ahead of the gateway's clock (a sender whose clock is
/// wrong) is dated now, when it is seen: a clock started in the future would hold back its
/// alert by as much. `wall` keeps the clock read for the batch.
fn not_ahead(t: u64, wall: &mut Option<u64>) -> u64 {
    let limit = |w: u64| w.saturating_add(MAX_AHEAD_NS);
    if wall.is_some_and(|w| t <= limit(w)) {
        return t;
    }
    let w = super::service::wall_ns();
    *wall = Some(w);
    if t > limit(w) {
        w
    } else {
        t
    }
}

impl SpanObserver for MonitorFeed {
    fn observe(&self, batch: &[ResourceSpans]) {
        // Each request thread keeps its buffer: facts are built in place, moved into the queue
        // once, and the buffer's room is kept for the next batch.
        thread_local! {
            static FACTS: std::cell::RefCell<Vec<Fact>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        FACTS.with_borrow_mut(|facts| {
            self.facts(batch, facts);
            if facts.is_empty() {
                return;
            }
            let n = facts.len();
            match self.queue.push(facts) {
                Pushed::Queued => {}
                Pushed::Full => self.dropped(n),
                // The monitors stopped (shutdown): nothing watches any more.
                Pushed::Closed => {}
            }
            facts.clear();
            // A batch far larger than usual does not keep its room for ever.
            facts.shrink_to(KEEP_FACTS);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fact(id: &str) -> Fact {
        Fact { order_id: id.into(), status: Some("new".into()), stage: None, service: None, time_ns: 1 }
    }

    #[tokio::test]
    async fn queue_wakes_once_keeps_order_bounds_and_closes() {
        let q = FactQueue::new(3);
        assert!(matches!(q.push(&mut vec![fact("a"), fact("b")]), Pushed::Queued));
        // Woken by the first push (the permit is kept until the task waits).
        tokio::time::timeout(Duration::from_secs(1), q.ready()).await.expect("woken");
        assert!(matches!(q.push(&mut vec![fact("c"), fact("d")]), Pushed::Full));
        assert!(matches!(q.push(&mut vec![fact("c")]), Pushed::Queued));
        // Not empty before that push: no second wake-up.
        assert!(tokio::time::timeout(Duration::from_millis(50), q.ready()).await.is_err());
        let taken: Vec<String> = q.take().into_iter().map(|f| f.order_id.to_string()).collect();
        assert_eq!(taken, ["a", "b", "c"]);
        assert!(matches!(q.push(&mut vec![fact("e")]), Pushed::Queued));
        tokio::time::timeout(Duration::from_secs(1), q.ready()).await.expect("woken again once emptied");
        assert_eq!(q.close().len(), 1);
        assert!(matches!(q.push(&mut vec![fact("f")]), Pushed::Closed));
        assert!(q.take().is_empty());
    }

    #[test]
    fn a_span_without_a_start_time_is_dated_by_its_end_or_else_now() {
        use crate::loadgen::text;
        use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Span};
        let feed = MonitorFeed::new(FactQueue::new(10), ["new".to_string()].into(), Default::default(), Default::default());
        let span = |start, end| Span {
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes: vec![text("order.id", "A-1"), text("order.status", "new")],
            ..Default::default()
        };
        let batch = [ResourceSpans {
            scope_spans: vec![ScopeSpans { spans: vec![span(5, 9), span(0, 9), span(0, 0)], ..Default::default() }],
            ..Default::default()
        }];
        let before = super::super::service::wall_ns();
        let mut facts = Vec::new();
        feed.facts(&batch, &mut facts);
        let times: Vec<u64> = facts.iter().map(|f| f.time_ns).collect();
        assert_eq!(times[..2], [5, 9]);
        assert!(times[2] >= before && times[2] <= super::super::service::wall_ns(), "{times:?}");
    }

    #[test]
    fn a_span_dated_far_ahead_of_the_gateways_clock_is_dated_when_seen() {
        use crate::loadgen::text;
        use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Span};
        let feed = MonitorFeed::new(FactQueue::new(10), ["new".to_string()].into(), Default::default(), Default::default());
        let span = |start| Span {
            start_time_unix_nano: start,
            end_time_unix_nano: start + 1,
            attributes: vec![text("order.id", "A-1"), text("order.status", "new")],
            ..Default::default()
        };
        let before = super::super::service::wall_ns();
        let (soon, hour) = (before + 30_000_000_000, before + 3_600_000_000_000);
        let batch = [ResourceSpans {
            scope_spans: vec![ScopeSpans { spans: vec![span(before - 5), span(soon), span(hour)], ..Default::default() }],
            ..Default::default()
        }];
        let mut facts = Vec::new();
        feed.facts(&batch, &mut facts);
        let times: Vec<u64> = facts.iter().map(|f| f.time_ns).collect();
        assert_eq!(times[..2], [before - 5, soon], "a past span, and one within a minute ahead, keep their time");
        assert!(times[2] >= before && times[2] <= super::super::service::wall_ns(), "an hour ahead: dated now, {times:?}");
    }
}
