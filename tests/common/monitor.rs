//! Order-monitor fixtures shared by tests/order_monitor.rs and tests/order_monitor_es.rs: the
//! clock, a webhook receiver that records every notice, and posting order events.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::common::send;

pub const SEC: u64 = 1_000_000_000;

pub fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64
}

/// A webhook receiver that records every POST body.
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    pub bodies: Arc<Mutex<Vec<Value>>>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let bodies: Arc<Mutex<Vec<Value>>> = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let kept = bodies.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |body: axum::body::Bytes| {
                let kept = kept.clone();
                async move {
                    kept.lock().unwrap().push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                    "ok"
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { addr, bodies }
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
        let deadline = tokio::time::Instant::now() + timeout;
        while self.count(kind) < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the receiver has {} {kind} notices, expected {n}: {:?}",
                self.count(kind),
                self.counts()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
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

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
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
    for _ in 0..400 {
        if tokio::net::TcpStream::connect(api).await.is_ok() {
            let (status, _) = super::common::get_json(&format!("http://{api}/healthz")).await;
            if status == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("tracegate did not start on {api}");
}
