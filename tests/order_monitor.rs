//! The order monitor end to end (issue 11): a thousand orders sent as order events with 2 s
//! thresholds, of which a known set is late or stuck in different transitions; exactly the
//! expected alerts fire (each once, in time) and resolve as expected, as the alert list, the
//! timelines, the order list filter, the metrics and a webhook receiver all say. Then the real
//! binary is killed with `kill -9` while deadlines are pending (some passing during the
//! downtime): after a restart every alert fires exactly once at the receiver. And every bad rule
//! is a configuration error with its path.

mod common;
#[path = "common/monitor.rs"]
mod monitor;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use common::{get_json, metric, metrics_text, start_gateway};
use monitor::{now_ns, post_events, Receiver, SEC};
use serde_json::{json, Value};
use tracegate::shared::format_rfc3339_nanos;
use tracegate::Config;

fn event(order: &str, status: Option<&str>, stage: Option<&str>, t: u64) -> Value {
    let mut e = json!({"order_id": order, "service": "crm-api", "time": format_rfc3339_nanos(t)});
    if let Some(s) = status {
        e["status"] = json!(s);
    }
    if let Some(s) = stage {
        e["stage"] = json!(s);
    }
    e
}

const MONITOR: &str = r#"
monitors:
  order_sla:
    lifecycle: [new, accepted, in_production, manufactured, handed_to_courier]
    terminal: [cancelled]
    grace: 1s
    repeat_interval: 1h
    rules:
      - {name: crm_accepts, from: new, to: accepted, within: 2s}
      - {name: production, from: accepted, to: manufactured, within: 2s, severity: critical}
      - {name: bus_wait, from_stage: bus_publish, to_stage: bus_consume, within: 2s}
    notify: [hook]
"#;

fn config(hook: &str) -> String {
    format!(
        r#"
receivers:
  otlp: {{http: {{endpoint: "127.0.0.1:0"}}}}
processors:
  order_enrich: {{}}
exporters:
  local: {{type: embedded, path: "{{data}}", retention: 72h, batch: {{max_wait: 5ms}}}}
notifiers:
  hook: {{type: webhook, url: "{hook}"}}
api: {{endpoint: "127.0.0.1:0", public_url: "https://tracegate.shop.example"}}
service:
  pipelines:
    traces: {{receivers: [otlp], processors: [order_enrich], exporters: [local]}}
{MONITOR}"#
    )
}

