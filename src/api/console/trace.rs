//! `GET /traces/{trace_id}`: a trace's spans as a waterfall, personal data masked; admins may
//! unmask with a reason (`POST /traces/{trace_id}/unmask`, audited).
//!
//! The waterfall lists spans depth first, parent before child (children by start time; spans
//! whose parent is not in the trace at the top level), each with a bar to the trace's scale and
//! an attribute panel. A trace of thousands of spans is paged (`?page=`, [`PAGE_SIZE`] rows a
//! page) so the browser never gets more than a page of rows; `?span=` picks one span out (its
//! page, its row marked, its panel open).

use std::collections::{BTreeSet, HashMap};

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use maud::{html, Markup};
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};
use serde::Deserialize;

use super::{fmt_duration, forbidden, form, path_segment, thead, Ctx, Nav, PageError};
use crate::api::traces::{authorize_unmask, parse_trace_id, UnmaskRefusal};
use crate::api::{ApiError, ApiState};
use crate::auth::Permission;
use crate::query::value_text;

/// Rows of the waterfall on one page: enough to read, few enough for any browser.
pub const PAGE_SIZE: usize = 500;
/// The unmask form's largest accepted body.
const FORM_LIMIT: usize = 16 * 1024;
/// The longest accepted unmask reason, in characters.
const REASON_LIMIT: usize = 1000;
/// Attributes shown highlighted: the order's identity and where it stands.
const HIGHLIGHTED: [&str; 3] = ["order.id", "order.stage", "order.status"];
/// Indentation steps the stylesheet has classes for (`d0`..`d20`); deeper spans are indented
/// as much and say their level in text.
const MAX_INDENT: usize = 20;
/// The linked traces listed above the waterfall.
const MAX_LINKED: usize = 50;
/// The width of every bar's coordinate system (SVG user units).
const BAR_WIDTH: f64 = 1000.0;

/// `?page=` (1-based) and `?span=` (a span id in hex).
#[derive(Debug, Default, Deserialize)]
pub struct View {
    page: Option<String>,
    span: Option<String>,
}

pub async fn page(
    ctx: Ctx,
    State(state): State<ApiState>,
    trace_id: Result<Path<String>, PathRejection>,
    view: Result<Query<View>, QueryRejection>,
) -> Result<Response, PageError> {
    let trace_id = super::path_param(trace_id, "trace id")?;
    let Query(view) = view.map_err(|e| crate::api::ParamError::query_string(&e))?;
    let id = parse_trace_id(&trace_id)?;
    render(&ctx, &state, &trace_id, id, &view, false).await
}

pub async fn unmask(
    ctx: Ctx,
    State(state): State<ApiState>,
    trace_id: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<Response, PageError> {
    let trace_id = super::path_param(trace_id, "trace id")?;
    let id = parse_trace_id(&trace_id)?;
    let form = match form::read(&ctx, body, FORM_LIMIT).await {
        Ok(form) => form,
        Err(refusal) => return Ok(refusal),
    };
    if let Some(refusal) = form::csrf_refusal(&ctx, &state, &form, "unmask", &format!("/traces/{trace_id}")) {
        return Ok(refusal);
    }
    let reason = form.get("reason").map(String::as_str);
    if reason.is_some_and(|r| r.trim().chars().count() > REASON_LIMIT) {
        return Err(ApiError::BadRequest(format!("reason: at most {REASON_LIMIT} characters")).into());
    }
    match authorize_unmask(&state, &ctx.caller, &format!("/traces/{trace_id}"), reason).await {
        Ok(()) => {}
        Err(UnmaskRefusal::Forbidden) => return Ok(forbidden(&state, ctx.principal(), Some(Permission::Unmask))),
        Err(UnmaskRefusal::Failed(error)) => return Err(error.into()),
    }
    let view =
        View { page: form.get("page").filter(|p| !p.is_empty()).cloned(), span: form.get("span").filter(|s| !s.is_empty()).cloned() };
    render(&ctx, &state, &trace_id, id, &view, true).await
}

/// One span of the trace, with what the waterfall needs beside it.
struct Entry<'a> {
    span: &'a Span,
    resource: usize,
    scope: &'a str,
}

/// A waterfall row: an entry and its depth.
#[derive(Clone, Copy)]
struct Row {
    entry: usize,
    depth: usize,
}

/// The trace's spans, depth first.
struct Waterfall<'a> {
    entries: Vec<Entry<'a>>,
    rows: Vec<Row>,
    /// `service.name` of each resource.
    services: Vec<String>,
    resources: &'a [ResourceSpans],
    /// Span ids present in the trace.
    known: HashMap<&'a [u8], usize>,
    start_ns: u64,
    end_ns: u64,
}

