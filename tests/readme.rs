//! The README as a new user follows it: every command of its quick starts runs, as written,
//! against a freshly started gateway (and Jaeger), and every relative link of the docs resolves.
//!
//! A quick start is the README's fenced blocks whose info string is `sh quickstart` (or
//! `sh quickstart-jaeger`), run in order with `bash -euo pipefail`. A block marked `background`
//! is one command the reader leaves running in a terminal of its own (the gateway, Jaeger): it is
//! started, must still be running when the quick start ends, and must then stop cleanly on
//! SIGTERM. The commands are rewritten only where a test must differ from a reader's machine:
//! `cargo run --release` and `target/release/tracegate` become this build's binary, the default
//! ports free ones (set through the `TRACEGATE_*_ENDPOINT` and `JAEGER_*` variables that the
//! configurations read), `data/` a temporary directory, and `curl -s` becomes `curl -sf`, so an
//! HTTP error fails the step. The `curl` lines that `tracegate demo` prints are run too.

mod common;
#[path = "common/jaeger.rs"]
mod jaeger;

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::ports::free_port;
use jaeger::{jaeger_bin, JaegerPorts};

/// How long one foreground block may take (the demo waits up to 30 s for the gateway).
const STEP_TIMEOUT: Duration = Duration::from_secs(120);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A fenced code block: its info string's words, its text, and the line it starts on.
#[derive(Debug)]
struct Block {
    info: Vec<String>,
    code: String,
    line: usize,
}

fn fenced_blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (index, line) in markdown.lines().enumerate() {
        match (&mut open, line.strip_prefix("```")) {
            (None, Some(info)) => {
                open = Some(Block { info: info.split_whitespace().map(String::from).collect(), code: String::new(), line: index + 1 })
            }
            (Some(_), Some(rest)) if rest.trim().is_empty() => blocks.extend(open.take()),
            (Some(block), _) => {
                block.code.push_str(line);
                block.code.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "a fenced block is not closed");
    blocks
}

/// The blocks of the quick start `name`, in order; a quick start without blocks is an error.
fn quick_start(name: &str) -> Vec<Block> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let blocks: Vec<Block> = fenced_blocks(&readme)
        .into_iter()
        .filter(|b| b.info.first().map(String::as_str) == Some("sh") && b.info.get(1).map(String::as_str) == Some(name))
        .collect();
    assert!(!blocks.is_empty(), "README.md has no `sh {name}` blocks");
    for block in &blocks {
        for word in &block.info[2..] {
            assert_eq!(word, "background", "README.md:{}: unknown marker {word:?}", block.line);
        }
    }
    blocks
}

/// Where the commands of one quick start run: the environment and the rewrites.
struct Stage {
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
    rewrites: Vec<(String, String)>,
    background: Vec<Background>,
    steps: usize,
}

struct Background {
    what: String,
    child: Child,
    log: PathBuf,
}

impl Stage {
    fn new(jaeger: Option<(&Path, &JaegerPorts)>) -> Stage {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let (grpc, http, api) = (free_port(), free_port(), free_port());
        let bin = env!("CARGO_BIN_EXE_tracegate").to_string();
        let mut env: Vec<(String, String)> = vec![
            ("TRACEGATE_GRPC_ENDPOINT".into(), format!("127.0.0.1:{grpc}")),
            ("TRACEGATE_HTTP_ENDPOINT".into(), format!("127.0.0.1:{http}")),
            ("TRACEGATE_API_ENDPOINT".into(), format!("127.0.0.1:{api}")),
            ("TRACEGATE_DATA_DIR".into(), data.to_str().unwrap().into()),
            ("NO_COLOR".into(), "1".into()),
        ];
        let mut rewrites: Vec<(String, String)> = vec![
            ("cargo run --release --".into(), bin.clone()),
            ("cargo run --release".into(), bin.clone()),
            ("target/release/tracegate".into(), bin),
            ("data/audit.".into(), format!("{}/audit.", data.display())),
            ("curl -s ".into(), "curl -sf ".into()),
        ];
        for host in ["localhost", "127.0.0.1"] {
            rewrites.push((format!("{host}:4317"), format!("127.0.0.1:{grpc}")));
            rewrites.push((format!("{host}:4318"), format!("127.0.0.1:{http}")));
            rewrites.push((format!("{host}:8080"), format!("127.0.0.1:{api}")));
        }
        if let Some((bin, ports)) = jaeger {
            env.extend(ports.env().into_iter().map(|(k, v)| (k.to_string(), v)));
            env.push(("JAEGER_ENDPOINT".into(), ports.otlp_grpc_url()));
            env.push(("JAEGER_BIN".into(), bin.to_str().unwrap().into()));
            rewrites.push(("~/.cache/tracegate/bin/jaeger".into(), bin.to_str().unwrap().into()));
            rewrites.push(("127.0.0.1:16686".into(), ports.ui.to_string()));
            rewrites.push(("127.0.0.1:4417".into(), ports.otlp_grpc.to_string()));
        }
        Stage { dir, env, rewrites, background: Vec::new(), steps: 0 }
    }

