//! The order page `/orders/{id}` over real HTTP: a Shop/CRM/MES order's lanes, stages, gaps,
//! bus hops, transitions against an `order_sla` monitor (which fires), constructor files and
//! live updates; hostile values escaped; 404 and 400 pages; and the server time of a 1 000-step
//! order.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tracegate::shared::now_unix_nanos;

use crate::support::*;

const MONITOR: &str = r#"
monitors:
  order_sla:
    lifecycle: [new, accepted, in_production, manufactured, handed_to_courier]
    terminal: [cancelled]
    grace: 1s
    rules:
      - {name: crm_accepts, from: new, to: accepted, within: 1s}
      - {name: production, from: accepted, to: manufactured, within: 1s, severity: critical}
      - {name: bus_wait, from_stage: bus_publish, to_stage: bus_consume, within: 2s}
"#;

/// The elements with `class` (an exact class-attribute value) in `body`.
fn count(body: &str, needle: &str) -> usize {
    body.matches(needle).count()
}

/// The element `<tag ... id="id" ...>` of `body`, up to its first closing tag (`tag` must not
/// nest inside it).
fn element<'a>(body: &'a str, tag: &str, id: &str) -> &'a str {
    let at = body.find(&format!(" id=\"{id}\"")).unwrap_or_else(|| panic!("no id={id} in {body}"));
    let start = body[..at].rfind(&format!("<{tag}")).unwrap_or_else(|| panic!("id={id} is not on a <{tag}>"));
    assert!(!body[start..at].contains('>'), "id={id} is not on a <{tag}>");
    let end = body[at..].find(&format!("</{tag}>")).map(|e| at + e).unwrap_or(body.len());
    &body[start..end]
}

