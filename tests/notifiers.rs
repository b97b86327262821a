//! The notifiers against real peers, through the library API (`Notifier::build` + `deliver`):
//! a real Alertmanager (Debian's `prometheus-alertmanager`, one instance per test on free ports,
//! routing to a webhook receiver in the test), a real SMTP server (aiosmtpd from ./.venv, plain
//! and with STARTTLS + AUTH), and webhook receivers in the test that check the signature and
//! answer as scripted. The configuration errors are read through `Config::from_yaml`.

mod common;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use common::ports::{free_port, refusing_port};
use common::{eventually, when};
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tracegate::notifiers::{Notice, NoticeKind, Notifier, NotifierConfig, NotifyError};
use tracegate::orders::{AlertState, LastEvent, OrderAlert, Severity};
use tracegate::telemetry::Metrics;

// ---------------------------------------------------------------------------------------------
// Notices and notifiers

fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// A firing `crm_accepts` alert of `order_id` that fired 30 s ago.
fn firing(order_id: &str) -> OrderAlert {
    let now = now_ns();
    OrderAlert {
        order_id: order_id.into(),
        monitor: "order_sla".into(),
        rule: "crm_accepts".into(),
        from: "new".into(),
        to: "accepted".into(),
        severity: Severity::Warning,
        threshold_seconds: 900.0,
        elapsed_seconds: 1260.0,
        state: AlertState::Firing,
        fired_at: now - 30_000_000_000,
        resolved_at: None,
        late_data: false,
        current_status: Some("new".into()),
        last_event: Some(LastEvent { service: Some("shop-api".into()), stage: Some("bus_publish".into()), time: now - 1_290_000_000_000 }),
        service: Some("shop-api".into()),
    }
}

fn fired(order_id: &str) -> Notice {
    Notice { kind: NoticeKind::Fired, alert: firing(order_id), link: Some(format!("https://support.shop.example/orders/{order_id}")) }
}

/// The resolution: its last event is the one that reached `to`, in another service.
fn resolved(order_id: &str) -> Notice {
    let mut alert = firing(order_id);
    alert.state = AlertState::Resolved;
    alert.resolved_at = Some(now_ns() - 1_000_000_000);
    alert.current_status = Some("accepted".into());
    alert.last_event =
        Some(LastEvent { service: Some("crm-api".into()), stage: Some("status_change".into()), time: now_ns() - 2_000_000_000 });
    Notice { kind: NoticeKind::Resolved, alert, link: Some(format!("https://support.shop.example/orders/{order_id}")) }
}

/// `notifiers.<id>` of a YAML configuration, read the way `tracegate run` reads it.
fn notifier_config(id: &str, body: &str) -> NotifierConfig {
    let yaml = format!(
        "receivers: {{otlp: {{grpc: {{endpoint: \"127.0.0.1:0\"}}}}}}\nexporters: {{debug: {{}}}}\n\
         service: {{pipelines: {{traces: {{receivers: [otlp], exporters: [debug]}}}}}}\nnotifiers:\n  {id}: {body}\n"
    );
    let config = tracegate::Config::from_yaml(&yaml).unwrap_or_else(|e| panic!("notifier config invalid: {e}\n{yaml}"));
    config.notifiers.get(id).cloned().unwrap()
}

fn build(id: &str, body: &str) -> (Notifier, Arc<Metrics>) {
    let metrics = Metrics::new();
    let notifier = Notifier::build(id, &notifier_config(id, body), &metrics).expect("notifier builds");
    (notifier, metrics)
}

/// The value of `tracegate_notifications_total{notifier=id,outcome}`.
fn outcome(metrics: &Metrics, id: &str, outcome: &str) -> u64 {
    let needle = format!("tracegate_notifications_total{{notifier=\"{id}\",outcome=\"{outcome}\"}} ");
    let text = metrics.render();
    text.lines()
        .find_map(|l| l.strip_prefix(&needle))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or_else(|| panic!("{needle} not in\n{text}"))
}

/// A child process killed with the test.
struct Peer(Child);

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// A scripted HTTP receiver (webhook targets, Alertmanager's webhook receiver)

