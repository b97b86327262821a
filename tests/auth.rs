//! Authentication and authorization at every door: tokens minted by PyJWT for issuers shaped
//! like Keycloak, Entra ID, Okta and Auth0; the attacks a verifier must refuse; the endpoint x
//! role matrix; service identity on OTLP/gRPC, OTLP/HTTP and order events.

mod common;
#[path = "common/auth.rs"]
mod fixture;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{send, start_gateway};
use fixture::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use serde_json::json;

async fn get(api: SocketAddr, path: &str, token: Option<&str>) -> (u16, http::HeaderMap, Vec<u8>) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    send("GET", &format!("http://{api}{path}"), &headers, vec![]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_from_four_identity_providers_get_their_roles() {
    let (gateway, _dir) = start_gateway(&secured_config()).await;
    let api = gateway.api_addr().unwrap();
    let mut specs = Vec::new();
    for idp in IDPS {
        specs.push(spec(idp, claims(idp, "sam", &["support"])));
        specs.push(spec(idp, claims(idp, "ada", &["admin"])));
        specs.push(spec(idp, claims(idp, "nobody", &[])));
    }
    let tokens = mint(&specs);
    for (i, idp) in IDPS.iter().enumerate() {
        let (support, admin, nobody) = (&tokens[3 * i], &tokens[3 * i + 1], &tokens[3 * i + 2]);
        assert_eq!(get(api, "/api/v1/orders", Some(support)).await.0, 200, "{idp:?} support reads orders");
        assert_eq!(get(api, "/api/v1/audit", Some(support)).await.0, 403, "{idp:?} support may not read the audit");
        assert_eq!(get(api, "/api/v1/orders", Some(admin)).await.0, 200, "{idp:?} admin reads orders");
        assert_eq!(get(api, "/api/v1/audit", Some(admin)).await.0, 200, "{idp:?} admin reads the audit");
        assert_eq!(get(api, "/api/v1/orders", Some(nobody)).await.0, 403, "{idp:?} an account without a role");
    }
    gateway.shutdown().await;
}

/// Every endpoint x every method x every kind of caller. The expectations are written here, apart from the
/// policy table: an endpoint added without a line here fails this test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_for_every_role() {
    // path as routed, a concrete request, and the status per caller:
    // [no token, bad token, service, support, admin]
    let expected: &[(&str, &str, [u16; 5])] = &[
        ("/healthz", "/healthz", [200, 200, 200, 200, 200]),
        ("/readyz", "/readyz", [200, 200, 200, 200, 200]),
        ("/metrics", "/metrics", [200, 200, 200, 200, 200]),
        ("/api/v1/traces/{trace_id}", "/api/v1/traces/0102030405060708090a0b0c0d0e0f10", [401, 401, 403, 404, 404]),
        ("/api/v1/orders", "/api/v1/orders", [401, 401, 403, 200, 200]),
        ("/api/v1/orders/{order_id}", "/api/v1/orders/A-1001", [401, 401, 403, 404, 404]),
        ("/api/v1/alerts", "/api/v1/alerts", [401, 401, 403, 200, 200]),
        ("/api/v1/audit", "/api/v1/audit", [401, 401, 403, 403, 200]),
        ("/api/v1/admin/config", "/api/v1/admin/config", [401, 401, 403, 403, 200]),
        // POST; a gateway started from memory has no file to reload (503) — see tests/reload.rs.
        ("/api/v1/admin/reload", "/api/v1/admin/reload", [401, 401, 403, 403, 503]),
        // The Jaeger-compatible query API (tests/jaeger_api.rs); nothing is stored here.
        ("/api/services", "/api/services", [401, 401, 403, 200, 200]),
        ("/api/services/{service}/operations", "/api/services/shop-api/operations", [401, 401, 403, 200, 200]),
        ("/api/operations", "/api/operations?service=shop-api", [401, 401, 403, 200, 200]),
        ("/api/traces", "/api/traces?service=shop-api", [401, 401, 403, 200, 200]),
        ("/api/traces/{trace_id}", "/api/traces/0102030405060708090a0b0c0d0e0f10", [401, 401, 403, 404, 404]),
        ("/api/dependencies", "/api/dependencies", [401, 401, 403, 200, 200]),
        ("/api/v3/services", "/api/v3/services", [401, 401, 403, 200, 200]),
        ("/api/v3/operations", "/api/v3/operations?service=shop-api", [401, 401, 403, 200, 200]),
        (
            "/api/v3/traces",
            "/api/v3/traces?query.start_time_min=2026-01-01T00:00:00Z&query.start_time_max=2026-01-02T00:00:00Z",
            [401, 401, 403, 404, 404],
        ),
        ("/api/v3/traces/{trace_id}", "/api/v3/traces/0102030405060708090a0b0c0d0e0f10", [401, 401, 403, 404, 404]),
        // Browser sign-in (tests/signin.rs): open doors, absent without auth.login.
        ("/login", "/login", [404, 404, 404, 404, 404]),
        ("/auth/callback", "/auth/callback", [404, 404, 404, 404, 404]),
        ("/logout", "/logout", [404, 404, 404, 404, 404]),
        ("/auth/session", "/auth/session", [404, 404, 404, 404, 404]),
        // The support console (tests/console.rs): the same roles, answered with HTML pages.
        ("/static/{file}", "/static/console.css", [200, 200, 200, 200, 200]),
        ("/", "/", [401, 401, 403, 200, 200]),
        ("/orders/{order_id}", "/orders/A-1001", [401, 401, 403, 404, 404]),
        ("/traces/{trace_id}", "/traces/0102030405060708090a0b0c0d0e0f10", [401, 401, 403, 404, 404]),
        // POST without a reason: support may not unmask at all, admin must give a reason.
        ("/traces/{trace_id}/unmask", "/traces/0102030405060708090a0b0c0d0e0f10/unmask", [401, 401, 403, 403, 400]),
        ("/alerts", "/alerts", [401, 401, 403, 200, 200]),
        ("/admin", "/admin", [401, 401, 403, 403, 200]),
        ("/admin/reload", "/admin/reload", [401, 401, 403, 403, 503]),
    ];
    let post_routes = ["/api/v1/admin/reload", "/logout", "/traces/{trace_id}/unmask", "/admin/reload"];
    let mut routed: Vec<&str> = tracegate::auth::API_ROUTES.iter().map(|r| r.path).collect();
    let mut listed: Vec<&str> = expected.iter().map(|e| e.0).collect();
    routed.sort();
    listed.sort();
    assert_eq!(routed, listed, "every API route needs a line in this matrix (and a rule in auth::API_ROUTES)");

    let (gateway, dir) = start_gateway(&secured_config()).await;
    let api = gateway.api_addr().unwrap();
    let idp = Idp::Keycloak;
    let mut bad = claims(idp, "mallory", &["admin"]);
    bad["aud"] = json!("someone-else");
    let tokens = mint(&[
        spec(idp, bad),
        spec(idp, service_claims(idp, "shop-api")),
        spec(idp, claims(idp, "sam", &["support"])),
        spec(idp, claims(idp, "ada", &["admin"])),
    ]);
    let callers: [Option<&str>; 5] = [None, Some(&tokens[0]), Some(&tokens[1]), Some(&tokens[2]), Some(&tokens[3])];
    let names = ["no token", "bad token", "service", "support", "admin"];
    let mut failures = Vec::new();
    // Every method a router can be asked for: HEAD gets GET's decision (axum answers it with the
    // GET handler), any other method on these GET routes is refused like a path without a rule
    // (401 without a valid token, then 405) — never the handler.
    let methods = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"];
    let unrouted = [401, 401, 405, 405, 405];
    for (route, path, statuses) in expected {
        for method in methods {
            let routed = if post_routes.contains(route) { method == "POST" } else { matches!(method, "GET" | "HEAD") };
            let want = if routed { statuses } else { &unrouted };
            for (i, caller) in callers.iter().enumerate() {
                let auth = caller.map(|t| format!("Bearer {t}"));
                let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
                let (status, response_headers, body) = send(method, &format!("http://{api}{path}"), &headers, vec![]).await;
                if status != want[i] {
                    failures.push(format!("{method} {route} as {}: {status}, expected {}", names[i], want[i]));
                }
                if status == 401 && response_headers.get("www-authenticate").is_none() {
                    failures.push(format!("{method} {route} as {}: 401 without WWW-Authenticate", names[i]));
                }
                if method == "HEAD" && !body.is_empty() {
                    failures.push(format!("HEAD {route} as {}: a body of {} bytes", names[i], body.len()));
                }
            }
        }
    }
    // A path no rule covers is refused to callers without a token too.
    assert_eq!(get(api, "/api/v1/secret-new-endpoint", None).await.0, 401);
    assert_eq!(get(api, "/api/v1/secret-new-endpoint", callers[4]).await.0, 404);
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    assert!(audit.contains("\"action\":\"api.unmatched\""), "a request no rule allows is audited");
    assert!(failures.is_empty(), "{failures:#?}");
    // HEAD is audited like GET: support asking for the audit log is refused twice (GET, HEAD),
    // admin reads it twice.
    let records: Vec<serde_json::Value> = audit.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let count = |action: &str, outcome: &str, sub: &str| {
        records.iter().filter(|r| r["action"] == action && r["outcome"] == outcome && r["actor"]["sub"] == sub).count()
    };
    assert_eq!(count("audit.read", "forbidden", "sam"), 2);
    assert!(count("audit.read", "allowed", "ada") >= 2, "GET and HEAD of the audit by admin are both audited");
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_tokens_are_refused() {
    // A server the `jku` header points at: it must never be asked for anything.
    let jku_server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jku_addr = jku_server.local_addr().unwrap();
    let jku_hits = Arc::new(AtomicUsize::new(0));
    let hits = jku_hits.clone();
    tokio::spawn(async move {
        while let Ok((_conn, _)) = jku_server.accept().await {
            hits.fetch_add(1, Ordering::SeqCst);
        }
    });

    let (gateway, _dir) = start_gateway(&secured_config()).await;
    let api = gateway.api_addr().unwrap();
    let k = keys();
    let kc = Idp::Keycloak;
    let good = claims(kc, "ada", &["admin"]);
    let with = |key: &str, value: serde_json::Value| {
        let mut c = good.clone();
        c[key] = value;
        c
    };
    let without = |key: &str| {
        let mut c = good.clone();
        c.as_object_mut().unwrap().remove(key);
        c
    };
    let rsa =
        |claims: serde_json::Value| json!({"alg": "RS256", "key_file": k.private("rsa"), "headers": {"kid": "kc-1"}, "claims": claims});
    let cases: Vec<(&str, serde_json::Value)> = vec![
        ("alg none", json!({"alg": "none", "craft": "none", "claims": good})),
        ("alg noNE", json!({"alg": "noNE", "craft": "none", "claims": good})),
        (
            "HS256 signed with the RSA public key",
            json!({"craft": "hmac_with_file", "key_file": k.public("rsa"), "headers": {"kid": "kc-1"}, "claims": good}),
        ),
        ("unknown kid", json!({"alg": "RS256", "key_file": k.private("rsa"), "headers": {"kid": "kc-404"}, "claims": good})),
        ("another key, same kid", json!({"alg": "RS256", "key_file": k.private("rsa2"), "headers": {"kid": "kc-1"}, "claims": good})),
        ("expired", rsa(with("exp", json!(now() - 120)))),
        ("nbf in the future", rsa(with("nbf", json!(now() + 120)))),
        ("wrong iss", rsa(with("iss", json!("https://evil.test/realms/shop")))),
        ("wrong aud", rsa(with("aud", json!("grafana")))),
        ("missing sub", rsa(without("sub"))),
        ("missing exp", rsa(without("exp"))),
        ("exp as a string", rsa(with("exp", json!((now() + 300).to_string())))),
        ("nbf as a string", rsa(with("nbf", json!("0")))),
        ("sub as a number", rsa(with("sub", json!(42)))),
        ("lifetime beyond max_token_lifetime", rsa(with("exp", json!(now() + 7200)))),
        (
            "jku pointing at the attacker",
            json!({"alg": "RS256", "key_file": k.private("rsa2"),
            "headers": {"kid": "kc-1", "jku": format!("http://{jku_addr}/jwks.json")}, "claims": good}),
        ),
        (
            "jwk embedded by the attacker",
            json!({"alg": "RS256", "key_file": k.private("rsa2"),
            "headers": {"kid": "attacker", "jwk": {"kty": "RSA", "n": "AQAB", "e": "AQAB"}}, "claims": good}),
        ),
    ];
    let tokens = mint(&cases.iter().map(|(_, s)| s.clone()).collect::<Vec<_>>());
    let mut accepted = Vec::new();
    for ((name, _), token) in cases.iter().zip(&tokens) {
        let (status, headers, _) = get(api, "/api/v1/orders", Some(token)).await;
        if status != 401 || headers.get("www-authenticate").is_none() {
            accepted.push(format!("{name}: {status}"));
        }
    }
    assert!(accepted.is_empty(), "hostile tokens not refused with 401: {accepted:#?}");

    // The control: the same claims, properly signed, pass.
    let valid = mint(&[rsa(good.clone())]).remove(0);
    assert_eq!(get(api, "/api/v1/orders", Some(&valid)).await.0, 200);
    // ... but never from the query string, and never from an oversized header.
    assert_eq!(get(api, &format!("/api/v1/orders?access_token={valid}"), None).await.0, 401);
    let huge = format!("{valid}{}", "A".repeat(16 * 1024));
    assert_eq!(get(api, "/api/v1/orders", Some(&huge)).await.0, 401);
    // oauth2-proxy's header works.
    let (status, _, _) = send("GET", &format!("http://{api}/api/v1/orders"), &[("x-forwarded-access-token", valid.as_str())], vec![]).await;
    assert_eq!(status, 200);
    assert_eq!(jku_hits.load(Ordering::SeqCst), 0, "the verifier fetched the token's jku");
    gateway.shutdown().await;
}

async fn post(url: &str, headers: Vec<(&'static str, String)>, body: Vec<u8>) -> u16 {
    let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    send("POST", url, &h, body).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_send_only_their_own_spans_over_grpc_and_http() {
    let (gateway, _dir) = start_gateway(&secured_config()).await;
    let grpc = format!("http://{}", gateway.grpc_addr().unwrap());
    let http = format!("http://{}/v1/traces", gateway.http_addr().unwrap());
    let events = format!("http://{}/v1/order-events", gateway.http_addr().unwrap());
    let idp = Idp::Entra;
    let tokens = mint(&[
        spec(idp, service_claims(idp, "shop-api")),
        spec(idp, service_claims(idp, "mes-api")),
        spec(idp, claims(idp, "sam", &["support"])),
    ]);
    let (shop, mes, support) = (&tokens[0], &tokens[1], &tokens[2]);

    let mut client = TraceServiceClient::connect(grpc).await.unwrap();
    let call = |token: Option<&str>, service: &str| {
        let mut req = tonic::Request::new(service_request(service));
        if let Some(t) = token {
            req.metadata_mut().insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        req
    };
    assert_eq!(client.export(call(None, "shop-api")).await.unwrap_err().code(), tonic::Code::Unauthenticated);
    assert_eq!(client.export(call(Some("eyJ.garbage.x"), "shop-api")).await.unwrap_err().code(), tonic::Code::Unauthenticated);
    assert_eq!(client.export(call(Some(support), "shop-api")).await.unwrap_err().code(), tonic::Code::PermissionDenied);
    assert_eq!(client.export(call(Some(shop), "crm-api")).await.unwrap_err().code(), tonic::Code::PermissionDenied, "Shop posing as CRM");
    client.export(call(Some(shop), "shop-api")).await.expect("Shop sends its own spans");

    let pb = |token: &str| vec![("content-type", "application/x-protobuf".to_string()), ("authorization", format!("Bearer {token}"))];
    let body = service_request("shop-api").encode_to_vec();
    assert_eq!(post(&http, vec![("content-type", "application/x-protobuf".into())], body.clone()).await, 401);
    assert_eq!(post(&http, pb(support), body.clone()).await, 403);
    assert_eq!(post(&http, pb(mes), body.clone()).await, 403, "MES posing as Shop");
    assert_eq!(post(&http, pb(shop), body).await, 200);

    let event = |service: &str| serde_json::to_vec(&json!({"order_id": "A-1001", "service": service, "status": "manufactured"})).unwrap();
    let js = |token: &str| vec![("content-type", "application/json".to_string()), ("authorization", format!("Bearer {token}"))];
    assert_eq!(post(&events, vec![("content-type", "application/json".into())], event("mes-api")).await, 401);
    assert_eq!(post(&events, js(mes), event("crm-api")).await, 403);
    assert_eq!(post(&events, js(mes), event("mes-api")).await, 200);
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listening_beyond_loopback_without_auth_is_refused_unless_acknowledged() {
    let open = |ack: bool| {
        format!(
            r#"
receivers:
  otlp: {{http: {{endpoint: "0.0.0.0:0"}}}}
exporters:
  debug: {{}}
api: {{endpoint: "127.0.0.1:0"}}
auth: {{allow_unauthenticated_non_loopback: {ack}}}
service:
  pipelines:
    traces: {{receivers: [otlp], exporters: [debug]}}
"#
        )
    };
    let config = tracegate::Config::from_yaml(&open(false)).unwrap();
    let error = tracegate::Gateway::start(config).await.err().expect("refused");
    assert!(error.to_string().contains("receivers.otlp.http would listen on 0.0.0.0:0 beyond loopback"), "{error}");
    let config = tracegate::Config::from_yaml(&open(true)).unwrap();
    let gateway = tracegate::Gateway::start(config).await.expect("acknowledged");
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_config_view_redacts_secrets() {
    let (gateway, _dir) = start_gateway(&secured_config()).await;
    let api = gateway.api_addr().unwrap();
    let admin = token(Idp::Okta, "ada", &["admin"]);
    let (status, _, body) = get(api, "/api/v1/admin/config", Some(&admin)).await;
    assert_eq!(status, 200);
    let text = String::from_utf8(body).unwrap();
    assert!(!text.contains(AUTH0_SECRET), "the HMAC secret leaked: {text}");
    assert!(!text.contains("audit-checkpoint-key"), "the checkpoint key leaked");
    let view: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(view["auth"]["issuers"][3]["keys"][0]["secret"], "<redacted>");
    assert_eq!(view["auth"]["issuers"][0]["issuer"], Idp::Keycloak.issuer());
    gateway.shutdown().await;
}

#[test]
fn every_deployment_example_requires_jwts() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        // The audit key has no default in any example (tests/config_files.rs checks that).
        let env = |name: &str| match name {
            "TRACEGATE_AUDIT_CHECKPOINT_KEY" => Some("k".repeat(32)),
            "TRACEGATE_OIDC_CLIENT_SECRET" => Some("an-oidc-client-secret".to_string()),
            // Key files must exist for a configuration to be valid; any readable file will do here.
            "TRACEGATE_OIDC_PUBLIC_KEY" | "TRACEGATE_JOBS_SECRET_FILE" => Some(env!("CARGO_MANIFEST_DIR").to_string() + "/Cargo.toml"),
            _ => None,
        };
        let config = tracegate::Config::from_yaml_with_env(&std::fs::read_to_string(&path).unwrap(), &env)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(config.auth.enabled(), "{}: the API must require JWTs", path.display());
        for (id, r) in &config.receivers {
            // A rabbitmq receiver takes no tokens: the broker's own accounts guard the bus.
            let tracegate::config::ReceiverConfig::Otlp(c) = r else { continue };
            assert_eq!(c.auth, tracegate::receivers::ReceiverAuth::Jwt, "{}: receiver {id} must require service tokens", path.display());
        }
    }
    let default = tracegate::Config::default_config().unwrap();
    assert!(!default.auth.enabled(), "the built-in default stays unauthenticated (loopback only)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_over_its_rate_is_throttled_the_otlp_way() {
    let yaml = secured_config().replace("    auth: jwt\n", "    auth: jwt\n    rate_limit: {spans_per_second: 1, burst: 2}\n");
    let (gateway, _dir) = start_gateway(&yaml).await;
    let http = format!("http://{}/v1/traces", gateway.http_addr().unwrap());
    let idp = Idp::Auth0;
    let tokens = mint(&[spec(idp, service_claims(idp, "shop-api")), spec(idp, service_claims(idp, "crm-api"))]);
    let pb = |token: &str| vec![("content-type", "application/x-protobuf".to_string()), ("authorization", format!("Bearer {token}"))];
    assert_eq!(post(&http, pb(&tokens[0]), service_request("shop-api").encode_to_vec()).await, 200);
    assert_eq!(post(&http, pb(&tokens[0]), service_request("shop-api").encode_to_vec()).await, 200);
    let h = pb(&tokens[0]);
    let headers: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, reply_headers, _) = send("POST", &http, &headers, service_request("shop-api").encode_to_vec()).await;
    assert_eq!(status, 429, "the third span within a second");
    assert!(reply_headers.get("retry-after").is_some());
    assert_eq!(post(&http, pb(&tokens[1]), service_request("crm-api").encode_to_vec()).await, 200, "CRM has its own budget");

    let mut client = TraceServiceClient::connect(format!("http://{}", gateway.grpc_addr().unwrap())).await.unwrap();
    let mut req = tonic::Request::new(service_request("shop-api"));
    req.metadata_mut().insert("authorization", format!("Bearer {}", tokens[0]).parse().unwrap());
    let status = client.export(req).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    use tonic_types::StatusExt;
    assert!(status.get_details_retry_info().and_then(|r| r.retry_delay).is_some(), "RetryInfo tells the SDK when to come back");
    gateway.shutdown().await;
}

/// OTLP/HTTP turns a token away the OTLP way, in the encoding the client sent: 401 / 403 with a
/// `google.rpc.Status` (UNAUTHENTICATED / PERMISSION_DENIED, as gRPC answers) as protobuf or
/// JSON, what an SDK decodes and logs; the 401 keeps its challenge and every refusal is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_http_refuses_tokens_with_a_google_rpc_status_in_the_request_encoding() {
    let (gateway, dir) = start_gateway(&secured_config()).await;
    let http = format!("http://{}/v1/traces", gateway.http_addr().unwrap());
    let idp = Idp::Okta;
    let tokens = mint(&[spec(idp, service_claims(idp, "shop-api")), spec(idp, claims(idp, "sam", &["support"]))]);
    let (shop, reader) = (tokens[0].as_str(), tokens[1].as_str());
    let request = service_request("shop-api");
    let bodies = [("application/x-protobuf", request.encode_to_vec()), ("application/json", serde_json::to_vec(&request).unwrap())];
    let refusals = [
        (None, 401, tonic::Code::Unauthenticated, "a bearer token is required"),
        (Some("eyJ.garbage.x"), 401, tonic::Code::Unauthenticated, "the bearer token is not valid"),
        (Some(reader), 403, tonic::Code::PermissionDenied, "the token does not grant this permission"),
    ];
    for (content_type, body) in &bodies {
        for (token, want_status, want_code, want_message) in refusals {
            let what = format!("{content_type} with token {token:?}");
            let auth = token.map(|t| format!("Bearer {t}"));
            let mut headers = vec![("content-type", *content_type)];
            headers.extend(auth.as_deref().map(|a| ("authorization", a)));
            let (status, reply_headers, reply) = send("POST", &http, &headers, body.clone()).await;
            assert_eq!(status, want_status, "{what}");
            assert_eq!(reply_headers.get("content-type").and_then(|v| v.to_str().ok()), Some(*content_type), "{what}");
            let rpc = match *content_type {
                "application/x-protobuf" => tonic_types::Status::decode(reply.as_slice()).expect("a protobuf google.rpc.Status"),
                _ => {
                    let json: serde_json::Value = serde_json::from_slice(&reply).expect("a JSON google.rpc.Status");
                    tonic_types::Status {
                        code: json["code"].as_i64().expect("a numeric code") as i32,
                        message: json["message"].as_str().expect("a message").to_string(),
                        details: vec![],
                    }
                }
            };
            assert_eq!((rpc.code, rpc.message.as_str()), (want_code as i32, want_message), "{what}");
            assert_eq!(reply_headers.contains_key("www-authenticate"), want_status == 401, "{what}: the challenge is on 401 only");
        }
        let auth = format!("Bearer {shop}");
        let (status, reply_headers, _) =
            send("POST", &http, &[("content-type", *content_type), ("authorization", auth.as_str())], body.clone()).await;
        assert_eq!(status, 200, "{content_type}: the shop sends its own spans");
        assert_eq!(reply_headers.get("content-type").and_then(|v| v.to_str().ok()), Some(*content_type));
    }
    gateway.shutdown().await;

    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    let records: Vec<serde_json::Value> = audit.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let count = |action: &str, outcome: &str| {
        records.iter().filter(|r| r["action"] == action && r["outcome"] == outcome && r["resource"] == "/v1/traces").count()
    };
    assert_eq!(count("authenticate", "unauthenticated"), 4, "no token and a bad token, in each encoding");
    assert_eq!(count("ingest", "forbidden"), 2, "the reader's token pushing spans, in each encoding");
}
