//! Admin endpoints: `GET /api/v1/audit` (the audit log, filtered) and `GET /api/v1/admin/config`
//! (the running configuration, secrets redacted). Both are audited before they answer.

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde_json::Value;

use super::{ApiError, ApiState};
use crate::shared::parse_rfc3339;

/// The longest page of audit records.
pub const MAX_AUDIT_RECORDS: usize = 10_000;

/// `GET /api/v1/audit?since=&actor=&action=&limit=&order=`: records newest first (`order=asc`:
/// oldest first).
pub async fn read_audit(
    State(state): State<ApiState>,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(params) = params.map_err(|e| ApiError::BadRequest(format!("query string: {}", e.body_text())))?;
    let mut since = None;
    let mut actor = None;
    let mut action = None;
    let mut limit = 1000;
    let mut newest_first = true;
    for (name, value) in &params {
        let value = value.trim();
        if value.is_empty() {
            continue;
        }
        match name.as_str() {
            "since" => since = Some(parse_rfc3339(value).map_err(|e| ApiError::BadRequest(format!("since: {e}")))?),
            "actor" => actor = Some(value.to_string()),
            "action" => action = Some(value.to_string()),
            "order" => {
                newest_first = match value {
                    "desc" => true,
                    "asc" => false,
                    other => return Err(ApiError::BadRequest(format!("order: {other:?} is not asc or desc"))),
                }
            }
            "limit" => {
                limit = match value.parse::<usize>() {
                    Ok(n) if (1..=MAX_AUDIT_RECORDS).contains(&n) => n,
                    _ => return Err(ApiError::BadRequest(format!("limit: {value:?} is not a whole number from 1 to {MAX_AUDIT_RECORDS}"))),
                }
            }
            other => return Err(ApiError::BadRequest(format!("{other}: unknown parameter; use since, actor, action, limit or order"))),
        }
    }
    let audit = state.access.audit().cloned().ok_or(ApiError::NotFound("no audit log is configured (audit.path)".into()))?;
    let records = tokio::task::spawn_blocking(move || audit.read_all())
        .await
        .map_err(|e| ApiError::Internal(Box::new(e)))?
        .map_err(|e| ApiError::Internal(Box::new(e)))?;
    let matches = |r: &Value| {
        let time_ok = since.is_none_or(|s| r["time"].as_str().and_then(|t| parse_rfc3339(t).ok()).is_some_and(|t| t >= s));
        let actor_ok = actor.as_deref().is_none_or(|a| r["actor"]["sub"].as_str() == Some(a) || r["actor"]["name"].as_str() == Some(a));
        let action_ok = action.as_deref().is_none_or(|a| r["action"].as_str() == Some(a));
        time_ok && actor_ok && action_ok
    };
    let selected: Vec<Value> = if newest_first {
        records.into_iter().rev().filter(matches).take(limit).collect()
    } else {
        records.into_iter().filter(matches).take(limit).collect()
    };
    Ok(Json(serde_json::json!({"records": selected, "limit": limit, "order": if newest_first { "desc" } else { "asc" }})))
}

/// `GET /api/v1/admin/config`: the configuration as loaded (after `${env:...}`), secrets redacted.
pub async fn view_config(State(state): State<ApiState>) -> Json<Value> {
    Json(state.config_view.read().unwrap_or_else(|p| p.into_inner()).clone())
}

/// `POST /api/v1/admin/reload`: reads the configuration file again and applies it, or keeps the
/// running one and says why (422). The same as SIGHUP.
pub async fn reload(State(state): State<ApiState>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Some(reload) = &state.reload else {
        return (http::StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({"error": "this gateway cannot reload its configuration"})))
            .into_response();
    };
    match reload.reload().await {
        Ok(summary) => (http::StatusCode::OK, Json(serde_json::json!({"status": "reloaded", "changes": summary}))).into_response(),
        Err(error) => (
            http::StatusCode::UNPROCESSABLE_ENTITY,
            Json(serde_json::json!({"status": "refused", "error": error, "note": "the running configuration stays"})),
        )
            .into_response(),
    }
}
