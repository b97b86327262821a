//! The embedded store: SQLite through rusqlite, used by the `embedded` exporter and the read API.

mod orders;
mod spans;
mod time;

pub use orders::{OrderQuery, OrderSpan, OrderSummary, OrderTimeline, StatusTransition, TimelineEvent, FILE_LINK_STAGE};
pub use spans::{sort_attributes, string_attr, SpanStore, StoreError};
pub use time::{format_rfc3339_nanos, parse_rfc3339};

#[cfg(test)]
mod orders_tests;
