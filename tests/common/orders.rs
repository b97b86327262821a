//! The order scenario run against each read backend (tests/order_timeline.rs: the embedded store;
//! tests/elasticsearch.rs: Elasticsearch), and the OTLP builders it is written with.
//!
//! A constructor file saved before the order, the order across two services and four traces (over
//! OTLP/gRPC and OTLP/HTTP), a failed call, a second order. The spans carry `order.id` /
//! `order.stage` / `order.status` already (as the `order_enrich` processor would set them), so the
//! scenario tests the store, the read backend and the API on their own.
#![allow(dead_code)]

use std::net::SocketAddr;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{status::StatusCode, ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use serde_json::{json, Value};
use std::time::Duration;

use super::common::{eventually, get_json, send, when};

/// 2026-11-20T09:00:00Z.
pub const T0: u64 = 1_795_165_200_000_000_000;
pub const MS: u64 = 1_000_000;
pub const SEC: u64 = 1_000 * MS;

pub fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }), ..Default::default() }
}

/// A server span of trace `trace` starting `start` ns after T0 (negative: before) and lasting
/// `duration` ns.
pub fn span(trace: u8, id: u8, name: &str, start: i64, duration: u64, attrs: &[(&str, &str)]) -> Span {
    let start = T0.checked_add_signed(start).unwrap();
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![id; 8],
        name: name.into(),
        kind: 2,
        start_time_unix_nano: start,
        end_time_unix_nano: start + duration,
        attributes: attrs.iter().map(|(k, v)| kv(k, v)).collect(),
        ..Default::default()
    }
}

/// One resource (`service`, on host `node-1`) and one scope holding `spans`.
pub fn request(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: vec![kv("service.name", service), kv("host.name", "node-1")], ..Default::default() }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope { name: format!("{service}-tracer"), version: "2.1".into(), ..Default::default() }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// OTLP/HTTP protobuf; the gateway must accept it.
pub async fn post(http: SocketAddr, request: ExportTraceServiceRequest) {
    let (status, _, body) =
        send("POST", &format!("http://{http}/v1/traces"), &[("content-type", "application/x-protobuf")], request.encode_to_vec()).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
}

/// Sends the scenario to a gateway with OTLP/gRPC and OTLP/HTTP receivers. The two constructor
/// files (traces 0x11, 0x12) go first; `files_stored` is awaited before anything else is sent, as
/// in real life time passes between saving a file and ordering it.
pub async fn send_order_flow(gateway: &tracegate::Gateway, files_stored: impl std::future::Future<Output = ()>) {
    let http = gateway.http_addr().expect("an OTLP/HTTP receiver");
    let mut grpc = TraceServiceClient::connect(format!("http://{}", gateway.grpc_addr().expect("an OTLP/gRPC receiver"))).await.unwrap();

    // 08:50: the product constructor saves a file; there is no order yet.
    post(
        http,
        request(
            "shop-api",
            vec![span(0x11, 0x01, "POST /constructor/files", -600 * SEC as i64, 30 * MS, &[("constructor.file_id", "F-77")])],
        ),
    )
    .await;
    // A file of someone else, never ordered.
    post(
        http,
        request(
            "shop-api",
            vec![span(0x12, 0x0f, "POST /constructor/files", -300 * SEC as i64, 20 * MS, &[("constructor.file_id", "F-99")])],
        ),
    )
    .await;
    files_stored.await;

    // 09:00: the Shop creates the order, naming the file; saves it, publishes it (gRPC).
    let shop = request(
        "shop-api",
        vec![
            span(
                0x22,
                0x02,
                "POST /orders",
                0,
                12_500_000,
                &[("order.id", "A-1001"), ("order.stage", "created"), ("order.status", "new"), ("file.id", "F-77")],
            ),
            span(0x22, 0x03, "INSERT orders", 2 * MS as i64, 3 * MS, &[("order.id", "A-1001"), ("order.stage", "db_save")]),
            span(0x22, 0x04, "orders publish", 10 * MS as i64, MS, &[("order.id", "A-1001"), ("order.stage", "bus_publish")]),
            // Part of the order but no step of it: counted, not an event.
            span(0x22, 0x05, "GET /inventory", 4 * MS as i64, 2 * MS, &[("order.id", "A-1001")]),
        ],
    );
    grpc.export(shop).await.unwrap();

    // The CRM takes it from the bus, accepts it, fails a payment call (HTTP), starts production
    // (gRPC).
    let mut failed = span(0x33, 0x08, "POST /payments", 50 * SEC as i64, 250 * MS, &[("order.id", "A-1001")]);
    failed.status = Some(Status { code: StatusCode::Error as i32, message: "gateway timeout".into() });
    post(
        http,
        request(
            "crm-api",
            vec![
                span(0x33, 0x06, "orders process", 5 * SEC as i64, 4 * MS, &[("order.id", "A-1001"), ("order.stage", "bus_consume")]),
                span(
                    0x33,
                    0x07,
                    "PUT /orders/{id}/status",
                    42 * SEC as i64,
                    8 * MS,
                    &[("order.id", "A-1001"), ("order.stage", "status_change"), ("order.status", "accepted")],
                ),
                failed,
            ],
        ),
    )
    .await;
    grpc.export(request(
        "crm-api",
        vec![span(
            0x44,
            0x09,
            "PUT /orders/{id}/status",
            1800 * SEC as i64,
            5 * MS,
            &[("order.id", "A-1001"), ("order.stage", "status_change"), ("order.status", "in_production")],
        )],
    ))
    .await
    .unwrap();
    // Another order, created in the MES directly at 10:00.
    post(
        http,
        request(
            "mes-api",
            vec![span(
                0x55,
                0x0a,
                "order created",
                3600 * SEC as i64,
                0,
                &[("order.id", "B-2002"), ("order.stage", "created"), ("order.status", "accepted")],
            )],
        ),
    )
    .await;
}

