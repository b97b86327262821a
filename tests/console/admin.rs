//! The alerts page (`/alerts`) and the admin page (`/admin`, `POST /admin/reload`): alerts
//! raised by a real order monitor from order events, the audit log the door writes, the
//! redacted running configuration, and reloads of a gateway started from a file.

use std::time::Duration;

use serde_json::{json, Value};
use tracegate::gateway::ConfigSource;
use tracegate::shared::format_rfc3339_nanos;
use tracegate::{Config, Gateway};

use crate::fixture::{secured_config, AUTH0_SECRET};
use crate::support::*;

const XSS: &str = r#"<script>alert(1)</script>"><img src=x onerror=alert(2)>"#;
const CHECKPOINT_KEY: &str = "audit-checkpoint-key-0123456789abcdef";

/// The `<tr data-...>` rows of the table with this id, each as its HTML.
fn rows<'a>(body: &'a str, table_id: &str) -> Vec<&'a str> {
    let Some(start) = body.find(&format!("<table id=\"{table_id}\"")) else {
        return Vec::new();
    };
    let table = &body[start..];
    let table = &table[..table.find("</table>").expect("the table ends")];
    table.split("<tr data-").skip(1).collect()
}

fn assert_html(page: &Page) {
    assert!(page.header("content-type").starts_with("text/html"), "{} {}", page.header("content-type"), page.body);
}

/// Nothing a page shows from data can become markup.
fn assert_inert(body: &str) {
    for raw in ["<script>alert", "<img src=x", "onerror=alert(2)>"] {
        assert!(!body.contains(raw), "{raw:?} came out unescaped");
    }
}

