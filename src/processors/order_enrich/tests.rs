//! Scenario tests of the enricher: spans arrive in any order and request, and every span of an
//! order ends up with the same tags.

use std::collections::BTreeMap;
use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::Link;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use tokio::time::Instant;

use super::*;
use crate::telemetry::Metrics;

fn enricher(wait: Duration) -> OrderEnricher {
    enricher_with(OrderEnrichConfig { wait, ..Default::default() })
}

fn enricher_with(config: OrderEnrichConfig) -> OrderEnricher {
    OrderEnricher::new(config, Metrics::new().enrich("test")).unwrap()
}

fn span(trace: u8, id: u8, name: &str, kind: i32, kv: &[(&str, &str)]) -> Span {
    let mut s = Span { trace_id: vec![trace; 16], span_id: vec![id; 8], name: name.into(), kind, ..Default::default() };
    for (k, v) in kv {
        attrs::set(&mut s.attributes, k, v);
    }
    s
}

fn request(service: &str, spans: Vec<Span>) -> Vec<ResourceSpans> {
    let mut attributes: Vec<KeyValue> = Vec::new();
    attrs::set(&mut attributes, "service.name", service);
    vec![ResourceSpans {
        resource: Some(Resource { attributes, ..Default::default() }),
        scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
        ..Default::default()
    }]
}

/// name -> (order.id, order.stage, order.status, enduser.id)
type Tags = BTreeMap<String, (Option<String>, Option<String>, Option<String>, Option<String>)>;

fn tags(batches: &[Vec<ResourceSpans>]) -> Tags {
    let mut out = Tags::new();
    for rs in batches.iter().flatten() {
        for s in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
            let get = |k: &str| attrs::get(&s.attributes, k).map(|v| v.into_owned());
            let previous = out.insert(s.name.clone(), (get("order.id"), get("order.stage"), get("order.status"), get("enduser.id")));
            assert!(previous.is_none(), "span {} came out twice", s.name);
        }
    }
    out
}

fn order_of(t: &Tags, name: &str) -> Option<String> {
    t.get(name).unwrap_or_else(|| panic!("span {name} never came out")).0.clone()
}

#[test]
fn the_order_found_on_one_span_tags_the_whole_trace() {
    let e = enricher(Duration::from_secs(5));
    let now = Instant::now();
    let out = e.process(
        request(
            "shop-api",
            vec![
                span(1, 2, "INSERT orders", 3, &[("db.system.name", "postgresql"), ("db.operation.name", "INSERT")]),
                span(
                    1,
                    1,
                    "POST /orders",
                    2,
                    &[("http.request.method", "POST"), ("http.route", "/orders"), ("order.id", "A-1001"), ("enduser.id", "u-7")],
                ),
                span(1, 3, "orders publish", 4, &[("messaging.system", "rabbitmq")]),
            ],
        ),
        now,
    );
    let t = tags(&[out]);
    assert_eq!(t["POST /orders"], (Some("A-1001".into()), Some("created".into()), Some("new".into()), Some("u-7".into())));
    assert_eq!(t["INSERT orders"], (Some("A-1001".into()), Some("db_save".into()), None, Some("u-7".into())));
    assert_eq!(t["orders publish"].1.as_deref(), Some("bus_publish"));
    assert_eq!(e.metrics.tagged_own.get(), 1);
    assert_eq!(e.metrics.tagged_trace.get(), 2);
}

#[test]
fn early_spans_wait_and_late_spans_use_the_cache() {
    let e = enricher(Duration::from_secs(5));
    let t0 = Instant::now();
    let first = e.process(
        request("shop-api", vec![span(1, 2, "INSERT orders", 3, &[("db.system", "postgresql"), ("db.statement", "INSERT INTO orders")])]),
        t0,
    );
    assert!(first.is_empty(), "the child waits for its trace's order");
    assert_eq!(e.buffered_spans(), 1);
    let second = e.process(request("shop-api", vec![span(1, 1, "POST /orders", 2, &[("order_id", "A-1")])]), t0 + Duration::from_secs(1));
    let t = tags(&[second]);
    assert_eq!(order_of(&t, "INSERT orders").as_deref(), Some("A-1"), "released with the request that named the order");
    assert_eq!(order_of(&t, "POST /orders").as_deref(), Some("A-1"), "orderId keys are recognised and written as order.id");
    assert_eq!(e.buffered_spans(), 0);
    let late = e.process(request("shop-api", vec![span(1, 9, "late callback", 1, &[])]), t0 + Duration::from_secs(60));
    assert_eq!(order_of(&tags(&[late]), "late callback").as_deref(), Some("A-1"), "a late span is tagged through the trace cache");
}

