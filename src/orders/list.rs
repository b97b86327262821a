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
    /// Service and stage of the order's last step (see [`OrderSpan::step_stage`]): where the
    /// order is now. `None` when no span of the order is a step; the stage is `None` too when the
    /// last step is a failed span without a stage.
    ///
    /// [`OrderSpan::step_stage`]: crate::orders::OrderSpan::step_stage
    pub current_service: Option<String>,
    pub current_stage: Option<String>,
    /// How many of the order's alerts are firing.
    pub firing_alerts: u64,
}

/// The order of a list of orders. Both sort by `last_seen` (the end of the order's latest span),
/// then by order id ascending to break ties, so keyset paging is exact.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OrderSort {
    /// Most recently active first (`last_seen` descending).
    #[default]
    NewestFirst,
    /// Longest waiting first: the order that has had no new span for the longest time first
    /// (`last_seen` ascending).
    LongestWaiting,
}

impl OrderSort {
    /// The word the read API and the console use (`sort=newest`, `sort=waiting`).
    pub fn as_str(self) -> &'static str {
        match self {
            OrderSort::NewestFirst => "newest",
            OrderSort::LongestWaiting => "waiting",
        }
    }

    pub fn parse(text: &str) -> Option<OrderSort> {
        match text {
            "newest" => Some(OrderSort::NewestFirst),
            "waiting" => Some(OrderSort::LongestWaiting),
            _ => None,
        }
    }
}

/// Filters of the order list; every one optional, combined with AND.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderQuery {
    /// Only the order with exactly this id.
    pub order_id: Option<String>,
    /// Orders whose id starts with this text (case-sensitive, no wildcards).
    pub id_prefix: Option<String>,
    /// Orders whose current status is this.
    pub status: Option<String>,
    /// Orders whose current status is none of these (orders without a status stay): the
    /// console's "in flight" list leaves out the finished ones.
    pub exclude_statuses: Vec<String>,
    /// Orders with at least one span of this service.
    pub service: Option<String>,
    /// Orders last seen at or after this time.
    pub since_ns: Option<u64>,
    /// Orders first seen at or before this time.
    pub until_ns: Option<u64>,
    /// Orders with an alert in this state (`?alert=firing`).
    pub alert: Option<crate::orders::AlertState>,
    /// Orders without any alert, firing or resolved (`?alert=none`).
    pub no_alerts: bool,
    pub sort: OrderSort,
    /// Keyset paging: only orders after this one in the list's order (`sort`), given as its
    /// (last seen, order id).
    pub after: Option<(u64, String)>,
    pub limit: usize,
}

impl Default for OrderQuery {
    fn default() -> Self {
        OrderQuery {
            order_id: None,
            id_prefix: None,
            status: None,
            exclude_statuses: Vec::new(),
            service: None,
            since_ns: None,
            until_ns: None,
            alert: None,
            no_alerts: false,
            sort: OrderSort::NewestFirst,
            after: None,
            limit: 100,
        }
    }
}
