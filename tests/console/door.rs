//! The door in front of the pages: HTML refusals, security headers, static files.

use crate::support::*;

#[tokio::test]
async fn pages_refuse_in_html_and_carry_a_strict_content_security_policy() {
    let console = start("").await;
    // No token, no sign-in configured: a 401 page, not JSON.
    let page = console.get("/", None).await;
    assert_eq!(page.status, 401, "{}", page.body);
    assert!(page.header("content-type").starts_with("text/html"), "{}", page.header("content-type"));
    assert!(page.body.contains("Not signed in"), "{}", page.body);
    // A token without a reading role: a 403 page naming who is signed in.
    let page = console.get("/", Some(&no_role_token())).await;
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.body.contains("Access denied") && page.body.contains("nora@shop.test"), "{}", page.body);
    // Support reads the orders page; admin-only pages stay closed to it.
    let support = support_token();
    let page = console.get("/", Some(&support)).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let csp = page.header("content-security-policy");
    for directive in ["default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'"] {
        assert!(csp.contains(directive), "CSP {csp:?} lacks {directive}");
    }
    assert!(!page.body.contains("<script>"), "an inline script in {}", page.body);
    assert_eq!(page.header("x-content-type-options"), "nosniff");
    assert!(page.header("server-timing").starts_with("render;dur="), "{}", page.header("server-timing"));
    assert_eq!(console.get("/admin", Some(&support)).await.status, 403);
    // The stylesheet and script are served without a token.
    for (file, kind) in [("console.css", "text/css"), ("console.js", "text/javascript"), ("icon.svg", "image/svg+xml")] {
        let page = console.get(&format!("/static/{file}"), None).await;
        assert_eq!(page.status, 200, "{file}");
        assert!(page.header("content-type").starts_with(kind), "{file}: {}", page.header("content-type"));
    }
    assert_eq!(console.get("/static/nope.css", None).await.status, 404);
}

#[tokio::test]
async fn without_authentication_the_console_opens_with_a_warning_banner() {
    // The built-in configuration's shape: loopback, no auth section.
    let yaml = r#"
receivers:
  otlp:
    http: {endpoint: "127.0.0.1:0"}
exporters:
  local: {type: embedded, path: "{data}", batch: {max_wait: 5ms}}
api: {endpoint: "127.0.0.1:0"}
service:
  pipelines:
    traces: {receivers: [otlp], exporters: [local]}
"#;
    let (gateway, _dir) = crate::common::start_gateway(yaml).await;
    let api = gateway.addresses.api.unwrap();
    let (status, _, body) = crate::common::send("GET", &format!("http://{api}/"), &[], Vec::new()).await;
    let body = String::from_utf8_lossy(&body);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("No authentication."), "no banner in {body}");
    assert!(body.contains("local mode"), "{body}");
    assert!(!body.contains("Sign out"), "{body}");
}
