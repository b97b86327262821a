//! What `tracegate demo` prints: the orders, and the commands that look them up.

use std::fmt;
use std::time::Duration;

use super::args::Endpoints;
use super::run::{jaeger_api_search, jaeger_ui_search};
use crate::loadgen::Protocol;

/// An order as the read API showed it at the end of the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoOrder {
    pub order_id: String,
    pub status: String,
    pub services: Vec<String>,
    pub traces: usize,
    pub timeline_events: usize,
    /// The trace in which the shop created the order.
    pub shop_trace_id: String,
}

/// The result of a demo run.
#[derive(Debug, Clone)]
pub struct DemoReport {
    pub protocol: Protocol,
    pub span_endpoint: String,
    pub(crate) endpoints: Endpoints,
    pub spans: usize,
    pub events: usize,
    pub orders: Vec<DemoOrder>,
    /// From the last request sent until every order was readable through the read API.
    pub readable_after: Duration,
    /// From the last request sent until Jaeger found every order (with `--jaeger-ui`).
    pub jaeger_after: Option<Duration>,
}

impl fmt::Display for DemoReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let transport = match self.protocol {
            Protocol::Grpc => "OTLP/gRPC",
            Protocol::Http => "OTLP/HTTP",
        };
        writeln!(
            f,
            "Sent {} orders: {} spans of shop-api, crm-api and mes-api over {transport} to {}, and {} MES order events to {}/v1/order-events.",
            self.orders.len(),
            self.spans,
            self.span_endpoint,
            self.events,
            self.endpoints.otlp_http
        )?;
        write!(f, "Readable through the read API ({}) after {:.1} s", self.endpoints.api, self.readable_after.as_secs_f64())?;
        match self.jaeger_after {
            Some(after) => writeln!(f, "; found in Jaeger by order.id after {:.1} s.", after.as_secs_f64())?,
            None => writeln!(f, ".")?,
        }
        writeln!(f)?;
        let width = self.orders.iter().map(|o| o.order_id.len()).max().unwrap_or(5).max(5);
        writeln!(f, "  {:width$}  {:17}  traces  timeline events  services", "order", "status")?;
        for o in &self.orders {
            writeln!(f, "  {:width$}  {:17}  {:6}  {:15}  {}", o.order_id, o.status, o.traces, o.timeline_events, o.services.join(", "))?;
        }
        writeln!(f)?;
        writeln!(f, "Open them in a browser (the support console):")?;
        for o in &self.orders {
            writeln!(f, "  {}", self.endpoints.console_url(&o.order_id))?;
        }
        writeln!(f)?;
        writeln!(f, "Look them up (the order's timeline; the trace in which the shop created it; the newest orders):")?;
        for o in &self.orders {
            writeln!(f, "  curl -s {}", self.endpoints.order_url(&o.order_id))?;
        }
        if let Some(first) = self.orders.first() {
            writeln!(f, "  curl -s {}/api/v1/traces/{}", self.endpoints.api, first.shop_trace_id)?;
        }
        writeln!(f, "  curl -s '{}/api/v1/orders?limit=10'", self.endpoints.api)?;
        if let Some(ui) = &self.endpoints.jaeger_ui {
            writeln!(f)?;
            writeln!(f, "In Jaeger UI (Search, service shop-api or crm-api, tags order.id=<id>):")?;
            for o in &self.orders {
                writeln!(f, "  {}", jaeger_ui_search(ui, "shop-api", &o.order_id))?;
            }
            if let Some(first) = self.orders.first() {
                writeln!(f, "Jaeger's query API, the same search:")?;
                writeln!(f, "  curl -s '{}'", jaeger_api_search(ui, "shop-api", &first.order_id))?;
            }
        }
        Ok(())
    }
}
