//! The audit trail mirrored to Elasticsearch (noida-db): every record of the file, once, under
//! its own id, searchable by action; the file's chain still verifies.

mod common;
#[path = "common/es_servers.rs"]
mod es_servers;

use std::time::Duration;

use common::{get_json, send, start_gateway};
use es_servers::{EsKind, EsServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_audit_record_is_copied_to_elasticsearch_once() {
    let es = EsServer::start(EsKind::Noida);
    let yaml = r#"
receivers:
  otlp: {http: {endpoint: "127.0.0.1:0"}}
exporters:
  local: {type: embedded, path: "{data}"}
  archive: {type: elasticsearch, endpoints: ["URL"], mapping: {mode: index}}
api: {endpoint: "127.0.0.1:0"}
query: {backend: local}
audit:
  path: "{data}/audit.jsonl"
  checkpoint_key: "a-test-checkpoint-key-of-32-bytes-at-least"
  checkpoint_every: 3
  elasticsearch: {exporter: archive, index: tracegate-audit-test}
service:
  pipelines:
    traces: {receivers: [otlp], exporters: [local, archive]}
"#
    .replace("URL", &es.url);
    let (gateway, dir) = start_gateway(&yaml).await;
    let api = gateway.api_addr().unwrap();
    // Anonymous reads (no auth configured) are audited: an unknown trace, an unknown order.
    for i in 0..4 {
        let (status, _) = get_json(&format!("http://{api}/api/v1/traces/{:032x}", i + 1)).await;
        assert_eq!(status, 404);
        let (status, _) = get_json(&format!("http://{api}/api/v1/orders/A-{i}")).await;
        assert_eq!(status, 404);
    }
    let file = dir.path().join("audit.jsonl");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&file).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(lines.len() >= 8 + 2, "8 reads and at least 2 checkpoints: {}", lines.len());

    let mut indexed = 0;
    for _ in 0..200 {
        indexed = es.count("tracegate-audit-test", serde_json::json!({"match_all": {}})).await;
        if indexed as usize >= lines.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(indexed as usize, lines.len(), "every record of the file, exactly once");
    for line in &lines {
        let id = line["id"].as_str().unwrap();
        let (status, doc) = es.json("GET", &format!("/tracegate-audit-test/_doc/{id}"), None).await;
        assert_eq!(status, 200, "record {id} not in the index");
        assert_eq!(doc["_source"]["hash"], line["hash"], "the copy carries the record's chain hash");
    }
    let report = tracegate::audit::verify_file(&file, Some(b"a-test-checkpoint-key-of-32-bytes-at-least")).expect("the chain verifies");
    assert_eq!(report.records as usize, lines.len());
    assert!(report.authenticated && report.checkpoints >= 2);
    gateway.shutdown_within(Duration::from_secs(2)).await;
}
