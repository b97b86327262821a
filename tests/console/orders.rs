//! The orders page `/`: exact search goes to the order, a partial id lists the orders that start
//! with it, filters, longest waiting first, paging, and hostile ids and service names stay inert.

use serde_json::json;

use crate::support::*;

/// The text of an HTML attribute value or element content, unescaped.
fn unescape(text: &str) -> String {
    text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&#39;", "'").replace("&amp;", "&")
}

/// The order ids of the rows of `#orders`, in page order.
fn rows(body: &str) -> Vec<String> {
    body.split("<tr data-order-id=\"").skip(1).map(|rest| unescape(&rest[..rest.find('"').unwrap()])).collect()
}

/// The row of `order_id` (its HTML up to `</tr>`).
fn row<'a>(body: &'a str, order_id: &str) -> &'a str {
    let start = body.find(&format!("<tr data-order-id=\"{order_id}\"")).unwrap_or_else(|| panic!("no row {order_id} in {body}"));
    let end = start + body[start..].find("</tr>").unwrap();
    &body[start..end]
}

/// The `href` of the "next page" link, unescaped, if any.
fn next_link(body: &str) -> Option<String> {
    let at = body.find("rel=\"next\"")?;
    let rest = &body[at..];
    let start = rest.find("href=\"")? + 6;
    Some(unescape(&rest[start..start + rest[start..].find('"')?]))
}

async fn wait_for_list(console: &Console, token: &str, count: usize) {
    crate::common::eventually(&format!("{count} orders in the list"), std::time::Duration::from_secs(10), || async {
        let page = console.get("/api/v1/orders?limit=1000", Some(token)).await;
        let body: serde_json::Value = serde_json::from_str(&page.body).unwrap_or_default();
        crate::common::when(body["orders"].as_array().map_or(0, Vec::len), |&n| n >= count)
    })
    .await;
}

#[tokio::test]
async fn exact_search_opens_the_order_and_a_partial_id_lists_the_orders_starting_with_it() {
    let console = start("").await;
    let token = support_token();
    let now = now_ns();
    let events: Vec<_> = ["A-1001", "A-1002", "A-10", "B-1001", "A 1/x?#"]
        .iter()
        .enumerate()
        .map(|(i, id)| event(id, "shop-api", "created", Some("new"), now - (i as u64 + 1) * 60 * SEC))
        .collect();
    console.order_events("shop-api", &json!(events)).await;
    wait_for_list(&console, &token, 5).await;

    let page = console.get("/?q=A-1001", Some(&token)).await;
    assert_eq!(page.status, 303, "{}", page.body);
    assert_eq!(page.header("location"), "/orders/A-1001");
    let page = console.get("/?q=%20A-1001%20", Some(&token)).await;
    assert_eq!((page.status, page.header("location")), (303, "/orders/A-1001"), "spaces around a pasted id");
    let page = console.get("/?q=A%201%2Fx%3F%23", Some(&token)).await;
    assert_eq!((page.status, page.header("location")), (303, "/orders/A%201%2Fx%3F%23"), "percent-encoded");

    let page = console.get("/?q=A-100", Some(&token)).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let mut found = rows(&page.body);
    found.sort();
    assert_eq!(found, ["A-1001", "A-1002"], "only ids starting with A-100");
    assert!(page.body.contains("No order <strong>A-100</strong>; orders starting with <strong>A-100</strong>"), "{}", page.body);
    assert!(page.body.contains("name=\"q\" value=\"A-100\""), "the search stays in the box");
    // Prefixes are literal and case-sensitive.
    assert!(rows(&console.get("/?q=a-100", Some(&token)).await.body).is_empty());
    assert!(rows(&console.get("/?q=A_", Some(&token)).await.body).is_empty());
    let page = console.get("/?q=Z-9", Some(&token)).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("No order <strong>Z-9</strong>, and no order id starts with it."), "{}", page.body);
    assert!(!page.body.contains("id=\"orders\""));
    // The JSON API has the same prefix filter.
    let api = console.get("/api/v1/orders?id_prefix=A-100", Some(&token)).await;
    let api: serde_json::Value = serde_json::from_str(&api.body).unwrap();
    assert_eq!(api["orders"].as_array().unwrap().len(), 2, "{api}");
}

