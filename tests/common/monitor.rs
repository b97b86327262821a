//! Order-monitor fixtures shared by tests/order_monitor.rs and tests/order_monitor_es.rs: the
//! clock, a webhook receiver that records every notice, and posting order events.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::common::{eventually, send, when};
use crate::common::ports::free_port;

pub const SEC: u64 = 1_000_000_000;

pub fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// A webhook receiver that records every POST body it accepts.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    pub bodies: Arc<Mutex<Vec<Value>>>,
    /// Until then, every POST is answered 503 and not recorded (a receiver that is down).
    refuse_until: Arc<Mutex<Option<std::time::Instant>>>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let bodies: Arc<Mutex<Vec<Value>>> = Arc::default();
        let refuse_until: Arc<Mutex<Option<std::time::Instant>>> = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (kept, refusing) = (bodies.clone(), refuse_until.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |body: axum::body::Bytes| {
                let (kept, refusing) = (kept.clone(), refusing.clone());
                async move {
                    if refusing.lock().unwrap().is_some_and(|until| std::time::Instant::now() < until) {
                        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "down");
                    }
                    kept.lock().unwrap().push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                    (axum::http::StatusCode::OK, "ok")
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { addr, bodies, refuse_until }
    }

    /// Answers 503 to every notice for `down` from now on.
    pub fn refuse_for(&self, down: Duration) {
        *self.refuse_until.lock().unwrap() = Some(std::time::Instant::now() + down);
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// (kind, order, rule) -> how many notices.
    pub fn counts(&self) -> BTreeMap<(String, String, String), usize> {
        let mut out = BTreeMap::new();
        for b in self.bodies.lock().unwrap().iter() {
            let key = (
                b["kind"].as_str().unwrap_or("?").to_string(),
                b["order_id"].as_str().unwrap_or("?").to_string(),
                b["rule"].as_str().unwrap_or("?").to_string(),
            );
            *out.entry(key).or_insert(0) += 1;
        }
        out
    }

    pub fn count(&self, kind: &str) -> usize {
        self.bodies.lock().unwrap().iter().filter(|b| b["kind"] == kind).count()
    }

    pub async fn wait_for(&self, kind: &str, n: usize, timeout: Duration) {
        eventually(&format!("{n} {kind} notices at the receiver"), timeout, || async {
            if self.count(kind) >= n {
                Ok(())
            } else {
                Err(format!("{} {kind} notices: {:?}", self.count(kind), self.counts()))
            }
        })
        .await
    }
}

pub async fn post_events(http: SocketAddr, events: &[Value]) {
    for chunk in events.chunks(200) {
        let (status, _, body) = send(
            "POST",
            &format!("http://{http}/v1/order-events"),
            &[("content-type", "application/json")],
            Value::from(chunk.to_vec()).to_string().into_bytes(),
        )
        .await;
        assert_eq!(status, 200, "order events refused: {}", String::from_utf8_lossy(&body));
    }
}

/// Kills the gateway when the test ends, however it ends.
pub struct ChildGateway(pub Child);

impl Drop for ChildGateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn spawn_gateway(config: &std::path::Path, log: &std::path::Path) -> ChildGateway {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    ChildGateway(
        Command::new(env!("CARGO_BIN_EXE_tracegate"))
            .args(["run", "--config"])
            .arg(config)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap(),
    )
}

pub async fn wait_healthy(api: SocketAddr) {
    eventually(&format!("tracegate healthy on {api}"), Duration::from_secs(20), || async {
        match tokio::net::TcpStream::connect(api).await {
            Ok(_) => when(super::common::get_json(&format!("http://{api}/healthz")).await.0, |&s| s == 200).map(drop),
            Err(e) => Err(e.to_string()),
        }
    })
    .await
}

/// A status event of `order` from crm-api at `t` (ns since the epoch).
pub fn status_event(order: &str, status: &str, t: u64) -> Value {
    serde_json::json!({"order_id": order, "service": "crm-api", "status": status, "time": tracegate::shared::format_rfc3339_nanos(t)})
}

/// The real binary after a `kill -9` and a restart, from [`kill_9_scenario`].
pub struct Restarted {
    pub gateway: ChildGateway,
    pub http: SocketAddr,
    pub api: SocketAddr,
    pub log: std::path::PathBuf,
    /// When the scenario's events start (ns since the epoch).
    pub t0: u64,
    pub dir: tempfile::TempDir,
}

/// The `kill -9` scenario run against each monitor state backend (tests/order_monitor.rs: the
/// embedded store; tests/order_monitor_es.rs: Elasticsearch). `backend` is the YAML of the
/// `exporters`, `service` (and `query`) sections, `{dir}` in it a temp dir of the test's. The real
/// binary runs with 2 s / 8 s rules; FIRST-* deadlines pass while it runs, DOWN-* while it is
/// killed, AFTER-* (`slow`) after the restart. Returns once the restarted gateway has fired all 40.
pub async fn kill_9_scenario(receiver: &Receiver, backend: &str) -> Restarted {
    let dir = tempfile::tempdir().unwrap();
    let (http_port, api_port) = (free_port(), free_port());
    let config = dir.path().join("tracegate.yaml");
    let common = format!(
        r#"
receivers:
  otlp: {{http: {{endpoint: "127.0.0.1:{http_port}"}}}}
notifiers:
  hook: {{type: webhook, url: "{hook}"}}
api: {{endpoint: "127.0.0.1:{api_port}"}}
monitors:
  sla:
    type: order_sla
    lifecycle: [new, accepted, manufactured]
    grace: 1s
    rules:
      - {{name: crm_accepts, from: new, to: accepted, within: 2s}}
      - {{name: slow, from: accepted, to: manufactured, within: 8s}}
    notify: [hook]
"#,
        hook = receiver.url(),
    );
    std::fs::write(&config, common + &backend.replace("{dir}", dir.path().to_str().unwrap())).unwrap();
    let log = dir.path().join("tracegate.log");
    let http: SocketAddr = format!("127.0.0.1:{http_port}").parse().unwrap();
    let api: SocketAddr = format!("127.0.0.1:{api_port}").parse().unwrap();

    let mut gateway = spawn_gateway(&config, &log);
    wait_healthy(api).await;
    let t0 = now_ns();
    let mut events = Vec::new();
    // FIRST: deadlines pass while the first run is up (t0 + 0.5 s).
    // DOWN: deadlines pass while the gateway is dead (t0 + 3 s).
    // AFTER: `slow` deadlines pass after the restart (t0 + 9 s).
    for i in 0..10 {
        events.push(status_event(&format!("FIRST-{i}"), "new", t0 - 5 * SEC / 2));
        events.push(status_event(&format!("AFTER-{i}"), "new", t0 - SEC / 2));
        events.push(status_event(&format!("AFTER-{i}"), "accepted", t0));
    }
    for i in 0..20 {
        events.push(status_event(&format!("DOWN-{i}"), "new", t0));
    }
    post_events(http, &events).await;
    receiver.wait_for("fired", 10, Duration::from_secs(5)).await;
    // The monitor wrote the pending clocks (the gauge is set in the turn that writes them)...
    eventually("30 pending clocks", Duration::from_secs(5), || async {
        when(super::common::metric(&super::common::metrics_text(api).await, "tracegate_order_monitor_pending", &[]), |&n| n == 30.0)
    })
    .await;
    // ... and, in the next turns, the confirmations of the ten notices, which nothing outside
    // shows: a fixed margin for them, in which nothing else may fire.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.count("fired"), 10);

    // kill -9, with 30 deadlines pending; 20 of them pass during the downtime (the subject).
    gateway.0.kill().unwrap();
    gateway.0.wait().unwrap();
    tokio::time::sleep(Duration::from_nanos((t0 + 4 * SEC).saturating_sub(now_ns()))).await;
    assert_eq!(receiver.count("fired"), 10, "nothing fires while the gateway is dead");

    let gateway = spawn_gateway(&config, &log);
    wait_healthy(api).await;
    receiver.wait_for("fired", 30, Duration::from_secs(10)).await;
    receiver.wait_for("fired", 40, Duration::from_secs(10)).await;
    Restarted { gateway, http, api, log, t0, dir }
}

/// After [`kill_9_scenario`]: each of the 40 alerts fired once, FIRST-* and DOWN-* by
/// `crm_accepts`, AFTER-* by `slow`.
pub fn assert_each_fired_once(receiver: &Receiver) {
    let counts = receiver.counts();
    let duplicates: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicates.is_empty(), "notices sent twice: {duplicates:?}");
    assert_eq!(receiver.count("fired"), 40, "{counts:?}");
    let fired_rules: std::collections::BTreeSet<(String, String)> =
        counts.keys().filter(|(k, _, _)| k == "fired").map(|(_, o, r)| (o.split('-').next().unwrap().to_string(), r.clone())).collect();
    assert_eq!(
        fired_rules,
        [("AFTER", "slow"), ("DOWN", "crm_accepts"), ("FIRST", "crm_accepts")]
            .iter()
            .map(|(o, r)| (o.to_string(), r.to_string()))
            .collect()
    );
}
