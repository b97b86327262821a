//! tracegate in front of a real Jaeger v2 (`api.jaeger_ui`): spans with personal data go to
//! Jaeger through the gateway's OTLP exporter; Jaeger runs with `base_path: /jaeger`
//! (`JAEGER_QUERY_BASE_PATH`), and its UI and API are read through the gateway: no token 401, a
//! token without a role 403, support gets Jaeger's own answers with personal data as the read
//! API's pseudonyms, admin-only calls are refused to support, an admin unmasks with a reason,
//! and every trace read is in the audit log.
//!
//! Needs `JAEGER_BIN` (set by `scripts/test.sh`); without it the test says SKIPPED and returns.

mod common;
#[path = "common/auth.rs"]
mod fixture;
#[path = "common/jaeger.rs"]
mod jaeger;

use std::net::SocketAddr;
use std::time::Duration;

use common::{send, start_gateway};
use fixture::*;
use jaeger::{jaeger_bin, Jaeger};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue, KeyValueList};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span};
use prost::Message;
use serde_json::Value;

const EMAIL: &str = "bob.personal@example.com";
const USER_ID: &str = "u-5150-personal";
const NAME: &str = "Bob Personal-Name";
const TRACE: [u8; 16] = [0x5a; 16];
const SPAN: [u8; 8] = [0x07; 8];
const UI_URL: &str = "https://tracegate.shop.test/jaeger";

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }), ..Default::default() }
}

/// One span of order A-3001 with personal data where Jaeger shows it: span tags (one inside a
/// map, which Jaeger writes as JSON text), a log field (span event) and a process tag (resource).
fn request() -> Vec<u8> {
    let customer = KeyValue {
        key: "customer".into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::KvlistValue(KeyValueList { values: vec![kv("user.email", EMAIL), kv("tier", "gold")] })),
        }),
        ..Default::default()
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: vec![kv("service.name", "shop-api"), kv("user.name", NAME)], ..Default::default() }),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: TRACE.to_vec(),
                    span_id: SPAN.to_vec(),
                    name: "POST /orders".into(),
                    kind: span::SpanKind::Server as i32,
                    start_time_unix_nano: now_nanos() - 2_000_000_000,
                    end_time_unix_nano: now_nanos() - 1_900_000_000,
                    attributes: vec![
                        kv("order.id", "A-3001"),
                        kv("order.stage", "created"),
                        kv("order.status", "new"),
                        kv("enduser.id", USER_ID),
                        kv("user.email", EMAIL),
                        customer,
                    ],
                    events: vec![span::Event {
                        name: "receipt mailed".into(),
                        time_unix_nano: now_nanos() - 1_950_000_000,
                        attributes: vec![kv("user.email", EMAIL)],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
}

async fn get(api: SocketAddr, path: &str, token: Option<&str>) -> (u16, http::HeaderMap, Vec<u8>) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    send("GET", &format!("http://{api}{path}"), &headers, vec![]).await
}

