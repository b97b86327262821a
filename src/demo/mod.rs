//! `tracegate demo`: the quick start's data. It sends a few orders of the shop, as Shop, CRM and
//! MES would, to a running gateway, waits until each order can be read back, and prints the ids
//! and the commands to look them up.
//!
//! Each order is what `loadgen` generates for one order (the shop's trace, the CRM's trace joined
//! by a span link, the constructor upload joined by its file id), dated a minute or two before
//! now, followed by MES order events (`POST /v1/order-events`) that take it further. Because the
//! times are relative to now, the data is inside any store's retention whenever the demo runs.
//!
//! - `args`: the flags, and defaults that follow the built-in configuration's environment;
//! - `plan`: which orders, spans and MES events are sent;
//! - `run`: send, then wait until the read API (and Jaeger, when given) shows every order;
//! - `http`: the small HTTP client the waits and the events use;
//! - `report`: what is printed at the end.

mod args;
mod error;
mod http;
mod plan;
mod report;
mod run;

pub use args::DemoArgs;
pub use error::DemoError;
pub use report::{DemoOrder, DemoReport};
pub use run::run;
