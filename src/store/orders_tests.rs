//! Tests of order timelines and summaries: assembly from spans, and the store's correlation join,
//! summary upkeep, list filters, retention and schema migration.

use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValueKind;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{status::StatusCode, ResourceSpans, ScopeSpans, Span, Status};

use super::orders::{list_sql, ORDER_SPANS};
use super::*;
use crate::orders::{OrderQuery, OrderSort, OrderSummary, StatusTransition};
use crate::pipeline::Payload;

const T0: u64 = 1_795_165_200_000_000_000; // 2026-11-20T09:00:00Z
const SEC: u64 = 1_000_000_000;

fn keys() -> Vec<String> {
    vec!["constructor.file_id".into(), "file.id".into()]
}

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue { key: k.into(), value: Some(AnyValue { value: Some(AnyValueKind::StringValue(v.into())) }), ..Default::default() }
}

/// A span of `service` at `T0 + at` seconds lasting `ms` milliseconds, with attributes.
fn span(trace: u8, id: u8, at: u64, ms: u64, name: &str, attrs: &[(&str, &str)]) -> Span {
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![id; 8],
        name: name.into(),
        start_time_unix_nano: T0 + at * SEC,
        end_time_unix_nano: T0 + at * SEC + ms * 1_000_000,
        attributes: attrs.iter().map(|(k, v)| kv(k, v)).collect(),
        ..Default::default()
    }
}

fn payload(service: &str, spans: Vec<Span>) -> Payload {
    Payload::new(vec![ResourceSpans {
        resource: Some(Resource { attributes: vec![kv("service.name", service)], ..Default::default() }),
        scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
        ..Default::default()
    }])
}

#[test]
fn a_file_saved_before_its_order_joins_the_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = SpanStore::open(dir.path(), &keys()).unwrap();
    // The constructor saves a file; no order exists yet.
    let file = payload("shop-api", vec![span(1, 1, 0, 5, "save constructor file", &[("constructor.file_id", "F-7")])]);
    // An unrelated file that never joins.
    let other = payload("shop-api", vec![span(2, 2, 1, 5, "save other file", &[("constructor.file_id", "F-8")])]);
    store.insert(&[&file, &other]).unwrap();
    assert!(store.order_timeline("A-1001").unwrap().is_none());

    // The order is created and names the file (by the second key).
    let created = payload(
        "shop-api",
        vec![span(
            3,
            3,
            60,
            12,
            "POST /orders",
            &[("order.id", "A-1001"), ("order.stage", "created"), ("order.status", "new"), ("file.id", "F-7")],
        )],
    );
    let accepted = payload(
        "crm-api",
        vec![span(4, 4, 120, 3, "accept", &[("order.id", "A-1001"), ("order.stage", "status_change"), ("order.status", "accepted")])],
    );
    store.insert(&[&created, &accepted]).unwrap();
    // A later span of the same file, still without an order id.
    let preview = payload("shop-api", vec![span(5, 5, 150, 1, "render preview", &[("constructor.file_id", "F-7")])]);
    store.insert(&[&preview]).unwrap();

    let t = store.order_timeline("A-1001").unwrap().unwrap();
    let events: Vec<(&str, Option<&str>)> = t.events.iter().map(|e| (e.span_name.as_str(), e.stage.as_deref())).collect();
    assert_eq!(
        events,
        [
            ("save constructor file", Some("file_link")),
            ("POST /orders", Some("created")),
            ("accept", Some("status_change")),
            ("render preview", Some("file_link"))
        ]
    );
    assert_eq!(t.first_seen, T0);
    assert_eq!(t.services, ["crm-api", "shop-api"]);
    assert_eq!(t.trace_ids, [hex::encode([1; 16]), hex::encode([3; 16]), hex::encode([4; 16]), hex::encode([5; 16])]);
    assert_eq!(t.status.as_deref(), Some("accepted"));
    assert_eq!(t.transitions, [StatusTransition { from: "new".into(), to: "accepted".into(), seconds: 60.0 }]);

    // The summary agrees with the timeline, including the linked spans.
    let page = store.orders(&OrderQuery::default()).unwrap();
    assert_eq!(
        page,
        [OrderSummary {
            order_id: "A-1001".into(),
            status: Some("accepted".into()),
            first_seen: T0,
            last_seen: T0 + 150 * SEC + 1_000_000,
            services: vec!["crm-api".into(), "shop-api".into()],
            span_count: 4,
            current_service: Some("shop-api".into()),
            current_stage: Some("file_link".into()),
            firing_alerts: 0,
        }]
    );
}

