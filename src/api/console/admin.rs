//! `GET /admin`: the audit log with filters (actor, action, time), the running configuration
//! (redacted), and a reload button (`POST /admin/reload`).
//!
//! The audit log is read and filtered as `GET /api/v1/audit` does (`api::admin::AuditFilter`,
//! `read_records`); the configuration is `GET /api/v1/admin/config`'s redacted view.
//!
//! Reload is POST → render: `POST /admin/reload` reloads, then answers the admin page itself
//! with the outcome in `#reload-result` (200 applied, 422 refused, 503 not possible). No
//! redirect: the outcome (what changed, or a long config error) is shown once, not carried in a
//! URL. The door has already checked the role (ViewConfig), same-origin for sessions, and
//! recorded `console.reload` in the audit log; this handler also checks the form's CSRF token
//! against the session's.

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use maud::{html, Markup};
use serde_json::Value;

use super::{filter_error, form, more_href, thead, Ctx, Nav, PageError};
use crate::api::admin::{read_records, AuditFilter, MAX_AUDIT_RECORDS};
use crate::api::{ApiError, ApiState, ParamError};

/// Audit records on the page unless `limit` asks for more.
const PAGE_RECORDS: usize = 100;
/// The reload form is a token and a button; anything larger is not from our page.
const MAX_FORM_BYTES: usize = 4096;
/// The filter form's fields (kept in "more" links).
const FIELDS: [&str; 4] = ["actor", "action", "since", "until"];

/// What `POST /admin/reload` did.
enum ReloadOutcome {
    /// The summary of what changed (`ReloadSummary` as JSON).
    Applied(Value),
    /// Why the new configuration was refused (the running one stays).
    Refused(String),
    /// This gateway has no file to re-read (started from a configuration in memory).
    Unavailable,
}

