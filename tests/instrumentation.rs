//! The shop's order flow through services instrumented by the real OpenTelemetry agents, over a
//! real RabbitMQ, exporting OTLP/HTTP to the gateway:
//!
//! - shop-api (Python, Flask, under `opentelemetry-instrument`: flask, requests, pika, sqlite3):
//!   `POST /constructor/files`, `POST /orders` (saves the order, publishes it on `orders.created`),
//!   `POST /orders/{id}/courier` (calls MES over HTTP);
//! - crm-api (Java, the OpenTelemetry Java agent: amqp-client, JDBC on H2, the JDK HTTP server):
//!   consumes `orders.created`, saves the order, accepts it, publishes it on `orders.accepted`;
//!   `POST /orders/{id}/status` saves the status MES reports;
//! - mes-api (Node.js, @opentelemetry/auto-instrumentations-node: amqplib, pg, express, undici):
//!   consumes `orders.accepted` (in production, saved in PostgreSQL), reports `manufactured` to
//!   CRM over HTTP; `POST /orders/{id}/handover` hands the order to the courier.
//!
//! The services make no span: they set `order.id`, `order.status`, `enduser.id` and
//! `constructor.file_id` on the agent's current span, as a developer would. Each agent also
//! writes every span it emits to a log of its own (the Java agent's `logging-otlp` exporter,
//! Python's `console` exporter, a JSON-lines exporter in Node): the ground truth. For every span
//! in those logs the test checks what the gateway stored (order, stage, status, user), then each
//! order's timeline. docs/instrumentation.md tabulates what each agent emits.
//!
//! Needs what `scripts/instrumentation/install.sh` installs (scripts/test.sh runs it); a missing
//! piece fails the test with that hint.

mod common;
#[path = "instrumentation/harness.rs"]
mod harness;
#[path = "common/rabbitmq.rs"]
mod rabbitmq;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::ports::free_port;
use common::{eventually, get_json, send, start_gateway, when};
use harness::{cache_dir, repo, require, EmittedSpan, Postgres, Service, JAVA_AGENT_VERSION};
use rabbitmq::RabbitMq;
use serde_json::{json, Value};

/// What the gateway must have written on one span.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Tags {
    order_id: Option<String>,
    stage: Option<String>,
    status: Option<String>,
    enduser: Option<String>,
}

/// The stage (and status) each emitted span records, by service, kind and the name its agent
/// gave it; the same table as docs/instrumentation.md. A span that is not listed fails the test,
/// so that the table stays complete when an agent changes what it emits.
fn expected_step(span: &EmittedSpan) -> Result<(Option<&'static str>, Option<String>), String> {
    let status = span.attr("order.status").map(str::to_string);
    let name = span.name.as_str();
    let step = match (span.service.as_str(), span.kind.as_str()) {
        ("shop-api", "SERVER") => match name {
            "POST /orders" => (Some("created"), Some("new".to_string())),
            "POST /constructor/files" => (Some("file_link"), None),
            "POST /orders/<order_id>/courier" => (None, None),
            _ => return Err(unknown(span)),
        },
        ("shop-api", "CLIENT") => match name {
            "INSERT" => (Some("db_save"), None),
            "CREATE" => (None, None),
            "POST" => (None, None), // requests, to MES
            _ => return Err(unknown(span)),
        },
        ("shop-api", "PRODUCER") if name == "orders.created send" => (Some("bus_publish"), None),
        ("crm-api", "CONSUMER") if name == "orders.created process" => (Some("bus_consume"), status),
        ("crm-api", "PRODUCER") if name == "<default> publish" => (Some("bus_publish"), None),
        ("crm-api", "CLIENT") => match name {
            "INSERT crm.orders" | "UPDATE crm.orders" => (Some("db_save"), None),
            // JDBC DDL and the amqp-client's channel commands at start-up.
            "CREATE TABLE crm.orders" | "queue.declare" | "basic.consume" => (None, None),
            _ => return Err(unknown(span)),
        },
        // The JDK HTTP server's span (named after the context path `/orders/`): MES reports a status.
        ("crm-api", "SERVER") if name == "POST /orders/" => (Some("status_change"), status),
        ("mes-api", "CONSUMER") if name == "orders.accepted process" => (Some("bus_consume"), status),
        ("mes-api", "CLIENT") => match name {
            n if n.starts_with("pg.query:INSERT") || n.starts_with("pg.query:UPDATE") => (Some("db_save"), None),
            n if n.starts_with("pg.query:CREATE") => (None, None),
            "pg.connect" | "pg-pool.connect" | "dns.lookup" => (None, None),
            "POST" => (None, None), // undici (fetch), to CRM
            _ => return Err(unknown(span)),
        },
        ("mes-api", "SERVER") if name == "POST /orders/:id/handover" => (None, None),
        ("mes-api", "INTERNAL") => match name {
            // Express runs the route's handler inside this span: it is the active span there.
            "request handler - /orders/:id/handover" => (Some("status_change"), status),
            "tcp.connect" | "request handler" => (None, None),
            n if n.starts_with("middleware - ") => (None, None),
            _ => return Err(unknown(span)),
        },
        _ => return Err(unknown(span)),
    };
    Ok(step)
}

