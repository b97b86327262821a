//! The sharded enricher under concurrency: many threads enrich interleaved requests of the same
//! traces (joined by span links, link chains and correlation values across traces), and every
//! span comes out once with the tags a single-threaded run gives it.

use std::collections::BTreeMap;
use std::time::Duration;

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::Link;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use tokio::time::Instant;

use super::*;
use crate::telemetry::Metrics;

const THREADS: usize = 8;

fn trace(order: u32, which: u8) -> Vec<u8> {
    let mut t = vec![which; 16];
    t[..4].copy_from_slice(&order.to_be_bytes());
    t
}

fn span(order: u32, which: u8, id: u8, name: &str, kind: i32, kv: &[(&str, String)]) -> Span {
    let mut span_id = vec![id; 8];
    span_id[..4].copy_from_slice(&order.to_be_bytes());
    let mut s = Span { trace_id: trace(order, which), span_id, name: format!("{name} #{order}"), kind, ..Default::default() };
    for (k, v) in kv {
        attrs::set(&mut s.attributes, k, v);
    }
    s
}

fn link(s: &mut Span, order: u32, which: u8, id: u8) {
    let mut span_id = vec![id; 8];
    span_id[..4].copy_from_slice(&order.to_be_bytes());
    s.links.push(Link { trace_id: trace(order, which), span_id, ..Default::default() });
}

/// One order's spans over six traces: the shop's (names the order, a file id and the user), the
/// CRM's (links to the shop's publish span), the MES's (links to the CRM's: a chain), the file
/// upload before the order and a render after it (a correlation value each), and browsing
/// (no order).
fn order_flow(n: u32) -> Vec<(&'static str, Span)> {
    let file = format!("F-{n}");
    let mut consume = span(n, 2, 1, "orders process", 5, &[("messaging.system", "rabbitmq".into())]);
    link(&mut consume, n, 1, 3);
    let mut production = span(n, 3, 1, "POST /production", 2, &[("http.request.method", "POST".into())]);
    link(&mut production, n, 2, 1);
    vec![
        ("shop-api", span(n, 4, 1, "upload file", 2, &[("constructor.file_id", file.clone())])),
        ("shop-api", span(n, 4, 2, "INSERT files", 3, &[("db.system.name", "postgresql".into()), ("db.operation.name", "INSERT".into())])),
        (
            "shop-api",
            span(
                n,
                1,
                1,
                "POST /orders",
                2,
                &[
                    ("http.request.method", "POST".into()),
                    ("http.route", "/orders".into()),
                    ("order.id", format!("A-{n}")),
                    ("constructor.file_id", file.clone()),
                    ("enduser.id", format!("u-{n}")),
                ],
            ),
        ),
        ("shop-api", span(n, 1, 2, "INSERT orders", 3, &[("db.system.name", "postgresql".into()), ("db.operation.name", "INSERT".into())])),
        ("shop-api", span(n, 1, 3, "orders publish", 4, &[("messaging.system", "rabbitmq".into())])),
        ("crm-api", consume),
        ("crm-api", span(n, 2, 2, "status accepted", 1, &[("order.status", "accepted".into())])),
        ("crm-api", span(n, 2, 3, "UPDATE orders", 3, &[("db.system.name", "mssql".into()), ("db.operation.name", "UPDATE".into())])),
        ("mes-api", production),
        ("mes-api", span(n, 3, 2, "INSERT production", 3, &[("db.system.name", "mssql".into()), ("db.operation.name", "INSERT".into())])),
        ("shop-api", span(n, 5, 1, "render file", 1, &[("file.id", file)])),
        ("shop-api", span(n, 6, 1, "GET /catalog", 2, &[])),
    ]
}

/// Orders whose files are saved in traces of their own: with no wait, a file saved before its
/// order goes to the correlation hold and is claimed from there.
fn held_flow(n: u32) -> Vec<(&'static str, Span)> {
    let file = format!("F-{n}");
    let mut spans =
        vec![("shop-api", span(n, 1, 1, "POST /orders", 2, &[("order.id", format!("A-{n}")), ("constructor.file_id", file.clone())]))];
    for i in 0..4u8 {
        spans.push(("shop-api", span(n, 10 + i, 1, "save file", 1, &[("constructor.file_id", file.clone())])));
    }
    spans
}

