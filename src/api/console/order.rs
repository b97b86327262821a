//! `GET /orders/{order_id}`: one order — where it is, how long each step took, its alerts.
//!
//! The page is built in two passes over the order's steps, each linear in their number: an
//! analysis (lanes, status transitions, the monitor rules' measurements, bus hops) and the
//! markup (facts, alerts, a swimlane SVG, the same facts as tables). A 1 000-step order renders
//! in a few milliseconds.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::Response;
use maud::{html, Markup};

use super::{fmt_duration, path_segment, thead, Ctx, Nav, PageError};
use crate::api::{ApiError, ApiState};
use crate::monitors::{OrderThresholds, ThresholdEnds, ThresholdRule};
use crate::orders::{AlertState, OrderAlert, OrderTimeline, TimelineEvent};
use crate::shared::now_unix_nanos;

/// The longest order id the page looks up, in characters (the order-events receiver accepts
/// 128; OTLP spans may carry longer ones).
pub const MAX_ORDER_ID_CHARS: usize = 256;
/// How often the live part of an order in flight is fetched again, in milliseconds.
const LIVE_INTERVAL_MS: u32 = 5000;

pub async fn page(ctx: Ctx, State(state): State<ApiState>, order_id: Result<Path<String>, PathRejection>) -> Result<Response, PageError> {
    let order_id = super::path_param(order_id, "order id")?;
    check_order_id(&order_id)?;
    let backend = state.backend.clone().ok_or(ApiError::NoBackend)?;
    let (timeline, alerts) = tokio::try_join!(backend.order_timeline(order_id.clone()), backend.order_alerts(order_id.clone()))?;
    let timeline = timeline.ok_or_else(|| ApiError::NotFound(format!("order {order_id} not found")))?;
    let analysis = Analysis::new(&timeline, &state.order_rules, now_unix_nanos());
    let body = render(&ctx, state.jaeger_ui_url.as_deref(), &timeline, &alerts, &analysis);
    Ok(ctx.page(&format!("Order {order_id}"), Nav::Orders, body))
}

/// An id the page can look up: not blank, no control characters, at most
/// [`MAX_ORDER_ID_CHARS`].
fn check_order_id(order_id: &str) -> Result<(), ApiError> {
    if order_id.trim().is_empty() {
        return Err(ApiError::BadRequest("the order id is empty".into()));
    }
    if order_id.chars().any(char::is_control) {
        return Err(ApiError::BadRequest("the order id contains control characters".into()));
    }
    if order_id.chars().count() > MAX_ORDER_ID_CHARS {
        return Err(ApiError::BadRequest(format!("the order id is longer than {MAX_ORDER_ID_CHARS} characters")));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Analysis: what the page shows, computed once, in time linear in the number of steps.

/// How a measurement compares with its rule's threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Within,
    Over,
    /// Not reached yet; still within the threshold.
    Running,
    /// Not reached yet and already over the threshold.
    RunningOver,
    /// Not reached; the order ended (a terminal status) first.
    Cancelled,
}

impl Verdict {
    fn breach(self) -> bool {
        matches!(self, Verdict::Over | Verdict::RunningOver)
    }

    fn text(self) -> &'static str {
        match self {
            Verdict::Within => "within threshold",
            Verdict::Over => "over threshold",
            Verdict::Running => "waiting, within threshold so far",
            Verdict::RunningOver => "over threshold (still waiting)",
            Verdict::Cancelled => "not reached (order ended)",
        }
    }

    fn class(self) -> &'static str {
        match self {
            Verdict::Within => "badge ok",
            Verdict::Over | Verdict::RunningOver => "badge breach",
            Verdict::Running | Verdict::Cancelled => "badge",
        }
    }
}

/// One rule measured on this order.
#[derive(Debug, Clone)]
struct Check<'a> {
    rule: &'a ThresholdRule,
    /// The step that started the clock, and the one that stopped it (none: still running).
    start: usize,
    end: Option<usize>,
    seconds: f64,
    verdict: Verdict,
}

impl Check<'_> {
    fn start_label(&self) -> String {
        match &self.rule.ends {
            ThresholdEnds::Status { from, .. } => from.clone(),
            ThresholdEnds::Stage { from, .. } => format!("stage:{from}"),
        }
    }

    fn end_label(&self) -> String {
        match &self.rule.ends {
            ThresholdEnds::Status { to, .. } => to.clone(),
            ThresholdEnds::Stage { to, .. } => format!("stage:{to}"),
        }
    }
}

/// A change of status: the step where the previous status was first reached (`since`) and the
/// step that reached the new one (`at`).
#[derive(Debug, Clone)]
struct Transition<'a> {
    from: &'a str,
    to: &'a str,
    since: usize,
    at: usize,
    seconds: f64,
    /// Rules measured exactly over this transition.
    checks: Vec<Check<'a>>,
}

