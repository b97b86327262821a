//! Keys from a JWKS URL, against a local JWKS server: a rotated-in key is picked up, a flood of
//! unknown kids causes one fetch, an IdP outage keeps the last good keys working, and `oct` or
//! `use: enc` keys are never used.

mod common;
#[path = "common/auth.rs"]
mod fixture;

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use common::{send, start_gateway};
use fixture::*;
use serde_json::{json, Value};

const ISSUER: &str = "https://idp.shop.test/realms/shop";

#[derive(Clone)]
struct JwksServer {
    addr: SocketAddr,
    body: Arc<Mutex<Value>>,
    hits: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
}

async fn serve(State(s): State<JwksServer>) -> axum::response::Response {
    s.hits.fetch_add(1, Ordering::SeqCst);
    if s.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    axum::Json(s.body.lock().unwrap().clone()).into_response()
}

impl JwksServer {
    async fn start(body: Value) -> JwksServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = JwksServer {
            addr: listener.local_addr().unwrap(),
            body: Arc::new(Mutex::new(body)),
            hits: Arc::default(),
            down: Arc::default(),
        };
        let app = axum::Router::new().route("/jwks", axum::routing::get(serve)).with_state(server.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        server
    }
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A JWK set of the given public keys, converted by PyJWT.
fn jwks(keys: &[(&str, &str, &str)]) -> Value {
    let specs: Vec<Value> =
        keys.iter().map(|(name, kid, alg)| json!({"pem": fixture::keys().public(name), "kid": kid, "alg": alg})).collect();
    let mut child = Command::new(python())
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/jwt_helper.py"))
        .arg("jwks")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(serde_json::to_string(&specs).unwrap().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

fn config(jwks: &JwksServer, refresh: &str, cooldown: &str) -> String {
    format!(
        r#"
receivers:
  otlp: {{http: {{endpoint: "127.0.0.1:0"}}}}
exporters:
  local: {{type: embedded, path: "{{data}}"}}
api: {{endpoint: "127.0.0.1:0"}}
auth:
  issuers:
    - issuer: "{ISSUER}"
      audience: [tracegate]
      roles: {{claims: [/roles]}}
      jwks: {{url: "http://{}/jwks", allow_insecure_loopback: true, refresh_interval: {refresh}, refetch_cooldown: {cooldown}, max_stale: 1h}}
service:
  pipelines:
    traces: {{receivers: [otlp], exporters: [local]}}
"#,
        jwks.addr
    )
}

fn token_spec(key: &str, kid: &str) -> Value {
    let claims = json!({"iss": ISSUER, "aud": "tracegate", "sub": "sam", "exp": now() + 300, "iat": now(), "roles": ["support"]});
    json!({"alg": "RS256", "key_file": fixture::keys().private(key), "headers": {"kid": kid}, "claims": claims})
}

async fn status(api: SocketAddr, token: &str) -> u16 {
    let auth = format!("Bearer {token}");
    send("GET", &format!("http://{api}/api/v1/orders"), &[("authorization", auth.as_str())], vec![]).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_is_picked_up_and_a_flood_of_unknown_kids_fetches_once() {
    let mut set = jwks(&[("rsa", "k1", "RS256")]);
    // Never usable: a shared secret published as `oct`, and an encryption key.
    set["keys"]
        .as_array_mut()
        .unwrap()
        .push(json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA", "alg": "HS256"}));
    let mut enc = jwks(&[("rsa2", "enc", "RS256")])["keys"][0].clone();
    enc["use"] = json!("enc");
    set["keys"].as_array_mut().unwrap().push(enc);
    let server = JwksServer::start(set.clone()).await;
    let (gateway, _dir) = start_gateway(&config(&server, "10m", "1s")).await;
    let api = gateway.api_addr().unwrap();
    let mut oct = token_spec("rsa", "hmac");
    oct = json!({"alg": "HS256", "secret": "secret-secret-secret-secret-secret", "headers": {"kid": "hmac"}, "claims": oct["claims"]});
    let tokens = mint(&[token_spec("rsa", "k1"), token_spec("rsa2", "k2"), token_spec("rsa2", "enc"), oct]);

    assert_eq!(status(api, &tokens[0]).await, 200, "k1 from the JWKS");
    assert_eq!(server.hits(), 1);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(status(api, &tokens[2]).await, 401, "a use: enc key never verifies");
    assert_eq!(status(api, &tokens[3]).await, 401, "an oct key never verifies");

    // The IdP rotates k2 in; a token with k2 makes tracegate fetch again (after the cooldown).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = server.hits();
    let mut rotated = jwks(&[("rsa", "k1", "RS256"), ("rsa2", "k2", "RS256")]);
    rotated["keys"].as_array_mut().unwrap().extend(set["keys"].as_array().unwrap()[1..].iter().cloned());
    *server.body.lock().unwrap() = rotated;
    assert_eq!(status(api, &tokens[1]).await, 200, "k2 picked up");
    assert_eq!(server.hits(), before + 1);

    // 40 concurrent requests, each with a kid nobody knows: one fetch between them.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = server.hits();
    let specs: Vec<Value> = (0..40).map(|i| token_spec("rsa", &format!("unknown-{i}"))).collect();
    let flood = mint(&specs);
    let mut tasks = Vec::new();
    for t in flood {
        tasks.push(tokio::spawn(async move { status(api, &t).await }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 401);
    }
    assert_eq!(server.hits(), before + 1, "one refetch for the whole flood");
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_good_keys_work_through_an_idp_outage() {
    let server = JwksServer::start(jwks(&[("rsa", "k1", "RS256")])).await;
    let (gateway, _dir) = start_gateway(&config(&server, "1s", "500ms")).await;
    let api = gateway.api_addr().unwrap();
    let token = mint(&[token_spec("rsa", "k1")]).remove(0);
    assert_eq!(status(api, &token).await, 200);
    server.down.store(true, Ordering::SeqCst);
    let before = server.hits();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(status(api, &token).await, 200, "the IdP is down; the cached key still verifies");
    }
    assert!(server.hits() > before, "tracegate tried to refresh during the outage");
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_jwks_response_is_not_used() {
    let mut set = jwks(&[("rsa", "k1", "RS256")]);
    set["padding"] = json!("x".repeat(64 * 1024));
    let server = JwksServer::start(set).await;
    let yaml = config(&server, "10m", "1s").replace("max_stale: 1h}", "max_stale: 1h, max_bytes: 16384}");
    let (gateway, _dir) = start_gateway(&yaml).await;
    let token = mint(&[token_spec("rsa", "k1")]).remove(0);
    assert_eq!(status(gateway.api_addr().unwrap(), &token).await, 401, "a 64 KiB answer over a 16 KiB limit gives no keys");
    assert_eq!(server.hits(), 1);
    gateway.shutdown().await;
}
