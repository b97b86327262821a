//! The quick start with Jaeger, against a real Jaeger v2: Jaeger runs with
//! `scripts/jaeger/config.yaml` on free ports, the gateway with `config/quickstart/jaeger.yaml`
//! pointed at it, `tracegate demo` sends its orders, and Jaeger's own query API must find every
//! order's traces by the `order.id` tag, with the stages and statuses tracegate wrote.
//!
//! Needs `JAEGER_BIN` (set by `scripts/test.sh`); without it the test says SKIPPED and returns.

mod common;
#[path = "common/jaeger.rs"]
mod jaeger;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::get_json;
use jaeger::{jaeger_bin, order_tag, start_quickstart_gateway, Jaeger};
use serde_json::Value;

/// One span as Jaeger's query API returns it: service, operation and its tags.
#[derive(Debug)]
struct JaegerSpan {
    trace_id: String,
    service: String,
    operation: String,
    tags: BTreeMap<String, String>,
}

/// Jaeger's `/api/traces` search, flattened to spans.
async fn search(ui: &str, service: &str, tags: &str) -> Vec<JaegerSpan> {
    let (status, body) = get_json(&format!("{ui}/api/traces?service={service}&tags={tags}&limit=100")).await;
    assert_eq!(status, 200, "Jaeger search for {service} {tags}: {body}");
    let mut spans = Vec::new();
    for trace in body["data"].as_array().unwrap() {
        for span in trace["spans"].as_array().unwrap() {
            let process = span["processID"].as_str().unwrap();
            let tags = span["tags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| {
                    let value = match &t["value"] {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (t["key"].as_str().unwrap().to_string(), value)
                })
                .collect();
            spans.push(JaegerSpan {
                trace_id: trace["traceID"].as_str().unwrap().to_string(),
                service: trace["processes"][process]["serviceName"].as_str().unwrap().to_string(),
                operation: span["operationName"].as_str().unwrap().to_string(),
                tags,
            });
        }
    }
    spans
}

fn one<'a>(spans: &'a [JaegerSpan], operation: &str) -> &'a JaegerSpan {
    let found: Vec<&JaegerSpan> = spans.iter().filter(|s| s.operation == operation).collect();
    assert_eq!(found.len(), 1, "one {operation:?} span expected among {spans:#?}");
    found[0]
}

fn tag<'a>(span: &'a JaegerSpan, key: &str) -> Option<&'a str> {
    span.tags.get(key).map(String::as_str)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_demo_order_is_found_in_jaeger_by_its_order_id_tag() {
    let Some(bin) = jaeger_bin("jaeger::every_demo_order_is_found_in_jaeger_by_its_order_id_tag") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let jaeger = Jaeger::start(&bin, dir.path());

    // The quick start's configuration as shipped, with free ports and a fresh data dir.
    let data = dir.path().join("data");
    let gateway = start_quickstart_gateway(&jaeger, &data).await;
    let http = format!("http://{}", gateway.http_addr().unwrap());
    let api = format!("http://{}", gateway.api_addr().unwrap());
    let ui = jaeger.ports.ui_url();

    // `tracegate demo` waits until Jaeger's search finds every order; it fails otherwise.
    let demo = {
        let (http, api, ui) = (http.clone(), api.clone(), ui.clone());
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_tracegate"))
                .args(["demo", "--otlp-http", &http, "--api", &api, "--jaeger-ui", &ui, "--orders", "3", "--timeout", "60s"])
                .output()
                .unwrap()
        })
        .await
        .unwrap()
    };
    let stdout = String::from_utf8_lossy(&demo.stdout).into_owned();
    assert!(demo.status.success(), "demo failed: {}\n{stdout}\nJaeger:\n{}", String::from_utf8_lossy(&demo.stderr), jaeger.logs());
    let orders: Vec<(String, String)> = stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("A-"))
        .map(|l| {
            let mut words = l.split_whitespace();
            (words.next().unwrap().to_string(), words.next().unwrap().to_string())
        })
        .collect();
    assert_eq!(orders.len(), 3, "{stdout}");
    assert!(stdout.contains(&format!("{ui}/search?service=shop-api&tags={}", order_tag(&orders[0].0))), "the UI link: {stdout}");

    for (order_id, final_status) in &orders {
        let by_order = order_tag(order_id);
        // The shop: the order's trace and the constructor upload it claimed, both tagged.
        let shop = search(&ui, "shop-api", &by_order).await;
        let traces: BTreeSet<&str> = shop.iter().map(|s| s.trace_id.as_str()).collect();
        assert_eq!(traces.len(), 2, "the order trace and the constructor trace: {shop:#?}");
        let created = one(&shop, "POST /orders");
        assert_eq!(tag(created, "order.id"), Some(order_id.as_str()));
        assert_eq!(tag(created, "order.stage"), Some("created"));
        assert_eq!(tag(created, "order.status"), Some("new"));
        assert_eq!(tag(one(&shop, "publish orders"), "order.stage"), Some("bus_publish"));
        assert_eq!(tag(one(&shop, "INSERT shop.orders"), "order.stage"), Some("db_save"));
        let upload = one(&shop, "POST /constructor/files");
        assert_eq!(tag(upload, "order.id"), Some(order_id.as_str()), "joined through constructor.file_id");
        assert_eq!(tag(upload, "order.stage"), Some("file_link"));

        // The CRM: its own trace, joined by the span link from the bus.
        let crm = search(&ui, "crm-api", &by_order).await;
        assert_eq!(crm.iter().map(|s| s.trace_id.as_str()).collect::<BTreeSet<_>>().len(), 1, "{crm:#?}");
        assert!(!traces.contains(crm[0].trace_id.as_str()), "the CRM's trace is another trace");
        let consume = one(&crm, "process orders");
        assert_eq!(tag(consume, "order.id"), Some(order_id.as_str()));
        assert_eq!(tag(consume, "order.stage"), Some("bus_consume"));
        let change = one(&crm, "OrderService.ChangeStatus");
        assert_eq!(tag(change, "order.stage"), Some("status_change"));
        assert_eq!(tag(change, "order.status"), Some("accepted"));

        // MES: its order events, each a span with its status, the last one the order's status.
        let mes = search(&ui, "mes-api", &by_order).await;
        let statuses: Vec<&str> = mes.iter().filter(|s| s.service == "mes-api").filter_map(|s| tag(s, "order.status")).collect();
        assert!(statuses.contains(&final_status.as_str()), "{final_status} among {statuses:?}");
        assert!(
            mes.iter().filter(|s| tag(s, "order.status").is_some()).all(|s| tag(s, "order.stage") == Some("status_change")),
            "{mes:#?}"
        );
    }
    // The tag search filters: another order id finds nothing.
    assert!(search(&ui, "shop-api", &order_tag("A-0")).await.is_empty());
    let statuses: BTreeSet<&str> = orders.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(statuses, BTreeSet::from(["handed_to_courier", "manufactured", "in_production"]));

    let report = gateway.shutdown_within(Duration::from_secs(10)).await;
    assert_eq!(report.undelivered_spans, 0);
}
