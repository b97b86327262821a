//! The support console in a real browser (issue 17): Debian's chromium driven by npm
//! `playwright-core` (tests/console/browser.js) signs in through the real OpenID Connect
//! provider (tests/signin/idp.mjs), finds an order of the Shop/CRM/MES scenario, reads its
//! lanes, stages, gaps, transitions and alerts, opens a trace with personal data masked, and as
//! admin unmasks it with a reason and finds the audit record. Along the way: hostile span names
//! and attribute values stay inert, every page passes axe-core (no serious or critical
//! violation) under the strict Content-Security-Policy, the order page fits 1024 px, and a
//! person without a role is refused. Screenshots of every page go to
//! `target/console-screenshots/`; the order page's becomes `docs/images/console-order.png` (the
//! README's picture) when that is missing or `TRACEGATE_UPDATE_SCREENSHOTS=1` is set.
//!
//! The data: Shop's traces through the OpenTelemetry Rust SDK over OTLP/HTTP (a constructor
//! file, the order with a customer e-mail, a database save, a bus publish), CRM's consume in a
//! trace of its own, MES's order events; an `order_sla` monitor with second-long thresholds makes
//! A-1001 late (two rules breached and resolved by event time, one firing).
//! `scripts/test.sh` installs chromium and tests/browser's npm packages; without them this test
//! fails, saying how to install.

mod common;
#[path = "common/auth.rs"]
mod fixture;
#[path = "common/signin.rs"]
mod harness;

use std::path::Path;
use std::time::{Duration, SystemTime};