#[test]
fn a_trace_that_never_names_an_order_goes_on_untagged_after_the_wait() {
    let e = enricher(Duration::from_secs(5));
    let t0 = Instant::now();
    assert!(e.process(request("shop-api", vec![span(4, 1, "GET /catalog", 2, &[])]), t0).is_empty());
    assert!(e.expire(t0 + Duration::from_secs(4)).is_empty());
    let out = e.expire(t0 + Duration::from_secs(5));
    assert_eq!(order_of(&tags(&[out]), "GET /catalog"), None);
    assert_eq!(e.metrics.untagged_timeout.get(), 1);
    assert_eq!(e.buffered_spans(), 0);
}

#[test]
fn a_link_across_the_bus_joins_the_consumer_trace_in_either_order() {
    for shop_first in [true, false] {
        let e = enricher(Duration::from_secs(5));
        let t0 = Instant::now();
        let shop = request(
            "shop-api",
            vec![
                span(1, 1, "POST /orders", 2, &[("order.id", "A-2")]),
                span(1, 3, "orders publish", 4, &[("messaging.system", "rabbitmq")]),
            ],
        );
        let mut consume = span(2, 1, "orders process", 5, &[("messaging.system", "rabbitmq")]);
        consume.links.push(Link { trace_id: vec![1; 16], span_id: vec![3; 8], ..Default::default() });
        let crm = request(
            "crm-api",
            vec![
                consume,
                span(
                    2,
                    2,
                    "UPDATE orders",
                    3,
                    &[("db.system.name", "mssql"), ("db.operation.name", "UPDATE"), ("order.new_status", "accepted")],
                ),
            ],
        );
        let outs = if shop_first { vec![e.process(shop, t0), e.process(crm, t0)] } else { vec![e.process(crm, t0), e.process(shop, t0)] };
        let t = tags(&outs);
        assert_eq!(order_of(&t, "orders process").as_deref(), Some("A-2"), "shop_first={shop_first}");
        assert_eq!(t["orders process"].1.as_deref(), Some("bus_consume"));
        assert_eq!(
            t["UPDATE orders"],
            (Some("A-2".into()), Some("db_save".into()), Some("accepted".into()), None),
            "a write that sets the status is a save with a status"
        );
        assert_eq!(e.metrics.tagged_link.get(), 2);
    }
}

#[test]
fn a_constructor_file_joins_the_order_before_or_after() {
    let e = enricher(Duration::from_secs(5));
    let t0 = Instant::now();
    // Saved before the order exists: waits.
    assert!(e.process(request("shop-api", vec![span(5, 1, "upload file", 2, &[("constructor.file_id", "F-9")])]), t0).is_empty());
    let order = e.process(
        request("shop-api", vec![span(6, 1, "POST /orders", 2, &[("order.id", "A-3"), ("constructor.file_id", "F-9")])]),
        t0 + Duration::from_secs(1),
    );
    // And another span carrying only the file id, after.
    let after = e.process(request("shop-api", vec![span(7, 1, "render file", 1, &[("file.id", "F-9")])]), t0 + Duration::from_secs(2));
    let t = tags(&[order, after]);
    assert_eq!(order_of(&t, "upload file").as_deref(), Some("A-3"));
    assert_eq!(t["upload file"].1.as_deref(), Some("file_link"));
    assert_eq!(order_of(&t, "render file").as_deref(), Some("A-3"));
    assert_eq!(e.metrics.tagged_correlation.get(), 2);
}

