//! The peers of tests/instrumentation.rs: a private PostgreSQL, the three instrumented services as
//! child processes, and readers for each agent's own span log (the ground truth of what it
//! emitted). Everything they need is installed by `scripts/instrumentation/install.sh`.

#[path = "../common/listening.rs"]
mod listening;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::ports::free_port;
use serde_json::Value;

/// The OpenTelemetry Java agent's version, as `scripts/instrumentation/install.sh` fetches it.
pub const JAVA_AGENT_VERSION: &str = "2.33.1";

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `~/.cache/tracegate/instrumentation` (as scripts/instrumentation/install.sh resolves it,
/// `TRACEGATE_CACHE` or `XDG_CACHE_HOME` first): the Java agent and the CRM's libraries.
pub fn cache_dir() -> PathBuf {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    let base = env("TRACEGATE_CACHE")
        .unwrap_or_else(|| env("XDG_CACHE_HOME").unwrap_or_else(|| env("HOME").expect("HOME is set").join(".cache")).join("tracegate"));
    base.join("instrumentation")
}

/// Panics with the install hint when a peer is missing: CI must fail loudly, never skip.
pub fn require(path: &Path, what: &str) {
    assert!(path.exists(), "{what} not found at {}: run `bash scripts/instrumentation/install.sh` (scripts/test.sh does)", path.display());
}

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// A private PostgreSQL (Debian's, /usr/lib/postgresql/15 unless `PG_BIN_DIR` says otherwise)
/// on a free port with its data in a temporary directory; stopped when dropped. As root it runs
/// as the `postgres` user, since PostgreSQL refuses to run as root.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

impl Postgres {
    pub fn start() -> Postgres {
        let bin = std::env::var_os("PG_BIN_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"));
        require(&bin.join("pg_ctl"), "PostgreSQL (Debian's postgresql-15)");
        let dir = tempfile::Builder::new().prefix("tracegate-postgres-").tempdir().unwrap();
        let pg = Postgres { dir, bin, port: free_port() };
        if is_root() {
            std::fs::set_permissions(pg.dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        let data = pg.data();
        pg.run("initdb", &["-D", &data, "-U", "mes", "--auth=trust", "--no-sync", "-E", "UTF8"]);
        let options = format!("-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={data} -c fsync=off", pg.port);
        let log = format!("{}/postgres.log", pg.dir.path().display());
        pg.run("pg_ctl", &["-D", &data, "-o", &options, "-l", &log, "-w", "-t", "60", "start"]);
        pg
    }

    fn data(&self) -> String {
        format!("{}/data", self.dir.path().display())
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let tool = self.bin.join(tool);
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&tool);
            c
        } else {
            Command::new(&tool)
        };
        let out = command.args(args).current_dir(self.dir.path()).output().unwrap_or_else(|e| panic!("cannot run {}: {e}", tool.display()));
        assert!(
            out.status.success(),
            "{} {args:?} failed: {}{}\n{}",
            tool.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.path().join("postgres.log")).unwrap_or_default()
        );
    }

    /// `postgres://mes@127.0.0.1:<port>/postgres` (trust authentication).
    pub fn url(&self) -> String {
        format!("postgres://mes@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let data = self.data();
        let tool = self.bin.join("pg_ctl");
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&tool);
            c
        } else {
            Command::new(&tool)
        };
        let _ = command.args(["-D", &data, "-m", "immediate", "stop"]).stdout(Stdio::null()).stderr(Stdio::null()).status();
    }
}

