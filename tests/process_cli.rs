//! `tracegate process`: enrichment rules tried on a file, as the platform team does before a
//! deploy.

use std::io::Write;
use std::process::{Command, Stdio};

const CONFIG: &str = r#"
receivers:
  otlp: {grpc: {endpoint: "127.0.0.1:0"}}
processors:
  order_enrich:
    rules:
      - name: mes-line
        match: {service: "^mes-api$", attributes: [{key: mes.line, exists: true}]}
        set: {stage: production, status: {value: in_production}}
  order_sampling: {fraction: 0.0}
exporters:
  log: {type: debug}
service:
  pipelines:
    traces: {receivers: [otlp], processors: [order_enrich, order_sampling], exporters: [log]}
"#;

const INPUT: &str = r#"{"resourceSpans": [
  {"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "mes-api"}}]},
   "scopeSpans": [{"spans": [
     {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203331", "name": "POST /orders/A-77/production", "kind": 2,
      "attributes": [{"key": "url.path", "value": {"stringValue": "/orders/A-77/production"}}]},
     {"traceId": "0af7651916cd43dd8448eb211c80319c", "spanId": "b7ad6b7169203332", "parentSpanId": "b7ad6b7169203331", "name": "assign line", "kind": 1,
      "attributes": [{"key": "mes.line", "value": {"intValue": "3"}}]},
     {"traceId": "1af7651916cd43dd8448eb211c80319c", "spanId": "c7ad6b7169203331", "name": "GET /health", "kind": 2}
   ]}]}]}"#;

#[test]
fn process_applies_the_configured_rules_and_prints_otlp_json() {
    let mut config = tempfile::NamedTempFile::new().unwrap();
    config.write_all(CONFIG.as_bytes()).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tracegate"))
        .args(["process", "--config", config.path().to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(INPUT.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let spans: Vec<&serde_json::Value> = json["resourceSpans"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["scopeSpans"].as_array().unwrap())
        .flat_map(|s| s["spans"].as_array().unwrap())
        .collect();
    assert_eq!(spans.len(), 2, "the order-less health check is sampled out (fraction 0)");
    let attr = |span: &serde_json::Value, key: &str| {
        span["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["key"] == key)
            .map(|a| a["value"]["stringValue"].as_str().unwrap().to_string())
    };
    let line = spans.iter().find(|s| s["name"] == "assign line").unwrap();
    assert_eq!(attr(line, "order.id").as_deref(), Some("A-77"), "inherited from the URL of its parent's trace");
    assert_eq!(attr(line, "order.stage").as_deref(), Some("production"));
    assert_eq!(attr(line, "order.status").as_deref(), Some("in_production"));
    let post = spans.iter().find(|s| s["name"] == "POST /orders/A-77/production").unwrap();
    assert_eq!(attr(post, "order.id").as_deref(), Some("A-77"));
    assert_eq!(attr(post, "order.stage"), None, "the custom rule set replaces the defaults; nothing matches this span");
}

#[test]
fn process_reports_bad_input_and_unknown_pipelines() {
    let mut config = tempfile::NamedTempFile::new().unwrap();
    config.write_all(CONFIG.as_bytes()).unwrap();
    let mut input = tempfile::NamedTempFile::new().unwrap();
    input.write_all(b"{not json").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tracegate"))
        .args(["process", "--config", config.path().to_str().unwrap(), "--input", input.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an OTLP JSON"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(env!("CARGO_BIN_EXE_tracegate"))
        .args(["process", "--config", config.path().to_str().unwrap(), "--pipeline", "nope"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no pipeline named \"nope\""));
}
