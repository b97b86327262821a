//! `tracegate demo` against the built-in configuration: the orders it sends are readable with
//! the timeline a support engineer expects (every hop, stage and status, times relative to now),
//! over either OTLP transport; without a gateway it says what to do, within its timeout.

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::get_json;
use serde_json::Value;
use tracegate::{Config, Gateway};

/// The built-in configuration as shipped, on port 0, with its data in `data`.
async fn built_in_gateway(data: &Path) -> Gateway {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/tracegate.yaml")).unwrap();
    let env = |name: &str| match name {
        "TRACEGATE_GRPC_ENDPOINT" | "TRACEGATE_HTTP_ENDPOINT" | "TRACEGATE_API_ENDPOINT" => Some("127.0.0.1:0".to_string()),
        "TRACEGATE_DATA_DIR" => Some(data.to_str().unwrap().to_string()),
        _ => None,
    };
    Gateway::start(Config::from_yaml_with_env(&text, &env).unwrap()).await.expect("the built-in configuration starts")
}

async fn demo(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || Command::new(env!("CARGO_BIN_EXE_tracegate")).arg("demo").args(args).output().unwrap())
        .await
        .unwrap()
}

/// The order ids and statuses of the demo's table.
fn printed_orders(stdout: &str) -> Vec<(String, String)> {
    stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("A-"))
        .map(|l| {
            let mut words = l.split_whitespace();
            (words.next().unwrap().to_string(), words.next().unwrap().to_string())
        })
        .collect()
}

fn strings<'a>(events: &'a [Value], key: &str) -> Vec<&'a str> {
    events.iter().map(|e| e[key].as_str().unwrap_or("-")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_orders_are_readable_with_every_hop_of_their_timeline() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = built_in_gateway(dir.path()).await;
    let api = format!("http://{}", gateway.api_addr().unwrap());
    let started = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    let output = demo(vec![
        "--otlp-http".into(),
        format!("http://{}", gateway.http_addr().unwrap()),
        "--api".into(),
        api.clone(),
        "--orders".into(),
        "4".into(),
    ])
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    let orders = printed_orders(&stdout);
    let statuses: Vec<&str> = orders.iter().map(|(_, s)| s.as_str()).collect();
    assert_eq!(statuses, ["handed_to_courier", "manufactured", "in_production", "handed_to_courier"], "{stdout}");
    assert!(stdout.contains(&format!("curl -s {api}/api/v1/orders/{}", orders[0].0)), "{stdout}");

    // Read at once: the demo returned only when every order was readable.
    let (status, timeline) = get_json(&format!("{api}/api/v1/orders/{}", orders[0].0)).await;
    assert_eq!(status, 200, "{timeline}");
    assert_eq!(timeline["status"], "handed_to_courier");
    assert_eq!(timeline["services"], serde_json::json!(["crm-api", "mes-api", "shop-api"]));
    let events = timeline["events"].as_array().unwrap();
    assert_eq!(
        strings(events, "stage"),
        [
            "file_link",
            "db_save",
            "created",
            "db_save",
            "bus_publish",
            "bus_consume",
            "status_change",
            "db_save",
            "status_change",
            "status_change",
            "status_change"
        ],
        "{timeline:#}"
    );
    assert_eq!(
        strings(events, "service"),
        ["shop-api", "shop-api", "shop-api", "shop-api", "shop-api", "crm-api", "crm-api", "crm-api", "mes-api", "mes-api", "mes-api"]
    );
    let transitions: Vec<(&str, &str)> =
        timeline["transitions"].as_array().unwrap().iter().map(|t| (t["from"].as_str().unwrap(), t["to"].as_str().unwrap())).collect();
    assert_eq!(
        transitions,
        [("new", "accepted"), ("accepted", "in_production"), ("in_production", "manufactured"), ("manufactured", "handed_to_courier")]
    );
    // Dated relative to now: created a minute or two ago, the last step seconds ago.
    let first_seen = tracegate::shared::parse_rfc3339(timeline["first_seen"].as_str().unwrap()).unwrap() as f64 / 1e9;
    let last_seen = tracegate::shared::parse_rfc3339(timeline["last_seen"].as_str().unwrap()).unwrap() as f64 / 1e9;
    assert!(started - first_seen > 60.0 && started - first_seen < 20.0 * 60.0, "first seen {} s ago", started - first_seen);
    assert!(started - last_seen > 0.0 && started - last_seen < 30.0, "last seen {} s ago", started - last_seen);

    // The newest orders are the demo's.
    let (_, page) = get_json(&format!("{api}/api/v1/orders?limit=10")).await;
    let listed: Vec<&str> = page["orders"].as_array().unwrap().iter().map(|o| o["order_id"].as_str().unwrap()).collect();
    assert_eq!(listed.len(), 4, "{page}");
    gateway.shutdown_within(Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_sends_spans_over_grpc_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = built_in_gateway(dir.path()).await;
    let output = demo(vec![
        "--otlp-grpc".into(),
        format!("http://{}", gateway.grpc_addr().unwrap()),
        "--otlp-http".into(),
        format!("http://{}", gateway.http_addr().unwrap()),
        "--api".into(),
        format!("http://{}", gateway.api_addr().unwrap()),
        "--orders".into(),
        "1".into(),
    ])
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(output.status.success(), "{stdout}{}", String::from_utf8_lossy(&output.stderr));
    assert!(stdout.contains("spans of shop-api, crm-api and mes-api over OTLP/gRPC"), "{stdout}");
    assert_eq!(printed_orders(&stdout).len(), 1);
    let metrics = common::metrics_text(gateway.api_addr().unwrap()).await;
    assert_eq!(common::metric(&metrics, "tracegate_receiver_accepted_spans_total", &[("transport", "grpc")]), 10.0, "{metrics}");
    gateway.shutdown_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn without_a_gateway_the_demo_says_how_to_start_one() {
    let port = common::ports::free_port();
    let started = std::time::Instant::now();
    let output = demo(vec!["--otlp-http".into(), format!("http://127.0.0.1:{port}"), "--timeout".into(), "1s".into()]).await;
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("no gateway answered at http://127.0.0.1:{port} within 1s")), "{stderr}");
    assert!(stderr.contains("cargo run --release"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10));
}
