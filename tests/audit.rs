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
use prost::Message;
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
    let seqs: Vec<u64> = reads.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] > w[1]), "newest first: {seqs:?}");
    let (_, oldest) = get(api, "/api/v1/audit?limit=2&order=asc", Some(ada)).await;
    assert_eq!(oldest["records"][0]["seq"], 0, "order=asc starts at the beginning");
    assert_eq!(get(api, "/api/v1/audit?order=sideways", Some(ada)).await.0, 400);
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
    assert!(all.iter().all(|r| r["mac"].as_str().is_some_and(|m| m.len() == 64)), "every record carries its MAC");
    assert_eq!(all[0]["checkpoint"]["kind"], "start", "a run begins with a start checkpoint");
    assert!(all.iter().any(|r| r["checkpoint"]["kind"] == "interval"), "a checkpoint every 5 records");
    let text = std::fs::read_to_string(&audit_file).unwrap();
    assert!(!text.contains("eyJ") && !text.contains("Bearer "), "a token reached the audit log");

    let out = Command::new(env!("CARGO_BIN_EXE_tracegate"))
        .args(["audit", "verify", audit_file.to_str().unwrap(), "--key-env", "TG_TEST_AUDIT_KEY"])
        .env("TG_TEST_AUDIT_KEY", CHECKPOINT_KEY)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("authentic"));
    gateway.shutdown().await;
    let report = tracegate::audit::verify_file(&audit_file, Some(CHECKPOINT_KEY.as_bytes())).unwrap();
    assert!(report.ends_cleanly, "a clean stop ends the log with a shutdown checkpoint");
}

/// A log of `n` records written by tracegate's own `AuditLog` (one run, not closed).
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

/// The index of the line holding `needle`.
fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).unwrap()
}

const KEY: Option<&[u8]> = Some(CHECKPOINT_KEY.as_bytes());

#[test]
fn an_edited_removed_or_reordered_record_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let text = written_log(dir.path(), 12);
    let report = verify_text(&text, KEY).unwrap();
    assert_eq!(report.records, 16, "a start checkpoint, 12 records and 3 interval checkpoints");
    assert_eq!((report.checkpoints, report.runs, report.authenticated, report.ends_cleanly), (4, 1, true, false));

    let at = line_of(&text, "A-3\"");
    let edited = with_lines(&text, |l| l[at] = l[at].replace("A-3\"", "A-9\""));
    let e = verify_text(&edited, KEY).unwrap_err();
    assert_eq!((e.line, e.expected_seq), (at + 1, at as u64), "{e}");
    assert!(e.problem.contains("changed"), "{e}");

    let removed = with_lines(&text, |l| {
        l.remove(6);
    });
    let e = verify_text(&removed, KEY).unwrap_err();
    assert_eq!(e.line, 7, "{e}");
    assert!(e.problem.contains("removed"), "{e}");

    let reordered = with_lines(&text, |l| l.swap(2, 3));
    let e = verify_text(&reordered, KEY).unwrap_err();
    assert_eq!(e.line, 3, "{e}");
    assert!(e.problem.contains("reordered") || e.problem.contains("removed"), "{e}");

    // Another key: the very first record's MAC fails.
    let wrong_key = verify_text(&text, Some(b"another-key-another-key-another-key")).unwrap_err();
    assert_eq!(wrong_key.line, 1, "{wrong_key}");
    assert!(wrong_key.problem.contains("MAC"), "{wrong_key}");

    // The command line says the same, and exits non-zero; without a key it refuses to vouch.
    let file = dir.path().join("edited.jsonl");
    std::fs::write(&file, &edited).unwrap();
    let verify = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_tracegate"))
            .args(["audit", "verify", file.to_str().unwrap()])
            .args(args)
            .env("TG_TEST_AUDIT_KEY", CHECKPOINT_KEY)
            .output()
            .unwrap();
        (out.status.code().unwrap(), String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let (code, _, stderr) = verify(&["--key-env", "TG_TEST_AUDIT_KEY"]);
    assert_eq!(code, 1);
    assert!(stderr.contains(&format!("line {} (record seq {at})", at + 1)), "{stderr}");
    let (code, _, stderr) = verify(&[]);
    assert_eq!(code, 2, "no key, no verdict");
    assert!(stderr.contains("no audit key given"), "{stderr}");
    let (code, _, stderr) = verify(&["--chain-only"]);
    assert_eq!(code, 1, "a naive edit breaks the chain even without the key");
    assert!(stderr.contains(&format!("line {} (record seq {at})", at + 1)), "{stderr}");
}