#[test]
fn list_filters_sorts_and_limits() {
    let dir = tempfile::tempdir().unwrap();
    let store = SpanStore::open(dir.path(), &keys()).unwrap();
    let a = payload(
        "shop-api",
        vec![
            span(1, 1, 0, 1, "a new", &[("order.id", "A-1"), ("order.status", "new")]),
            span(1, 2, 100, 1, "a acc", &[("order.id", "A-1"), ("order.status", "accepted")]),
        ],
    );
    let b = payload("crm-api", vec![span(2, 1, 50, 1, "b acc", &[("order.id", "B-2"), ("order.status", "accepted")])]);
    let c = payload("mes-api", vec![span(3, 1, 200, 1, "c", &[("order.id", "C-3")])]);
    // Re-delivery and out-of-order arrival change nothing.
    store.insert(&[&c, &b, &a, &a]).unwrap();
    let ids = |q: OrderQuery| store.orders(&q).unwrap().into_iter().map(|s| s.order_id).collect::<Vec<_>>();
    assert_eq!(ids(OrderQuery::default()), ["C-3", "A-1", "B-2"], "last seen first");
    assert_eq!(ids(OrderQuery { limit: 2, ..Default::default() }), ["C-3", "A-1"]);
    assert_eq!(ids(OrderQuery { status: Some("accepted".into()), ..Default::default() }), ["A-1", "B-2"]);
    assert_eq!(
        ids(OrderQuery { status: Some("new".into()), ..Default::default() }),
        Vec::<String>::new(),
        "filters on the current status only"
    );
    assert_eq!(ids(OrderQuery { service: Some("crm-api".into()), ..Default::default() }), ["B-2"]);
    assert_eq!(ids(OrderQuery { since_ns: Some(T0 + 60 * SEC), ..Default::default() }), ["C-3", "A-1"]);
    assert_eq!(ids(OrderQuery { until_ns: Some(T0 + 40 * SEC), ..Default::default() }), ["A-1"]);
    assert_eq!(ids(OrderQuery { since_ns: Some(T0 + 20 * SEC), until_ns: Some(T0 + 60 * SEC), ..Default::default() }), ["A-1", "B-2"]);
    let c3 = &store.orders(&OrderQuery { service: Some("mes-api".into()), ..Default::default() }).unwrap()[0];
    assert_eq!((c3.status.as_deref(), c3.span_count, c3.services.as_slice()), (None, 1, ["mes-api".to_string()].as_slice()));
}

#[test]
fn an_error_span_is_an_event_and_status_follows_time_not_arrival() {
    let dir = tempfile::tempdir().unwrap();
    let store = SpanStore::open(dir.path(), &keys()).unwrap();
    let mut failed = span(1, 9, 30, 1, "charge card", &[("order.id", "A-1")]);
    failed.status = Some(Status { code: StatusCode::Error as i32, message: "declined".into() });
    let late = payload(
        "crm-api",
        vec![span(1, 2, 100, 1, "ship", &[("order.id", "A-1"), ("order.status", "handed_to_courier"), ("order.stage", "status_change")])],
    );
    let early = payload(
        "crm-api",
        vec![span(1, 1, 10, 1, "new", &[("order.id", "A-1"), ("order.status", "new"), ("order.stage", "created")]), failed],
    );
    store.insert(&[&late]).unwrap();
    store.insert(&[&early]).unwrap();
    let t = store.order_timeline("A-1").unwrap().unwrap();
    assert_eq!(
        t.events.iter().map(|e| (e.span_name.as_str(), e.error)).collect::<Vec<_>>(),
        [("new", false), ("charge card", true), ("ship", false)]
    );
    assert_eq!(t.status.as_deref(), Some("handed_to_courier"));
    assert_eq!(
        store.orders(&OrderQuery::default()).unwrap()[0].status.as_deref(),
        Some("handed_to_courier"),
        "an older status arriving later does not win"
    );
}