/// A file named by two orders belongs to the first, as the correlation cache keeps it: the
/// spans waiting on it, and those that come later.
#[test]
fn a_file_named_by_two_orders_joins_the_first_waiting_or_late() {
    let e = enricher(Duration::from_secs(5));
    let t0 = Instant::now();
    assert!(e.process(request("shop-api", vec![span(5, 1, "upload file", 2, &[("constructor.file_id", "F-9")])]), t0).is_empty());
    let orders = e.process(
        request(
            "shop-api",
            vec![
                span(6, 1, "POST /orders", 2, &[("order.id", "A-3"), ("constructor.file_id", "F-9")]),
                span(7, 1, "POST /orders again", 2, &[("order.id", "B-4"), ("constructor.file_id", "F-9")]),
            ],
        ),
        t0 + Duration::from_secs(1),
    );
    let later = e.process(request("shop-api", vec![span(8, 1, "render file", 1, &[("file.id", "F-9")])]), t0 + Duration::from_secs(2));
    let t = tags(&[orders, later, e.flush()]);
    assert_eq!(order_of(&t, "upload file").as_deref(), Some("A-3"), "the waiting span joins the first order");
    assert_eq!(order_of(&t, "render file").as_deref(), Some("A-3"), "and so does a later one");
    assert_eq!(e.metrics.untagged_ambiguous.get(), 0);
}

#[test]
fn a_trace_naming_two_orders_is_not_merged() {
    let e = enricher(Duration::ZERO);
    let out = e.process(
        request(
            "mes-api",
            vec![
                span(8, 1, "batch job", 1, &[]),
                span(8, 2, "item 1", 1, &[("order.id", "A-10")]),
                span(8, 3, "item 2", 1, &[("order.id", "A-11")]),
            ],
        ),
        Instant::now(),
    );
    let t = tags(&[out]);
    assert_eq!(order_of(&t, "item 1").as_deref(), Some("A-10"));
    assert_eq!(order_of(&t, "item 2").as_deref(), Some("A-11"));
    assert_eq!(order_of(&t, "batch job"), None, "spans without their own id in an ambiguous trace stay untagged");
    assert_eq!(e.metrics.untagged_ambiguous.get(), 1);
}

#[test]
fn url_patterns_find_the_order_but_not_route_templates() {
    let e = enricher(Duration::ZERO);
    let out = e.process(
        request(
            "mes-api",
            vec![
                span(
                    9,
                    1,
                    "POST /orders/{id}/production",
                    2,
                    &[("http.route", "/orders/{id}/production"), ("url.path", "/orders/A-1001/production")],
                ),
                span(10, 1, "templated", 2, &[("http.route", "/orders/{id}")]),
            ],
        ),
        Instant::now(),
    );
    let t = tags(&[out]);
    assert_eq!(order_of(&t, "POST /orders/{id}/production").as_deref(), Some("A-1001"));
    assert_eq!(order_of(&t, "templated"), None);
}

#[test]
fn a_million_orderless_traces_stay_within_the_buffer_limit() {
    let e = enricher_with(OrderEnrichConfig { wait: Duration::from_secs(30), max_buffered_spans: 10_000, ..Default::default() });
    let t0 = Instant::now();
    let mut passed = 0usize;
    for chunk in 0..1000u32 {
        let spans = (0..1000u32)
            .map(|i| {
                let n = chunk * 1000 + i + 1;
                let mut trace = vec![0u8; 16];
                trace[..4].copy_from_slice(&n.to_be_bytes());
                Span { trace_id: trace, span_id: vec![1; 8], name: "GET /catalog".into(), ..Default::default() }
            })
            .collect();
        passed += crate::pipeline::count_spans(&e.process(request("shop-api", spans), t0));
        assert!(e.buffered_spans() <= 10_000);
    }
    assert_eq!(e.buffered_spans(), 10_000);
    assert_eq!(passed, 990_000, "spans beyond the limit pass through at once, untagged");
    assert_eq!(e.metrics.untagged_buffer_full.get(), 990_000);
    assert_eq!(crate::pipeline::count_spans(&e.expire(t0 + Duration::from_secs(30))), 10_000);
    assert_eq!(e.buffered_spans(), 0);
}