use common::ports::free_port;
use common::send;
use harness::{audit_records, browser_result, check_tools, root, run_browser, start_idp};
use opentelemetry::trace::{Link, Span as _, SpanContext, SpanKind, TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use serde_json::{json, Value};
use tracegate::gateway::ConfigSource;
use tracegate::{Config, Gateway};

/// The late order (the page the README shows) and an order that went through on time.
const LATE: &str = "A-1001";
const ON_TIME: &str = "A-1002";
/// The customer's e-mail (personal data: masked for support, unmasked by an admin).
const EMAIL: &str = "pat.customer@example.com";
/// Hostile text in a span name and in attribute values: must stay text.
const XSS_SCRIPT: &str = "<script>window.__xss=1</script>";
const XSS_ATTR: &str = r#""><img src=x onerror="window.__xss=1">"#;
/// The admin's reason for unmasking (audited).
const REASON: &str = "ticket SUP-1234: the customer asks which e-mail the order confirmation went to";
const JAEGER_UI: &str = "https://jaeger.shop.example";
/// The console's Content-Security-Policy (docs/console.md): no inline code, nothing from elsewhere.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
     form-action 'self'; base-uri 'none'; frame-ancestors 'none'";
/// The configuration's secrets: the admin page's running configuration shows none of them.
const SECRETS: [&str; 4] =
    ["tracegate-secret-0123456789", "audit-checkpoint-key-0123456789abcdef", "pseudonym-key-0123456789abcdefghijkl", fixture::AUTH0_SECRET];

const MONITOR: &str = r#"
monitors:
  order_sla:
    lifecycle: [new, accepted, in_production, manufactured, handed_to_courier]
    terminal: [cancelled]
    grace: 1s
    rules:
      - {name: crm_accepts, from: new, to: accepted, within: 30s}
      - {name: bus_wait, from_stage: bus_publish, to_stage: bus_consume, within: 30s}
      - {name: production, from: in_production, to: manufactured, within: 20s, severity: critical}
"#;

fn config(port: u16, issuer: &str, data: &Path) -> String {
    let mut yaml = format!(
        r#"
receivers:
  otlp:
    grpc: {{endpoint: "127.0.0.1:0"}}
    http: {{endpoint: "127.0.0.1:0"}}
processors:
  order_enrich: {{wait: 1s}}
exporters:
  local: {{type: embedded, path: "{data}", batch: {{max_wait: 5ms}}}}
api: {{endpoint: "127.0.0.1:{port}", jaeger_ui_url: "{JAEGER_UI}"}}
audit:
  path: "{data}/audit.jsonl"
  checkpoint_key: "audit-checkpoint-key-0123456789abcdef"
service:
  pipelines:
    traces: {{receivers: [otlp], processors: [order_enrich], exporters: [local]}}
{MONITOR}"#,
        data = data.display()
    );
    yaml.push_str(&fixture::auth_yaml());
    yaml.push_str("  personal_data: {keys: [enduser.id, user.email], pseudonym_key: \"pseudonym-key-0123456789abcdefghijkl\"}\n");
    yaml.push_str(&harness::login_yaml(port, issuer));
    yaml
}

fn provider(endpoint: &str, service: &str) -> SdkTracerProvider {
    let exporter = SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(format!("{endpoint}/v1/traces"))
        .build()
        .expect("the OTLP/HTTP exporter builds");
    SdkTracerProvider::builder()
        .with_simple_exporter(exporter)
        .with_resource(Resource::builder().with_service_name(service.to_string()).build())
        .build()
}

/// Shop and CRM as instrumented services report the late order, `base` being when it was
/// placed: the constructor file, the order (customer e-mail, a hostile span and attribute), its
/// database save and bus publish; a minute later CRM consumes the message (linked to the
/// publish) and accepts the order. Returns Shop's trace id.
fn shop_and_crm(endpoint: String, base: SystemTime) -> String {
    let at = |ms: u64| base + Duration::from_millis(ms);
    let shop = provider(&endpoint, "shop-api");
    let tracer = shop.tracer("shop");
    let mut file = tracer
        .span_builder("POST /constructor/files")
        .with_kind(SpanKind::Server)
        .with_start_time(at(0))
        .with_attributes(vec![KeyValue::new("http.request.method", "POST"), KeyValue::new("constructor.file_id", "F-1001")])
        .start(&tracer);
    file.end_with_timestamp(at(150));

    let mut root = tracer
        .span_builder("POST /orders")
        .with_kind(SpanKind::Server)
        .with_start_time(at(20_000))
        .with_attributes(vec![
            KeyValue::new("http.request.method", "POST"),
            KeyValue::new("http.route", "/orders"),
            KeyValue::new("order.id", LATE),
            KeyValue::new("enduser.id", "u-1001"),
            KeyValue::new("user.email", EMAIL),
            KeyValue::new("constructor.file_id", "F-1001"),
            KeyValue::new("shop.note", XSS_ATTR),
        ])
        .start(&tracer);
    let shop_trace = root.span_context().trace_id().to_string();
    let cx = opentelemetry::Context::current().with_remote_span_context(root.span_context().clone());
    let mut save = tracer
        .span_builder("INSERT shop.orders")
        .with_kind(SpanKind::Client)
        .with_start_time(at(20_040))
        .with_attributes(vec![KeyValue::new("db.system.name", "postgresql"), KeyValue::new("db.operation.name", "INSERT")])
        .start_with_context(&tracer, &cx);
    save.end_with_timestamp(at(20_090));
    // A span whose name and attributes are markup: a database write, so a step of the order.
    let mut hostile = tracer
        .span_builder(XSS_SCRIPT)
        .with_kind(SpanKind::Client)
        .with_start_time(at(20_100))
        .with_attributes(vec![
            KeyValue::new("db.system.name", "postgresql"),
            KeyValue::new("db.query.text", format!("INSERT INTO shop.notes VALUES ('{XSS_ATTR}')")),
            KeyValue::new("shop.comment", XSS_SCRIPT),
            KeyValue::new("shop.label", XSS_ATTR),
        ])
        .start_with_context(&tracer, &cx);
    hostile.end_with_timestamp(at(20_130));
    let mut publish = tracer
        .span_builder("orders publish")
        .with_kind(SpanKind::Producer)
        .with_start_time(at(20_200))
        .with_attributes(vec![KeyValue::new("messaging.system", "rabbitmq"), KeyValue::new("messaging.destination.name", "orders")])
        .start_with_context(&tracer, &cx);
    let publish_context: SpanContext = publish.span_context().clone();
    publish.end_with_timestamp(at(20_230));
    root.end_with_timestamp(at(20_300));
    shop.shutdown().expect("Shop's spans are sent");

    // CRM takes the message a minute later (over both thresholds) and accepts the order.
    let crm = provider(&endpoint, "crm-api");
    let tracer = crm.tracer("crm");
    let mut consume = tracer
        .span_builder("orders process")
        .with_kind(SpanKind::Consumer)
        .with_start_time(at(80_200))
        .with_links(vec![Link::with_context(publish_context)])
        .with_attributes(vec![
            KeyValue::new("messaging.system", "rabbitmq"),
            KeyValue::new("messaging.operation.type", "process"),
            KeyValue::new("order.id", LATE),
            KeyValue::new("order.new_status", "accepted"),
        ])
        .start(&tracer);
    let cx = opentelemetry::Context::current().with_remote_span_context(consume.span_context().clone());
    let mut update = tracer
        .span_builder("UPDATE crm.orders")
        .with_kind(SpanKind::Client)
        .with_start_time(at(80_300))
        .with_attributes(vec![KeyValue::new("db.system.name", "mssql"), KeyValue::new("db.operation.name", "UPDATE")])
        .start_with_context(&tracer, &cx);
    update.end_with_timestamp(at(80_350));
    consume.end_with_timestamp(at(80_400));
    crm.shutdown().expect("CRM's spans are sent");
    shop_trace
}

fn rfc3339(t: SystemTime) -> String {
    tracegate::shared::format_rfc3339_nanos(t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_nanos() as u64)
}

async fn post_events(http: std::net::SocketAddr, events: &Value) {
    let url = format!("http://{http}/v1/order-events");
    let (status, _, body) = send("POST", &url, &[("content-type", "application/json")], serde_json::to_vec(events).unwrap()).await;
    assert_eq!(status, 200, "order events refused: {}", String::from_utf8_lossy(&body));
}

/// GETs an API path with a bearer token; the status and the JSON body (null if none).
async fn api_get(public_url: &str, path: &str, token: &str) -> (u16, Value) {
    let auth = format!("Bearer {token}");
    let (status, _, body) = send("GET", &format!("{public_url}{path}"), &[("authorization", &auth)], vec![]).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// Waits until `check` holds for the JSON at `path` (30 s at most).
async fn wait_for(public_url: &str, path: &str, token: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    common::eventually(&format!("{what} ({path})"), Duration::from_secs(30), || async {
        common::when(api_get(public_url, path, token).await, |(status, body)| *status == 200 && check(body))
    })
    .await
    .1
}

fn strings(value: &Value) -> Vec<String> {
    value.as_array().map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_in_a_real_browser() {
    check_tools(&["oidc-provider", "playwright-core", "axe-core"]);
    let port = free_port();
    let public_url = format!("http://127.0.0.1:{port}");
    let (_idp, issuer) = start_idp(&public_url, "all");
    let data = tempfile::tempdir().unwrap();
    // Started from a file, so that the admin page's reload has something to reload.
    let file = data.path().join("tracegate.yaml");
    std::fs::write(&file, config(port, &issuer, data.path())).unwrap();
    let config = Config::from_file(&file).unwrap_or_else(|e| panic!("test config invalid: {e}"));
    let gateway = Gateway::start_from(config, ConfigSource::File(file)).await.expect("gateway starts");
    let http = gateway.http_addr().unwrap();

    // The late order, placed two minutes ago: Shop and CRM over OTLP/HTTP, then MES starts
    // production and never reports it finished (the production rule fires).
    let base = SystemTime::now() - Duration::from_secs(150);
    let endpoint = format!("http://{http}");
    let handle = tokio::runtime::Handle::current();
    let shop_trace = tokio::task::spawn_blocking(move || {
        // The SDK's simple processor blocks on each export; hyper needs the runtime's reactor.
        let _guard = handle.enter();
        shop_and_crm(endpoint, base)
    })
    .await
    .unwrap();
    let at = |secs: u64| rfc3339(base + Duration::from_secs(secs));
    post_events(
        http,
        &json!([
            {"order_id": LATE, "service": "mes-api", "status": "in_production", "time": at(90),
             "attributes": {"mes.line": "3", "mes.note": XSS_ATTR}},
        ]),
    )
    .await;
    // The order that went through on time, told by order events alone (its last step is newer
    // than the late order's: the late one waits longest).
    post_events(
        http,
        &json!([
            {"order_id": ON_TIME, "service": "shop-api", "status": "new", "stage": "created", "time": at(100)},
            {"order_id": ON_TIME, "service": "shop-api", "stage": "bus_publish", "time": at(101)},
            {"order_id": ON_TIME, "service": "crm-api", "status": "accepted", "stage": "bus_consume", "time": at(105)},
            {"order_id": ON_TIME, "service": "mes-api", "status": "in_production", "time": at(110)},
            {"order_id": ON_TIME, "service": "mes-api", "status": "manufactured", "time": at(120)},
            {"order_id": ON_TIME, "service": "mes-api", "status": "handed_to_courier", "time": at(130)},
        ]),
    )
    .await;

    // Everything readable, and the late order's alerts raised, before the browser looks.
    let support = fixture::token(fixture::Idp::Keycloak, "kc-support", &["support"]);
    let timeline = wait_for(&public_url, &format!("/api/v1/orders/{LATE}"), &support, "the late order's seven steps", |b| {
        b["events"].as_array().map_or(0, Vec::len) >= 7
    })
    .await;
    let stages: Vec<String> =
        timeline["events"].as_array().unwrap().iter().filter_map(|e| e["stage"].as_str().map(str::to_string)).collect();
    for stage in ["file_link", "created", "db_save", "bus_publish", "bus_consume", "status_change"] {
        assert!(stages.iter().any(|s| s == stage), "the scenario lacks a {stage} step: {stages:?}\n{timeline:#}");
    }
    wait_for(&public_url, &format!("/api/v1/orders/{ON_TIME}"), &support, "the on-time order", |b| {
        b["events"].as_array().map_or(0, Vec::len) >= 6
    })
    .await;
    let alerts = wait_for(&public_url, "/api/v1/alerts?limit=100", &support, "the late order's three alerts", |b| {
        let list = b["alerts"].as_array().cloned().unwrap_or_default();
        let has = |rule: &str, state: &str| list.iter().any(|a| a["order_id"] == LATE && a["rule"] == rule && a["state"] == state);
        has("production", "firing") && has("crm_accepts", "resolved") && has("bus_wait", "resolved")
    })
    .await;
    assert!(
        !alerts["alerts"].as_array().unwrap().iter().any(|a| a["order_id"] == ON_TIME),
        "the on-time order raised an alert: {alerts:#}"
    );

    // The browser walk.
    // A fresh directory: a screenshot left by an earlier run must not pass for this run's.
    let shots = root().join("target/console-screenshots");
    let _ = std::fs::remove_dir_all(&shots);
    std::fs::create_dir_all(&shots).unwrap();
    let script = root().join("tests/console/browser.js");
    let env = vec![
        ("LATE", LATE.to_string()),
        ("SHOP_TRACE", shop_trace.clone()),
        ("EMAIL", EMAIL.to_string()),
        ("REASON", REASON.to_string()),
        ("SHOTS", shots.display().to_string()),
        ("SECRETS", SECRETS.join("\n")),
        ("EVENTS", format!("http://{http}/v1/order-events")),
    ];
    let (public, iss) = (public_url.clone(), issuer.clone());
    let out = tokio::task::spawn_blocking(move || run_browser(&script, &public, &iss, &env)).await.unwrap();
    let result = browser_result(&out);
    gateway.shutdown().await;

    let mut failures: Vec<String> = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            failures.push(what);
        }
    };
    let r = |key: &str| result[key].clone();

    // The door: `/` without a session goes to the provider and comes back to `/`.
    check(r("door_redirected_to_idp") == true, format!("/ did not send the browser to the provider: {}", r("door_first_url")));
    check(r("support_callback_status") == 303, format!("support's callback: {}", r("support_callback_status")));
    check(r("support_landed_on") == format!("{public_url}/"), format!("support landed on {}", r("support_landed_on")));

    // Orders: the search box and filters are labelled, the order in flight listed (A-1002, handed to
    // the courier, is finished: left out by default, found by its status), the search finds A-1001.
    check(r("orders_q_labelled") == true, "the order search input has no label \"Order id\"".into());
    for filter in ["status", "service", "since", "until", "alert"] {
        check(r("orders_filters")[filter] == true, format!("orders filter {filter:?} missing or unlabelled: {}", r("orders_filters")));
    }
    let listed = strings(&r("orders_rows"));
    check(listed.contains(&LATE.to_string()) && !listed.contains(&ON_TIME.to_string()), format!("orders listed: {listed:?}"));
    check(
        listed.first().map(String::as_str) == Some(LATE),
        format!("the longest-waiting order comes first (A-1001, waiting since its last step ~60 s ago): {listed:?}"),
    );
    let late_row = r("orders_late_row").as_str().unwrap_or("").to_string();
    for part in ["in_production", "mes-api"] {
        check(late_row.contains(part), format!("A-1001's row lacks {part:?}: {late_row:?}"));
    }
    check(r("filter_alert_firing") == json!([LATE]), format!("orders with a firing alert: {}", r("filter_alert_firing")));
    check(r("filter_status_courier") == json!([ON_TIME]), format!("orders handed to the courier: {}", r("filter_status_courier")));
    check(r("search_landed_on") == format!("{public_url}/orders/{LATE}"), format!("searching A-1001 led to {}", r("search_landed_on")));
    let mut prefixed = strings(&r("prefix_rows"));
    prefixed.sort();
    check(prefixed == [LATE, ON_TIME], format!("searching the prefix A-100 lists both orders: {}", r("prefix_rows")));

    // Order: facts, lanes per service, stages, gaps, hops, steps table, transitions, alerts, files.
    check(r("order_h1").as_str().is_some_and(|h| h.contains(LATE)), format!("order h1: {}", r("order_h1")));
    let facts = r("order_facts");
    for fact in ["Status", "Age", "Current service", "Current stage", "Waiting since"] {
        check(facts[fact].as_str().is_some_and(|v| !v.trim().is_empty()), format!("fact {fact:?} missing: {facts}"));
    }
    check(facts["Status"].as_str().is_some_and(|s| s.contains("in_production")), format!("status fact: {facts}"));
    check(facts["Current service"].as_str().is_some_and(|s| s.contains("mes-api")), format!("current service fact: {facts}"));
    let lanes = r("order_lanes");
    for service in ["shop-api", "crm-api", "mes-api"] {
        check(
            lanes.as_array().is_some_and(|l| {
                l.iter().any(|lane| lane["service"] == service && lane["text"].as_str().is_some_and(|t| t.contains(service)))
            }),
            format!("no lane for {service} with its name as text: {lanes}"),
        );
    }
    check(lanes.as_array().map_or(0, Vec::len) == 3, format!("one lane per service: {lanes}"));
    let steps = r("order_steps");
    let has_step = |stage: &str, service: &str| {
        steps.as_array().is_some_and(|s| {
            s.iter()
                .any(|st| st["stage"] == stage && st["service"] == service && st["href"].as_str().is_some_and(|h| h.contains("/traces/")))
        })
    };
    for (stage, service) in [
        ("file_link", "shop-api"),
        ("created", "shop-api"),
        ("db_save", "shop-api"),
        ("bus_publish", "shop-api"),
        ("bus_consume", "crm-api"),
        ("db_save", "crm-api"),
        ("status_change", "mes-api"),
    ] {
        check(has_step(stage, service), format!("no {stage} step of {service} linking to its trace: {steps}"));
    }
    // The file 20 s before the order; CRM took the message a minute after Shop published it.
    let gaps = strings(&r("order_gaps"));
    check(gaps.len() >= 3, format!("gap labels between steps: {gaps:?}"));
    for gap in ["20.0 s", "1m 00s"] {
        check(gaps.iter().any(|g| g.contains(gap)), format!("no gap reads {gap:?}: {gaps:?}"));
    }
    check(r("order_hops").as_u64().unwrap_or(0) >= 1, format!("bus hops drawn: {}", r("order_hops")));
    check(r("order_swimlane_labelled") == true, "the swimlane SVG has no role (img or group) with a label".into());
    // File, created, two saves and the publish of Shop; consume and save of CRM; MES's event.
    check(r("order_steps_table_rows") == 8, format!("steps table rows: {}", r("order_steps_table_rows")));
    check(r("order_trace_links") == 8, format!("steps table trace links: {}", r("order_trace_links")));
    check(
        strings(&r("order_jaeger_links")).iter().any(|h| h.starts_with(&format!("{JAEGER_UI}/trace/{shop_trace}"))),
        format!("steps table Jaeger links: {}", r("order_jaeger_links")),
    );
    let transitions = r("order_transitions");
    // Stage transitions may be written `stage:bus_publish`.
    let same = |v: &Value, name: &str| v.as_str().is_some_and(|s| s == name || s.strip_prefix("stage:") == Some(name));
    let transition = |from: &str, to: &str| {
        transitions
            .as_array()
            .and_then(|t| t.iter().find(|row| same(&row["from"], from) && same(&row["to"], to)).cloned())
            .unwrap_or(Value::Null)
    };
    let accepted = transition("new", "accepted");
    check(
        accepted["breach"] == true && accepted["text"].as_str().is_some_and(|t| t.contains("over threshold")),
        format!("new → accepted (60 s against 30 s) is a breach marked \"over threshold\": {transitions}"),
    );
    let bus = transition("bus_publish", "bus_consume");
    check(bus["breach"] == true, format!("bus_publish → bus_consume (60 s against 30 s) is a breach: {transitions}"));
    check(
        transitions.as_array().is_some_and(|t| t.iter().any(|row| row["breach"] == false)),
        format!("a transition within its threshold is not marked: {transitions}"),
    );
    let order_alerts = r("order_alerts");
    let alert =
        |rule: &str, state: &str| order_alerts.as_array().is_some_and(|a| a.iter().any(|x| x["rule"] == rule && x["state"] == state));
    check(alert("production", "firing"), format!("the firing production alert is marked: {order_alerts}"));
    check(alert("crm_accepts", "resolved"), format!("the resolved crm_accepts alert is marked: {order_alerts}"));
    check(
        r("order_files").as_str().is_some_and(|f| f.contains("POST /constructor/files"))
            && strings(&r("order_file_links")).iter().any(|h| h.contains("/traces/")),
        format!("the constructor file's upload with a link to its trace: {} {}", r("order_files"), r("order_file_links")),
    );
    check(r("order_live") == true, "the in-flight order has a #live section".into());
    check(r("keyboard_first") == "Skip to content", format!("the first Tab stop: {}", r("keyboard_first")));
    check(r("keyboard_reaches_step") == true, "Tab never reaches a step of the swimlane".into());
    check(
        r("keyboard_enter_opened").as_str().is_some_and(|u| u.contains("/traces/")),
        format!("Enter on a step opened {}", r("keyboard_enter_opened")),
    );
    check(
        r("order_overflow_1024")["body_overflows"] == false,
        format!("the order page overflows at 1024 px: {}", r("order_overflow_1024")),
    );
    check(
        r("order_overflow_1024")["swimlane_in_box"] == true,
        format!("the swimlane does not scroll in its own box at 1024 px: {}", r("order_overflow_1024")),
    );

    // Trace: the waterfall, masked personal data, hostile text shown as text; no unmask for support.
    check(
        r("trace_url").as_str().is_some_and(|u| u.contains(&format!("/traces/{shop_trace}"))),
        format!("the created step opened {}", r("trace_url")),
    );
    // Shop's order trace: POST /orders, its database save, the hostile span, the publish.
    check(r("trace_rows") == 4, format!("waterfall rows (Shop's trace has 4 spans): {}", r("trace_rows")));
    check(r("trace_bars") == 4, format!("waterfall bars: {}", r("trace_bars")));
    check(r("trace_attr_panels") == 4, format!("attribute panels: {}", r("trace_attr_panels")));
    // The database save (50 ms) is indented under POST /orders (300 ms), its bar a sixth as long.
    let geometry = r("trace_geometry");
    let (root_span, child) = (&geometry["POST /orders"], &geometry["INSERT shop.orders"]);
    check(
        root_span["left"].as_f64().zip(child["left"].as_f64()).is_some_and(|(a, b)| b > a + 4.0),
        format!("the child span is not indented under its parent: {geometry}"),
    );
    check(
        root_span["bar"].as_f64().zip(child["bar"].as_f64()).is_some_and(|(a, b)| b > 0.0 && (a / b - 6.0).abs() < 0.6),
        format!("the bars are not to scale (300 ms against 50 ms): {geometry}"),
    );
    check(r("trace_has_email") == false, "support's trace page holds the clear e-mail".into());
    check(r("trace_has_pseudonym") == true, "support's trace page shows no pseudonym (pseud:...)".into());
    check(r("trace_xss_name_as_text") == true, "the hostile span name is not shown as text".into());
    check(r("trace_linked") == true, format!("CRM's trace page ({}) does not link Shop's trace (its span link)", r("crm_trace_url")));
    check(r("trace_support_unmask_form") == false, "support is offered the unmask form".into());
    check(r("mes_trace_markup_as_text") == true, format!("MES's event ({}) does not show its attribute as text", r("mes_trace_url")));

    // Alerts page.
    let rows = r("alerts_rows");
    let alert_row = |rule: &str, state: &str| {
        rows.as_array().is_some_and(|a| {
            a.iter().any(|x| {
                x["rule"] == rule
                    && x["state"] == state
                    && x["order_link"].as_str().is_some_and(|h| h.ends_with(&format!("/orders/{LATE}")))
            })
        })
    };
    check(alert_row("production", "firing"), format!("alerts page: the firing alert with a link to the order: {rows}"));
    check(alert_row("crm_accepts", "resolved"), format!("alerts page: the resolved alert: {rows}"));
    check(
        r("alerts_filter_firing") == json!([{"id": null, "rule": "production", "state": "firing"}]),
        format!("the alerts page filtered on firing: {}", r("alerts_filter_firing")),
    );
    check(
        r("alerts_filters") == json!({"state": true, "rule": true, "severity": true}),
        format!("alerts filters labelled: {}", r("alerts_filters")),
    );

    // 403: support on the admin page, nora at sign-in.
    check(r("support_admin_status") == 403, format!("support on /admin: {}", r("support_admin_status")));
    check(
        r("support_admin_text").as_str().is_some_and(|t| t.contains("admin role")),
        format!("403 page text: {}", r("support_admin_text")),
    );
    check(r("norole_callback_status") == 403, format!("nora's callback: {}", r("norole_callback_status")));
    check(r("norole_text").as_str().is_some_and(|t| t.contains("role")), format!("nora's page: {}", r("norole_text")));
    check(r("norole_cookie") == false, "nora got a session".into());

    // Admin: unmask with a reason, then the audit record on /admin; the config is redacted.
    check(
        r("admin_landed_on") == format!("{public_url}/traces/{shop_trace}"),
        format!("the admin's deep link came back to {}", r("admin_landed_on")),
    );
    check(r("admin_unmask_form") == json!({"reason_labelled": true, "csrf": true}), format!("the unmask form: {}", r("admin_unmask_form")));
    check(r("admin_unmask_status") == 200, format!("the unmask answer: {}", r("admin_unmask_status")));
    check(r("admin_unmasked_email") == true, "the admin does not see the e-mail after unmasking".into());
    check(
        r("admin_audit_row").as_str().is_some_and(|t| t.contains("ada") && t.contains(REASON)),
        format!("the unmask on /admin: {}", r("admin_audit_row")),
    );
    check(r("admin_config_shown") == true, "#config is missing on /admin".into());
    check(r("admin_config_secrets") == json!([]), format!("the running configuration shows secrets: {}", r("admin_config_secrets")));
    check(r("admin_reload_csrf") == true, "the reload form has no CSRF field".into());
    check(
        r("admin_reload_outcome") == "applied",
        format!("the reload from the page: {} {}", r("admin_reload_outcome"), r("admin_reload_result")),
    );
    let filters = r("admin_filters");
    check(filters == json!({"actor": true, "action": true, "since": true, "until": true}), format!("admin filters labelled: {filters}"));

    // The in-flight order's page follows MES's "manufactured" by itself (polling every 5 s).
    check(r("live_before_had_manufactured") == false, "the order was manufactured before MES said so".into());
    check(
        r("live_updated") == true,
        format!("the open order page did not show \"manufactured\" and the resolved alert within 20 s: {}", r("live_after_ms")),
    );
    check(r("live_same_page") == true, "the order page reloaded instead of updating itself".into());

    // Everywhere: inert markup, no dialog, no CSP violation or script error, axe clean.
    let xss = r("xss");
    check(xss.as_object().is_some_and(|m| !m.is_empty() && m.values().all(|v| v == "undefined")), format!("window.__xss per page: {xss}"));
    check(r("injected_elements") == json!([]), format!("injected img/script elements: {}", r("injected_elements")));
    check(r("dialogs") == json!([]), format!("dialogs opened: {}", r("dialogs")));
    check(r("console_errors") == json!([]), format!("console errors / CSP violations: {}", r("console_errors")));
    // The only refusals the walk meets are the ones it asks for: support on /admin, nora's sign-in.
    let unexpected: Vec<&Value> = result["failed_responses"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|x| {
                    !(x["status"] == 403 && (x["url"] == "/admin" || x["url"].as_str().is_some_and(|u| u.starts_with("/auth/callback"))))
                })
                .collect()
        })
        .unwrap_or_default();
    check(unexpected.is_empty(), format!("console requests that failed: {unexpected:?}"));
    let axe = r("axe");
    for page in ["orders", "order", "trace", "trace_unmasked", "alerts", "admin", "forbidden", "norole"] {
        check(axe[page].is_array(), format!("axe did not run on {page}: {}", axe[page]));
        check(axe[page].as_array().is_some_and(|v| v.is_empty()), format!("axe serious/critical violations on {page}: {:#}", axe[page]));
    }
    // The strict policy on every console page (the 403 page included).
    for page in ["orders", "order", "trace", "alerts", "admin", "forbidden"] {
        check(r("csp")[page] == CSP, format!("{page}'s Content-Security-Policy: {}", r("csp")[page]));
    }
    eprintln!("server render times (ms): {}", r("render_ms"));
    for shot in ["orders", "order", "trace", "alerts", "admin", "403"] {
        let path = shots.join(format!("{shot}.png"));
        check(std::fs::metadata(&path).is_ok_and(|m| m.len() > 1000), format!("screenshot {} missing", path.display()));
    }
    check(r("errors") == json!({}), format!("browser steps that failed: {:#}", r("errors")));

    // The unmask is in the audit log file: actor ada, the reason, allowed.
    let records = audit_records(data.path());
    let unmask = records.iter().find(|rec| {
        rec["action"].as_str().is_some_and(|a| a.contains("unmask")) && rec["actor"]["sub"] == "ada" && rec["reason"] == REASON
    });
    check(
        unmask.is_some_and(|rec| rec["outcome"] == "allowed" && rec["resource"].as_str().is_some_and(|res| res.contains(&shop_trace))),
        format!("no allowed unmask of {shop_trace} by ada with the reason in the audit log: {unmask:?}"),
    );
    check(
        !records.iter().any(|rec| {
            rec["action"].as_str().is_some_and(|a| a.contains("unmask")) && rec["actor"]["sub"] == "sam" && rec["outcome"] == "allowed"
        }),
        "support unmasked".into(),
    );

    // No page failed on the server along the way.
    let errors: Vec<&Value> = records.iter().filter(|rec| rec["outcome"] == "error").collect();
    check(errors.is_empty(), format!("requests that failed on the server: {errors:#?}"));

    // The README's picture of the order page: written when missing, or on request
    // (TRACEGATE_UPDATE_SCREENSHOTS=1), so that a test run leaves the checkout unchanged.
    let order_shot = shots.join("order.png");
    let readme_image = root().join("docs/images/console-order.png");
    let update = std::env::var("TRACEGATE_UPDATE_SCREENSHOTS").is_ok_and(|v| v == "1");
    if order_shot.exists() && (update || !readme_image.exists()) {
        std::fs::create_dir_all(readme_image.parent().unwrap()).unwrap();
        std::fs::copy(&order_shot, &readme_image).unwrap();
    }

    assert!(failures.is_empty(), "{} console check(s) failed:\n- {}", failures.len(), failures.join("\n- "));
}