/// A row of the transitions table.
enum Row<'a> {
    Transition(Transition<'a>),
    /// A rule measured across several transitions (or still running, or on stages).
    Rule(Check<'a>),
}

/// A message from a `bus_publish` step to the `bus_consume` step that follows it on another
/// service.
#[derive(Debug, Clone)]
struct Hop<'a> {
    publish: usize,
    consume: usize,
    seconds: f64,
    /// The stage rule (`from_stage: bus_publish`, `to_stage: bus_consume`) it is held against.
    rule: Option<&'a ThresholdRule>,
    breach: bool,
}

struct Analysis<'a> {
    now: u64,
    /// Services in order of first appearance; the lane of each step.
    lanes: Vec<&'a str>,
    lane_of: Vec<usize>,
    rows: Vec<Row<'a>>,
    hops: Vec<Hop<'a>>,
    /// The current status is terminal: the order moves no more.
    terminal: bool,
    /// When the current status was reached (its step's time).
    status_since: Option<u64>,
}

const NO_SERVICE: &str = "(no service)";

fn secs(from: u64, to: u64) -> f64 {
    (to as i128 - from as i128) as f64 / 1e9
}

impl<'a> Analysis<'a> {
    fn new(t: &'a OrderTimeline, thresholds: &'a OrderThresholds, now: u64) -> Analysis<'a> {
        let events = &t.events;
        // Lanes.
        let mut lane_index: HashMap<&str, usize> = HashMap::new();
        let mut lanes = Vec::new();
        let lane_of = events
            .iter()
            .map(|e| {
                let service = e.service.as_deref().unwrap_or(NO_SERVICE);
                *lane_index.entry(service).or_insert_with(|| {
                    lanes.push(service);
                    lanes.len() - 1
                })
            })
            .collect();
        // Status transitions, as the timeline counts them (consecutive steps with a status).
        let mut transitions: Vec<Transition> = Vec::new();
        let mut current: Option<(&str, usize)> = None;
        for (i, e) in events.iter().enumerate() {
            let Some(status) = e.status.as_deref() else { continue };
            match current {
                Some((previous, _)) if previous == status => {}
                Some((previous, since)) => {
                    transitions.push(Transition {
                        from: previous,
                        to: status,
                        since,
                        at: i,
                        seconds: secs(events[since].time, e.time),
                        checks: Vec::new(),
                    });
                    current = Some((status, i));
                }
                None => current = Some((status, i)),
            }
        }
        let terminal = current.is_some_and(|(s, _)| thresholds.is_terminal(s));
        let status_since = current.map(|(_, i)| events[i].time);
        let terminal_at = current.filter(|_| terminal).map(|(_, i)| i);

        // Each rule measured as the monitor does: from the first step that reaches `from` to
        // the first later step that reaches `to` (or a later status of the lifecycle).
        let mut checks = Vec::new();
        for rule in &thresholds.rules {
            let within = rule.within.as_secs_f64();
            let (start, end) = match &rule.ends {
                ThresholdEnds::Status { from, satisfied_by, .. } => {
                    let Some(start) = events.iter().position(|e| e.status.as_deref() == Some(from.as_str())) else { continue };
                    let end = events[start + 1..]
                        .iter()
                        .position(|e| e.status.as_ref().is_some_and(|s| satisfied_by.contains(s)))
                        .map(|p| p + start + 1);
                    (start, end)
                }
                ThresholdEnds::Stage { from, to } => {
                    let Some(start) = events.iter().position(|e| e.stage.as_deref() == Some(from.as_str())) else { continue };
                    let end = events[start + 1..].iter().position(|e| e.stage.as_deref() == Some(to.as_str())).map(|p| p + start + 1);
                    (start, end)
                }
            };
            let (seconds, verdict) = match end {
                Some(end) => {
                    let s = secs(events[start].time, events[end].time);
                    (s, if s > within { Verdict::Over } else { Verdict::Within })
                }
                None if terminal_at.is_some_and(|at| at >= start) => {
                    let at = terminal_at.unwrap_or(start);
                    (secs(events[start].time, events[at].time), Verdict::Cancelled)
                }
                None => {
                    let s = secs(events[start].time, now);
                    (s, if s > within { Verdict::RunningOver } else { Verdict::Running })
                }
            };
            checks.push(Check { rule, start, end, seconds, verdict });
        }

