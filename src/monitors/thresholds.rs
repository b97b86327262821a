//! The configured thresholds as readers see them: every `order_sla` rule's ends, threshold and
//! severity, and the statuses that end an order. The console's order page shows an order's
//! transitions against them; the monitors themselves run on `Engine`.

use std::collections::BTreeMap;
use std::time::Duration;

use super::MonitorConfig;
use crate::orders::Severity;

/// The statuses that end an order when no monitor names any.
pub const DEFAULT_TERMINAL: &[&str] = &["handed_to_courier", "cancelled"];

/// What one rule watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ThresholdEnds {
    /// From reaching status `from` until `to` or any status after it in the lifecycle
    /// (`satisfied_by`, `to` first).
    Status { from: String, to: String, satisfied_by: Vec<String> },
    /// From the first step of stage `from` until the first step of stage `to`.
    Stage { from: String, to: String },
}

/// One configured rule.
#[derive(Debug, Clone, PartialEq)]
pub struct ThresholdRule {
    /// The monitor's id (`monitors.<id>`).
    pub monitor: String,
    pub name: String,
    pub ends: ThresholdEnds,
    pub within: Duration,
    pub severity: Severity,
}

/// Every configured `order_sla` rule, and the statuses after which an order moves no more.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OrderThresholds {
    pub rules: Vec<ThresholdRule>,
    /// Each monitor's `terminal` statuses and the last status of its `lifecycle`; empty when
    /// no monitor is configured (see [`OrderThresholds::is_terminal`]).
    pub terminal: Vec<String>,
}

impl OrderThresholds {
    /// From the `monitors:` section (a rule that mixes statuses and stages is left out:
    /// validation refuses it anyway).
    pub fn from_monitors(monitors: &BTreeMap<String, MonitorConfig>) -> OrderThresholds {
        let mut out = OrderThresholds::default();
        for (id, monitor) in monitors {
            let MonitorConfig::OrderSla(c) = monitor;
            for status in c.terminal.iter().chain(c.lifecycle.last()) {
                if !out.terminal.contains(status) {
                    out.terminal.push(status.clone());
                }
            }
            for rule in &c.rules {
                let ends = match (&rule.from, &rule.to, &rule.from_stage, &rule.to_stage) {
                    (Some(from), Some(to), None, None) => {
                        let mut satisfied_by = vec![to.clone()];
                        if let Some(rank) = c.lifecycle.iter().position(|l| l == to) {
                            satisfied_by.extend(c.lifecycle[rank + 1..].iter().cloned());
                        }
                        ThresholdEnds::Status { from: from.clone(), to: to.clone(), satisfied_by }
                    }
                    (None, None, Some(from), Some(to)) => ThresholdEnds::Stage { from: from.clone(), to: to.clone() },
                    _ => continue,
                };
                out.rules.push(ThresholdRule {
                    monitor: id.clone(),
                    name: rule.name.clone(),
                    ends,
                    within: rule.within,
                    severity: rule.severity,
                });
            }
        }
        out
    }

    /// True when an order in `status` moves no more: a configured terminal status (or a
    /// lifecycle's last), else one of [`DEFAULT_TERMINAL`] when no monitor is configured.
    pub fn is_terminal(&self, status: &str) -> bool {
        if self.terminal.is_empty() {
            DEFAULT_TERMINAL.contains(&status)
        } else {
            self.terminal.iter().any(|t| t == status)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_and_terminal_statuses_come_from_every_order_sla_monitor() {
        let yaml = r#"
lifecycle: [new, accepted, in_production, manufactured, handed_to_courier]
terminal: [cancelled]
rules:
  - {name: production, from: accepted, to: in_production, within: 48h, severity: critical}
  - {name: bus_wait, from_stage: bus_publish, to_stage: bus_consume, within: 2m}
"#;
        let config: super::super::OrderSlaConfig = serde_yaml_ng::from_str(yaml).unwrap();
        let monitors = BTreeMap::from([("order_sla".to_string(), MonitorConfig::OrderSla(config))]);
        let t = OrderThresholds::from_monitors(&monitors);
        assert_eq!(t.terminal, vec!["cancelled", "handed_to_courier"]);
        assert_eq!(t.rules.len(), 2);
        assert_eq!(
            t.rules[0].ends,
            ThresholdEnds::Status {
                from: "accepted".into(),
                to: "in_production".into(),
                satisfied_by: vec!["in_production".into(), "manufactured".into(), "handed_to_courier".into()]
            }
        );
        assert_eq!(t.rules[0].within, Duration::from_secs(48 * 3600));
        assert_eq!(t.rules[0].severity, Severity::Critical);
        assert_eq!(t.rules[1].ends, ThresholdEnds::Stage { from: "bus_publish".into(), to: "bus_consume".into() });
        assert!(t.is_terminal("cancelled") && !t.is_terminal("manufactured"));
        let none = OrderThresholds::default();
        assert!(none.is_terminal("handed_to_courier") && none.is_terminal("cancelled") && !none.is_terminal("new"));
    }
}
