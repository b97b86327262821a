//! `POST /v1/order-events` on the OTLP/HTTP port: events from systems that cannot emit OTLP (MES)
//! become spans that reach a downstream OTLP receiver and the embedded store; invalid events are
//! named field by field; a re-posted event is stored once; a full queue asks the client to retry.

mod common;

use std::io::Write;
use std::time::Duration;

use common::{
    eventually, get_json, metric, metrics_text, send, span_attr, start_gateway, wait_metric, wait_timeline, when, Sink, SinkMode,
};
use serde_json::json;

const JSON: [(&str, &str); 1] = [("content-type", "application/json")];

/// The events carry fixed 2026 times: a long retention keeps the sweep from deleting them.
fn config(sink: &Sink, queue: &str) -> String {
    format!(
        r#"
receivers:
  otlp: {{http: {{endpoint: "127.0.0.1:0"}}}}
exporters:
  jaeger: {{type: otlp, endpoint: "{}", batch: {{max_wait: 5ms}}, retry_on_failure: {{initial_interval: 20ms, max_interval: 50ms, max_elapsed_time: 0s}}{queue}}}
  local: {{type: embedded, path: "{{data}}", retention: 87600h, batch: {{max_wait: 5ms}}}}
api: {{endpoint: "127.0.0.1:0"}}
service:
  pipelines:
    traces: {{receivers: [otlp], exporters: [jaeger, local]}}
"#,
        sink.endpoint()
    )
}

