//! RabbitMQ as a test peer: Debian's `rabbitmq-server` (installed by `scripts/test.sh`), run as a
//! private node of its own: free AMQP, distribution and epmd ports, its database, logs, Erlang
//! cookie and configuration in a temporary directory. The node is stopped when dropped; it can be
//! stopped and started again on the same ports and data (a broker restart).
//!
//! Use it from a test with `#[path = "common/rabbitmq.rs"] mod rabbitmq;`.
#![allow(dead_code)]

#[path = "listening.rs"]
mod listening;

use crate::common::ports::free_port;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian puts the server script that runs the node in the foreground (the one on PATH,
/// `/usr/sbin/rabbitmq-server`, wants to switch to the `rabbitmq` user). `RABBITMQ_SERVER_BIN`
/// overrides it.
const DEFAULT_SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
const DEFAULT_CTL: &str = "/usr/lib/rabbitmq/bin/rabbitmqctl";

fn server_bin() -> PathBuf {
    let path = std::env::var_os("RABBITMQ_SERVER_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(DEFAULT_SERVER));
    assert!(
        path.is_file(),
        "{} not found: RabbitMQ is a test peer that `bash scripts/test.sh` installs (Debian's rabbitmq-server)",
        path.display()
    );
    path
}

/// A running private RabbitMQ node. The user `guest` / `guest` may connect (from loopback).
pub struct RabbitMq {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// The AMQP port, on 127.0.0.1.
    pub port: u16,
    dist_port: u16,
    epmd_port: u16,
    /// The Erlang node name, e.g. `tg-41234@localhost`.
    pub node: String,
}

impl RabbitMq {
    /// Starts a node and waits (up to 60 s) until it accepts AMQP connections.
    pub fn start() -> RabbitMq {
        RabbitMq::start_with("")
    }

    /// As [`RabbitMq::start`], with `extra` lines appended to the node's `rabbitmq.conf` (e.g. a
    /// TLS listener: `listeners.ssl.default = 127.0.0.1:PORT`, `ssl_options.certfile = ...`).
    pub fn start_with(extra: &str) -> RabbitMq {
        let dir = tempfile::Builder::new().prefix("tracegate-rabbitmq-").tempdir().unwrap();
        let port = free_port();
        let mut rabbit =
            RabbitMq { child: None, dir, port, dist_port: free_port(), epmd_port: free_port(), node: format!("tg-{port}@localhost") };
        std::fs::write(rabbit.dir.path().join("enabled_plugins"), "[].\n").unwrap();
        std::fs::write(
            rabbit.dir.path().join("rabbitmq.conf"),
            format!("listeners.tcp.default = 127.0.0.1:{port}\nloopback_users = none\n{extra}"),
        )
        .unwrap();
        rabbit.launch();
        rabbit
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/%2f`
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The variables that make `rabbitmq-server` and `rabbitmqctl` use this node's ports, files
    /// and cookie (the cookie lives in `$HOME`).
    fn env(&self) -> Vec<(&'static str, String)> {
        let d = self.dir.path().display().to_string();
        vec![
            ("HOME", d.clone()),
            ("RABBITMQ_NODENAME", self.node.clone()),
            ("RABBITMQ_NODE_PORT", self.port.to_string()),
            ("RABBITMQ_DIST_PORT", self.dist_port.to_string()),
            ("ERL_EPMD_PORT", self.epmd_port.to_string()),
            ("RABBITMQ_MNESIA_BASE", format!("{d}/mnesia")),
            ("RABBITMQ_LOG_BASE", format!("{d}/log")),
            ("RABBITMQ_CONFIG_FILE", format!("{d}/rabbitmq")),
            ("RABBITMQ_ADVANCED_CONFIG_FILE", format!("{d}/advanced.config")),
            ("RABBITMQ_ENABLED_PLUGINS_FILE", format!("{d}/enabled_plugins")),
            ("RABBITMQ_PID_FILE", format!("{d}/rabbitmq.pid")),
        ]
    }

    fn launch(&mut self) {
        assert!(self.child.is_none(), "the node is already running");
        let out = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("server.log")).unwrap();
        let child = Command::new(server_bin())
            .envs(self.env())
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            // Its own process group, so that stopping it takes the Erlang helpers along.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start rabbitmq-server: {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        while !listening::accepts(&addr) {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!("rabbitmq-server exited ({status}) before listening on {addr}:\n{}", self.logs());
            }
            assert!(Instant::now() < deadline, "RabbitMQ does not listen on {addr} after 60 s:\n{}", self.logs());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops the node (SIGTERM, then SIGKILL after 20 s), keeping its data for [`RabbitMq::start_again`].
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let group = child.id() as i32;
        unsafe { libc::kill(-group, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        unsafe { libc::kill(-group, libc::SIGKILL) };
        let _ = child.wait();
    }

    /// Starts the stopped node again on the same ports, with the same data (durable queues and
    /// their persistent messages survive).
    pub fn start_again(&mut self) {
        self.launch();
    }

    /// Kills the node at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
        let _ = child.wait();
    }

    /// Runs `rabbitmqctl <args>` against this node and returns its standard output; panics when
    /// it fails. E.g. `ctl(&["list_queues", "name", "messages"])`.
    pub fn ctl(&self, args: &[&str]) -> String {
        let ctl = std::env::var_os("RABBITMQ_CTL_BIN").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(DEFAULT_CTL));
        let out = Command::new(ctl)
            .envs(self.env())
            .arg("-n")
            .arg(&self.node)
            .arg("-q")
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run rabbitmqctl: {e}"));
        assert!(
            out.status.success(),
            "rabbitmqctl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The number of messages ready in `queue` (0 when the queue does not exist).
    pub fn queue_depth(&self, queue: &str) -> u64 {
        self.ctl(&["list_queues", "name", "messages_ready", "--no-table-headers"])
            .lines()
            .filter_map(|line| {
                let mut cols = line.split_whitespace();
                (cols.next()? == queue).then(|| cols.next()?.parse().ok())?
            })
            .next()
            .unwrap_or(0)
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for RabbitMq {
    fn drop(&mut self) {
        self.stop();
        // epmd detaches itself from the node's process group; stop this node's own instance.
        let _ = Command::new("epmd")
            .env("ERL_EPMD_PORT", self.epmd_port.to_string())
            .args(["-port", &self.epmd_port.to_string(), "-kill"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