        // A status rule that measures exactly one transition is shown on it; the others get
        // rows of their own after the step that stopped their clock (running ones last).
        let mut by_end: HashMap<usize, Vec<Check>> = HashMap::new();
        let mut open = Vec::new();
        let mut at_transition: HashMap<usize, usize> = HashMap::new();
        for (n, tr) in transitions.iter().enumerate() {
            at_transition.insert(tr.at, n);
        }
        for check in checks {
            match check.end {
                Some(end) => {
                    let exact = matches!(check.rule.ends, ThresholdEnds::Status { .. })
                        && at_transition.get(&end).is_some_and(|&n| transitions[n].since == check.start);
                    if exact {
                        let n = at_transition[&end];
                        transitions[n].checks.push(check);
                    } else {
                        by_end.entry(end).or_default().push(check);
                    }
                }
                None => open.push(check),
            }
        }
        let mut rows = Vec::with_capacity(transitions.len() + open.len());
        let mut pending: Vec<(usize, Check)> = by_end.into_iter().flat_map(|(end, cs)| cs.into_iter().map(move |c| (end, c))).collect();
        pending.sort_by_key(|(end, c)| (*end, c.rule.name.clone()));
        let mut pending = pending.into_iter().peekable();
        for tr in transitions {
            while let Some((_, c)) = pending.next_if(|(end, _)| *end < tr.at) {
                rows.push(Row::Rule(c));
            }
            let at = tr.at;
            rows.push(Row::Transition(tr));
            while let Some((_, c)) = pending.next_if(|(end, _)| *end == at) {
                rows.push(Row::Rule(c));
            }
        }
        rows.extend(pending.map(|(_, c)| Row::Rule(c)));
        rows.extend(open.into_iter().map(Row::Rule));

        let hops = hops(events, thresholds);
        Analysis { now, lanes, lane_of, rows, hops, terminal, status_since }
    }
}

/// Each `bus_publish` step joined to the first `bus_consume` step after it on another service.
/// One pass from the end: the nearest consume step, and the nearest one on a service other than
/// its.
fn hops<'a>(events: &[TimelineEvent], thresholds: &'a OrderThresholds) -> Vec<Hop<'a>> {
    let rule = thresholds
        .rules
        .iter()
        .find(|r| matches!(&r.ends, ThresholdEnds::Stage { from, to } if from == "bus_publish" && to == "bus_consume"));
    let mut nearest: Option<usize> = None;
    let mut other: Option<usize> = None;
    let mut out = Vec::new();
    for (i, e) in events.iter().enumerate().rev() {
        match e.stage.as_deref() {
            Some("bus_consume") => {
                if nearest.is_some_and(|n| events[n].service != e.service) {
                    other = nearest;
                }
                nearest = Some(i);
            }
            Some("bus_publish") => {
                let target = match nearest {
                    Some(n) if events[n].service != e.service => Some(n),
                    _ => other,
                };
                if let Some(c) = target {
                    let seconds = secs(e.time, events[c].time);
                    let breach = rule.is_some_and(|r| seconds > r.within.as_secs_f64());
                    out.push(Hop { publish: i, consume: c, seconds, rule, breach });
                }
            }
            _ => {}
        }
    }
    out.reverse();
    out
}

// ---------------------------------------------------------------------------------------------
// Markup.

/// At most `max` characters, with an ellipsis when cut.
fn clip(text: &str, max: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max) {
        Some((at, _)) => {
            let cut = text[..at].char_indices().nth(max.saturating_sub(1)).map_or(at, |(i, _)| i);
            Cow::Owned(format!("{}…", &text[..cut]))
        }
        None => Cow::Borrowed(text),
    }
}

/// `<time datetime="RFC 3339" data-local>YYYY-MM-DD HH:MM:SS.mmm UTC</time>`.
fn time(ns: u64) -> Markup {
    let stamp = humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns)).to_string();
    let text = format!("{} UTC", stamp.trim_end_matches('Z').replacen('T', " ", 1));
    html! { time datetime=(stamp) data-local { (text) } }
}

const KNOWN_STAGES: &[(&str, &str, &str)] = &[
    // (stage, marker class, short label)
    ("created", "m-created", "created"),
    ("status_change", "m-status", "status"),
    ("bus_publish", "m-publish", "publish"),
    ("bus_consume", "m-consume", "consume"),
    ("db_save", "m-db", "db save"),
    ("file_link", "m-file", "file"),
];

/// A step's stage as the page names it (`error` for a failed span without a stage).
fn stage_name(e: &TimelineEvent) -> &str {
    e.stage.as_deref().unwrap_or("error")
}

/// The marker's class and the step's short label.
fn stage_look(stage: &str) -> (&'static str, Cow<'_, str>) {
    match KNOWN_STAGES.iter().find(|(s, _, _)| *s == stage) {
        Some((_, class, label)) => (class, Cow::Borrowed(*label)),
        None if stage == "error" => ("m-error", Cow::Borrowed("error")),
        None => ("m-other", clip(stage, 14)),
    }
}