impl<'a> Waterfall<'a> {
    fn build(resources: &'a [ResourceSpans]) -> Waterfall<'a> {
        let services = resources
            .iter()
            .map(|rs| rs.resource.as_ref().map(crate::query::service_of).unwrap_or_else(|| "unknown_service".into()))
            .collect();
        let mut entries = Vec::new();
        for (ri, rs) in resources.iter().enumerate() {
            for ss in &rs.scope_spans {
                let scope = ss.scope.as_ref().map(|s| s.name.as_str()).unwrap_or("");
                for span in &ss.spans {
                    entries.push(Entry { span, resource: ri, scope });
                }
            }
        }
        let mut known: HashMap<&[u8], usize> = HashMap::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            known.entry(e.span.span_id.as_slice()).or_insert(i);
        }
        let mut children: Vec<Vec<usize>> = vec![Vec::new(); entries.len()];
        let mut roots = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            match known.get(e.span.parent_span_id.as_slice()) {
                Some(&parent) if !e.span.parent_span_id.is_empty() && parent != i => children[parent].push(i),
                _ => roots.push(i),
            }
        }
        let key = |i: &usize| (entries[*i].span.start_time_unix_nano, entries[*i].span.span_id.as_slice(), *i);
        roots.sort_by_key(key);
        for list in &mut children {
            list.sort_by_key(key);
        }
        // Depth first without recursion (a chain of 10 000 spans is 10 000 deep).
        let mut rows = Vec::with_capacity(entries.len());
        let mut visited = vec![false; entries.len()];
        let walk = |root: usize, rows: &mut Vec<Row>, visited: &mut Vec<bool>| {
            let mut stack = vec![(root, 0usize)];
            while let Some((i, depth)) = stack.pop() {
                if std::mem::replace(&mut visited[i], true) {
                    continue;
                }
                rows.push(Row { entry: i, depth });
                stack.extend(children[i].iter().rev().filter(|c| !visited[**c]).map(|c| (*c, depth + 1)));
            }
        };
        for &root in &roots {
            walk(root, &mut rows, &mut visited);
        }
        // Spans whose parents form a cycle reach no root: they go at the top level too.
        if rows.len() < entries.len() {
            let mut rest: Vec<usize> = (0..entries.len()).filter(|i| !visited[*i]).collect();
            rest.sort_by_key(key);
            for i in rest {
                walk(i, &mut rows, &mut visited);
            }
        }
        let start_ns = entries.iter().map(|e| e.span.start_time_unix_nano).min().unwrap_or(0);
        let end_ns = entries.iter().map(|e| e.span.end_time_unix_nano.max(e.span.start_time_unix_nano)).max().unwrap_or(0);
        Waterfall { entries, rows, services, resources, known, start_ns, end_ns }
    }

    fn total_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }
}

/// A moment as the `<time>` element's `datetime` (nanoseconds) and its UTC text (milliseconds).
fn moment(ns: u64) -> (String, String) {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns);
    let text = humantime::format_rfc3339_millis(at).to_string().replacen('T', " ", 1).replace('Z', " UTC");
    (crate::shared::format_rfc3339_nanos(ns), text)
}

fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

fn kind_name(kind: i32) -> &'static str {
    match kind {
        1 => "internal",
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "unspecified",
    }
}

/// What one rendering needs.
struct Render<'a> {
    ctx: &'a Ctx,
    state: &'a ApiState,
    trace_hex: &'a str,
    masked: bool,
}

