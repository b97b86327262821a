//! The embedded store: SQLite through rusqlite, written by the `embedded` exporter and read by
//! the `query` backends; orders are the `orders` domain's types.

mod orders;
mod spans;

pub use spans::{sort_attributes, SpanStore, StoreError};

#[cfg(test)]
mod orders_tests;
