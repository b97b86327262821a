//! What one demo run sends: the orders' spans and the MES events that move each order on.

use serde_json::json;

use crate::loadgen::{GeneratedOrder, TrafficGenerator};
use crate::shared::format_rfc3339_nanos;

const SECOND: u64 = 1_000_000_000;

/// How long before now the shop created the orders (the constructor uploads are minutes older).
const CREATED_AGO: u64 = 90 * SECOND;

/// What MES reports, in order, and how long before now; order *i* of a run gets the first
/// `len - i % len` of them, so each order of a run is at another step.
const MES_STEPS: [(&str, u64, &str); 3] =
    [("in_production", 60 * SECOND, "3"), ("manufactured", 30 * SECOND, "3"), ("handed_to_courier", 5 * SECOND, "dock-2")];

/// One order of the run.
#[derive(Debug, Clone)]
pub(crate) struct PlannedOrder {
    pub(crate) order: GeneratedOrder,
    /// The MES order events, JSON objects for `POST /v1/order-events`.
    pub(crate) events: Vec<serde_json::Value>,
    /// The status the order ends with.
    pub(crate) final_status: &'static str,
}

/// `count` orders with times relative to `now_unix_nanos`; `seed` picks ids and timings.
pub(crate) fn plan(count: usize, seed: u64, now_unix_nanos: u64) -> Vec<PlannedOrder> {
    let mut generator = TrafficGenerator::new(seed, now_unix_nanos.saturating_sub(CREATED_AGO));
    (0..count)
        .map(|i| {
            let order = generator.order();
            let steps = &MES_STEPS[..MES_STEPS.len() - i % MES_STEPS.len()];
            let events = steps
                .iter()
                .map(|(status, ago, place)| {
                    let place_key = if *status == "handed_to_courier" { "mes.dock" } else { "mes.line" };
                    json!({
                        "order_id": order.order_id,
                        "service": "mes-api",
                        "status": status,
                        "time": format_rfc3339_nanos(now_unix_nanos.saturating_sub(*ago)),
                        "attributes": {place_key: place},
                    })
                })
                .collect();
            // `steps` is never empty: it keeps at least one of MES_STEPS.
            let final_status = steps.last().map_or("accepted", |(status, _, _)| status);
            PlannedOrder { order, events, final_status }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_763_700_000_000_000_000;

    #[test]
    fn each_order_is_one_step_behind_the_previous_one() {
        let orders = plan(4, 9, NOW);
        let finals: Vec<&str> = orders.iter().map(|o| o.final_status).collect();
        assert_eq!(finals, ["handed_to_courier", "manufactured", "in_production", "handed_to_courier"]);
        assert_eq!(orders.iter().map(|o| o.events.len()).collect::<Vec<_>>(), [3, 2, 1, 3]);
        let ids: std::collections::HashSet<&str> = orders.iter().map(|o| o.order.order_id.as_str()).collect();
        assert_eq!(ids.len(), 4, "distinct order ids");
        for o in &orders {
            assert!(o.order.order_id.starts_with("A-"));
            assert_eq!(o.order.trace_ids.len(), 3, "shop, CRM and constructor traces");
            assert!(o.events.iter().all(|e| e["order_id"] == o.order.order_id.as_str() && e["service"] == "mes-api"));
        }
    }

    #[test]
    fn every_time_is_before_now_and_after_the_order_was_created() {
        for o in plan(3, 1, NOW) {
            let spans: Vec<_> = o.order.request.resource_spans.iter().flat_map(|rs| &rs.scope_spans).flat_map(|ss| &ss.spans).collect();
            assert_eq!(spans.len(), 10);
            assert!(spans.iter().all(|s| s.end_time_unix_nano < NOW - 60 * SECOND), "spans end before the first MES step");
            assert!(spans.iter().all(|s| s.start_time_unix_nano > NOW - 20 * 60 * SECOND), "within minutes of now");
            let mut previous = 0;
            for event in &o.events {
                let time = crate::shared::parse_rfc3339(event["time"].as_str().unwrap()).unwrap();
                assert!(time > previous && time < NOW);
                previous = time;
            }
        }
    }
}