fn ids(page: &Value) -> Vec<&str> {
    page["orders"].as_array().unwrap().iter().map(|o| o["order_id"].as_str().unwrap()).collect()
}

/// The read API of the gateway whose API is `api` answers the scenario with the documented JSON:
/// the timeline of A-1001, the order list, its filters and pages, bad parameters, unknown orders.
pub async fn check_order_flow(api: SocketAddr) {
    let within = Duration::from_secs(10);
    let (_, timeline) = eventually("the timeline of A-1001 with 8 events", within, || async {
        when(get_json(&format!("http://{api}/api/v1/orders/A-1001")).await, |(s, b)| {
            *s == 200 && b["events"].as_array().map(Vec::len) == Some(8)
        })
    })
    .await;
    let event = |time: &str,
                 service: &str,
                 stage: Option<&str>,
                 status: Option<&str>,
                 name: &str,
                 trace: &str,
                 span: &str,
                 ms: f64,
                 error: bool| {
        json!({"time": time, "service": service, "stage": stage, "status": status, "span_name": name, "trace_id": trace.repeat(16), "span_id": span.repeat(8), "duration_ms": ms, "error": error})
    };
    assert_eq!(
        timeline,
        json!({
            "order_id": "A-1001",
            "status": "in_production",
            "first_seen": "2026-11-20T08:50:00.000000000Z",
            "last_seen": "2026-11-20T09:30:00.005000000Z",
            "services": ["crm-api", "shop-api"],
            "trace_ids": ["11".repeat(16), "22".repeat(16), "33".repeat(16), "44".repeat(16)],
            "events": [
                event("2026-11-20T08:50:00.000000000Z", "shop-api", Some("file_link"), None, "POST /constructor/files", "11", "01", 30.0, false),
                event("2026-11-20T09:00:00.000000000Z", "shop-api", Some("created"), Some("new"), "POST /orders", "22", "02", 12.5, false),
                event("2026-11-20T09:00:00.002000000Z", "shop-api", Some("db_save"), None, "INSERT orders", "22", "03", 3.0, false),
                event("2026-11-20T09:00:00.010000000Z", "shop-api", Some("bus_publish"), None, "orders publish", "22", "04", 1.0, false),
                event("2026-11-20T09:00:05.000000000Z", "crm-api", Some("bus_consume"), None, "orders process", "33", "06", 4.0, false),
                event("2026-11-20T09:00:42.000000000Z", "crm-api", Some("status_change"), Some("accepted"), "PUT /orders/{id}/status", "33", "07", 8.0, false),
                event("2026-11-20T09:00:50.000000000Z", "crm-api", None, None, "POST /payments", "33", "08", 250.0, true),
                event("2026-11-20T09:30:00.000000000Z", "crm-api", Some("status_change"), Some("in_production"), "PUT /orders/{id}/status", "44", "09", 5.0, false),
            ],
            "transitions": [
                {"from": "new", "to": "accepted", "seconds": 42.0},
                {"from": "accepted", "to": "in_production", "seconds": 1758.0}
            ],
            "alerts": []
        })
    );

    // The list: last seen first, with summaries that include the linked file.
    let list = |query: &str| format!("http://{api}/api/v1/orders{query}");
    let (_, page) = eventually("a list of 2 orders", within, || async {
        when(get_json(&list("")).await, |(s, b)| *s == 200 && b["orders"].as_array().map(Vec::len) == Some(2))
    })
    .await;
    assert_eq!(
        page,
        json!({"orders": [
            {"order_id": "B-2002", "status": "accepted", "first_seen": "2026-11-20T10:00:00.000000000Z", "last_seen": "2026-11-20T10:00:00.000000000Z", "services": ["mes-api"], "span_count": 1,
             "current_service": "mes-api", "current_stage": "created", "firing_alerts": 0},
            {"order_id": "A-1001", "status": "in_production", "first_seen": "2026-11-20T08:50:00.000000000Z", "last_seen": "2026-11-20T09:30:00.005000000Z", "services": ["crm-api", "shop-api"], "span_count": 9,
             "current_service": "crm-api", "current_stage": "status_change", "firing_alerts": 0}
        ], "limit": 100})
    );
    assert_eq!(ids(&get_json(&list("?status=in_production")).await.1), ["A-1001"]);
    assert_eq!(ids(&get_json(&list("?status=accepted")).await.1), ["B-2002"], "filters on the current status");
    assert_eq!(ids(&get_json(&list("?service=mes-api")).await.1), ["B-2002"]);
    assert_eq!(ids(&get_json(&list("?service=shop-api&status=")).await.1), ["A-1001"]);
    assert_eq!(ids(&get_json(&list("?until=2026-11-20T08:55:00Z")).await.1), ["A-1001"], "the file makes the order start at 08:50");
    assert_eq!(ids(&get_json(&list("?since=2026-11-20T10:45:00%2B01:00")).await.1), ["B-2002"]);
    assert_eq!(ids(&get_json(&list("?since=2026-11-20T09:00:00Z&until=2026-11-20T09:10:00Z")).await.1), ["A-1001"]);
    assert_eq!(ids(&get_json(&list("?service=courier-gw")).await.1), Vec::<&str>::new());
    let (status, mut first) = get_json(&list("?limit=1")).await;
    let cursor = first.as_object_mut().unwrap().remove("next_cursor").expect("a next page");
    assert_eq!((status, first), (200, json!({"orders": [page["orders"][0].clone()], "limit": 1})));
    let (_, second) = get_json(&list(&format!("?limit=1&cursor={}", cursor.as_str().unwrap()))).await;
    assert_eq!(second, json!({"orders": [page["orders"][1].clone()], "limit": 1}), "the last page has no next_cursor");

    // Bad parameters and unknown orders.
    for (query, parameter) in [
        ("?limit=1001", "limit"),
        ("?limit=0", "limit"),
        ("?since=yesterday", "since"),
        ("?until=2026-11-20", "until"),
        ("?state=new", "state"),
    ] {
        let (status, body) = get_json(&list(query)).await;
        assert_eq!((status, &body["error"]), (400, &json!("bad_request")), "{query}");
        assert!(body["message"].as_str().unwrap().starts_with(&format!("{parameter}:")), "{query}: {body}");
    }
    assert_eq!(get_json(&list("/B-9999")).await, (404, json!({"error": "not_found", "message": "order B-9999 not found"})));
}