/// What someone without the key can do: rewrite records and recompute every hash after them.
fn rehash(lines: &[Value]) -> String {
    rehash_after("", lines, 0)
}

/// The first `from` lines of `raw` as they are, then `records[from..]` re-numbered and
/// re-hashed onto them.
fn rehash_after(raw: &str, records: &[Value], from: usize) -> String {
    let mut out: String = raw.lines().take(from).map(|l| format!("{l}\n")).collect();
    let mut prev = match from {
        0 => tracegate::audit::GENESIS.to_string(),
        _ => serde_json::from_str::<Value>(raw.lines().nth(from - 1).unwrap()).unwrap()["hash"].as_str().unwrap().to_string(),
    };
    for (seq, record) in records.iter().enumerate().skip(from) {
        let mut body = record.clone();
        let map = body.as_object_mut().unwrap();
        map.remove("hash");
        let mac = map.remove("mac");
        map.insert("seq".into(), json!(seq));
        map.insert("prev".into(), json!(prev));
        let text = serde_json::to_string(&body).unwrap();
        let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(text.as_bytes()));
        // Keeping the old MAC (or making one up) is all a forger can do.
        let mac = mac.map(|m| format!(",\"mac\":{m}")).unwrap_or_default();
        out.push_str(&format!("{},\"hash\":\"{hash}\"{mac}}}\n", &text[..text.len() - 1]));
        prev = hash;
    }
    out
}