async fn get_json(api: SocketAddr, path: &str, token: &str) -> (u16, Value) {
    let (status, _, body) = get(api, path, Some(token)).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// The value of tag `key` of the trace's only span, from Jaeger's JSON.
fn tag(trace: &Value, key: &str) -> Option<String> {
    trace["spans"][0]["tags"].as_array()?.iter().find(|t| t["key"] == key).map(|t| t["value"].as_str().unwrap_or_default().to_string())
}

fn audit_records(dir: &std::path::Path) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join("audit.jsonl")).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jaeger_behind_tracegate_masks_refuses_and_audits() {
    let Some(bin) = jaeger_bin("jaeger_proxy") else { return };
    let jaeger_dir = tempfile::tempdir().unwrap();
    let jaeger = Jaeger::start_with(&bin, jaeger_dir.path(), &[("JAEGER_QUERY_BASE_PATH", "/jaeger")]);
    let direct = format!("{}/jaeger", jaeger.ports.ui_url());

    let yaml = jaeger
        .exporting_to_it(&secured_config())
        .replace(
            "api: {endpoint: \"127.0.0.1:0\"}",
            &format!(
                "api:\n  endpoint: \"127.0.0.1:0\"\n  jaeger_ui: {{upstream: \"{}\", path: /jaeger, timeout: 10s}}\n  jaeger_ui_url: \"{UI_URL}/\"",
                jaeger.ports.ui_url()
            ),
        )
        .replace("  leeway: 5s\n", "  leeway: 5s\n  personal_data: {pseudonym_key: \"pseudonym-key-0123456789abcdefghijkl\"}\n");
    assert!(yaml.contains("jaeger_ui:"), "the API section was replaced: {yaml}");
    let (gateway, dir) = start_gateway(&yaml).await;
    let api = gateway.api_addr().unwrap();
    let idp = Idp::Keycloak;
    let tokens = mint(&[
        spec(idp, service_claims(idp, "shop-api")),
        spec(idp, claims(idp, "sam", &["support"])),
        spec(idp, claims(idp, "ada", &["admin"])),
        spec(idp, claims(idp, "nora", &[])),
    ]);
    let (shop, sam, ada, nora) = (&tokens[0], &tokens[1], &tokens[2], &tokens[3]);

    // Spans in, through the gateway to Jaeger.
    let auth = format!("Bearer {shop}");
    let url = format!("http://{}/v1/traces", gateway.http_addr().unwrap());
    let (status, _, _) = send("POST", &url, &[("content-type", "application/x-protobuf"), ("authorization", &auth)], request()).await;
    assert_eq!(status, 200);
    let trace_id = hex::encode(TRACE);
    // Jaeger itself holds the clear values: the masking is tracegate's.
    let mut stored = Value::Null;
    for _ in 0..200 {
        let (status, body) = common::get_json(&format!("{direct}/api/traces/{trace_id}")).await;
        if status == 200 {
            stored = body;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(tag(&stored["data"][0], "enduser.id").as_deref(), Some(USER_ID), "Jaeger has the trace: {stored}\n{}", jaeger.logs());

    let trace_path = format!("/jaeger/api/traces/{trace_id}");
    // No token: 401 with a challenge; a token without a role, or a service's: 403. The UI too.
    let (status, headers, _) = get(api, &trace_path, None).await;
    assert_eq!(status, 401);
    assert!(headers.get("www-authenticate").is_some());
    assert_eq!(get(api, "/jaeger/", None).await.0, 401);
    assert_eq!(get(api, &trace_path, Some(nora)).await.0, 403);
    assert_eq!(get(api, "/jaeger/search", Some(nora)).await.0, 403);
    assert_eq!(get(api, &trace_path, Some(shop)).await.0, 403);

    // Support: Jaeger's answer, personal data as the read API's pseudonyms.
    let (status, read) = get_json(api, &trace_path, sam).await;
    assert_eq!(status, 200, "{read}");
    let trace = &read["data"][0];
    assert_eq!(trace["traceID"], trace_id);
    assert_eq!(tag(trace, "order.id").as_deref(), Some("A-3001"));
    let shown = read.to_string();
    for secret in [USER_ID, EMAIL, NAME] {
        assert!(!shown.contains(secret), "{secret:?} shown to support through the proxy: {shown}");
    }
    assert!(shown.contains("gold"), "values that are not personal stay: {shown}");
    let (status, native) = get_json(api, &format!("/api/v1/traces/{trace_id}"), sam).await;
    assert_eq!(status, 200);
    let native_id = native["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["key"] == "enduser.id")
        .map(|a| a["value"]["stringValue"].as_str().unwrap().to_string())
        .unwrap();
    assert!(native_id.starts_with("pseud:"));
    assert_eq!(tag(trace, "enduser.id").unwrap(), native_id, "the same pseudonym as /api/v1");
    let customer: Value = serde_json::from_str(&tag(trace, "customer").unwrap()).unwrap();
    assert!(customer["user.email"].as_str().unwrap().starts_with("pseud:"), "inside a map: {customer}");
    let fields = &trace["spans"][0]["logs"][0]["fields"];
    assert!(fields.to_string().contains("pseud:"), "log fields: {fields}");
    // Admins see pseudonyms too, unless they unmask.
    assert_eq!(tag(&get_json(api, &trace_path, ada).await.1["data"][0], "enduser.id").unwrap(), native_id);

    // Search, the UI's way, and the OTLP JSON of /api/v3: masked as well.
    let (status, found) = get_json(api, "/jaeger/api/traces?service=shop-api&limit=20&lookback=1h", sam).await;
    assert_eq!(status, 200, "{found}");
    assert_eq!(found["data"].as_array().unwrap().len(), 1, "{found}");
    // `tags={"enduser.id":"<id>"}`, URL-encoded: a search by a person, allowed and audited.
    let tags = format!("%7B%22enduser.id%22%3A%22{USER_ID}%22%7D");
    let tag_search = format!("/jaeger/api/traces?service=shop-api&tags={tags}");
    let (status, by_user) = get_json(api, &tag_search, sam).await;
    assert_eq!(status, 200, "{by_user}");
    assert_eq!(by_user["data"][0]["traceID"], trace_id, "Jaeger's tag search works through the proxy");
    let (status, v3) = get_json(api, &format!("/jaeger/api/v3/traces/{trace_id}"), sam).await;
    assert_eq!(status, 200, "{v3}");
    assert!(v3.to_string().contains("pseud:") && !v3.to_string().contains(USER_ID), "{v3}");
    for shown in [found.to_string(), by_user.to_string()] {
        for secret in [USER_ID, EMAIL, NAME] {
            assert!(!shown.contains(secret), "{secret:?} in a search answer: {shown}");
        }
    }
    let (status, services) = get_json(api, "/jaeger/api/services", sam).await;
    assert_eq!(status, 200);
    assert!(services["data"].as_array().unwrap().iter().any(|s| s == "shop-api"), "{services}");

    // The UI's page, as Jaeger serves it under its base path.
    let (status, headers, page) = get(api, "/jaeger/", Some(sam)).await;
    assert_eq!(status, 200);
    assert!(headers["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(String::from_utf8_lossy(&page).contains("<base href=\"/jaeger/\""), "{}", String::from_utf8_lossy(&page));

    // A path Jaeger would clean (and might route otherwise) is refused, not passed on.
    assert_eq!(get(api, &format!("/jaeger/search/../api/traces/{trace_id}"), Some(sam)).await.0, 400);
    assert_eq!(get(api, &format!("/jaeger/%2e%2e/jaeger/api/traces/{trace_id}"), Some(sam)).await.0, 400);

    // Admin-only calls (archiving a trace) are refused to support; unmasking is an admin's,
    // with a reason.
    let auth_sam = format!("Bearer {sam}");
    let archive = format!("http://{api}/jaeger/api/archive/{trace_id}");
    assert_eq!(send("POST", &archive, &[("authorization", &auth_sam)], vec![]).await.0, 403);
    assert_eq!(get(api, &format!("{trace_path}?unmask=true&reason=ticket-9"), Some(sam)).await.0, 403);
    assert_eq!(get(api, &format!("{trace_path}?unmask=true"), Some(ada)).await.0, 400);
    let (status, clear) = get_json(api, &format!("{trace_path}?unmask=true&reason=ticket-9"), ada).await;
    assert_eq!(status, 200, "{clear}");
    assert_eq!(tag(&clear["data"][0], "enduser.id").as_deref(), Some(USER_ID));

    // The order timeline links each event to its span in Jaeger UI.
    let (status, order) = get_json(api, "/api/v1/orders/A-3001", sam).await;
    assert_eq!(status, 200, "{order}");
    assert_eq!(order["events"][0]["jaeger_url"], format!("{UI_URL}/trace/{trace_id}?uiFind={}", hex::encode(SPAN)), "{order}");

    // The audit: every read with its reader; refusals; the search with its query, the
    // personal tag value as a pseudonym; each trace a search found.
    let records = audit_records(dir.path());
    let of =
        |action: &str, sub: &str| -> Vec<&Value> { records.iter().filter(|r| r["action"] == action && r["actor"]["sub"] == sub).collect() };
    let reads = of("jaeger.trace.read", "sam");
    assert!(
        reads.iter().any(|r| r["resource"] == trace_path && r["outcome"] == "allowed" && r["reason"].is_null()),
        "support's read of the trace: {reads:#?}"
    );
    let from_search = reads.iter().filter(|r| r["reason"] == "in the answer to a search").count();
    assert_eq!(from_search, 2, "one record per trace found, per search: {reads:#?}");
    let searches = of("jaeger.search", "sam");
    assert_eq!(searches.len(), 2, "{searches:#?}");
    assert!(searches[0]["resource"].as_str().unwrap().starts_with("/jaeger/api/traces?service=shop-api&limit=20"), "{searches:#?}");
    assert!(searches.iter().all(|r| r["outcome"] == "allowed"));
    let by_person = searches[1]["resource"].as_str().unwrap();
    assert!(by_person.contains("enduser.id") && by_person.contains("pseud:"), "the person searched for, as a pseudonym: {by_person}");
    assert_eq!(of("jaeger.trace.read", "nora").len(), 1);
    assert_eq!(of("jaeger.trace.read", "nora")[0]["outcome"], "forbidden");
    assert_eq!(of("jaeger.ui", "nora")[0]["outcome"], "forbidden");
    assert_eq!(of("jaeger.admin", "sam")[0]["outcome"], "forbidden");
    let unmasks: Vec<&Value> = records.iter().filter(|r| r["action"] == "unmask").collect();
    assert_eq!(unmasks.len(), 2, "{unmasks:#?}");
    assert_eq!((&unmasks[0]["actor"]["sub"], &unmasks[0]["outcome"]), (&Value::from("sam"), &Value::from("forbidden")));
    assert_eq!((&unmasks[1]["actor"]["sub"], &unmasks[1]["reason"]), (&Value::from("ada"), &Value::from("ticket-9")));
    let log = records.iter().map(Value::to_string).collect::<String>();
    for secret in [USER_ID, EMAIL, NAME] {
        assert!(!log.contains(secret), "{secret:?} in the audit log");
    }
    gateway.shutdown().await;
    drop(jaeger);
}
