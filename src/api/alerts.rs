//! `GET /api/v1/alerts` (order alerts, newest first, filtered by state, rule, severity and fire
//! time; the console's alerts page reads them the same way) and the alert's JSON shape, shared with the order timeline (DESIGN.md §2).

use std::collections::HashMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::Json;
use serde::{Serialize, Serializer};

use super::orders::{filled_params, parse_limit, rfc3339, DEFAULT_LIMIT};
use super::{ApiError, ApiState, ParamError, ParamProblem};
use crate::orders::{AlertState, OrderAlert, Severity};
use crate::shared::{format_rfc3339_nanos, parse_rfc3339};
use crate::store::AlertQuery;

/// One order alert as the API shows it.
#[derive(Debug, Serialize)]
pub struct AlertBody<'a> {
    order_id: &'a str,
    monitor: &'a str,
    rule: &'a str,
    from: &'a str,
    to: &'a str,
    severity: &'static str,
    threshold_seconds: f64,
    elapsed_seconds: f64,
    state: &'static str,
    #[serde(serialize_with = "rfc3339")]
    fired_at: u64,
    #[serde(serialize_with = "optional_rfc3339")]
    resolved_at: Option<u64>,
    late_data: bool,
    current_status: Option<&'a str>,
}

impl<'a> From<&'a OrderAlert> for AlertBody<'a> {
    fn from(a: &'a OrderAlert) -> Self {
        AlertBody {
            order_id: &a.order_id,
            monitor: &a.monitor,
            rule: &a.rule,
            from: &a.from,
            to: &a.to,
            severity: a.severity.as_str(),
            threshold_seconds: a.threshold_seconds,
            elapsed_seconds: a.elapsed_seconds,
            state: a.state.as_str(),
            fired_at: a.fired_at,
            resolved_at: a.resolved_at,
            late_data: a.late_data,
            current_status: a.current_status.as_deref(),
        }
    }
}

fn optional_rfc3339<S: Serializer>(ns: &Option<u64>, serializer: S) -> Result<S::Ok, S::Error> {
    match ns {
        Some(ns) => serializer.serialize_str(&format_rfc3339_nanos(*ns)),
        None => serializer.serialize_none(),
    }
}

#[derive(Debug, Serialize)]
pub struct AlertPage<'a> {
    alerts: Vec<AlertBody<'a>>,
    limit: usize,
}

/// An alert state as a query parameter (`firing`, `resolved`).
pub fn parse_state(value: &str) -> Result<AlertState, ParamProblem> {
    match value {
        "firing" => Ok(AlertState::Firing),
        "resolved" => Ok(AlertState::Resolved),
        other => Err(ParamProblem::NotOneOf { value: other.to_string(), expected: "an alert state; use firing or resolved" }),
    }
}

pub async fn list_alerts(
    State(state): State<ApiState>,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(params) = params.map_err(|e| ParamError::query_string(&e))?;
    let query = parse_alert_query(&params)?;
    let backend = state.backend.clone().ok_or(ApiError::NoBackend)?;
    let limit = query.limit;
    let alerts = backend.alerts(query).await?;
    let page = AlertPage { alerts: alerts.iter().map(AlertBody::from).collect(), limit };
    Ok(Json(serde_json::to_value(page).map_err(|e| ApiError::Internal(Box::new(e)))?))
}

/// The alert list's parameters; empty values mean "no filter", unknown parameters are errors.
/// Shared with the console's alerts page.
pub(crate) fn parse_alert_query(params: &HashMap<String, String>) -> Result<AlertQuery, ParamError> {
    let mut query = AlertQuery { limit: DEFAULT_LIMIT, ..Default::default() };
    for (name, value) in filled_params(params) {
        match name {
            "state" => query.state = Some(parse_state(value).map_err(|e| ParamError::new("state", e))?),
            "rule" => query.rule = Some(value.to_string()),
            "severity" => {
                query.severity = Some(Severity::parse(value).ok_or_else(|| {
                    ParamError::new(
                        "severity",
                        ParamProblem::NotOneOf { value: value.to_string(), expected: "a severity; use info, warning or critical" },
                    )
                })?)
            }
            "since" => query.since_ns = Some(parse_rfc3339(value).map_err(|e| ParamError::new("since", e))?),
            "until" => query.until_ns = Some(parse_rfc3339(value).map_err(|e| ParamError::new("until", e))?),
            "limit" => query.limit = parse_limit(value)?,
            other => {
                return Err(ParamError::new(
                    other.to_string(),
                    ParamProblem::Unknown { known: "state, rule, severity, since, until or limit" },
                ))
            }
        }
    }
    if let (Some(since), Some(until)) = (query.since_ns, query.until_ns) {
        if since > until {
            return Err(ParamError::new("until", ParamProblem::Conflict("comes before since")));
        }
    }
    Ok(query)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<AlertQuery, ParamError> {
        let params = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        parse_alert_query(&params)
    }

    #[test]
    fn alert_parameters_and_their_errors() {
        assert_eq!(parse(&[]).unwrap(), AlertQuery { limit: 100, ..Default::default() });
        let q = parse(&[
            ("state", "firing"),
            ("rule", "crm_accepts"),
            ("severity", "critical"),
            ("since", "2026-11-20T10:00:00Z"),
            ("until", "2026-11-20T11:00:00Z"),
            ("limit", "5"),
        ])
        .unwrap();
        assert_eq!(q.state, Some(AlertState::Firing));
        assert_eq!(q.rule.as_deref(), Some("crm_accepts"));
        assert_eq!(q.severity, Some(Severity::Critical));
        assert_eq!(q.since_ns, Some(1_795_168_800_000_000_000));
        assert_eq!(q.until_ns, Some(1_795_172_400_000_000_000));
        assert_eq!(q.limit, 5);
        for (pairs, starts) in [
            (vec![("state", "open")], "state:"),
            (vec![("severity", "high")], "severity:"),
            (vec![("since", "today")], "since:"),
            (vec![("until", "today")], "until:"),
            (vec![("since", "2026-11-20T11:00:00Z"), ("until", "2026-11-20T10:00:00Z")], "until:"),
            (vec![("limit", "0")], "limit:"),
            (vec![("order", "A-1")], "order:"),
        ] {
            let error = parse(&pairs).unwrap_err().message();
            assert!(error.starts_with(starts), "{pairs:?}: {error}");
        }
    }

    #[test]
    fn an_alert_serializes_to_the_documented_shape() {
        let alert =
            OrderAlert { fired_at: 1_795_165_200_000_000_000, current_status: Some("new".into()), ..OrderAlert::firing_for_test("A-1001") };
        assert_eq!(
            serde_json::to_value(AlertBody::from(&alert)).unwrap(),
            serde_json::json!({"order_id": "A-1001", "monitor": "order_sla", "rule": "crm_accepts", "from": "new", "to": "accepted",
                "severity": "warning", "threshold_seconds": 900.0, "elapsed_seconds": 1260.0, "state": "firing",
                "fired_at": "2026-11-20T09:00:00.000000000Z", "resolved_at": null, "late_data": false, "current_status": "new"})
        );
    }
}