fn unknown(span: &EmittedSpan) -> String {
    format!(
        "{} emitted a span this test (and docs/instrumentation.md) does not know: {} {:?} (scope {:?}) {:?}",
        span.service, span.kind, span.name, span.scope, span.attributes
    )
}

/// What every emitted span must carry in the gateway: the order and user of its trace (a trace
/// whose spans name no order, such as start-up work, has none; the constructor file's trace
/// joins the order that names its file), and its own stage and status.
fn expected_tags(spans: &[EmittedSpan]) -> (HashMap<String, Tags>, Vec<String>) {
    let mut trace_order: HashMap<&str, String> = HashMap::new();
    let mut trace_user: HashMap<&str, String> = HashMap::new();
    let mut file_order: HashMap<&str, String> = HashMap::new();
    for s in spans {
        if let Some(order) = s.attr("order.id") {
            trace_order.insert(&s.trace_id, order.to_string());
            if let Some(file) = s.attr("constructor.file_id") {
                file_order.insert(file, order.to_string());
            }
        }
        if let Some(user) = s.attr("enduser.id") {
            trace_user.insert(&s.trace_id, user.to_string());
        }
    }
    for s in spans {
        if let (Some(file), None) = (s.attr("constructor.file_id"), s.attr("order.id")) {
            if let Some(order) = file_order.get(file) {
                trace_order.insert(&s.trace_id, order.clone());
            }
        }
    }
    let mut problems = Vec::new();
    let mut expected = HashMap::new();
    for s in spans {
        match expected_step(s) {
            Ok((stage, status)) => {
                // Spans of no order (start-up work) get nothing, whatever step they look like.
                let tags = match trace_order.get(s.trace_id.as_str()) {
                    Some(order) => Tags {
                        order_id: Some(order.clone()),
                        stage: stage.map(str::to_string),
                        status,
                        enduser: trace_user.get(s.trace_id.as_str()).cloned(),
                    },
                    None => Tags { order_id: None, stage: None, status: None, enduser: None },
                };
                expected.insert(s.span_id.clone(), tags);
            }
            Err(problem) => problems.push(problem),
        }
    }
    (expected, problems)
}

/// Whether `span` lacks `enduser.id` and an ancestor of it in its trace carries it.
fn below_its_user(span: &EmittedSpan, trace: &[&EmittedSpan]) -> bool {
    if span.attr("enduser.id").is_some() {
        return false;
    }
    let mut parent = span.parent_span_id.as_str();
    for _ in 0..trace.len() {
        let Some(p) = trace.iter().find(|p| p.span_id == parent) else { return false };
        if p.attr("enduser.id").is_some() {
            return true;
        }
        parent = p.parent_span_id.as_str();
    }
    false
}