/// The order flow of one order, as three traces joined by a link and a file id.
fn flow() -> Vec<(String, Span)> {
    let mut consume = span(2, 1, "orders process", 5, &[("messaging.system", "rabbitmq")]);
    consume.links.push(Link { trace_id: vec![1; 16], span_id: vec![3; 8], ..Default::default() });
    vec![
        ("shop-api".into(), span(3, 1, "upload file", 2, &[("constructor.file_id", "F-1")])),
        (
            "shop-api".into(),
            span(
                1,
                1,
                "POST /orders",
                2,
                &[
                    ("http.request.method", "POST"),
                    ("http.route", "/orders"),
                    ("order.id", "A-5"),
                    ("constructor.file_id", "F-1"),
                    ("enduser.id", "u-1"),
                ],
            ),
        ),
        ("shop-api".into(), span(1, 2, "INSERT orders", 3, &[("db.system.name", "postgresql"), ("db.operation.name", "INSERT")])),
        ("shop-api".into(), span(1, 3, "orders publish", 4, &[("messaging.system", "rabbitmq")])),
        ("crm-api".into(), consume),
        ("crm-api".into(), span(2, 2, "status accepted", 1, &[("order.status", "accepted")])),
        ("crm-api".into(), span(2, 3, "GET /orders/A-5/production", 3, &[("url.path", "/orders/A-5/production")])),
        ("crm-api".into(), span(2, 4, "SELECT customer", 3, &[("db.system.name", "mssql"), ("db.operation.name", "SELECT")])),
        ("shop-api".into(), span(4, 1, "GET /catalog", 2, &[])),
    ]
}

#[test]
fn spans_in_any_order_and_any_requests_get_the_tags_they_get_in_order() {
    let reference = {
        let e = enricher(Duration::from_secs(5));
        let t0 = Instant::now();
        let mut outs: Vec<Vec<ResourceSpans>> = flow().into_iter().map(|(svc, s)| e.process(request(&svc, vec![s]), t0)).collect();
        outs.push(e.expire(t0 + Duration::from_secs(5)));
        tags(&outs)
    };
    assert_eq!(order_of(&reference, "upload file").as_deref(), Some("A-5"));
    assert_eq!(order_of(&reference, "SELECT customer").as_deref(), Some("A-5"));
    assert_eq!(reference["SELECT customer"].1, None, "reads are not steps");
    assert_eq!(reference["status accepted"].3.as_deref(), None, "enduser.id stays within its trace");
    assert_eq!(reference["INSERT orders"].3.as_deref(), Some("u-1"));
    assert_eq!(order_of(&reference, "GET /catalog"), None);

    let mut rng = fastrand::Rng::with_seed(7);
    for case in 0..300 {
        let mut spans = flow();
        rng.shuffle(&mut spans);
        let e = enricher(Duration::from_secs(5));
        let t0 = Instant::now();
        let mut outs = Vec::new();
        while !spans.is_empty() {
            let take = rng.usize(1..=spans.len());
            let chunk: Vec<(String, Span)> = spans.drain(..take).collect();
            let mut req = Vec::new();
            for (svc, s) in chunk {
                req.extend(request(&svc, vec![s]));
            }
            outs.push(e.process(req, t0));
        }
        outs.push(e.expire(t0 + Duration::from_secs(5)));
        assert_eq!(tags(&outs), reference, "case {case}");
    }
}

#[test]
fn a_consume_span_that_sets_a_status_keeps_its_stage() {
    let e = enricher(Duration::from_secs(5));
    let now = Instant::now();
    let out = e.process(
        request(
            "crm-api",
            vec![
                span(1, 1, "orders process", 5, &[("messaging.system", "rabbitmq"), ("order.id", "A-1"), ("order.new_status", "accepted")]),
                // A stage set before tracegate still gets the status.
                span(1, 2, "mark shipped", 1, &[("order.stage", "courier"), ("order.new_status", "handed_to_courier")]),
            ],
        ),
        now,
    );
    let t = tags(&[out]);
    assert_eq!(t["orders process"].1.as_deref(), Some("bus_consume"));
    assert_eq!(t["orders process"].2.as_deref(), Some("accepted"));
    assert_eq!(t["mark shipped"].1.as_deref(), Some("courier"));
    assert_eq!(t["mark shipped"].2.as_deref(), Some("handed_to_courier"));
}

