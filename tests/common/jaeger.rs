//! Jaeger v2 as a test peer: the binary named by `JAEGER_BIN` (`scripts/test.sh` builds it with
//! `scripts/jaeger/install.sh`), run with the quick start's own configuration
//! (`scripts/jaeger/config.yaml`) on free ports.
#![allow(dead_code)]

#[path = "listening.rs"]
mod listening;

use crate::common::ports::free_port;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The Jaeger binary, or `None` after telling the person running the tests that `test` is
/// skipped. The line is written to the real stderr, past the test harness's capture, so a
/// skipped test never reads as a silent pass.
pub fn jaeger_bin(test: &str) -> Option<PathBuf> {
    match std::env::var_os("JAEGER_BIN") {
        Some(path) if !path.is_empty() => {
            let path = PathBuf::from(path);
            assert!(path.is_file(), "JAEGER_BIN={} is not a file; run `bash scripts/jaeger/install.sh`", path.display());
            Some(path)
        }
        _ => {
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: JAEGER_BIN is not set (`bash scripts/test.sh` builds Jaeger and sets it; \
                 or run `export JAEGER_BIN=$(bash scripts/jaeger/install.sh)`)"
            );
            None
        }
    }
}

/// The addresses a Jaeger of the quick start's configuration listens on.
#[derive(Debug, Clone)]
pub struct JaegerPorts {
    /// The query API and UI (`/api/traces`, `/search`).
    pub ui: SocketAddr,
    pub query_grpc: SocketAddr,
    pub otlp_grpc: SocketAddr,
    pub otlp_http: SocketAddr,
}

impl JaegerPorts {
    pub fn free() -> JaegerPorts {
        let addr = || SocketAddr::from(([127, 0, 0, 1], free_port()));
        JaegerPorts { ui: addr(), query_grpc: addr(), otlp_grpc: addr(), otlp_http: addr() }
    }

    /// The variables `scripts/jaeger/config.yaml` reads.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("JAEGER_UI_ENDPOINT", self.ui.to_string()),
            ("JAEGER_QUERY_GRPC_ENDPOINT", self.query_grpc.to_string()),
            ("JAEGER_OTLP_GRPC_ENDPOINT", self.otlp_grpc.to_string()),
            ("JAEGER_OTLP_HTTP_ENDPOINT", self.otlp_http.to_string()),
        ]
    }

    pub fn ui_url(&self) -> String {
        format!("http://{}", self.ui)
    }

    pub fn otlp_grpc_url(&self) -> String {
        format!("http://{}", self.otlp_grpc)
    }
}

/// A running Jaeger, stopped when dropped.
pub struct Jaeger {
    child: Child,
    pub ports: JaegerPorts,
    pub log: PathBuf,
}

impl Jaeger {
    /// Starts `bin --config scripts/jaeger/config.yaml` on free ports, logging to `dir`, and
    /// waits until its query API and OTLP receiver accept connections.
    pub fn start(bin: &Path, dir: &Path) -> Jaeger {
        Jaeger::start_with(bin, dir, &[])
    }

    /// [`Jaeger::start`] with more environment for the configuration (e.g.
    /// `JAEGER_QUERY_BASE_PATH`).
    pub fn start_with(bin: &Path, dir: &Path, env: &[(&str, &str)]) -> Jaeger {
        let ports = JaegerPorts::free();
        let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/jaeger/config.yaml");
        let log = dir.join("jaeger.log");
        let child = Command::new(bin)
            .arg("--config")
            .arg(&config)
            .envs(ports.env())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.join("jaeger.stderr.log")).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut jaeger = Jaeger { child, ports, log };
        jaeger.wait_listening(Duration::from_secs(60));
        jaeger
    }

    fn wait_listening(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for addr in [self.ports.ui, self.ports.otlp_grpc] {
            while !listening::accepts(&addr) {
                if let Some(status) = self.child.try_wait().unwrap() {
                    panic!("Jaeger exited ({status}) before listening on {addr}:\n{}", self.logs());
                }
                assert!(Instant::now() < deadline, "Jaeger does not listen on {addr} after {timeout:?}:\n{}", self.logs());
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// `yaml` (a test configuration whose pipeline exports to an embedded exporter `local`) with
    /// an OTLP exporter `jaeger` to this Jaeger beside `local`, in the same pipeline.
    pub fn exporting_to_it(&self, yaml: &str) -> String {
        let yaml = yaml
            .replace(
                "  local: {type: embedded",
                &format!(
                    "  jaeger: {{type: otlp, endpoint: \"{}\", batch: {{max_wait: 5ms}}}}\n  local: {{type: embedded",
                    self.ports.otlp_grpc_url()
                ),
            )
            .replace("exporters: [local]", "exporters: [jaeger, local]");
        assert!(
            yaml.contains("  jaeger: {type: otlp") && yaml.contains("exporters: [jaeger, local]"),
            "no exporter `local` to add Jaeger beside: {yaml}"
        );
        yaml
    }

    pub fn logs(&self) -> String {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        format!("{}{}", read(&self.log), read(&self.log.with_file_name("jaeger.stderr.log")))
    }
}

impl Drop for Jaeger {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `text` percent-encoded for a query string (everything but RFC 3986's unreserved characters).
pub fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// `{"order.id":"<id>"}` URL-encoded: Jaeger's tag search.
pub fn order_tag(order_id: &str) -> String {
    url_encode(&serde_json::json!({"order.id": order_id}).to_string())
}

/// The quick start's gateway (`config/quickstart/jaeger.yaml` as shipped) exporting to `jaeger`,
/// with free ports and its data under `data`.
pub async fn start_quickstart_gateway(jaeger: &Jaeger, data: &Path) -> tracegate::Gateway {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("config/quickstart/jaeger.yaml")).unwrap();
    let jaeger_endpoint = jaeger.ports.otlp_grpc_url();
    let env = |name: &str| match name {
        "TRACEGATE_GRPC_ENDPOINT" | "TRACEGATE_HTTP_ENDPOINT" | "TRACEGATE_API_ENDPOINT" => Some("127.0.0.1:0".to_string()),
        "TRACEGATE_DATA_DIR" => Some(data.to_str().unwrap().to_string()),
        "JAEGER_ENDPOINT" => Some(jaeger_endpoint.clone()),
        _ => None,
    };
    let config = tracegate::Config::from_yaml_with_env(&text, &env).unwrap();
    tracegate::Gateway::start(config).await.expect("the quick start's gateway starts")
}