async fn post(url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> (u16, http::HeaderMap, serde_json::Value) {
    let (status, headers, body) = send("POST", url, headers, body).await;
    (status, headers, serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
}

async fn post_json(url: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let (status, _, reply) = post(url, &JSON, body.to_string().into_bytes()).await;
    (status, reply)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_become_spans_downstream_and_in_the_store() {
    let sink = Sink::start().await;
    let (gateway, _dir) = start_gateway(&config(&sink, "")).await;
    let url = format!("http://{}/v1/order-events", gateway.http_addr().unwrap());
    let api = gateway.api_addr().unwrap();

    // One event object.
    let manufactured = json!({"order_id": "A-1001", "service": "mes-api", "status": "manufactured", "stage": "status_change",
                              "time": "2026-11-20T10:00:00Z", "attributes": {"mes.line": "3", "mes.batch": 17, "mes.rework": false}});
    assert_eq!(post_json(&url, manufactured.clone()).await, (200, json!({"accepted": 1})));

    // An array, two services, an offset time and the default stage; gzip like any OTLP/HTTP body.
    let array = json!([
        {"order_id": "A-1001", "service": "mes-api", "status": "in_production", "time": "2026-11-20T10:30:00+02:00"},
        {"order_id": "A-1001", "service": "courier-gw", "status": "handed_to_courier", "stage": "status_change", "time": "2026-11-20T12:00:00Z"}
    ]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(array.to_string().as_bytes()).unwrap();
    let (status, _, reply) =
        post(&url, &[("content-type", "application/json; charset=utf-8"), ("content-encoding", "gzip")], gz.finish().unwrap()).await;
    assert_eq!((status, reply), (200, json!({"accepted": 2})));

    sink.wait_for(3, Duration::from_secs(10)).await;
    let spans = sink.spans();
    assert_eq!(spans.len(), 3);
    let (service, span) = spans.iter().find(|(_, s)| span_attr(s, "order.status").as_deref() == Some("manufactured")).unwrap();
    assert_eq!(service, "mes-api");
    assert_eq!(span.name, "order status_change");
    assert_eq!(span.kind, 1, "SPAN_KIND_INTERNAL");
    assert_eq!((span.start_time_unix_nano, span.end_time_unix_nano), (1_795_168_800_000_000_000, 1_795_168_800_000_000_000));
    let attrs: Vec<(String, String)> = span.attributes.iter().map(|kv| (kv.key.clone(), common::attr_string(kv.value.as_ref()))).collect();
    let expected = [
        ("order.id", "A-1001"),
        ("order.stage", "status_change"),
        ("order.status", "manufactured"),
        ("mes.batch", "17"),
        ("mes.line", "3"),
        ("mes.rework", "false"),
    ];
    assert_eq!(attrs, expected.map(|(k, v)| (k.to_string(), v.to_string())));
    assert_eq!(span.trace_id.len(), 16);
    assert_eq!(span.span_id.len(), 8);
    let in_production = spans.iter().map(|(_, s)| s).find(|s| span_attr(s, "order.status").as_deref() == Some("in_production")).unwrap();
    assert_eq!(in_production.start_time_unix_nano, 1_795_163_400_000_000_000, "10:30+02:00 is 08:30Z");
    assert_eq!(span_attr(in_production, "order.stage").as_deref(), Some("status_change"), "the default stage");
    assert_eq!(spans.iter().filter(|(s, _)| s == "courier-gw").count(), 1);

    // The embedded store answers the order's timeline from the events.
    let t = wait_timeline(api, "A-1001", 3, Duration::from_secs(5)).await;
    assert_eq!(t["status"], "handed_to_courier");
    assert_eq!(t["services"], json!(["courier-gw", "mes-api"]));
    assert_eq!(t["first_seen"], "2026-11-20T08:30:00.000000000Z");
    assert_eq!(t["last_seen"], "2026-11-20T12:00:00.000000000Z");
    assert_eq!(
        t["transitions"],
        json!([{"from": "in_production", "to": "manufactured", "seconds": 5400.0}, {"from": "manufactured", "to": "handed_to_courier", "seconds": 7200.0}])
    );
    assert_eq!(t["events"][1]["span_name"], "order status_change");
    assert_eq!(t["events"][1]["trace_id"], hex::encode(&span.trace_id));
    assert_eq!(t["events"][1]["span_id"], hex::encode(&span.span_id));
    assert_eq!(t["events"][1]["duration_ms"], 0.0);

    // A client that re-posts the same event (say, after a timeout) adds nothing to the store.
    assert_eq!(post_json(&url, manufactured).await, (200, json!({"accepted": 1})));
    sink.wait_for(4, Duration::from_secs(10)).await;
    let resent =
        sink.spans().into_iter().filter(|(_, s)| span_attr(s, "order.status").as_deref() == Some("manufactured")).collect::<Vec<_>>();
    assert_eq!(resent.len(), 2, "downstream sees the re-post");
    assert_eq!((&resent[0].1.trace_id, &resent[0].1.span_id), (&resent[1].1.trace_id, &resent[1].1.span_id), "with the same ids");
    // The exporters deliver independently: wait until the store has taken the re-post too.
    wait_metric(api, "tracegate_exporter_sent_spans_total", &[("exporter", "local")], |v| v >= 4.0, Duration::from_secs(5)).await;
    assert_eq!(metric(&metrics_text(api).await, "tracegate_exporter_sent_spans_total", &[("exporter", "local")]), 4.0);
    let t = wait_timeline(api, "A-1001", 3, Duration::from_secs(5)).await;
    assert_eq!(t["events"].as_array().unwrap().len(), 3, "stored once: {t}");
    let (status, trace) = get_json(&format!("http://{api}/api/v1/traces/{}", hex::encode(&span.trace_id))).await;
    assert_eq!(status, 200);
    assert_eq!(trace["resourceSpans"][0]["scopeSpans"][0]["spans"].as_array().unwrap().len(), 1);
    assert_eq!(trace["resourceSpans"][0]["scopeSpans"][0]["scope"]["name"], "tracegate.order_events");
    let resource = trace["resourceSpans"][0]["resource"]["attributes"].to_string();
    assert!(resource.contains("tracegate-order-events") && resource.contains("mes-api"), "{resource}");

    let text = metrics_text(api).await;
    assert_eq!(metric(&text, "tracegate_receiver_accepted_spans_total", &[("transport", "order_events")]), 4.0);
    assert_eq!(metric(&text, "tracegate_receiver_accepted_spans_total", &[("transport", "http")]), 0.0);
    gateway.shutdown_within(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_events_are_named_and_the_valid_ones_kept() {
    let sink = Sink::start().await;
    let (gateway, _dir) = start_gateway(&config(&sink, "")).await;
    let url = format!("http://{}/v1/order-events", gateway.http_addr().unwrap());
    let api = gateway.api_addr().unwrap();

    // Mixed: the good events are admitted, the bad ones named.
    let mixed = json!([
        {"order_id": "B-1", "service": "mes-api", "status": "accepted"},
        {"service": "mes-api", "status": "accepted"},
        {"order_id": "B-2", "service": "mes-api", "colour": "red"},
        {"order_id": "B-3", "service": "mes-api", "time": "2026-11-20 10:00"},
        {"order_id": "B-4", "service": "mes-api", "attributes": {"mes.line": [3]}},
        {"order_id": "B-5", "service": "mes-api", "stage": "db_save"}
    ]);
    let (status, reply) = post_json(&url, mixed).await;
    assert_eq!(status, 200);
    assert_eq!(reply["accepted"], 2);
    let rejected: Vec<(u64, String)> = reply["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["index"].as_u64().unwrap(), r["field"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(rejected, [(1, "order_id".into()), (2, "colour".into()), (3, "time".into()), (4, "attributes.mes.line".into())]);
    assert_eq!(reply["rejected"][0], json!({"index": 1, "field": "order_id", "error": "required"}));
    sink.wait_for(2, Duration::from_secs(10)).await;
    let mut orders: Vec<String> = sink.spans().iter().filter_map(|(_, s)| span_attr(s, "order.id")).collect();
    orders.sort();
    assert_eq!(orders, ["B-1", "B-5"]);

    // All invalid: 400, the same list, nothing admitted.
    let (status, reply) = post_json(&url, json!({"order_id": "", "service": "mes-api"})).await;
    assert_eq!(
        (status, reply),
        (
            400,
            json!({"error": "no valid order event in the request", "accepted": 0, "rejected": [{"index": 0, "field": "order_id", "error": "must not be empty"}]})
        )
    );
    let (status, reply) = post_json(&url, json!([{"order_id": "x".repeat(129), "service": "mes-api"}, 7])).await;
    assert_eq!(status, 400);
    assert_eq!(
        reply["rejected"],
        json!([{"index": 0, "field": "order_id", "error": "longer than 128 characters"}, {"index": 1, "field": null, "error": "an order event must be a JSON object"}])
    );

    // Not JSON, or neither an object nor an array.
    let (status, _, reply) = post(&url, &JSON, b"{\"order_id\": ".to_vec()).await;
    assert_eq!(status, 400);
    assert!(reply["error"].as_str().unwrap().starts_with("malformed request: body is not JSON"), "{reply}");
    let (status, reply) = post_json(&url, json!("A-1001")).await;
    assert_eq!((status, reply), (400, json!({"error": "malformed request: body must be an order event object or an array of them"})));

    // Only JSON is accepted.
    let (status, _, reply) = post(&url, &[("content-type", "application/x-protobuf")], b"\x0a\x00".to_vec()).await;
    assert_eq!(
        (status, reply),
        (415, json!({"error": "unsupported content type \"application/x-protobuf\"; order events are application/json"}))
    );
    let (status, _, _) = post(&url, &[], b"{}".to_vec()).await;
    assert_eq!(status, 415);

    // An empty array is a valid, empty request.
    assert_eq!(post_json(&url, json!([])).await, (200, json!({"accepted": 0})));

    let text = metrics_text(api).await;
    assert_eq!(metric(&text, "tracegate_receiver_accepted_spans_total", &[("transport", "order_events")]), 2.0);
    assert_eq!(metric(&text, "tracegate_receiver_refused_spans_total", &[("transport", "order_events"), ("reason", "malformed")]), 7.0);
    assert_eq!(sink.span_count(), 2, "nothing else was admitted");
    gateway.shutdown_within(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_asks_the_client_to_retry() {
    let sink = Sink::start().await;
    sink.set_mode(SinkMode::Unavailable);
    let (gateway, _dir) = start_gateway(&config(&sink, ", sending_queue: {queue_size: 2}")).await;
    let url = format!("http://{}/v1/order-events", gateway.http_addr().unwrap());
    let event = |order: &str| json!({"order_id": order, "service": "mes-api", "status": "manufactured", "time": "2026-11-20T10:00:00Z"});

    // Two events fill the queue of the exporter whose peer is down.
    assert_eq!(post_json(&url, json!([event("C-1"), event("C-2")])).await, (200, json!({"accepted": 2})));
    let (status, headers, reply) = post(&url, &JSON, event("C-3").to_string().into_bytes()).await;
    assert_eq!(status, 503);
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(reply, json!({"error": "the queue of exporter \"jaeger\" is full"}));
    // More events than the queue can ever hold: no retry will help.
    let (status, headers, _) = post(&url, &JSON, json!([event("C-4"), event("C-5"), event("C-6")]).to_string().into_bytes()).await;
    assert_eq!(status, 413);
    assert!(headers.get("retry-after").is_none());

    let text = metrics_text(gateway.api_addr().unwrap()).await;
    assert_eq!(metric(&text, "tracegate_receiver_refused_spans_total", &[("transport", "order_events"), ("reason", "queue_full")]), 1.0);
    assert_eq!(metric(&text, "tracegate_receiver_refused_spans_total", &[("transport", "order_events"), ("reason", "too_large")]), 3.0);

    // Once the peer is back the queue drains and the same request goes through.
    sink.set_mode(SinkMode::Accept);
    sink.wait_for(2, Duration::from_secs(10)).await;
    let accepted = eventually("the event accepted again", Duration::from_secs(5), || async {
        when(post_json(&url, event("C-3")).await, |(status, _)| *status == 200)
    })
    .await;
    assert_eq!(accepted, (200, json!({"accepted": 1})));
    gateway.shutdown_within(Duration::from_secs(5)).await;
}

/// The order list pages past its 1000-order limit with a cursor: every order once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_list_pages_with_a_cursor() {
    let yaml = r#"
receivers:
  otlp: {http: {endpoint: "127.0.0.1:0"}}
exporters:
  local: {type: embedded, path: "{data}", retention: 87600h, batch: {max_wait: 5ms}}
api: {endpoint: "127.0.0.1:0"}
service:
  pipelines:
    traces: {receivers: [otlp], exporters: [local]}
"#;
    let (gateway, _dir) = start_gateway(yaml).await;
    let url = format!("http://{}/v1/order-events", gateway.http_addr().unwrap());
    let api = gateway.api_addr().unwrap();
    const ORDERS: usize = 1205;
    // Two orders per second of event time, so some share a last-seen time and the id breaks ties.
    let events: Vec<serde_json::Value> = (0..ORDERS)
        .map(|i| {
            json!({"order_id": format!("P-{i:05}"), "service": "mes-api", "status": "manufactured",
                   "time": format!("2026-11-20T10:{:02}:{:02}Z", (i / 2) / 60 % 60, (i / 2) % 60)})
        })
        .collect();
    for chunk in events.chunks(500) {
        let (status, reply) = post_json(&url, json!(chunk)).await;
        assert_eq!(status, 200, "{reply}");
    }
    let listed = eventually("a full first page with a cursor", Duration::from_secs(10), || async {
        let (_, page) = get_json(&format!("http://{api}/api/v1/orders?limit=1000")).await;
        let listed = page["orders"].as_array().map_or(0, Vec::len);
        if listed == 1000 && page["next_cursor"].is_string() {
            Ok(listed)
        } else {
            Err(format!("{listed} orders, next_cursor {}", page["next_cursor"]))
        }
    })
    .await;
    assert_eq!(listed, 1000);
    // RFC 3339 with nanoseconds, all in UTC: text order is time order.
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let url = match &cursor {
            Some(c) => format!("http://{api}/api/v1/orders?limit=1000&cursor={c}"),
            None => format!("http://{api}/api/v1/orders?limit=1000"),
        };
        let (status, page) = get_json(&url).await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        for o in page["orders"].as_array().unwrap() {
            seen.push((o["last_seen"].as_str().unwrap_or_else(|| panic!("{o}")).to_string(), o["order_id"].as_str().unwrap().to_string()));
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        assert!(pages < 10);
    }
    assert_eq!(pages, 2);
    assert_eq!(seen.len(), ORDERS);
    let mut ids: Vec<&String> = seen.iter().map(|(_, id)| id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), ORDERS, "every order exactly once");
    assert!(seen.windows(2).all(|w| w[0].0 > w[1].0 || (w[0].0 == w[1].0 && w[0].1 < w[1].1)), "last seen first, then by id");
    let (status, body) = get_json(&format!("http://{api}/api/v1/orders?cursor=bm9wZQ")).await;
    assert_eq!(status, 400, "{body}");
    gateway.shutdown().await;
}