pub async fn page(
    ctx: Ctx,
    State(state): State<ApiState>,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, PageError> {
    let params = params.map(|Query(p)| p).map_err(|rejection| ParamError::query_string(&rejection));
    render(&ctx, &state, params, None).await
}

pub async fn reload(ctx: Ctx, State(state): State<ApiState>, request: Request) -> Result<Response, PageError> {
    let form = match form::read(&ctx, request.into_body(), MAX_FORM_BYTES).await {
        Ok(form) => form,
        Err(refusal) => return Ok(refusal),
    };
    if let Some(refusal) = form::csrf_refusal(&ctx, &state, &form, "console.reload", "/admin/reload") {
        return Ok(refusal);
    }
    let outcome = match &state.reload {
        None => ReloadOutcome::Unavailable,
        Some(reloader) => match reloader.reload().await {
            Ok(summary) => ReloadOutcome::Applied(summary),
            Err(error) => ReloadOutcome::Refused(crate::shared::error_chain(error.as_ref())),
        },
    };
    render(&ctx, &state, Ok(HashMap::new()), Some(outcome)).await
}

/// The audit records the filter selects: the records and whether more matched, or why none
/// can be shown (a bad filter: 400; no audit log configured: a notice).
enum AuditView {
    Records { filter: AuditFilter, records: Vec<Value>, more: bool },
    BadFilter(String),
    NoLog(String),
}

async fn render(
    ctx: &Ctx,
    state: &ApiState,
    params: Result<HashMap<String, String>, ParamError>,
    reload: Option<ReloadOutcome>,
) -> Result<Response, PageError> {
    let (params, audit) = match params {
        Err(error) => (HashMap::new(), AuditView::BadFilter(error.message())),
        Ok(params) => {
            let view = match AuditFilter::parse(&params, PAGE_RECORDS) {
                Err(error) => AuditView::BadFilter(error.message()),
                Ok(filter) => match read_records(state, &filter).await {
                    Ok((records, more)) => AuditView::Records { filter, records, more },
                    Err(ApiError::NotFound(why)) => AuditView::NoLog(why),
                    Err(other) => return Err(other.into()),
                },
            };
            (params, view)
        }
    };
    let value = |name: &str| params.get(name).map(|v| v.trim().to_string()).unwrap_or_default();
    let config = config_text(&state.config_view.read().unwrap_or_else(|p| p.into_inner()));
    let mut status = match &reload {
        Some(ReloadOutcome::Applied(_)) | None => StatusCode::OK,
        Some(ReloadOutcome::Refused(_)) => StatusCode::UNPROCESSABLE_ENTITY,
        Some(ReloadOutcome::Unavailable) => StatusCode::SERVICE_UNAVAILABLE,
    };
    if matches!(audit, AuditView::BadFilter(_)) && reload.is_none() {
        status = StatusCode::BAD_REQUEST;
    }
    let body = html! {
        h1 { "Admin" }
        @if let Some(outcome) = &reload { (reload_result(outcome)) }
        section #audit-log aria-labelledby="audit-heading" {
            h2 #audit-heading { "Audit log" }
            p.muted { "Who read, unmasked or changed what, newest first. Every visit to this page is recorded too." }
            (filter_form(ctx, &value))
            @match &audit {
                AuditView::BadFilter(error) => { (filter_error(error)) }
                AuditView::NoLog(why) => { p.notice #no-audit { "No audit log to show: " (why) "." } }
                AuditView::Records { filter, records, more } => {
                    @if records.is_empty() {
                        p.empty #no-records { "No audit records match these filters." }
                    } @else {
                        p.muted { (records.len()) " record" @if records.len() != 1 { "s" } ", newest first." }
                        (audit_table(records))
                        @if *more && filter.limit < MAX_AUDIT_RECORDS {
                            nav.pager aria-label="More audit records" {
                                a rel="next" href=(more_href(ctx, "/admin", &FIELDS, &value, (filter.limit * 2).min(MAX_AUDIT_RECORDS))) { "Show more (older) records" }
                            }
                        } @else if *more {
                            p.muted { "Only the newest " (filter.limit) " are shown; narrow the filters to see older ones." }
                        }
                    }
                }
            }
        }
        section #configuration aria-labelledby="config-heading" {
            h2 #config-heading { "Running configuration" }
            p.muted { "As loaded (after ${env:...} substitution), with secrets replaced by a placeholder." }
            pre #config .config tabindex="0" aria-label="Running configuration (redacted)" { (config) }
            form #reload method="post" action=(ctx.href("/admin/reload"))
                data-confirm="Reload the configuration from its file now? A configuration that does not load is refused and the running one stays." {
                input type="hidden" name="csrf" value=(ctx.csrf());
                button type="submit" { "Reload configuration" }
                " "
                span.muted { "Reads the configuration file again and applies it, as SIGHUP does." }
            }
        }
    };
    Ok(ctx.page_with_status(status, "Admin", Nav::Admin, body))
}

fn reload_result(outcome: &ReloadOutcome) -> Markup {
    match outcome {
        ReloadOutcome::Applied(summary) => {
            let changes: Vec<(String, Vec<String>)> = summary
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(key, names)| {
                    let names: Vec<String> = names.as_array()?.iter().filter_map(|n| n.as_str().map(str::to_string)).collect();
                    (!names.is_empty()).then(|| (key.replace('_', " "), names))
                })
                .collect();
            html! {
                div #reload-result .notice data-outcome="applied" role="status" {
                    strong { "Configuration reloaded." }
                    @if changes.iter().all(|(key, _)| key.ends_with("kept")) {
                        " Nothing changed."
                    }
                    @if !changes.is_empty() {
                        ul {
                            @for (key, names) in &changes {
                                li { (key) ": " span.mono { (names.join(", ")) } }
                            }
                        }
                    }
                }
            }
        }
        ReloadOutcome::Refused(error) => html! {
            div #reload-result .error-message data-outcome="refused" role="alert" {
                strong { "Reload refused; the running configuration stays." }
                pre { (error) }
            }
        },
        ReloadOutcome::Unavailable => html! {
            div #reload-result .error-message data-outcome="unavailable" role="alert" {
                strong { "This gateway cannot reload its configuration." }
                " It was started from a configuration built in memory, with no file to read again. \
                  Start it with --config FILE to reload (or send SIGHUP)."
            }
        },
    }
}

