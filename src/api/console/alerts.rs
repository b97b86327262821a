//! `GET /alerts`: the order monitors' alerts, firing and resolved, newest first, filterable by
//! state, rule, severity and fire time. The same alerts and the same parameters as
//! `GET /api/v1/alerts` (`api::alerts::parse_alert_query`); a bad filter value is shown on the
//! page above the form, not answered as JSON.

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{html, Markup};

use super::{filter_error, fmt_duration, more_href, path_segment, thead, Ctx, Nav, PageError};
use crate::api::alerts::parse_alert_query;
use crate::api::{ApiError, ApiState, ParamError, MAX_LIMIT};
use crate::orders::{AlertState, OrderAlert};
use crate::shared::format_rfc3339_nanos;

/// The form's fields, in the order they are shown (and kept in "more" links).
const FIELDS: [&str; 5] = ["state", "rule", "severity", "since", "until"];

pub async fn page(
    ctx: Ctx,
    State(state): State<ApiState>,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, PageError> {
    let params = match params {
        Ok(Query(params)) => params,
        Err(rejection) => {
            return Ok(render(&ctx, &state, &HashMap::new(), Err(ParamError::query_string(&rejection))));
        }
    };
    let query = match parse_alert_query(&params) {
        Ok(query) => query,
        Err(error) => return Ok(render(&ctx, &state, &params, Err(error))),
    };
    let backend = state.backend.clone().ok_or(ApiError::NoBackend)?;
    let limit = query.limit;
    let alerts = backend.alerts(query).await?;
    Ok(render(&ctx, &state, &params, Ok((alerts, limit))))
}

/// The page: the filter form, then the alerts or the filter's error (answered with 400).
fn render(ctx: &Ctx, state: &ApiState, params: &HashMap<String, String>, found: Result<(Vec<OrderAlert>, usize), ParamError>) -> Response {
    let value = |name: &str| params.get(name).map(|v| v.trim().to_string()).unwrap_or_default();
    let status = if found.is_ok() { StatusCode::OK } else { StatusCode::BAD_REQUEST };
    let body = html! {
        h1 { "Alerts" }
        p.muted { "Order alerts raised by the order monitors: an order that took longer than a rule allows between two statuses or stages." }
        (filter_form(ctx, &value, &known_rules(state)))
        @match &found {
            Err(error) => { (filter_error(&error.message())) }
            Ok((alerts, limit)) => {
                @if alerts.is_empty() {
                    p.empty #no-alerts {
                        @if FIELDS.iter().any(|f| !value(f).is_empty()) { "No alerts match these filters." }
                        @else { "No alerts: no order has broken a monitor rule." }
                    }
                } @else {
                    p.muted { (alerts.len()) " alert" @if alerts.len() != 1 { "s" } ", newest first." }
                    (table(ctx, alerts))
                    @if alerts.len() >= *limit && *limit < MAX_LIMIT {
                        nav.pager aria-label="More alerts" {
                            a rel="next" href=(more_href(ctx, "/alerts", &FIELDS, &value, (*limit * 2).min(MAX_LIMIT))) { "Show more (older) alerts" }
                        }
                    }
                }
            }
        }
    };
    ctx.page_with_status(status, "Alerts", Nav::Alerts, body)
}

fn filter_form(ctx: &Ctx, value: &dyn Fn(&str) -> String, rules: &[String]) -> Markup {
    let select = |name: &str, label: &str, options: &[&str]| {
        let current = value(name);
        html! {
            label for=(format!("alerts-{name}")) {
                (label)
                select id=(format!("alerts-{name}")) name=(name) {
                    option value="" selected[current.is_empty()] { "Any" }
                    @for option in options {
                        option value=(option) selected[current == *option] { (option) }
                    }
                }
            }
        }
    };
    html! {
        form.filters #alert-filters method="get" action=(ctx.href("/alerts")) aria-label="Filter alerts" {
            (select("state", "State", &["firing", "resolved"]))
            label for="alerts-rule" { "Rule" input #alerts-rule type="text" name="rule" value=(value("rule")) list="alert-rules" autocomplete="off"; }
            datalist #alert-rules { @for rule in rules { option value=(rule) {} } }
            (select("severity", "Severity", &["info", "warning", "critical"]))
            label for="alerts-since" { "Fired since (UTC)" input #alerts-since type="text" name="since" value=(value("since")) placeholder="2026-11-20T10:00:00Z"; }
            label for="alerts-until" { "Fired until (UTC)" input #alerts-until type="text" name="until" value=(value("until")) placeholder="2026-11-20T18:00:00Z"; }
            button type="submit" { "Filter" }
            a.button.secondary href=(ctx.href("/alerts")) { "Clear" }
        }
    }
}

fn table(ctx: &Ctx, alerts: &[OrderAlert]) -> Markup {
    html! {
        div.scroll tabindex="0" role="region" aria-label="Order alerts" {
            table #alerts-table {
                caption.muted { "Order alerts" }
                (thead(&["State", "Severity", "Rule", "Order", "Transition", "Waited", "Fired at", "Resolved at"], &["Waited"]))
                tbody {
                    @for a in alerts {
                        tr data-state=(a.state.as_str()) data-rule=(a.rule) {
                            td { span class=(format!("badge {}", a.state.as_str())) { (state_text(a.state)) } }
                            td { span class=(format!("badge {}", a.severity.as_str())) { (a.severity.as_str()) } }
                            td.mono title=(format!("monitor {}", a.monitor)) { (a.rule) }
                            td.order { a href=(ctx.href(&format!("/orders/{}", path_segment(&a.order_id)))) { (a.order_id) } }
                            td {
                                span.transition { span.mono { (a.from) } " → " span.mono { (a.to) } }
                                br;
                                "within " (fmt_duration(a.threshold_seconds))
                                @if let Some(status) = &a.current_status { br; span.muted { "status now: " (status) } }
                            }
                            td.num {
                                @if a.elapsed_seconds > 0.0 { (fmt_duration(a.elapsed_seconds)) } @else { "—" }
                                @if a.late_data { br; span.badge.ok { "data arrived late" } }
                            }
                            td { (time(a.fired_at)) }
                            td { @if let Some(at) = a.resolved_at { (time(at)) } @else { span.muted { "still firing" } } }
                        }
                    }
                }
            }
        }
    }
}

/// The rule names of the running configuration's monitors (suggestions for the rule field).
fn known_rules(state: &ApiState) -> Vec<String> {
    let config = state.config_view.read().unwrap_or_else(|p| p.into_inner());
    let mut rules: Vec<String> = config["monitors"]
        .as_object()
        .into_iter()
        .flat_map(|monitors| monitors.values())
        .flat_map(|monitor| monitor["rules"].as_array().into_iter().flatten())
        .filter_map(|rule| rule["name"].as_str().map(str::to_string))
        .collect();
    rules.sort_unstable();
    rules.dedup();
    rules
}

fn state_text(state: AlertState) -> &'static str {
    match state {
        AlertState::Firing => "firing",
        AlertState::Resolved => "resolved",
    }
}

fn time(ns: u64) -> Markup {
    let text = format_rfc3339_nanos(ns);
    html! { time datetime=(text) data-local { (text) } }
}
