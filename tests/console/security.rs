//! The console's security review: order ids with URL syntax are one path segment in every link
//! and redirect, handlers' error pages sit under the console's base path, path parameters that
//! are not text and oversized forms get pages of their own.

use serde_json::json;

use crate::support::*;

/// Order ids with URL syntax, and how a link must carry each (one path segment).
const IDS: [(&str, &str); 3] =
    [("A/1?x=2#frag", "A%2F1%3Fx%3D2%23frag"), ("B 100%", "B%20100%25"), ("C%2F..%2Fadmin", "C%252F..%252Fadmin")];

#[tokio::test]
async fn order_ids_with_url_syntax_are_one_path_segment_in_links_and_redirects() {
    let console = start("").await;
    let token = support_token();
    let now = now_ns();
    for (i, (id, _)) in IDS.iter().enumerate() {
        console.order_events("shop-api", &json!([event(id, "shop-api", "created", Some("new"), now - (i as u64 + 1) * 60 * SEC)])).await;
        console.wait_for_order(id, 1).await;
    }
    let list = console.get("/", Some(&token)).await;
    assert_eq!(list.status, 200, "{}", list.body);
    for (id, encoded) in IDS {
        let href = format!("/orders/{encoded}");
        assert!(list.body.contains(&format!("href=\"{href}\"")), "the list links {id:?} as {href}: {}", list.body);
        // The link opens that order, and its live updates read the same address.
        let page = console.get(&href, Some(&token)).await;
        assert_eq!(page.status, 200, "{href}: {}", page.body);
        assert!(page.body.contains(&format!("data-live=\"{href}\"")), "{}", page.body);
        // An exact search goes there too.
        let found = console.get(&format!("/?q={}", path_segment(id)), Some(&token)).await;
        assert_eq!((found.status, found.header("location")), (303, href.as_str()), "{id:?}");
    }
    console.gateway.shutdown().await;
}

/// Browser sign-in with the console behind a path (`public_url` has one); the provider is
/// never asked (the requests carry bearer tokens).
const LOGIN_UNDER_A_PATH: &str = r#"  login:
    issuer: "http://127.0.0.1:9/idp"
    client_id: tracegate
    public_url: "http://127.0.0.1:9/support"
    scopes: [openid]
    roles: {claims: [/roles], map: {tg-support: support, tg-admin: admin}}
    allow_insecure_loopback: true
"#;

#[tokio::test]
async fn handlers_error_pages_link_under_the_console_base_path() {
    let console = start(LOGIN_UNDER_A_PATH).await;
    let token = support_token();
    // Without a token: off to sign-in, and back to the page under the same path afterwards.
    let page = console.get("/orders/A-1?x=1", None).await;
    assert_eq!(page.status, 303, "{}", page.body);
    assert_eq!(page.header("location"), "/support/login?next=%2Fsupport%2Forders%2FA-1%3Fx%3D1");
    let page = console.get("/alerts", Some(&token)).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains(r#"href="/support/static/console.css""#), "{}", page.body);
    for path in ["/orders/A%0A1", "/orders/NO-SUCH-ORDER", "/traces/not-a-trace", "/traces/71717171717171717171717171717171?page=0"] {
        let page = console.get(path, Some(&token)).await;
        assert!(matches!(page.status, 400 | 404), "{path}: {} {}", page.status, page.body);
        assert!(page.header("content-type").starts_with("text/html"), "{path}");
        assert!(page.body.contains(r#"href="/support/static/console.css""#), "{path}: {}", page.body);
        assert!(page.body.contains(r#"href="/support/">Back to the orders"#), "{path}: {}", page.body);
    }
    console.gateway.shutdown().await;
}

#[tokio::test]
async fn ids_that_are_not_text_and_oversized_forms_get_pages() {
    let console = start("").await;
    let (support, admin) = (support_token(), admin_token());
    // Percent-encoded bytes that are not UTF-8: a 400 page with the console's headers, not a
    // bare text answer.
    for path in ["/orders/%FF%FE", "/traces/%FF%FE"] {
        let page = console.get(path, Some(&support)).await;
        assert_eq!(page.status, 400, "{path}: {}", page.body);
        assert!(page.header("content-type").starts_with("text/html"), "{path}");
        assert!(page.header("content-security-policy").contains("frame-ancestors 'none'"), "{path}");
        assert!(page.body.contains("is not valid"), "{path}: {}", page.body);
    }
    // Forms larger than the page's own are refused unread, as 413 pages.
    let big = "x".repeat(20 * 1024);
    let unmask = console.post_form(&format!("/traces/{}/unmask", "71".repeat(16)), Some(&admin), &[("reason", &big), ("csrf", "")]).await;
    assert_eq!(unmask.status, 413, "{}", unmask.body);
    assert!(unmask.body.contains("Request too large"), "{}", unmask.body);
    let reload = console.post_form("/admin/reload", Some(&admin), &[("csrf", &big)]).await;
    assert_eq!(reload.status, 413, "{}", reload.body);
    console.gateway.shutdown().await;
}