async fn render(ctx: &Ctx, state: &ApiState, trace_hex: &str, id: Vec<u8>, view: &View, unmasked: bool) -> Result<Response, PageError> {
    let selected = match view.span.as_deref() {
        None | Some("") => None,
        Some(text) => match hex::decode(text) {
            Ok(bytes) if bytes.len() == 8 => Some(bytes),
            _ => return Err(ApiError::BadRequest(format!("span: {text:?} is not a span id (16 hex digits)")).into()),
        },
    };
    let requested_page = match view.page.as_deref() {
        None | Some("") => None,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if n >= 1 => Some(n),
            _ => return Err(ApiError::BadRequest(format!("page: {text:?} is not a page number (1, 2, ...)")).into()),
        },
    };
    let backend = state.backend.clone().ok_or(ApiError::NoBackend)?;
    let trace_hex = trace_hex.to_ascii_lowercase();
    let Some(mut resource_spans) = backend.trace(id).await? else {
        return Err(ApiError::NotFound(format!("trace {trace_hex} not found")).into());
    };
    // Exactly as `GET /api/v1/traces/{id}`: pseudonyms unless unmasked, or nobody to hide from.
    let masked = !unmasked && !ctx.principal().anonymous;
    if masked {
        state.pseudonyms.mask_spans(&mut resource_spans);
    }
    let waterfall = Waterfall::build(&resource_spans);
    let total = waterfall.rows.len();
    let pages = total.div_ceil(PAGE_SIZE).max(1);
    let position = selected.as_ref().and_then(|s| waterfall.rows.iter().position(|r| waterfall.entries[r.entry].span.span_id == *s));
    let page = match (requested_page, position) {
        (Some(n), _) => n,
        (None, Some(pos)) => pos / PAGE_SIZE + 1,
        (None, None) => 1,
    };
    if page > pages {
        return Err(ApiError::NotFound(format!("page {page}: this trace has {pages} page(s) of spans")).into());
    }
    let from = (page - 1) * PAGE_SIZE;
    let to = (from + PAGE_SIZE).min(total);
    let r = Render { ctx, state, trace_hex: &trace_hex, masked };
    let body = r.body(&waterfall, from, to, page, pages, selected.as_deref(), position.is_some(), unmasked);
    Ok(ctx.page(&format!("Trace {}", &trace_hex[..8.min(trace_hex.len())]), Nav::None, body))
}