#[test]
fn retention_recomputes_summaries_and_drops_emptied_orders() {
    let dir = tempfile::tempdir().unwrap();
    let store = SpanStore::open(dir.path(), &keys()).unwrap();
    let a = payload(
        "shop-api",
        vec![
            span(1, 1, 0, 1, "old", &[("order.id", "A-1"), ("order.status", "new"), ("file.id", "F-1")]),
            span(1, 2, 100, 1, "new", &[("order.id", "A-1")]),
        ],
    );
    let b = payload("shop-api", vec![span(2, 1, 5, 1, "b", &[("order.id", "B-2")])]);
    store.insert(&[&a, &b]).unwrap();
    store.purge_before(T0 + 50 * SEC).unwrap();
    let page = store.orders(&OrderQuery::default()).unwrap();
    assert_eq!(page.len(), 1, "B-2 lost its only span");
    assert_eq!((page[0].current_service.as_deref(), page[0].current_stage.as_deref()), (None, None), "no step left");
    assert_eq!(
        (page[0].order_id.as_str(), page[0].first_seen, page[0].status.as_deref(), page[0].span_count),
        ("A-1", T0 + 100 * SEC, None, 1)
    );
    let conn = store.reader.lock().unwrap();
    let bindings: i64 = conn.query_row("SELECT count(*) FROM correlations", [], |r| r.get(0)).unwrap();
    assert_eq!(bindings, 0, "no span carries F-1 any more");
}

#[test]
fn a_store_from_before_orders_existed_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    {
        // The version 0 schema, with one order span in it.
        let conn = rusqlite::Connection::open(dir.path().join("spans.db")).unwrap();
        conn.execute_batch(
            "CREATE TABLE spans (trace_id BLOB NOT NULL, span_id BLOB NOT NULL, resource_id INTEGER NOT NULL, scope_id INTEGER NOT NULL,
                 service TEXT, name TEXT NOT NULL, start_ns INTEGER NOT NULL, end_ns INTEGER NOT NULL, order_id TEXT, order_stage TEXT,
                 order_status TEXT, error INTEGER NOT NULL, body BLOB NOT NULL, PRIMARY KEY (trace_id, span_id)) WITHOUT ROWID;
             INSERT INTO spans VALUES (x'01', x'01', 1, 1, 'shop-api', 'POST /orders', 10, 20, 'A-1', 'created', 'new', 0, x'');",
        )
        .unwrap();
    }
    let store = SpanStore::open(dir.path(), &keys()).unwrap();
    let page = store.orders(&OrderQuery::default()).unwrap();
    assert_eq!((page[0].order_id.as_str(), page[0].status.as_deref(), page[0].first_seen, page[0].last_seen), ("A-1", Some("new"), 10, 20));
    assert_eq!((page[0].current_service.as_deref(), page[0].current_stage.as_deref()), (Some("shop-api"), Some("created")));
    drop(store);
    SpanStore::open(dir.path(), &keys()).unwrap();
}

