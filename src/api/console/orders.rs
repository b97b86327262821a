//! `GET /`: the orders page — find an order by id, or list orders by status, service, time and
//! alert state, longest waiting first.
//!
//! The search box `q` goes to the order when an order has exactly that id (303 to
//! `/orders/{id}`), else lists the orders whose id starts with it. The list reads the same order
//! summaries as `GET /api/v1/orders` (and pages with the same cursors); "waiting since" is the
//! time since the order's last span ended (`last_seen`, what the list sorts by).

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};

use super::{fmt_duration, path_segment, thead, Ctx, Nav, PageError};
use crate::api::orders::{apply_alert_filter, decode_cursor, encode_cursor, parse_sort};
use crate::api::{ApiError, ApiState, ParamError, ParamProblem};
use crate::orders::{OrderQuery, OrderSort, OrderSummary};
use crate::shared::{format_rfc3339_nanos, parse_rfc3339};

/// Orders per page.
pub const PAGE_SIZE: usize = 50;

/// The form's fields, as the browser sent them (kept in the form after submit).
#[derive(Debug, Default, Clone)]
struct Form {
    q: String,
    status: String,
    service: String,
    since: String,
    until: String,
    alert: String,
    sort: String,
    /// "1" when the list includes finished orders (terminal statuses); by default it shows the
    /// orders in flight only.
    finished: String,
    cursor: String,
}

impl Form {
    fn from_params(params: &HashMap<String, String>) -> Form {
        let get = |name: &str| params.get(name).map(|v| v.trim().to_string()).unwrap_or_default();
        Form {
            q: get("q"),
            status: get("status"),
            service: get("service"),
            since: get("since"),
            until: get("until"),
            alert: get("alert"),
            sort: get("sort"),
            finished: get("finished"),
            cursor: get("cursor"),
        }
    }

    /// The list query the filters ask for (no search, no paging), or what is wrong with them.
    fn query(&self) -> Result<OrderQuery, ParamError> {
        let mut query = OrderQuery { limit: PAGE_SIZE, sort: OrderSort::LongestWaiting, ..Default::default() };
        let text = |v: &str| (!v.is_empty()).then(|| v.to_string());
        query.status = text(&self.status);
        query.service = text(&self.service);
        if !self.since.is_empty() {
            query.since_ns = Some(parse_time(&self.since).map_err(|e| ParamError::new("Since", e))?);
        }
        if !self.until.is_empty() {
            query.until_ns = Some(parse_time(&self.until).map_err(|e| ParamError::new("Until", e))?);
        }
        if let (Some(since), Some(until)) = (query.since_ns, query.until_ns) {
            if since > until {
                return Err(ParamError::new("Since", ParamProblem::Conflict("must not be after Until")));
            }
        }
        if !self.alert.is_empty() {
            apply_alert_filter(&mut query, &self.alert).map_err(|e| ParamError::new("Alerts", e))?;
        }
        if !self.sort.is_empty() {
            query.sort = parse_sort(&self.sort).map_err(|e| ParamError::new("Sort", e))?;
        }
        if !self.cursor.is_empty() {
            match decode_cursor(&self.cursor) {
                Some((sort, last_seen, order_id)) if sort == query.sort => query.after = Some((last_seen, order_id)),
                Some(_) => return Err(ParamError::new("Page", ParamProblem::PageLinkSort)),
                None => return Err(ParamError::new("Page", ParamProblem::PageLink)),
            }
        }
        Ok(query)
    }

    /// The query string of this form's list with another cursor (the "next page" link).
    fn with_cursor(&self, cursor: &str) -> String {
        let mut out = url::form_urlencoded::Serializer::new(String::new());
        for (name, value) in [
            ("q", &self.q),
            ("status", &self.status),
            ("service", &self.service),
            ("since", &self.since),
            ("until", &self.until),
            ("alert", &self.alert),
            ("sort", &self.sort),
            ("finished", &self.finished),
        ] {
            if !value.is_empty() {
                out.append_pair(name, value);
            }
        }
        out.append_pair("cursor", cursor);
        out.finish()
    }

    fn filtered(&self) -> bool {
        [&self.q, &self.status, &self.service, &self.since, &self.until, &self.alert, &self.cursor].iter().any(|v| !v.is_empty())
    }
}

/// A time from a filter: RFC 3339, or what a `datetime-local` input sends (`2026-11-20T09:30`,
/// seconds optional), read as UTC.
pub fn parse_time(text: &str) -> Result<u64, ParamProblem> {
    if let Ok(ns) = parse_rfc3339(text) {
        return Ok(ns);
    }
    let local = text.replace(' ', "T");
    let with_seconds = if local.len() == 16 { format!("{local}:00") } else { local };
    parse_rfc3339(&format!("{with_seconds}Z")).map_err(|_| ParamProblem::ConsoleTime(text.to_string()))
}

