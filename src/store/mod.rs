//! The embedded store: SQLite through rusqlite, written by the `embedded` exporter and read by
//! the `query` backends; orders are the `orders` domain's types.

mod monitors;
mod orders;
mod search;
mod sessions;
mod spans;

pub use monitors::{alert_from_value, alert_value, AlertQuery, ClockRow, MonitorWrite, OrderClocks, OutboxPage, OutboxRow};
pub use search::{jaeger_service_name, FoundSpan, SpanFilter};
pub use spans::{sort_attributes, SpanStore, StoreError};

#[cfg(test)]
mod orders_tests;