fn request(spans: Vec<(&'static str, Span)>) -> Vec<ResourceSpans> {
    spans
        .into_iter()
        .map(|(service, s)| {
            let mut attributes: Vec<KeyValue> = Vec::new();
            attrs::set(&mut attributes, "service.name", service);
            ResourceSpans {
                resource: Some(Resource { attributes, ..Default::default() }),
                scope_spans: vec![ScopeSpans { spans: vec![s], ..Default::default() }],
                ..Default::default()
            }
        })
        .collect()
}

/// The spans of `orders` orders, shuffled and cut into requests of 1 to 40 spans.
fn requests(seed: u64, orders: u32, flow: fn(u32) -> Vec<(&'static str, Span)>) -> Vec<Vec<ResourceSpans>> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut spans: Vec<(&'static str, Span)> = (1..=orders).flat_map(flow).collect();
    rng.shuffle(&mut spans);
    let mut out = Vec::new();
    while !spans.is_empty() {
        let take = rng.usize(1..=spans.len().min(40));
        out.push(request(spans.drain(..take).collect()));
    }
    out
}

/// (trace id, span id) -> (order.id, order.stage, order.status, enduser.id)
type Tags = BTreeMap<(Vec<u8>, Vec<u8>), (Option<String>, Option<String>, Option<String>, Option<String>)>;

fn tags(batches: &[Vec<ResourceSpans>]) -> Tags {
    let mut out = Tags::new();
    for rs in batches.iter().flatten() {
        for s in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
            let get = |k: &str| attrs::get(&s.attributes, k).map(|v| v.into_owned());
            let previous = out.insert(
                (s.trace_id.clone(), s.span_id.clone()),
                (get("order.id"), get("order.stage"), get("order.status"), get("enduser.id")),
            );
            assert!(previous.is_none(), "span {} came out twice", s.name);
        }
    }
    out
}

/// Runs the requests on `threads` threads sharing one enricher, all at `t0`; then lets go of
/// everything that waits (the buffer at `t0 + 5s`, the hold's claimed spans).
fn run(e: &OrderEnricher, requests: Vec<Vec<ResourceSpans>>, threads: usize, t0: Instant) -> Vec<Vec<ResourceSpans>> {
    let mut outs = e.process_on_threads(requests, threads, t0);
    outs.push(e.expire(t0 + Duration::from_secs(5)));
    // Claimed spans leave the hold on later rounds (each round confirms the one before).
    for round in 1..=3 {
        outs.push(e.expire(t0 + Duration::from_secs(5) + Duration::from_millis(round)));
    }
    outs
}

fn enricher(config: OrderEnrichConfig) -> OrderEnricher {
    OrderEnricher::new(config, Metrics::new().enrich("test")).unwrap()
}

#[test]
fn many_threads_tag_every_span_as_one_thread_does() {
    let config = OrderEnrichConfig { wait: Duration::from_secs(5), ..Default::default() };
    assert!(enricher(config.clone()).shard_count() > 1, "the default caches are sharded");
    for seed in 0..20 {
        let orders = 60;
        let reference = {
            let e = enricher(config.clone());
            tags(&run(&e, requests(seed, orders, order_flow), 1, Instant::now()))
        };
        // The reference is what the scenario tests pin: every span of an order has it.
        assert_eq!(reference.len(), orders as usize * 12);
        for ((t, _), (order, ..)) in &reference {
            let n = u32::from_be_bytes(t[..4].try_into().unwrap());
            let expected = (t[4] != 6).then(|| format!("A-{n}"));
            assert_eq!(order, &expected, "trace {t:?}");
        }
        let e = enricher(config.clone());
        let concurrent = tags(&run(&e, requests(seed, orders, order_flow), THREADS, Instant::now()));
        assert_eq!(concurrent.len(), reference.len(), "seed {seed}");
        let differ: Vec<_> =
            reference.iter().filter(|(k, v)| concurrent.get(*k) != Some(*v)).map(|(k, v)| (k, v, concurrent.get(k))).collect();
        assert!(differ.is_empty(), "seed {seed}: {} spans differ, e.g. {:?}", differ.len(), &differ[..differ.len().min(3)]);
        assert_eq!(e.buffered_spans(), 0);
        assert_eq!(e.metrics.tagged_link.get() + e.metrics.tagged_correlation.get() + e.metrics.tagged_trace.get(), orders as u64 * 10);
        assert_eq!(e.metrics.untagged_timeout.get(), orders as u64);
    }
}

#[test]
fn many_threads_and_the_correlation_hold_lose_no_claim() {
    for seed in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let hold = CorrelationHoldConfig {
            directory: dir.path().to_path_buf(),
            ttl: Duration::from_secs(3600),
            max_bytes: crate::shared::ByteSize::mib(16),
        };
        let config = OrderEnrichConfig { wait: Duration::ZERO, correlation_hold: Some(hold), ..Default::default() };
        let orders = 40;
        let e = enricher(config).with_correlation_hold(&format!("concurrent-{seed}")).unwrap();
        let t = tags(&run(&e, requests(seed, orders, held_flow), THREADS, Instant::now()));
        assert_eq!(t.len(), orders as usize * 5, "seed {seed}");
        for ((trace, _), (order, stage, ..)) in &t {
            let n = u32::from_be_bytes(trace[..4].try_into().unwrap());
            assert_eq!(order.as_deref(), Some(format!("A-{n}").as_str()), "seed {seed}: every saved file finds its order");
            if trace[4] >= 10 {
                assert_eq!(stage.as_deref(), Some("file_link"));
            }
        }
        assert_eq!(e.metrics.hold_spans.get(), 0, "seed {seed}: nothing left in the hold");
    }
}