/// The value a `datetime-local` input shows for a filter: the time in UTC to the second, or the
/// text as given when it is not a time (the error message names it).
fn local_value(text: &str) -> String {
    match parse_time(text) {
        Ok(ns) => format_rfc3339_nanos(ns).chars().take(19).collect(),
        Err(_) => text.to_string(),
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

pub async fn page(ctx: Ctx, State(state): State<ApiState>, Query(params): Query<HashMap<String, String>>) -> Result<Response, PageError> {
    let backend = state.backend.clone().ok_or(ApiError::NoBackend)?;
    let form = Form::from_params(&params);
    let mut query = match form.query() {
        Ok(query) => query,
        Err(problem) => {
            let body = html! { (heading()) (filters(&ctx, &form)) p.problem #problem role="alert" { (problem.message()) } };
            return Ok(ctx.page_with_status(StatusCode::BAD_REQUEST, "Orders", Nav::Orders, body));
        }
    };
    // An exact id goes to the order; otherwise the ids that start with it.
    if !form.q.is_empty() && form.cursor.is_empty() {
        let exact = OrderQuery { order_id: Some(form.q.clone()), limit: 1, ..Default::default() };
        if !backend.orders(exact).await?.is_empty() {
            let location = ctx.href(&format!("/orders/{}", path_segment(&form.q)));
            let mut response = StatusCode::SEE_OTHER.into_response();
            if let Ok(value) = HeaderValue::from_str(&location) {
                response.headers_mut().insert(header::LOCATION, value);
            }
            response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            return Ok(response);
        }
    }
    if !form.q.is_empty() {
        query.id_prefix = Some(form.q.clone());
    }
    // In flight only, unless asked otherwise: a search, a status asked for by name, or the
    // "finished orders too" box (finished = a monitor's terminal or last lifecycle status).
    let in_flight_only = form.q.is_empty() && form.status.is_empty() && form.finished.is_empty();
    if in_flight_only {
        query.exclude_statuses = finished_statuses(&state);
    }
    let sort = query.sort;
    query.limit = PAGE_SIZE + 1;
    let mut orders = backend.orders(query).await?;
    let next = if orders.len() > PAGE_SIZE {
        orders.truncate(PAGE_SIZE);
        orders.last().map(|o| encode_cursor(sort, o.last_seen, &o.order_id))
    } else {
        None
    };
    let now = now_ns();
    let body = html! {
        (heading())
        (filters(&ctx, &form))
        @if !form.q.is_empty() {
            p.notice #search-result {
                @if orders.is_empty() {
                    "No order " strong { (form.q) } ", and no order id starts with it"
                    @if form.filtered_beyond_search() { " (with these filters)" }
                    "."
                } @else {
                    "No order " strong { (form.q) } "; orders starting with " strong { (form.q) } ":"
                }
            }
        }
        @if orders.is_empty() {
            @if !form.filtered() {
                div.empty #empty {
                    p {
                        "No order in flight (every order's status is one of "
                        (finished_statuses(&state).join(", "))
                        ", or none has arrived yet). Tick \"Finished orders too\" to list finished orders."
                    }
                    p {
                        "To see some, send a few sample orders to this gateway: run "
                        code { "tracegate demo" }
                        " (it sends Shop/CRM/MES orders over OTLP and prints their ids), or point your services' \
                          OpenTelemetry exporters at the gateway's OTLP port."
                    }
                }
            } @else if form.q.is_empty() {
                p.empty #empty { "No order matches these filters." }
            }
        } @else {
            p.muted #sorted {
                @if in_flight_only { "Orders in flight (finished orders are left out). " }
                @match sort {
                    OrderSort::LongestWaiting => { "Longest waiting first: the order whose last step is oldest comes first." }
                    OrderSort::NewestFirst => { "Newest first: the order with the most recent step comes first." }
                }
            }
            div.scroll {
                table #orders {
                    (thead(&["Order", "Status", "Current service", "Current stage", "Waiting since", "First seen", "Services", "Alerts"], &[]))
                    tbody {
                        @for o in &orders { (row(&ctx, o, now)) }
                    }
                }
            }
        }
        @if let Some(cursor) = &next {
            nav.pager aria-label="Pages" {
                a rel="next" href=(format!("{}?{}", ctx.href("/"), form.with_cursor(cursor))) { "Next page" }
            }
        }
    };
    Ok(ctx.page("Orders", Nav::Orders, body))
}

impl Form {
    /// Filters other than the search box are set.
    fn filtered_beyond_search(&self) -> bool {
        [&self.status, &self.service, &self.since, &self.until, &self.alert, &self.finished].iter().any(|v| !v.is_empty())
    }
}

fn heading() -> Markup {
    html! { h1 { "Orders" } }
}