async fn post_json(url: &str, body: Value) -> Value {
    let (status, _, reply) = send("POST", url, &[("content-type", "application/json")], body.to_string().into_bytes()).await;
    assert!((200..300).contains(&status), "POST {url} answered {status}: {}", String::from_utf8_lossy(&reply));
    serde_json::from_slice(&reply).unwrap()
}

/// Polls the order's timeline until its status is `status` and all three services show.
async fn wait_for_order(api: SocketAddr, order: &str, status: &str, limit: Duration) -> Value {
    let url = format!("http://{api}/api/v1/orders/{order}");
    let reached = |(code, timeline): &(u16, Value)| {
        *code == 200 && timeline["status"] == status && timeline["services"].as_array().is_some_and(|s| s.len() == 3)
    };
    eventually(&format!("order {order} at {status} in three services"), limit, || async { when(get_json(&url).await, reached) }).await.1
}

/// The stored spans of a trace, by span id, with the four attributes tracegate writes.
async fn stored_tags(api: SocketAddr, trace_id: &str) -> HashMap<String, (String, Tags)> {
    let (code, body) = get_json(&format!("http://{api}/api/v1/traces/{trace_id}")).await;
    if code != 200 {
        return HashMap::new();
    }
    let mut out = HashMap::new();
    for rs in body["resourceSpans"].as_array().into_iter().flatten() {
        for span in harness::otlp_resource_spans(rs) {
            let get = |k: &str| span.attributes.get(k).cloned();
            let tags =
                Tags { order_id: get("order.id"), stage: get("order.stage"), status: get("order.status"), enduser: get("enduser.id") };
            out.insert(span.span_id.clone(), (span.name.clone(), tags));
        }
    }
    out
}

