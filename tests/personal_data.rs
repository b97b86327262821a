//! Personal data and credentials: support sees keyed pseudonyms, an admin unmasks with a reason
//! (audited), Authorization and cookie attributes never reach an exporter, and no token or
//! personal value appears in the gateway's logs.

mod common;
#[path = "common/auth.rs"]
mod fixture;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{eventually, send, span_attr, start_gateway, when, Sink};
use fixture::*;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span};
use prost::Message;
use serde_json::Value;

const EMAIL: &str = "alice.personal@example.com";
const PHONE: &str = "+49-30-555-0199-personal";
const NAME: &str = "Alice Personal-Name";
const USER_ID: &str = "u-4711-personal";
const TRACE: [u8; 16] = [0x42; 16];

/// Everything the gateway logs, at every level, while this test binary runs.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }), ..Default::default() }
}

fn kvlist(key: &str, values: Vec<KeyValue>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(any_value::Value::KvlistValue(KeyValueList { values })) }),
        ..Default::default()
    }
}

fn array(key: &str, values: Vec<any_value::Value>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::ArrayValue(ArrayValue {
                values: values.into_iter().map(|v| AnyValue { value: Some(v) }).collect(),
            })),
        }),
        ..Default::default()
    }
}

fn request(token_in_attribute: &str) -> Vec<u8> {
    // Personal data where instrumentation really puts it: nested maps, arrays of maps, the
    // scope, events and links, and a key nested under its prefix (`user` > `phone`).
    let nested = || {
        vec![
            kvlist("customer", vec![kv("user.email", EMAIL), kv("tier", "gold")]),
            kvlist("user", vec![kv("phone", PHONE)]),
            array(
                "recipients",
                vec![any_value::Value::KvlistValue(KeyValueList {
                    values: vec![kvlist("contact", vec![kv("enduser.id", USER_ID), kv("user.name", NAME)])],
                })],
            ),
        ]
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: vec![kv("service.name", "shop-api")], ..Default::default() }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope { name: "shop".into(), attributes: nested(), ..Default::default() }),
                spans: vec![Span {
                    events: vec![span::Event { name: "checkout".into(), attributes: nested(), ..Default::default() }],
                    links: vec![span::Link { trace_id: vec![0x43; 16], span_id: vec![2; 8], attributes: nested(), ..Default::default() }],
                    trace_id: TRACE.to_vec(),
                    span_id: vec![1; 8],
                    name: "POST /orders".into(),
                    start_time_unix_nano: 1_795_168_800_000_000_000,
                    end_time_unix_nano: 1_795_168_800_100_000_000,
                    attributes: vec![
                        kv("order.id", "A-2001"),
                        kv("enduser.id", USER_ID),
                        kv("user.email", EMAIL),
                        kv("http.request.header.authorization", &format!("Bearer {token_in_attribute}")),
                        kv("http.request.header.cookie", "session=s3cr3t-cookie"),
                        kv("http.response.header.set-cookie", "session=s3cr3t-cookie"),
                    ]
                    .into_iter()
                    .chain(nested())
                    .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

async fn get(api: SocketAddr, path: &str, token: &str) -> (u16, Value) {
    let auth = format!("Bearer {token}");
    let (status, _, body) = send("GET", &format!("http://{api}{path}"), &[("authorization", auth.as_str())], vec![]).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn attribute(trace: &Value, key: &str) -> Option<String> {
    trace["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .and_then(|a| a["value"]["stringValue"].as_str())
        .map(str::to_string)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn support_sees_pseudonyms_admin_unmasks_with_a_reason_and_credentials_never_travel() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt().with_max_level(tracing::Level::TRACE).with_writer(move || writer.clone()).with_ansi(false).init();

    let sink = Sink::start().await;
    let yaml = secured_config()
        .replace(
            "  local: {type: embedded",
            &format!("  jaeger: {{type: otlp, endpoint: \"{}\", batch: {{max_wait: 5ms}}}}\n  local: {{type: embedded", sink.endpoint()),
        )
        .replace("exporters: [local]", "exporters: [jaeger, local]")
        .replace("  leeway: 5s\n", "  leeway: 5s\n  personal_data: {pseudonym_key: \"pseudonym-key-0123456789abcdefghijkl\"}\n");
    let (gateway, dir) = start_gateway(&yaml).await;
    let api = gateway.api_addr().unwrap();
    let idp = Idp::Keycloak;
    let tokens = mint(&[
        spec(idp, service_claims(idp, "shop-api")),
        spec(idp, claims(idp, "sam", &["support"])),
        spec(idp, claims(idp, "ada", &["admin"])),
    ]);
    let (shop, sam, ada) = (&tokens[0], &tokens[1], &tokens[2]);

    let url = format!("http://{}/v1/traces", gateway.http_addr().unwrap());
    let auth = format!("Bearer {shop}");
    let (status, _, _) = send("POST", &url, &[("content-type", "application/x-protobuf"), ("authorization", &auth)], request(shop)).await;
    assert_eq!(status, 200);
    sink.wait_for(1, Duration::from_secs(10)).await;

    // Exported: the personal data is there (Jaeger is trusted with it), credentials are not.
    let (_, span) = &sink.spans()[0];
    assert_eq!(span_attr(span, "enduser.id").as_deref(), Some(USER_ID));
    for (key, _) in span.attributes.iter().map(|kv| (kv.key.clone(), ())) {
        assert!(!key.starts_with("http.request.header.") && !key.starts_with("http.response.header."), "{key} was exported");
    }
    let exported = format!("{:?}", sink.spans());
    assert!(!exported.contains("eyJ") && !exported.contains("Bearer ") && !exported.contains("s3cr3t"), "{exported}");

    // Support: pseudonyms, stable between reads, never the clear value.
    let path = format!("/api/v1/traces/{}", hex::encode(TRACE));
    let (_, trace) = eventually("the trace readable by support", Duration::from_secs(3), || async {
        when(get(api, &path, sam).await, |(s, _)| *s == 200)
    })
    .await;
    let id = attribute(&trace, "enduser.id").expect("enduser.id is shown");
    assert!(id.starts_with("pseud:") && !id.contains(USER_ID), "{id}");
    let email = attribute(&trace, "user.email").unwrap();
    assert!(email.starts_with("pseud:") && email != id, "{email}");
    assert_eq!(attribute(&get(api, &path, sam).await.1, "enduser.id").unwrap(), id, "a pseudonym is stable");
    assert_eq!(attribute(&get(api, &path, ada).await.1, "enduser.id").unwrap(), id, "admins see pseudonyms unless they unmask");
    assert_eq!(attribute(&trace, "order.id").as_deref(), Some("A-2001"));
    // Nowhere in support's answer: not in scope attributes, nested maps, arrays, events or links.
    let shown = trace.to_string();
    for secret in [USER_ID, EMAIL, PHONE, NAME] {
        assert!(!shown.contains(secret), "{secret:?} shown to support: {shown}");
    }
    assert!(shown.contains("gold"), "values that are not personal stay: {shown}");

    // Unmasking: admin only, with a reason, audited.
    assert_eq!(get(api, &format!("{path}?unmask=true&reason=ticket-77"), sam).await.0, 403);
    assert_eq!(get(api, &format!("{path}?unmask=true"), ada).await.0, 400);
    let (status, clear) = get(api, &format!("{path}?unmask=true&reason=ticket-77"), ada).await;
    assert_eq!(status, 200);
    assert_eq!(attribute(&clear, "enduser.id").as_deref(), Some(USER_ID));
    assert!(clear.to_string().contains(PHONE), "unmasked means every value in clear");
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    let unmasks: Vec<Value> =
        audit.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).filter(|r| r["action"] == "unmask").collect();
    assert_eq!(unmasks.len(), 2, "{unmasks:#?}");
    assert_eq!(unmasks[0]["outcome"], "forbidden");
    assert_eq!(unmasks[1]["outcome"], "allowed");
    assert_eq!(unmasks[1]["reason"], "ticket-77");
    assert_eq!(unmasks[1]["actor"]["sub"], "ada");
    assert!(!audit.contains(USER_ID) && !audit.contains(EMAIL), "personal data in the audit log");

    // Without an audit log there is no unmasking at all: nothing may be shown unaudited.
    let unaudited = yaml.split("\naudit:").next().unwrap().to_string()
        + "\nservice:\n  pipelines:\n    traces: {receivers: [otlp], exporters: [jaeger, local]}\n"
        + &yaml[yaml.find("\nauth:").unwrap()..];
    let (second, _dir2) = start_gateway(&unaudited).await;
    let api2 = second.api_addr().unwrap();
    let (status, _, _) = send(
        "POST",
        &format!("http://{}/v1/traces", second.http_addr().unwrap()),
        &[("content-type", "application/x-protobuf"), ("authorization", &auth)],
        request(shop),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = get(api2, &format!("{path}?unmask=true&reason=ticket-78"), ada).await;
    assert_eq!(status, 503, "unmask without an audit log is refused");
    second.shutdown().await;

    gateway.shutdown().await;
    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("tracegate started"), "logs were captured");
    for secret in ["eyJ", "Bearer ", "s3cr3t", USER_ID, EMAIL] {
        assert!(!logs.contains(secret), "{secret:?} appears in the logs");
    }
}