impl Render<'_> {
    fn trace_href(&self, trace: &str, query: &str) -> String {
        self.ctx.href(&format!("/traces/{trace}{query}"))
    }

    #[allow(clippy::too_many_arguments)]
    fn body(
        &self,
        w: &Waterfall,
        from: usize,
        to: usize,
        page: usize,
        pages: usize,
        selected: Option<&[u8]>,
        found: bool,
        unmasked: bool,
    ) -> Markup {
        let total = w.rows.len();
        let errors = w.entries.iter().filter(|e| e.span.status.as_ref().is_some_and(|s| s.code == 2)).count();
        let services: BTreeSet<&str> = w.services.iter().map(String::as_str).collect();
        let linked: BTreeSet<String> = w
            .entries
            .iter()
            .flat_map(|e| e.span.links.iter())
            .map(|l| hex::encode(&l.trace_id))
            .filter(|t| t.len() == 32 && t != self.trace_hex)
            .collect();
        let (started, started_text) = moment(w.start_ns);
        let range = if total == 0 { "no spans".to_string() } else { format!("spans {}–{} of {}", from + 1, to, total) };
        html! {
            h1 { "Trace " code { (self.trace_hex) } }
            dl.facts #trace-facts {
                div { dt { "Spans" } dd { (total) } }
                div { dt { "Services" } dd { (services.iter().copied().collect::<Vec<_>>().join(", ")) } }
                div { dt { "Started" } dd { time datetime=(started) data-local { (started_text) } } }
                div { dt { "Duration" } dd { (fmt_duration(seconds(w.total_ns()))) } }
                div { dt { "Errors" } dd { @if errors > 0 { span.badge.critical { (errors) " with status error" } } @else { "none" } } }
            }
            @if let Some(url) = &self.state.jaeger_ui_url {
                p { a href=(format!("{}/trace/{}", url.trim_end_matches('/'), self.trace_hex)) { "Open this trace in Jaeger UI" } }
            }
            @if unmasked {
                p.notice #unmasked role="status" {
                    strong { "Personal data shown in clear; this access was audited with your reason." }
                    " Other pages and later visits are masked again. "
                    a href=(self.trace_href(self.trace_hex, "")) { "Show masked" }
                }
            } @else if self.masked {
                p.muted #masking {
                    "Personal data (" code { "user.email" } ", " code { "enduser.id" } "…) is shown as pseudonyms ("
                    code { "pseud:…" } "), the same for the same value."
                }
                @if self.ctx.may(Permission::Unmask) {
                    form id="unmask" class="filters unmask" method="post" action=(self.trace_href(self.trace_hex, "/unmask")) {
                        input type="hidden" name="csrf" value=(self.ctx.csrf());
                        input type="hidden" name="page" value=(page);
                        @if let Some(span) = selected.filter(|_| found) {
                            input type="hidden" name="span" value=(hex::encode(span));
                        }
                        label for="unmask-reason" {
                            "Reason for showing personal data in clear (audited)"
                            input #unmask-reason type="text" name="reason" required maxlength=(REASON_LIMIT) size="40";
                        }
                        button type="submit" { "Unmask" }
                    }
                }
            }
            @if let Some(span) = selected.filter(|_| !found) {
                p.notice #span-missing role="status" { "Span " code { (hex::encode(span)) } " is not in this trace." }
            }
            @if !linked.is_empty() {
                section #linked {
                    h2 { "Linked traces" }
                    ul {
                        @for trace in linked.iter().take(MAX_LINKED) {
                            li { a href=(self.trace_href(trace, "")) { "Trace " code { (trace) } } }
                        }
                    }
                    @if linked.len() > MAX_LINKED { p.muted { (linked.len() - MAX_LINKED) " more linked traces not listed." } }
                }
            }
            h2 #spans-heading { "Spans" }
            (self.pager(page, pages, &range, "Pages of spans (top)"))
            div.scroll {
                table #waterfall aria-describedby="spans-heading" data-page=(page) data-pages=(pages) data-total=(total) {
                    thead {
                        tr {
                            th scope="col" { "Service" }
                            th scope="col" { "Span" }
                            th scope="col" { "Kind" }
                            th scope="col" { "Status" }
                            th scope="col" .num { "Duration" }
                            th scope="col" .num { "Start" }
                            th scope="col" .timeline { "Timeline" }
                        }
                    }
                    tbody {
                        @for row in &w.rows[from..to] {
                            (self.row(w, *row, selected))
                        }
                    }
                }
            }
            @if pages > 1 { (self.pager(page, pages, &range, "Pages of spans (bottom)")) }
        }
    }

    fn pager(&self, page: usize, pages: usize, range: &str, label: &str) -> Markup {
        html! {
            @if pages > 1 {
                nav.pager aria-label=(label) {
                    @if page > 1 {
                        a rel="prev" href=(self.trace_href(self.trace_hex, &format!("?page={}", page - 1))) { "← Previous " (PAGE_SIZE) }
                    }
                    span.range { (range) " (page " (page) " of " (pages) ")" }
                    @if page < pages {
                        a rel="next" href=(self.trace_href(self.trace_hex, &format!("?page={}", page + 1))) { "Next " (PAGE_SIZE) " →" }
                    }
                }
            } @else {
                p.pager.range { (range) }
            }
        }
    }

    fn row(&self, w: &Waterfall, row: Row, selected: Option<&[u8]>) -> Markup {
        let entry = &w.entries[row.entry];
        let span = entry.span;
        let id = hex::encode(&span.span_id);
        let is_selected = selected.is_some_and(|s| s == span.span_id.as_slice());
        let error = span.status.as_ref().is_some_and(|s| s.code == 2);
        let start = span.start_time_unix_nano;
        let end = span.end_time_unix_nano.max(start);
        let offset = start.saturating_sub(w.start_ns);
        let duration = end - start;
        let scale = BAR_WIDTH / (w.total_ns().max(1) as f64);
        let x = offset as f64 * scale;
        let width = (duration as f64 * scale).max(1.0).min(BAR_WIDTH - x.min(BAR_WIDTH - 1.0));
        let mut class = String::from("span");
        if error {
            class.push_str(" error");
        }
        if is_selected {
            class.push_str(" selected");
        }
        let service = &w.services[entry.resource];
        let label = format!(
            "{service} {}: starts at +{}, lasts {}{}",
            span.name,
            fmt_duration(seconds(offset)),
            fmt_duration(seconds(duration)),
            if error { ", error" } else { "" }
        );
        html! {
            tr class=(class) data-span-id=(id) data-depth=(row.depth) aria-current=[is_selected.then_some("true")] {
                td.service { (service) }
                td class=(format!("name d{}", row.depth.min(MAX_INDENT))) {
                    details.attrs open[is_selected] {
                        summary {
                            @if row.depth > MAX_INDENT {
                                span.deep { "↳ level " (row.depth) " " }
                            } @else {
                                span.level { "level " (row.depth) " " }
                            }
                            span.span-name { (span.name) }
                            @if is_selected { " " span.badge { "selected span" } }
                        }
                        (self.panel(w, entry))
                    }
                }
                td.kind { (kind_name(span.kind)) }
                td.status {
                    @match span.status.as_ref().map(|s| s.code) {
                        Some(2) => {
                            span.badge.critical { "error" }
                            @if let Some(message) = span.status.as_ref().map(|s| s.message.as_str()).filter(|m| !m.is_empty()) {
                                " " span.muted { (message) }
                            }
                        }
                        Some(1) => span.badge.ok { "ok" },
                        _ => span.muted { "unset" },
                    }
                }
                td.num { (fmt_duration(seconds(duration))) }
                td.num { "+" (fmt_duration(seconds(offset))) }
                td.timeline {
                    svg.bar width="100%" height="14" viewBox=(format!("0 0 {BAR_WIDTH} 14")) preserveAspectRatio="none" role="img" aria-label=(label) {
                        rect.track x="0" y="3" width=(BAR_WIDTH) height="8" {}
                        rect.span-bar x=(format!("{x:.2}")) y="1" width=(format!("{width:.2}")) height="12" {}
                    }
                }
            }
        }
    }

    fn panel(&self, w: &Waterfall, entry: &Entry) -> Markup {
        let span = entry.span;
        let resource = w.resources[entry.resource].resource.as_ref().map(|r| r.attributes.as_slice()).unwrap_or(&[]);
        let parent = hex::encode(&span.parent_span_id);
        let parent_known = w.known.contains_key(span.parent_span_id.as_slice());
        let (start, start_text) = moment(span.start_time_unix_nano);
        html! {
            div.panel {
                dl.ids {
                    dt { "Span id" } dd { code { (hex::encode(&span.span_id)) } }
                    dt { "Parent" } dd {
                        @if parent.is_empty() { "none (a root span)" }
                        @else if parent_known { a href=(self.trace_href(self.trace_hex, &format!("?span={parent}"))) { code { (parent) } } }
                        @else { code { (parent) } " (not in this trace)" }
                    }
                    dt { "Started" } dd { time datetime=(start) data-local { (start_text) } }
                    @if !entry.scope.is_empty() { dt { "Scope" } dd { (entry.scope) } }
                }
                (self.attributes("Span attributes", &span.attributes))
                (self.attributes("Resource attributes", resource))
                @if !span.events.is_empty() {
                    table.kv.events {
                        caption { "Events" }
                        (thead(&["At", "Event", "Attributes"], &[]))
                        tbody {
                            @for event in &span.events {
                                tr {
                                    td.num { "+" (fmt_duration(seconds(event.time_unix_nano.saturating_sub(span.start_time_unix_nano)))) }
                                    td { (event.name) }
                                    td { (self.inline(&event.attributes)) }
                                }
                            }
                        }
                    }
                }
                @if !span.links.is_empty() {
                    table.kv.links {
                        caption { "Links" }
                        (thead(&["Trace", "Span", "Attributes"], &[]))
                        tbody {
                            @for link in &span.links {
                                @let trace = hex::encode(&link.trace_id);
                                @let linked_span = hex::encode(&link.span_id);
                                tr {
                                    td {
                                        @if trace.len() == 32 {
                                            a href=(self.trace_href(&trace, &if linked_span.len() == 16 { format!("?span={linked_span}") } else { String::new() })) {
                                                @if trace == self.trace_hex { "this trace" } @else { "trace " code { (trace) } }
                                            }
                                        } @else { code { (trace) } }
                                    }
                                    td { code { (linked_span) } }
                                    td { (self.inline(&link.attributes)) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    fn attributes(&self, caption: &str, attributes: &[KeyValue]) -> Markup {
        html! {
            table.kv {
                caption { (caption) }
                (thead(&["Key", "Value"], &[]))
                tbody {
                    @if attributes.is_empty() { tr { td colspan="2" .muted { "none" } } }
                    @for kv in attributes {
                        @let highlighted = HIGHLIGHTED.contains(&kv.key.as_str());
                        tr class=[highlighted.then_some("highlight")] data-key=(kv.key) {
                            td.key { (kv.key) }
                            td.value { (self.value(kv, highlighted)) }
                        }
                    }
                }
            }
        }
    }

    fn value(&self, kv: &KeyValue, highlighted: bool) -> Markup {
        let text = kv.value.as_ref().map(value_text).unwrap_or_default();
        let personal = self.masked && self.state.pseudonyms.is_personal(&kv.key);
        html! {
            @if highlighted {
                mark {
                    @if kv.key == "order.id" && !text.is_empty() {
                        a href=(self.ctx.href(&format!("/orders/{}", path_segment(&text)))) { (text) }
                    } @else { (text) }
                }
            } @else { (text) }
            @if personal { " " span.badge.masked { "masked" } }
        }
    }

    fn inline(&self, attributes: &[KeyValue]) -> Markup {
        html! {
            @if attributes.is_empty() { span.muted { "none" } }
            @else {
                ul.inline-kv {
                    @for kv in attributes {
                        li { code { (kv.key) } " = " (self.value(kv, false)) }
                    }
                }
            }
        }
    }
}
