//! Elasticsearch-API servers for the tests: `noida-db` (emulates Elasticsearch 8) and
//! `osmem-server` (OpenSearch-compatible, strict bulk, no data streams), both from PyPI
//! (tests/requirements.txt; `bash scripts/test.sh` installs them into .venv). Each starts on a
//! free port within a bounded wait and is killed when dropped.
#![allow(dead_code)]

#[path = "listening.rs"]
mod listening;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EsKind {
    Noida,
    Osmem,
}

pub struct EsServer {
    pub kind: EsKind,
    pub url: String,
    pub port: u16,
    child: Option<Child>,
    data: Option<tempfile::TempDir>,
}

fn site_packages_file(relative: &str) -> Option<PathBuf> {
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/lib");
    std::fs::read_dir(&lib).ok()?.flatten().map(|d| d.path().join("site-packages").join(relative)).find(|p| p.is_file())
}

fn binary(kind: EsKind) -> PathBuf {
    let (var, relative) = match kind {
        EsKind::Noida => ("NOIDA_DB_BIN", "noida_db/noida-db"),
        EsKind::Osmem => ("OSMEM_SERVER_BIN", "osmem_server/bin/osmem-server"),
    };
    if let Some(p) = std::env::var_os(var) {
        return PathBuf::from(p);
    }
    site_packages_file(relative).unwrap_or_else(|| {
        panic!("{relative} not found under .venv/lib/*/site-packages; run `bash scripts/test.sh` once (it installs tests/requirements.txt), or set {var}")
    })
}

/// Reads the child's stdout lines on a thread until `found` returns a URL, for at most 30 s.
fn wait_for_url(child: &mut Child, found: fn(&str) -> Option<String>) -> String {
    let stdout = child.stdout.take().expect("stdout is piped");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = found(&line) {
                let _ = tx.send(url);
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(url) => url,
        Err(_) => {
            let _ = child.kill();
            panic!("the Elasticsearch test server printed no address within 30 s");
        }
    }
}

fn port_of(url: &str) -> u16 {
    url.rsplit(':').next().and_then(|p| p.trim_end_matches('/').parse().ok()).expect("url has a port")
}

impl EsServer {
    pub fn start(kind: EsKind) -> EsServer {
        match kind {
            EsKind::Noida => EsServer::noida(tempfile::tempdir().unwrap(), 0),
            EsKind::Osmem => EsServer::osmem(),
        }
    }

    fn noida(data: tempfile::TempDir, port: u16) -> EsServer {
        let mut child = Command::new(binary(EsKind::Noida))
            .args(["start", "--only", "elasticsearch", "--elasticsearch-port", &port.to_string(), "--data-dir"])
            .arg(data.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("noida-db starts");
        let url = wait_for_url(&mut child, |line| {
            let rest = line.trim().strip_prefix("elasticsearch")?;
            Some(rest.trim().to_string()).filter(|u| u.starts_with("http://"))
        });
        let server = EsServer { kind: EsKind::Noida, port: port_of(&url), url, child: Some(child), data: Some(data) };
        server.wait_until_up();
        server
    }

    fn osmem() -> EsServer {
        let mut child = Command::new(binary(EsKind::Osmem))
            .args(["--no-stdin-watch", "--no-ja", "--addr", "127.0.0.1:0", "--parent-pid", &std::process::id().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("osmem-server starts");
        let url = wait_for_url(&mut child, |line| {
            let v: serde_json::Value = serde_json::from_str(line).ok()?;
            v["url"].as_str().map(String::from)
        });
        let server = EsServer { kind: EsKind::Osmem, port: port_of(&url), url, child: Some(child), data: None };
        server.wait_until_up();
        server
    }

    fn wait_until_up(&self) {
        let addr = format!("127.0.0.1:{}", self.port);
        for _ in 0..300 {
            if std::net::TcpStream::connect(&addr).is_ok_and(|s| !listening::joined_to_itself(&s)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{:?} did not accept connections on {addr}", self.kind);
    }

    /// Stops the server (SIGTERM, then SIGKILL after 10 s); noida keeps its data directory.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            for _ in 0..500 {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts noida again on the same port with the same data.
    pub fn restart(&mut self) {
        assert_eq!(self.kind, EsKind::Noida, "only noida keeps data across a restart");
        self.stop();
        let data = self.data.take().expect("data dir");
        let mut fresh = EsServer::noida(data, self.port);
        self.child = fresh.child.take();
        self.data = fresh.data.take();
    }

    /// A JSON request to the server (tests' own checks).
    pub async fn json(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> (u16, serde_json::Value) {
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let (status, _, reply) = super::send(method, &format!("{}{path}", self.url), &[("content-type", "application/json")], body).await;
        (status, serde_json::from_slice(&reply).unwrap_or(serde_json::Value::Null))
    }

    /// Documents matching `query` in `index` after a refresh.
    pub async fn count(&self, index: &str, query: serde_json::Value) -> u64 {
        self.json("POST", "/_refresh", None).await;
        let (_, reply) = self.json("POST", &format!("/{index}/_count"), Some(serde_json::json!({"query": query}))).await;
        reply["count"].as_u64().unwrap_or(0)
    }
}

impl Drop for EsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A gateway that reads from Elasticsearch only (`query.backend: es`); its pipeline sends
/// nowhere that matters. `{url}` and `{mode}` are filled in by the test.
pub const READER: &str = r#"
receivers:
  otlp: {http: {endpoint: "127.0.0.1:0"}}
exporters:
  es: {type: elasticsearch, endpoints: ["{url}"], mapping: {mode: {mode}}}
  void: {type: debug}
api: {endpoint: "127.0.0.1:0"}
query: {backend: es}
service:
  pipelines:
    traces: {receivers: [otlp], exporters: [void]}
"#;