fn filter_form(ctx: &Ctx, value: &dyn Fn(&str) -> String) -> Markup {
    html! {
        form.filters #audit-filters method="get" action=(ctx.href("/admin")) aria-label="Filter the audit log" {
            label for="audit-actor" { "Actor (subject or name)" input #audit-actor type="text" name="actor" value=(value("actor")) placeholder="ada"; }
            label for="audit-action" { "Action" input #audit-action type="text" name="action" value=(value("action")) placeholder="unmask"; }
            label for="audit-since" { "Since (UTC)" input #audit-since type="text" name="since" value=(value("since")) placeholder="2026-11-20T10:00:00Z"; }
            label for="audit-until" { "Until (UTC)" input #audit-until type="text" name="until" value=(value("until")) placeholder="2026-11-20T18:00:00Z"; }
            button type="submit" { "Filter" }
            a.button.secondary href=(ctx.href("/admin")) { "Clear" }
        }
    }
}

fn audit_table(records: &[Value]) -> Markup {
    let text = |v: &Value| v.as_str().map(str::to_string);
    html! {
        div.scroll tabindex="0" role="region" aria-label="Audit records" {
            table #audit {
                caption.muted { "Audit records" }
                (thead(&["Time", "Actor", "Action", "Resource", "Outcome", "Reason", "Client"], &[]))
                tbody {
                    @for r in records {
                        @let action = text(&r["action"]).unwrap_or_default();
                        @let outcome = text(&r["outcome"]);
                        tr data-action=(action) data-outcome=[outcome.as_deref()] {
                            td {
                                @if let Some(t) = text(&r["time"]) { time datetime=(t) data-local { (t) } }
                            }
                            td {
                                @if r["actor"].is_object() {
                                    @let actor = &r["actor"];
                                    span.actor { (text(&actor["name"]).or_else(|| text(&actor["sub"])).unwrap_or_default()) }
                                    @if let (Some(name), Some(sub)) = (text(&actor["name"]), text(&actor["sub"])) {
                                        @if name != sub { " " span.muted.mono { "(" (sub) ")" } }
                                    }
                                    @for role in actor["roles"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                                        " " span.badge { (role) }
                                    }
                                } @else {
                                    span.muted { "the gateway" }
                                }
                            }
                            td.mono.action { (action) }
                            td.mono.resource { (text(&r["resource"]).unwrap_or_default()) }
                            td {
                                @if let Some(o) = &outcome {
                                    span class=(format!("badge {}", outcome_class(o))) { (o) }
                                } @else if let Some(kind) = text(&r["checkpoint"]["kind"]) {
                                    span.muted { "checkpoint (" (kind) ")" }
                                }
                            }
                            td { (text(&r["reason"]).unwrap_or_default()) }
                            td.mono.client {
                                (text(&r["source"]).unwrap_or_default())
                                @if let Some(via) = text(&r["via"]) { " " span.muted { "via " (via) } }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The badge colour of an outcome (the outcome's word is always shown too).
fn outcome_class(outcome: &str) -> &'static str {
    match outcome {
        "allowed" => "ok",
        "forbidden" | "unauthenticated" | "error" => "critical",
        _ => "warning",
    }
}

/// The redacted configuration as YAML (JSON if it cannot be written as YAML).
fn config_text(config: &Value) -> String {
    serde_yaml_ng::to_string(config).unwrap_or_else(|_| serde_json::to_string_pretty(config).unwrap_or_default())
}
