//! Browser sign-in (issue 13) against a real OpenID Connect provider (npm `oidc-provider`,
//! tests/signin/idp.mjs) and a real browser (Debian's chromium driven by npm
//! `playwright-core`, tests/signin/browser.js): the redirects, the provider's login form, the
//! session cookie and its flags, roles and their recheck, logout here and at the provider, and
//! the attacks the callback must refuse. Then a restart keeps the sessions (embedded store),
//! bearer tokens keep working beside sessions, and the audit log names every sign-in.
//! Two more tests take the roles from userinfo (with Jaeger UI behind `api.jaeger_ui`, read
//! with the session cookie) and from a JWT access token.
//! `scripts/test.sh` installs chromium, `npm ci`s tests/browser and builds Jaeger (`JAEGER_BIN`);
//! without them these tests fail.

mod common;
#[path = "common/auth.rs"]
mod fixture;
#[path = "common/signin.rs"]
mod harness;
#[path = "common/jaeger.rs"]
mod jaeger;

use std::path::Path;
use std::time::Duration;

use common::ports::free_port;
use common::send;
use harness::{audit_records, audited, browser_result, root, start_idp};
use serde_json::{json, Value};
use tracegate::{Config, Gateway};

const ORDER: &str = "A-5001";

/// A browser script of this test, with the order it reads and the recheck interval.
fn run_browser(script: &Path, public_url: &str, issuer: &str, env: &[(&str, String)]) -> std::process::Output {
    let mut env = env.to_vec();
    env.push(("ORDER", ORDER.to_string()));
    env.push(("RECHECK_MS", "2000".to_string()));
    harness::run_browser(script, public_url, issuer, &env)
}

fn check_tools() {
    harness::check_tools(&["oidc-provider", "playwright-core"]);
}

fn config(port: u16, issuer: &str, data: &Path) -> String {
    let mut yaml = format!(
        r#"
receivers:
  otlp:
    grpc: {{endpoint: "127.0.0.1:0"}}
    http: {{endpoint: "127.0.0.1:0"}}
exporters:
  local: {{type: embedded, path: "{data}", batch: {{max_wait: 5ms}}}}
api: {{endpoint: "127.0.0.1:{port}"}}
audit:
  path: "{data}/audit.jsonl"
  checkpoint_key: "audit-checkpoint-key-0123456789abcdef"
service:
  pipelines:
    traces: {{receivers: [otlp], exporters: [local]}}
"#,
        data = data.display()
    );
    yaml.push_str(&fixture::auth_yaml());
    yaml.push_str(&harness::login_yaml(port, issuer));
    yaml
}

async fn start(yaml: &str) -> Gateway {
    let config = Config::from_yaml(yaml).unwrap_or_else(|e| panic!("test config invalid: {e}"));
    Gateway::start(config).await.expect("gateway starts")
}

