//! The `rabbitmq` receiver against a real RabbitMQ node (Debian's `rabbitmq-server`, started
//! privately by `common/rabbitmq.rs`), with lapin as the publisher, as MES would publish:
//! - messages published while the gateway is down all arrive once it starts (order timelines on
//!   the embedded store), and a malformed message goes to the dead-letter queue, reason attached;
//! - a pipeline that refuses (a stopped downstream behind a tiny queue) sends messages back to
//!   the queue, and they arrive once it recovers: none lost, none acknowledged early;
//! - a broker restart: the receiver reconnects and goes on; `/readyz` and the metrics say so;
//! - `amqps://` to a broker whose certificate a private CA signed, trusted through `tls.ca_file`;
//! - configuration errors are named with their path.

mod common;
#[path = "common/rabbitmq.rs"]
mod rabbitmq;

use std::time::Duration;

use common::{eventually, get_json, metric, metrics_text, start_gateway, wait_metric, wait_timeline, when, Sink, SinkMode};
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use rabbitmq::RabbitMq;
use serde_json::json;

const EXCHANGE: &str = "mes.events";
const QUEUE: &str = "mes.order-events";
const DEAD: &str = "mes.order-events.dead";

async fn start_broker() -> RabbitMq {
    tokio::task::spawn_blocking(RabbitMq::start).await.unwrap()
}

/// MES's side of the bus: its exchange, and the queue the operators bound to it (durable, so
/// that what is published while tracegate is down waits there).
struct Mes {
    _connection: Connection,
    channel: Channel,
}

impl Mes {
    async fn connect(url: &str) -> Mes {
        let connection = Connection::connect(url, ConnectionProperties::default()).await.expect("the publisher connects");
        let channel = connection.create_channel().await.unwrap();
        channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
        Mes { _connection: connection, channel }
    }

    async fn declare(&self) {
        let durable = ExchangeDeclareOptions { durable: true, ..Default::default() };
        self.channel.exchange_declare(EXCHANGE.into(), ExchangeKind::Topic, durable, FieldTable::default()).await.unwrap();
        let durable = QueueDeclareOptions { durable: true, ..Default::default() };
        self.channel.queue_declare(QUEUE.into(), durable, FieldTable::default()).await.unwrap();
        self.channel
            .queue_bind(QUEUE.into(), EXCHANGE.into(), "order.#".into(), QueueBindOptions::default(), FieldTable::default())
            .await
            .unwrap();
    }

    /// Publishes persistently and waits for the broker's confirm.
    async fn publish(&self, body: &[u8]) {
        let properties = BasicProperties::default().with_delivery_mode(2).with_content_type("application/json".into());
        let confirm = self
            .channel
            .basic_publish(EXCHANGE.into(), "order.status".into(), BasicPublishOptions::default(), body, properties)
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack(), "the broker did not take the message: {confirm:?}");
    }

    /// Every message in `queue`, taken off it.
    async fn drain(&self, queue: &str) -> Vec<lapin::message::Delivery> {
        let mut out = Vec::new();
        while let Some(message) = self.channel.basic_get(queue.into(), BasicGetOptions { no_ack: true }).await.unwrap() {
            out.push(message.delivery);
        }
        out
    }
}

/// A MES status message: its own field names, a numeric line.
fn mes_message(order: &str, state: &str, minute: u32) -> Vec<u8> {
    json!({"orderNo": order, "state": state, "ts": format!("2026-11-20T10:{minute:02}:00Z"), "line": {"id": 3}, "operator": "k.lee"})
        .to_string()
        .into_bytes()
}

fn config(url: &str, exporters: &str, pipeline_exporters: &str, extra: &str) -> String {
    format!(
        r#"
receivers:
  mes_bus:
    type: rabbitmq
    endpoint: "{url}"
    service: mes-api
    queue: {QUEUE}
    bind: {{exchange: {EXCHANGE}, routing_key: "order.#"}}
    prefetch: 10
    dead_letter: {{exchange: "", routing_key: {DEAD}}}
    reconnect: {{initial_interval: 100ms, max_interval: 500ms}}
    mapping:
      order_id: /orderNo
      status: /state
      time: /ts
      stage: {{value: status_change}}
      attributes: {{mes.line: /line/id}}
exporters:
  local: {{type: embedded, path: "{{data}}", retention: 87600h, batch: {{max_wait: 5ms}}}}
{exporters}
api: {{endpoint: "127.0.0.1:0"}}
service:
  pipelines:
    traces: {{receivers: [mes_bus], exporters: [local{pipeline_exporters}]}}
{extra}
"#
    )
}

async fn bus_metric(api: std::net::SocketAddr, outcome: &str) -> f64 {
    metric(&metrics_text(api).await, "tracegate_rabbitmq_messages_total", &[("receiver", "mes_bus"), ("outcome", outcome)])
}