fn held_enricher(dir: &std::path::Path, wait: Duration, ttl: Duration) -> OrderEnricher {
    let hold = CorrelationHoldConfig { directory: dir.to_path_buf(), ttl, max_bytes: crate::shared::ByteSize::mib(1) };
    enricher_with(OrderEnrichConfig { wait, correlation_hold: Some(hold), ..Default::default() }).with_correlation_hold("traces").unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_file_saved_before_its_order_is_held_until_the_order_claims_it() {
    let dir = tempfile::tempdir().unwrap();
    let e = held_enricher(dir.path(), Duration::from_secs(5), Duration::from_secs(3600));
    let t0 = Instant::now();
    let before = vec![
        span(5, 1, "POST /constructor/files", 2, &[("http.request.method", "POST")]),
        span(5, 2, "save file", 1, &[("constructor.file_id", "F-9")]),
    ];
    assert!(e.process(request("shop-api", before), t0).is_empty());
    // The wait is over: the span without a value goes on untagged, the file waits on disk.
    let out = e.expire(t0 + Duration::from_secs(6));
    let t = tags(&[out]);
    assert_eq!(t.keys().collect::<Vec<_>>(), vec!["POST /constructor/files"]);
    assert_eq!((e.metrics.hold_held.get(), e.metrics.hold_spans.get()), (1, 1));
    assert!(e.expire(t0 + Duration::from_secs(600)).is_empty(), "still no order");

    // A restart: the hold is on disk.
    drop(e);
    let e = held_enricher(dir.path(), Duration::from_secs(5), Duration::from_secs(3600));
    let t1 = Instant::now() + Duration::from_secs(700);
    assert_eq!(e.metrics.hold_spans.get(), 1);
    let order =
        e.process(request("shop-api", vec![span(6, 1, "POST /orders", 2, &[("order.id", "A-3"), ("constructor.file_id", "F-9")])]), t1);
    // Released on the release path (expire), tagged.
    let released = e.expire(t1 + Duration::from_millis(100));
    let t = tags(&[order, released]);
    assert_eq!(order_of(&t, "save file").as_deref(), Some("A-3"));
    assert_eq!(t["save file"].1.as_deref(), Some("file_link"));
    assert_eq!((e.metrics.hold_released.get(), e.metrics.hold_spans.get()), (1, 0));
    assert!(e.expire(t1 + Duration::from_secs(1)).is_empty(), "released once");
}

/// Shutdown stops the release task, maybe half-way through admitting what the hold let go of,
/// then flushes: the flush must not confirm that release, so that a restart sends it again.
#[tokio::test(start_paused = true)]
async fn a_release_cut_short_by_shutdown_is_released_again_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let e = held_enricher(dir.path(), Duration::ZERO, Duration::from_secs(3600));
    let t0 = Instant::now();
    assert!(e.process(request("shop-api", vec![span(5, 2, "save file", 1, &[("file.id", "F-1")])]), t0).is_empty());
    e.process(request("shop-api", vec![span(6, 1, "POST /orders", 2, &[("order.id", "A-1"), ("file.id", "F-1")])]), t0);
    // The release task takes the claimed span, and is stopped before the queues have it.
    let cut_short = e.expire(t0 + Duration::from_millis(100));
    assert_eq!(order_of(&tags(&[cut_short]), "save file").as_deref(), Some("A-1"));
    assert!(e.flush().is_empty());
    // The flush's spans did not all reach the queues, so nobody confirms.
    drop(e);
    let e = held_enricher(dir.path(), Duration::ZERO, Duration::from_secs(3600));
    let again = e.expire(Instant::now());
    assert_eq!(order_of(&tags(&[again]), "save file").as_deref(), Some("A-1"), "released again after the restart");
    // This time everything was admitted: confirmed, not sent a third time.
    assert!(e.flush().is_empty());
    e.confirm_released(true);
    drop(e);
    let e = held_enricher(dir.path(), Duration::ZERO, Duration::from_secs(3600));
    assert!(e.expire(Instant::now()).is_empty());
}

/// The hold's claimed spans leave within the release's slice, like the buffer's.
#[tokio::test(start_paused = true)]
async fn claimed_spans_leave_the_hold_in_slices() {
    let dir = tempfile::tempdir().unwrap();
    let e = held_enricher(dir.path(), Duration::ZERO, Duration::from_secs(3600));
    let t0 = Instant::now();
    let files: Vec<Span> = (1..=5).map(|i| span(5, i, &format!("save file {i}"), 1, &[("file.id", "F-1")])).collect();
    assert!(e.process(request("shop-api", files), t0).is_empty());
    e.process(request("shop-api", vec![span(6, 1, "POST /orders", 2, &[("order.id", "A-1"), ("file.id", "F-1")])]), t0);
    let mut slices = Vec::new();
    loop {
        let (out, more) = e.expire_some(t0, 2, None);
        slices.push(crate::pipeline::count_spans(&out));
        if !more {
            break;
        }
        assert!(slices.len() < 10, "{slices:?}");
    }
    assert_eq!(slices.iter().sum::<usize>(), 5);
    assert!(slices.iter().all(|&n| n <= 2), "{slices:?}");
}