#[tokio::test]
async fn admin_reads_and_filters_the_audit_log_and_sees_the_config_without_secrets() {
    let console = start("").await;
    let (admin, support) = (admin_token(), support_token());
    // Records by two people: support lists orders, admin unmasks a trace with a hostile reason.
    assert_eq!(console.get("/", Some(&support)).await.status, 200);
    let reason: String = url::form_urlencoded::byte_serialize(XSS.as_bytes()).collect();
    let unmask = console.get(&format!("/api/v1/traces/{}?unmask=true&reason={reason}", "ab".repeat(16)), Some(&admin)).await;
    assert!(unmask.status == 200 || unmask.status == 404, "{} {}", unmask.status, unmask.body);

    let page = console.get("/admin", Some(&admin)).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_html(&page);
    let all = rows(&page.body, "audit");
    assert!(all.iter().any(|r| r.starts_with(r#"action="console.orders""#) && r.contains("sam@shop.test")), "{}", page.body);
    assert!(all.iter().any(|r| r.starts_with(r#"action="unmask""#)), "{}", page.body);
    // Newest first: the first record (after any checkpoint) is this very visit.
    let first = all.iter().find(|r| !r.starts_with(r#"action="audit.checkpoint""#)).unwrap();
    assert!(first.starts_with(r#"action="console.admin""#), "{first}");
    assert_inert(&page.body);
    assert!(page.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&gt;&lt;img"), "the reason is shown, escaped: {}", page.body);
    for field in ["actor", "action", "since", "until"] {
        let labelled = format!(r#"<label for="audit-{field}">"#);
        let input = format!(r#"<input id="audit-{field}" type="text" name="{field}""#);
        assert!(page.body.contains(&labelled) && page.body.contains(&input), "no labelled {field} field: {}", page.body);
    }

    // Filters: by actor (subject or name), by action, by time.
    let page = console.get("/admin?actor=sam&action=", Some(&admin)).await;
    let sam = rows(&page.body, "audit");
    assert!(!sam.is_empty() && sam.iter().all(|r| r.contains("sam@shop.test") || r.contains(">sam<")), "{}", page.body);
    assert!(!sam.iter().any(|r| r.contains("ada")), "{}", page.body);
    let page = console.get("/admin?action=unmask", Some(&admin)).await;
    let unmasks = rows(&page.body, "audit");
    assert_eq!(unmasks.len(), 1, "{}", page.body);
    assert!(unmasks[0].starts_with(r#"action="unmask""#) && unmasks[0].contains("ada"), "{}", unmasks[0]);
    let page = console.get("/admin?since=2100-01-01T00:00:00Z", Some(&admin)).await;
    assert!(rows(&page.body, "audit").is_empty() && page.body.contains("No audit records match"), "{}", page.body);
    let page = console.get("/admin?until=2000-01-01T00:00:00Z&actor=ada", Some(&admin)).await;
    assert!(rows(&page.body, "audit").is_empty(), "{}", page.body);
    // A bad filter value: the page, with the error, not JSON.
    let page = console.get("/admin?since=yesterday", Some(&admin)).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert_html(&page);
    assert!(page.body.contains(r#"id="filter-error""#) && page.body.contains("since:"), "{}", page.body);
    // A limit shows a "more" link keeping the filters.
    let page = console.get("/admin?actor=ada&limit=1", Some(&admin)).await;
    assert_eq!(rows(&page.body, "audit").len(), 1, "{}", page.body);
    assert!(page.body.contains(r#"href="/admin?actor=ada&amp;limit=2""#), "{}", page.body);

    // The running configuration, redacted.
    let page = console.get("/admin", Some(&admin)).await;
    let config = &page.body[page.body.find(r#"id="config""#).expect("the configuration is shown")..];
    let config = &config[..config.find("</pre>").unwrap()];
    assert!(config.contains("checkpoint_key") && config.contains("embedded"), "{config}");
    for secret in [CHECKPOINT_KEY, AUTH0_SECRET] {
        assert!(!page.body.contains(secret), "a secret on the admin page: {secret}");
    }
    // The reload form posts with a CSRF field and asks first.
    assert!(page.body.contains(r#"<form id="reload" method="post" action="/admin/reload" data-confirm="#), "{}", page.body);
    assert!(page.body.contains(r#"<input type="hidden" name="csrf""#), "{}", page.body);

    // A gateway built in memory cannot reload, and says so on the page.
    let page = console.post_form("/admin/reload", Some(&admin), &[("csrf", "")]).await;
    assert_eq!(page.status, 503, "{}", page.body);
    assert_html(&page);
    assert!(page.body.contains(r#"id="reload-result""#) && page.body.contains("cannot reload"), "{}", page.body);

    // The form is small; a large body is refused before anything runs.
    let page = console.post_form("/admin/reload", Some(&admin), &[("csrf", &"x".repeat(8000))]).await;
    assert_eq!(page.status, 413, "{}", page.body);
    assert_html(&page);

    // Support has neither page; the refusals are pages and are audited.
    for page in [console.get("/admin", Some(&support)).await, console.post_form("/admin/reload", Some(&support), &[("csrf", "")]).await] {
        assert_eq!(page.status, 403, "{}", page.body);
        assert_html(&page);
        assert!(page.body.contains("Access denied") && page.body.contains("admin role"), "{}", page.body);
    }
    let page = console.get("/admin?action=console.reload", Some(&admin)).await;
    let reloads = rows(&page.body, "audit");
    assert!(reloads.iter().any(|r| r.contains(r#"outcome="allowed""#) && r.contains("ada")), "{}", page.body);
    assert!(reloads.iter().any(|r| r.contains(r#"outcome="forbidden""#) && r.contains("sam")), "{}", page.body);
    console.gateway.shutdown().await;
}

/// The console's configuration with `extra` exporters in the pipeline, for a file.
fn file_config(dir: &std::path::Path, extra: &str) -> String {
    let mut yaml = secured_config().replace("{data}", dir.to_str().unwrap());
    if !extra.is_empty() {
        yaml = yaml.replace("  local: {type: embedded,", &format!("  {extra}: {{type: debug}}\n  local: {{type: embedded,"));
        yaml = yaml.replace("exporters: [local]", &format!("exporters: [local, {extra}]"));
    }
    yaml
}

#[tokio::test]
async fn reload_from_a_file_applies_it_and_a_broken_file_keeps_the_running_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tracegate.yaml");
    std::fs::write(&path, file_config(dir.path(), "")).unwrap();
    let config = Config::from_file(&path).unwrap();
    let gateway = Gateway::start_from(config, ConfigSource::File(path.clone())).await.expect("gateway starts");
    let api = gateway.api_addr().unwrap();
    let console = Console { http: gateway.http_addr().unwrap(), gateway, api, dir: tempfile::tempdir().unwrap() };
    let admin = admin_token();

    let page = console.get("/admin", Some(&admin)).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(!page.body.contains("spare_log"), "{}", page.body);

    // A new exporter in the file: the reload applies it and says what changed.
    let yaml = file_config(dir.path(), "spare_log");
    assert!(yaml.contains("exporters: [local, spare_log]"), "{yaml}");
    std::fs::write(&path, yaml).unwrap();
    let page = console.post_form("/admin/reload", Some(&admin), &[("csrf", "")]).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let result = &page.body[page.body.find(r#"id="reload-result""#).expect("a reload result")..];
    assert!(result.contains(r#"data-outcome="applied""#) && result.contains("Configuration reloaded"), "{result}");
    assert!(result.contains("exporters added") && result.contains("spare_log"), "{result}");
    let config = &page.body[page.body.find(r#"id="config""#).unwrap()..];
    assert!(config.contains("spare_log"), "the page shows the new configuration: {config}");

    // A broken file: refused with its error, the running configuration stays.
    std::fs::write(&path, file_config(dir.path(), "spare_log").replace("{type: debug}", "{type: teleport}")).unwrap();
    let page = console.post_form("/admin/reload", Some(&admin), &[("csrf", "")]).await;
    assert_eq!(page.status, 422, "{}", page.body);
    let result = &page.body[page.body.find(r#"id="reload-result""#).expect("a reload result")..];
    assert!(result.contains(r#"data-outcome="refused""#) && result.contains("running configuration stays"), "{result}");
    assert!(result.contains("teleport"), "the error names the bad value: {result}");
    let page = console.get("/admin", Some(&admin)).await;
    let config = &page.body[page.body.find(r#"id="config""#).unwrap()..];
    let config = &config[..config.find("</pre>").unwrap()];
    assert!(config.contains("spare_log") && config.contains("debug") && !config.contains("teleport"), "{config}");
    // Both reloads are in the audit log, with who did them.
    let page = console.get("/admin?action=console.reload", Some(&admin)).await;
    assert_eq!(rows(&page.body, "audit").len(), 2, "{}", page.body);
    assert!(rows(&page.body, "audit").iter().all(|r| r.contains("ada") && r.contains("/admin/reload")), "{}", page.body);
    console.gateway.shutdown().await;
}

const MONITOR: &str = r#"
monitors:
  order_sla:
    lifecycle: [new, accepted, manufactured]
    grace: 1s
    rules:
      - {name: crm_accepts, from: new, to: accepted, within: 1s, severity: warning}
      - {name: production, from: accepted, to: manufactured, within: 1h, severity: critical}
"#;

fn event(order: &str, status: &str, t: u64) -> Value {
    json!({"order_id": order, "service": "crm-api", "status": status, "time": format_rfc3339_nanos(t)})
}

#[tokio::test]
async fn the_alerts_page_lists_the_monitors_alerts_and_filters_them() {
    let console = start(MONITOR).await;
    let support = support_token();
    let t0 = now_ns() - 20 * SEC;
    let sec = 1_000_000_000;
    console
        .order_events(
            "crm-api",
            &json!([
                // Stuck in `new` long past its second: fires (by the clock).
                event(XSS, "new", t0),
                // Accepted 5 s after `new`: fires and resolves at once with the real wait.
                event("B-late", "new", t0),
                event("B-late", "accepted", t0 + 5 * sec),
                // On time: no alert; its production clock runs for an hour.
                event("C-fine", "new", t0),
                event("C-fine", "accepted", t0 + sec / 2),
            ]),
        )
        .await;
    // Wait for the monitor to decide both alerts (the API reads the same alerts).
    let alerts = crate::common::eventually("two alerts, one resolved", Duration::from_secs(20), || async {
        let page = console.get("/api/v1/alerts", Some(&support)).await;
        assert_eq!(page.status, 200, "{}", page.body);
        let alerts = serde_json::from_str::<Value>(&page.body).unwrap()["alerts"].as_array().unwrap().clone();
        crate::common::when(alerts, |alerts| alerts.len() >= 2 && alerts.iter().any(|a| a["state"] == "resolved"))
    })
    .await;
    assert_eq!(alerts.len(), 2, "{alerts:?}");

    let page = console.get("/alerts", Some(&support)).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_html(&page);
    assert_inert(&page.body);
    let all = rows(&page.body, "alerts-table");
    assert_eq!(all.len(), 2, "{}", page.body);
    let firing: Vec<_> = all.iter().filter(|r| r.starts_with(r#"state="firing" data-rule="crm_accepts""#)).collect();
    assert_eq!(firing.len(), 1, "{}", page.body);
    // The hostile order id: escaped as text, one percent-encoded path segment in the link.
    assert!(
        firing[0].contains(r#"href="/orders/%3Cscript%3Ealert%281%29%3C%2Fscript%3E%22%3E%3Cimg%20src%3Dx%20onerror%3Dalert%282%29%3E""#),
        "{}",
        firing[0]
    );
    assert!(firing[0].contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&gt;&lt;img"), "{}", firing[0]);
    assert!(firing[0].contains("still firing") && firing[0].contains("within 1.0 s"), "threshold shown: {}", firing[0]);
    let resolved: Vec<_> = all.iter().filter(|r| r.starts_with(r#"state="resolved" data-rule="crm_accepts""#)).collect();
    assert_eq!(resolved.len(), 1, "{}", page.body);
    assert!(resolved[0].contains(r#"href="/orders/B-late""#) && resolved[0].contains(">5.0 s<"), "the measured wait: {}", resolved[0]);
    assert!(resolved[0].contains("new</span> → <span class=\"mono\">accepted"), "the transition: {}", resolved[0]);
    for label in ["State", "Rule", "Severity", "Fired since (UTC)", "Fired until (UTC)"] {
        assert!(page.body.contains(&format!(r#"">{label}<"#)), "no labelled {label} field: {}", page.body);
    }

    // The rule field suggests the configured rules.
    assert!(page.body.contains(r#"<option value="crm_accepts">"#) && page.body.contains(r#"<option value="production">"#), "{}", page.body);

    // Filters: state, rule, severity, time; the form keeps what was asked.
    let page = console.get("/alerts?state=resolved&rule=&severity=", Some(&support)).await;
    let found = rows(&page.body, "alerts-table");
    assert!(found.len() == 1 && found[0].contains("B-late"), "{}", page.body);
    assert!(page.body.contains(r#"<option value="resolved" selected>"#), "{}", page.body);
    let page = console.get("/alerts?state=firing&rule=crm_accepts", Some(&support)).await;
    let found = rows(&page.body, "alerts-table");
    assert!(found.len() == 1 && found[0].contains("%3Cscript%3E"), "{}", page.body);
    for query in ["rule=production", "severity=critical", "since=2100-01-01T00:00:00Z", "until=2000-01-01T00:00:00Z"] {
        let page = console.get(&format!("/alerts?{query}"), Some(&support)).await;
        assert_eq!(page.status, 200, "{query}: {}", page.body);
        assert!(rows(&page.body, "alerts-table").is_empty() && page.body.contains("No alerts match"), "{query}: {}", page.body);
    }
    let page = console.get("/alerts?severity=warning&until=2100-01-01T00:00:00Z", Some(&support)).await;
    assert_eq!(rows(&page.body, "alerts-table").len(), 2, "{}", page.body);
    // A limit shows a "more" link.
    let page = console.get("/alerts?limit=1", Some(&support)).await;
    assert_eq!(rows(&page.body, "alerts-table").len(), 1, "{}", page.body);
    assert!(page.body.contains(r#"rel="next" href="/alerts?limit=2""#), "{}", page.body);
    // A bad filter value: the page with the error, escaped, not JSON.
    let page = console.get("/alerts?state=%3Cb%3Eopen", Some(&support)).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert_html(&page);
    assert!(
        page.body.contains(r#"id="filter-error""#) && page.body.contains("&quot;&lt;b&gt;open&quot; is not an alert state"),
        "{}",
        page.body
    );
    assert!(rows(&page.body, "alerts-table").is_empty());
    // Without a reading role: the 403 page.
    assert_eq!(console.get("/alerts", Some(&no_role_token())).await.status, 403);
    console.gateway.shutdown().await;
}
