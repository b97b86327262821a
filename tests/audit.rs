//! The audit trail: who read which order, every refusal and failed authentication, admin views;
//! the hash chain and signed checkpoints catch an edited, removed or reordered record; admin
//! actions fail closed when the log cannot be written.

mod common;
#[path = "common/auth.rs"]
mod fixture;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{send, start_gateway};
use fixture::*;
use serde_json::{json, Value};
use tracegate::audit::{verify_text, Actor, AuditConfig, AuditEvent, AuditLog};

const CHECKPOINT_KEY: &str = "audit-checkpoint-key-0123456789abcdef";

async fn get(api: SocketAddr, path: &str, token: Option<&str>) -> (u16, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
    let (status, _, body) = send("GET", &format!("http://{api}{path}"), &headers, vec![]).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn records(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_read_which_order_is_recorded_in_a_verifiable_chain() {
    let (gateway, dir) = start_gateway(&secured_config()).await;
    let api = gateway.api_addr().unwrap();
    let audit_file = dir.path().join("audit.jsonl");
    let idp = Idp::Keycloak;
    let tokens = mint(&[
        spec(idp, service_claims(idp, "mes-api")),
        spec(idp, claims(idp, "sam", &["support"])),
        spec(idp, claims(idp, "ada", &["admin"])),
    ]);
    let (mes, sam, ada) = (&tokens[0], &tokens[1], &tokens[2]);

    let event = serde_json::to_vec(&json!({"order_id": "A-1001", "service": "mes-api", "status": "manufactured"})).unwrap();
    let url = format!("http://{}/v1/order-events", gateway.http_addr().unwrap());
    let auth = format!("Bearer {mes}");
    let (status, _, _) = send("POST", &url, &[("content-type", "application/json"), ("authorization", &auth)], event).await;
    assert_eq!(status, 200);
    let mut found = 0;
    for _ in 0..100 {
        found = get(api, "/api/v1/orders/A-1001", Some(sam)).await.0;
        if found == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert_eq!(found, 200, "support reads the order");
    assert_eq!(get(api, "/api/v1/orders/A-1001", None).await.0, 401);
    assert_eq!(get(api, "/api/v1/audit", Some(sam)).await.0, 403);

    let (status, body) = get(api, "/api/v1/audit?actor=sam&action=order.read", Some(ada)).await;
    assert_eq!(status, 200);
    let reads = body["records"].as_array().unwrap();
    let read = reads.iter().find(|r| r["outcome"] == "allowed").expect("sam's read of A-1001 is in the audit");
    assert_eq!(read["resource"], "/api/v1/orders/A-1001");
    assert_eq!(read["actor"]["iss"], Idp::Keycloak.issuer());
    assert_eq!(read["actor"]["name"], "sam@shop.test");
    assert_eq!(read["actor"]["roles"], json!(["support"]));
    assert_eq!(read["source"], "127.0.0.1");
    assert!(read["request_id"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(read["id"].as_str().unwrap().as_bytes()[14], b'7', "a UUIDv7");

    let all = records(&audit_file);
    let has = |action: &str, outcome: &str| all.iter().any(|r| r["action"] == action && r["outcome"] == outcome);
    assert!(has("authenticate", "unauthenticated"), "the request without a token");
    assert!(has("audit.read", "forbidden"), "support asking for the audit");
    assert!(has("audit.read", "allowed"), "reading the audit is itself audited");
    assert!(all.iter().any(|r| r["action"] == "audit.checkpoint" && r["sig"].is_string()), "a signed checkpoint every 5 records");
    let text = std::fs::read_to_string(&audit_file).unwrap();
    assert!(!text.contains("eyJ") && !text.contains("Bearer "), "a token reached the audit log");

    let out = Command::new(env!("CARGO_BIN_EXE_tracegate"))
        .args(["audit", "verify", audit_file.to_str().unwrap(), "--key-env", "TG_TEST_AUDIT_KEY"])
        .env("TG_TEST_AUDIT_KEY", CHECKPOINT_KEY)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("chain intact"));
    gateway.shutdown().await;
}

/// A log of `n` records written by tracegate's own `AuditLog`.
fn written_log(dir: &Path, n: usize) -> String {
    let path = dir.join("audit.jsonl");
    let config = AuditConfig { checkpoint_key: Some(CHECKPOINT_KEY.into()), checkpoint_every: 4, ..Default::default() };
    let log = AuditLog::open(&config, &path).unwrap();
    for i in 0..n {
        let actor = Actor { iss: "https://sso.shop.test".into(), sub: "sam".into(), name: None, roles: vec!["support".into()] };
        log.record(&AuditEvent::new(actor, "order.read", format!("/api/v1/orders/A-{i}"), "allowed")).unwrap();
    }
    std::fs::read_to_string(path).unwrap()
}

fn with_lines(text: &str, edit: impl FnOnce(&mut Vec<String>)) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    edit(&mut lines);
    lines.join("\n") + "\n"
}

#[test]
fn an_edited_removed_or_reordered_record_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let text = written_log(dir.path(), 12);
    let key = Some(CHECKPOINT_KEY.as_bytes());
    let report = verify_text(&text, key).unwrap();
    assert_eq!(report.records, 15, "12 records and 3 checkpoints");
    assert_eq!(report.checkpoints_verified, 3);

    let edited = with_lines(&text, |l| l[3] = l[3].replace("A-3", "A-9"));
    let e = verify_text(&edited, key).unwrap_err();
    assert_eq!((e.line, e.expected_seq), (4, 3), "{e}");
    assert!(e.problem.contains("changed"), "{e}");

    let removed = with_lines(&text, |l| {
        l.remove(5);
    });
    let e = verify_text(&removed, key).unwrap_err();
    assert_eq!(e.line, 6, "{e}");
    assert!(e.problem.contains("removed"), "{e}");

    let reordered = with_lines(&text, |l| l.swap(2, 3));
    let e = verify_text(&reordered, key).unwrap_err();
    assert_eq!(e.line, 3, "{e}");
    assert!(e.problem.contains("reordered") || e.problem.contains("removed"), "{e}");

    // A forger who rewrites a record and re-hashes the rest of the chain cannot sign checkpoints.
    let wrong_key = verify_text(&text, Some(b"another-key-another-key-another-key")).unwrap_err();
    assert_eq!(wrong_key.line, 5, "the first checkpoint: {wrong_key}");

    // The command line says the same, and exits non-zero.
    let file = dir.path().join("edited.jsonl");
    std::fs::write(&file, &edited).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tracegate")).args(["audit", "verify", file.to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 4 (record seq 3)"), "{stderr}");
}

