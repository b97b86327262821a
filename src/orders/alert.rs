//! Order alerts: a monitor rule's verdict on one order. Domain values only; the monitors
//! (`monitors/`) compute and persist them, the notifiers (`notifiers/`) announce them, the read
//! API writes them as JSON.

/// Whether an alert still holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertState {
    Firing,
    Resolved,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        }
    }
}

/// How urgent a rule is (`severity` in the configuration; `warning` by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(text: &str) -> Option<Severity> {
        match text {
            "info" => Some(Severity::Info),
            "warning" => Some(Severity::Warning),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

#[cfg(test)]
impl OrderAlert {
    /// A firing `crm_accepts` alert of `order_id` (15 minutes allowed, 21 taken), for tests.
    pub fn firing_for_test(order_id: &str) -> OrderAlert {
        OrderAlert {
            order_id: order_id.into(),
            monitor: "order_sla".into(),
            rule: "crm_accepts".into(),
            from: "new".into(),
            to: "accepted".into(),
            severity: Severity::Warning,
            threshold_seconds: 900.0,
            elapsed_seconds: 1260.0,
            state: AlertState::Firing,
            fired_at: 1,
            resolved_at: None,
            late_data: false,
            current_status: None,
            last_event: None,
            service: None,
        }
    }
}

/// The most recent step of the order when the alert was computed.
#[derive(Debug, Clone, PartialEq)]
pub struct LastEvent {
    pub service: Option<String>,
    pub stage: Option<String>,
    /// Event time, Unix nanoseconds.
    pub time: u64,
}

/// One alert: exactly one per (order, monitor, rule).
#[derive(Debug, Clone, PartialEq)]
pub struct OrderAlert {
    pub order_id: String,
    /// The monitor's id in the configuration.
    pub monitor: String,
    pub rule: String,
    /// The status (or `stage:NAME` for a stage rule) that started the clock, and the one that
    /// satisfies it.
    pub from: String,
    pub to: String,
    pub severity: Severity,
    pub threshold_seconds: f64,
    /// From the `from` event to the `to` event (resolved), or to when the alert fired (firing).
    pub elapsed_seconds: f64,
    pub state: AlertState,
    /// Wall clock, Unix nanoseconds.
    pub fired_at: u64,
    pub resolved_at: Option<u64>,
    /// Resolved because spans arrived after the deadline whose event time was within the
    /// threshold: the order was on time, the data was late.
    pub late_data: bool,
    /// The order's status when the alert was computed.
    pub current_status: Option<String>,
    pub last_event: Option<LastEvent>,
    /// The service of the order's last event when the alert fired, kept for the alert's life
    /// (Alertmanager's `service` label: an alert's labels must not change until it resolves).
    pub service: Option<String>,
}