#[derive(Default)]
struct Receiver {
    /// Statuses to answer, in order; 200 once the script is used up.
    script: Mutex<VecDeque<u16>>,
    /// Every request: headers, body, and the status answered.
    seen: Mutex<Vec<(HeaderMap, Bytes, u16)>>,
    /// When set, requests whose signature does not verify with this key are answered 401.
    secret: Option<Vec<u8>>,
}

impl Receiver {
    fn answered(&self, status: u16) -> usize {
        self.seen.lock().unwrap().iter().filter(|(_, _, s)| *s == status).count()
    }
    fn bodies(&self) -> Vec<Value> {
        self.seen.lock().unwrap().iter().map(|(_, b, _)| serde_json::from_slice(b).unwrap()).collect()
    }
}

/// The receiver's own check, written from the documentation (not with tracegate's code):
/// HMAC-SHA256 over `"{timestamp}.{body}"`, hex, `sha256=` prefix, timestamp within 5 minutes.
fn verify(secret: &[u8], headers: &HeaderMap, body: &[u8]) -> bool {
    let (Some(ts), Some(sig)) = (headers.get("x-tracegate-timestamp"), headers.get("x-tracegate-signature")) else { return false };
    let (Ok(ts), Ok(sig)) = (ts.to_str(), sig.to_str()) else { return false };
    let Ok(ts_num) = ts.parse::<u64>() else { return false };
    if (now_ns() / 1_000_000_000).abs_diff(ts_num) > 300 {
        return false;
    }
    let Some(hex_sig) = sig.strip_prefix("sha256=") else { return false };
    let Ok(given) = hex::decode(hex_sig) else { return false };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

async fn receive(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let status = if r.secret.as_ref().is_some_and(|s| !verify(s, &headers, &body)) {
        401
    } else {
        r.script.lock().unwrap().pop_front().unwrap_or(200)
    };
    r.seen.lock().unwrap().push((headers, body, status));
    StatusCode::from_u16(status).unwrap()
}

async fn start_receiver(script: &[u16], secret: Option<&str>) -> (SocketAddr, Arc<Receiver>) {
    let receiver = Arc::new(Receiver {
        script: Mutex::new(script.iter().copied().collect()),
        secret: secret.map(|s| s.as_bytes().to_vec()),
        ..Default::default()
    });
    let app = Router::new().route("/{*path}", post(receive)).with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, receiver)
}

// ---------------------------------------------------------------------------------------------
// Webhook

#[tokio::test]
async fn webhook_body_is_signed_and_a_wrong_secret_is_refused() {
    let (addr, receiver) = start_receiver(&[], Some("s3cret")).await;
    let (hook, metrics) =
        build("hook", &format!("{{type: webhook, url: \"http://{addr}/hooks/abc\", secret: s3cret, headers: {{X-Api-Key: k1}}}}"));
    hook.deliver(&fired("A-1001")).await.expect("delivered");
    assert_eq!(receiver.answered(200), 1);
    let (headers, body, _) = receiver.seen.lock().unwrap()[0].clone();
    assert_eq!(headers.get("idempotency-key").unwrap(), "order_sla/crm_accepts/A-1001/fired");
    assert_eq!(headers.get("x-api-key").unwrap(), "k1");
    assert_eq!(headers.get("content-type").unwrap(), "application/json");
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["id"], "order_sla/crm_accepts/A-1001/fired");
    assert_eq!(body["kind"], "fired");
    assert_eq!(body["state"], "firing");
    assert_eq!(body["order_id"], "A-1001");
    assert_eq!(body["rule"], "crm_accepts");
    assert_eq!(body["from"], "new");
    assert_eq!(body["to"], "accepted");
    assert_eq!(body["severity"], "warning");
    assert_eq!(body["threshold_seconds"], 900.0);
    assert_eq!(body["elapsed_seconds"], 1260.0);
    assert_eq!(body["current_status"], "new");
    assert_eq!(body["last_event"]["service"], "shop-api");
    assert_eq!(body["last_event"]["stage"], "bus_publish");
    assert!(body["last_event"]["time"].as_str().unwrap().ends_with('Z'), "{body}");
    assert_eq!(body["link"], "https://support.shop.example/orders/A-1001");
    assert_eq!(body["resolved_at"], Value::Null);
    assert_eq!(outcome(&metrics, "hook", "sent"), 1);

    // Signed with another key: the receiver refuses it (401), which is not retried.
    let (wrong, metrics) = build("wrong", &format!("{{type: webhook, url: \"http://{addr}/hooks/abc\", secret: not-it}}"));
    let err = wrong.deliver(&resolved("A-1001")).await.expect_err("refused");
    assert!(matches!(err, NotifyError::Permanent(ref m) if m.contains("401")), "{err:?}");
    assert_eq!(receiver.answered(401), 1);
    assert_eq!(receiver.answered(200), 1, "nothing more was accepted");
    assert_eq!(outcome(&metrics, "wrong", "failed"), 1);
    assert_eq!(outcome(&metrics, "wrong", "retry"), 0);
}