async fn alerts(api: SocketAddr, query: &str) -> Vec<Value> {
    let (status, body) = get_json(&format!("http://{api}/api/v1/alerts?limit=1000{query}")).await;
    assert_eq!(status, 200, "{body}");
    body["alerts"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_orders_raise_exactly_the_expected_alerts_once_each() {
    let receiver = Receiver::start().await;
    let (gateway, _dir) = start_gateway(&config(&receiver.url())).await;
    let (http, api) = (gateway.http_addr().unwrap(), gateway.api_addr().unwrap());

    let t0 = now_ns();
    let mut events = Vec::new();
    let mut from_time: BTreeMap<(String, String), u64> = BTreeMap::new();
    // 917 orders on time: every step well within its threshold (their times lie in the past).
    let base = t0 - 3 * SEC / 2;
    for i in 0..917 {
        let o = format!("OK-{i:04}");
        events.push(event(&o, Some("new"), Some("created"), base));
        events.push(event(&o, None, Some("bus_publish"), base + SEC / 10));
        events.push(event(&o, Some("accepted"), Some("bus_consume"), base + SEC / 2));
        events.push(event(&o, Some("manufactured"), None, base + SEC));
    }
    // 30 stuck in `new`, 30 stuck in `accepted`, 20 stuck between publish and consume.
    for i in 0..30 {
        let o = format!("NEW-{i:02}");
        events.push(event(&o, Some("new"), None, t0));
        from_time.insert((o, "crm_accepts".into()), t0);
        let o = format!("ACC-{i:02}");
        events.push(event(&o, Some("new"), None, t0 - SEC / 5));
        events.push(event(&o, Some("accepted"), None, t0));
        from_time.insert((o, "production".into()), t0);
    }
    for i in 0..20 {
        let o = format!("BUS-{i:02}");
        events.push(event(&o, Some("new"), None, t0 - SEC / 5));
        events.push(event(&o, Some("accepted"), None, t0 - SEC / 10));
        events.push(event(&o, Some("manufactured"), None, t0));
        events.push(event(&o, None, Some("bus_publish"), t0));
        from_time.insert((o, "bus_wait".into()), t0);
    }
    // Three special orders: late by event time, late data, cancelled.
    events.push(event("LATE-EVT", Some("new"), None, t0));
    events.push(event("LATE-DATA", Some("new"), None, t0));
    events.push(event("CANCEL", Some("new"), None, t0));
    events.push(event("CANCEL", Some("cancelled"), None, t0 + SEC));
    from_time.insert(("LATE-EVT".into(), "crm_accepts".into()), t0);
    from_time.insert(("LATE-DATA".into(), "crm_accepts".into()), t0);
    assert_eq!(events.iter().map(|e| e["order_id"].as_str().unwrap()).collect::<BTreeSet<_>>().len(), 1000);
    post_events(http, &events).await;

    // LATE-EVT reaches `accepted` 2.5 s after `new` and is delivered at once, before the wall
    // clock deadline (3 s): fired and resolved together, with the real duration.
    tokio::time::sleep(Duration::from_nanos((t0 + 5 * SEC / 2).saturating_sub(now_ns()))).await;
    let t = t0 + 5 * SEC / 2;
    post_events(http, &[event("LATE-EVT", Some("accepted"), None, t), event("LATE-EVT", Some("manufactured"), None, t)]).await;

    // Every stuck order fires (80) and LATE-EVT (1), then LATE-DATA once its deadline passed.
    receiver.wait_for("fired", 82, Duration::from_secs(10)).await;
    // LATE-DATA's `accepted` happened 1 s after `new` but arrives only now: late data.
    post_events(http, &[event("LATE-DATA", Some("accepted"), None, t0 + SEC), event("LATE-DATA", Some("manufactured"), None, t0 + SEC)])
        .await;
    // Ten orders stuck in `new` reach `accepted` now: too late, resolved with the real duration.
    let now = now_ns();
    let resolved_late: Vec<Value> = (0..10)
        .flat_map(|i| {
            [event(&format!("NEW-{i:02}"), Some("accepted"), None, now), event(&format!("NEW-{i:02}"), Some("manufactured"), None, now)]
        })
        .collect();
    post_events(http, &resolved_late).await;
    receiver.wait_for("resolved", 12, Duration::from_secs(5)).await;
    // Quiet for longer than any threshold + grace: nothing else fires.
    tokio::time::sleep(Duration::from_secs(4)).await;

    // The webhook: exactly one Fired per expected alert, one Resolved per resolution, no more.
    let counts = receiver.counts();
    let mut expected: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    for (order, rule) in from_time.keys() {
        expected.insert(("fired".into(), order.clone(), rule.clone()), 1);
    }
    for o in (0..10).map(|i| format!("NEW-{i:02}")).chain(["LATE-EVT".into(), "LATE-DATA".into()]) {
        expected.insert(("resolved".into(), o, "crm_accepts".into()), 1);
    }
    assert_eq!(counts, expected, "notices at the webhook");

    // The alert list says the same, newest first.
    let all = alerts(api, "").await;
    assert_eq!(all.len(), 82);
    let fired: Vec<&str> = all.iter().map(|a| a["fired_at"].as_str().unwrap()).collect();
    assert!(fired.windows(2).all(|w| w[0] >= w[1]), "newest first");
    for a in &all {
        let key = (a["order_id"].as_str().unwrap().to_string(), a["rule"].as_str().unwrap().to_string());
        let from = from_time[&key];
        let fired_at = tracegate::shared::parse_rfc3339(a["fired_at"].as_str().unwrap()).unwrap();
        assert!(
            fired_at <= from + 4 * SEC,
            "{key:?} fired {:.2} s after its clock started (threshold 2 s + grace 1 s + 1 s)",
            (fired_at - from) as f64 / 1e9
        );
    }
    let firing = alerts(api, "&state=firing").await;
    assert_eq!(firing.len(), 70);
    assert_eq!(alerts(api, "&state=firing&rule=production").await.len(), 30);
    assert_eq!(alerts(api, "&severity=critical").await.len(), 30);
    let resolved = alerts(api, "&state=resolved").await;
    let late_data: Vec<&str> = resolved.iter().filter(|a| a["late_data"] == true).map(|a| a["order_id"].as_str().unwrap()).collect();
    assert_eq!(late_data, ["LATE-DATA"]);
    let late_evt = resolved.iter().find(|a| a["order_id"] == "LATE-EVT").unwrap();
    assert_eq!((late_evt["elapsed_seconds"].as_f64(), late_evt["late_data"].as_bool()), (Some(2.5), Some(false)));

    // The timelines carry their alerts; on-time and cancelled orders have none.
    let (_, timeline) = get_json(&format!("http://{api}/api/v1/orders/LATE-DATA")).await;
    let a = &timeline["alerts"][0];
    assert_eq!(
        (a["rule"].as_str(), a["state"].as_str(), a["late_data"].as_bool(), a["elapsed_seconds"].as_f64()),
        (Some("crm_accepts"), Some("resolved"), Some(true), Some(1.0))
    );
    assert_eq!((a["from"].as_str(), a["to"].as_str(), a["threshold_seconds"].as_f64()), (Some("new"), Some("accepted"), Some(2.0)));
    assert!(a["resolved_at"].is_string());
    let (_, timeline) = get_json(&format!("http://{api}/api/v1/orders/ACC-07")).await;
    assert_eq!((timeline["alerts"][0]["state"].as_str(), timeline["alerts"][0]["severity"].as_str()), (Some("firing"), Some("critical")));
    for o in ["OK-0000", "OK-0916", "CANCEL"] {
        let (status, timeline) = get_json(&format!("http://{api}/api/v1/orders/{o}")).await;
        assert_eq!((status, timeline["alerts"].clone()), (200, json!([])), "{o}");
    }

    // The order list filter finds exactly the orders with a firing alert.
    let (_, page) = get_json(&format!("http://{api}/api/v1/orders?alert=firing&limit=1000")).await;
    let ids: BTreeSet<&str> = page["orders"].as_array().unwrap().iter().map(|o| o["order_id"].as_str().unwrap()).collect();
    let want: BTreeSet<String> = firing.iter().map(|a| a["order_id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids, want.iter().map(String::as_str).collect());
    let (status, _) = get_json(&format!("http://{api}/api/v1/orders?alert=open")).await;
    assert_eq!(status, 400);

    // A notice carries the link and the last event.
    let bodies = receiver.bodies.lock().unwrap().clone();
    let notice = bodies.iter().find(|b| b["order_id"] == "BUS-03").unwrap();
    assert_eq!(notice["link"], "https://tracegate.shop.example/orders/BUS-03");
    assert_eq!((notice["last_event"]["stage"].as_str(), notice["from"].as_str()), (Some("bus_publish"), Some("stage:bus_publish")));

    // Metrics.
    let text = metrics_text(api).await;
    assert_eq!(metric(&text, "tracegate_order_alerts_total", &[]), 82.0, "{text}");
    assert_eq!(metric(&text, "tracegate_order_alerts_total", &[("rule", "production"), ("severity", "critical")]), 30.0);
    assert_eq!(metric(&text, "tracegate_order_alerts_firing", &[("rule", "crm_accepts")]), 20.0);
    assert_eq!(metric(&text, "tracegate_order_alerts_firing", &[("rule", "bus_wait")]), 20.0);
    assert_eq!(metric(&text, "tracegate_order_monitor_pending", &[]), 0.0);
    assert_eq!(metric(&text, "tracegate_order_monitor_dropped_facts_total", &[]), 0.0);
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_every_alert_fires_exactly_once() {
    let receiver = Receiver::start().await;
    let run = monitor::kill_9_scenario(
        &receiver,
        r#"
exporters:
  local: {type: embedded, path: "{dir}/data", batch: {max_wait: 5ms}}
service:
  pipelines:
    traces: {receivers: [otlp], exporters: [local]}
"#,
    )
    .await;
    // Resolve some of the restored firing alerts, then stay quiet past every deadline.
    let resolutions: Vec<Value> = (0..5)
        .flat_map(|i| {
            [
                event(&format!("DOWN-{i}"), Some("accepted"), None, run.t0 + SEC),
                event(&format!("DOWN-{i}"), Some("manufactured"), None, run.t0 + 2 * SEC),
            ]
        })
        .collect();
    post_events(run.http, &resolutions).await;
    receiver.wait_for("resolved", 5, Duration::from_secs(5)).await;
    // Quiet for a while (the subject): nothing else may arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;

    monitor::assert_each_fired_once(&receiver);
    assert_eq!(receiver.count("resolved"), 5);
    let late_data = receiver.bodies.lock().unwrap().iter().filter(|b| b["kind"] == "resolved" && b["late_data"] == true).count();
    assert_eq!(late_data, 5, "DOWN orders reached `accepted` 1 s after `new`: the data was late, not the order");
    let (status, body) = get_json(&format!("http://{}/api/v1/alerts?limit=1000", run.api)).await;
    assert_eq!((status, body["alerts"].as_array().map(Vec::len)), (200, Some(40)));
    let log_text = std::fs::read_to_string(&run.log).unwrap();
    assert!(log_text.contains("order monitor state restored"), "{log_text}");
}

fn issues(yaml: &str) -> Vec<(String, String)> {
    match Config::from_yaml_with_env(yaml, &|_| None) {
        Ok(_) => panic!("expected errors in:\n{yaml}"),
        Err(e) => e.issues.into_iter().map(|i| (i.path, i.message)).collect(),
    }
}

#[test]
fn every_bad_rule_is_an_error_with_its_path() {
    let with = |rules: &str, extra: &str| {
        format!(
            r#"
receivers: {{otlp: {{http: {{endpoint: "127.0.0.1:0"}}}}}}
exporters: {{local: {{type: embedded, path: /tmp/tracegate-monitor-validate}}}}
notifiers: {{hook: {{type: webhook, url: "http://127.0.0.1:9/hook"}}}}
service: {{pipelines: {{traces: {{receivers: [otlp], exporters: [local]}}}}}}
monitors:
  sla:
    type: order_sla
    lifecycle: [new, accepted, manufactured]
    terminal: [cancelled]
    rules:
{rules}
{extra}"#
        )
    };
    let good = "      - {name: r, from: new, to: accepted, within: 15m}";
    Config::from_yaml_with_env(&with(good, "    notify: [hook]"), &|_| None).expect("a good monitor is valid");
    for (rules, extra, path, says) in [
        (good, "    notify: [pager]", "monitors.sla.notify[0]", "unknown notifier \"pager\""),
        ("      - {name: r, from: new, to: shipped, within: 15m}", "", "monitors.sla.rules[0].to", "unknown status \"shipped\""),
        ("      - {name: r, from: created, to: accepted, within: 15m}", "", "monitors.sla.rules[0].from", "unknown status"),
        ("      - {name: r, from: new, to: new, within: 15m}", "", "monitors.sla.rules[0].to", "equals from"),
        ("      - {name: r, from: new, to: accepted, within: 0s}", "", "monitors.sla.rules[0].within", "zero"),
        ("      - {name: r, from: new, to: accepted, within: -5m}", "", "monitors.sla.rules[0].within", "negative"),
        ("      - {name: r, from: manufactured, to: accepted, within: 1h}", "", "monitors.sla.rules[0].from", "comes after"),
        ("      - {name: r, from: new, to_stage: bus_consume, within: 1h}", "", "monitors.sla.rules[0]", "not a mix"),
        (
            "      - {name: r, from: new, to: accepted, within: 1h, severity: urgent}",
            "",
            "monitors.sla.rules[0].severity",
            "unknown severity",
        ),
        (good, "    grace: 0s", "monitors.sla.grace", "zero"),
        (good, "    repeat_interval: -1h", "monitors.sla.repeat_interval", "negative"),
        ("      - {name: r, from: cancelled, to: accepted, within: 1h}", "", "monitors.sla.rules[0].from", "terminal"),
        (&format!("{good}\n      - {{name: r, from: accepted, to: manufactured, within: 1h}}"), "", "monitors.sla.rules[1].name", "twice"),
    ] {
        let found = issues(&with(rules, extra));
        assert!(
            found.iter().any(|(p, m)| p == path && m.contains(says)),
            "expected {path}: ...{says}... for {rules} {extra}; got {found:#?}"
        );
    }
    // Monitor state lives in the embedded store: a monitor without one is refused.
    let without_store = with(good, "")
        .replace("local: {type: embedded, path: /tmp/tracegate-monitor-validate}", "log: {type: debug}")
        .replace("exporters: [local]", "exporters: [log]");
    assert!(issues(&without_store).iter().any(|(p, m)| p == "monitors.sla" && m.contains("embedded")));
    let bad_url = with(good, "").replace("service:", "api: {public_url: \"tracegate.example\"}\nservice:");
    assert!(issues(&bad_url).iter().any(|(p, _)| p == "api.public_url"));
    let unknown_type = with(good, "").replace("type: order_sla", "type: order_slo");
    assert!(issues(&unknown_type).iter().any(|(p, m)| p == "monitors.sla.type" && m.contains("order_sla")));
}