#[test]
fn a_span_table_of_the_old_layout_is_converted_once_and_keeps_its_spans() {
    let dir = tempfile::tempdir().unwrap();
    let file = payload("shop-api", vec![span(1, 1, 0, 5, "save constructor file", &[("constructor.file_id", "F-7")])]);
    let order = payload(
        "shop-api",
        vec![span(2, 1, 10, 5, "create order", &[("order.id", "A-1"), ("order.status", "new"), ("constructor.file_id", "F-7")])],
    );
    {
        let store = SpanStore::open(dir.path(), &keys()).unwrap();
        store.insert(&[&file, &order]).unwrap();
        drop(store);
        // The span table as tracegate wrote it until 2026-12-01: WITHOUT ROWID, keyed by its ids.
        let conn = rusqlite::Connection::open(dir.path().join("spans.db")).unwrap();
        conn.execute_batch(
            "DROP INDEX spans_by_id; DROP INDEX spans_by_order; DROP INDEX spans_by_service; DROP INDEX spans_by_end;
             DROP INDEX spans_by_correlation; ALTER TABLE spans RENAME TO new_layout;
             CREATE TABLE spans (trace_id BLOB NOT NULL, span_id BLOB NOT NULL, resource_id INTEGER NOT NULL, scope_id INTEGER NOT NULL,
                 service TEXT, name TEXT NOT NULL, start_ns INTEGER NOT NULL, end_ns INTEGER NOT NULL, order_id TEXT, order_stage TEXT,
                 order_status TEXT, error INTEGER NOT NULL, body BLOB NOT NULL, correlation TEXT, PRIMARY KEY (trace_id, span_id)) WITHOUT ROWID;
             INSERT INTO spans SELECT * FROM new_layout; DROP TABLE new_layout;
             CREATE INDEX spans_by_order ON spans(order_id, start_ns) WHERE order_id IS NOT NULL;
             CREATE INDEX spans_by_service ON spans(service, start_ns);
             CREATE INDEX spans_by_end ON spans(end_ns);
             CREATE INDEX spans_by_correlation ON spans(correlation) WHERE correlation IS NOT NULL;",
        )
        .unwrap();
    }
    let layout = |store: &SpanStore| {
        let conn = store.reader.lock().unwrap();
        let sql: String = conn.query_row("SELECT sql FROM sqlite_master WHERE name = 'spans'", [], |r| r.get(0)).unwrap();
        let mut indexes: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'spans' AND sql IS NOT NULL ORDER BY name")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        indexes.sort();
        (sql.to_ascii_uppercase().contains("WITHOUT ROWID"), indexes)
    };
    let indexes = ["spans_by_correlation", "spans_by_end", "spans_by_id", "spans_by_order", "spans_by_service"];
    let store = SpanStore::open(dir.path(), &keys()).unwrap();
    assert_eq!(layout(&store), (false, indexes.map(String::from).to_vec()));
    assert_eq!(store.span_count().unwrap(), 2);
    let timeline = store.order_timeline("A-1").unwrap().unwrap();
    assert_eq!(timeline.events.len(), 2, "the file joins its order through the correlation value, as before");
    assert_eq!(store.trace(&[1; 16]).unwrap().unwrap()[0].scope_spans[0].spans[0].name, "save constructor file");
    // Storing a span again still replaces it.
    store.insert(&[&order]).unwrap();
    assert_eq!(store.span_count().unwrap(), 2);
    drop(store);
    let store = SpanStore::open(dir.path(), &keys()).unwrap();
    assert_eq!(layout(&store), (false, indexes.map(String::from).to_vec()));
    assert_eq!(store.span_count().unwrap(), 2);
}

#[test]
fn a_version_1_store_gains_the_last_step() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SpanStore::open(dir.path(), &keys()).unwrap();
        let a = payload(
            "shop-api",
            vec![
                span(1, 1, 0, 1, "created", &[("order.id", "A-1"), ("order.stage", "created"), ("order.status", "new")]),
                span(1, 2, 9, 1, "saved", &[("order.id", "A-1"), ("order.stage", "db_save")]),
            ],
        );
        store.insert(&[&a]).unwrap();
        drop(store);
        // As version 1 left it: no step columns.
        let conn = rusqlite::Connection::open(dir.path().join("spans.db")).unwrap();
        conn.execute_batch(
            "ALTER TABLE orders DROP COLUMN step_service; ALTER TABLE orders DROP COLUMN step_stage;
             ALTER TABLE orders DROP COLUMN step_ns; ALTER TABLE orders DROP COLUMN step_span; PRAGMA user_version = 1;",
        )
        .unwrap();
    }
    let store = SpanStore::open(dir.path(), &keys()).unwrap();
    let page = store.orders(&OrderQuery::default()).unwrap();
    assert_eq!((page[0].current_service.as_deref(), page[0].current_stage.as_deref()), (Some("shop-api"), Some("db_save")));
}

