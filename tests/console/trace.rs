//! The trace page (`GET /traces/{id}`, `POST /traces/{id}/unmask`): spans sent over OTLP/HTTP
//! (protobuf, each service with its own token) to a real gateway, the page read over HTTP.

use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, status, ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use serde_json::Value;

use crate::common::send;
use crate::support::*;

const EMAIL: &str = "carla.customer@example.com";
const T0: u64 = 1_795_168_800_000_000_000;
const MS: u64 = 1_000_000;
/// The page's rows per page (`console::trace::PAGE_SIZE`).
const PAGE_SIZE: usize = 500;

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }), ..Default::default() }
}

fn span_id(n: u64) -> Vec<u8> {
    (n + 1).to_be_bytes().to_vec()
}

/// A span `n` of `trace` under `parent` (none: a root), starting `start_ms` after T0.
fn new_span(trace: [u8; 16], n: u64, parent: Option<u64>, name: &str, start_ms: u64, duration_ms: u64, attributes: Vec<KeyValue>) -> Span {
    Span {
        trace_id: trace.to_vec(),
        span_id: span_id(n),
        parent_span_id: parent.map(span_id).unwrap_or_default(),
        name: name.into(),
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: T0 + start_ms * MS,
        end_time_unix_nano: T0 + (start_ms + duration_ms) * MS,
        attributes,
        ..Default::default()
    }
}

/// Sends `spans` as `service` (its own token), over OTLP/HTTP protobuf.
async fn send_spans(console: &Console, service: &str, spans: Vec<Span>) {
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: vec![kv("service.name", service), kv("host.name", "node-7")], ..Default::default() }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    };
    let bearer = format!("Bearer {}", service_token(service));
    let (status, _, body) = send(
        "POST",
        &format!("http://{}/v1/traces", console.http),
        &[("content-type", "application/x-protobuf"), ("authorization", &bearer)],
        request.encode_to_vec(),
    )
    .await;
    assert_eq!(status, 200, "spans refused: {}", String::from_utf8_lossy(&body));
}

/// Waits until the read API holds `count` spans of `trace`; returns its (masked, for support)
/// OTLP JSON.
async fn wait_for_trace(console: &Console, trace: [u8; 16], count: usize) -> Value {
    let token = support_token();
    let path = format!("/api/v1/traces/{}", hex::encode(trace));
    crate::common::eventually(
        &format!("{count} spans of trace {} in the read API", hex::encode(trace)),
        Duration::from_secs(30),
        || async {
            let page = console.get(&path, Some(&token)).await;
            if page.status != 200 {
                return Err(format!("{}", page.status));
            }
            let body: Value = serde_json::from_str(&page.body).unwrap();
            let seen: usize = body["resourceSpans"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|rs| rs["scopeSpans"].as_array().unwrap().iter())
                .map(|ss| ss["spans"].as_array().map_or(0, Vec::len))
                .sum();
            if seen >= count {
                Ok(body)
            } else {
                Err(format!("{seen} spans"))
            }
        },
    )
    .await
}

/// A span attribute's value anywhere in an OTLP JSON trace.
fn json_attribute(trace: &Value, key: &str) -> Option<String> {
    trace["resourceSpans"]
        .as_array()?
        .iter()
        .flat_map(|rs| rs["scopeSpans"].as_array().into_iter().flatten())
        .flat_map(|ss| ss["spans"].as_array().into_iter().flatten())
        .flat_map(|s| s["attributes"].as_array().into_iter().flatten())
        .find(|a| a["key"] == key)
        .and_then(|a| a["value"]["stringValue"].as_str())
        .map(str::to_string)
}

/// The waterfall's rows in page order: (span id, depth).
fn rows(html: &str) -> Vec<(String, usize)> {
    html.split("<tr class=\"span")
        .skip(1)
        .map(|row| {
            let id = row.split("data-span-id=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
            let depth = row.split("data-depth=\"").nth(1).unwrap().split('"').next().unwrap().parse().unwrap();
            (id, depth)
        })
        .collect()
}

/// The part of the page from the row of `span` to the next row.
fn row_of<'a>(html: &'a str, span: &str) -> &'a str {
    let start = html.find(&format!("data-span-id=\"{span}\"")).unwrap_or_else(|| panic!("no row for {span}"));
    let rest = &html[start..];
    let end = rest[1..].find("<tr class=\"span").map_or(rest.len(), |e| e + 1);
    &rest[..end]
}

