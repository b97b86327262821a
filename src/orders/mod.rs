//! The order domain: what the spans say about business orders, with no storage and no wire
//! format. A timeline is assembled here from an order's spans (`OrderTimeline::assemble`), the
//! same way for every store; the stores find the spans, the read API writes the JSON.

mod alert;
mod list;
mod timeline;

pub use alert::{AlertState, LastEvent, OrderAlert, Severity};
pub use list::{OrderQuery, OrderSort, OrderSummary};
pub use timeline::{step_key, OrderSpan, OrderTimeline, StatusTransition, TimelineEvent, FILE_LINK_STAGE, STEP_KEY_ATTRIBUTES};

#[cfg(test)]
pub(crate) mod tests;