/// The memory limiter's hard limit lets go of what waits in memory while the release task runs:
/// it leaves the hold (on disk) alone, so it cannot confirm a release that task is admitting.
#[tokio::test(start_paused = true)]
async fn the_memory_limiters_flush_leaves_the_hold_to_the_release_task() {
    let dir = tempfile::tempdir().unwrap();
    let e = held_enricher(dir.path(), Duration::from_secs(5), Duration::from_secs(3600));
    let t0 = Instant::now();
    // The file waits, then goes to the hold; its order claims it there.
    assert!(e.process(request("shop-api", vec![span(5, 2, "save file", 1, &[("file.id", "F-1")])]), t0).is_empty());
    assert!(e.expire(t0 + Duration::from_secs(6)).is_empty());
    assert_eq!(e.metrics.hold_held.get(), 1);
    e.process(request("shop-api", vec![span(6, 1, "POST /orders", 2, &[("order.id", "A-1"), ("file.id", "F-1")])]), t0);
    // A span of a trace with no order yet waits in memory.
    assert!(e.process(request("shop-api", vec![span(8, 1, "GET /cart", 2, &[])]), t0).is_empty());
    let flushed = tags(&[e.flush_memory()]);
    assert_eq!(flushed.keys().collect::<Vec<_>>(), vec!["GET /cart"], "the waiting span only");
    let released = e.expire(t0 + Duration::from_secs(6));
    assert_eq!(order_of(&tags(&[released]), "save file").as_deref(), Some("A-1"), "the release task's to let go of");
}

#[tokio::test(start_paused = true)]
async fn a_held_span_no_order_claims_is_dropped_at_its_ttl() {
    let dir = tempfile::tempdir().unwrap();
    // No wait at all: a span with a value goes straight to the hold.
    let e = held_enricher(dir.path(), Duration::ZERO, Duration::from_secs(60));
    let t0 = Instant::now();
    assert!(e.process(request("shop-api", vec![span(5, 2, "save file", 1, &[("file.id", "F-1")])]), t0).is_empty());
    assert!(e.expire(t0 + Duration::from_secs(59)).is_empty());
    assert_eq!(e.metrics.hold_expired.get(), 0);
    assert!(e.expire(t0 + Duration::from_secs(61)).is_empty());
    assert_eq!((e.metrics.hold_expired.get(), e.metrics.hold_spans.get()), (1, 0));
    // The order comes too late: nothing is left to release.
    e.process(
        request("shop-api", vec![span(6, 1, "POST /orders", 2, &[("order.id", "A-1"), ("file.id", "F-1")])]),
        t0 + Duration::from_secs(62),
    );
    assert!(e.expire(t0 + Duration::from_secs(63)).is_empty());
}

/// A trace cache so small that binding other traces evicts a trace within one request: what the
/// call learnt of the evicted trace is forgotten, so its later spans bind it again and give it
/// its user again, as asking its shard for every span would.
#[test]
fn a_trace_evicted_within_a_request_is_bound_again_by_its_later_spans() {
    let e = enricher_with(OrderEnrichConfig {
        wait: Duration::from_secs(5),
        trace_cache: config::CacheConfig { ttl: Duration::from_secs(3600), max_entries: 2 },
        ..Default::default()
    });
    let t0 = Instant::now();
    let out = e.process(
        request(
            "shop-api",
            vec![
                span(1, 1, "t1 names A", 2, &[("order.id", "A-1"), ("enduser.id", "u-1")]),
                span(2, 1, "t2 names B", 2, &[("order.id", "B-2")]),
                // The cache holds two traces: the third evicts trace 1, the oldest.
                span(3, 1, "t3 names C", 2, &[("order.id", "C-3")]),
                span(1, 2, "t1 names A again", 2, &[("order.id", "A-1"), ("enduser.id", "u-1")]),
                span(1, 3, "t1 names no order", 2, &[]),
            ],
        ),
        t0,
    );
    let t = tags(&[out, e.flush()]);
    assert_eq!(order_of(&t, "t1 names no order").as_deref(), Some("A-1"));
    assert_eq!(t["t1 names no order"].3.as_deref(), Some("u-1"), "the user came back with the binding");
    assert_eq!(e.metrics.untagged_timeout.get(), 0);
}

