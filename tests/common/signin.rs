//! What the browser tests share (tests/signin.rs, tests/console_browser.rs): the real OpenID
//! Connect provider (npm `oidc-provider`, tests/signin/idp.mjs), a node script driving Debian's
//! chromium (npm `playwright-core`) whose observations come back as one `RESULT {...}` line,
//! and the gateway's `auth.login` section for that provider.
//! `scripts/test.sh` installs chromium and `npm ci`s tests/browser; without them these tests
//! fail, saying how to install.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// A child process killed when the test ends, however it ends.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// Everything a browser test needs (node, chromium, and the npm `packages` in
/// tests/browser/node_modules), or a loud failure saying how to get it.
pub fn check_tools(packages: &[&str]) {
    let modules = root().join("tests/browser/node_modules");
    for package in packages {
        assert!(
            modules.join(package).is_dir(),
            "tests/browser/node_modules/{package} is missing: run `bash scripts/test.sh` (or `npm ci` in tests/browser with PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1)"
        );
    }
    let chromium = std::env::var("CHROMIUM_BIN").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(Path::new(&chromium).exists(), "{chromium} is missing: install Debian's chromium (scripts/test.sh does)");
    let node = Command::new("node").arg("--version").output().expect("node runs (install Node.js 18 or later)");
    assert!(node.status.success(), "node --version failed");
}

/// Starts the provider for a gateway at `public_url` (roles in the ID token and userinfo, or
/// with `roles_in: "userinfo"` in userinfo only); returns it and its issuer.
pub fn start_idp(public_url: &str, roles_in: &str) -> (Running, String) {
    let mut child = Command::new("node")
        .arg(root().join("tests/signin/idp.mjs"))
        .arg(public_url)
        .env("ROLES_IN", roles_in)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node starts the provider");
    let stdout = child.stdout.take().unwrap();
    let running = Running(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let issuer = line.trim().strip_prefix("READY ").unwrap_or_else(|| panic!("the provider did not start: {line:?}")).to_string();
    (running, issuer)
}

/// Runs a browser script with `GATEWAY` (the gateway's public URL), `IDP` (the issuer) and
/// `env` in its environment; 4 minutes at most (killed after that).
pub fn run_browser(script: &Path, public_url: &str, issuer: &str, env: &[(&str, String)]) -> std::process::Output {
    let child = Command::new("node")
        .arg(script)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("GATEWAY", public_url)
        .env("IDP", issuer)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("node runs the browser script");
    let pid = child.id();
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if wait.recv_timeout(Duration::from_secs(240)).is_err() {
            // Still running after 4 minutes: end it (its own id only).
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    });
    let out = child.wait_with_output().unwrap();
    let _ = done.send(());
    let _ = watchdog.join();
    out
}

/// The script's RESULT object; the script must have succeeded.
pub fn browser_result(out: &std::process::Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let result: Value = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .map(|j| serde_json::from_str(j).unwrap())
        .unwrap_or_else(|| panic!("no RESULT line from the browser script: {stdout}"));
    eprintln!("browser result: {result:#}");
    assert!(out.status.success(), "the browser script failed: {result}");
    result
}

/// The `auth.login` part (indented under `auth:`) for the provider at `issuer` and a gateway
/// on `127.0.0.1:{port}`: the provider's `tg-support`/`tg-admin` roles, rechecked every 2 s.
pub fn login_yaml(port: u16, issuer: &str) -> String {
    format!(
        r#"  login:
    issuer: "{issuer}"
    client_id: tracegate
    client_secret: tracegate-secret-0123456789
    public_url: "http://127.0.0.1:{port}"
    scopes: [openid, profile, roles]
    roles: {{claims: [/roles], map: {{tg-support: support, tg-admin: admin}}}}
    recheck: 2s
    allow_insecure_loopback: true
"#
    )
}

/// The audit log's records (`{data}/audit.jsonl`).
pub fn audit_records(data: &Path) -> Vec<Value> {
    std::fs::read_to_string(data.join("audit.jsonl")).unwrap_or_default().lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// Is there a record of `action` with `outcome` by the subject `sub`?
pub fn audited(records: &[Value], action: &str, outcome: &str, sub: &str) -> bool {
    records.iter().any(|r| r["action"] == action && r["outcome"] == outcome && r["actor"]["sub"] == sub)
}
