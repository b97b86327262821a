//! Order metrics from the attributes `order_enrich` writes (`order.id`, `order.status`,
//! `order.stage`): time between consecutive statuses, orders per current status, steps per
//! service and stage, and the time an order's message waited on the bus. The order id is never a
//! label: each order's last status and its event time live in a bounded book (at most
//! `max_orders`, forgotten after `window` unseen; evictions counted).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::config::SpanMetricsConfig;
use super::series::{format_float, header, Exemplar, Family, Kind};

/// Bus hand-overs remembered per order, each way (publishes waiting for their consume).
const BUS_PENDING: usize = 8;

/// What one span says about its order.
pub struct OrderSpan<'a> {
    pub order_id: &'a str,
    pub service: &'a str,
    pub status: Option<&'a str>,
    pub stage: Option<&'a str>,
    pub destination: Option<&'a str>,
    /// Event time: the span's start, Unix nanoseconds.
    pub time_ns: u64,
    pub trace_id: Option<[u8; 16]>,
}

pub struct OrderMetrics {
    pub transition: Family,
    pub steps: Family,
    pub bus_wait: Family,
    book: Mutex<Book>,
    window: Duration,
    max_orders: usize,
    exemplars: bool,
    pub evicted: AtomicU64,
    pub late: AtomicU64,
}

#[derive(Default)]
struct Book {
    orders: HashMap<Box<str>, OrderState>,
    /// Orders by when they were queued, oldest first; an order still seen within the window when
    /// it reaches the front is queued again (so the front is about the least recently seen).
    queue: VecDeque<(Box<str>, Instant)>,
}

struct OrderState {
    status: Option<(Arc<str>, u64)>,
    last_seen: Instant,
    publishes: VecDeque<(Box<str>, u64)>,
    consumes: VecDeque<(Box<str>, u64, Option<[u8; 16]>)>,
}

impl OrderMetrics {
    pub fn new(config: &SpanMetricsConfig) -> OrderMetrics {
        let limit = config.aggregation_cardinality_limit;
        let bounds: Arc<[f64]> = config.orders.buckets.iter().map(Duration::as_secs_f64).collect();
        OrderMetrics {
            transition: Family::new(
                "tracegate_order_transition_seconds",
                "Event time between an order's consecutive statuses",
                &["from", "to"],
                Kind::Histogram(bounds.clone()),
                limit,
            ),
            steps: Family::new(
                "tracegate_order_steps",
                "Spans that record a step of an order, by service and stage",
                &["service", "stage"],
                Kind::Counter,
                limit,
            ),
            bus_wait: Family::new(
                "tracegate_order_bus_wait_seconds",
                "Event time from an order's publish on the bus to its consume, by destination",
                &["destination"],
                Kind::Histogram(bounds),
                limit,
            ),
            book: Mutex::default(),
            window: config.orders.window,
            max_orders: config.orders.max_orders,
            exemplars: config.exemplars.enabled,
            evicted: AtomicU64::new(0),
            late: AtomicU64::new(0),
        }
    }

