//! The `order_sla` monitor: thresholds on the time between two statuses (or stages) of an
//! order, per rule, within a lifecycle of statuses.

mod config;
mod deadlines;
mod engine;
#[cfg(test)]
mod tests;

pub use config::{OrderSlaConfig, RuleConfig, DEFAULT_GRACE_MARGIN, DEFAULT_REPEAT_INTERVAL};
pub use engine::{Change, Clock, Engine, Phase};
