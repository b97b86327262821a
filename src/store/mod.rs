//! The embedded store: SQLite through rusqlite, used by the `embedded` exporter and the read API.

mod spans;

pub use spans::{string_attr, SpanStore, StoreError};