    pub fn record(&self, span: &OrderSpan<'_>, now: Instant, now_ms: u64) {
        if let Some(stage) = span.stage {
            self.steps.inc(&[span.service, stage], 1.0);
        }
        let is_publish = span.stage == Some("bus_publish");
        let is_consume = span.stage == Some("bus_consume");
        if span.status.is_none() && !is_publish && !is_consume {
            self.touch(span.order_id, now);
            return;
        }
        let mut transition: Option<(Arc<str>, f64)> = None;
        let mut waits: Vec<(Box<str>, f64, Option<[u8; 16]>)> = Vec::new();
        {
            let mut book = self.book.lock().unwrap_or_else(|p| p.into_inner());
            let state = self.state(&mut book, span.order_id, now);
            if let Some(status) = span.status {
                match &state.status {
                    None => state.status = Some((Arc::from(status), span.time_ns)),
                    Some((current, since)) if &**current == status => {
                        // The same status recorded again: it was entered at its earliest record.
                        if span.time_ns < *since {
                            state.status = Some((current.clone(), span.time_ns));
                        }
                    }
                    Some((current, since)) if span.time_ns >= *since => {
                        transition = Some((current.clone(), (span.time_ns - since) as f64 / 1e9));
                        state.status = Some((Arc::from(status), span.time_ns));
                    }
                    // An older status arriving after a newer one: no transition to measure.
                    Some(_) => {
                        self.late.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            let destination = span.destination.unwrap_or("");
            if is_publish {
                match take_matching(&mut state.consumes, destination, |c| &c.0) {
                    Some((dest, consumed, trace)) if consumed >= span.time_ns => {
                        waits.push((pick(dest, destination), (consumed - span.time_ns) as f64 / 1e9, trace))
                    }
                    Some(_) => {}
                    None => push_bounded(&mut state.publishes, (destination.into(), span.time_ns)),
                }
            }
            if is_consume {
                match take_matching(&mut state.publishes, destination, |p| &p.0) {
                    Some((dest, published)) if span.time_ns >= published => {
                        waits.push((pick(dest, destination), (span.time_ns - published) as f64 / 1e9, span.trace_id))
                    }
                    Some(_) => {}
                    None => push_bounded(&mut state.consumes, (destination.into(), span.time_ns, span.trace_id)),
                }
            }
        }
        let exemplar = |value: f64, trace: Option<[u8; 16]>| {
            self.exemplars.then_some(()).and(trace).map(|trace_id| Exemplar { trace_id, value, time_ms: now_ms })
        };
        if let (Some((from, seconds)), Some(to)) = (transition, span.status) {
            self.transition.observe(&[&from, to], seconds, exemplar(seconds, span.trace_id));
        }
        for (destination, seconds, trace) in waits {
            let label = if destination.is_empty() { "unknown" } else { &destination };
            self.bus_wait.observe(&[label], seconds, exemplar(seconds, trace));
        }
    }

    fn touch(&self, order_id: &str, now: Instant) {
        let mut book = self.book.lock().unwrap_or_else(|p| p.into_inner());
        self.state(&mut book, order_id, now);
    }

    /// The order's state, created if new (forgetting the least recently seen past the bound).
    fn state<'b>(&self, book: &'b mut Book, order_id: &str, now: Instant) -> &'b mut OrderState {
        if !book.orders.contains_key(order_id) {
            self.prune(book, now);
            while book.orders.len() >= self.max_orders {
                let Some((id, _)) = book.queue.pop_front() else { break };
                if book.orders.remove(&id).is_some() {
                    self.evicted.fetch_add(1, Ordering::Relaxed);
                }
            }
            let id: Box<str> = order_id.into();
            book.queue.push_back((id.clone(), now));
            book.orders.insert(id, OrderState { status: None, last_seen: now, publishes: VecDeque::new(), consumes: VecDeque::new() });
        }
        // Present: inserted above if it was not.
        let state = book.orders.get_mut(order_id).expect("present");
        state.last_seen = now;
        state
    }

    /// Forgets orders not seen within the window.
    fn prune(&self, book: &mut Book, now: Instant) {
        while let Some((_, queued)) = book.queue.front() {
            if now.saturating_duration_since(*queued) < self.window {
                break;
            }
            let Some((id, _)) = book.queue.pop_front() else { break };
            let Some(state) = book.orders.get(&id) else { continue };
            if now.saturating_duration_since(state.last_seen) >= self.window {
                book.orders.remove(&id);
            } else {
                let seen = state.last_seen;
                book.queue.push_back((id, seen));
            }
        }
    }

    /// Orders remembered now, and how many of them are in each status.
    pub fn in_status(&self, now: Instant) -> (usize, Vec<(Arc<str>, u64)>) {
        let mut book = self.book.lock().unwrap_or_else(|p| p.into_inner());
        self.prune(&mut book, now);
        let mut by: HashMap<Arc<str>, u64> = HashMap::new();
        for state in book.orders.values() {
            if let Some((status, _)) = &state.status {
                *by.entry(status.clone()).or_default() += 1;
            }
        }
        let mut by: Vec<(Arc<str>, u64)> = by.into_iter().collect();
        by.sort();
        (book.orders.len(), by)
    }

    pub fn encode(&self, out: &mut String, openmetrics: bool, now: Instant) {
        self.transition.encode(out, openmetrics);
        self.steps.encode(out, openmetrics);
        self.bus_wait.encode(out, openmetrics);
        let (orders, by_status) = self.in_status(now);
        header(out, "tracegate_orders_in_status", "Orders whose current status this is, among the orders seen within the window", "gauge");
        for (status, n) in by_status {
            out.push_str("tracegate_orders_in_status{status=\"");
            out.push_str(&status.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n"));
            out.push_str("\"} ");
            out.push_str(&n.to_string());
            out.push('\n');
        }
        header(out, "tracegate_order_metrics_orders", "Orders the order metrics remember (their last status and its time)", "gauge");
        out.push_str(&format!("tracegate_order_metrics_orders {orders}\n"));
        let counters = [
            (
                "tracegate_order_metrics_evicted_orders",
                "Orders forgotten before their window because max_orders was reached",
                &self.evicted,
            ),
            ("tracegate_order_metrics_late_statuses", "Statuses older than the order's current one (no transition measured)", &self.late),
        ];
        for (name, help, v) in counters {
            let family = if openmetrics { name.to_string() } else { format!("{name}_total") };
            header(out, &family, help, "counter");
            out.push_str(&format!("{name}_total {}\n", format_float(v.load(Ordering::Relaxed) as f64)));
        }
    }
}

/// The destination label: the one on either side, the consume's first.
fn pick(stored: Box<str>, seen: &str) -> Box<str> {
    if seen.is_empty() {
        stored
    } else {
        seen.into()
    }
}

/// Takes the oldest entry with the same destination (an empty destination matches any).
fn take_matching<T>(list: &mut VecDeque<T>, destination: &str, dest: impl Fn(&T) -> &Box<str>) -> Option<T> {
    let at = list.iter().position(|e| {
        let d = dest(e);
        d.is_empty() || destination.is_empty() || &**d == destination
    })?;
    list.remove(at)
}

fn push_bounded<T>(list: &mut VecDeque<T>, item: T) {
    if list.len() >= BUS_PENDING {
        list.pop_front();
    }
    list.push_back(item);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span<'a>(order: &'a str, status: Option<&'a str>, stage: Option<&'a str>, secs: u64) -> OrderSpan<'a> {
        OrderSpan { order_id: order, service: "crm-api", status, stage, destination: None, time_ns: secs * 1_000_000_000, trace_id: None }
    }