#[test]
fn a_cache_setting_given_alone_keeps_the_other_default() {
    let yaml = r#"
receivers: {otlp: {grpc: {endpoint: "127.0.0.1:0"}}}
processors:
  order_enrich: {trace_cache: {max_entries: 2048}, correlation_cache: {ttl: 2h}}
exporters: {debug: {}}
service: {pipelines: {traces: {receivers: [otlp], processors: [order_enrich], exporters: [debug]}}}
"#;
    let config = crate::config::Config::from_yaml(yaml).expect("a partial cache setting is accepted");
    let Some(crate::processors::ProcessorConfig::OrderEnrich(c)) = config.processors.get("order_enrich") else {
        panic!("no order_enrich in {:?}", config.processors.keys().collect::<Vec<_>>())
    };
    assert_eq!((c.trace_cache.ttl, c.trace_cache.max_entries), (Duration::from_secs(3600), 2048));
    assert_eq!((c.correlation_cache.ttl, c.correlation_cache.max_entries), (Duration::from_secs(7200), 200_000));

    let wrong = yaml.replace("max_entries: 2048", "max_entry: 2048");
    let issues = crate::config::Config::from_yaml(&wrong).unwrap_err().issues;
    assert!(issues.iter().any(|i| i.path.starts_with("processors.order_enrich") && i.message.contains("max_entry")), "{issues:?}");
}

#[test]
fn a_wait_or_a_time_to_live_beyond_reason_is_refused_before_the_start() {
    let yaml = r#"
receivers: {otlp: {grpc: {endpoint: "127.0.0.1:0"}}}
processors:
  order_enrich: {wait: 300000000000y, trace_cache: {ttl: 400d}, correlation_cache: {ttl: 365d}}
exporters: {debug: {}}
service: {pipelines: {traces: {receivers: [otlp], processors: [order_enrich], exporters: [debug]}}}
"#;
    let issues = crate::config::Config::from_yaml(yaml).unwrap_err().issues;
    let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
    assert_eq!(paths, ["processors.order_enrich.wait", "processors.order_enrich.trace_cache.ttl"], "{issues:?}");
    assert!(issues[0].message.contains("at most 1h"), "{issues:?}");
}

/// The expiry of a trace that waits on a link forgets the link without a lock held from the
/// trace's leaving; a request that parked spans of the trace again in between, linked the same
/// way, still wakes when the linked trace gets its order.
#[test]
fn a_trace_parked_again_while_its_wait_ran_out_still_wakes_on_its_link() {
    let e = enricher(Duration::from_secs(5));
    let t0 = Instant::now();
    let linked = |id: u8| {
        let mut s = span(2, id, &format!("consume {id}"), 5, &[("messaging.system", "rabbitmq")]);
        s.links.push(Link { trace_id: vec![1; 16], span_id: vec![3; 8], ..Default::default() });
        s
    };
    assert!(e.process(request("crm-api", vec![linked(1)]), t0).is_empty(), "waits for trace 1's order");
    // Trace 2's wait runs out: the expiry takes it out of the buffer ...
    let (w, l) = ([2u8; 16], [1u8; 16]);
    let taken = e.shards.trace(&w).buffer.take(&w).expect("trace 2 waits");
    // ... a request parks a new span of it, linked the same way, before the expiry forgets ...
    assert!(e.process(request("crm-api", vec![linked(2)]), t0).is_empty());
    e.forget(&w, &taken.links, &taken.values, taken.spans.len(), &mut Tally::default());
    assert_eq!(taken.links, [l]);
    // ... and trace 1 gets its order: the new span comes out with it.
    let out = e.process(request("shop-api", vec![span(1, 3, "POST /orders", 2, &[("order.id", "A-7")])]), t0);
    let t = tags(&[out]);
    assert_eq!(order_of(&t, "consume 2").as_deref(), Some("A-7"), "{t:?}");
}
