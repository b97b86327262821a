//! Order monitors with their state in Elasticsearch (issue 11): two gateways on one
//! Elasticsearch-API server (noida-db) watch the same orders, some events sent to both, some
//! split between them; each alert is announced exactly once (one `fired`, one `resolved`) at
//! the one webhook receiver, both gateways list each alert once, and an order whose `new` one
//! gateway saw and whose `accepted` the other saw raises nothing. Then a gateway is stopped
//! with deadlines pending and a new one started on the same index after they passed: each
//! fires once, and nothing that fired before fires again. Last, the real binary on
//! Elasticsearch is killed with `kill -9` while deadlines are pending (some passing during the
//! downtime): after a restart every alert fires exactly once at the receiver.

mod common;
#[path = "common/es_servers.rs"]
mod es_servers;
#[path = "common/monitor.rs"]
mod monitor;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use common::{eventually, get_json, send, start_gateway, when};
use es_servers::{EsKind, EsServer};
use monitor::{now_ns, post_events, status_event as event, Receiver, SEC};
use serde_json::{json, Value};

fn config(es: &str, hook: &str) -> String {
    format!(
        r#"
receivers:
  otlp: {{http: {{endpoint: "127.0.0.1:0"}}}}
exporters:
  es:
    type: elasticsearch
    endpoints: ["{es}"]
    dead_letter_path: "{{data}}/dead-letter.jsonl"
    batch: {{max_wait: 5ms}}
    retry_on_failure: {{initial_interval: 100ms, max_interval: 500ms}}
notifiers:
  hook: {{type: webhook, url: "{hook}"}}
api: {{endpoint: "127.0.0.1:0"}}
query: {{backend: es}}
service:
  pipelines:
    traces: {{receivers: [otlp], exporters: [es]}}
monitors:
  order_sla:
    lifecycle: [new, accepted, in_production, manufactured, handed_to_courier]
    terminal: [cancelled]
    grace: 1s
    repeat_interval: 1h
    rules:
      - {{name: crm_accepts, from: new, to: accepted, within: 2s}}
      - {{name: production, from: accepted, to: manufactured, within: 30s}}
    notify: [hook]
"#
    )
}

async fn alerts(api: SocketAddr, query: &str) -> Vec<Value> {
    let (status, body) = get_json(&format!("http://{api}/api/v1/alerts?limit=1000{query}")).await;
    assert_eq!(status, 200, "{body}");
    body["alerts"].as_array().unwrap().clone()
}

/// Waits until `api` lists `n` alerts matching `query` (searches see writes after a refresh).
async fn wait_alerts(api: SocketAddr, query: &str, n: usize) -> Vec<Value> {
    eventually(&format!("{n} alerts listed for {query:?}"), Duration::from_secs(10), || async {
        when(alerts(api, query).await, |found| found.len() == n)
    })
    .await
}