#[test]
fn the_current_step_is_the_latest_step_by_time_not_arrival() {
    let dir = tempfile::tempdir().unwrap();
    let store = SpanStore::open(dir.path(), &keys()).unwrap();
    let mut failed = span(3, 9, 50, 1, "charge card", &[("order.id", "A-1")]);
    failed.status = Some(Status { code: StatusCode::Error as i32, message: "declined".into() });
    let late = payload("crm-api", vec![span(2, 1, 40, 1, "accept", &[("order.id", "A-1"), ("order.status", "accepted")])]);
    // A plain span (no stage, no status, no error) is not a step, even when it is the latest.
    let plain = payload("mes-api", vec![span(4, 1, 90, 1, "GET /stock", &[("order.id", "A-1")])]);
    let early = payload("shop-api", vec![span(1, 1, 0, 1, "created", &[("order.id", "A-1"), ("order.stage", "created")])]);
    store.insert(&[&late, &plain]).unwrap();
    store.insert(&[&early]).unwrap();
    let current = |store: &SpanStore| {
        let o = store.orders(&OrderQuery::default()).unwrap().remove(0);
        (o.current_service, o.current_stage)
    };
    assert_eq!(current(&store), (Some("crm-api".into()), Some("status_change".into())));
    store.insert(&[&payload("pay-api", vec![failed])]).unwrap();
    assert_eq!(current(&store), (Some("pay-api".into()), None), "a failed span without a stage is a step");
    // The timeline's last event agrees.
    let t = store.order_timeline("A-1").unwrap().unwrap();
    let last = t.events.last().unwrap();
    assert_eq!((last.service.as_deref(), last.stage.as_deref()), (Some("pay-api"), None));
}

#[test]
fn prefix_search_is_literal_and_both_sorts_page() {
    let dir = tempfile::tempdir().unwrap();
    let store = SpanStore::open(dir.path(), &keys()).unwrap();
    let ids = ["A-1", "A-10", "A-2", "a-3", "A*1", "A%1", "A_1", "A[1]", "B-1"];
    let spans = ids.iter().enumerate().map(|(i, id)| span(1, i as u8 + 1, 100 - i as u64 * 10, 1, "s", &[("order.id", id)])).collect();
    store.insert(&[&payload("shop-api", spans)]).unwrap();
    let list = |q: OrderQuery| store.orders(&q).unwrap().into_iter().map(|s| s.order_id).collect::<Vec<_>>();
    let prefix = |p: &str| {
        let mut found = list(OrderQuery { id_prefix: Some(p.into()), ..Default::default() });
        found.sort();
        found
    };
    assert_eq!(prefix("A-1"), ["A-1", "A-10"]);
    assert_eq!(prefix("A-"), ["A-1", "A-10", "A-2"], "case-sensitive");
    assert_eq!(prefix("A*"), ["A*1"]);
    assert_eq!(prefix("A%"), ["A%1"]);
    assert_eq!(prefix("A_"), ["A_1"]);
    assert_eq!(prefix("A["), ["A[1]"]);
    assert_eq!(prefix("A?"), Vec::<String>::new());
    assert_eq!(prefix(""), {
        let mut all: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        all.sort();
        all
    });
    assert_eq!(list(OrderQuery { order_id: Some("A-1".into()), ..Default::default() }), ["A-1"]);
    // Longest waiting first is last seen ascending; paging with `after` walks it exactly.
    let waiting = list(OrderQuery { sort: OrderSort::LongestWaiting, ..Default::default() });
    let mut newest = list(OrderQuery::default());
    newest.reverse();
    assert_eq!(waiting, newest);
    assert_eq!(waiting.first().map(String::as_str), Some("B-1"));
    for sort in [OrderSort::LongestWaiting, OrderSort::NewestFirst] {
        let mut paged = Vec::new();
        let mut after = None;
        loop {
            let page = store.orders(&OrderQuery { sort, after: after.clone(), limit: 2, ..Default::default() }).unwrap();
            if page.is_empty() {
                break;
            }
            after = page.last().map(|o| (o.last_seen, o.order_id.clone()));
            paged.extend(page.into_iter().map(|o| o.order_id));
        }
        assert_eq!(paged, list(OrderQuery { sort, ..Default::default() }), "{sort:?}");
    }
    // A prefix walks the primary key from the prefix on, not every order.
    let (sql, args) = list_sql(&OrderQuery { id_prefix: Some("A-1".into()), sort: OrderSort::LongestWaiting, ..Default::default() });
    let conn = store.reader.lock().unwrap();
    let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
    let plan = stmt
        .query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3))
        .unwrap()
        .map(Result::unwrap)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(plan.contains("PRIMARY KEY (order_id>? AND order_id<?)"), "{plan}");
}

