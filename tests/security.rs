//! Security hardening through real sockets: the audit writer follows its path and fails closed,
//! failed authentications cannot blind the audit (per client and reason, behind a trusted
//! proxy, with capped records), secrets in URLs never reach the admin view or the logs, and
//! operator input never panics.

mod common;
#[path = "common/auth.rs"]
mod fixture;

#[path = "common/listening.rs"]
mod listening;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::ports::free_port;
use common::{send, start_gateway};
use fixture::*;
use serde_json::Value;

async fn get_as(api: SocketAddr, path: &str, token: Option<&str>, extra: &[(&str, &str)]) -> (u16, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    headers.extend_from_slice(extra);
    let (status, _, body) = send("GET", &format!("http://{api}{path}"), &headers, vec![]).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_writer_follows_its_path_and_admin_actions_fail_closed_without_it() {
    let yaml = secured_config().replace("\"{data}/audit.jsonl\"", "\"{data}/audit/audit.jsonl\"");
    let (gateway, dir) = start_gateway(&yaml).await;
    let api = gateway.api_addr().unwrap();
    let audit_dir = dir.path().join("audit");
    let audit_file = audit_dir.join("audit.jsonl");
    let ada = mint(&[spec(Idp::Okta, claims(Idp::Okta, "ada", &["admin"]))]).remove(0);
    let config_reads = || records(&audit_file).iter().filter(|r| r["action"] == "config.read").count();

    assert_eq!(get_as(api, "/api/v1/admin/config", Some(&ada), &[]).await.0, 200);
    assert_eq!(config_reads(), 1);

    // The file is deleted while running: the next record goes to a new file at the path, not
    // into the deleted inode.
    std::fs::remove_file(&audit_file).unwrap();
    assert_eq!(get_as(api, "/api/v1/admin/config", Some(&ada), &[]).await.0, 200);
    assert_eq!(config_reads(), 1, "the record is in the new file at the configured path");

    // The file is replaced by another one: records follow the path.
    std::fs::rename(&audit_file, dir.path().join("moved.jsonl")).unwrap();
    std::fs::write(&audit_file, "").unwrap();
    assert_eq!(get_as(api, "/api/v1/admin/config", Some(&ada), &[]).await.0, 200);
    assert_eq!(config_reads(), 1);

    // The directory is gone: nothing can be recorded, so admin actions are refused.
    std::fs::remove_dir_all(&audit_dir).unwrap();
    assert_eq!(get_as(api, "/api/v1/admin/config", Some(&ada), &[]).await.0, 503);
    assert_eq!(get_as(api, "/api/v1/audit", Some(&ada), &[]).await.0, 503);
    assert!(!audit_file.exists());

    // It comes back: so does the audit, and with it the admin actions.
    std::fs::create_dir(&audit_dir).unwrap();
    assert_eq!(get_as(api, "/api/v1/admin/config", Some(&ada), &[]).await.0, 200);
    assert_eq!(config_reads(), 1);
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_authentications_cannot_blind_the_audit() {
    let yaml = secured_config()
        .replace("  checkpoint_every: 5\n", "  checkpoint_every: 1000\n  failed_auth_per_source_per_minute: 3\n")
        .replace("  leeway: 5s\n", "  leeway: 5s\n  trusted_proxies: [127.0.0.1]\n");
    let (gateway, dir) = start_gateway(&yaml).await;
    let api = gateway.api_addr().unwrap();
    let audit_file = dir.path().join("audit.jsonl");
    let attacker = [("x-forwarded-for", "198.51.100.66, 203.0.113.9")];

    // 20 garbage tokens, then a token with `alg: none` from the same client.
    for _ in 0..20 {
        assert_eq!(get_as(api, "/api/v1/orders", Some("garbage"), &attacker).await.0, 401);
    }
    let header = base64url(r#"{"alg":"none","typ":"JWT"}"#);
    let payload = base64url(&format!(r#"{{"iss":"{}","sub":"ada","aud":"tracegate","exp":4102444800}}"#, Idp::Keycloak.issuer()));
    let none = format!("{header}.{payload}.");
    assert_eq!(get_as(api, "/api/v1/audit", Some(&none), &attacker).await.0, 401);
    // Another client behind the same proxy has its own share.
    for _ in 0..5 {
        assert_eq!(get_as(api, "/api/v1/orders", Some("garbage"), &[("x-forwarded-for", "203.0.113.10")]).await.0, 401);
    }
    // A 60 KB path does not write 60 KB.
    let long = format!("/api/v1/orders/{}", "A".repeat(60_000));
    assert_eq!(get_as(api, &long, Some("garbage"), &[("x-forwarded-for", "203.0.113.11")]).await.0, 401);

    let all = records(&audit_file);
    let failed = |client: &str| -> Vec<&Value> { all.iter().filter(|r| r["action"] == "authenticate" && r["source"] == client).collect() };
    let from_attacker = failed("203.0.113.9");
    assert_eq!(from_attacker.len(), 4, "3 garbage tokens and the alg:none one: {from_attacker:#?}");
    let none_record = from_attacker.last().unwrap();
    assert!(none_record["reason"].as_str().unwrap().contains("algorithm"), "{none_record}");
    assert_eq!(none_record["resource"], "/api/v1/audit");
    assert_eq!(none_record["via"], "127.0.0.1", "the proxy is named beside the client");
    assert_eq!(failed("203.0.113.10").len(), 3);
    assert_eq!(failed("198.51.100.66").len(), 0, "addresses the client wrote itself prove nothing");
    let long_record = failed("203.0.113.11")[0];
    let resource = long_record["resource"].as_str().unwrap();
    assert!(resource.len() < 700 && resource.contains("more bytes"), "{} bytes", resource.len());
    let biggest = std::fs::read_to_string(&audit_file).unwrap().lines().map(str::len).max().unwrap();
    assert!(biggest < 2_000, "the longest audit line has {biggest} bytes");

    // The suppressed ones are counted, by reason, when the minute (here: the run) ends.
    gateway.shutdown().await;
    let all = records(&audit_file);
    let summary = all
        .iter()
        .find(|r| r["action"] == "authenticate.suppressed" && r["source"] == "203.0.113.9")
        .expect("a summary of what was not recorded one by one");
    let reason = summary["reason"].as_str().unwrap();
    assert!(reason.contains("17 more failed authentications") && reason.contains("17 x invalid token: not a compact JWS"), "{reason}");
    let summary_10 = all.iter().find(|r| r["action"] == "authenticate.suppressed" && r["source"] == "203.0.113.10").unwrap();
    assert!(summary_10["reason"].as_str().unwrap().contains("2 more"), "{summary_10}");
}

fn base64url(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_in_urls_are_redacted_in_the_admin_view() {
    let yaml = secured_config()
        .replace(
            "  local: {type: embedded",
            "  archive:\n    type: elasticsearch\n    endpoints: [\"http://elastic:es-pass-7731@127.0.0.1:9/\", \"https://es2:9200/?api_key=es-key-7732&pretty=true\"]\n  hooked: {type: otlp, endpoint: \"https://collector:4317/?access_token=otlp-token-7733\"}\n  local: {type: embedded",
        )
        .replace("exporters: [local]", "exporters: [local, archive, hooked]");
    let (gateway, _dir) = start_gateway(&yaml).await;
    let api = gateway.api_addr().unwrap();
    let ada = mint(&[spec(Idp::Okta, claims(Idp::Okta, "ada", &["admin"]))]).remove(0);
    let (status, view) = get_as(api, "/api/v1/admin/config", Some(&ada), &[]).await;
    assert_eq!(status, 200);
    let text = view.to_string();
    for secret in ["es-pass-7731", "es-key-7732", "otlp-token-7733"] {
        assert!(!text.contains(secret), "{secret} in the admin view: {text}");
    }
    assert!(text.contains("http://elastic:<redacted>@127.0.0.1:9/"), "{text}");
    assert!(text.contains("pretty=true"), "the rest of the URL stays: {text}");
    gateway.shutdown().await;
}

#[test]
fn a_bad_endpoint_in_the_environment_is_a_configuration_error_not_a_panic() {
    for (var, value, says) in [
        ("TRACEGATE_GRPC_ENDPOINT", "vm:4317", "\"vm\" is not an IP address"),
        ("TRACEGATE_HTTP_ENDPOINT", "0:4318", "\"0\" is not an IP address"),
        ("TRACEGATE_API_ENDPOINT", "127.0.0.1:99999", "port 99999 is out of range"),
        ("TRACEGATE_GRPC_ENDPOINT", "localhost", "has no port"),
    ] {
        let data = tempfile::tempdir().unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_tracegate")).env(var, value).env("TRACEGATE_DATA_DIR", data.path()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}={value}: {stderr}");
        assert!(!stderr.contains("panicked"), "{var}={value}: {stderr}");
        assert!(stderr.contains(says), "{var}={value}: {stderr}");
        assert!(stderr.contains("built-in configuration"), "{stderr}");
    }
}

#[test]
fn the_built_in_configuration_keeps_a_random_audit_key_and_a_verifiable_log() {
    let data = tempfile::tempdir().unwrap();
    let (api, http) = (free_port(), free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_tracegate"))
        .env("TRACEGATE_DATA_DIR", data.path())
        .env("TRACEGATE_GRPC_ENDPOINT", format!("127.0.0.1:{}", free_port()))
        .env("TRACEGATE_HTTP_ENDPOINT", format!("127.0.0.1:{http}"))
        .env("TRACEGATE_API_ENDPOINT", format!("127.0.0.1:{api}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::net::TcpStream::connect(("127.0.0.1", api)).is_ok_and(|s| !listening::joined_to_itself(&s)) {
        assert!(Instant::now() < deadline, "the gateway did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (status, _, _) = rt.block_on(send("GET", &format!("http://127.0.0.1:{api}/api/v1/orders/A-1"), &[], vec![]));
    assert_eq!(status, 404);
    // A refused request is summarised in the log at INFO (not only at DEBUG).
    let (refused, _, _) =
        rt.block_on(send("POST", &format!("http://127.0.0.1:{http}/v1/traces"), &[("content-type", "text/plain")], b"hello".to_vec()));
    assert_eq!(refused, 415);
    let key = data.path().join("audit.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600, "only the owner reads the key");
    assert!(std::fs::read_to_string(&key).unwrap().trim().len() >= 64);
    unsafe_kill(child.id(), 15);
    assert!(child.wait().unwrap().success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("generated a random audit key"), "{stderr}");
    let refusal = stderr.lines().find(|l| l.contains("refused requests since the last report")).unwrap_or_else(|| panic!("{stderr}"));
    assert!(refusal.contains("INFO") && refusal.contains("unsupported: 1"), "{refusal}");

    let log = data.path().join("audit.jsonl");
    let all = records(&log);
    assert!(all.iter().any(|r| r["action"] == "order.read" && r["actor"]["sub"] == "anonymous"), "{all:#?}");
    let out = Command::new(env!("CARGO_BIN_EXE_tracegate"))
        .args(["audit", "verify", log.to_str().unwrap(), "--key-file", key.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("authentic") && !stdout.contains("does not end with a shutdown checkpoint"), "{stdout}");
}

fn unsafe_kill(pid: u32, signal: i32) {
    Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().unwrap();
}

/// Export failures are logged with their destination and the peer's error text, and neither
/// may carry a password or a token from a URL.
#[test]
fn secrets_in_urls_never_reach_the_logs() {
    let data = tempfile::tempdir().unwrap();
    let (http, grpc, api, closed) = (free_port(), free_port(), free_port(), free_port());
    let config = data.path().join("tracegate.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
receivers:
  otlp: {{grpc: {{endpoint: "127.0.0.1:{grpc}"}}, http: {{endpoint: "127.0.0.1:{http}"}}}}
exporters:
  jaeger:
    type: otlp
    endpoint: "http://tracegate:otlp-pass-7741@127.0.0.1:{closed}/?access_token=otlp-token-7742"
    batch: {{max_wait: 10ms}}
    retry_on_failure: {{initial_interval: 50ms, max_interval: 100ms}}
  archive:
    type: elasticsearch
    endpoints: ["http://elastic:es-pass-7743@127.0.0.1:{closed}"]
    dead_letter_path: "{dir}/dead-letter.jsonl"
    batch: {{max_wait: 10ms}}
    retry_on_failure: {{initial_interval: 50ms, max_interval: 100ms}}
api: {{endpoint: "127.0.0.1:{api}"}}
service:
  shutdown_timeout: 1s
  pipelines:
    traces: {{receivers: [otlp], exporters: [jaeger, archive]}}
"#,
            dir = data.path().display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tracegate"))
        .args(["run", "--config", config.to_str().unwrap()])
        .env("RUST_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::net::TcpStream::connect(("127.0.0.1", http)).is_ok_and(|s| !listening::joined_to_itself(&s)) {
        assert!(Instant::now() < deadline, "the gateway did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let span = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"shop-api"}}]},"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"POST /orders","startTimeUnixNano":"1","endTimeUnixNano":"2"}]}]}]}"#;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (status, _, _) = rt.block_on(send(
        "POST",
        &format!("http://127.0.0.1:{http}/v1/traces"),
        &[("content-type", "application/json")],
        span.as_bytes().to_vec(),
    ));
    assert_eq!(status, 200);
    // Long enough for several failed attempts of both exporters.
    std::thread::sleep(Duration::from_millis(1500));
    unsafe_kill(child.id(), 15);
    child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("export failed; will retry"), "the failures were logged: {stderr}");
    assert!(stderr.contains(&format!("to=http://tracegate:<redacted>@127.0.0.1:{closed}/?access_token=<redacted>")), "{stderr}");
    assert!(stderr.contains(&format!("http://elastic:<redacted>@127.0.0.1:{closed}")), "{stderr}");
    for secret in ["otlp-pass-7741", "otlp-token-7742", "es-pass-7743"] {
        assert!(!stderr.contains(secret), "{secret} in the log:\n{stderr}");
    }
}