/// The marker shape of a stage, centred on (0, 0): shape and colour differ per stage, and a
/// text label names it too.
fn marker(class: &str) -> Markup {
    match class {
        "m-created" => html! { circle.marker cx="0" cy="0" r="9" {} },
        "m-status" => html! { polygon.marker points="0,-10 10,0 0,10 -10,0" {} },
        "m-publish" => html! { polygon.marker points="-9,-9 10,0 -9,9" {} },
        "m-consume" => html! { polygon.marker points="9,-9 -10,0 9,9" {} },
        "m-db" => html! { rect.marker x="-8" y="-8" width="16" height="16" rx="2" {} },
        "m-file" => html! { polygon.marker points="-7,-10 3,-10 8,-5 8,10 -7,10" {} },
        "m-error" => html! { polygon.marker points="-9,-5 -5,-9 0,-4 5,-9 9,-5 4,0 9,5 5,9 0,4 -5,9 -9,5 -4,0" {} },
        _ => html! { circle.marker cx="0" cy="0" r="6" {} },
    }
}

// Swimlane geometry (SVG user units = CSS pixels).
const LEFT: usize = 180;
const STEP_W: usize = 110;
const TOP: usize = 36;
const LANE_H: usize = 78;
const MARK_Y: usize = 30;

fn step_x(i: usize) -> usize {
    LEFT + i * STEP_W + STEP_W / 2
}

fn lane_y(lane: usize) -> usize {
    TOP + lane * LANE_H + MARK_Y
}

fn render(ctx: &Ctx, jaeger: Option<&str>, t: &OrderTimeline, alerts: &[OrderAlert], a: &Analysis) -> Markup {
    let self_url = ctx.href(&format!("/orders/{}", path_segment(&t.order_id)));
    let live_parts = html! {
        (facts(t, a))
        (alerts_section(alerts))
        (swimlane(ctx, t, a))
        (steps_table(ctx, jaeger, t))
        (transitions_table(t, a))
        (hops_table(t, a))
        (files_section(ctx, t))
    };
    html! {
        h1 { "Order " span.mono { (t.order_id) } }
        @if a.terminal {
            p id="live-status" class="muted" role="status" { "The order has finished (" (t.status.as_deref().unwrap_or("")) "); this page no longer updates itself." }
            section #live aria-label="Order" { (live_parts) }
        } @else {
            p id="live-status" class="muted" role="status" { "In flight: this page updates itself every " (LIVE_INTERVAL_MS / 1000) " s." }
            section #live aria-label="Order" data-live=(self_url) data-live-interval=(LIVE_INTERVAL_MS) { (live_parts) }
        }
    }
}

fn facts(t: &OrderTimeline, a: &Analysis) -> Markup {
    let first = t.events.first();
    let last = t.events.last();
    let start = first.map_or(t.first_seen, |e| e.time);
    let age_end = if a.terminal { a.status_since.unwrap_or(a.now) } else { a.now };
    let status = t.status.as_deref().unwrap_or("unknown");
    html! {
        dl #facts .facts {
            div { dt { "Status" } dd {
                (status)
                @if a.terminal { " " span.badge { "finished" } } @else { " " span.badge.ok { "in flight" } }
            } }
            div { dt { "Age" } dd {
                (fmt_duration(secs(start, age_end)))
                @if a.terminal { span.muted { " (first step to " (status) ")" } }
            } }
            div { dt { "Current service" } dd { (last.and_then(|e| e.service.as_deref()).unwrap_or("—")) } }
            div { dt { "Current stage" } dd { (last.map(stage_name).unwrap_or("—")) } }
            div { dt { "Waiting since" } dd {
                @match last {
                    Some(e) if !a.terminal => { (fmt_duration(secs(e.time, a.now))) span.muted { " (since " (time(e.time)) ")" } }
                    _ => { "— (not waiting)" }
                }
            } }
            div { dt { "First seen" } dd { (time(t.first_seen)) } }
            div { dt { "Last seen" } dd { (time(t.last_seen)) } }
            div { dt { "Steps" } dd { (t.events.len()) " in " (a.lanes.len()) " services" } }
        }
    }
}

