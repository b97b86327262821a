//! Lists of orders: what a list query asks for and what each row says.

/// One order in a list of orders.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderSummary {
    pub order_id: String,
    pub status: Option<String>,
    pub first_seen: u64,
    pub last_seen: u64,
    pub services: Vec<String>,
    pub span_count: u64,
}

/// Filters of the order list; every one optional, combined with AND.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderQuery {
    /// Orders whose current status is this.
    pub status: Option<String>,
    /// Orders with at least one span of this service.
    pub service: Option<String>,
    /// Orders last seen at or after this time.
    pub since_ns: Option<u64>,
    /// Orders first seen at or before this time.
    pub until_ns: Option<u64>,
    /// Orders with an alert in this state (`?alert=firing`).
    pub alert: Option<crate::orders::AlertState>,
    /// Keyset paging: only orders after this one in the list's order (last seen first, then
    /// order id), given as its (last seen, order id).
    pub after: Option<(u64, String)>,
    pub limit: usize,
}

impl Default for OrderQuery {
    fn default() -> Self {
        OrderQuery { status: None, service: None, since_ns: None, until_ns: None, alert: None, after: None, limit: 100 }
    }
}