#[test]
fn a_log_rewritten_without_the_key_does_not_verify() {
    let dir = tempfile::tempdir().unwrap();
    let text = written_log(dir.path(), 12);
    let parsed: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let edited_at = parsed.iter().position(|r| r["resource"] == "/api/v1/orders/A-5").unwrap();

    // Checkpoints stripped, one record edited, the chain re-hashed: the chain holds, the key
    // finds the first record the forger wrote.
    let mut stripped: Vec<Value> = parsed.iter().filter(|r| r["checkpoint"]["kind"] != "interval").cloned().collect();
    let at = stripped.iter().position(|r| r["resource"] == "/api/v1/orders/A-5").unwrap();
    stripped[at]["resource"] = json!("/api/v1/orders/A-1");
    // A careful forger also raises the start checkpoint's interval, so the gaps do not show.
    stripped[0]["checkpoint"]["every"] = json!(1000);
    let forged = rehash(&stripped);
    assert!(verify_text(&forged, None).is_ok(), "without the key a re-hashed chain looks intact");
    let naive = rehash(&parsed.iter().filter(|r| r["action"] != "audit.checkpoint").cloned().collect::<Vec<_>>());
    assert_eq!(verify_text(&naive, None).unwrap_err().line, 1, "stripping every checkpoint shows even without the key");
    let e = verify_text(&forged, KEY).unwrap_err();
    assert_eq!(e.line, 1, "the first re-written record: {e}");
    assert!(e.problem.contains("MAC"), "{e}");

    // Only the edited record re-hashed, checkpoints kept: the MAC of that record fails.
    let mut kept = parsed.clone();
    kept[edited_at]["outcome"] = json!("forbidden");
    let e = verify_text(&rehash_after(&text, &kept, edited_at), KEY).unwrap_err();
    assert_eq!(e.line, edited_at + 1, "{e}");
    assert!(e.problem.contains("MAC"), "{e}");

    // A forged record appended with a correct chain hash.
    let mut appended = parsed.clone();
    let mut extra = parsed[1].clone();
    extra["resource"] = json!("/api/v1/orders/A-FORGED");
    appended.push(extra);
    let e = verify_text(&rehash_after(&text, &appended, parsed.len()), KEY).unwrap_err();
    assert_eq!(e.line, parsed.len() + 1, "{e}");

    // A made-up three-line log.
    let made_up = rehash(&[
        json!({"id": "1", "time": "2026-11-30T10:00:00Z", "action": "audit.checkpoint", "checkpoint": {"kind": "start", "every": 100, "previous": "new"}}),
        json!({"id": "2", "time": "2026-11-30T10:00:01Z", "actor": {"iss": "x", "sub": "sam"}, "action": "order.read", "resource": "/api/v1/orders/A-1", "outcome": "allowed"}),
        json!({"id": "3", "time": "2026-11-30T10:00:02Z", "action": "audit.checkpoint", "checkpoint": {"kind": "shutdown", "every": 100}}),
    ]);
    assert!(verify_text(&made_up, None).is_ok());
    let e = verify_text(&made_up, KEY).unwrap_err();
    assert_eq!(e.line, 1, "{e}");

    // Records removed from the front with the rest re-numbered: the MACs no longer match.
    let e = verify_text(&rehash(&parsed[3..]), KEY).unwrap_err();
    assert_eq!(e.line, 1, "{e}");

    // The command line agrees and exits non-zero for each.
    for (name, log) in [("stripped", forged), ("made-up", made_up)] {
        let file = dir.path().join(format!("{name}.jsonl"));
        std::fs::write(&file, log).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_tracegate"))
            .args(["audit", "verify", file.to_str().unwrap(), "--key-env", "TG_TEST_AUDIT_KEY"])
            .env("TG_TEST_AUDIT_KEY", CHECKPOINT_KEY)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{name}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("line 1 (record seq 0)"), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn a_reopened_log_continues_its_chain_and_says_how_the_last_run_ended() {
    let dir = tempfile::tempdir().unwrap();
    let config = AuditConfig { checkpoint_key: Some(CHECKPOINT_KEY.into()), checkpoint_every: 4, ..Default::default() };
    let path = dir.path().join("audit.jsonl");
    AuditLog::open(&config, &path).unwrap().close().unwrap();
    written_log(dir.path(), 3);
    let text = written_log(dir.path(), 3);
    let report = verify_text(&text, KEY).unwrap();
    assert_eq!(report.records, 10, "3 runs: 2 + 4 + 4 records, one chain");
    assert_eq!((report.runs, report.unclean_restarts, report.ends_cleanly), (3, 1, false));
    let starts: Vec<Value> =
        text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).filter(|r| r["checkpoint"]["kind"] == "start").collect();
    let previous: Vec<&str> = starts.iter().map(|s| s["checkpoint"]["previous"].as_str().unwrap()).collect();
    assert_eq!(previous, ["new", "clean", "unclean"]);

    // Removing the shutdown checkpoint of the first run is found by the next start checkpoint.
    let cut = with_lines(&text, |l| {
        l.remove(1);
    });
    assert!(verify_text(&cut, KEY).is_err());
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
audit: {path: "{data}/audit.jsonl", checkpoint_key: "audit-checkpoint-key-0123456789abcdef"}
service:
  pipelines:
    traces: {receivers: [otlp], exporters: [local]}
"#;
    let (gateway, dir) = start_gateway(yaml).await;
    let api = gateway.api_addr().unwrap();
    assert_eq!(get(api, "/api/v1/orders/A-1", None).await.0, 404);
    let all: Vec<Value> = records(&dir.path().join("audit.jsonl")).into_iter().filter(|r| r["action"] != "audit.checkpoint").collect();
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
    gateway.shutdown().await;
    // The rest are counted, and the count is written when the minute (here: the run) ends.
    let all = records(&dir.path().join("audit.jsonl"));
    let summaries: Vec<&Value> = all.iter().filter(|r| r["action"] == "authenticate.suppressed").collect();
    assert_eq!(summaries.len(), 1, "{all:#?}");
    assert!(summaries[0]["reason"].as_str().unwrap().contains("37 more failed authentications"), "{}", summaries[0]);
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

/// Bytes waiting in a pipe, and how many it holds at most.
fn pipe_fill(pipe: &std::fs::File) -> (usize, usize) {
    use std::os::fd::AsRawFd;
    let fd = pipe.as_raw_fd();
    let mut waiting: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer; F_GETPIPE_SZ takes no pointer.
    let (read, capacity) = unsafe { (libc::ioctl(fd, libc::FIONREAD, &mut waiting), libc::fcntl(fd, libc::F_GETPIPE_SZ)) };
    assert!(read == 0 && capacity > 0, "cannot read the pipe's fill: {}", std::io::Error::last_os_error());
    (waiting as usize, capacity as usize)
}

/// The audit file is a FIFO whose reader never reads: once the pipe's buffer (64 KiB) is full,
/// every write blocks, as on a hung network mount. The writer thread is stuck in `write`; the
/// API must go on answering what is not fail-closed, answer admin actions 503 within the ack
/// timeout, stop within its deadline, and once the file takes writes again every record is
/// there, the refused admin action saying it was refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_keeps_answering_while_the_audit_file_takes_no_writes() {
    use std::io::Read;
    use std::time::Instant;

    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("audit.fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("runs mkfifo (coreutils)");
    assert!(made.success(), "mkfifo {}", fifo.display());
    // Opening either end of a FIFO waits for the other: this open returns when the gateway opens
    // the audit file for writing.
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::File::open(fifo).expect("opens the FIFO for reading"))
    };
    let yaml = secured_config()
        .replace("\"{data}/audit.jsonl\"", &format!("\"{}\"", fifo.display()))
        .replace("service:\n  pipelines:", "service:\n  shutdown_timeout: 2s\n  pipelines:");
    let (gateway, _data) = start_gateway(&yaml).await;
    let reader = reader.join().unwrap();
    let api = gateway.api_addr().unwrap();
    let http = gateway.http_addr().unwrap();
    let tokens = mint(&[
        spec(Idp::Auth0, claims(Idp::Auth0, "ada", &["admin"])),
        spec(Idp::Auth0, claims(Idp::Auth0, "sam", &["support"])),
        spec(Idp::Auth0, service_claims(Idp::Auth0, "shop-api")),
    ]);
    let (ada, sam, shop) = (&tokens[0], &tokens[1], &tokens[2]);
    assert_eq!(get(api, "/api/v1/admin/config", Some(ada)).await.0, 200, "an admin action while the file takes writes");

    // Each read is one record of about 700 bytes (the order id is 200 characters): 300 of them
    // are three times the pipe's buffer. Reads never wait for the file for long.
    let mut slowest = Duration::ZERO;
    for i in 0..300 {
        let started = Instant::now();
        assert_eq!(get(api, &format!("/api/v1/orders/A-{i:0>200}"), Some(sam)).await.0, 404);
        slowest = slowest.max(started.elapsed());
    }
    assert!(slowest < Duration::from_secs(2), "a read waited {slowest:?} for the stalled audit file");
    let (waiting, capacity) = pipe_fill(&reader);
    // Full: the pipe's pages are not filled to the byte (a record that does not fit the rest of
    // a page starts the next one), so the writer blocks with somewhat less than `capacity` in it.
    assert!(waiting > capacity * 3 / 4, "the pipe is full, the writer blocked: {waiting} of {capacity} bytes");

    // An admin action waits for its record, then is refused; meanwhile reads and OTLP are answered.
    let admin = async {
        let started = Instant::now();
        let (status, body) = get(api, "/api/v1/admin/config", Some(ada)).await;
        (status, body, started.elapsed())
    };
    let others = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut slowest = Duration::ZERO;
        for _ in 0..20 {
            let started = Instant::now();
            assert_eq!(get(api, "/api/v1/orders", Some(sam)).await.0, 200);
            let auth = format!("Bearer {shop}");
            let headers = [("content-type", "application/x-protobuf"), ("authorization", auth.as_str())];
            let (status, _, _) =
                send("POST", &format!("http://{http}/v1/traces"), &headers, service_request("shop-api").encode_to_vec()).await;
            assert_eq!(status, 200, "OTLP is taken while the audit file stalls");
            slowest = slowest.max(started.elapsed());
        }
        slowest
    };
    let ((status, body, took), slowest) = tokio::join!(admin, others);
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "audit_unavailable", "{body}");
    assert!(took < Duration::from_secs(5 + 3), "the admin action was refused after {took:?}, not within the 5s ack timeout");
    assert!(slowest < Duration::from_secs(2), "a read and an OTLP request took {slowest:?} while an admin action waited");
    assert_eq!(get(api, "/api/v1/orders", Some(sam)).await.0, 200, "reads go on after the refusal");

    // The stop is bounded too (shutdown_timeout 2s; the audit file gets at least 2s).
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(30), gateway.shutdown()).await.expect("the gateway stops while the audit file stalls");
    let stopped = started.elapsed();
    assert!(stopped < Duration::from_secs(15), "stopping took {stopped:?}");

    // The file takes writes again: everything queued is written, the shutdown checkpoint last,
    // and the writer closes the file (end of file for the reader).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = reader;
        let mut text = String::new();
        let read = reader.read_to_string(&mut text).map(|_| text);
        let _ = tx.send(read);
    });
    let text = rx.recv_timeout(Duration::from_secs(30)).expect("the writer finishes once the file takes writes").unwrap();
    let report = verify_text(&text, KEY).unwrap_or_else(|e| panic!("{e}"));
    assert!(report.ends_cleanly, "the shutdown checkpoint follows the queued records");
    let all: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let reads = all.iter().filter(|r| r["action"] == "order.read" && r["actor"]["sub"] == "sam").count();
    assert_eq!(reads, 300, "no record of a read was lost");
    let admin: Vec<&Value> = all.iter().filter(|r| r["action"] == "config.read").collect();
    assert_eq!(admin.len(), 2, "{admin:#?}");
    assert_eq!(admin[0]["outcome"], "allowed");
    assert_eq!(admin[1]["outcome"], "refused", "the refused admin action is not recorded as allowed: {}", admin[1]);
    assert!(admin[1]["reason"].as_str().unwrap_or_default().contains("not carried out"), "{}", admin[1]);
}