fn alerts_section(alerts: &[OrderAlert]) -> Markup {
    html! {
        section #alerts aria-labelledby="alerts-heading" {
            h2 #alerts-heading { "Alerts" }
            @if alerts.is_empty() {
                p.empty { "No alerts for this order." }
            } @else {
                ul.alerts {
                    @for al in alerts {
                        li.alert data-state=(al.state.as_str()) data-rule=(al.rule) {
                            span class={ "badge " (al.state.as_str()) } { (al.state.as_str()) }
                            " "
                            span class={ "badge " (al.severity.as_str()) } { (al.severity.as_str()) }
                            " "
                            strong { (al.rule) }
                            " (" (al.from) " → " (al.to) "): "
                            (fmt_duration(al.elapsed_seconds)) " against a threshold of " (fmt_duration(al.threshold_seconds))
                            ". Fired " (time(al.fired_at))
                            @if let Some(r) = al.resolved_at { ", resolved " (time(r)) }
                            "."
                            @if al.late_data { " " span.badge { "late data" } " The order was on time; its data arrived late." }
                            @if al.state == AlertState::Firing {
                                @if let Some(s) = &al.current_status { " Status then: " (s) "." }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn swimlane(ctx: &Ctx, t: &OrderTimeline, a: &Analysis) -> Markup {
    let events = &t.events;
    let width = LEFT + events.len().max(1) * STEP_W + 20;
    let height = TOP + a.lanes.len().max(1) * LANE_H + 8;
    // The path through every step, in order.
    let mut flow = String::with_capacity(events.len() * 12);
    for (i, &lane) in a.lane_of.iter().enumerate() {
        let _ = write!(flow, "{},{} ", step_x(i), lane_y(lane));
    }
    let label = format!(
        "Swimlane of order {}: {} steps across {} services ({}). The steps table below lists the same steps.",
        t.order_id,
        events.len(),
        a.lanes.len(),
        a.lanes.join(", ")
    );
    html! {
        section #timeline aria-labelledby="timeline-heading" {
            h2 #timeline-heading { "Timeline" }
            (legend())
            div.scroll #swimlane-scroll data-scroll-end tabindex="0" role="region" aria-label="Swimlane, scrolls sideways" {
                // role="group", not "img": the steps inside are links, which an image's
                // presentational children would hide from assistive technology.
                svg #swimlane xmlns="http://www.w3.org/2000/svg" role="group" aria-label=(label)
                    width=(width) height=(height) viewBox={ "0 0 " (width) " " (height) } {
                    title { (label) }
                    defs {
                        marker #hop-arrow viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse" {
                            path.hop-head d="M 0 0 L 10 5 L 0 10 z" {}
                        }
                    }
                    @for n in 0..a.lanes.len() {
                        rect class=(if n % 2 == 0 { "lane-bg" } else { "lane-bg odd" }) x="0" y=(TOP + n * LANE_H) width=(width) height=(LANE_H) {}
                    }
                    line.axis x1=(LEFT) y1=(TOP - 4) x2=(width - 10) y2=(TOP - 4) {}
                    @for i in 1..events.len() {
                        text.gap x=((step_x(i - 1) + step_x(i)) / 2) y=(TOP - 10) text-anchor="middle" {
                            (fmt_duration(secs(events[i - 1].time, events[i].time)))
                        }
                    }
                    @if events.len() > 1 { polyline.flow points=(flow) {} }
                    @for h in &a.hops {
                        @let (x1, y1, x2, y2) = (step_x(h.publish), lane_y(a.lane_of[h.publish]), step_x(h.consume), lane_y(a.lane_of[h.consume]));
                        @let hop_text = format!(
                            "bus hop {} → {}: {}{}",
                            events[h.publish].service.as_deref().unwrap_or(NO_SERVICE),
                            events[h.consume].service.as_deref().unwrap_or(NO_SERVICE),
                            fmt_duration(h.seconds),
                            if h.breach { " (over threshold)" } else { "" }
                        );
                        line class=(if h.breach { "hop breach" } else { "hop" }) x1=(x1) y1=(y1) x2=(x2) y2=(y2) marker-end="url(#hop-arrow)" {
                            title { (hop_text) }
                        }
                        text class=(if h.breach { "hop-label breach" } else { "hop-label" }) x=((x1 + x2) / 2) y=((y1 + y2) / 2 - 6) text-anchor="middle" {
                            (fmt_duration(h.seconds)) @if h.breach { " over threshold" }
                        }
                    }
                    @for (i, e) in events.iter().enumerate() {
                        @let stage = stage_name(e);
                        @let (class, short) = stage_look(stage);
                        @let service = e.service.as_deref().unwrap_or(NO_SERVICE);
                        g class=(if e.error { format!("step {class} error") } else { format!("step {class}") }) data-stage=(stage) data-service=(service)
                            transform={ "translate(" (step_x(i)) "," (lane_y(a.lane_of[i])) ")" } {
                            a href=(ctx.href(&format!("/traces/{}?span={}", e.trace_id, e.span_id))) {
                                title { (stage) " at " (service) ": " (e.span_name) @if let Some(s) = &e.status { " (status " (s) ")" } @if e.error { " — failed" } }
                                (marker(class))
                                text.label x="0" y="24" text-anchor="middle" { (short) @if e.error && class != "m-error" { " ✕" } }
                                @if let Some(s) = &e.status { text.status x="0" y="37" text-anchor="middle" { "→ " (clip(s, 14)) } }
                            }
                        }
                    }
                    // Last, so that console.js can keep the names in view over the steps when
                    // the lanes scroll sideways.
                    @for (n, service) in a.lanes.iter().enumerate() {
                        g.lane data-service=(service) {
                            rect class=(if n % 2 == 0 { "lane-label-bg" } else { "lane-label-bg odd" }) x="0" y=(TOP + n * LANE_H + 1) width=(LEFT - 14) height=(LANE_H - 2) {}
                            text.lane-name x="10" y=(lane_y(n) + 5) { title { (service) } (clip(service, 22)) }
                        }
                    }
                }
            }
        }
    }
}

fn legend() -> Markup {
    html! {
        ul.legend aria-label="Step markers" {
            @for (stage, class, _) in KNOWN_STAGES.iter().copied().chain([("error", "m-error", ""), ("other stage", "m-other", "")]) {
                li {
                    svg class={ "key " (class) } width="22" height="22" viewBox="-11 -11 22 22" aria-hidden="true" focusable="false" { (marker(class)) }
                    " " (stage)
                }
            }
            li { svg.key width="34" height="22" viewBox="0 0 34 22" aria-hidden="true" focusable="false" { line.hop x1="2" y1="11" x2="32" y2="11" {} } " bus hop" }
        }
    }
}

fn steps_table(ctx: &Ctx, jaeger: Option<&str>, t: &OrderTimeline) -> Markup {
    let events = &t.events;
    html! {
        section #steps-section aria-labelledby="steps-heading" {
            h2 #steps-heading { "Steps" }
            table #steps {
                (thead(&["#", "Time", "After previous", "Service", "Stage", "Status", "Span", "Duration", "Links"], &["#", "After previous", "Duration"]))
                tbody {
                    @for (i, e) in events.iter().enumerate() {
                        tr data-stage=(stage_name(e)) class=[e.error.then_some("error")] {
                            td.num { (i + 1) }
                            td { (time(e.time)) }
                            td.num { @if i > 0 { (fmt_duration(secs(events[i - 1].time, e.time))) } @else { "—" } }
                            td { (e.service.as_deref().unwrap_or(NO_SERVICE)) }
                            td { (stage_name(e)) @if e.error { " " span.badge.breach { "failed" } } }
                            td { (e.status.as_deref().unwrap_or("")) }
                            td { (e.span_name) }
                            td.num { (fmt_duration(e.duration_ms / 1000.0)) }
                            td {
                                a href=(ctx.href(&format!("/traces/{}?span={}", e.trace_id, e.span_id))) { "trace" }
                                @if let Some(base) = jaeger {
                                    " · " a href=(format!("{base}/trace/{}?uiFind={}", e.trace_id, e.span_id)) { "Jaeger" }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn rule_cells(check: &Check) -> Markup {
    html! {
        td { (check.rule.name) " " span class={ "badge " (check.rule.severity.as_str()) } { (check.rule.severity.as_str()) } }
        td.num { (fmt_duration(check.rule.within.as_secs_f64())) }
    }
}

fn transitions_table(t: &OrderTimeline, a: &Analysis) -> Markup {
    let events = &t.events;
    html! {
        section #transitions-section aria-labelledby="transitions-heading" {
            h2 #transitions-heading { "Status transitions" }
            @if a.rows.is_empty() {
                p.empty { "No status transitions yet." }
            } @else {
                table #transitions {
                    (thead(&["From", "To", "Reached", "Took", "Rule", "Threshold", "Verdict"], &["Took", "Threshold"]))
                    tbody {
                        @for row in &a.rows {
                            @match row {
                                Row::Transition(tr) => {
                                    @let breach = tr.checks.iter().any(|c| c.verdict.breach());
                                    tr class=(if breach { "transition breach" } else { "transition" }) data-from=(tr.from) data-to=(tr.to)
                                        data-rule=[(!tr.checks.is_empty()).then(|| tr.checks.iter().map(|c| c.rule.name.as_str()).collect::<Vec<_>>().join(" "))] {
                                        td { (tr.from) }
                                        td { (tr.to) }
                                        td { (time(events[tr.at].time)) }
                                        td.num { (fmt_duration(tr.seconds)) }
                                        @if tr.checks.is_empty() {
                                            td.muted { "no rule" } td.num { "—" } td { "—" }
                                        } @else {
                                            td { @for c in &tr.checks { (c.rule.name) " " span class={ "badge " (c.rule.severity.as_str()) } { (c.rule.severity.as_str()) } br; } }
                                            td.num { @for c in &tr.checks { (fmt_duration(c.rule.within.as_secs_f64())) br; } }
                                            td { @for c in &tr.checks { span class=(c.verdict.class()) { (c.verdict.text()) } br; } }
                                        }
                                    }
                                }
                                Row::Rule(c) => {
                                    tr class=(if c.verdict.breach() { "rule breach" } else { "rule" }) data-from=(c.start_label()) data-to=(c.end_label()) data-rule=(c.rule.name) {
                                        td { (c.start_label()) }
                                        td {
                                            (c.end_label())
                                            @if let Some(end) = c.end {
                                                @if let Some(s) = events[end].status.as_deref().filter(|s| matches!(c.rule.ends, ThresholdEnds::Status { .. }) && *s != c.end_label()) { span.muted { " (reached " (s) ")" } }
                                            }
                                        }
                                        td { @match c.end { Some(end) => (time(events[end].time)), None => span.muted { "not yet" } } }
                                        td.num { (fmt_duration(c.seconds)) @if c.end.is_none() && c.verdict != Verdict::Cancelled { " so far" } }
                                        (rule_cells(c))
                                        td { span class=(c.verdict.class()) { (c.verdict.text()) } }
                                    }
                                }
                            }
                        }
                    }
                }
                p.muted { "Rows with a rule name but no single transition measure a rule across several transitions, on stages, or still running; the clock starts at the first step that reached its start." }
            }
        }
    }
}

fn hops_table(t: &OrderTimeline, a: &Analysis) -> Markup {
    let events = &t.events;
    html! {
        @if !a.hops.is_empty() {
            section #hops-section aria-labelledby="hops-heading" {
                h2 #hops-heading { "Bus hops" }
                table #hops {
                    (thead(&["Published by", "Published", "Consumed by", "Consumed", "Took", "Rule", "Threshold", "Verdict"], &["Took", "Threshold"]))
                    tbody {
                        @for h in &a.hops {
                            tr class=[h.breach.then_some("breach")] {
                                td { (events[h.publish].service.as_deref().unwrap_or(NO_SERVICE)) }
                                td { (time(events[h.publish].time)) }
                                td { (events[h.consume].service.as_deref().unwrap_or(NO_SERVICE)) }
                                td { (time(events[h.consume].time)) }
                                td.num { (fmt_duration(h.seconds)) }
                                @match h.rule {
                                    Some(r) => {
                                        td { (r.name) }
                                        td.num { (fmt_duration(r.within.as_secs_f64())) }
                                        td { @if h.breach { span.badge.breach { "over threshold" } } @else { span.badge.ok { "within threshold" } } }
                                    }
                                    None => { td.muted { "no rule" } td.num { "—" } td { "—" } }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

fn files_section(ctx: &Ctx, t: &OrderTimeline) -> Markup {
    let files: Vec<&TimelineEvent> = t.events.iter().filter(|e| e.stage.as_deref() == Some("file_link")).collect();
    html! {
        section #files aria-labelledby="files-heading" {
            h2 #files-heading { "Constructor files" }
            @if files.is_empty() {
                p.empty { "No constructor file is linked to this order." }
            } @else {
                table {
                    (thead(&["Linked", "Service", "Span", "Trace"], &[]))
                    tbody {
                        @for e in files {
                            tr {
                                td { (time(e.time)) }
                                td { (e.service.as_deref().unwrap_or(NO_SERVICE)) }
                                td { (e.span_name) }
                                td { a href=(ctx.href(&format!("/traces/{}?span={}", e.trace_id, e.span_id))) { "trace " span.mono { (clip(&e.trace_id, 8)) } } }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::orders::Severity;

    const S: u64 = 1_000_000_000;

    fn step(time: u64, service: &str, stage: &str, status: Option<&str>) -> TimelineEvent {
        TimelineEvent {
            time,
            service: Some(service.into()),
            stage: Some(stage.into()),
            status: status.map(String::from),
            span_name: format!("order {stage}"),
            trace_id: "ab".repeat(16),
            span_id: format!("{:016x}", time),
            duration_ms: 1.0,
            error: false,
        }
    }

    fn timeline(events: Vec<TimelineEvent>) -> OrderTimeline {
        OrderTimeline {
            order_id: "A-1".into(),
            status: events.iter().rev().find_map(|e| e.status.clone()),
            first_seen: events[0].time,
            last_seen: events.last().unwrap().time,
            services: Vec::new(),
            trace_ids: Vec::new(),
            events,
            transitions: Vec::new(),
        }
    }

    fn rule(name: &str, ends: ThresholdEnds, within: u64) -> ThresholdRule {
        ThresholdRule { monitor: "m".into(), name: name.into(), ends, within: Duration::from_secs(within), severity: Severity::Warning }
    }

    fn status_rule(name: &str, from: &str, to: &str, later: &[&str], within: u64) -> ThresholdRule {
        let mut satisfied_by = vec![to.to_string()];
        satisfied_by.extend(later.iter().map(|s| s.to_string()));
        rule(name, ThresholdEnds::Status { from: from.into(), to: to.into(), satisfied_by }, within)
    }

    #[test]
    fn transitions_rules_and_hops() {
        let t = timeline(vec![
            step(0, "shop", "created", Some("new")),
            step(S, "shop", "bus_publish", None),
            step(5 * S, "crm", "bus_consume", Some("accepted")),
            step(6 * S, "crm", "bus_publish", None),
            step(7 * S, "mes", "bus_consume", Some("in_production")),
            step(30 * S, "mes", "status_change", Some("manufactured")),
        ]);
        let thresholds = OrderThresholds {
            rules: vec![
                status_rule("crm_accepts", "new", "accepted", &[], 2),
                status_rule("production", "accepted", "manufactured", &[], 60),
                status_rule("courier", "manufactured", "handed_to_courier", &[], 10),
                rule("bus_wait", ThresholdEnds::Stage { from: "bus_publish".into(), to: "bus_consume".into() }, 3),
            ],
            terminal: vec!["handed_to_courier".into(), "cancelled".into()],
        };
        let a = Analysis::new(&t, &thresholds, 45 * S);
        assert_eq!(a.lanes, vec!["shop", "crm", "mes"]);
        assert_eq!(a.lane_of, vec![0, 0, 1, 1, 2, 2]);
        assert!(!a.terminal);
        let kinds: Vec<String> = a
            .rows
            .iter()
            .map(|r| match r {
                Row::Transition(t) => format!(
                    "{}>{}:{}",
                    t.from,
                    t.to,
                    t.checks.iter().map(|c| format!("{}={:?}", c.rule.name, c.verdict)).collect::<Vec<_>>().join(",")
                ),
                Row::Rule(c) => format!("rule {}={:?}@{}", c.rule.name, c.verdict, c.seconds),
            })
            .collect();
        assert_eq!(
            kinds,
            vec![
                "new>accepted:crm_accepts=Over",
                "rule bus_wait=Over@4",
                "accepted>in_production:",
                "in_production>manufactured:",
                "rule production=Within@25",
                "rule courier=RunningOver@15",
            ]
        );
        let hops: Vec<(usize, usize, bool)> = a.hops.iter().map(|h| (h.publish, h.consume, h.breach)).collect();
        assert_eq!(hops, vec![(1, 2, true), (3, 4, false)]);
    }

    #[test]
    fn a_terminal_order_cancels_pending_rules_and_stops_its_age() {
        let t = timeline(vec![step(0, "shop", "created", Some("new")), step(10 * S, "shop", "status_change", Some("cancelled"))]);
        let thresholds =
            OrderThresholds { rules: vec![status_rule("crm_accepts", "new", "accepted", &[], 2)], terminal: vec!["cancelled".into()] };
        let a = Analysis::new(&t, &thresholds, 100 * S);
        assert!(a.terminal);
        assert_eq!(a.status_since, Some(10 * S));
        match &a.rows[1] {
            Row::Rule(c) => assert_eq!((c.verdict, c.seconds), (Verdict::Cancelled, 10.0)),
            _ => panic!("expected the rule row"),
        }
    }

    #[test]
    fn hops_skip_consumers_on_the_publishing_service() {
        let t = timeline(vec![
            step(0, "shop", "bus_publish", None),
            step(S, "shop", "bus_consume", None),
            step(2 * S, "crm", "bus_consume", None),
            step(3 * S, "crm", "bus_publish", None),
        ]);
        let none = OrderThresholds::default();
        let a = Analysis::new(&t, &none, 4 * S);
        let hops: Vec<(usize, usize)> = a.hops.iter().map(|h| (h.publish, h.consume)).collect();
        assert_eq!(hops, vec![(0, 2)]);
    }

    #[test]
    fn ids_and_text_helpers() {
        assert!(check_order_id("A-1001").is_ok());
        assert!(check_order_id(" ").is_err());
        assert!(check_order_id("A\n1").is_err());
        assert!(check_order_id(&"x".repeat(MAX_ORDER_ID_CHARS + 1)).is_err());
        assert_eq!(path_segment("A 1/ü?#"), "A%201%2F%C3%BC%3F%23");
        assert_eq!(clip("bus_publish", 20), "bus_publish");
        assert_eq!(clip("abcdefgh", 4), "abc…");
        assert_eq!(
            time(1_795_165_200_123_000_000).into_string(),
            r#"<time datetime="2026-11-20T09:00:00.123Z" data-local>2026-11-20 09:00:00.123 UTC</time>"#
        );
    }
}
