//! Configuration of the `order_sla` monitor: the order of statuses, the terminal ones, and the
//! rules on the time between two statuses (or two stages).

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::orders::Severity;
use crate::shared::Issues;

/// Where the enricher's wait is the default (5 s), spans of an order may reach the monitor that
/// much later than their event time, plus the exporter's batching: a deadline counts only
/// `grace` after it passed.
pub const DEFAULT_GRACE_MARGIN: Duration = Duration::from_secs(5);

/// Re-sent while firing, for receivers that only need to be reminded (e-mail, webhooks).
pub const DEFAULT_REPEAT_INTERVAL: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OrderSlaConfig {
    /// The statuses in the order an order passes them; reaching a later one satisfies a rule
    /// whose `to` was skipped.
    #[serde(default)]
    pub lifecycle: Vec<String>,
    /// Reaching one of these cancels the order's pending rules.
    #[serde(default)]
    pub terminal: Vec<String>,
    /// Pipeline delay allowed before a deadline counts; unset: the longest `wait` of the
    /// `order_enrich` processors plus [`DEFAULT_GRACE_MARGIN`] (see `Config`).
    #[serde(default, deserialize_with = "optional_positive", serialize_with = "optional_humantime")]
    pub grace: Option<Duration>,
    /// How often a firing alert is sent again (`Repeat`); Alertmanager notifiers get it at
    /// most every [`crate::monitors::ALERTMANAGER_REPEAT_INTERVAL`].
    #[serde(default = "default_repeat", deserialize_with = "positive", serialize_with = "humantime_serde::serialize")]
    pub repeat_interval: Duration,
    pub rules: Vec<RuleConfig>,
    /// Notifier ids (`notifiers:`) told about every alert of this monitor.
    #[serde(default)]
    pub notify: Vec<String>,
}

fn default_repeat() -> Duration {
    DEFAULT_REPEAT_INTERVAL
}

/// One threshold: `from` -> `to` within `within`, by status or by stage.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
    #[serde(default)]
    pub from_stage: Option<String>,
    #[serde(default)]
    pub to_stage: Option<String>,
    #[serde(deserialize_with = "positive", serialize_with = "humantime_serde::serialize")]
    pub within: Duration,
    #[serde(default = "default_severity", deserialize_with = "severity", serialize_with = "severity_name")]
    pub severity: Severity,
}

fn default_severity() -> Severity {
    Severity::Warning
}

fn severity<'de, D: Deserializer<'de>>(d: D) -> Result<Severity, D::Error> {
    let text = String::deserialize(d)?;
    Severity::parse(&text).ok_or_else(|| serde::de::Error::custom(format!("unknown severity {text:?}; known: info, warning, critical")))
}

fn severity_name<S: serde::Serializer>(s: &Severity, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(s.as_str())
}

/// A duration greater than zero; a negative one is named as such rather than as unparsable.
fn positive<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse_positive(&text).map_err(serde::de::Error::custom)
}

fn optional_positive<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = Option::<String>::deserialize(d)?;
    text.map(|t| parse_positive(&t)).transpose().map_err(serde::de::Error::custom)
}

fn optional_humantime<S: serde::Serializer>(d: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => humantime_serde::serialize(d, serializer),
        None => serializer.serialize_none(),
    }
}

/// A rule's duration that is not a positive duration (serde reports it with its path).
#[derive(Debug, thiserror::Error)]
enum DurationError {
    #[error("{0:?} is negative; a duration must be greater than 0 (e.g. 15m)")]
    Negative(String),
    #[error("{0:?} is zero; a duration must be greater than 0 (e.g. 15m)")]
    Zero(String),
    // The parser's reason is part of the message (not a `#[source]`): serde's `custom` keeps
    // only the text.
    #[error("{text:?} is not a duration ({reason}); write e.g. 90s, 15m or 48h")]
    Unreadable { text: String, reason: humantime::DurationError },
}

fn parse_positive(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    if text.starts_with('-') {
        return Err(DurationError::Negative(text.to_string()));
    }
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Err(DurationError::Zero(text.to_string())),
        Ok(d) => Ok(d),
        Err(reason) => Err(DurationError::Unreadable { text: text.to_string(), reason }),
    }
}

/// What a rule watches, once checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleKind {
    Status { from: String, to: String },
    Stage { from: String, to: String },
}

