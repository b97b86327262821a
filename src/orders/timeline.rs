//! An order's timeline: its steps (spans with a stage, or failed spans) in time order, and the
//! changes of status between them. Built from the order's spans in any order, whichever store
//! they come from.
//!
//! An instrumented call wrapped twice (an outer and an inner client object) records one step as
//! two nested spans; a child whose stage, service and step attributes equal its parent's is the
//! same step and is not shown again (the trace keeps both spans).

use std::collections::{BTreeSet, HashMap};

/// Stage given to spans that joined an order through a correlation value and name no stage.
pub const FILE_LINK_STAGE: &str = "file_link";
/// Stage assumed for a span that carries `order.status` but no `order.stage`.
const STATUS_CHANGE_STAGE: &str = "status_change";

/// The attributes that say what a step did: two nested spans that agree on all of them (and on
/// stage and service) record the same step.
pub const STEP_KEY_ATTRIBUTES: &[&str] = &[
    "db.system",
    "db.system.name",
    "db.name",
    "db.namespace",
    "db.operation",
    "db.operation.name",
    "db.statement",
    "db.query.text",
    "messaging.system",
    "messaging.destination",
    "messaging.destination.name",
    "messaging.operation",
    "messaging.operation.type",
    "http.request.method",
    "http.method",
    "url.full",
    "http.url",
    "url.path",
    "http.target",
    "http.route",
    "order.status",
];

/// The step key of a span: its [`STEP_KEY_ATTRIBUTES`] as text, read with `value`.
pub fn step_key<F: Fn(&str) -> Option<String>>(value: F) -> String {
    let mut key = String::new();
    for k in STEP_KEY_ATTRIBUTES {
        if let Some(v) = value(k) {
            key.push_str(k);
            key.push('=');
            key.push_str(&v);
            key.push('\u{1f}');
        }
    }
    key
}

/// One span of an order, as far as the timeline needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderSpan {
    pub trace_id: Vec<u8>,
    pub span_id: Vec<u8>,
    /// Empty for a root span.
    pub parent_span_id: Vec<u8>,
    /// What the step did ([`step_key`]); empty when unknown.
    pub step_key: String,
    pub service: Option<String>,
    pub name: String,
    pub start_ns: u64,
    pub end_ns: u64,
    pub stage: Option<String>,
    pub status: Option<String>,
    pub error: bool,
    /// Joined through a correlation value instead of carrying the order id.
    pub linked: bool,
}

impl OrderSpan {
    /// The stage the span's step shows: its own `order.stage`, else `file_link` for a span
    /// joined through a correlation value, else `status_change` for a span with a status.
    pub fn step_stage(&self) -> Option<String> {
        self.stage.clone().or_else(|| {
            if self.linked {
                Some(FILE_LINK_STAGE.to_string())
            } else {
                self.status.as_ref().map(|_| STATUS_CHANGE_STAGE.to_string())
            }
        })
    }

    /// True when the span is a step of the timeline: it has a stage ([`Self::step_stage`]) or
    /// it failed.
    pub fn is_step(&self) -> bool {
        self.stage.is_some() || self.linked || self.status.is_some() || self.error
    }
}

/// Where an order is and how it got there: its steps in time order and its status changes.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderTimeline {
    pub order_id: String,
    /// The status of the latest event that has one.
    pub status: Option<String>,
    pub first_seen: u64,
    pub last_seen: u64,
    pub services: Vec<String>,
    pub trace_ids: Vec<String>,
    pub events: Vec<TimelineEvent>,
    pub transitions: Vec<StatusTransition>,
}

/// A step of an order: a span with a stage, or a failed span.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineEvent {
    pub time: u64,
    pub service: Option<String>,
    pub stage: Option<String>,
    pub status: Option<String>,
    pub span_name: String,
    pub trace_id: String,
    pub span_id: String,
    pub duration_ms: f64,
    pub error: bool,
}

/// A change of status between two consecutive events that carry one.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusTransition {
    pub from: String,
    pub to: String,
    pub seconds: f64,
}

impl OrderTimeline {
    /// Builds the timeline from the order's spans, in any order; `None` without spans.
    pub fn assemble(order_id: &str, mut spans: Vec<OrderSpan>) -> Option<OrderTimeline> {
        spans.sort_by(|a, b| (a.start_ns, &a.span_id, &a.trace_id).cmp(&(b.start_ns, &b.span_id, &b.trace_id)));
        let first_seen = spans.iter().map(|s| s.start_ns).min()?;
        let last_seen = spans.iter().map(|s| s.end_ns.max(s.start_ns)).max()?;
        let services: BTreeSet<&str> = spans.iter().filter_map(|s| s.service.as_deref()).collect();
        let trace_ids: BTreeSet<String> = spans.iter().map(|s| hex::encode(&s.trace_id)).collect();
        let stage_of = OrderSpan::step_stage;
        let by_id: HashMap<(&[u8], &[u8]), &OrderSpan> = spans.iter().map(|s| ((s.trace_id.as_slice(), s.span_id.as_slice()), s)).collect();
        // The inner span of a call wrapped twice repeats its parent's step (unless only it failed).
        let repeats_parent = |s: &OrderSpan, stage: &Option<String>| {
            let Some(parent) = by_id.get(&(s.trace_id.as_slice(), s.parent_span_id.as_slice())) else { return false };
            !s.parent_span_id.is_empty()
                && stage.is_some()
                && !s.step_key.is_empty()
                && stage_of(parent) == *stage
                && parent.service == s.service
                && parent.step_key == s.step_key
                && (parent.error || !s.error)
        };
        let events: Vec<TimelineEvent> = spans
            .iter()
            .filter_map(|s| {
                let stage = stage_of(s);
                if repeats_parent(s, &stage) {
                    return None;
                }
                (stage.is_some() || s.error).then(|| TimelineEvent {
                    time: s.start_ns,
                    service: s.service.clone(),
                    stage,
                    status: s.status.clone(),
                    span_name: s.name.clone(),
                    trace_id: hex::encode(&s.trace_id),
                    span_id: hex::encode(&s.span_id),
                    duration_ms: s.end_ns.saturating_sub(s.start_ns) as f64 / 1e6,
                    error: s.error,
                })
            })
            .collect();
        let mut transitions = Vec::new();
        let mut current: Option<(&str, u64)> = None;
        for event in &events {
            let Some(status) = event.status.as_deref() else {
                continue;
            };
            match current {
                Some((previous, _)) if previous == status => {}
                Some((previous, since)) => {
                    transitions.push(StatusTransition {
                        from: previous.into(),
                        to: status.into(),
                        seconds: event.time.saturating_sub(since) as f64 / 1e9,
                    });
                    current = Some((status, event.time));
                }
                None => current = Some((status, event.time)),
            }
        }
        Some(OrderTimeline {
            order_id: order_id.into(),
            status: current.map(|(s, _)| s.to_string()),
            first_seen,
            last_seen,
            services: services.into_iter().map(String::from).collect(),
            trace_ids: trace_ids.into_iter().collect(),
            events,
            transitions,
        })
    }
}