#[test]
fn a_reopened_log_continues_its_chain() {
    let dir = tempfile::tempdir().unwrap();
    written_log(dir.path(), 3);
    let text = written_log(dir.path(), 3);
    let report = verify_text(&text, Some(CHECKPOINT_KEY.as_bytes())).unwrap();
    assert_eq!(report.records, 7, "6 records and one checkpoint, one chain across the restart");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_actions_fail_closed_when_the_audit_cannot_be_written() {
    // Every write to /dev/full fails with ENOSPC.
    let yaml = secured_config().replace("\"{data}/audit.jsonl\"", "/dev/full");
    let (gateway, _dir) = start_gateway(&yaml).await;
    let api = gateway.api_addr().unwrap();
    let tokens =
        mint(&[spec(Idp::Auth0, claims(Idp::Auth0, "ada", &["admin"])), spec(Idp::Auth0, claims(Idp::Auth0, "sam", &["support"]))]);
    assert_eq!(get(api, "/api/v1/admin/config", Some(&tokens[0])).await.0, 503);
    assert_eq!(get(api, "/api/v1/audit", Some(&tokens[0])).await.0, 503);
    assert_eq!(get(api, "/api/v1/orders", Some(&tokens[1])).await.0, 200, "reads go on (the failure is logged)");
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_auth_requests_are_audited_as_anonymous_and_failures_are_rate_limited() {
    let yaml = r#"
receivers:
  otlp: {http: {endpoint: "127.0.0.1:0"}}
exporters:
  local: {type: embedded, path: "{data}"}
api: {endpoint: "127.0.0.1:0"}
audit: {path: "{data}/audit.jsonl"}
service:
  pipelines:
    traces: {receivers: [otlp], exporters: [local]}
"#;
    let (gateway, dir) = start_gateway(yaml).await;
    let api = gateway.api_addr().unwrap();
    assert_eq!(get(api, "/api/v1/orders/A-1", None).await.0, 404);
    let all = records(&dir.path().join("audit.jsonl"));
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(all[0]["actor"]["sub"], "anonymous");
    assert_eq!(all[0]["action"], "order.read");
    assert_eq!(all[0]["outcome"], "not_found");
    gateway.shutdown().await;

    let limited = format!("{}\n", secured_config())
        .replace("  checkpoint_every: 5\n", "  checkpoint_every: 1000\n  failed_auth_per_source_per_minute: 3\n");
    let (gateway, dir) = start_gateway(&limited).await;
    let api = gateway.api_addr().unwrap();
    for _ in 0..40 {
        assert_eq!(get(api, "/api/v1/orders", Some("eyJhbGciOiJIUzI1NiJ9.e30.bad")).await.0, 401);
    }
    let all = records(&dir.path().join("audit.jsonl"));
    assert_eq!(all.iter().filter(|r| r["action"] == "authenticate").count(), 3, "{all:#?}");
    assert_eq!(all.iter().filter(|r| r["action"] == "authenticate.suppressed").count(), 1);
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_claim_of_the_wrong_shape_gives_no_role_and_is_audited() {
    let (gateway, dir) = start_gateway(&secured_config()).await;
    let api = gateway.api_addr().unwrap();
    let mut odd = claims(Idp::Entra, "eve", &[]);
    odd["roles"] = json!({"Tracegate.Admin": true});
    let token = mint(&[spec(Idp::Entra, odd)]).remove(0);
    assert_eq!(get(api, "/api/v1/orders", Some(&token)).await.0, 403);
    let all = records(&dir.path().join("audit.jsonl"));
    let shape = all.iter().find(|r| r["action"] == "authenticate").expect("an audit record about the claim");
    assert_eq!(shape["actor"]["sub"], "eve");
    assert!(shape["reason"].as_str().unwrap().contains("/roles"), "{shape}");
    assert!(all.iter().any(|r| r["action"] == "orders.list" && r["outcome"] == "forbidden"));
    gateway.shutdown().await;
}
