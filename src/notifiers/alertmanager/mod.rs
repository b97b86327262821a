//! The `alertmanager` notifier: Alertmanager's v2 API, `POST {endpoint}/api/v2/alerts` with a
//! JSON array of one alert. Every configured endpoint gets it (an HA cluster deduplicates what
//! its members receive); the notice is delivered when at least one accepted it.
//!
//! Alertmanager identifies an alert by its label set, so the labels hold only what does not
//! change between firing and resolution of one alert; the rest goes into annotations.

mod config;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Uri};
use serde_json::{json, Map, Value};

pub use config::{AlertmanagerConfig, BasicAuth};

use super::facts;
use super::http::HttpClient;
use super::{Notice, NoticeKind, NotifierSetupError, NotifyError};
use crate::orders::AlertState;
use crate::shared::{format_rfc3339_nanos, now_unix_nanos};

pub struct AlertmanagerNotifier {
    endpoints: Vec<Uri>,
    headers: HeaderMap,
    alertname: String,
    client: HttpClient,
}

impl AlertmanagerNotifier {
    pub fn new(config: &AlertmanagerConfig) -> Result<AlertmanagerNotifier, NotifierSetupError> {
        let mut endpoints = Vec::with_capacity(config.endpoints.len());
        for endpoint in &config.endpoints {
            let url = format!("{}/api/v2/alerts", endpoint.trim_end_matches('/'));
            endpoints.push(super::tls::http_url(&url)?);
        }
        if endpoints.is_empty() {
            return Err(NotifierSetupError::NoEndpoints);
        }
        let mut headers = HeaderMap::new();
        let authorization = match (&config.basic_auth, &config.bearer_token) {
            (Some(basic), _) => {
                use base64::Engine;
                let pair = format!("{}:{}", basic.username, basic.password);
                Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair)))
            }
            (None, Some(token)) => Some(format!("Bearer {token}")),
            (None, None) => None,
        };
        if let Some(value) = authorization {
            let mut value = HeaderValue::from_str(&value).map_err(|_| NotifierSetupError::Credentials)?;
            value.set_sensitive(true);
            headers.insert(http::header::AUTHORIZATION, value);
        }
        let client = HttpClient::new(config.tls.ca_file.as_deref(), config.timeout)?;
        Ok(AlertmanagerNotifier { endpoints, headers, alertname: config.alertname.clone(), client })
    }

    /// One attempt: every endpoint at once; success when one accepted. When none did, the error
    /// is retryable if any endpoint's was.
    pub async fn send(&self, notice: &Notice) -> Result<(), NotifyError> {
        let body = Bytes::from(Value::Array(vec![alert_json(&self.alertname, notice, now_unix_nanos())]).to_string());
        let sends = self.endpoints.iter().map(|uri| self.client.post_json(uri, &self.headers, body.clone()));
        let results = join_all(sends).await;
        let mut errors = Vec::new();
        let mut retryable = false;
        let mut accepted = 0;
        for (uri, result) in self.endpoints.iter().zip(results) {
            match result {
                Ok(()) => accepted += 1,
                Err(e) => {
                    retryable |= matches!(e, NotifyError::Retryable(_));
                    tracing::debug!(endpoint = %uri, error = %e, "an Alertmanager did not take the alert");
                    errors.push(e.to_string());
                }
            }
        }
        if accepted > 0 {
            if !errors.is_empty() {
                tracing::warn!(accepted, failed = errors.len(), errors = %errors.join("; "), "some Alertmanagers did not take the alert");
            }
            return Ok(());
        }
        let message = errors.join("; ");
        Err(if retryable { NotifyError::Retryable(message) } else { NotifyError::Permanent(message) })
    }
}

/// Runs the futures concurrently and returns their outputs in order (a handful of endpoints:
/// no need for a futures crate).
async fn join_all<F: std::future::Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut set: Vec<_> = futures.map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if out[i].is_some() {
                continue;
            }
            match f.as_mut().poll(cx) {
                std::task::Poll::Ready(v) => out[i] = Some(v),
                std::task::Poll::Pending => pending = true,
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

/// One alert as Alertmanager's `postableAlert`.
///
/// Labels (the alert's identity, the same from firing to resolution): `alertname`, `monitor`,
/// `rule`, `order_id`, `severity`, and `service` (the last event's service when the alert fired).
/// The last event's service now is the annotation `last_service`. `startsAt` is when the alert fired; a resolved alert carries `endsAt`
/// (its resolution, not later than now), a firing one none, so Alertmanager keeps it for its
/// `resolve_timeout` after each (re-)send.
pub fn alert_json(alertname: &str, notice: &Notice, now: u64) -> Value {
    let a = &notice.alert;
    let mut labels = Map::new();
    labels.insert("alertname".into(), json!(alertname));
    labels.insert("monitor".into(), json!(a.monitor));
    labels.insert("rule".into(), json!(a.rule));
    labels.insert("order_id".into(), json!(a.order_id));
    labels.insert("severity".into(), json!(a.severity.as_str()));
    // The service the alert fired with, not the last event's: that one changes while the alert
    // fires (a repeat) and when it resolves (the event that reached `to`), and a changed label
    // would make a different alert for Alertmanager, so the resolution would not resolve it.
    if let Some(service) = a.service.as_deref().filter(|s| !s.is_empty()) {
        labels.insert("service".into(), json!(service));
    }
    let mut annotations = Map::new();
    if let Some(service) = a.last_event.as_ref().and_then(|e| e.service.as_deref()).filter(|s| !s.is_empty()) {
        annotations.insert("last_service".into(), json!(service));
    }
    annotations.insert("summary".into(), json!(facts::summary(a)));
    let description: Vec<String> = facts::lines(notice).into_iter().map(|(k, v)| format!("{k}: {v}")).collect();
    annotations.insert("description".into(), json!(description.join("\n")));
    annotations.insert("from".into(), json!(a.from));
    annotations.insert("to".into(), json!(a.to));
    annotations.insert("threshold".into(), json!(facts::seconds(a.threshold_seconds)));
    annotations.insert("threshold_seconds".into(), json!(a.threshold_seconds.to_string()));
    annotations.insert("elapsed".into(), json!(facts::seconds(a.elapsed_seconds)));
    annotations.insert("elapsed_seconds".into(), json!(a.elapsed_seconds.to_string()));
    if let Some(status) = &a.current_status {
        annotations.insert("current_status".into(), json!(status));
    }
    if let Some(e) = &a.last_event {
        if let Some(stage) = &e.stage {
            annotations.insert("last_stage".into(), json!(stage));
        }
        annotations.insert("last_event_time".into(), json!(format_rfc3339_nanos(e.time)));
    }
    if a.late_data {
        annotations.insert("late_data".into(), json!("true"));
    }
    if let Some(link) = &notice.link {
        annotations.insert("link".into(), json!(link));
    }
    let mut alert = Map::new();
    alert.insert("labels".into(), Value::Object(labels));
    alert.insert("annotations".into(), Value::Object(annotations));
    alert.insert("startsAt".into(), json!(format_rfc3339_nanos(a.fired_at)));
    if notice.kind == NoticeKind::Resolved || a.state == AlertState::Resolved {
        let ends = a.resolved_at.unwrap_or(now).min(now).max(a.fired_at);
        alert.insert("endsAt".into(), json!(format_rfc3339_nanos(ends)));
    }
    if let Some(link) = &notice.link {
        alert.insert("generatorURL".into(), json!(link));
    }
    Value::Object(alert)
}
