//! The embedded store: SQLite through rusqlite, written by the `embedded` exporter and read by
//! the `query` backends; orders are the `orders` domain's types.

mod orders;
mod spans;

pub use crate::shared::{format_rfc3339_nanos, parse_rfc3339};
pub use spans::{sort_attributes, string_attr, SpanStore, StoreError};

#[cfg(test)]
mod orders_tests;