/// The `<tr ...>` opening tag of the row with `data-from` and `data-to`.
fn row<'a>(table: &'a str, from: &str, to: &str) -> &'a str {
    let marker = format!("data-from=\"{from}\" data-to=\"{to}\"");
    let at = table.find(&marker).unwrap_or_else(|| panic!("no row {from} -> {to} in {table}"));
    let start = table[..at].rfind("<tr").unwrap();
    let end = table[at..].find("</tr>").unwrap() + at;
    &table[start..end]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shop_crm_mes_order_shows_lanes_hops_transitions_and_its_alerts() {
    let console = start(MONITOR).await;
    let support = support_token();
    let order = "A-1001";
    let t0 = now_unix_nanos() - 20 * SEC;
    console
        .order_events(
            "shop-web",
            &json!([
                event(order, "shop-web", "created", Some("new"), t0),
                event(order, "shop-web", "db_save", None, t0 + SEC / 5),
                event(order, "shop-web", "bus_publish", None, t0 + SEC / 2),
            ]),
        )
        .await;
    // CRM accepts 3 s after `new` (threshold 1 s), 2.5 s after the publish (threshold 2 s).
    console
        .order_events(
            "crm-api",
            &json!([
                event(order, "crm-api", "bus_consume", Some("accepted"), t0 + 3 * SEC),
                event(order, "crm-api", "file_link", None, t0 + 3 * SEC + SEC / 5),
                event(order, "crm-api", "bus_publish", None, t0 + 3 * SEC + SEC / 2),
            ]),
        )
        .await;
    // MES starts production and then nothing more: `production` (accepted -> manufactured
    // within 1 s) is stuck and fires by the clock.
    console.order_events("mes", &json!([event(order, "mes", "bus_consume", Some("in_production"), t0 + 4 * SEC)])).await;
    console.wait_for_order(order, 7).await;

    // Wait for the monitor's firing alert to be readable.
    let page = crate::common::eventually("the firing alert on the order page", Duration::from_secs(10), || async {
        let page = console.get(&format!("/orders/{order}"), Some(&support)).await;
        if page.body.contains(r#"data-state="firing" data-rule="production""#) {
            Ok(page)
        } else {
            Err(format!("{}: {}", page.status, page.body))
        }
    })
    .await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.header("content-type").starts_with("text/html"));
    assert!(page.header("server-timing").starts_with("render;dur="));
    let body = &page.body;
    assert!(body.contains("<h1>Order <span class=\"mono\">A-1001</span></h1>"), "{body}");

    // Facts.
    let facts = element(body, "dl", "facts");
    for (term, value) in [("Status", "in_production"), ("Current service", "mes"), ("Current stage", "bus_consume")] {
        assert!(facts.contains(&format!("<dt>{term}</dt><dd>{value}")), "{term} should be {value}: {facts}");
    }
    for term in ["Age", "Waiting since", "First seen", "Last seen"] {
        assert!(facts.contains(&format!("<dt>{term}</dt>")), "{term} missing: {facts}");
    }

    // Alerts: production fires; crm_accepts fired late by event time and resolved.
    let alerts = element(body, "section", "alerts");
    assert!(alerts.contains(r#"<li class="alert" data-state="firing" data-rule="production">"#), "{alerts}");
    assert!(alerts.contains(r#"data-rule="crm_accepts""#), "{alerts}");
    assert!(alerts.contains("critical"), "{alerts}");

    // The swimlane: three lanes in order of first appearance, seven steps linking to traces.
    let svg = element(body, "svg", "swimlane");
    assert!(svg.contains("aria-label=\"Swimlane of order A-1001"), "{svg}");
    let lanes: Vec<&str> =
        svg.match_indices("<g class=\"lane\" data-service=\"").map(|(i, m)| svg[i + m.len()..].split('"').next().unwrap()).collect();
    assert_eq!(lanes, vec!["shop-web", "crm-api", "mes"]);
    for service in ["shop-web", "crm-api", "mes"] {
        assert!(svg.contains(&format!(">{service}</text>")), "lane {service} has no visible name");
    }
    assert_eq!(count(svg, "<g class=\"step "), 7);
    for (stage, service, n) in [
        ("created", "shop-web", 1),
        ("db_save", "shop-web", 1),
        ("bus_publish", "shop-web", 1),
        ("bus_consume", "crm-api", 1),
        ("file_link", "crm-api", 1),
        ("bus_publish", "crm-api", 1),
        ("bus_consume", "mes", 1),
    ] {
        assert_eq!(count(svg, &format!("data-stage=\"{stage}\" data-service=\"{service}\"")), n, "{stage} on {service}");
    }
    assert_eq!(count(svg, "<a href=\"/traces/"), 7);
    assert!(svg.contains("?span="), "{svg}");
    // Stage labels as text, not colour alone.
    for label in ["created", "db save", "publish", "consume", "file"] {
        assert!(svg.contains(&format!(">{label}</text>")), "label {label} missing");
    }
    // Gaps between consecutive steps: 200 ms, 300 ms, 2.5 s, 200 ms, 300 ms, 500 ms.
    let gaps: Vec<&str> =
        svg.match_indices("<text class=\"gap\"").map(|(i, _)| svg[i..].split('>').nth(1).unwrap().trim_end_matches("</text")).collect();
    assert_eq!(gaps, vec!["200 ms", "300 ms", "2.5 s", "200 ms", "300 ms", "500 ms"]);
    // Two hops: shop -> crm (2.5 s, over bus_wait's 2 s) and crm -> mes (500 ms).
    assert_eq!(count(svg, "<line class=\"hop breach\""), 1, "{svg}");
    assert_eq!(count(svg, "<line class=\"hop\""), 1, "{svg}");
    assert!(svg.contains("bus hop shop-web → crm-api: 2.5 s (over threshold)"), "{svg}");
    assert!(svg.contains("bus hop crm-api → mes: 500 ms"), "{svg}");
    let hops = element(body, "table", "hops");
    assert_eq!(count(hops, "<tr class=\"breach\">"), 1, "{hops}");

    // Steps as text, with links to the console's trace page (no Jaeger UI configured).
    let steps = element(body, "table", "steps");
    assert_eq!(count(steps, "<tr data-stage="), 7);
    assert_eq!(count(steps, ">trace</a>"), 7);
    assert!(!steps.contains("Jaeger"), "no jaeger_ui_url is configured: {steps}");
    assert!(steps.contains("<th scope=\"col\">Time</th>"));

    // Transitions against the rules: new -> accepted took 3 s over 1 s; accepted ->
    // in_production has no rule; production is still running and over.
    let transitions = element(body, "table", "transitions");
    let r = row(transitions, "new", "accepted");
    assert!(
        r.contains("class=\"transition breach\"") && r.contains("over threshold") && r.contains("3.0 s") && r.contains("crm_accepts"),
        "{r}"
    );
    let r = row(transitions, "accepted", "in_production");
    assert!(!r.contains("breach") && r.contains("no rule"), "{r}");
    let r = row(transitions, "accepted", "manufactured");
    assert!(r.contains("class=\"rule breach\"") && r.contains("over threshold (still waiting)") && r.contains("production"), "{r}");
    let r = row(transitions, "stage:bus_publish", "stage:bus_consume");
    assert!(r.contains("breach") && r.contains("2.5 s") && r.contains("bus_wait"), "{r}");

    // Constructor files: the file_link step.
    let files = element(body, "section", "files");
    assert!(files.contains("order file_link") && files.contains("crm-api"), "{files}");

    // In flight: the live part carries its own URL, which answers with the same section.
    let live_tag = &body[body.find("<section id=\"live\"").unwrap()..];
    let live_tag = &live_tag[..live_tag.find('>').unwrap()];
    assert!(live_tag.contains("data-live=\"/orders/A-1001\""), "{live_tag}");
    assert!(body.contains("id=\"live-status\""));
    let again = console.get("/orders/A-1001", Some(&support)).await;
    assert!(again.body.contains("<section id=\"live\""));

    // Reaching a terminal status stops the live updates (the section stays, without data-live).
    console.order_events("mes", &json!([event(order, "mes", "status_change", Some("cancelled"), t0 + 10 * SEC)])).await;
    console.wait_for_order(order, 8).await;
    let page = console.get(&format!("/orders/{order}"), Some(&support)).await;
    let live_tag = &page.body[page.body.find("<section id=\"live\"").unwrap()..];
    let live_tag = &live_tag[..live_tag.find('>').unwrap()];
    assert!(!live_tag.contains("data-live"), "{live_tag}");
    assert!(page.body.contains("no longer updates"), "{}", page.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steps_link_to_jaeger_ui_when_jaeger_ui_url_is_set() {
    let plain = r#"api: {endpoint: "127.0.0.1:0"}"#;
    let config = crate::fixture::secured_config();
    assert!(config.contains(plain), "the secured config's api section changed: {config}");
    let yaml = config.replace(plain, r#"api: {endpoint: "127.0.0.1:0", jaeger_ui_url: "http://jaeger.shop.test:16686/"}"#);
    let (gateway, dir) = crate::common::start_gateway(&yaml).await;
    let api = gateway.addresses.api.expect("the API listens");
    let http = *gateway.addresses.http.values().next().expect("the OTLP/HTTP receiver listens");
    let console = Console { gateway, api, http, dir };
    let order = "J-1";
    let t0 = now_unix_nanos() - 5 * SEC;
    console.order_events("shop-web", &json!([event(order, "shop-web", "created", Some("new"), t0)])).await;
    console.wait_for_order(order, 1).await;
    let page = console.get("/orders/J-1", Some(&support_token())).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let steps = element(&page.body, "table", "steps");
    let span_link = steps.split("<a href=\"/traces/").nth(1).expect("a trace link").split('"').next().unwrap();
    let (trace_id, span_id) = span_link.split_once("?span=").unwrap();
    assert_eq!((trace_id.len(), span_id.len()), (32, 16), "{span_link}");
    let jaeger = format!("<a href=\"http://jaeger.shop.test:16686/trace/{trace_id}?uiFind={span_id}\">Jaeger</a>");
    assert!(steps.contains(&jaeger), "{jaeger} missing in {steps}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_values_come_out_escaped() {
    let console = start("").await;
    let script = "<script>alert(1)</script>";
    let img = "\"><img src=x onerror=alert(2)>";
    let order = "X-1";
    let t0 = now_unix_nanos() - 5 * SEC;
    // A service named with a script, a stage (hence the span name) and a status with markup.
    console.order_events(script, &json!([event(order, script, img, Some(script), t0)])).await;
    console.order_events("shop-web", &json!([event(order, "shop-web", "created", Some(img), t0 + SEC)])).await;
    console.wait_for_order(order, 2).await;
    let page = console.get("/orders/X-1", Some(&support_token())).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let body = &page.body;
    assert!(!body.contains("<script>alert"), "a script came through: {body}");
    assert!(!body.contains("<img src=x"), "an image came through: {body}");
    assert!(!body.contains("onerror=alert(2)>"), "{body}");
    assert!(body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{body}");
    assert!(body.contains("&quot;&gt;&lt;img src=x onerror=alert(2)&gt;"), "{body}");
    // Also as attribute values (data-service, data-stage).
    assert!(body.contains("data-service=\"&lt;script&gt;alert(1)&lt;/script&gt;\""), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_bad_order_ids_get_pages_of_their_own() {
    let console = start("").await;
    let support = support_token();
    let page = console.get("/orders/NO-SUCH-ORDER", Some(&support)).await;
    assert_eq!(page.status, 404, "{}", page.body);
    assert!(page.header("content-type").starts_with("text/html"), "{}", page.header("content-type"));
    assert!(page.body.contains("Not found") && page.body.contains("order NO-SUCH-ORDER not found"), "{}", page.body);
    // Control characters, or an id far too long: 400 with the reason.
    let page = console.get("/orders/A%0A1", Some(&support)).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.body.contains("control characters"), "{}", page.body);
    let page = console.get(&format!("/orders/{}", "x".repeat(300)), Some(&support)).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.body.contains("longer than 256 characters"), "{}", page.body);
    // A caller without a reading role sees no order at all.
    assert_eq!(console.get("/orders/NO-SUCH-ORDER", Some(&no_role_token())).await.status, 403);
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[values.len() / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_step_order_renders_fast() {
    let console = start("").await;
    let order = "BIG-1000";
    let services = ["shop-web", "crm-api", "mes"];
    let stages = ["status_change", "bus_publish", "bus_consume", "db_save", "file_link"];
    let statuses = ["new", "accepted", "in_production", "manufactured"];
    let t0 = now_unix_nanos() - 3 * 3600 * SEC;
    // 1 000 steps, ten seconds apart, posted by each service in batches of 50 (as MES does).
    let mut batches: Vec<(&str, Vec<Value>)> = Vec::new();
    for i in 0..1000u64 {
        let service = services[(i / 7 % 3) as usize];
        let stage = if i == 0 { "created" } else { stages[(i % 5) as usize] };
        let status = (i % 50 == 0).then(|| statuses[(i / 50 % 4) as usize]);
        let e = event(order, service, stage, status, t0 + i * 10 * SEC);
        match batches.iter_mut().rev().find(|(s, b)| *s == service && b.len() < 50) {
            Some((_, b)) => b.push(e),
            None => batches.push((service, vec![e])),
        }
    }
    for (service, batch) in &batches {
        console.order_events(service, &json!(batch)).await;
    }
    // Longer than `wait_for_order` allows: a loaded CI machine may take a while to store them.
    console.wait_for_order_within(order, 1000, Duration::from_secs(60)).await;

    let support = support_token();
    let mut render_ms = Vec::new();
    let mut total_ms = Vec::new();
    let mut size = 0;
    for _ in 0..9 {
        let started = Instant::now();
        let page = console.get(&format!("/orders/{order}"), Some(&support)).await;
        total_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(page.status, 200);
        let timing = page.header("server-timing");
        let dur: f64 =
            timing.strip_prefix("render;dur=").and_then(|d| d.parse().ok()).unwrap_or_else(|| panic!("Server-Timing {timing:?}"));
        render_ms.push(dur);
        size = page.body.len();
        assert_eq!(count(&page.body, "<g class=\"step "), 1000);
        assert_eq!(count(&page.body, "<text class=\"gap\""), 999);
    }
    let (render, total) = (median(&mut render_ms), median(&mut total_ms));
    println!("order page, 1000 steps: median server render {render:.2} ms, median request {total:.2} ms, page {size} bytes (9 requests)");
    assert!(render < 2000.0 && total < 2000.0, "render {render} ms, total {total} ms");
}