fn compile_crm(out: &Path) {
    let lib = cache_dir().join("java-lib");
    require(&lib.join("amqp-client-5.37.1.jar"), "the CRM's Java libraries");
    let status = Command::new("javac")
        .args(["-d", out.to_str().unwrap(), "-cp", &format!("{}/*", lib.display())])
        .arg(repo().join("tests/instrumentation/java/Crm.java"))
        .status()
        .expect("javac runs (Debian's openjdk-17-jdk)");
    assert!(status.success(), "javac of tests/instrumentation/java/Crm.java failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_agents_tag_every_span_of_the_order_flow() {
    let started = Instant::now();
    let agent = cache_dir().join(format!("opentelemetry-javaagent-{JAVA_AGENT_VERSION}.jar"));
    require(&agent, "the OpenTelemetry Java agent");
    let node_dir = repo().join("tests/instrumentation/node");
    require(&node_dir.join("node_modules/@opentelemetry/auto-instrumentations-node"), "the MES's npm packages");
    let instrument = repo().join(".venv/bin/opentelemetry-instrument");
    require(&instrument, "opentelemetry-instrument (tests/requirements.txt)");

    // The broker, PostgreSQL and the CRM's classes, side by side.
    let work = tempfile::Builder::new().prefix("tracegate-instrumentation-").tempdir().unwrap();
    let classes = work.path().join("crm-classes");
    let (rabbit, postgres) = tokio::task::spawn_blocking({
        let classes = classes.clone();
        move || {
            let rabbit = std::thread::spawn(RabbitMq::start);
            let postgres = std::thread::spawn(Postgres::start);
            compile_crm(&classes);
            (rabbit.join().unwrap(), postgres.join().unwrap())
        }
    })
    .await
    .unwrap();

    let yaml = r#"
receivers:
  otlp: {grpc: {endpoint: "127.0.0.1:0"}, http: {endpoint: "127.0.0.1:0"}}
processors:
  order_enrich: {wait: 2s}
exporters:
  local: {type: embedded, path: "{data}", batch: {max_wait: 50ms}}
api: {endpoint: "127.0.0.1:0"}
service:
  pipelines:
    traces: {receivers: [otlp], processors: [order_enrich], exporters: [local]}
"#;
    let peers_ready = started.elapsed();
    let (gateway, _data) = start_gateway(yaml).await;
    let otlp = format!("http://{}", gateway.http_addr().unwrap());
    let api = gateway.api_addr().unwrap();

    let (shop_port, crm_port, mes_port) = (free_port(), free_port(), free_port());
    let common_env = |c: &mut Command, service: &str| {
        c.env("OTEL_SERVICE_NAME", service)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp)
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
            .env("OTEL_METRICS_EXPORTER", "none")
            .env("OTEL_LOGS_EXPORTER", "none")
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .env("AMQP_URL", rabbit.url());
    };

    let mut crm = {
        let mut c = Command::new("java");
        common_env(&mut c, "crm-api");
        c.env("OTEL_TRACES_EXPORTER", "otlp,logging-otlp")
            .env("CRM_PORT", crm_port.to_string())
            // The C1 compiler only: the agent's start-up (instrumenting classes) is the slow part.
            .arg("-XX:TieredStopAtLevel=1")
            .arg(format!("-javaagent:{}", agent.display()))
            .arg("-cp")
            .arg(format!("{}:{}/*", classes.display(), cache_dir().join("java-lib").display()))
            .arg("Crm");
        Service::spawn("crm-api", c, work.path())
    };
    let mes_spans = work.path().join("mes-spans.jsonl");
    let mut mes = {
        let mut c = Command::new("node");
        common_env(&mut c, "mes-api");
        c.current_dir(&node_dir)
            .env("SPAN_LOG", &mes_spans)
            .env("MES_PORT", mes_port.to_string())
            .env("PG_URL", postgres.url())
            .env("CRM_URL", format!("http://127.0.0.1:{crm_port}"))
            .args(["--require", "./otel.js", "mes.js"]);
        Service::spawn("mes-api", c, work.path())
    };
    let mut shop = {
        let mut c = Command::new(&instrument);
        common_env(&mut c, "shop-api");
        c.env("OTEL_TRACES_EXPORTER", "otlp,console")
            .env("SHOP_PORT", shop_port.to_string())
            .env("SHOP_DB", work.path().join("shop.db"))
            .env("MES_URL", format!("http://127.0.0.1:{mes_port}"))
            .arg(repo().join(".venv/bin/python"))
            .arg(repo().join("tests/instrumentation/python/shop.py"));
        Service::spawn("shop-api", c, work.path())
    };
    let (crm, mes, shop) = tokio::task::spawn_blocking(move || {
        shop.wait_listening(shop_port, Duration::from_secs(60));
        mes.wait_listening(mes_port, Duration::from_secs(60));
        crm.wait_listening(crm_port, Duration::from_secs(120));
        (crm, mes, shop)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n--- the broker's log ---\n{}", rabbit.logs()));
    let ready = started.elapsed();

    // Alice saves a constructor file, then orders with it; Bob orders without one.
    let shop_url = format!("http://127.0.0.1:{shop_port}");
    let file = post_json(&format!("{shop_url}/constructor/files"), json!({"user": "alice"})).await;
    let file_id = file["file_id"].as_str().unwrap().to_string();
    let alice = post_json(&format!("{shop_url}/orders"), json!({"user": "alice", "file_id": file_id})).await;
    let bob = post_json(&format!("{shop_url}/orders"), json!({"user": "bob"})).await;
    let orders = [(alice["order_id"].as_str().unwrap().to_string(), "alice"), (bob["order_id"].as_str().unwrap().to_string(), "bob")];
    for (order, _) in &orders {
        wait_for_order(api, order, "manufactured", Duration::from_secs(60)).await;
    }
    for (order, user) in &orders {
        let reply = post_json(&format!("{shop_url}/orders/{order}/courier"), json!({"user": user})).await;
        assert_eq!(reply["status"], "handed_to_courier");
    }
    for (order, _) in &orders {
        wait_for_order(api, order, "handed_to_courier", Duration::from_secs(30)).await;
    }

    // Stop the services: each agent flushes its batch to the gateway and its log on SIGTERM.
    let (mut crm, mut mes, mut shop) = (crm, mes, shop);
    let logs = tokio::task::spawn_blocking(move || {
        for service in [&mut shop, &mut mes, &mut crm] {
            assert!(service.stop(), "{} did not stop on SIGTERM:\n{}", service.name, service.output());
        }
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_else(|e| panic!("no span log {}: {e}", p.display()));
        (read(&shop.stdout), read(&crm.stderr), read(&mes_spans))
    })
    .await
    .unwrap();
    let mut emitted = harness::python_span_log(&logs.0);
    emitted.extend(harness::java_span_log(&logs.1));
    emitted.extend(harness::node_span_log(&logs.2));
    for service in ["shop-api", "crm-api", "mes-api"] {
        let n = emitted.iter().filter(|s| s.service == service).count();
        assert!(n > 0, "{service} logged no span");
    }

    // Every agent carries the context through RabbitMQ as the consumer's parent, not as a link:
    // each consumer span is the child of another service's producer span, in the same trace.
    let mut problems = Vec::new();
    for consumer in emitted.iter().filter(|s| s.kind == "CONSUMER") {
        let parent = emitted.iter().find(|p| p.span_id == consumer.parent_span_id);
        let parented = parent.is_some_and(|p| p.kind == "PRODUCER" && p.service != consumer.service && p.trace_id == consumer.trace_id);
        if !parented || !consumer.links.is_empty() {
            problems.push(format!(
                "{} {:?}: expected the child of a producer span of another service and no links; parent {:?}, links {:?}",
                consumer.service,
                consumer.name,
                parent.map(|p| (&p.service, &p.kind, &p.name)),
                consumer.links
            ));
        }
    }

    // Every emitted span, as the gateway stored it (spans of traces without an order are
    // written once their 2 s wait is over).
    let (expected, unknown_spans) = expected_tags(&emitted);
    assert!(unknown_spans.is_empty(), "spans no expectation covers:\n{}", unknown_spans.join("\n"));
    let mut traces: BTreeMap<&str, Vec<&EmittedSpan>> = BTreeMap::new();
    for s in &emitted {
        traces.entry(s.trace_id.as_str()).or_default().push(s);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    // A span that names its own order is tagged and sent on at once. Its trace's user comes from
    // the span that names it, which ends after its descendants: an agent can export a descendant
    // in an earlier batch, and then the gateway does not know the user yet (docs/orders.md). So
    // a descendant of the user's span may lack the user, if few do.
    let mut without_user = Vec::new();
    let expecting_user = expected.values().filter(|t| t.enduser.is_some()).count();
    for (trace_id, spans) in &traces {
        let stored = loop {
            let stored = stored_tags(api, trace_id).await;
            if spans.iter().all(|s| stored.contains_key(&s.span_id)) || Instant::now() > deadline {
                break stored;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        for s in spans {
            let want = &expected[&s.span_id];
            match stored.get(&s.span_id) {
                None => {
                    problems.push(format!("{} {} {:?} ({}/{}) never reached the gateway", s.service, s.kind, s.name, s.trace_id, s.span_id))
                }
                Some((_, got)) if want.enduser.is_some() && *got == Tags { enduser: None, ..want.clone() } && below_its_user(s, spans) => {
                    without_user.push(format!("{} {} {:?} ({}/{})", s.service, s.kind, s.name, s.trace_id, s.span_id))
                }
                Some((_, got)) if got != want => problems.push(format!(
                    "{} {} {:?} ({}/{}):\n    expected {want:?}\n    stored   {got:?}\n    emitted  {:?}",
                    s.service, s.kind, s.name, s.trace_id, s.span_id, s.attributes
                )),
                Some(_) => {}
            }
        }
    }

    if !without_user.is_empty() {
        eprintln!("instrumentation: sent on before their trace's user was known: {}", without_user.join(", "));
    }
    if without_user.len() * 4 > expecting_user {
        problems.push(format!(
            "{} of {expecting_user} spans that should carry their trace's user lack it: {}",
            without_user.len(),
            without_user.join(", ")
        ));
    }

    // Each order's timeline: every step its spans recorded, once (the pika instrumentation wraps
    // each publish in two nested spans of the same name: one step), the statuses in order.
    // (read now that every emitted span is stored)
    let mut timelines = BTreeMap::new();
    for (order, _) in &orders {
        timelines.insert(order.clone(), wait_for_order(api, order, "handed_to_courier", Duration::from_secs(5)).await);
    }
    for (order, timeline) in &timelines {
        let mut want: Vec<(String, String, Option<String>, String)> = emitted
            .iter()
            .filter(|s| expected[&s.span_id].order_id.as_deref() == Some(order.as_str()))
            .filter(|s| {
                // The inner span of a double-wrapped publish is not a step of its own.
                !emitted.iter().any(|p| p.span_id == s.parent_span_id && p.name == s.name && p.kind == s.kind && p.service == s.service)
            })
            .filter_map(|s| {
                let t = &expected[&s.span_id];
                Some((s.service.clone(), t.stage.clone()?, t.status.clone(), s.name.clone()))
            })
            .collect();
        want.sort();
        let events = timeline["events"].as_array().unwrap();
        let mut got: Vec<(String, String, Option<String>, String)> = events
            .iter()
            .map(|e| {
                (
                    e["service"].as_str().unwrap_or_default().to_string(),
                    e["stage"].as_str().unwrap_or_default().to_string(),
                    e["status"].as_str().map(str::to_string),
                    e["span_name"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect();
        got.sort();
        if got != want {
            problems.push(format!("order {order}'s timeline events:\n    expected {want:?}\n    got      {got:?}"));
        }
        let times: Vec<&str> = events.iter().map(|e| e["time"].as_str().unwrap_or_default()).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "order {order}'s events are not in time order: {times:?}");
        let transitions: Vec<(String, String)> = timeline["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t["from"].as_str().unwrap_or_default().to_string(), t["to"].as_str().unwrap_or_default().to_string()))
            .collect();
        let statuses = ["new", "accepted", "in_production", "manufactured", "handed_to_courier"];
        let want_transitions: Vec<(String, String)> = statuses.windows(2).map(|w| (w[0].to_string(), w[1].to_string())).collect();
        if transitions != want_transitions {
            problems.push(format!("order {order}'s transitions: expected {want_transitions:?}, got {transitions:?}"));
        }
        assert_eq!(timeline["services"], json!(["crm-api", "mes-api", "shop-api"]), "order {order}");
    }

    eprintln!(
        "instrumentation: {} spans from the agents ({} shop-api, {} crm-api, {} mes-api) in {} traces; broker, database and CRM build ready after {:.1?}, services after {:.1?}, done after {:.1?}",
        emitted.len(),
        emitted.iter().filter(|s| s.service == "shop-api").count(),
        emitted.iter().filter(|s| s.service == "crm-api").count(),
        emitted.iter().filter(|s| s.service == "mes-api").count(),
        traces.len(),
        peers_ready,
        ready,
        started.elapsed()
    );
    assert!(problems.is_empty(), "{} problem(s):\n{}", problems.len(), problems.join("\n"));
    gateway.shutdown().await;
    drop(postgres);
    drop(rabbit);
}