fn header(delivery: &lapin::message::Delivery, name: &str) -> String {
    match delivery.properties.headers().as_ref().and_then(|h| h.inner().get(name)) {
        Some(AMQPValue::LongString(s)) => s.to_string(),
        other => panic!("header {name}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_published_while_the_gateway_is_down_arrive_and_a_malformed_one_is_dead_lettered() {
    let rabbit = start_broker().await;
    let mes = Mes::connect(&rabbit.url()).await;
    mes.declare().await;

    // Ten orders, three statuses each, published before tracegate runs; two bad messages among them.
    let states = ["in_production", "manufactured", "handed_to_courier"];
    for (minute, state) in states.iter().enumerate() {
        for order in 0..10 {
            mes.publish(&mes_message(&format!("M-{order}"), state, minute as u32)).await;
        }
        if minute == 1 {
            mes.publish(b"{\"orderNo\": \"M-0\", truncated").await;
            mes.publish(br#"{"state": "manufactured", "ts": "2026-11-20T10:05:00Z"}"#).await;
        }
    }
    assert_eq!(tokio::task::block_in_place(|| rabbit.queue_depth(QUEUE)), 32);

    let (gateway, _dir) = start_gateway(&config(&rabbit.url(), "", "", "")).await;
    let api = gateway.api_addr().unwrap();
    for order in 0..10 {
        let body = wait_timeline(api, &format!("M-{order}"), 3, Duration::from_secs(30)).await;
        assert_eq!(body["status"], "handed_to_courier", "{body}");
        assert_eq!(body["services"], json!(["mes-api"]), "{body}");
        let statuses: Vec<&str> = body["events"].as_array().unwrap().iter().map(|e| e["status"].as_str().unwrap()).collect();
        assert_eq!(statuses, states, "{body}");
        assert!(body["events"].as_array().unwrap().iter().all(|e| e["stage"] == "status_change"), "{body}");
        assert_eq!(body["first_seen"], "2026-11-20T10:00:00.000000000Z", "{body}");
    }
    // The span carries the mapped attribute (and not the unmapped operator name).
    let (status, trace) = get_json(&format!(
        "http://{api}/api/v1/traces/{}",
        wait_timeline(api, "M-3", 3, Duration::from_secs(1)).await["events"][0]["trace_id"].as_str().unwrap()
    ))
    .await;
    assert_eq!(status, 200);
    let attributes = &trace["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"];
    assert!(attributes.as_array().unwrap().iter().any(|a| a["key"] == "mes.line" && a["value"]["intValue"] == "3"), "{attributes}");
    assert!(!attributes.to_string().contains("k.lee"), "{attributes}");

    // The two bad messages wait in the dead-letter queue, each with its reason; nothing is left.
    let api_metrics = wait_metric(
        api,
        "tracegate_rabbitmq_messages_total",
        &[("receiver", "mes_bus"), ("outcome", "dead_lettered")],
        |v| v >= 2.0,
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(api_metrics, 2.0);
    let dead = mes.drain(DEAD).await;
    assert_eq!(dead.len(), 2);
    assert_eq!(dead[0].data, b"{\"orderNo\": \"M-0\", truncated");
    assert!(header(&dead[0], "x-tracegate-error").starts_with("the message is not JSON"), "{}", header(&dead[0], "x-tracegate-error"));
    assert_eq!(header(&dead[1], "x-tracegate-error"), "order_id (from /orderNo): required");
    assert_eq!(
        (header(&dead[1], "x-original-exchange"), header(&dead[1], "x-original-routing-key")),
        (EXCHANGE.into(), "order.status".into())
    );
    assert_eq!(tokio::task::block_in_place(|| rabbit.queue_depth(QUEUE)), 0);

    assert_eq!(bus_metric(api, "received").await, 32.0);
    assert_eq!(bus_metric(api, "acked").await, 30.0);
    assert_eq!(bus_metric(api, "requeued").await, 0.0);
    let text = metrics_text(api).await;
    assert_eq!(metric(&text, "tracegate_receiver_accepted_spans_total", &[("receiver", "mes_bus"), ("transport", "amqp")]), 30.0);
    assert_eq!(metric(&text, "tracegate_rabbitmq_connected", &[("receiver", "mes_bus")]), 1.0);
    assert_eq!(get_json(&format!("http://{api}/readyz")).await.0, 200);

    let report = gateway.shutdown().await;
    assert_eq!(report.lost_spans(), 0);
    drop(rabbit);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_pipeline_sends_messages_back_and_they_arrive_later() {
    let rabbit = start_broker().await;
    let mes = Mes::connect(&rabbit.url()).await;
    mes.declare().await;
    // Jaeger is down and its queue holds 4 spans: the fifth event is refused until it recovers.
    let sink = Sink::start().await;
    sink.set_mode(SinkMode::Unavailable);
    let jaeger = format!(
        "  jaeger: {{type: otlp, endpoint: \"{}\", sending_queue: {{queue_size: 4, num_consumers: 1}}, batch: {{max_wait: 5ms}}, retry_on_failure: {{initial_interval: 20ms, max_interval: 50ms, max_elapsed_time: 0s}}}}",
        sink.endpoint()
    );
    let (gateway, _dir) = start_gateway(&config(&rabbit.url(), &jaeger, ", jaeger", "")).await;
    let api = gateway.api_addr().unwrap();

    for order in 0..12 {
        mes.publish(&mes_message(&format!("R-{order}"), "manufactured", 0)).await;
    }
    wait_metric(
        api,
        "tracegate_rabbitmq_messages_total",
        &[("receiver", "mes_bus"), ("outcome", "requeued")],
        |v| v >= 3.0,
        Duration::from_secs(20),
    )
    .await;
    // Admitted: the four the queue could take; the rest are still the broker's (unacknowledged
    // or back in the queue), not acknowledged early.
    assert_eq!(bus_metric(api, "acked").await, 4.0);
    let text = metrics_text(api).await;
    assert!(
        metric(
            &text,
            "tracegate_receiver_refused_spans_total",
            &[("receiver", "mes_bus"), ("transport", "amqp"), ("reason", "queue_full")]
        ) >= 3.0,
        "{text}"
    );

    sink.set_mode(SinkMode::Accept);
    sink.wait_for(12, Duration::from_secs(60)).await;
    for order in 0..12 {
        wait_timeline(api, &format!("R-{order}"), 1, Duration::from_secs(20)).await;
    }
    let mut orders: Vec<String> = sink.spans().iter().map(|(_, s)| common::span_attr(s, "order.id").unwrap()).collect();
    orders.sort();
    orders.dedup();
    assert_eq!(orders.len(), 12, "every event reached Jaeger: {orders:?}");
    assert_eq!(bus_metric(api, "acked").await, 12.0);
    assert_eq!(bus_metric(api, "dead_lettered").await, 0.0);
    assert_eq!(tokio::task::block_in_place(|| rabbit.queue_depth(QUEUE)), 0);
    gateway.shutdown().await;
    drop(rabbit);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_is_survived() {
    let mut rabbit = start_broker().await;
    Mes::connect(&rabbit.url()).await.declare().await;
    let readiness = "  readiness: {receiver_disconnected_after: 1s}";
    let (gateway, _dir) = start_gateway(&config(&rabbit.url(), "", "", readiness)).await;
    let api = gateway.api_addr().unwrap();
    {
        let mes = Mes::connect(&rabbit.url()).await;
        for order in 0..5 {
            mes.publish(&mes_message(&format!("B-{order}"), "in_production", 0)).await;
        }
    }
    for order in 0..5 {
        wait_timeline(api, &format!("B-{order}"), 1, Duration::from_secs(20)).await;
    }
    assert_eq!(get_json(&format!("http://{api}/readyz")).await.0, 200);

    tokio::task::block_in_place(|| rabbit.stop());
    wait_metric(api, "tracegate_rabbitmq_reconnects_total", &[("receiver", "mes_bus")], |v| v >= 1.0, Duration::from_secs(10)).await;
    assert_eq!(metric(&metrics_text(api).await, "tracegate_rabbitmq_connected", &[("receiver", "mes_bus")]), 0.0);
    // Past receiver_disconnected_after, the gateway says why it is not ready.
    let (_, body) = eventually("/readyz 503 with the broker down", Duration::from_secs(10), || async {
        when(get_json(&format!("http://{api}/readyz")).await, |(status, _)| *status == 503)
    })
    .await;
    assert!(body.to_string().contains("receiver mes_bus not connected to its broker"), "{body}");

    tokio::task::block_in_place(|| rabbit.start_again());
    let mes = Mes::connect(&rabbit.url()).await;
    for order in 0..5 {
        mes.publish(&mes_message(&format!("B-{order}"), "manufactured", 1)).await;
    }
    for order in 0..5 {
        let body = wait_timeline(api, &format!("B-{order}"), 2, Duration::from_secs(30)).await;
        assert_eq!(body["status"], "manufactured", "{body}");
    }
    assert_eq!(metric(&metrics_text(api).await, "tracegate_rabbitmq_connected", &[("receiver", "mes_bus")]), 1.0);
    assert_eq!(get_json(&format!("http://{api}/readyz")).await.0, 200);
    assert_eq!(bus_metric(api, "acked").await, 10.0);
    gateway.shutdown().await;
    drop(rabbit);
}

/// A CA and a certificate for `localhost` it signed, as PEM files in `dir`: (ca, cert, key).
fn private_ca(dir: &std::path::Path) -> (String, String, String) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap()).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap().signed_by(&key, &ca).unwrap();
    let write = |name: &str, pem: String| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path.display().to_string()
    };
    (write("ca.pem", ca.pem()), write("server.pem", cert.pem()), write("server.key", key.serialize_pem()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amqps_with_a_private_ca() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = private_ca(certs.path());
    let tls_port = common::ports::free_port();
    let listener = format!(
        "listeners.ssl.default = 127.0.0.1:{tls_port}\nssl_options.cacertfile = {ca}\nssl_options.certfile = {cert}\nssl_options.keyfile = {key}\nssl_options.verify = verify_none\nssl_options.fail_if_no_peer_cert = false\n"
    );
    let rabbit = tokio::task::spawn_blocking(move || RabbitMq::start_with(&listener)).await.unwrap();
    let mes = Mes::connect(&rabbit.url()).await;
    mes.declare().await;
    mes.publish(&mes_message("T-1", "manufactured", 0)).await;
    let amqps = format!("amqps://guest:guest@localhost:{tls_port}/%2f");

    // Without the CA, the broker's certificate is not trusted: no connection, retried.
    let untrusting = config(&amqps, "", "", "");
    let (gateway, _dir) = start_gateway(&untrusting).await;
    let api = gateway.api_addr().unwrap();
    wait_metric(api, "tracegate_rabbitmq_reconnects_total", &[("receiver", "mes_bus")], |v| v >= 2.0, Duration::from_secs(10)).await;
    assert_eq!(bus_metric(api, "received").await, 0.0);
    gateway.shutdown().await;

    // With it, over TLS.
    let trusting = config(&amqps, "", "", "").replace("    prefetch: 10\n", &format!("    prefetch: 10\n    tls: {{ca_file: \"{ca}\"}}\n"));
    let (gateway, _dir) = start_gateway(&trusting).await;
    let api = gateway.api_addr().unwrap();
    let body = wait_timeline(api, "T-1", 1, Duration::from_secs(20)).await;
    assert_eq!(body["status"], "manufactured", "{body}");
    assert_eq!(metric(&metrics_text(api).await, "tracegate_rabbitmq_connected", &[("receiver", "mes_bus")]), 1.0);
    gateway.shutdown().await;
    drop(rabbit);
}

#[test]
fn configuration_errors_name_their_place() {
    let yaml = r#"
receivers:
  mes_bus:
    type: rabbitmq
    endpoint: "http://guest:secret@rabbit:5672/"
    service: mes-api
    queue: mes.order-events
    prefetch: 0
    dead_letter: {routing_key: mes.order-events}
    mapping: {status: state, attributes: {mes.line: "/line~x"}}
exporters: {local: {type: embedded, path: /tmp/tracegate-rabbitmq-config-test}}
service: {pipelines: {traces: {receivers: [mes_bus], exporters: [local]}}}
"#;
    let error = tracegate::Config::from_yaml(yaml).unwrap_err();
    let found: Vec<String> = error.issues.iter().map(|i| format!("{}: {}", i.path, i.message)).collect();
    for expected in [
        "receivers.mes_bus.endpoint: \"http://guest:<redacted>@rabbit:5672/\" is not an AMQP URL",
        "receivers.mes_bus.prefetch: must be at least 1",
        "receivers.mes_bus.dead_letter.routing_key: is the consumed queue itself",
        "receivers.mes_bus.mapping.order_id: missing",
        "receivers.mes_bus.mapping.status: \"state\" is not a JSON pointer",
        "receivers.mes_bus.mapping.attributes.mes.line: \"/line~x\" is not a JSON pointer",
    ] {
        assert!(found.iter().any(|f| f.starts_with(expected)), "{expected:?} not in {found:#?}");
    }
    assert_eq!(found.len(), 6, "{found:#?}");
    assert!(!error.to_string().contains("secret"), "the password leaked: {error}");

    let valid = config("amqp://tracegate:s3cret@rabbit:5672/%2f", "", "", "").replace("{data}", "/tmp/tracegate-rabbitmq-config-test");
    let summary = tracegate::Config::from_yaml(&valid).unwrap().summary();
    assert!(
        summary.contains(
            "receiver mes_bus (rabbitmq): queue mes.order-events on amqp://tracegate:<redacted>@rabbit:5672/%2f, as service mes-api"
        ),
        "{summary}"
    );

    let typo = yaml.replace("    prefetch: 0\n", "    prefech: 10\n");
    let error = tracegate::Config::from_yaml(&typo).unwrap_err().to_string();
    assert!(error.contains("receivers.mes_bus.prefech: unknown field `prefech`, expected one of"), "{error}");
}