    fn rewrite(&self, code: &str) -> String {
        let mut code = code.to_string();
        for (from, to) in &self.rewrites {
            code = code.replace(from.as_str(), to);
        }
        for port in [":4317", ":4318", ":8080", ":16686", ":4417"] {
            assert!(!code.contains(port), "a default port the test cannot move is left in:\n{code}");
        }
        code
    }

    fn command(&self, script: &str) -> Command {
        let mut command = Command::new("bash");
        command.args(["-euo", "pipefail", "-c", script]).current_dir(root()).envs(self.env.iter().cloned()).stdin(Stdio::null());
        command
    }

    fn run(&mut self, block: &Block) {
        if block.info.iter().any(|w| w == "background") {
            self.start_background(block);
        } else {
            let stdout = self.run_step(&format!("README.md:{}", block.line), &self.rewrite(&block.code));
            // What `tracegate demo` tells the reader to run must work as well.
            for line in stdout.lines().map(str::trim).filter(|l| l.starts_with("curl -s ")) {
                let output = self.run_step(&format!("`{line}` printed at README.md:{}", block.line), &self.rewrite(line));
                assert!(output.trim_start().starts_with('{'), "{line} printed no JSON: {output}");
            }
        }
        self.check_background();
    }

    fn start_background(&mut self, block: &Block) {
        let lines: Vec<&str> = block.code.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "README.md:{}: a background block is one command", block.line);
        let log = self.dir.path().join(format!("background-{}.log", self.background.len()));
        let file = File::create(&log).unwrap();
        let child =
            self.command(&format!("exec {}", self.rewrite(lines[0]))).stdout(file.try_clone().unwrap()).stderr(file).spawn().unwrap();
        self.background.push(Background { what: format!("README.md:{}: {}", block.line, lines[0]), child, log });
    }

    /// Runs one script to its end; panics with its output unless it exits 0.
    fn run_step(&mut self, what: &str, script: &str) -> String {
        self.steps += 1;
        let out = self.dir.path().join(format!("step-{}.out", self.steps));
        let err = self.dir.path().join(format!("step-{}.err", self.steps));
        let mut child = self.command(script).stdout(File::create(&out).unwrap()).stderr(File::create(&err).unwrap()).spawn().unwrap();
        let status = wait_for(&mut child, STEP_TIMEOUT);
        let stdout = std::fs::read_to_string(&out).unwrap();
        let stderr = std::fs::read_to_string(&err).unwrap();
        match status {
            Some(status) if status.success() => stdout,
            _ => panic!("{what} failed ({status:?}):\n$ {script}\n--- stdout\n{stdout}\n--- stderr\n{stderr}\n{}", self.background_logs()),
        }
    }

    fn check_background(&mut self) {
        for i in 0..self.background.len() {
            if let Some(status) = self.background[i].child.try_wait().unwrap() {
                panic!("{} exited ({status}) while the quick start was running\n{}", self.background[i].what, self.background_logs());
            }
        }
    }

    fn background_logs(&self) -> String {
        self.background
            .iter()
            .map(|b| format!("--- {}\n{}", b.what, std::fs::read_to_string(&b.log).unwrap_or_default()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Stops the background commands, newest first (the gateway before Jaeger), as a reader's
    /// Ctrl-C would; each must exit 0.
    fn finish(mut self) {
        self.check_background();
        while let Some(mut b) = self.background.pop() {
            // SAFETY: kill(2) with the id of a child we started and have not reaped.
            unsafe { libc::kill(b.child.id() as i32, libc::SIGTERM) };
            let status = wait_for(&mut b.child, Duration::from_secs(30));
            assert!(
                status.is_some_and(|s| s.success()),
                "{} did not stop cleanly on SIGTERM ({status:?}):\n{}",
                b.what,
                std::fs::read_to_string(&b.log).unwrap_or_default()
            );
        }
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        for b in &mut self.background {
            let _ = b.child.kill();
            let _ = b.child.wait();
        }
    }
}

fn wait_for(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn the_quick_start_runs_as_written() {
    let mut stage = Stage::new(None);
    for block in quick_start("quickstart") {
        stage.run(&block);
    }
    stage.finish();
}

#[test]
fn the_quick_start_with_jaeger_runs_as_written() {
    let Some(bin) = jaeger_bin("readme::the_quick_start_with_jaeger_runs_as_written") else {
        return;
    };
    let ports = JaegerPorts::free();
    let mut stage = Stage::new(Some((&bin, &ports)));
    for block in quick_start("quickstart-jaeger") {
        stage.run(&block);
    }
    stage.finish();
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut in_code = false;
    let mut found = BTreeSet::new();
    for line in markdown.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            found.insert(anchor(line.trim_start_matches('#')));
        }
    }
    found
}

#[test]
fn every_relative_link_in_the_docs_resolves() {
    let mut files = vec![root().join("README.md"), root().join("BENCHMARKS.md"), root().join("bench/README.md")];
    // The Markdown files of docs/ (docs/images holds the pictures they show).
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    assert!(docs.len() >= 5, "docs/ holds the reference: {docs:?}");
    files.extend(docs);
    let link = regex::Regex::new(r"\]\(([^)\s]+)\)").unwrap();
    let mut broken = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for target in link.captures_iter(&text).map(|c| c[1].to_string()) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, fragment) = target.split_once('#').map_or((target.as_str(), None), |(p, f)| (p, Some(f)));
            let resolved = if path.is_empty() { file.clone() } else { file.parent().unwrap().join(path) };
            if !resolved.exists() {
                broken.push(format!("{}: {target}: no such file", file.display()));
            } else if let Some(fragment) = fragment {
                if !anchors(&std::fs::read_to_string(&resolved).unwrap()).contains(fragment) {
                    broken.push(format!("{}: {target}: no heading #{fragment}", file.display()));
                }
            }
        }
    }
    // Configuration comments point readers at the docs too.
    let mention = regex::Regex::new(r"\b(docs/[a-z-]+\.md|README\.md)\b").unwrap();
    for dir in ["config", "config/examples", "config/quickstart", "scripts", "scripts/jaeger"] {
        for entry in std::fs::read_dir(root().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for name in mention.captures_iter(&text).map(|c| c[1].to_string()) {
                if !root().join(&name).exists() {
                    broken.push(format!("{}: names {name}, which does not exist", path.display()));
                }
            }
            assert!(!text.contains("\"Authentication and audit\""), "{}: a heading that does not exist", path.display());
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_readme_keeps_to_what_a_newcomer_needs() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let headings: Vec<&str> = readme.lines().filter(|l| l.starts_with("## ")).collect();
    assert_eq!(
        headings,
        ["## Set-up on a fresh machine", "## Quick start", "## Quick start with Jaeger", "## Documentation"],
        "reference material belongs in docs/"
    );
    let setup = readme.split("## Set-up on a fresh machine").nth(1).unwrap().split("\n## ").next().unwrap();
    let commands: Vec<&str> = setup.lines().filter(|l| l.starts_with("    ")).map(str::trim).collect();
    assert_eq!(commands, ["cargo run --release", "bash scripts/test.sh"], "exactly the two set-up commands");
}
