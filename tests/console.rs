//! The support console's pages over HTTP (issue 17): a real gateway with bearer authentication
//! and the embedded store, data sent over OTLP/HTTP and order events, pages read with real
//! HTTP requests. The real browser's walk through the same pages is tests/console_browser.rs.
//!
//! One module per page; `support` starts the gateway and reads pages.

mod common;
#[path = "common/auth.rs"]
mod fixture;

#[path = "console/admin.rs"]
mod admin;
#[path = "console/door.rs"]
mod door;
#[path = "console/order.rs"]
mod order;
#[path = "console/orders.rs"]
mod orders;
#[path = "console/security.rs"]
mod security;
#[path = "console/support.rs"]
mod support;
#[path = "console/trace.rs"]
mod trace;