fn row(ctx: &Ctx, o: &OrderSummary, now: u64) -> Markup {
    let last = format_rfc3339_nanos(o.last_seen);
    let first = format_rfc3339_nanos(o.first_seen);
    let waiting = now.saturating_sub(o.last_seen) as f64 / 1e9;
    html! {
        tr data-order-id=(o.order_id) {
            td { a href=(ctx.href(&format!("/orders/{}", path_segment(&o.order_id)))) { (o.order_id) } }
            td.status { (o.status.as_deref().unwrap_or("—")) }
            td.service { (o.current_service.as_deref().unwrap_or("—")) }
            td.stage { (o.current_stage.as_deref().unwrap_or("—")) }
            td.waiting {
                span.duration { (fmt_duration(waiting)) }
                br;
                span.muted { "since " time datetime=(last) data-local { (last) } }
            }
            td { time datetime=(first) data-local { (first) } }
            td { (o.services.join(", ")) }
            td.alerts {
                @if o.firing_alerts > 0 {
                    span.badge.firing { (o.firing_alerts) " firing" }
                } @else {
                    span.muted { "none firing" }
                }
            }
        }
    }
}

fn filters(ctx: &Ctx, form: &Form) -> Markup {
    let alert_options = [("", "Any"), ("firing", "Firing"), ("resolved", "Resolved"), ("none", "No alerts")];
    let sort_options = [("waiting", "Longest waiting first"), ("newest", "Newest first")];
    html! {
        form.filters #order-filters method="get" action=(ctx.href("/")) role="search" {
            label { "Order id" input type="search" name="q" value=(form.q) placeholder="A-1001" autocomplete="off"; }
            label { "Status" input type="text" name="status" value=(form.status) placeholder="any"; }
            label { "Service" input type="text" name="service" value=(form.service) placeholder="any"; }
            label { "Since (UTC)" input type="datetime-local" step="1" name="since" value=(local_value(&form.since)); }
            label { "Until (UTC)" input type="datetime-local" step="1" name="until" value=(local_value(&form.until)); }
            label {
                "Alerts"
                select name="alert" {
                    @for (value, text) in alert_options {
                        option value=(value) selected[form.alert == value] { (text) }
                    }
                }
            }
            label {
                "Sort"
                select name="sort" {
                    @for (value, text) in sort_options {
                        option value=(value) selected[form.sort == value || (form.sort.is_empty() && value == "waiting")] { (text) }
                    }
                }
            }
            label.check { input type="checkbox" name="finished" value="1" checked[!form.finished.is_empty()]; "Finished orders too" }
            button type="submit" { "Find" }
            a.button.secondary href=(ctx.href("/")) { "Clear" }
        }
        p.muted.hint { "Times are UTC. An exact order id opens the order; part of one lists the orders whose id starts with it." }
    }
}

/// The statuses that end an order: the monitors' `terminal` ones and the last of each
/// `lifecycle`, or `handed_to_courier` and `cancelled` without a monitor.
fn finished_statuses(state: &ApiState) -> Vec<String> {
    if state.order_rules.terminal.is_empty() {
        crate::monitors::DEFAULT_TERMINAL.iter().map(|s| s.to_string()).collect()
    } else {
        state.order_rules.terminal.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_times_accept_datetime_local_as_utc_and_rfc3339() {
        let t = 1_795_165_200_000_000_000; // 2026-11-20T09:00:00Z
        assert_eq!(parse_time("2026-11-20T09:00").unwrap(), t);
        assert_eq!(parse_time("2026-11-20T09:00:00").unwrap(), t);
        assert_eq!(parse_time("2026-11-20T09:00:00.5").unwrap(), t + 500_000_000);
        assert_eq!(parse_time("2026-11-20T10:00:00+01:00").unwrap(), t);
        assert!(parse_time("yesterday").unwrap_err().to_string().contains("yesterday"));
        assert!(parse_time("2026-11-20").is_err());
        assert_eq!(local_value("2026-11-20T10:00:00+01:00"), "2026-11-20T09:00:00");
        assert_eq!(local_value("nonsense"), "nonsense");
    }

    #[test]
    fn bad_filters_are_named() {
        let form = |pairs: &[(&str, &str)]| Form::from_params(&pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        assert_eq!(form(&[]).query().unwrap().sort, OrderSort::LongestWaiting, "longest waiting first by default");
        assert!(form(&[("since", "soon")]).query().unwrap_err().message().starts_with("Since:"));
        assert!(form(&[("since", "2026-11-21T00:00"), ("until", "2026-11-20T00:00")]).query().unwrap_err().message().starts_with("Since:"));
        assert!(form(&[("alert", "loud")]).query().unwrap_err().message().starts_with("Alerts:"));
        assert!(form(&[("sort", "up")]).query().unwrap_err().message().starts_with("Sort:"));
        assert!(form(&[("cursor", "xx")]).query().unwrap_err().message().starts_with("Page:"));
        let newest = encode_cursor(OrderSort::NewestFirst, 1, "A");
        assert!(
            form(&[("cursor", &newest)]).query().unwrap_err().message().starts_with("Page:"),
            "a newest-first cursor on the waiting list"
        );
        assert_eq!(form(&[("cursor", &newest), ("sort", "newest")]).query().unwrap().after, Some((1, "A".into())));
        assert!(form(&[("alert", "none")]).query().unwrap().no_alerts);
    }
}