fn audit_records(console: &Console, action: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(console.dir.path().join("audit.jsonl")).unwrap();
    text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).filter(|r| r["action"] == action).collect()
}

const TRACE: [u8; 16] = [0x71; 16];
const LINKED: [u8; 16] = [0x72; 16];

/// shop-api's root (0) with two children on crm (1 at +10 ms, 2 at +5 ms), a grandchild under
/// 1 (3), and an orphan (4) whose parent (99) was never sent.
async fn send_order_trace(console: &Console) {
    let mut root = new_span(TRACE, 0, None, "POST /orders", 0, 120, vec![kv("order.id", "A-3001"), kv("user.email", EMAIL)]);
    root.links.push(span::Link { trace_id: LINKED.to_vec(), span_id: span_id(0), ..Default::default() });
    root.events.push(span::Event {
        time_unix_nano: T0 + 3 * MS,
        name: "order.created".into(),
        attributes: vec![kv("order.stage", "created")],
        dropped_attributes_count: 0,
    });
    let mut failed = new_span(TRACE, 1, Some(0), "crm.sync", 10, 50, vec![kv("order.status", "blocked")]);
    failed.status = Some(Status { code: status::StatusCode::Error as i32, message: "CRM timed out".into() });
    send_spans(console, "shop-api", vec![root]).await;
    send_spans(
        console,
        "crm",
        vec![
            failed,
            new_span(TRACE, 2, Some(0), "crm.lookup", 5, 3, vec![]),
            new_span(TRACE, 3, Some(1), "db.save", 20, 10, vec![kv("enduser.id", "u-42-personal")]),
            new_span(TRACE, 4, Some(99), "late.orphan", 1, 2, vec![]),
        ],
    )
    .await;
    wait_for_trace(console, TRACE, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waterfall_puts_parents_before_children_and_masks_personal_data() {
    let console = start("").await;
    send_order_trace(&console).await;
    let support = support_token();
    let path = format!("/traces/{}", hex::encode(TRACE));
    let page = console.get(&path, Some(&support)).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.header("content-security-policy").contains("default-src 'none'"));
    let html = &page.body;
    assert!(!html.contains("style=") && !html.contains("<script>"), "inline style or script in the page");

    // Depth first, children by start time (2 at +5 ms before 1 at +10 ms), the orphan at the top
    // level after the root (it starts later).
    let hex_of = |n: u64| hex::encode(span_id(n));
    let expected = vec![(hex_of(0), 0), (hex_of(2), 1), (hex_of(1), 1), (hex_of(3), 2), (hex_of(4), 0)];
    assert_eq!(rows(html), expected);
    assert!(html.contains("<table id=\"waterfall\""), "{html}");
    assert!(html.contains("spans 1–5 of 5"), "the page says which spans it shows");
    assert!(!html.contains("rel=\"next\""), "one page: no pager links");

    // Service, kind, status in text, bar to scale (the trace lasts 120 ms: span 1 starts at
    // 10/120 of the width and is 50/120 wide), attribute panel.
    let crm = row_of(html, &hex_of(1));
    assert!(crm.contains("<td class=\"service\">crm</td>") && crm.contains("crm.sync"), "{crm}");
    assert!(crm.contains("server") && crm.contains(">error<") && crm.contains("CRM timed out"), "{crm}");
    assert!(crm.contains("x=\"83.33\"") && crm.contains("width=\"416.67\""), "{crm}");
    assert!(crm.contains("role=\"img\"") && crm.contains("aria-label=\"crm crm.sync: starts at +10 ms, lasts 50 ms, error\""), "{crm}");
    assert!(crm.contains("<details class=\"attrs\">") && crm.contains("data-key=\"order.status\""), "{crm}");
    assert!(row_of(html, &hex_of(4)).contains("(not in this trace)"), "the orphan says its parent is missing");
    let root = row_of(html, &hex_of(0));
    assert!(root.contains("<tr class=\"highlight\" data-key=\"order.id\"") && root.contains("href=\"/orders/A-3001\""), "{root}");
    assert!(root.contains("Resource attributes") && root.contains("node-7"), "{root}");
    assert!(root.contains("order.created") && root.contains("+3 ms"), "events with their offset: {root}");
    let linked = hex::encode(LINKED);
    assert!(html.contains(&format!("href=\"/traces/{linked}?span={}\"", hex_of(0))), "the link goes to the linked trace");
    assert!(html.contains(&format!("href=\"/traces/{linked}\"")), "linked traces listed");

    // Personal data: support sees the same pseudonym as the JSON API, never the clear value.
    let api: Value =
        serde_json::from_str(&console.get(&format!("/api/v1/traces/{}", hex::encode(TRACE)), Some(&support)).await.body).unwrap();
    let pseudonym = json_attribute(&api, "user.email").unwrap();
    assert!(pseudonym.starts_with("pseud:"), "{pseudonym}");
    assert!(html.contains(&pseudonym), "the pseudonym is shown");
    assert!(!html.contains(EMAIL) && !html.contains("u-42-personal"), "personal data in clear for support");
    assert!(!html.contains("id=\"unmask\""), "support gets no unmask form");

    // ?span= picks a span out: its row marked, its panel open.
    let picked = console.get(&format!("{path}?span={}", hex_of(3)), Some(&support)).await;
    assert_eq!(picked.status, 200);
    let row = row_of(&picked.body, &hex_of(3));
    assert!(
        row.contains("aria-current=\"true\"") && row.contains("<details class=\"attrs\" open>") && row.contains("selected span"),
        "{row}"
    );
    assert_eq!(picked.body.matches(" open>").count(), 1, "only the picked span's panel is open");

    // Bad input and unknown traces get pages that say so.
    let missing = console.get(&format!("/traces/{}", "ab".repeat(16)), Some(&support)).await;
    assert_eq!(missing.status, 404);
    assert!(missing.header("content-type").starts_with("text/html") && missing.body.contains("not found"), "{}", missing.body);
    let malformed = console.get("/traces/not-a-trace-id", Some(&support)).await;
    assert_eq!(malformed.status, 400);
    assert!(malformed.body.contains("not a hex trace id"), "{}", malformed.body);
    assert_eq!(console.get(&format!("{path}?span=xyz"), Some(&support)).await.status, 400);
    assert_eq!(console.get(&format!("{path}?page=0"), Some(&support)).await.status, 400);
    assert_eq!(console.get(&format!("{path}?page=2"), Some(&support)).await.status, 404);
    let unknown_span = console.get(&format!("{path}?span={}", "0".repeat(16)), Some(&support)).await;
    assert!(unknown_span.status == 200 && unknown_span.body.contains("is not in this trace"));
    // Without a reading role: the door's 403 page.
    assert_eq!(console.get(&path, Some(&no_role_token())).await.status, 403);
    console.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_unmasks_with_a_reason_that_is_audited_first() {
    let console = start("").await;
    send_order_trace(&console).await;
    let path = format!("/traces/{}", hex::encode(TRACE));
    let unmask = format!("{path}/unmask");
    let (support, admin) = (support_token(), admin_token());

    // Admins see pseudonyms too, and the form that asks for a reason.
    let page = console.get(&path, Some(&admin)).await;
    assert_eq!(page.status, 200);
    assert!(!page.body.contains(EMAIL));
    let form = &page.body[page.body.find("<form id=\"unmask\"").expect("an unmask form for admins")..];
    let form = &form[..form.find("</form>").unwrap()];
    assert!(form.contains(&format!("method=\"post\" action=\"{unmask}\"")), "{form}");
    assert!(form.contains("<label for=\"unmask-reason\"") && form.contains("name=\"reason\" required"), "{form}");
    assert!(form.contains("type=\"hidden\" name=\"csrf\""), "{form}");

    // Support may not unmask: a 403 page, audited as forbidden, nothing in clear.
    let refused = console.post_form(&unmask, Some(&support), &[("reason", "curious"), ("csrf", "")]).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.body.contains("Access denied") && refused.body.contains("admin role") && !refused.body.contains(EMAIL));
    let records = audit_records(&console, "unmask");
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!((records[0]["outcome"].as_str(), records[0]["actor"]["sub"].as_str()), (Some("forbidden"), Some("sam")));

    // No reason, no unmask.
    for reason in ["", "   "] {
        let page = console.post_form(&unmask, Some(&admin), &[("reason", reason), ("csrf", "")]).await;
        assert_eq!(page.status, 400, "{}", page.body);
        assert!(page.body.contains("needs a reason") && !page.body.contains(EMAIL), "{}", page.body);
    }
    let too_long = "x".repeat(1001);
    assert_eq!(console.post_form(&unmask, Some(&admin), &[("reason", too_long.as_str())]).await.status, 400);
    let huge = "y".repeat(20_000);
    // A form far larger than the page's own: refused unread, like the reload form.
    assert_eq!(console.post_form(&unmask, Some(&admin), &[("reason", "ok"), ("pad", huge.as_str())]).await.status, 413);
    assert_eq!(audit_records(&console, "unmask").len(), 1, "refused unmasks write no allowed record");

    // With a reason: the clear values, the notice, and the audit record with the reason.
    let hex3 = hex::encode(span_id(3));
    let clear =
        console.post_form(&unmask, Some(&admin), &[("reason", "ticket SUP-88"), ("csrf", ""), ("page", "1"), ("span", &hex3)]).await;
    assert_eq!(clear.status, 200, "{}", clear.body);
    assert!(clear.body.contains(EMAIL) && clear.body.contains("u-42-personal"), "unmasked values shown");
    assert!(clear.body.contains("Personal data shown in clear; this access was audited with your reason"));
    assert!(!clear.body.contains("pseud:"), "no pseudonyms once unmasked");
    assert!(row_of(&clear.body, &hex3).contains("aria-current=\"true\""), "the picked span stays picked");
    let records = audit_records(&console, "unmask");
    assert_eq!(records.len(), 2, "{records:#?}");
    let allowed = &records[1];
    assert_eq!(allowed["outcome"], "allowed");
    assert_eq!(allowed["reason"], "ticket SUP-88");
    assert_eq!(allowed["actor"]["sub"], "ada");
    assert_eq!(allowed["resource"], path.as_str());
    let audit = std::fs::read_to_string(console.dir.path().join("audit.jsonl")).unwrap();
    assert!(!audit.contains(EMAIL), "personal data in the audit log");

    // Unmasking a malformed or unknown trace: 400 and 404 pages.
    assert_eq!(console.post_form("/traces/zz/unmask", Some(&admin), &[("reason", "r")]).await.status, 400);
    assert_eq!(console.post_form(&format!("/traces/{}/unmask", "cd".repeat(16)), Some(&admin), &[("reason", "r")]).await.status, 404);
    console.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn markup_in_span_names_and_values_stays_text() {
    let console = start("").await;
    let trace = [0x73; 16];
    let attack = "\"><img src=x onerror=alert(1)>";
    send_spans(
        &console,
        "shop-api",
        vec![
            new_span(trace, 0, None, "<script>alert('name')</script>", 0, 10, vec![kv("note", attack), kv(attack, "key")]),
            new_span(trace, 1, Some(0), attack, 2, 5, vec![kv("order.id", attack), kv("order.stage", "<script>x</script>")]),
        ],
    )
    .await;
    wait_for_trace(&console, trace, 2).await;
    for token in [support_token(), admin_token()] {
        let page = console.get(&format!("/traces/{}", hex::encode(trace)), Some(&token)).await;
        assert_eq!(page.status, 200, "{}", page.body);
        let html = &page.body;
        assert!(!html.contains("<script>alert") && !html.contains("<script>x"), "a script tag came through");
        assert!(!html.contains("<img") && !html.contains("onerror=alert(1)>"), "an attribute broke out: {html}");
        assert!(html.contains("data-key=\"&quot;&gt;&lt;img src=x onerror=alert(1)&gt;\""), "escaped in attributes too");
        assert!(html.contains("&lt;script&gt;alert('name')&lt;/script&gt;"), "the name is shown as text");
        assert!(html.contains("&quot;&gt;&lt;img src=x onerror=alert(1)&gt;"), "the value is shown as text");
        assert_eq!(rows(html).len(), 2);
    }
    console.gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_spans_open_page_by_page() {
    let console = start("").await;
    let trace = [0x74; 16];
    const TOTAL: u64 = 10_000;
    // A root, 99 children, and 100 grandchildren under each child: 10 000 spans, 3 levels.
    let spans: Vec<Span> = (0..TOTAL)
        .map(|n| {
            let (parent, start) = match n {
                0 => (None, 0),
                1..=99 => (Some(0), n * 10),
                _ => (Some(1 + (n - 100) / 100), ((n - 100) / 100 + 1) * 10 + (n % 100)),
            };
            new_span(trace, n, parent, &format!("step {n}"), start, 5, vec![kv("order.id", "A-4001"), kv("seq", &n.to_string())])
        })
        .collect();
    let sending = Instant::now();
    for chunk in spans.chunks(2000) {
        send_spans(&console, "mes", chunk.to_vec()).await;
    }
    wait_for_trace(&console, trace, TOTAL as usize).await;
    eprintln!("sent and stored {TOTAL} spans in {:?}", sending.elapsed());

    let support = support_token();
    let path = format!("/traces/{}", hex::encode(trace));
    let pages = (TOTAL as usize).div_ceil(PAGE_SIZE);
    let started = Instant::now();
    let first = console.get(&path, Some(&support)).await;
    let wall = started.elapsed();
    assert_eq!(first.status, 200);
    let timing = first.header("server-timing").to_string();
    let render_ms: f64 = timing.trim_start_matches("render;dur=").parse().unwrap_or_else(|_| panic!("Server-Timing {timing:?}"));
    println!(
        "trace page, {TOTAL} spans, first page of {PAGE_SIZE}: server render {render_ms:.1} ms (Server-Timing {timing}), \
         wall {:.1} ms, HTML {} bytes ({:.0} KiB)",
        wall.as_secs_f64() * 1000.0,
        first.body.len(),
        first.body.len() as f64 / 1024.0
    );
    assert!(render_ms < 10_000.0, "render took {render_ms} ms");
    let started = Instant::now();
    let json = console.get(&format!("/api/v1/traces/{}", hex::encode(trace)), Some(&support)).await;
    println!(
        "for comparison, GET /api/v1/traces/{{id}} (all {TOTAL} spans as OTLP JSON): wall {:.1} ms, {} KiB",
        started.elapsed().as_secs_f64() * 1000.0,
        json.body.len() / 1024
    );
    let first_rows = rows(&first.body);
    assert_eq!(first_rows.len(), PAGE_SIZE, "the first page holds one page of rows");
    assert_eq!(first_rows[0], (hex::encode(span_id(0)), 0), "the root comes first");
    assert_eq!(first_rows[1], (hex::encode(span_id(1)), 1), "then its first child");
    assert_eq!(first_rows[2], (hex::encode(span_id(100)), 2), "then that child's first child");
    assert!(first.body.contains(&format!("spans 1–{PAGE_SIZE} of {TOTAL}")), "the range is written out");
    assert!(first.body.contains(&format!("rel=\"next\" href=\"{path}?page=2\"")), "a next link");
    assert!(!first.body.contains("rel=\"prev\""), "no previous page");

    let last = console.get(&format!("{path}?page={pages}"), Some(&support)).await;
    assert_eq!(last.status, 200);
    assert_eq!(rows(&last.body).len(), TOTAL as usize - (pages - 1) * PAGE_SIZE);
    assert!(last.body.contains(&format!("rel=\"prev\" href=\"{path}?page={}\"", pages - 1)) && !last.body.contains("rel=\"next\""));
    assert!(last.body.contains(&format!("spans {}–{TOTAL} of {TOTAL}", (pages - 1) * PAGE_SIZE + 1)));
    assert_eq!(console.get(&format!("{path}?page={}", pages + 1), Some(&support)).await.status, 404);

    // Every span is on exactly one page.
    let mut seen = std::collections::HashSet::new();
    for page in 1..=pages {
        let page = console.get(&format!("{path}?page={page}"), Some(&support)).await;
        for (id, _) in rows(&page.body) {
            assert!(seen.insert(id), "a span on two pages");
        }
    }
    assert_eq!(seen.len(), TOTAL as usize);

    // ?span= opens the page the span is on: child 57's last grandchild is deep in the trace.
    let deep = 100 + 56 * 100 + 99;
    let picked = console.get(&format!("{path}?span={}", hex::encode(span_id(deep))), Some(&support)).await;
    assert_eq!(picked.status, 200);
    let position = 1 + 56 * 101 + 1 + 99;
    let page = position / PAGE_SIZE + 1;
    assert!(picked.body.contains(&format!("data-page=\"{page}\"")), "span {deep} is on page {page}");
    assert!(row_of(&picked.body, &hex::encode(span_id(deep))).contains("aria-current=\"true\""));
    console.gateway.shutdown().await;
}

#[path = "../common/signin.rs"]
mod harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_session_unmasks_only_with_its_csrf_token() {
    harness::check_tools(&["oidc-provider", "playwright-core"]);
    let port = crate::common::ports::free_port();
    let public_url = format!("http://127.0.0.1:{port}");
    let (_idp, issuer) = harness::start_idp(&public_url, "all");
    let secured = crate::fixture::secured_config();
    assert!(secured.contains("api: {endpoint: \"127.0.0.1:0\"}"), "the secured config changed: {secured}");
    let yaml = secured.replace("api: {endpoint: \"127.0.0.1:0\"}", &format!("api: {{endpoint: \"127.0.0.1:{port}\"}}"))
        + &harness::login_yaml(port, &issuer);
    let (gateway, dir) = crate::common::start_gateway(&yaml).await;
    let api = gateway.addresses.api.expect("the API listens");
    let http = *gateway.addresses.http.values().next().expect("the OTLP/HTTP receiver listens");
    let console = Console { gateway, api, http, dir };
    send_order_trace(&console).await;

    let span = hex::encode(span_id(3));
    let script = harness::root().join("tests/console/trace_session.js");
    let env = [("TRACE", hex::encode(TRACE)), ("SPAN", span.clone())];
    let (public, iss) = (public_url.clone(), issuer.clone());
    let out = tokio::task::spawn_blocking(move || harness::run_browser(&script, &public, &iss, &env)).await.unwrap();
    let result = harness::browser_result(&out);

    // Support: the page it asked for, the picked span open, pseudonyms, no form.
    assert_eq!(result["support_landed_on"], format!("{public_url}/traces/{}?span={span}", hex::encode(TRACE)));
    assert_eq!(result["support_rows"], 5);
    assert_eq!(result["support_unmask_forms"], 0);
    assert_eq!(result["support_picked_open"], true);
    let support_text = result["support_text"].as_str().unwrap();
    assert!(support_text.contains("pseud:") && !support_text.contains(EMAIL), "{support_text}");
    // Admin: a wrong or missing token from our own origin is refused; the real form works.
    assert!(result["form_csrf_length"].as_u64().unwrap() >= 16, "the form carries the session's token");
    assert_eq!(result["wrong_token"]["status"], 403);
    let refusal = result["wrong_token"]["text"].as_str().unwrap();
    assert!(refusal.contains("CSRF token") && !refusal.contains(EMAIL), "{refusal}");
    assert_eq!(result["missing_token"], 403);
    assert_eq!(result["unmasked_url"], format!("{public_url}/traces/{}/unmask", hex::encode(TRACE)));
    assert!(result["unmasked_notice"].as_str().unwrap().contains("this access was audited with your reason"));
    assert!(result["unmasked_text"].as_str().unwrap().contains(EMAIL), "{}", result["unmasked_text"]);
    assert_eq!(result["unmasked_picked"], span.as_str(), "the picked span stays picked");
    assert_eq!(result["csp_violations"], serde_json::json!([]), "the pages break their own CSP");

    let records = audit_records(&console, "unmask");
    let outcomes: Vec<(&str, &str, &str)> = records
        .iter()
        .map(|r| (r["actor"]["sub"].as_str().unwrap_or(""), r["outcome"].as_str().unwrap(), r["reason"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(outcomes.len(), 3, "{records:#?}");
    assert!(outcomes[..2].iter().all(|(_, outcome, reason)| *outcome == "forbidden" && reason.contains("CSRF")), "{outcomes:?}");
    assert_eq!((outcomes[2].1, outcomes[2].2), ("allowed", "session ticket SUP-99"));
    console.gateway.shutdown().await;
}
