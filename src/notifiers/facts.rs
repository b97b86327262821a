//! The facts of a notice, written once for every notifier: the JSON object (webhook body, dead
//! letters), the one-line summary and the plain-text lines (Alertmanager annotations, e-mail).
//!
//! Only what the alert carries goes out: order id, rule, statuses, service and stage. Never a
//! span attribute, so no personal data leaves in a notice.

use serde_json::{json, Value};

use super::{Notice, NoticeKind};
use crate::orders::{AlertState, OrderAlert};
use crate::shared::format_rfc3339_nanos;

impl NoticeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::Fired => "fired",
            NoticeKind::Resolved => "resolved",
            NoticeKind::Repeat => "repeat",
        }
    }
}

/// `{monitor}/{rule}/{order_id}/{kind}`: one alert fires and resolves once, so a receiver that
/// has seen this id has seen this notice (repeats of one firing alert share theirs).
pub fn idempotency_id(notice: &Notice) -> String {
    let a = &notice.alert;
    format!("{}/{}/{}/{}", a.monitor, a.rule, a.order_id, notice.kind.as_str())
}

/// The notice as the webhook sends it (documented in docs/notifiers.md; field names are a
/// contract).
pub fn notice_json(notice: &Notice) -> Value {
    let a = &notice.alert;
    json!({
        "id": idempotency_id(notice),
        "kind": notice.kind.as_str(),
        "state": a.state.as_str(),
        "order_id": a.order_id,
        "monitor": a.monitor,
        "rule": a.rule,
        "from": a.from,
        "to": a.to,
        "severity": a.severity.as_str(),
        "threshold_seconds": a.threshold_seconds,
        "elapsed_seconds": a.elapsed_seconds,
        "fired_at": format_rfc3339_nanos(a.fired_at),
        "resolved_at": a.resolved_at.map(format_rfc3339_nanos),
        "late_data": a.late_data,
        "current_status": a.current_status,
        "last_event": a.last_event.as_ref().map(|e| json!({
            "service": e.service,
            "stage": e.stage,
            "time": format_rfc3339_nanos(e.time),
        })),
        "link": notice.link,
    })
}

/// `FIRING`, `RESOLVED` or `STILL FIRING`, for subjects and summaries.
pub fn headline(notice: &Notice) -> &'static str {
    match (notice.kind, notice.alert.state) {
        (NoticeKind::Resolved, _) | (_, AlertState::Resolved) => "RESOLVED",
        (NoticeKind::Fired, AlertState::Firing) => "FIRING",
        (NoticeKind::Repeat, AlertState::Firing) => "STILL FIRING",
    }
}

/// `order A-1001 took too long from new to accepted (21m > 15m, rule crm_accepts)`.
pub fn summary(alert: &OrderAlert) -> String {
    let elapsed = seconds(alert.elapsed_seconds);
    let threshold = seconds(alert.threshold_seconds);
    match (alert.state, alert.late_data) {
        (AlertState::Firing, _) => format!(
            "order {} has not gone from {} to {} within {threshold} ({elapsed} so far, rule {})",
            alert.order_id, alert.from, alert.to, alert.rule
        ),
        (AlertState::Resolved, true) => format!(
            "order {} went from {} to {} in {elapsed}, within {threshold}; its data arrived late (rule {})",
            alert.order_id, alert.from, alert.to, alert.rule
        ),
        (AlertState::Resolved, false) => format!(
            "order {} went from {} to {} in {elapsed} (threshold {threshold}, rule {})",
            alert.order_id, alert.from, alert.to, alert.rule
        ),
    }
}

/// `key: value` lines of every fact, for an e-mail body or an annotation.
pub fn lines(notice: &Notice) -> Vec<(&'static str, String)> {
    let a = &notice.alert;
    let mut out = vec![
        ("Order", a.order_id.clone()),
        ("Rule", format!("{} (monitor {})", a.rule, a.monitor)),
        ("Transition", format!("{} -> {}", a.from, a.to)),
        ("Severity", a.severity.as_str().to_string()),
        ("Threshold", seconds(a.threshold_seconds)),
        ("Elapsed", seconds(a.elapsed_seconds)),
        ("State", a.state.as_str().to_string()),
        ("Current status", a.current_status.clone().unwrap_or_else(|| "unknown".into())),
        ("Fired at", format_rfc3339_nanos(a.fired_at)),
    ];
    if let Some(at) = a.resolved_at {
        out.push(("Resolved at", format_rfc3339_nanos(at)));
    }
    if a.late_data {
        out.push(("Late data", "yes: the order was on time, its spans arrived after the deadline".into()));
    }
    match &a.last_event {
        Some(e) => out.push((
            "Last event",
            format!(
                "{} at {} ({})",
                e.stage.as_deref().unwrap_or("unknown stage"),
                format_rfc3339_nanos(e.time),
                e.service.as_deref().unwrap_or("unknown service")
            ),
        )),
        None => out.push(("Last event", "none recorded".into())),
    }
    if let Some(link) = &notice.link {
        out.push(("Link", link.clone()));
    }
    out
}

/// Seconds as people read them: `45s`, `15m`, `21m 30s`, `2h 5m`, `1d 3h`.
pub fn seconds(value: f64) -> String {
    if !value.is_finite() || value < 0.0 {
        return format!("{value}s");
    }
    if value < 60.0 {
        let text = format!("{value:.1}");
        return format!("{}s", text.trim_end_matches(".0"));
    }
    let total = value.round() as u64;
    let (d, h, m, s) = (total / 86_400, total / 3600 % 24, total / 60 % 60, total % 60);
    let parts: Vec<String> = [(d, "d"), (h, "h"), (m, "m"), (s, "s")]
        .iter()
        .skip_while(|(n, _)| *n == 0)
        .take(2)
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_people_write_them() {
        assert_eq!(seconds(2.0), "2s");
        assert_eq!(seconds(2.5), "2.5s");
        assert_eq!(seconds(900.0), "15m");
        assert_eq!(seconds(1290.0), "21m 30s");
        assert_eq!(seconds(7500.0), "2h 5m");
        assert_eq!(seconds(97_200.0), "1d 3h");
        assert_eq!(seconds(86_400.0 + 30.0), "1d");
    }
}
