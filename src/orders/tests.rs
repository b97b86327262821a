//! The timeline assembly, whatever store the spans come from.

use super::*;

pub(crate) const T0: u64 = 1_795_165_200_000_000_000; // 2026-11-20T09:00:00Z
pub(crate) const SEC: u64 = 1_000_000_000;

pub(crate) fn order_span(id: u8, at: u64, stage: Option<&str>, status: Option<&str>) -> OrderSpan {
    OrderSpan {
        trace_id: vec![id; 16],
        span_id: vec![id; 8],
        parent_span_id: Vec::new(),
        step_key: String::new(),
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

#[test]
fn a_call_wrapped_twice_is_one_step() {
    let save = |id: u8, parent: Option<u8>, at: u64, statement: &str| OrderSpan {
        trace_id: vec![1; 16],
        span_id: vec![id; 8],
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
        step_key: step_key(|k| (k == "db.statement").then(|| statement.to_string())),
        service: Some("shop-api".into()),
        stage: Some("db_save".into()),
        ..order_span(id, at, None, None)
    };
    let outer = save(1, None, 0, "insert into orders values (?)");
    let inner = save(2, Some(1), 0, "insert into orders values (?)");
    let innermost = save(3, Some(2), 0, "insert into orders values (?)");
    // A nested write of something else is a step of its own.
    let other = save(4, Some(1), 1, "insert into order_lines values (?)");
    // A failed inner span under a healthy outer one stays visible.
    let mut failed = save(5, Some(4), 1, "insert into order_lines values (?)");
    failed.error = true;
    let t = OrderTimeline::assemble("A-1", vec![innermost, other, outer, inner, failed]).unwrap();
    let shown: Vec<u8> = t.events.iter().map(|e| hex::decode(&e.span_id).unwrap()[0]).collect();
    assert_eq!(shown, vec![1, 4, 5]);
}