#[tokio::test]
async fn filters_narrow_the_list_and_the_longest_waiting_order_comes_first() {
    let console = start("").await;
    let token = support_token();
    let now = now_ns();
    let h = 3600 * SEC;
    // W-1 last moved 3 h ago (CRM accepted it), W-3 2 h ago, W-2 1 h ago (MES made it).
    console
        .order_events(
            "shop-api",
            &json!([
                event("W-1", "shop-api", "created", Some("new"), now - 5 * h),
                event("W-2", "shop-api", "created", Some("new"), now - 4 * h),
                event("W-3", "shop-api", "created", Some("new"), now - 6 * h),
                event("W-3", "shop-api", "db_save", None, now - 2 * h),
            ]),
        )
        .await;
    console.order_events("crm-api", &json!([event("W-1", "crm-api", "status_change", Some("accepted"), now - 3 * h)])).await;
    console.order_events("mes-api", &json!([event("W-2", "mes-api", "bus_consume", Some("manufactured"), now - h)])).await;
    console.wait_for_order("W-1", 2).await;
    console.wait_for_order("W-2", 2).await;
    console.wait_for_order("W-3", 2).await;

    let page = console.get("/", Some(&token)).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(rows(&page.body), ["W-1", "W-3", "W-2"], "longest waiting first by default");
    let w1 = row(&page.body, "W-1");
    for cell in
        ["<td class=\"status\">accepted</td>", "<td class=\"service\">crm-api</td>", "<td class=\"stage\">status_change</td>", "3h 00m"]
    {
        assert!(w1.contains(cell), "{cell} not in {w1}");
    }
    assert!(w1.contains(&format!("datetime=\"{}", &format_rfc3339_nanos(now - 3 * h)[..19])), "the last step's time: {w1}");
    assert!(w1.contains("href=\"/orders/W-1\""), "{w1}");
    let w3 = row(&page.body, "W-3");
    assert!(w3.contains("<td class=\"service\">shop-api</td>") && w3.contains("<td class=\"stage\">db_save</td>"), "{w3}");
    assert!(w3.contains("<td class=\"status\">new</td>") && w3.contains("2h 00m"), "{w3}");

    let newest = console.get("/?sort=newest", Some(&token)).await;
    assert_eq!(rows(&newest.body), ["W-2", "W-3", "W-1"]);
    assert!(newest.body.contains("<option value=\"newest\" selected>"), "the sort stays chosen");

    let page = console.get("/?status=accepted", Some(&token)).await;
    assert_eq!(rows(&page.body), ["W-1"]);
    assert!(page.body.contains("name=\"status\" value=\"accepted\""), "the filter stays in the form");
    assert_eq!(rows(&console.get("/?service=mes-api", Some(&token)).await.body), ["W-2"]);
    assert_eq!(rows(&console.get("/?service=shop-api&status=new", Some(&token)).await.body), ["W-3"]);
    // What a datetime-local input sends (no zone: UTC), and RFC 3339.
    let since = &format_rfc3339_nanos(now - 5 * h / 2)[..16];
    let page = console.get(&format!("/?since={since}"), Some(&token)).await;
    assert_eq!(rows(&page.body), ["W-3", "W-2"], "last seen after {since}");
    assert!(page.body.contains(&format!("name=\"since\" value=\"{since}:00\"")), "{}", page.body);
    let until = format_rfc3339_nanos(now - 11 * h / 2);
    assert_eq!(rows(&console.get(&format!("/?until={until}"), Some(&token)).await.body), ["W-3"], "first seen before {until}");
    // No monitor runs: no order has an alert.
    let page = console.get("/?alert=firing", Some(&token)).await;
    assert!(rows(&page.body).is_empty() && page.body.contains("No order matches these filters."), "{}", page.body);
    assert_eq!(rows(&console.get("/?alert=none", Some(&token)).await.body).len(), 3);
    assert!(row(&page_body(&console, &token).await, "W-2").contains("none firing"));

    // Bad values: the page again, with the message and the form as sent, and 400.
    let page = console.get("/?since=yesterday&status=accepted", Some(&token)).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.body.contains("id=\"problem\"") && page.body.contains("Since: &quot;yesterday&quot; is not a time"), "{}", page.body);
    assert!(page.body.contains("name=\"status\" value=\"accepted\""), "{}", page.body);
    for bad in ["/?until=2026-13-01T00:00", "/?alert=loud", "/?sort=sideways", "/?cursor=garbage"] {
        let page = console.get(bad, Some(&token)).await;
        assert_eq!(page.status, 400, "{bad}: {}", page.body);
        assert!(page.body.contains("id=\"problem\""), "{bad}: {}", page.body);
    }
    let api = console.get("/api/v1/orders?sort=waiting", Some(&token)).await;
    let api: serde_json::Value = serde_json::from_str(&api.body).unwrap();
    let ids: Vec<&str> = api["orders"].as_array().unwrap().iter().map(|o| o["order_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["W-1", "W-3", "W-2"]);
    assert_eq!(
        (api["orders"][0]["current_service"].as_str(), api["orders"][0]["current_stage"].as_str()),
        (Some("crm-api"), Some("status_change"))
    );
}

async fn page_body(console: &Console, token: &str) -> String {
    console.get("/", Some(token)).await.body
}

#[tokio::test]
async fn the_next_page_link_walks_the_whole_list_once() {
    let console = start("").await;
    let token = support_token();
    let empty = console.get("/", Some(&token)).await;
    assert!(empty.body.contains("No order in flight") && empty.body.contains("tracegate demo"), "{}", empty.body);
    let now = now_ns();
    // 57 orders, P-000 waiting longest; two share a time (the id breaks the tie).
    let mut events: Vec<_> =
        (0..56u64).map(|i| event(&format!("P-{i:03}"), "shop-api", "created", None, now - (100 - i) * 60 * SEC)).collect();
    events.push(event("P-999", "shop-api", "created", None, now - 100 * 60 * SEC));
    console.order_events("shop-api", &json!(events)).await;
    wait_for_list(&console, &token, 57).await;

    for (sort, first) in [("", "P-000"), ("?sort=newest", "P-055")] {
        let mut path = format!("/{sort}");
        let mut seen = Vec::new();
        let mut pages = 0;
        loop {
            let page = console.get(&path, Some(&token)).await;
            assert_eq!(page.status, 200, "{path}: {}", page.body);
            eprintln!("{path}: {}", page.header("server-timing"));
            seen.extend(rows(&page.body));
            pages += 1;
            match next_link(&page.body) {
                Some(next) => path = next,
                None => break,
            }
        }
        assert_eq!(pages, 2, "{sort}: 50 and 7");
        assert_eq!(seen.len(), 57, "{sort}: {seen:?}");
        assert_eq!(seen[0], first, "{sort}");
        let mut expected: Vec<String> = (0..56).map(|i| format!("P-{i:03}")).collect();
        expected.insert(1, "P-999".into());
        if sort.is_empty() {
            assert_eq!(seen, expected);
        } else {
            expected.reverse();
            expected.swap(55, 56);
            assert_eq!(seen, expected, "newest first; the tie still by id");
        }
    }
    // A filter rides along on the next link.
    let page = console.get("/?service=shop-api&sort=newest", Some(&token)).await;
    let next = next_link(&page.body).unwrap();
    assert!(next.contains("service=shop-api") && next.contains("sort=newest") && next.contains("cursor="), "{next}");
    // A cursor of one order used with the other is refused.
    let page = console.get(&next.replace("sort=newest", "sort=waiting"), Some(&token)).await;
    assert_eq!(page.status, 400, "{}", page.body);
}

#[tokio::test]
async fn hostile_order_ids_and_service_names_stay_inert() {
    let console = start("").await;
    let token = support_token();
    let now = now_ns();
    let script = "<script>alert(1)</script>";
    let img = "\"><img src=x onerror=alert(2)>";
    let service = "<script>alert(3)</script>";
    console.order_events(service, &json!([event(script, service, "created", Some("<b>new</b>"), now - 120 * SEC)])).await;
    console.order_events(service, &json!([event(img, service, "<i>stage</i>", None, now - 60 * SEC)])).await;
    wait_for_list(&console, &token, 2).await;

    for path in ["/", "/?alert=none", &format!("/?service={}", urlencode(service))] {
        let page = console.get(path, Some(&token)).await;
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        assert_eq!(rows(&page.body), [script, img], "{path}");
        for raw in ["<script>alert", "<img", "<b>new", "<i>stage", "onerror=alert(2)>"] {
            assert!(!page.body.contains(raw), "{path}: {raw} unescaped in {}", page.body);
        }
        assert!(page.body.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{path}");
        assert!(page.body.contains("data-order-id=\"&quot;&gt;&lt;img src=x onerror=alert(2)&gt;\""), "{path}");
    }
    let page = console.get(&format!("/?q={}", urlencode(img)), Some(&token)).await;
    assert_eq!(page.status, 303);
    assert_eq!(page.header("location"), format!("/orders/{}", urlencode(img).replace('+', "%20")));
    let page = console.get(&format!("/?q={}&since={}", urlencode("<x>"), urlencode("\"><img src=y>")), Some(&token)).await;
    assert_eq!(page.status, 400);
    assert!(!page.body.contains("<img src=y>") && !page.body.contains("<x>"), "{}", page.body);
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

const MONITOR: &str = r#"
monitors:
  order_sla:
    lifecycle: [new, accepted, manufactured]
    grace: 1s
    rules:
      - {name: crm_accepts, from: new, to: accepted, within: 1s}
"#;

#[tokio::test]
async fn the_alert_filter_and_the_firing_badge_follow_the_monitor() {
    let console = start(MONITOR).await;
    let token = support_token();
    let now = now_ns();
    // L-1 was never accepted: its alert fires. L-2 was accepted in time (both facts in one
    // batch, so the monitor never sees L-2 overdue).
    console
        .order_events(
            "shop-api",
            &json!([
                event("L-1", "shop-api", "created", Some("new"), now - 3600 * SEC),
                event("L-2", "shop-api", "created", Some("new"), now - 1800 * SEC),
                event("L-2", "shop-api", "status_change", Some("accepted"), now - 1799 * SEC),
            ]),
        )
        .await;
    console.wait_for_order("L-2", 2).await;
    let firing = crate::common::eventually("an order with a firing alert", std::time::Duration::from_secs(10), || async {
        crate::common::when(rows(&console.get("/?alert=firing", Some(&token)).await.body), |rows| !rows.is_empty())
    })
    .await;
    assert_eq!(firing, ["L-1"], "the order with a firing alert");
    let page = console.get("/", Some(&token)).await;
    assert!(row(&page.body, "L-1").contains("<span class=\"badge firing\">1 firing</span>"), "{}", page.body);
    assert!(row(&page.body, "L-2").contains("none firing"), "{}", page.body);
    assert_eq!(rows(&console.get("/?alert=none", Some(&token)).await.body), ["L-2"]);
    assert!(rows(&console.get("/?alert=resolved", Some(&token)).await.body).is_empty());
    assert!(console.get("/?alert=none", Some(&token)).await.body.contains("<option value=\"none\" selected>"));
}

#[tokio::test]
async fn finished_orders_are_left_out_until_asked_for() {
    let console = start("").await;
    let token = support_token();
    let now = now_ns();
    console
        .order_events(
            "mes-api",
            &json!([
                event("F-1", "mes-api", "status_change", Some("in_production"), now - 300 * SEC),
                event("F-2", "mes-api", "status_change", Some("handed_to_courier"), now - 600 * SEC),
                event("F-3", "mes-api", "status_change", Some("cancelled"), now - 900 * SEC),
            ]),
        )
        .await;
    wait_for_list(&console, &token, 3).await;
    let page = console.get("/", Some(&token)).await;
    assert_eq!(rows(&page.body), ["F-1"], "in flight only by default");
    assert!(page.body.contains("Orders in flight"), "{}", page.body);
    let page = console.get("/?finished=1", Some(&token)).await;
    assert_eq!(rows(&page.body), ["F-3", "F-2", "F-1"], "longest waiting first, finished ones too");
    assert!(page.body.contains(r#"name="finished" value="1" checked"#), "{}", page.body);
    // A status asked for by name, or a search, is answered whatever the status.
    assert_eq!(rows(&console.get("/?status=cancelled", Some(&token)).await.body), ["F-3"]);
    assert_eq!(rows(&console.get("/?q=F-", Some(&token)).await.body).len(), 3);
    // The JSON API's parameter.
    let api = console.get("/api/v1/orders?exclude_status=handed_to_courier,cancelled", Some(&token)).await;
    let api: serde_json::Value = serde_json::from_str(&api.body).unwrap();
    assert_eq!(api["orders"].as_array().unwrap().len(), 1, "{api}");
}