    #[test]
    fn transitions_are_measured_between_consecutive_statuses_by_event_time() {
        let m = OrderMetrics::new(&SpanMetricsConfig::default());
        let now = Instant::now();
        m.record(&span("A-1", Some("new"), Some("created"), 100), now, 0);
        m.record(&span("A-1", Some("new"), Some("status_change"), 90), now, 0);
        m.record(&span("A-1", Some("accepted"), Some("status_change"), 130), now, 0);
        m.record(&span("A-1", Some("new"), Some("status_change"), 95), now, 0);
        assert_eq!(m.transition.get(&["new", "accepted"]), Some(1.0));
        assert_eq!(m.late.load(Ordering::Relaxed), 1);
        let (orders, by) = m.in_status(now);
        assert_eq!(orders, 1);
        assert_eq!(by, vec![(Arc::from("accepted"), 1)]);
        assert_eq!(m.steps.get(&["crm-api", "status_change"]), Some(3.0));
    }

    #[test]
    fn the_book_is_bounded_and_forgets_orders_outside_the_window() {
        let mut config = SpanMetricsConfig::default();
        config.orders.max_orders = 10;
        config.orders.window = Duration::from_secs(60);
        let m = OrderMetrics::new(&config);
        let now = Instant::now();
        for i in 0..25 {
            m.record(&span(&format!("A-{i}"), Some("new"), None, 1), now, 0);
        }
        assert_eq!(m.in_status(now).0, 10);
        assert_eq!(m.evicted.load(Ordering::Relaxed), 15);
        assert_eq!(m.in_status(now + Duration::from_secs(61)).0, 0);
    }

    #[test]
    fn bus_wait_joins_publish_and_consume_in_either_order() {
        let m = OrderMetrics::new(&SpanMetricsConfig::default());
        let now = Instant::now();
        let mut publish = span("A-1", None, Some("bus_publish"), 10);
        publish.destination = Some("orders");
        let mut consume = span("A-1", Some("accepted"), Some("bus_consume"), 13);
        consume.destination = Some("orders");
        m.record(&consume, now, 0);
        m.record(&publish, now, 0);
        assert_eq!(m.bus_wait.get(&["orders"]), Some(1.0));
    }
}