#[tokio::test]
async fn webhook_500_then_200_delivers_once_after_a_retry() {
    let (addr, receiver) = start_receiver(&[500], Some("k")).await;
    let (hook, metrics) = build(
        "hook",
        &format!("{{type: webhook, url: \"http://{addr}/h\", secret: k, retry_on_failure: {{initial_interval: 100ms, max_interval: 200ms, max_elapsed_time: 10s}}}}"),
    );
    hook.deliver(&fired("A-2002")).await.expect("delivered after a retry");
    assert_eq!(receiver.answered(500), 1);
    assert_eq!(receiver.answered(200), 1, "received once");
    let bodies = receiver.bodies();
    assert_eq!(bodies[0]["id"], bodies[1]["id"], "the retry carries the same idempotency id");
    assert_eq!(outcome(&metrics, "hook", "retry"), 1);
    assert_eq!(outcome(&metrics, "hook", "sent"), 1);
    assert_eq!(outcome(&metrics, "hook", "failed"), 0);
}

#[tokio::test]
async fn webhook_that_always_fails_ends_in_the_dead_letter_file() {
    let (addr, receiver) = start_receiver(&[500; 100], None).await;
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead/notices.jsonl");
    let (hook, metrics) = build(
        "hook",
        &format!(
            "{{type: webhook, url: \"http://{addr}/h\", dead_letter: \"{}\", retry_on_failure: {{initial_interval: 50ms, max_interval: 100ms, max_elapsed_time: 600ms}}}}",
            dead.display()
        ),
    );
    let started = Instant::now();
    let err = hook.deliver(&fired("A-3003")).await.expect_err("gives up");
    assert!(matches!(err, NotifyError::Retryable(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "bounded by max_elapsed_time: {:?}", started.elapsed());
    let attempts = receiver.answered(500);
    assert!(attempts >= 3, "retried: {attempts} attempts");
    let text = std::fs::read_to_string(&dead).unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert_eq!(lines[0]["notifier"], "hook");
    assert_eq!(lines[0]["error_kind"], "retryable");
    assert_eq!(lines[0]["attempts"], attempts as u64);
    assert!(lines[0]["error"].as_str().unwrap().contains("500"), "{text}");
    assert!(lines[0]["time"].as_str().unwrap().ends_with('Z'), "{text}");
    assert_eq!(lines[0]["notice"]["order_id"], "A-3003");
    assert_eq!(lines[0]["notice"]["id"], "order_sla/crm_accepts/A-3003/fired");
    assert_eq!(outcome(&metrics, "hook", "retry"), attempts as u64 - 1);
    assert_eq!(outcome(&metrics, "hook", "failed"), 1);
    assert_eq!(outcome(&metrics, "hook", "dead_lettered"), 1);
    assert_eq!(outcome(&metrics, "hook", "sent"), 0);
}

#[tokio::test]
async fn webhook_400_is_not_retried() {
    let (addr, receiver) = start_receiver(&[400, 200], None).await;
    let dir = tempfile::tempdir().unwrap();
    let dead = dir.path().join("dead.jsonl");
    let (hook, metrics) = build(
        "hook",
        &format!(
            "{{type: webhook, url: \"http://{addr}/h\", dead_letter: \"{}\", retry_on_failure: {{initial_interval: 50ms}}}}",
            dead.display()
        ),
    );
    let err = hook.deliver(&fired("A-4004")).await.expect_err("permanent");
    assert!(matches!(err, NotifyError::Permanent(ref m) if m.contains("400")), "{err:?}");
    assert_eq!(receiver.seen.lock().unwrap().len(), 1, "one attempt only");
    let line: Value = serde_json::from_str(std::fs::read_to_string(&dead).unwrap().trim()).unwrap();
    assert_eq!(line["error_kind"], "permanent");
    assert_eq!(outcome(&metrics, "hook", "retry"), 0);
    assert_eq!(outcome(&metrics, "hook", "dead_lettered"), 1);
}

#[tokio::test]
async fn webhook_connection_refused_is_retried_then_given_up() {
    let (port, _refusing) = refusing_port();
    let (hook, metrics) = build(
        "hook",
        &format!("{{type: webhook, url: \"http://127.0.0.1:{port}/h\", retry_on_failure: {{initial_interval: 50ms, max_interval: 50ms, max_elapsed_time: 300ms}}}}"),
    );
    let err = hook.deliver(&fired("A-5005")).await.expect_err("nobody listens");
    assert!(matches!(err, NotifyError::Retryable(_)), "{err:?}");
    assert!(outcome(&metrics, "hook", "retry") >= 2);
    assert_eq!(outcome(&metrics, "hook", "failed"), 1);
}

// ---------------------------------------------------------------------------------------------
// Alertmanager

fn alertmanager_binary() -> PathBuf {
    if let Ok(path) = std::env::var("ALERTMANAGER_BIN") {
        return PathBuf::from(path);
    }
    for candidate in ["/usr/bin/prometheus-alertmanager", "/usr/local/bin/alertmanager", "/usr/bin/alertmanager"] {
        if Path::new(candidate).is_file() {
            return PathBuf::from(candidate);
        }
    }
    panic!(
        "Alertmanager not found (looked at $ALERTMANAGER_BIN, /usr/bin/prometheus-alertmanager, /usr/local/bin/alertmanager): \
         install Debian's prometheus-alertmanager (scripts/test.sh does) or set ALERTMANAGER_BIN"
    );
}

/// A GET with a JSON reply.
async fn get_json(url: &str) -> (u16, Value) {
    use http_body_util::{BodyExt, Empty};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let response = client.get(url.parse().unwrap()).await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

struct Alertmanager {
    url: String,
    _peer: Peer,
    _dir: tempfile::TempDir,
}

/// An Alertmanager of our own: free ports, storage in a temp dir, no clustering, routing every
/// alert to `webhook` within a second.
async fn start_alertmanager(webhook: SocketAddr) -> Alertmanager {
    let binary = alertmanager_binary();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("alertmanager.yml");
    std::fs::write(
        &config,
        format!(
            "route:\n  receiver: hook\n  group_by: [alertname, order_id]\n  group_wait: 200ms\n  group_interval: 1s\n  repeat_interval: 1h\n\
             receivers:\n  - name: hook\n    webhook_configs:\n      - url: http://{webhook}/alertmanager\n        send_resolved: true\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("alertmanager.log")).unwrap();
    let child = Command::new(&binary)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
    let peer = Peer(child);
    let url = format!("http://127.0.0.1:{port}");
    eventually(&format!("Alertmanager ready on {url}"), Duration::from_secs(20), || async {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http::<http_body_util::Empty<Bytes>>();
        match client.get(format!("{url}/-/ready").parse().unwrap()).await {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("{}", r.status())),
            Err(e) => Err(format!("{e}; its log:\n{}", std::fs::read_to_string(dir.path().join("alertmanager.log")).unwrap_or_default())),
        }
    })
    .await;
    Alertmanager { url, _peer: peer, _dir: dir }
}

/// The alerts Alertmanager holds for `order_id` (`GET /api/v2/alerts`).
async fn alerts_of(am: &Alertmanager, order_id: &str) -> Vec<Value> {
    let (status, body) = get_json(&format!("{}/api/v2/alerts", am.url)).await;
    assert_eq!(status, 200, "{body}");
    body.as_array().unwrap().iter().filter(|a| a["labels"]["order_id"] == order_id).cloned().collect()
}

/// The alerts Alertmanager's webhook receiver got for `order_id`, with the status of the
/// notification that carried each.
fn routed(receiver: &Receiver, order_id: &str) -> Vec<(String, Value)> {
    receiver
        .bodies()
        .into_iter()
        .flat_map(|n| n["alerts"].as_array().cloned().unwrap_or_default())
        .filter(|a| a["labels"]["order_id"] == order_id)
        .map(|a| (a["status"].as_str().unwrap_or("").to_string(), a))
        .collect()
}

#[tokio::test]
async fn alertmanager_gets_the_alert_routes_it_and_resolves_it() {
    let (hook_addr, am_hook) = start_receiver(&[], None).await;
    let am = start_alertmanager(hook_addr).await;
    // A second endpoint that is down: Alertmanager HA clients send to every member, and one
    // accepting is enough.
    let (down, _refusing) = refusing_port();
    let (notifier, metrics) = build(
        "alertmanager",
        &format!("{{endpoints: [\"{}\", \"http://127.0.0.1:{down}\"], retry_on_failure: {{enabled: false}}}}", am.url),
    );

    notifier.deliver(&fired("A-1001")).await.expect("one Alertmanager accepted");
    let alerts = alerts_of(&am, "A-1001").await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let alert = &alerts[0];
    let labels = &alert["labels"];
    assert_eq!(labels["alertname"], "TracegateOrderLate");
    assert_eq!(labels["rule"], "crm_accepts");
    assert_eq!(labels["order_id"], "A-1001");
    assert_eq!(labels["severity"], "warning");
    // The service it fired with: the resolution below comes from crm-api and still resolves it.
    assert_eq!(labels["service"], "shop-api");
    assert_eq!(labels.as_object().unwrap().len(), 6, "only the identity is labelled: {labels}");
    assert_eq!(labels["monitor"], "order_sla");
    assert_eq!(alert["status"]["state"], "active", "{alert}");
    assert_eq!(alert["generatorURL"], "https://support.shop.example/orders/A-1001");
    let annotations = &alert["annotations"];
    assert_eq!(annotations["link"], "https://support.shop.example/orders/A-1001");
    assert_eq!(annotations["threshold"], "15m");
    assert_eq!(annotations["elapsed"], "21m");
    assert_eq!(annotations["current_status"], "new");
    assert_eq!(annotations["last_service"], "shop-api");
    assert!(annotations["summary"].as_str().unwrap().contains("A-1001"), "{annotations}");
    assert!(annotations["description"].as_str().unwrap().contains("bus_publish"), "{annotations}");
    assert_eq!(outcome(&metrics, "alertmanager", "sent"), 1);

    // Alertmanager routes it to its own webhook receiver.
    eventually("the firing alert at Alertmanager's receiver", Duration::from_secs(10), || async {
        routed(&am_hook, "A-1001").into_iter().find(|(s, _)| s == "firing")
    })
    .await;

    // Resolution: endsAt set, the alert leaves the active list, and the receiver is told.
    notifier.deliver(&resolved("A-1001")).await.expect("resolved");
    // A resolved alert (endsAt in the past) is no longer listed.
    eventually("A-1001 no longer listed after resolution", Duration::from_secs(10), || async {
        when(alerts_of(&am, "A-1001").await, |listed| listed.is_empty())
    })
    .await;
    let (_, alert) = eventually("the resolved alert at Alertmanager's receiver", Duration::from_secs(10), || async {
        routed(&am_hook, "A-1001").into_iter().find(|(s, _)| s == "resolved")
    })
    .await;
    assert_eq!(alert["labels"]["rule"], "crm_accepts");
    assert_ne!(alert["endsAt"], "0001-01-01T00:00:00Z", "{alert}");
    assert_eq!(outcome(&metrics, "alertmanager", "sent"), 2);
}

#[tokio::test]
async fn alertmanager_with_every_endpoint_down_is_retryable() {
    let ((a, _refusing_a), (b, _refusing_b)) = (refusing_port(), refusing_port());
    let (notifier, metrics) = build(
        "am",
        &format!("{{type: alertmanager, endpoints: [\"http://127.0.0.1:{a}\", \"http://127.0.0.1:{b}/\"], retry_on_failure: {{enabled: false}}}}"),
    );
    let err = notifier.deliver(&fired("A-1")).await.expect_err("nobody listens");
    assert!(matches!(err, NotifyError::Retryable(_)), "{err:?}");
    assert_eq!(outcome(&metrics, "am", "failed"), 1);
}

// ---------------------------------------------------------------------------------------------
// E-mail

struct SmtpServer {
    port: u16,
    dir: tempfile::TempDir,
    _peer: Peer,
}

/// aiosmtpd (tests/smtp_server.py) from ./.venv; with `tls`, STARTTLS is required and the
/// server's certificate (for 127.0.0.1) is signed by a CA written to `dir/ca.pem`.
fn start_smtp(tls: bool, credentials: Option<(&str, &str)>) -> SmtpServer {
    use std::io::BufRead;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv/bin/python");
    assert!(python.is_file(), "{} not found: scripts/test.sh creates it and installs tests/requirements.txt (aiosmtpd)", python.display());
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(&python);
    command.arg(root.join("tests/smtp_server.py")).arg("--dir").arg(dir.path());
    if tls {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap().signed_by(&key, &ca).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("server.pem"), cert.pem()).unwrap();
        std::fs::write(dir.path().join("server.key"), key.serialize_pem()).unwrap();
        command.arg("--cert").arg(dir.path().join("server.pem")).arg("--key").arg(dir.path().join("server.key"));
    }
    if let Some((user, password)) = credentials {
        command.args(["--user", user, "--password", password]);
    }
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("python starts");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let port = line.strip_prefix("ready ").and_then(|p| p.trim().parse().ok()).unwrap_or_else(|| panic!("smtp_server.py said {line:?}"));
    SmtpServer { port, dir, _peer: Peer(child) }
}

/// The mails the server accepted: (envelope as JSON, the message text).
fn mails(server: &SmtpServer) -> Vec<(Value, String)> {
    let mut out = Vec::new();
    for n in 1.. {
        let eml = server.dir.path().join(format!("{n}.eml"));
        if !eml.exists() {
            break;
        }
        let envelope = serde_json::from_str(&std::fs::read_to_string(server.dir.path().join(format!("{n}.json"))).unwrap()).unwrap();
        out.push((envelope, std::fs::read_to_string(eml).unwrap()));
    }
    out
}

#[tokio::test]
async fn email_over_plain_smtp_carries_order_rule_and_link() {
    let server = start_smtp(false, None);
    let (mail, metrics) = build(
        "support_mail",
        &format!(
            "{{type: email, smtp: {{host: 127.0.0.1, port: {}, starttls: false}}, from: \"Tracegate <tracegate@shop.example>\", to: [support@shop.example, oncall@shop.example]}}",
            server.port
        ),
    );
    mail.deliver(&fired("A-1001")).await.expect("sent");
    let (envelope, text) = eventually("the mail", Duration::from_secs(10), || async { mails(&server).into_iter().next() }).await;
    assert_eq!(envelope["mail_from"], "tracegate@shop.example");
    assert_eq!(envelope["rcpt_tos"], serde_json::json!(["support@shop.example", "oncall@shop.example"]));
    assert!(text.contains("Subject: [tracegate] FIRING crm_accepts: order A-1001 (warning)"), "{text}");
    for fact in [
        "Order:",
        "A-1001",
        "crm_accepts",
        "new -> accepted",
        "Threshold:",
        "15m",
        "Elapsed:",
        "21m",
        "Current status: new",
        "bus_publish",
        "shop-api",
        "https://support.shop.example/orders/A-1001",
    ] {
        assert!(text.contains(fact), "{fact:?} missing from\n{text}");
    }
    assert_eq!(outcome(&metrics, "support_mail", "sent"), 1);

    mail.deliver(&resolved("A-1001")).await.expect("sent");
    let (_, text) = eventually("the second mail", Duration::from_secs(10), || async { mails(&server).into_iter().nth(1) }).await;
    assert!(text.contains("Subject: [tracegate] RESOLVED crm_accepts: order A-1001 (warning)"), "{text}");
    assert!(text.contains("Resolved at:"), "{text}");
}

#[tokio::test]
async fn email_with_starttls_and_auth_trusts_only_the_configured_ca() {
    let server = start_smtp(true, Some(("tracegate", "pa55")));
    let ca = server.dir.path().join("ca.pem");
    let body = |password: &str, ca: Option<&Path>| {
        format!(
            "{{type: email, smtp: {{host: 127.0.0.1, port: {}, username: tracegate, password: {password}{}}}, from: tracegate@shop.example, to: [support@shop.example], retry_on_failure: {{enabled: false}}, timeout: 5s}}",
            server.port,
            ca.map(|c| format!(", ca_file: \"{}\"", c.display())).unwrap_or_default()
        )
    };
    // STARTTLS is the default: the mail goes over TLS, after AUTH.
    let (mail, _) = build("mail", &body("pa55", Some(&ca)));
    mail.deliver(&fired("A-7007")).await.expect("sent over STARTTLS");
    let (envelope, text) = eventually("the mail", Duration::from_secs(10), || async { mails(&server).into_iter().next() }).await;
    assert_eq!(envelope["tls"], true, "{envelope}");
    assert_eq!(envelope["authenticated"], true, "{envelope}");
    assert!(text.contains("order A-7007"), "{text}");

    // A wrong password: the server refuses (535), which is permanent.
    let (wrong, metrics) = build("mail", &body("nope", Some(&ca)));
    let err = wrong.deliver(&fired("A-7008")).await.expect_err("refused");
    assert!(matches!(err, NotifyError::Permanent(_)), "{err:?}");
    assert_eq!(outcome(&metrics, "mail", "failed"), 1);

    // Without the CA, the server's certificate is not trusted: nothing is sent.
    let (untrusting, _) = build("mail", &body("pa55", None));
    let err = untrusting.deliver(&fired("A-7009")).await.expect_err("untrusted certificate");
    assert!(err.to_string().to_lowercase().contains("certificate") || err.to_string().contains("TLS"), "{err}");
    assert_eq!(mails(&server).len(), 1, "only the first mail arrived");
}

// ---------------------------------------------------------------------------------------------
// Configuration errors, with their paths

fn config_errors(notifiers: &str) -> String {
    let yaml = format!(
        "receivers: {{otlp: {{grpc: {{endpoint: \"127.0.0.1:0\"}}}}}}\nexporters: {{debug: {{}}}}\n\
         service: {{pipelines: {{traces: {{receivers: [otlp], exporters: [debug]}}}}}}\nnotifiers:\n{notifiers}"
    );
    match tracegate::Config::from_yaml(&yaml) {
        Ok(_) => panic!("accepted:\n{yaml}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_notifier_configs_are_reported_with_their_paths() {
    let cases = [
        ("  pager: {url: \"http://x\"}\n", "notifiers.pager.type: unknown notifier type \"pager\""),
        ("  hook: {type: webhook}\n", "notifiers.hook: missing field `url`"),
        ("  hook: {type: webhook, url: \"ftp://x\"}\n", "notifiers.hook.url: \"ftp://x\" needs a scheme"),
        ("  hook: {type: webhook, url: \"http://x\", colour: red}\n", "notifiers.hook.colour: unknown field `colour`"),
        (
            "  hook: {type: webhook, url: \"http://x\", headers: {x-tracegate-signature: a}}\n",
            "notifiers.hook.headers.x-tracegate-signature: set by tracegate",
        ),
        ("  alertmanager: {}\n", "notifiers.alertmanager: missing field `endpoints`"),
        ("  alertmanager: {endpoints: []}\n", "notifiers.alertmanager.endpoints: at least one"),
        ("  alertmanager: {endpoints: [\"alertmanager:9093\"]}\n", "notifiers.alertmanager.endpoints[0]:"),
        (
            "  am: {type: alertmanager, endpoints: [\"http://a:9093\"], retry_on_failure: {max_elapsed_time: soon}}\n",
            "notifiers.am.retry_on_failure.max_elapsed_time:",
        ),
        ("  mail: {type: email, smtp: {host: h}, from: a@b.example}\n", "notifiers.mail: missing field `to`"),
        ("  mail: {type: email, smtp: {host: h}, from: a@b.example, to: []}\n", "notifiers.mail.to: at least one recipient"),
        ("  mail: {type: email, smtp: {host: h, port: 70000}, from: a@b.example, to: [c@d.example]}\n", "notifiers.mail.smtp.port:"),
        (
            "  mail: {type: email, smtp: {host: h, port: 0}, from: a@b.example, to: [c@d.example]}\n",
            "notifiers.mail.smtp.port: must be between 1 and 65535",
        ),
        ("  mail: {type: email, smtp: {host: h}, from: a@b.example, to: [not-an-address]}\n", "notifiers.mail.to[0]:"),
        (
            "  mail: {type: email, smtp: {host: h, starttls: false, username: u, password: p}, from: a@b.example, to: [c@d.example]}\n",
            "notifiers.mail.smtp.starttls: the password would travel in clear",
        ),
        (
            "  mail: {type: email, smtp: {host: h, tls: true, starttls: true}, from: a@b.example, to: [c@d.example]}\n",
            "notifiers.mail.smtp.starttls:",
        ),
        (
            "  mail: {type: email, smtp: {host: h, user: u}, from: a@b.example, to: [c@d.example]}\n",
            "notifiers.mail.smtp.user: unknown field",
        ),
    ];
    for (yaml, expected) in cases {
        let errors = config_errors(yaml);
        assert!(errors.contains(expected), "{yaml}: expected {expected:?} in\n{errors}");
    }
    // Several mistakes at once are all reported.
    let errors = config_errors("  hook: {type: webhook, url: \"nope\"}\n  mail: {type: email, smtp: {host: h}, from: x, to: []}\n");
    for expected in ["notifiers.hook.url:", "notifiers.mail.from:", "notifiers.mail.to:"] {
        assert!(errors.contains(expected), "expected {expected:?} in\n{errors}");
    }
}

#[test]
fn notifier_secrets_come_from_the_environment_and_are_redacted() {
    let yaml = "receivers: {otlp: {grpc: {endpoint: \"127.0.0.1:0\"}}}\nexporters: {debug: {}}\n\
        service: {pipelines: {traces: {receivers: [otlp], exporters: [debug]}}}\nnotifiers:\n\
        \x20 hook: {type: webhook, url: \"https://chat.example/hooks/abc?token=t0k\", secret: \"${env:HOOK_SECRET}\", headers: {X-Api-Key: k3y}}\n\
        \x20 mail: {type: email, smtp: {host: smtp.example, username: u, password: \"${env:SMTP_PASSWORD}\"}, from: a@b.example, to: [c@d.example]}\n\
        \x20 alertmanager: {endpoints: [\"https://am.example\"], basic_auth: {username: u, password: b4sic}}\n";
    let env = |name: &str| match name {
        "HOOK_SECRET" => Some("h00k-secret".to_string()),
        "SMTP_PASSWORD" => Some("smtp-pa55".to_string()),
        _ => None,
    };
    let config = tracegate::Config::from_yaml_with_env(yaml, &env).unwrap_or_else(|e| panic!("{e}"));
    match &config.notifiers["hook"] {
        NotifierConfig::Webhook(c) => assert_eq!(c.secret.as_deref(), Some("h00k-secret")),
        other => panic!("{other:?}"),
    }
    match &config.notifiers["mail"] {
        NotifierConfig::Email(c) => {
            assert_eq!(c.smtp.password.as_deref(), Some("smtp-pa55"));
            assert_eq!(c.smtp.port(), 587, "STARTTLS by default, on the submission port");
        }
        other => panic!("{other:?}"),
    }
    let shown = config.redacted.to_string();
    for secret in ["h00k-secret", "smtp-pa55", "k3y", "b4sic", "t0k"] {
        assert!(!shown.contains(secret), "{secret} shown in {shown}");
    }
    assert!(shown.contains("chat.example"), "{shown}");
}