#[test]
fn order_queries_use_indexes() {
    let dir = tempfile::tempdir().unwrap();
    let store = SpanStore::open(dir.path(), &keys()).unwrap();
    let conn = store.reader.lock().unwrap();
    let plan = |sql: &str| -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        stmt.query_map([], |r| r.get::<_, String>(3)).unwrap().map(Result::unwrap).collect::<Vec<_>>().join("\n")
    };
    let timeline = plan(&ORDER_SPANS.replace("?1", "'A-1'"));
    assert!(timeline.contains("spans_by_order"), "{timeline}");
    assert!(timeline.contains("spans_by_correlation"), "{timeline}");
    assert!(timeline.contains("correlations_by_order"), "{timeline}");
    assert!(!timeline.contains("SCAN"), "{timeline}");
    let list = plan("SELECT order_id FROM orders WHERE status = 'new' ORDER BY last_ns DESC LIMIT 10");
    assert!(list.contains("orders_by_status"), "{list}");
    drop(conn);
    // The list with every filter: each order's spans are reached through its own indexes.
    let query = OrderQuery {
        status: Some("new".into()),
        service: Some("shop-api".into()),
        since_ns: Some(1),
        until_ns: Some(2),
        alert: Some(crate::orders::AlertState::Firing),
        after: None,
        limit: 10,
        ..Default::default()
    };
    let sql = list_sql(&query).0;
    let conn = store.reader.lock().unwrap();
    let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
    let list = stmt
        .query_map(rusqlite::params!["new", 1, 2, "shop-api", "firing", 10], |r| r.get::<_, String>(3))
        .unwrap()
        .map(Result::unwrap)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(!list.contains("spans_by_service"), "{list}");
    assert!(list.contains("spans_by_order") && list.contains("spans_by_correlation"), "{list}");
    assert!(list.contains("order_alerts_by_order") || list.contains("order_alerts_firing"), "{list}");
}

#[test]
fn excluded_statuses_leave_finished_orders_out_and_keep_orders_without_a_status() {
    let dir = tempfile::tempdir().unwrap();
    let store = SpanStore::open(dir.path(), &keys()).unwrap();
    let spans = vec![
        span(1, 1, 10, 1, "s", &[("order.id", "A-1"), ("order.status", "accepted")]),
        span(1, 2, 20, 1, "s", &[("order.id", "A-2"), ("order.status", "handed_to_courier")]),
        span(1, 3, 30, 1, "s", &[("order.id", "A-3"), ("order.status", "cancelled")]),
        span(1, 4, 40, 1, "s", &[("order.id", "A-4")]),
    ];
    store.insert(&[&payload("shop-api", spans)]).unwrap();
    let list = |q: OrderQuery| {
        let mut ids = store.orders(&q).unwrap().into_iter().map(|s| s.order_id).collect::<Vec<_>>();
        ids.sort();
        ids
    };
    let finished = vec!["handed_to_courier".to_string(), "cancelled".to_string()];
    assert_eq!(list(OrderQuery { exclude_statuses: finished.clone(), ..Default::default() }), ["A-1", "A-4"]);
    assert_eq!(list(OrderQuery { exclude_statuses: vec!["accepted".into()], ..Default::default() }), ["A-2", "A-3", "A-4"]);
    assert_eq!(list(OrderQuery::default()), ["A-1", "A-2", "A-3", "A-4"]);
    // With a status filter too: both apply.
    assert_eq!(
        list(OrderQuery { status: Some("cancelled".into()), exclude_statuses: finished, ..Default::default() }),
        Vec::<String>::new()
    );
}
