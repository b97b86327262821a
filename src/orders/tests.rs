//! The timeline assembly, whatever store the spans come from.

use super::*;

pub(crate) const T0: u64 = 1_795_165_200_000_000_000; // 2026-11-20T09:00:00Z
pub(crate) const SEC: u64 = 1_000_000_000;

pub(crate) fn order_span(id: u8, at: u64, stage: Option<&str>, status: Option<&str>) -> OrderSpan {
    OrderSpan {
        trace_id: vec![id; 16],
        span_id: vec![id; 8],
        service: Some(format!("svc-{id}")),
        name: format!("span {id}"),
        start_ns: T0 + at * SEC,
        end_ns: T0 + at * SEC + 2_500_000,
        stage: stage.map(String::from),
        status: status.map(String::from),
        error: false,
        linked: false,
    }
}

#[test]
fn assembly_orders_events_and_walks_transitions() {
    let mut failed = order_span(4, 30, None, None);
    failed.error = true;
    let mut linked = order_span(9, 1, None, None);
    linked.linked = true;
    let spans = vec![
        order_span(3, 60, Some("status_change"), Some("accepted")),
        order_span(5, 90, Some("status_change"), Some("accepted")), // a repeat: no transition
        failed,
        order_span(1, 10, Some("created"), Some("new")),
        order_span(6, 100, None, None), // no stage, no error: not an event
        order_span(7, 130, Some("bus_publish"), None),
        order_span(8, 160, None, Some("in_production")), // a status without a stage is a status change
        linked,
    ];
    let t = OrderTimeline::assemble("A-1001", spans).unwrap();
    let order: Vec<(&str, Option<&str>, Option<&str>)> =
        t.events.iter().map(|e| (e.span_name.as_str(), e.stage.as_deref(), e.status.as_deref())).collect();
    assert_eq!(
        order,
        [
            ("span 9", Some("file_link"), None),
            ("span 1", Some("created"), Some("new")),
            ("span 4", None, None),
            ("span 3", Some("status_change"), Some("accepted")),
            ("span 5", Some("status_change"), Some("accepted")),
            ("span 7", Some("bus_publish"), None),
            ("span 8", Some("status_change"), Some("in_production")),
        ]
    );
    assert!(t.events[2].error);
    assert_eq!(t.events[1].duration_ms, 2.5);
    assert_eq!(t.events[1].trace_id, "01".repeat(16));
    assert_eq!(t.events[1].span_id, "01".repeat(8));
    assert_eq!(
        t.transitions,
        [
            StatusTransition { from: "new".into(), to: "accepted".into(), seconds: 50.0 },
            StatusTransition { from: "accepted".into(), to: "in_production".into(), seconds: 100.0 },
        ]
    );
    assert_eq!(t.status.as_deref(), Some("in_production"));
    assert_eq!(t.first_seen, T0 + SEC);
    assert_eq!(t.last_seen, T0 + 160 * SEC + 2_500_000);
    assert_eq!(t.services.len(), 8);
    assert_eq!(t.trace_ids.len(), 8);
    assert!(OrderTimeline::assemble("A-1", vec![]).is_none());
}