/// Dave, whose role the provider took away, lost access within the 2s recheck (and a request's
/// time); after the stop the audit file holds Sam's sign-in, Nora's refusal and the end of Dave's
/// session. The records, for more checks.
async fn dave_loses_access_and_sign_ins_are_audited(result: &Value, gateway: Gateway, data: &Path) -> Vec<Value> {
    assert_eq!(result["dave_after"]["status"], 401, "{}", result["dave_after"]);
    assert!(result["dave_after"]["after_ms"].as_u64().unwrap() <= 2000 + 1500, "Dave lost access late: {}", result["dave_after"]);
    gateway.shutdown().await;
    let records = audit_records(data);
    assert!(audited(&records, "login", "allowed", "sam"));
    assert!(audited(&records, "login", "refused", "nora"));
    assert!(audited(&records, "session.end", "ended", "dave"));
    records
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_sign_in_with_a_real_provider_and_a_real_browser() {
    check_tools();
    let port = free_port();
    let public_url = format!("http://127.0.0.1:{port}");
    let (_idp, issuer) = start_idp(&public_url, "all");
    let data = tempfile::tempdir().unwrap();
    let yaml = config(port, &issuer, data.path());
    let gateway = start(&yaml).await;
    assert_eq!(gateway.api_addr().unwrap().port(), port);

    // An order to read.
    let events = format!("http://{}/v1/order-events", gateway.http_addr().unwrap());
    let event = json!({"order_id": ORDER, "service": "shop-api", "status": "new", "stage": "created"});
    let (status, _, body) = send("POST", &events, &[("content-type", "application/json")], event.to_string().into_bytes()).await;
    assert!(status < 300, "order event refused: {status} {}", String::from_utf8_lossy(&body));
    let bearer = fixture::token(fixture::Idp::Keycloak, "kc-support", &["support"]);
    let order_url = format!("{public_url}/api/v1/orders/{ORDER}");
    let auth = format!("Bearer {bearer}");
    common::eventually("the order readable with a bearer token", Duration::from_secs(10), || async {
        common::when(send("GET", &order_url, &[("authorization", &auth)], vec![]).await.0, |&status| status == 200)
    })
    .await;

    // The browser half.
    let script = root().join("tests/signin/browser.js");
    let (public, iss) = (public_url.clone(), issuer.clone());
    let out = tokio::task::spawn_blocking(move || run_browser(&script, &public, &iss, &[])).await.unwrap();
    let result = browser_result(&out);

    // Support signs in at the provider's form and lands on the order it asked for.
    assert_eq!(result["login_redirected_to_idp"], true);
    assert_eq!(result["support_callback_status"], 303);
    assert_eq!(result["support_landed_on"], format!("{public_url}/api/v1/orders/{ORDER}"));
    assert_eq!(result["support_order_id"], ORDER);
    assert_eq!(result["support_read"], 200);
    assert_eq!(result["support_session"], json!({"subject": "sam", "roles": ["support"], "has_csrf": true}));
    // Over plain HTTP (loopback): no __Host- prefix, no Secure; always HttpOnly and Lax.
    assert_eq!(
        result["support_cookie"],
        json!({"name": "tracegate_session", "httpOnly": true, "secure": false, "sameSite": "Lax", "path": "/"})
    );
    let set_cookie = result["support_set_cookie"].as_str().unwrap();
    assert!(set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Lax") && !set_cookie.contains("Secure"), "{set_cookie}");
    // The same callback again: state is single-use; the session itself is untouched.
    assert_eq!(result["replayed_state_status"], 400);
    assert_eq!(result["support_read_after_replay"], 200);
    // Logout: refused cross-site, done from our page, then at the provider, and the session is over.
    assert_eq!(result["cross_site_logout_status"], 403);
    assert_eq!(result["support_read_after_cross_site_logout"], 200);
    assert_eq!(result["logout_went_to_idp"], true);
    assert_eq!(result["logout_back_at"], format!("{public_url}/"));
    assert_eq!(result["cookie_after_logout"], false);
    assert_eq!(result["support_read_after_logout"], 401);
    // No role, no session.
    assert_eq!(result["norole_callback_status"], 403);
    assert_eq!(result["norole_read"], 401);
    assert_eq!(result["norole_cookie"], false);
    // Admin; a cross-site state change with the cookie is refused.
    assert_eq!(result["admin_audit"], 200);
    assert_eq!(result["admin_config"], 200);
    assert_eq!(result["admin_cross_site_reload"], 403);
    assert_ne!(result["admin_same_origin_reload"], 403);
    assert_ne!(result["admin_same_origin_reload"], 401);
    // Disabled account and removed role: access ends within recheck (2 s, plus a request).
    assert_eq!(result["carol_before"], 200);
    assert_eq!(result["dave_before"], 200);
    for who in ["carol_after", "dave_after"] {
        assert_eq!(result[who]["status"], 401, "{who}: {}", result[who]);
        assert!(result[who]["after_ms"].as_u64().unwrap() <= 2000 + 1500, "{who} lost access late: {}", result[who]);
    }
    assert_eq!(result["carol_after_again"], 401);
    // Wrong nonce, a code for another client: refused, no session.
    assert_eq!(result["wrong_nonce_status"], 400);
    assert_eq!(result["wrong_nonce_cookie"], false);
    assert_eq!(result["other_client_status"], 400);
    assert_eq!(result["other_client_cookie"], false);
    // A sign-in started by another browser (login CSRF).
    assert_eq!(result["foreign_state_status"], 400);
    assert_eq!(result["foreign_state_cookie"], false);
    // ?next= never leaves the site.
    for key in ["next_absolute", "next_scheme_relative", "next_backslash"] {
        assert_eq!(result[key], format!("{public_url}/"), "{key}");
    }

    // Bearer tokens and X-Forwarded-Access-Token keep working beside sessions, with the same
    // role table; a bearer token is used when both are sent.
    let admin_cookie = result["admin_cookie_value"].as_str().expect("the admin's session cookie").to_string();
    // The session id is opaque: 32 random bytes, base64url, not a token.
    assert_eq!(admin_cookie.len(), 43);
    assert!(!admin_cookie.contains('.'));
    let cookie = format!("tracegate_session={admin_cookie}");
    let support = format!("Bearer {bearer}");
    assert_eq!(send("GET", &order_url, &[("x-forwarded-access-token", &bearer)], vec![]).await.0, 200);
    assert_eq!(
        send("GET", &format!("{public_url}/api/v1/audit"), &[("authorization", &support), ("cookie", &cookie)], vec![]).await.0,
        403
    );
    assert_eq!(send("GET", &format!("{public_url}/api/v1/audit"), &[("cookie", &cookie)], vec![]).await.0, 200);
    assert_eq!(send("GET", &order_url, &[("cookie", "tracegate_session=forged")], vec![]).await.0, 401);

    // A restart keeps the admin's session (embedded store); the store holds no session id.
    gateway.shutdown().await;
    let store = std::fs::read(data.path().join("spans.db")).unwrap();
    let wal = std::fs::read(data.path().join("spans.db-wal")).unwrap_or_default();
    for bytes in [&store, &wal] {
        assert!(!bytes.windows(admin_cookie.len()).any(|w| w == admin_cookie.as_bytes()), "a session id is stored in clear");
    }
    let gateway = start(&yaml).await;
    assert_eq!(send("GET", &order_url, &[("cookie", &cookie)], vec![]).await.0, 200, "the session survives a restart");
    gateway.shutdown().await;

    // Every sign-in, refusal, logout and ended session is in the audit log.
    let records = audit_records(data.path());
    assert!(audited(&records, "login", "allowed", "sam"));
    assert!(audited(&records, "login", "allowed", "ada"));
    assert!(audited(&records, "login", "refused", "nora"));
    assert!(audited(&records, "logout", "allowed", "sam"));
    assert!(audited(&records, "session.end", "ended", "carol"));
    assert!(audited(&records, "session.end", "ended", "dave"));
    let refused = |text: &str| {
        records.iter().any(|r| {
            r["action"] == "login" && r["outcome"] == "refused" && r["reason"].as_str().is_some_and(|reason| reason.contains(text))
        })
    };
    assert!(refused("already used state"), "the replayed state is audited with its reason");
    assert!(refused("nonce does not match"), "the wrong nonce is audited with its reason");
    assert!(refused("invalid_grant"), "the other client's code is refused by the provider and audited");
    assert!(refused("no support or admin role"));
    assert!(refused("not started by this browser"), "login CSRF is audited with its reason");
    assert!(records.iter().any(|r| r["action"] == "logout" && r["outcome"] == "forbidden"), "the cross-site logout is audited");
    let refused_unknown = records.iter().filter(|r| r["action"] == "login" && r["outcome"] == "refused").count();
    assert!(refused_unknown >= 4, "replayed state, wrong nonce, other client and no role are audited: {refused_unknown}");
}

/// The second provider setup: roles only in userinfo (`roles.from: userinfo`), and Jaeger UI
/// behind the gateway (`api.jaeger_ui`) read with the browser's session cookie. Needs
/// `JAEGER_BIN` (scripts/test.sh sets it); without it this test fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_from_userinfo_and_jaeger_ui_through_a_browser_session() {
    check_tools();
    let bin = jaeger::jaeger_bin("signin: jaeger_ui through a browser session")
        .expect("JAEGER_BIN is not set: run `bash scripts/test.sh`, or `export JAEGER_BIN=$(bash scripts/jaeger/install.sh)`");
    let jaeger_dir = tempfile::tempdir().unwrap();
    let jaeger = jaeger::Jaeger::start_with(&bin, jaeger_dir.path(), &[("JAEGER_QUERY_BASE_PATH", "/jaeger")]);

    let port = free_port();
    let public_url = format!("http://127.0.0.1:{port}");
    let (_idp, issuer) = start_idp(&public_url, "userinfo");
    let data = tempfile::tempdir().unwrap();
    let yaml = jaeger
        .exporting_to_it(&config(port, &issuer, data.path()))
        .replace("roles: {claims: [/roles]", "roles: {from: userinfo, claims: [/roles]")
        .replace(
            &format!("api: {{endpoint: \"127.0.0.1:{port}\"}}"),
            &format!(
                "api:\n  endpoint: \"127.0.0.1:{port}\"\n  jaeger_ui: {{upstream: \"{}\", path: /jaeger, timeout: 10s}}",
                jaeger.ports.ui_url()
            ),
        )
        .replace("  leeway: 5s\n", "  leeway: 5s\n  personal_data: {pseudonym_key: \"pseudonym-key-0123456789abcdefghijkl\"}\n");
    for part in ["from: userinfo", "jaeger_ui:", "exporters: [jaeger, local]", "pseudonym_key"] {
        assert!(yaml.contains(part), "the test config lost {part:?}: {yaml}");
    }
    let gateway = start(&yaml).await;

    // A span with personal data, through the gateway to Jaeger (which keeps it in clear).
    const EMAIL: &str = "pat.personal@example.com";
    const USER_ID: &str = "u-7070-personal";
    let trace_id = "7a".repeat(16);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    let attr = |k: &str, v: &str| json!({"key": k, "value": {"stringValue": v}});
    let spans = json!({"resourceSpans": [{
        "resource": {"attributes": [attr("service.name", "shop-api")]},
        "scopeSpans": [{"spans": [{
            "traceId": trace_id, "spanId": "0707070707070707", "name": "POST /orders", "kind": 2,
            "startTimeUnixNano": (now - 2_000_000_000).to_string(), "endTimeUnixNano": (now - 1_900_000_000).to_string(),
            "attributes": [attr("order.id", "A-7001"), attr("enduser.id", USER_ID), attr("user.email", EMAIL)]
        }]}]
    }]});
    let traces = format!("http://{}/v1/traces", gateway.http_addr().unwrap());
    let (status, _, body) = send("POST", &traces, &[("content-type", "application/json")], spans.to_string().into_bytes()).await;
    assert_eq!(status, 200, "spans refused: {}", String::from_utf8_lossy(&body));
    let direct = format!("{}/jaeger/api/traces/{trace_id}", jaeger.ports.ui_url());
    common::eventually("Jaeger holding the trace in clear", Duration::from_secs(10), || async {
        match common::get_json(&direct).await {
            (200, body) if body.to_string().contains(USER_ID) => Ok(()),
            (status, body) => Err(format!("{status} {body}; Jaeger's log:\n{}", jaeger.logs())),
        }
    })
    .await;

    let script = root().join("tests/signin/jaeger.js");
    let (public, iss, trace) = (public_url.clone(), issuer.clone(), trace_id.clone());
    let out = tokio::task::spawn_blocking(move || run_browser(&script, &public, &iss, &[("TRACE", trace)])).await.unwrap();
    let result = browser_result(&out);

    // No session: the proxy answers 401 (API and UI page alike), no redirect to /login.
    assert_eq!(result["anon_services"], json!({"status": 401, "location": null}));
    assert_eq!(result["anon_ui"], json!({"status": 401, "url": format!("{public_url}/jaeger/")}));
    // Support's roles come from userinfo (the ID token has none); Jaeger is read with the cookie.
    assert_eq!(result["support_callback_status"], 303);
    assert_eq!(result["support_landed_on"], format!("{public_url}/jaeger/api/services"));
    assert_eq!(result["support_roles"], json!(["support"]));
    assert_eq!(result["support_services"]["status"], 200);
    let services: Value = serde_json::from_str(result["support_services"]["body"].as_str().unwrap()).unwrap();
    assert!(services["data"].as_array().unwrap().iter().any(|s| s == "shop-api"), "{services}");
    assert_eq!(result["support_trace"]["status"], 200);
    let shown = result["support_trace"]["body"].as_str().unwrap();
    let trace: Value = serde_json::from_str(shown).unwrap();
    assert_eq!(trace["data"][0]["traceID"], trace_id);
    assert!(shown.contains("A-7001") && shown.contains("pseud:"), "{shown}");
    for secret in [USER_ID, EMAIL] {
        assert!(!shown.contains(secret), "{secret:?} shown to support through the proxy: {shown}");
    }
    assert_eq!(result["support_ui"], json!({"status": 200, "base": "/jaeger/"}));
    assert_eq!(result["support_archive"], 403);
    // No role in userinfo: refused at sign-in.
    assert_eq!(result["norole_callback_status"], 403);
    assert_eq!(result["norole_cookie"], false);
    assert_eq!(result["norole_services"], 401);
    // Cross-site with the admin's cookie: archive and unmask refused; from our origin they pass.
    assert_eq!(result["admin_cross_site_archive"], 403);
    assert_eq!(result["admin_cross_site_unmask"], 403);
    assert!(![401, 403].contains(&result["admin_same_origin_archive"].as_u64().unwrap()), "{}", result["admin_same_origin_archive"]);
    assert_eq!(result["admin_same_origin_unmask"]["status"], 200);
    assert!(result["admin_same_origin_unmask"]["body"].as_str().unwrap().contains(USER_ID));
    // Dave's role removed at the provider: userinfo tells at the next recheck.
    assert_eq!(result["dave_before"], 200);
    let records = dave_loses_access_and_sign_ins_are_audited(&result, gateway, data.path()).await;
    let cross_site = records.iter().filter(|r| r["outcome"] == "forbidden" && r["actor"]["sub"] == "ada").count();
    assert!(cross_site >= 2, "both cross-site requests are audited");
    assert!(records.iter().any(|r| r["action"] == "jaeger.trace.read" && r["actor"]["sub"] == "sam" && r["outcome"] == "allowed"));
}

/// Roles only in a JWT access token (`roles.from: access_token`): oidc-provider issues JWT
/// access tokens for a resource indicator that every sign-in and refresh defaults to; neither
/// the ID token nor userinfo carries the roles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_from_a_jwt_access_token() {
    check_tools();
    let port = free_port();
    let public_url = format!("http://127.0.0.1:{port}");
    let (_idp, issuer) = start_idp(&public_url, "access_token");
    let data = tempfile::tempdir().unwrap();
    let yaml = config(port, &issuer, data.path()).replace("roles: {claims: [/roles]", "roles: {from: access_token, claims: [/roles]");
    assert!(yaml.contains("from: access_token"), "{yaml}");
    let gateway = start(&yaml).await;

    let script = root().join("tests/signin/roles.js");
    let (public, iss) = (public_url.clone(), issuer.clone());
    let out = tokio::task::spawn_blocking(move || run_browser(&script, &public, &iss, &[])).await.unwrap();
    let result = browser_result(&out);
    assert_eq!(result["support_callback_status"], 303);
    assert_eq!(result["support_session"], json!({"status": 200, "roles": ["support"]}));
    assert_eq!(result["norole_callback_status"], 403);
    assert_eq!(result["norole_session"], 401);
    assert_eq!(result["dave_before"], 200);
    assert_eq!(result["dave_after_refresh"], json!({"status": 200, "roles": ["support"]}), "the refreshed access token keeps the role");
    dave_loses_access_and_sign_ins_are_audited(&result, gateway, data.path()).await;
}