/// An instrumented service running as a child process in its own process group, its standard
/// output and error in files of `dir`. SIGTERM when stopped or dropped (the agents flush their
/// spans on it), SIGKILL after 20 s.
pub struct Service {
    pub name: &'static str,
    child: Option<Child>,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Service {
    pub fn spawn(name: &'static str, mut command: Command, dir: &Path) -> Service {
        let stdout = dir.join(format!("{name}.out"));
        let stderr = dir.join(format!("{name}.err"));
        let child = command
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({command:?}): {e}"));
        Service { name, child: Some(child), stdout, stderr }
    }

    /// Waits until the service accepts connections on `port`; panics with its output if it exits
    /// or is not listening after `limit`.
    pub fn wait_listening(&mut self, port: u16, limit: Duration) {
        let deadline = Instant::now() + limit;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        while !listening::accepts(&addr) {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("{} exited ({status}) before listening on {addr}:\n{}", self.name, self.output());
            }
            assert!(Instant::now() < deadline, "{} does not listen on {addr} after {limit:?}:\n{}", self.name, self.output());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn output(&self) -> String {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let tail = |s: String| s.lines().rev().take(60).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
        format!("--- {} stderr (tail) ---\n{}", self.name, tail(read(&self.stderr)))
    }

    /// SIGTERM, then waits for the exit (SIGKILL after 20 s). Returns whether it exited by itself.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else { return true };
        let group = child.id() as i32;
        unsafe { libc::kill(-group, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                unsafe { libc::kill(-group, libc::SIGKILL) };
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        unsafe { libc::kill(-group, libc::SIGKILL) };
        true
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One span as its agent recorded it in its own log.
#[derive(Clone, Debug)]
pub struct EmittedSpan {
    pub service: String,
    pub scope: String,
    pub name: String,
    /// `SERVER`, `CLIENT`, `PRODUCER`, `CONSUMER` or `INTERNAL`.
    pub kind: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub attributes: BTreeMap<String, String>,
    /// (trace id, span id) of each link.
    pub links: Vec<(String, String)>,
}

impl EmittedSpan {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// An OTLP JSON AnyValue (`{"stringValue": "x"}`, `{"intValue": "3"}`, ...) as a string.
pub fn otlp_value(value: &Value) -> String {
    match value.as_object().and_then(|o| o.iter().next()) {
        Some((_, v)) => scalar(v),
        None => String::new(),
    }
}

fn otlp_attributes(attrs: &Value) -> BTreeMap<String, String> {
    attrs
        .as_array()
        .into_iter()
        .flatten()
        .map(|kv| (kv["key"].as_str().unwrap_or_default().to_string(), otlp_value(&kv["value"])))
        .collect()
}

const OTLP_KINDS: [&str; 6] = ["UNSPECIFIED", "INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER"];

/// Spans of one OTLP JSON `ResourceSpans` object.
pub fn otlp_resource_spans(resource_spans: &Value) -> Vec<EmittedSpan> {
    let resource = otlp_attributes(&resource_spans["resource"]["attributes"]);
    let service = resource.get("service.name").cloned().unwrap_or_default();
    let mut out = Vec::new();
    for scope_spans in resource_spans["scopeSpans"].as_array().into_iter().flatten() {
        let scope = scope_spans["scope"]["name"].as_str().unwrap_or_default().to_string();
        for span in scope_spans["spans"].as_array().into_iter().flatten() {
            out.push(EmittedSpan {
                service: service.clone(),
                scope: scope.clone(),
                name: span["name"].as_str().unwrap_or_default().to_string(),
                kind: OTLP_KINDS.get(span["kind"].as_u64().unwrap_or(0) as usize).unwrap_or(&"UNSPECIFIED").to_string(),
                trace_id: span["traceId"].as_str().unwrap_or_default().to_string(),
                span_id: span["spanId"].as_str().unwrap_or_default().to_string(),
                parent_span_id: span["parentSpanId"].as_str().unwrap_or_default().to_string(),
                attributes: otlp_attributes(&span["attributes"]),
                links: span["links"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|l| (l["traceId"].as_str().unwrap_or_default().to_string(), l["spanId"].as_str().unwrap_or_default().to_string()))
                    .collect(),
            });
        }
    }
    out
}

/// The Java agent's `logging-otlp` exporter: one log line per batch, `... OtlpJsonLoggingSpanExporter - {ResourceSpans JSON}`.
pub fn java_span_log(text: &str) -> Vec<EmittedSpan> {
    const MARK: &str = "OtlpJsonLoggingSpanExporter - ";
    text.lines()
        .filter_map(|line| line.find(MARK).map(|at| &line[at + MARK.len()..]))
        .flat_map(|json| {
            let value: Value = serde_json::from_str(json).unwrap_or_else(|e| panic!("bad logging-otlp line ({e}): {json}"));
            otlp_resource_spans(&value)
        })
        .collect()
}

/// The Python SDK's `console` exporter: one pretty-printed JSON object per span, back to back.
pub fn python_span_log(text: &str) -> Vec<EmittedSpan> {
    let hex = |v: &Value| v.as_str().unwrap_or_default().trim_start_matches("0x").to_string();
    serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .map(|span| {
            let span = span.unwrap_or_else(|e| panic!("bad console exporter output: {e}"));
            EmittedSpan {
                service: scalar(&span["resource"]["attributes"]["service.name"]),
                scope: String::new(),
                name: scalar(&span["name"]),
                kind: scalar(&span["kind"]).trim_start_matches("SpanKind.").to_string(),
                trace_id: hex(&span["context"]["trace_id"]),
                span_id: hex(&span["context"]["span_id"]),
                parent_span_id: hex(&span["parent_id"]),
                attributes: span["attributes"].as_object().into_iter().flatten().map(|(k, v)| (k.clone(), scalar(v))).collect(),
                links: span["links"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|l| (hex(&l["context"]["trace_id"]), hex(&l["context"]["span_id"])))
                    .collect(),
            }
        })
        .collect()
}

/// tests/instrumentation/node/otel.js's exporter: one JSON object per line.
pub fn node_span_log(text: &str) -> Vec<EmittedSpan> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let span: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("bad span log line ({e}): {line}"));
            EmittedSpan {
                service: scalar(&span["service"]),
                scope: scalar(&span["scope"]),
                name: scalar(&span["name"]),
                kind: scalar(&span["kind"]),
                trace_id: scalar(&span["trace_id"]),
                span_id: scalar(&span["span_id"]),
                parent_span_id: scalar(&span["parent_span_id"]),
                attributes: span["attributes"].as_object().into_iter().flatten().map(|(k, v)| (k.clone(), scalar(v))).collect(),
                links: span["links"].as_array().into_iter().flatten().map(|l| (scalar(&l["trace_id"]), scalar(&l["span_id"]))).collect(),
            }
        })
        .collect()
}