fn keys(alerts: &[Value]) -> Vec<(String, String)> {
    alerts.iter().map(|a| (a["order_id"].as_str().unwrap().to_string(), a["rule"].as_str().unwrap().to_string())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_one_elasticsearch_send_each_notice_once() {
    let es = EsServer::start(EsKind::Noida);
    let receiver = Receiver::start().await;
    let cfg = config(&es.url, &receiver.url());
    let (a, _da) = start_gateway(&cfg).await;
    let (b, _db) = start_gateway(&cfg).await;
    let (http_a, http_b) = (a.http_addr().unwrap(), b.http_addr().unwrap());
    let (api_a, api_b) = (a.api_addr().unwrap(), b.api_addr().unwrap());

    let t0 = now_ns();
    // To both gateways: 20 orders on time, 10 stuck in `new`, 5 whose `accepted` comes late.
    let mut both = Vec::new();
    for i in 0..20 {
        let o = format!("OK-{i:02}");
        both.extend([event(&o, "new", t0 - SEC), event(&o, "accepted", t0 - SEC / 2), event(&o, "manufactured", t0)]);
    }
    for i in 0..10 {
        both.push(event(&format!("STUCK-{i:02}"), "new", t0));
    }
    for i in 0..5 {
        both.push(event(&format!("LATE-{i}"), "new", t0));
    }
    tokio::join!(post_events(http_a, &both), post_events(http_b, &both));
    // Split: `new` seen by A only, `accepted` (in time) by B only, in both orders of arrival.
    let split_new: Vec<Value> = (0..5).map(|i| event(&format!("SPLIT-{i}"), "new", t0)).collect();
    let split_acc: Vec<Value> = (0..5).map(|i| event(&format!("SPLIT-{i}"), "accepted", t0 + SEC / 2)).collect();
    let rev_acc: Vec<Value> = (0..5).map(|i| event(&format!("REV-{i}"), "accepted", t0 + SEC / 2)).collect();
    let rev_new: Vec<Value> = (0..5).map(|i| event(&format!("REV-{i}"), "new", t0)).collect();
    post_events(http_a, &split_new).await;
    post_events(http_b, &rev_acc).await;
    // The first halves reach Elasticsearch before the second ones: nothing outside shows when a
    // gateway has written an event's fact, so a fixed margin.
    tokio::time::sleep(Duration::from_millis(500)).await;
    post_events(http_b, &split_acc).await;
    post_events(http_a, &rev_new).await;

    // Deadlines (t0 + 2 s + 1 s grace) pass on both gateways: 15 alerts, each fired once.
    receiver.wait_for("fired", 15, Duration::from_secs(10)).await;
    // LATE-*: `accepted` 1 s after `new` by event time, delivered late, to B only: late data.
    // STUCK-00..02 reach `accepted` now, to A only: late, resolved with the real duration.
    let late: Vec<Value> = (0..5).map(|i| event(&format!("LATE-{i}"), "accepted", t0 + SEC)).collect();
    let now = now_ns();
    let stuck: Vec<Value> = (0..3).map(|i| event(&format!("STUCK-{i:02}"), "accepted", now)).collect();
    tokio::join!(post_events(http_b, &late), post_events(http_a, &stuck));
    receiver.wait_for("resolved", 8, Duration::from_secs(10)).await;
    // Quiet for longer than threshold + grace (the subject): nothing else arrives.
    tokio::time::sleep(Duration::from_secs(4)).await;

    let mut expected: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    for o in (0..10).map(|i| format!("STUCK-{i:02}")).chain((0..5).map(|i| format!("LATE-{i}"))) {
        expected.insert(("fired".into(), o, "crm_accepts".into()), 1);
    }
    for o in (0..3).map(|i| format!("STUCK-{i:02}")).chain((0..5).map(|i| format!("LATE-{i}"))) {
        expected.insert(("resolved".into(), o, "crm_accepts".into()), 1);
    }
    assert_eq!(receiver.counts(), expected, "notices at the webhook");

    // Either gateway lists each alert once, with the same content.
    let from_a = wait_alerts(api_a, "", 15).await;
    let from_b = wait_alerts(api_b, "", 15).await;
    assert_eq!(from_a.len(), 15, "{from_a:#?}");
    let unique: BTreeSet<(String, String)> = keys(&from_a).into_iter().collect();
    assert_eq!(unique.len(), 15);
    assert_eq!(from_a, from_b);
    let fired: Vec<&str> = from_a.iter().map(|a| a["fired_at"].as_str().unwrap()).collect();
    assert!(fired.windows(2).all(|w| w[0] >= w[1]), "newest first");
    let firing = wait_alerts(api_b, "&state=firing", 7).await;
    assert_eq!(keys(&firing).into_iter().map(|(o, _)| o).collect::<BTreeSet<_>>(), (3..10).map(|i| format!("STUCK-{i:02}")).collect());
    let resolved = alerts(api_a, "&state=resolved").await;
    let late_data: BTreeSet<&str> = resolved.iter().filter(|a| a["late_data"] == true).map(|a| a["order_id"].as_str().unwrap()).collect();
    assert_eq!(late_data, (0..5).map(|i| format!("LATE-{i}")).collect::<BTreeSet<_>>().iter().map(String::as_str).collect());

    // The timeline (spans from Elasticsearch) carries its alert; the order list filter works.
    let (_, timeline) = eventually("the timeline of LATE-0", Duration::from_secs(10), || async {
        when(get_json(&format!("http://{api_a}/api/v1/orders/LATE-0")).await, |(status, _)| *status == 200)
    })
    .await;
    let alert = &timeline["alerts"][0];
    assert_eq!(
        (alert["state"].as_str(), alert["late_data"].as_bool(), alert["elapsed_seconds"].as_f64()),
        (Some("resolved"), Some(true), Some(1.0))
    );
    for o in ["OK-00", "SPLIT-0", "REV-4"] {
        let (_, timeline) = get_json(&format!("http://{api_b}/api/v1/orders/{o}")).await;
        assert_eq!(timeline["alerts"], json!([]), "{o}");
    }
    let stuck: BTreeSet<String> = (3..10).map(|i| format!("STUCK-{i:02}")).collect();
    eventually("STUCK-03..09 listed with a firing alert", Duration::from_secs(10), || async {
        let (status, page) = get_json(&format!("http://{api_a}/api/v1/orders?alert=firing&limit=100")).await;
        assert_eq!(status, 200, "{page}");
        let ids: BTreeSet<String> =
            page["orders"].as_array().unwrap().iter().map(|o| o["order_id"].as_str().unwrap().to_string()).collect();
        when(ids, |ids| *ids == stuck)
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
}

/// A notice whose receiver is down for longer than the lease on it (30 s) stays with the
/// gateway that keeps retrying it: it renews its claim, so the other gateway, watching the
/// outbox, does not take it over, and the receiver gets it once when it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_retried_longer_than_its_lease_still_goes_out_once() {
    let es = EsServer::start(EsKind::Noida);
    let receiver = Receiver::start().await;
    let cfg = config(&es.url, &receiver.url()).replace(
        r#"hook: {type: webhook, url: ""#,
        r#"hook: {type: webhook, retry_on_failure: {initial_interval: 200ms, max_interval: 1s, max_elapsed_time: 2m}, url: ""#,
    );
    let (a, _da) = start_gateway(&cfg).await;
    receiver.refuse_for(Duration::from_secs(40));
    let t0 = now_ns();
    let stuck: Vec<Value> = (0..3).map(|i| event(&format!("SLOW-{i}"), "new", t0)).collect();
    post_events(a.http_addr().unwrap(), &stuck).await;
    // A fires them at t0 + 3 s and keeps retrying. B starts while it does: its first scan of
    // the outbox finds A's claims, and it looks again every few seconds until they are
    // confirmed, ready to take over any that A lets go past its lease.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (b, _db) = start_gateway(&cfg).await;
    // The receiver answers again 40 s after it went down.
    receiver.wait_for("fired", 3, Duration::from_secs(55)).await;
    // Longer than a scan and a lease after that: nothing else arrives.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let expected: BTreeMap<(String, String, String), usize> =
        (0..3).map(|i| (("fired".to_string(), format!("SLOW-{i}"), "crm_accepts".to_string()), 1)).collect();
    assert_eq!(receiver.counts(), expected, "notices at the webhook");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_that_passed_while_no_gateway_ran_fires_once_at_start() {
    let es = EsServer::start(EsKind::Noida);
    let receiver = Receiver::start().await;
    let cfg = config(&es.url, &receiver.url());
    let (a, _da) = start_gateway(&cfg).await;
    let http = a.http_addr().unwrap();
    let t0 = now_ns();
    // FIRED-* fire before the stop; PENDING-* are pending when it stops.
    let early: Vec<Value> = (0..3).map(|i| event(&format!("FIRED-{i}"), "new", t0 - 3 * SEC)).collect();
    let pending: Vec<Value> = (0..4).map(|i| event(&format!("PENDING-{i}"), "new", t0)).collect();
    post_events(http, &early).await;
    post_events(http, &pending).await;
    receiver.wait_for("fired", 3, Duration::from_secs(5)).await;
    a.shutdown().await;
    assert_eq!(receiver.count("fired"), 3, "{:?}", receiver.counts());

    // Down past the pending deadlines (t0 + 3 s); a new gateway starts on the same index.
    tokio::time::sleep(Duration::from_nanos((t0 + 4 * SEC).saturating_sub(now_ns()))).await;
    let (b, _db) = start_gateway(&cfg).await;
    receiver.wait_for("fired", 7, Duration::from_secs(5)).await;
    // Quiet for a while (the subject): nothing fires again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let counts = receiver.counts();
    assert_eq!(counts.len(), 7, "{counts:?}");
    assert!(counts.values().all(|n| *n == 1), "{counts:?}");
    assert_eq!(wait_alerts(b.api_addr().unwrap(), "&state=firing", 7).await.len(), 7);
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_on_elasticsearch_every_alert_fires_exactly_once() {
    let es = EsServer::start(EsKind::Noida);
    let receiver = Receiver::start().await;
    let backend = format!(
        r#"
exporters:
  es:
    type: elasticsearch
    endpoints: ["{es}"]
    batch: {{max_wait: 5ms}}
    sending_queue: {{storage: "{{dir}}/queue"}}
query: {{backend: es}}
service:
  pipelines:
    traces: {{receivers: [otlp], exporters: [es]}}
"#,
        es = es.url,
    );
    let run = monitor::kill_9_scenario(&receiver, &backend).await;
    // Quiet for a while (the subject): nothing else may arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    monitor::assert_each_fired_once(&receiver);
    assert_eq!(wait_alerts(run.api, "&state=firing", 40).await.len(), 40);
}
