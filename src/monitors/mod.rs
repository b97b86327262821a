//! Order monitors: rules on the time between an order's statuses, checked by the clock (a stuck
//! order is found without waiting for its next span), judged by event time, persisted in the
//! embedded store, announced through the notifiers. Each monitor kind is a folder owning its
//! configuration and state machine; this file is the registry (`MonitorConfig`).
//!
//! The data path: every pipeline shows its processed batches to the [`MonitorFeed`] (a
//! `pipeline::SpanObserver`), which picks the order facts out and adds them to a bounded
//! queue ([`FactQueue`]) that the one monitor task empties each turn ([`Monitors`]); that task owns every clock, fires deadlines,
//! writes the store and hands notices to one delivery task per notifier. See docs/monitors.md.

pub mod bench;
mod feed;
mod known;
mod order_sla;
mod service;
mod shared;
mod thresholds;

use std::time::Duration;

pub use feed::{FactQueue, MonitorFeed};
pub use order_sla::{Clock, Engine, OrderSlaConfig, Phase, RuleConfig as OrderSlaRule, DEFAULT_GRACE_MARGIN, DEFAULT_REPEAT_INTERVAL};
pub use service::{MonitorStartError, MonitorStore, Monitors, FACT_QUEUE_FACTS};
pub use thresholds::{OrderThresholds, ThresholdEnds, ThresholdRule, DEFAULT_TERMINAL};

use crate::shared::Issues;

/// Alertmanager forgets an alert not re-sent within its `resolve_timeout` (5 minutes by
/// default), so firing alerts go to Alertmanager notifiers at least this often, whatever the
/// monitor's `repeat_interval`.
pub const ALERTMANAGER_REPEAT_INTERVAL: Duration = Duration::from_secs(120);

/// One monitor's configuration, by kind: the monitors' registry (the configuration reads each
/// `monitors.<id>` into one of these).
#[derive(Debug, Clone)]
pub enum MonitorConfig {
    OrderSla(OrderSlaConfig),
}

impl MonitorConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            MonitorConfig::OrderSla(_) => "order_sla",
        }
    }

    /// `notifiers` are the ids defined under `notifiers:`.
    pub fn validate(&self, path: &str, notifiers: &[&str], issues: &mut Issues) {
        match self {
            MonitorConfig::OrderSla(c) => c.validate(path, notifiers, issues),
        }
    }

    /// The notifier ids this monitor tells.
    pub fn notify(&self) -> &[String] {
        match self {
            MonitorConfig::OrderSla(c) => &c.notify,
        }
    }
}

/// An order id, status, stage or service name in a [`Fact`]: held inline up to 24 bytes (every
/// name the shop uses), so that facts cost no allocation on the request threads and no free on
/// the monitor's, and share no reference count between them.
pub type Name = compact_str::CompactString;

/// What one span says about its order, as the monitors need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fact {
    pub order_id: Name,
    pub status: Option<Name>,
    pub stage: Option<Name>,
    pub service: Option<Name>,
    /// Event time: the span's start, Unix nanoseconds.
    pub time_ns: u64,
}
