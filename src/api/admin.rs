//! Admin endpoints: `GET /api/v1/audit` (the audit log, filtered) and `GET /api/v1/admin/config`
//! (the running configuration, secrets redacted). Both are audited before they answer.

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde_json::Value;

use super::{ApiError, ApiState, ParamError, ParamProblem};
use crate::shared::parse_rfc3339;

/// The longest page of audit records.
pub const MAX_AUDIT_RECORDS: usize = 10_000;

/// `GET /api/v1/audit?since=&until=&actor=&action=&limit=&order=`: records newest first
/// (`order=asc`: oldest first).
pub async fn read_audit(
    State(state): State<ApiState>,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(params) = params.map_err(|e| ParamError::query_string(&e))?;
    let filter = AuditFilter::parse(&params, 1000)?;
    let (selected, _more) = read_records(&state, &filter).await?;
    Ok(Json(serde_json::json!({"records": selected, "limit": filter.limit, "order": if filter.newest_first { "desc" } else { "asc" }})))
}

/// Which audit records to read: the parameters of `GET /api/v1/audit`, shared with the
/// console's admin page. Empty values mean "no filter"; unknown parameters are errors.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AuditFilter {
    pub since: Option<u64>,
    pub until: Option<u64>,
    /// The actor's subject or name, exactly.
    pub actor: Option<String>,
    pub action: Option<String>,
    pub limit: usize,
    pub newest_first: bool,
}

impl AuditFilter {
    pub(crate) fn parse(params: &HashMap<String, String>, default_limit: usize) -> Result<AuditFilter, ParamError> {
        let mut filter = AuditFilter { since: None, until: None, actor: None, action: None, limit: default_limit, newest_first: true };
        for (name, value) in params {
            let value = value.trim();
            if value.is_empty() {
                continue;
            }
            let time = |what: &'static str| parse_rfc3339(value).map_err(|e| ParamError::new(what, e));
            match name.as_str() {
                "since" => filter.since = Some(time("since")?),
                "until" => filter.until = Some(time("until")?),
                "actor" => filter.actor = Some(value.to_string()),
                "action" => filter.action = Some(value.to_string()),
                "order" => {
                    filter.newest_first = match value {
                        "desc" => true,
                        "asc" => false,
                        other => {
                            return Err(ParamError::new(
                                "order",
                                ParamProblem::NotOneOf { value: other.to_string(), expected: "asc or desc" },
                            ))
                        }
                    }
                }
                "limit" => {
                    filter.limit = match value.parse::<usize>() {
                        Ok(n) if (1..=MAX_AUDIT_RECORDS).contains(&n) => n,
                        _ => {
                            return Err(ParamError::new("limit", ParamProblem::Limit { value: value.to_string(), max: MAX_AUDIT_RECORDS }))
                        }
                    }
                }
                other => {
                    return Err(ParamError::new(
                        other.to_string(),
                        ParamProblem::Unknown { known: "since, until, actor, action, limit or order" },
                    ))
                }
            }
        }
        if let (Some(since), Some(until)) = (filter.since, filter.until) {
            if since > until {
                return Err(ParamError::new("until", ParamProblem::Conflict("comes before since")));
            }
        }
        Ok(filter)
    }

    /// Does `record` (a line of the audit log) pass the filter?
    pub(crate) fn matches(&self, r: &Value) -> bool {
        let time = r["time"].as_str().and_then(|t| parse_rfc3339(t).ok());
        let since_ok = self.since.is_none_or(|s| time.is_some_and(|t| t >= s));
        let until_ok = self.until.is_none_or(|u| time.is_some_and(|t| t <= u));
        let actor_ok =
            self.actor.as_deref().is_none_or(|a| r["actor"]["sub"].as_str() == Some(a) || r["actor"]["name"].as_str() == Some(a));
        let action_ok = self.action.as_deref().is_none_or(|a| r["action"].as_str() == Some(a));
        since_ok && until_ok && actor_ok && action_ok
    }
}

/// The audit records `filter` selects, at most `filter.limit`, and whether more matched.
pub(crate) async fn read_records(state: &ApiState, filter: &AuditFilter) -> Result<(Vec<Value>, bool), ApiError> {
    let audit = state.access.audit().cloned().ok_or(ApiError::NotFound("no audit log is configured (audit.path)".into()))?;
    let records = tokio::task::spawn_blocking(move || audit.read_all())
        .await
        .map_err(|e| ApiError::Internal(Box::new(e)))?
        .map_err(|e| ApiError::Internal(Box::new(e)))?;
    let mut selected: Vec<Value> = if filter.newest_first {
        records.into_iter().rev().filter(|r| filter.matches(r)).take(filter.limit + 1).collect()
    } else {
        records.into_iter().filter(|r| filter.matches(r)).take(filter.limit + 1).collect()
    };
    let more = selected.len() > filter.limit;
    selected.truncate(filter.limit);
    Ok((selected, more))
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
            Json(serde_json::json!({"status": "refused", "error": crate::shared::error_chain(error.as_ref()), "note": "the running configuration stays"})),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<AuditFilter, ParamError> {
        let params = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        AuditFilter::parse(&params, 1000)
    }

    #[test]
    fn audit_filters_and_their_errors() {
        let f = parse(&[
            ("actor", "ada"),
            ("action", "unmask"),
            ("since", "2026-11-20T10:00:00Z"),
            ("until", "2026-11-20T11:00:00Z"),
            ("limit", ""),
        ])
        .unwrap();
        assert_eq!((f.actor.as_deref(), f.action.as_deref(), f.limit, f.newest_first), (Some("ada"), Some("unmask"), 1000, true));
        let record = |time: &str, sub: &str, action: &str| serde_json::json!({"time": time, "actor": {"sub": sub}, "action": action});
        assert!(f.matches(&record("2026-11-20T10:30:00Z", "ada", "unmask")));
        assert!(!f.matches(&record("2026-11-20T11:30:00Z", "ada", "unmask")));
        assert!(!f.matches(&record("2026-11-20T09:30:00Z", "ada", "unmask")));
        assert!(!f.matches(&record("2026-11-20T10:30:00Z", "sam", "unmask")));
        assert!(!f.matches(&record("2026-11-20T10:30:00Z", "ada", "trace.read")));
        for (pairs, starts) in [
            (vec![("since", "today")], "since:"),
            (vec![("until", "today")], "until:"),
            (vec![("since", "2026-11-20T11:00:00Z"), ("until", "2026-11-20T10:00:00Z")], "until:"),
            (vec![("limit", "0")], "limit:"),
            (vec![("order", "up")], "order:"),
            (vec![("who", "ada")], "who:"),
        ] {
            let error = parse(&pairs).unwrap_err().message();
            assert!(error.starts_with(starts), "{pairs:?}: {error}");
        }
    }
}