impl RuleConfig {
    /// `Status` or `Stage`; `None` when the rule mixes them or lacks an end (reported by
    /// `validate`).
    pub fn kind(&self) -> Option<RuleKind> {
        match (&self.from, &self.to, &self.from_stage, &self.to_stage) {
            (Some(f), Some(t), None, None) => Some(RuleKind::Status { from: f.clone(), to: t.clone() }),
            (None, None, Some(f), Some(t)) => Some(RuleKind::Stage { from: f.clone(), to: t.clone() }),
            _ => None,
        }
    }

    /// How the alert names its ends: the status, or `stage:NAME` for a stage rule.
    pub fn ends(&self) -> (String, String) {
        match self.kind() {
            Some(RuleKind::Status { from, to }) => (from, to),
            Some(RuleKind::Stage { from, to }) => (format!("stage:{from}"), format!("stage:{to}")),
            None => (String::new(), String::new()),
        }
    }
}

impl OrderSlaConfig {
    /// Checks the rules; `notifiers` are the ids defined under `notifiers:`.
    pub fn validate(&self, path: &str, notifiers: &[&str], issues: &mut Issues) {
        let known_status = |s: &str| self.lifecycle.iter().any(|l| l == s) || self.terminal.iter().any(|t| t == s);
        let mut seen = std::collections::HashSet::new();
        for (i, status) in self.lifecycle.iter().enumerate() {
            if status.trim().is_empty() {
                issues.push(format!("{path}.lifecycle[{i}]"), "must not be empty");
            } else if !seen.insert(status.as_str()) {
                issues.push(format!("{path}.lifecycle[{i}]"), format!("status {status:?} listed twice"));
            }
        }
        for (i, status) in self.terminal.iter().enumerate() {
            if self.lifecycle.contains(status) {
                issues.push(format!("{path}.terminal[{i}]"), format!("status {status:?} is also in lifecycle; a terminal status ends it"));
            }
        }
        if self.rules.is_empty() {
            issues.push(format!("{path}.rules"), "a monitor needs at least one rule");
        }
        let mut names = std::collections::HashSet::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let rp = format!("{path}.rules[{i}]");
            if rule.name.trim().is_empty() {
                issues.push(format!("{rp}.name"), "must not be empty");
            } else if !names.insert(rule.name.as_str()) {
                issues.push(format!("{rp}.name"), format!("rule {:?} defined twice in this monitor", rule.name));
            }
            match rule.kind() {
                Some(RuleKind::Status { from, to }) => {
                    for (key, status) in [("from", &from), ("to", &to)] {
                        if !known_status(status) {
                            let known: Vec<&str> = self.lifecycle.iter().chain(&self.terminal).map(String::as_str).collect();
                            issues.push(
                                format!("{rp}.{key}"),
                                format!(
                                    "unknown status {status:?}; statuses are those in lifecycle and terminal ({})",
                                    if known.is_empty() { "none defined".into() } else { known.join(", ") }
                                ),
                            );
                        }
                    }
                    if self.terminal.contains(&from) {
                        issues.push(format!("{rp}.from"), format!("{from:?} is terminal: nothing follows it"));
                    }
                    if from == to {
                        issues.push(format!("{rp}.to"), format!("equals from ({from:?}); a rule measures the time between two statuses"));
                    } else {
                        let rank = |s: &str| self.lifecycle.iter().position(|l| l == s);
                        if let (Some(f), Some(t)) = (rank(&from), rank(&to)) {
                            if f > t {
                                issues.push(
                                    format!("{rp}.from"),
                                    format!("{from:?} comes after {to:?} in lifecycle; the clock would never stop"),
                                );
                            }
                        }
                    }
                }
                Some(RuleKind::Stage { from, to }) => {
                    if from.trim().is_empty() {
                        issues.push(format!("{rp}.from_stage"), "must not be empty");
                    }
                    if from == to {
                        issues.push(format!("{rp}.to_stage"), format!("equals from_stage ({from:?})"));
                    }
                }
                None => {
                    issues.push(rp.clone(), "give either from and to (statuses) or from_stage and to_stage (stages), not a mix".to_string())
                }
            }
        }
        let mut listed = std::collections::HashSet::new();
        for (i, id) in self.notify.iter().enumerate() {
            if !notifiers.contains(&id.as_str()) {
                issues.push(
                    format!("{path}.notify[{i}]"),
                    format!(
                        "unknown notifier {id:?} (defined under notifiers: {})",
                        if notifiers.is_empty() { "none".into() } else { notifiers.join(", ") }
                    ),
                );
            }
            if !listed.insert(id) {
                issues.push(format!("{path}.notify[{i}]"), format!("notifier {id:?} listed twice"));
            }
        }
    }
}
