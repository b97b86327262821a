//! Order timelines from the embedded store: spans of one order arrive in several traces, over gRPC
//! and HTTP, from two services; a constructor file saved before the order existed joins it through
//! its file id; `GET /api/v1/orders/{id}` and `GET /api/v1/orders` answer with the documented JSON.
//!
//! The scenario is tests/common/orders.rs, which tests/elasticsearch.rs runs against the
//! Elasticsearch backend too.

mod common;
#[path = "common/orders.rs"]
mod orders;

use std::time::Duration;

use common::{eventually, get_json, when};

/// The events carry fixed 2026 times: a long retention keeps the sweep from deleting them.
const CONFIG: &str = r#"
receivers:
  otlp: {grpc: {endpoint: "127.0.0.1:0"}, http: {endpoint: "127.0.0.1:0"}}
exporters:
  local: {type: embedded, path: "{data}", retention: 87600h, batch: {max_wait: 5ms}}
api: {endpoint: "127.0.0.1:0"}
service:
  pipelines:
    traces: {receivers: [otlp], exporters: [local]}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_timeline_across_traces_services_and_a_linked_file() {
    let (gateway, _dir) = common::start_gateway(CONFIG).await;
    let api = gateway.api_addr().unwrap();
    // The files are stored before anything else is sent.
    let files_stored = async {
        for trace in ["12", "11"] {
            let url = format!("http://{api}/api/v1/traces/{}", trace.repeat(16));
            eventually(&format!("trace {trace} stored"), Duration::from_secs(5), || async { when(get_json(&url).await.0, |&s| s == 200) })
                .await;
        }
    };
    orders::send_order_flow(&gateway, files_stored).await;
    orders::check_order_flow(api).await;
    gateway.shutdown_within(Duration::from_secs(5)).await;
}
