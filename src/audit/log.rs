//! `AuditLog`: JSON lines in a SHA-256 hash chain, each record authenticated with
//! HMAC-SHA256 under the audit key, with checkpoints when a run starts, every
//! `checkpoint_every` records and when it stops cleanly. One thread writes the file, fed by a
//! bounded queue: a caller that must not act unaudited (admin views, unmasking) waits for its
//! record to be written and refuses when it is not; the others never wait on the file.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use super::event::{capped, AuditEvent, Checkpoint, RecordLine, CHECKPOINT, MAX_REASON_BYTES, MAX_RESOURCE_BYTES};
use crate::shared::format_rfc3339_nanos;
use crate::shared::Issues;

/// The `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The environment variable the example configurations read the audit key from.
pub const KEY_ENV: &str = "TRACEGATE_AUDIT_CHECKPOINT_KEY";

/// The `audit:` section.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// The JSON-lines file; no audit log when absent.
    pub path: Option<PathBuf>,
    /// The HMAC-SHA256 key that authenticates every record (use `${env:NAME}`); at least 32
    /// bytes. An audit log needs a key: this or `checkpoint_key_file`.
    pub checkpoint_key: Option<String>,
    /// A file holding the key (surrounding whitespace ignored).
    pub checkpoint_key_file: Option<PathBuf>,
    /// Create `checkpoint_key_file` with a random key (mode 0600) when it does not exist; for
    /// one-machine set-ups such as the built-in configuration.
    pub create_key_file: bool,
    /// A checkpoint after this many records.
    pub checkpoint_every: u64,
    /// Failed authentications recorded in full per client address and reason per minute; the
    /// rest are counted and written as one summary per client and minute, naming the reasons.
    pub failed_auth_per_source_per_minute: u32,
    /// A copy of every record in an Elasticsearch index.
    pub elasticsearch: Option<super::AuditMirrorConfig>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            path: None,
            checkpoint_key: None,
            checkpoint_key_file: None,
            create_key_file: false,
            checkpoint_every: 100,
            failed_auth_per_source_per_minute: 20,
            elasticsearch: None,
        }
    }
}

impl AuditConfig {
    pub fn validate(&self, issues: &mut Issues) {
        if let Some(path) = &self.path {
            crate::shared::check_writable(issues, "audit.path", path);
        }
        if self.checkpoint_every == 0 {
            issues.push("audit.checkpoint_every", "must be at least 1");
        }
        if let Some(key) = &self.checkpoint_key {
            if key.len() < 32 {
                issues.push("audit.checkpoint_key", "the audit key needs at least 32 bytes");
            }
        }
        match (&self.checkpoint_key, &self.checkpoint_key_file) {
            (Some(_), Some(_)) => issues.push("audit.checkpoint_key_file", "set checkpoint_key or checkpoint_key_file, not both"),
            (None, None) if self.path.is_some() => issues.push(
                "audit.checkpoint_key",
                format!(
                    "an audit log needs a key of at least 32 bytes that only the auditors hold: \
                     checkpoint_key: \"${{env:{KEY_ENV}}}\" (and set {KEY_ENV}), or checkpoint_key_file"
                ),
            ),
            (None, Some(file)) if !self.create_key_file && !file.exists() => issues.push(
                "audit.checkpoint_key_file",
                format!("{} does not exist (set create_key_file: true to generate one)", file.display()),
            ),
            (None, Some(file)) if file.exists() => crate::shared::check_readable_file(issues, "audit.checkpoint_key_file", file),
            (None, Some(file)) => crate::shared::check_writable(issues, "audit.checkpoint_key_file", file),
            _ => {}
        }
        if let Some(mirror) = &self.elasticsearch {
            mirror.retry_on_failure.validate("audit.elasticsearch.retry_on_failure", issues);
        }
    }

    /// The audit key: inline, or read from (and, with `create_key_file`, created in) its file.
    pub fn key(&self) -> Result<Option<Vec<u8>>, AuditError> {
        if let Some(key) = &self.checkpoint_key {
            return Ok(Some(key.as_bytes().to_vec()));
        }
        let Some(file) = &self.checkpoint_key_file else { return Ok(None) };
        let key_error = |source| AuditError::Key { path: file.display().to_string(), source };
        if !file.exists() && self.create_key_file {
            create_key_file(file).map_err(|source| AuditError::CreateKey { path: file.display().to_string(), source })?;
            tracing::info!(path = %file.display(), "generated a random audit key; keep this file to verify the audit log");
        }
        let text = std::fs::read_to_string(file).map_err(key_error)?;
        let key = text.trim();
        if key.len() < 32 {
            return Err(key_error(std::io::Error::new(std::io::ErrorKind::InvalidData, "the audit key needs at least 32 bytes")));
        }
        Ok(Some(key.as_bytes().to_vec()))
    }
}

fn create_key_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(format!("{}\n", hex::encode(bytes)).as_bytes())?;
    file.sync_all()
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot open audit log {path}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read the audit key from {path}")]
    Key {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the audit key file {path}")]
    CreateKey {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("an audit log needs a key (audit.checkpoint_key or audit.checkpoint_key_file)")]
    NoKey,
    #[error("cannot write the audit record")]
    Write(#[source] std::io::Error),
    #[error("cannot read the audit log")]
    Read(#[source] std::io::Error),
    #[error("the audit writer did not write the record within {0:?} (the file is not taking writes)")]
    Stalled(Duration),
    #[error("the audit log is closed")]
    Stopped,
}

/// The audit log. Records are written by one dedicated thread (`tracegate-audit`) fed by a
/// bounded queue, so no executor thread ever waits on the file:
/// - [`AuditLog::record_acked`]: for callers that must not act unaudited (admin actions,
///   unmasking); waits (asynchronously) for the writer to say the record is in the file.
/// - [`AuditLog::submit`]: for everything else; never waits. When the queue is full the record
///   is counted, and the count is written as one `audit.dropped` record once the writer catches up.
/// - [`AuditLog::record`]: the blocking form of `record_acked`, for threads that may block
///   (tests, the command line, `spawn_blocking`); never on an executor thread.
pub struct AuditLog {
    path: PathBuf,
    tx: mpsc::Sender<Command>,
    shared: Arc<Shared>,
    failed_auth: FailedAuthRecorder,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// What the caller side and the writer thread share.
struct Shared {
    path: PathBuf,
    key: Vec<u8>,
    every: u64,
    mirror: OnceLock<super::AuditMirror>,
    /// Counts records that could not be written (`tracegate_audit_write_failures_total`).
    failures: OnceLock<prometheus_client::metrics::counter::Counter>,
    /// Records not queued because the queue was full, until the writer records how many.
    dropped: AtomicU64,
    /// A caller stopped waiting for the writer in [`AuditLog::caught_up`]; cleared when the
    /// writer gets to that caller's marker. While set, `caught_up` does not wait.
    behind: AtomicBool,
}

impl Shared {
    fn count_failure(&self) {
        if let Some(failures) = self.failures.get() {
            failures.inc();
        }
    }
}

type Ack = oneshot::Sender<Result<(), AuditError>>;

enum Command {
    /// A record; the writer answers on the sender when there is one.
    Record(Box<AuditEvent>, Option<Ack>),
    /// Answered when everything queued before it has been handled.
    Marker(oneshot::Sender<()>),
    /// The shutdown checkpoint; the writer stops after it.
    Close(Ack),
}

/// Records waiting for the writer. At a few microseconds per record this is a fraction of a
/// second of work; a queue this full means the file is not taking writes.
const QUEUE: usize = 4096;

/// How long a fail-closed caller waits for its record to be written before refusing (503).
pub const ACK_TIMEOUT: Duration = Duration::from_secs(5);

struct Writer {
    /// This run's start checkpoint, until it is written (`previous` as it will say).
    start_pending: Option<&'static str>,
    /// The open file and the (device, inode) it was opened as; `None` after the path could not
    /// be opened, until it can.
    file: Option<(File, (u64, u64))>,
    next_seq: u64,
    prev: String,
    since_checkpoint: u64,
}

impl AuditLog {
    /// Opens (or creates) the log, continues its chain, writes this run's start checkpoint and
    /// starts the writer thread.
    pub fn open(config: &AuditConfig, path: &Path) -> Result<AuditLog, AuditError> {
        AuditLog::open_mirrored(config, path, None)
    }

    /// [`AuditLog::open`], copying every record from the start checkpoint on to `mirror`.
    pub fn open_mirrored(config: &AuditConfig, path: &Path, mirror: Option<super::AuditMirror>) -> Result<AuditLog, AuditError> {
        let key = config.key()?.ok_or(AuditError::NoKey)?;
        let open_error = |source| AuditError::Open { path: path.display().to_string(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(open_error)?;
        }
        let (mut next_seq, mut prev) = (0, GENESIS.to_string());
        let mut previous = "new";
        if path.is_file() {
            let file = File::open(path).map_err(open_error)?;
            for line in BufReader::new(file).lines() {
                let line = line.map_err(open_error)?;
                if let Some(parts) = split_line(&line) {
                    let body: serde_json::Value = serde_json::from_str(&parts.body).unwrap_or_default();
                    next_seq = body["seq"].as_u64().unwrap_or(next_seq) + 1;
                    prev = parts.hash.to_string();
                    previous = if body["checkpoint"]["kind"] == "shutdown" { "clean" } else { "unclean" };
                }
            }
        }
        let file = open_append(path).map_err(open_error)?;
        let shared = Arc::new(Shared {
            path: path.to_path_buf(),
            key,
            every: config.checkpoint_every.max(1),
            mirror: OnceLock::new(),
            failures: OnceLock::new(),
            dropped: AtomicU64::new(0),
            behind: AtomicBool::new(false),
        });
        if let Some(mirror) = mirror {
            let _ = shared.mirror.set(mirror);
        }
        if previous == "unclean" {
            tracing::warn!(path = %path.display(), "the audit log does not end with a shutdown checkpoint: the last run crashed or was killed, or its tail was removed");
        }
        let mut writer = Writer { start_pending: Some(previous), file: Some(file), next_seq, prev, since_checkpoint: 0 };
        // A log that cannot be written now (a full disk) does not stop the gateway: the start
        // checkpoint is written before the next record, and admin actions fail closed meanwhile.
        if let Err(error) = writer.checkpoint(&shared, "start", Some(previous)) {
            tracing::error!(error = %crate::shared::error_chain(&error), path = %path.display(), "cannot write the audit log's start checkpoint; admin actions are refused until it can be written");
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new().name("tracegate-audit".into()).spawn(move || writer.run(&shared, rx)).map_err(open_error)?
        };
        Ok(AuditLog {
            path: path.to_path_buf(),
            tx,
            shared,
            failed_auth: FailedAuthRecorder::new(config.failed_auth_per_source_per_minute),
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Copies every record written from now on to Elasticsearch as well.
    pub fn mirror_to(&self, mirror: super::AuditMirror) {
        let _ = self.shared.mirror.set(mirror);
    }

    /// The Elasticsearch copy, if any (the gateway stops it after the shutdown checkpoint).
    pub fn mirror(&self) -> Option<&super::AuditMirror> {
        self.shared.mirror.get()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Counts every record that cannot be written in `counter` from now on.
    pub fn count_failures(&self, counter: prometheus_client::metrics::counter::Counter) {
        let _ = self.shared.failures.set(counter);
    }

    /// Appends one record (and a checkpoint when one is due) and waits until it is written, or
    /// until [`ACK_TIMEOUT`]: for callers that must not act unaudited. Waits without blocking
    /// the executor (also for room in the queue). A record whose caller stopped waiting (this
    /// timed out, or the future was dropped) is still written when the file takes writes again,
    /// with outcome `refused` and a reason saying so: the caller did not act on it.
    pub async fn record_acked(&self, event: &AuditEvent) -> Result<(), AuditError> {
        let (ack, written) = oneshot::channel();
        let queued_and_written = async {
            self.tx.send(Command::Record(Box::new(event.clone()), Some(ack))).await.map_err(|_| AuditError::Stopped)?;
            written.await.map_err(|_| AuditError::Stopped)?
        };
        tokio::time::timeout(ACK_TIMEOUT, queued_and_written).await.map_err(|_| AuditError::Stalled(ACK_TIMEOUT))?
    }

    /// [`AuditLog::record_acked`] for threads that may block: tests, the command line,
    /// `spawn_blocking`. Panics on an executor thread.
    pub fn record(&self, event: &AuditEvent) -> Result<(), AuditError> {
        let (ack, written) = oneshot::channel();
        self.tx.blocking_send(Command::Record(Box::new(event.clone()), Some(ack))).map_err(|_| AuditError::Stopped)?;
        written.blocking_recv().map_err(|_| AuditError::Stopped)?
    }

    /// Queues one record without waiting. A record that cannot be written is logged and
    /// counted by the writer; one that finds the queue full is counted here and the count is
    /// written as an `audit.dropped` record when the writer catches up.
    pub fn submit(&self, event: &AuditEvent) {
        match self.tx.try_send(Command::Record(Box::new(event.clone()), None)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.shared.count_failure();
                let n = self.shared.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if n == 1 || n.is_multiple_of(1000) {
                    tracing::error!(dropped = n, path = %self.path.display(), "the audit writer is behind (the file is not taking writes); records are counted, not written");
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.shared.count_failure();
                tracing::error!(action = %event.action, "the audit log is closed; a record was not written");
            }
        }
    }

    /// Waits up to `limit` until everything queued so far is written, so that an answer sent
    /// after this has its record in the file. Once one caller gave up waiting, the others do not
    /// wait until the writer has caught up again: a stalled file slows no request by more than
    /// `limit`, and most by nothing.
    pub async fn caught_up(&self, limit: Duration) {
        if self.shared.behind.load(Ordering::Relaxed) {
            return;
        }
        let (done, reached) = oneshot::channel();
        if self.tx.try_send(Command::Marker(done)).is_err() {
            return;
        }
        if tokio::time::timeout(limit, reached).await.is_err() {
            self.shared.behind.store(true, Ordering::Relaxed);
        }
    }

    /// Writes the failed-authentication summaries still open, everything queued, then the
    /// shutdown checkpoint: the log ends cleanly here. Called once, when the gateway stops;
    /// blocks until the writer has stopped (use `spawn_blocking` from async code).
    pub fn close(&self) -> Result<(), AuditError> {
        for (client, summary) in self.failed_auth.take_finished(Instant::now(), true) {
            let event = summary_event(&client, summary, None);
            if self.tx.blocking_send(Command::Record(Box::new(event), None)).is_err() {
                break;
            }
        }
        let (ack, written) = oneshot::channel();
        self.tx.blocking_send(Command::Close(ack)).map_err(|_| AuditError::Stopped)?;
        let closed = written.blocking_recv().map_err(|_| AuditError::Stopped)?;
        if let Some(thread) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = thread.join();
        }
        closed
    }

    /// Records a failed authentication: in full for the first `failed_auth_per_source_per_minute`
    /// of each (client, reason) in a minute, then counted; the counts are written as one
    /// summary record per client when its minute is over (see [`AuditLog::flush_failed_auth`]).
    /// So a flood of one kind never hides another kind from the same client. Never waits.
    pub fn record_failed_auth(&self, event: &AuditEvent) {
        let client = event.source.clone().unwrap_or_default();
        let reason = event.reason.clone().unwrap_or_default();
        let (record, summary) = self.failed_auth.note(&client, &reason, Instant::now());
        if let Some(summary) = summary {
            self.submit(&summary_event(&client, summary, Some(event)));
        }
        if record {
            self.submit(event);
        }
    }

    /// Writes the summaries of suppressed failed authentications whose minute is over (all of
    /// them with `all`). The gateway calls this every few seconds. Never waits.
    pub fn flush_failed_auth(&self, all: bool) {
        for (client, summary) in self.failed_auth.take_finished(Instant::now(), all) {
            self.submit(&summary_event(&client, summary, None));
        }
    }

    /// Every record (checkpoints included), parsed, in file order. Reads the file: call it where
    /// blocking is allowed.
    pub fn read_all(&self) -> Result<Vec<serde_json::Value>, AuditError> {
        let file = File::open(&self.path).map_err(AuditError::Read)?;
        let mut out = Vec::new();
        for line in BufReader::new(file).lines() {
            let line = line.map_err(AuditError::Read)?;
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                out.push(v);
            }
        }
        Ok(out)
    }
}

/// The record that names what one client's minute suppressed, like the failure `like` (its
/// via and request id) when there is one.
fn summary_event(client: &str, summary: Suppressed, like: Option<&AuditEvent>) -> AuditEvent {
    let reasons: Vec<String> = summary.reasons.iter().map(|(reason, n)| format!("{n} x {reason}")).collect();
    let mut event =
        like.cloned().unwrap_or_else(|| AuditEvent::new(super::Actor::unauthenticated(), "authenticate", "", "unauthenticated"));
    event.action = "authenticate.suppressed".into();
    event.outcome = "unauthenticated".into();
    event.resource = String::new();
    event.source = Some(client.to_string()).filter(|c| !c.is_empty());
    event.reason = Some(format!(
        "{} more failed authentications from this client in the minute from {} were counted, not recorded one by one: {}",
        summary.total,
        summary.since,
        reasons.join("; ")
    ));
    event
}

/// A fail-closed record whose caller gave up waiting for it: the action was not carried out.
fn abandoned(event: &mut AuditEvent) {
    let why = format!(
        "not written within {ACK_TIMEOUT:?} (the audit file took no writes) or the client went away; the action was refused and not carried out"
    );
    event.outcome = "refused".into();
    event.reason = Some(match event.reason.take() {
        Some(asked) => format!("{why} (asked: {asked})"),
        None => why,
    });
}

impl Writer {
    /// The writer thread: handles commands in order until the log is closed or dropped.
    fn run(mut self, shared: &Shared, mut rx: mpsc::Receiver<Command>) {
        while let Some(command) = rx.blocking_recv() {
            match command {
                Command::Record(mut event, ack) => {
                    if ack.as_ref().is_some_and(|ack| ack.is_closed()) {
                        // The caller stopped waiting before its record was written (the file
                        // took no writes for ACK_TIMEOUT, or its client went away): it answered
                        // 503 or nothing and did not act, so the record must not say `allowed`.
                        abandoned(&mut event);
                    }
                    let written = self.record(shared, &event);
                    match ack {
                        Some(ack) => {
                            let _ = ack.send(written);
                        }
                        None => {
                            if let Err(error) = written {
                                tracing::error!(error = %crate::shared::error_chain(&error), action = %event.action, "cannot write an audit record");
                            }
                        }
                    }
                }
                Command::Marker(done) => {
                    shared.behind.store(false, Ordering::Relaxed);
                    let _ = done.send(());
                }
                Command::Close(ack) => {
                    let _ = self.note_dropped(shared);
                    let _ = ack.send(self.checkpoint(shared, "shutdown", None));
                    break;
                }
            }
        }
    }

    /// Appends one record (and a checkpoint when one is due), after the start checkpoint if it
    /// is still due and the count of records dropped meanwhile if any.
    fn record(&mut self, shared: &Shared, event: &AuditEvent) -> Result<(), AuditError> {
        if let Some(previous) = self.start_pending {
            self.write_checkpoint(shared, "start", Some(previous))?;
        }
        self.note_dropped(shared)?;
        self.write_event(shared, event)
    }

    /// Writes how many records found the queue full, if any.
    fn note_dropped(&mut self, shared: &Shared) -> Result<(), AuditError> {
        let dropped = shared.dropped.swap(0, Ordering::Relaxed);
        if dropped == 0 {
            return Ok(());
        }
        let actor = super::Actor { iss: String::new(), sub: "tracegate".into(), name: None, roles: Vec::new() };
        let event = AuditEvent::new(actor, "audit.dropped", "", "error").because(format!(
            "{dropped} records were not written: the audit writer was behind (the file did not take writes) and its queue was full"
        ));
        self.write_event(shared, &event).inspect_err(|_| {
            shared.dropped.fetch_add(dropped, Ordering::Relaxed);
        })
    }

    fn write_event(&mut self, shared: &Shared, event: &AuditEvent) -> Result<(), AuditError> {
        let resource = capped(&event.resource, MAX_RESOURCE_BYTES);
        let reason = event.reason.as_deref().map(|r| capped(r, MAX_REASON_BYTES));
        let request_id = event.request_id.as_deref().map(|r| capped(r, 128));
        let line = RecordLine {
            id: uuid::Uuid::now_v7().to_string(),
            seq: self.next_seq,
            time: now_rfc3339(),
            actor: Some(&event.actor),
            source: event.source.as_deref(),
            via: event.via.as_deref(),
            request_id: request_id.as_deref(),
            action: &event.action,
            resource: Some(&resource),
            outcome: Some(&event.outcome),
            reason: reason.as_deref(),
            checkpoint: None,
            prev: self.prev.clone(),
        };
        self.write_line(shared, &line)?;
        self.since_checkpoint += 1;
        if self.since_checkpoint >= shared.every {
            self.write_checkpoint(shared, "interval", None)?;
        }
        Ok(())
    }

    fn checkpoint(&mut self, shared: &Shared, kind: &str, previous: Option<&str>) -> Result<(), AuditError> {
        if kind != "start" {
            if let Some(previous) = self.start_pending {
                self.write_checkpoint(shared, "start", Some(previous))?;
            }
        }
        self.write_checkpoint(shared, kind, previous)
    }

    fn write_checkpoint(&mut self, shared: &Shared, kind: &str, previous: Option<&str>) -> Result<(), AuditError> {
        let line = RecordLine {
            id: uuid::Uuid::now_v7().to_string(),
            seq: self.next_seq,
            time: now_rfc3339(),
            actor: None,
            source: None,
            via: None,
            request_id: None,
            action: CHECKPOINT,
            resource: None,
            outcome: None,
            reason: None,
            checkpoint: Some(Checkpoint { kind: kind.into(), every: shared.every, previous: previous.map(str::to_string) }),
            prev: self.prev.clone(),
        };
        self.write_line(shared, &line)?;
        self.since_checkpoint = 0;
        if kind == "start" {
            self.start_pending = None;
        }
        Ok(())
    }

    fn write_line(&mut self, shared: &Shared, line: &RecordLine<'_>) -> Result<(), AuditError> {
        let written = self.append_line(shared, line);
        if written.is_err() {
            shared.count_failure();
        }
        written
    }

    /// Appends a line to the chain, reopening the path first when it no longer names the open
    /// file (removed or replaced while running).
    fn append_line(&mut self, shared: &Shared, line: &RecordLine<'_>) -> Result<(), AuditError> {
        let path = &shared.path;
        let current = std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
        if current.is_none() || self.file.as_ref().map(|(_, id)| *id) != current {
            if self.file.is_some() {
                tracing::error!(path = %path.display(), "the audit log was removed or replaced while running; reopening the path (the chain goes on, and `audit verify` will report the gap)");
            }
            self.file = None;
            self.file = Some(open_append(path).map_err(AuditError::Write)?);
        }
        // A struct of strings and numbers always serializes.
        let body = serde_json::to_string(line).map_err(|e| AuditError::Write(std::io::Error::other(e)))?;
        let hash = hex::encode(Sha256::digest(body.as_bytes()));
        let mac = record_mac(&shared.key, &hash);
        let text = format!("{},\"hash\":\"{hash}\",\"mac\":\"{mac}\"}}\n", &body[..body.len() - 1]);
        let Some((file, _)) = self.file.as_mut() else { return Err(AuditError::Write(std::io::Error::other("audit log not open"))) };
        file.write_all(text.as_bytes()).and_then(|_| file.flush()).map_err(AuditError::Write)?;
        self.next_seq += 1;
        self.prev = hash;
        if let Some(mirror) = shared.mirror.get() {
            mirror.offer(line.id.clone(), text.trim_end().to_string());
        }
        Ok(())
    }
}

fn open_append(path: &Path) -> std::io::Result<(File, (u64, u64))> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let meta = file.metadata()?;
    Ok((file, (meta.dev(), meta.ino())))
}

/// Failed authentications per client and minute: how many of each reason were recorded, and
/// what was suppressed.
struct FailedAuthRecorder {
    limit: u32,
    windows: Mutex<HashMap<String, FailedAuthWindow>>,
}

struct FailedAuthWindow {
    start: Instant,
    since: String,
    per_reason: HashMap<String, u32>,
    suppressed: BTreeMap<String, u64>,
}

/// What one client's minute suppressed.
struct Suppressed {
    since: String,
    total: u64,
    reasons: BTreeMap<String, u64>,
}

const WINDOW: Duration = Duration::from_secs(60);
/// Distinct clients tracked at once; past it, finished windows are flushed first.
const MAX_CLIENTS: usize = 10_000;

impl FailedAuthRecorder {
    fn new(limit: u32) -> Self {
        FailedAuthRecorder { limit, windows: Mutex::new(HashMap::new()) }
    }

    /// Whether to record this failure in full, and the previous minute's summary if this
    /// failure opens a new minute for the client.
    fn note(&self, client: &str, reason: &str, now: Instant) -> (bool, Option<Suppressed>) {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let mut finished = None;
        if windows.get(client).is_some_and(|w| now.duration_since(w.start) >= WINDOW) {
            finished = windows.remove(client).and_then(FailedAuthWindow::summary);
        }
        if windows.len() >= MAX_CLIENTS && !windows.contains_key(client) {
            // Too many clients at once: keep counting, but stop recording new clients in full.
            windows.retain(|_, w| now.duration_since(w.start) < WINDOW || !w.suppressed.is_empty());
            if windows.len() >= MAX_CLIENTS {
                return (false, finished);
            }
        }
        let window = windows.entry(client.to_string()).or_insert_with(|| FailedAuthWindow {
            start: now,
            since: now_rfc3339(),
            per_reason: HashMap::new(),
            suppressed: BTreeMap::new(),
        });
        // Reasons are short texts chosen by tracegate (never the caller's input), so their number
        // per client is bounded.
        let reason = capped(reason, 120).into_owned();
        let seen = window.per_reason.entry(reason.clone()).or_insert(0);
        *seen += 1;
        if *seen <= self.limit {
            (true, finished)
        } else {
            *window.suppressed.entry(reason).or_insert(0) += 1;
            (false, finished)
        }
    }

    fn take_finished(&self, now: Instant, all: bool) -> Vec<(String, Suppressed)> {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let done: Vec<String> =
            windows.iter().filter(|(_, w)| all || now.duration_since(w.start) >= WINDOW).map(|(c, _)| c.clone()).collect();
        done.into_iter().filter_map(|c| windows.remove(&c).and_then(FailedAuthWindow::summary).map(|s| (c, s))).collect()
    }
}

impl FailedAuthWindow {
    fn summary(self) -> Option<Suppressed> {
        let total: u64 = self.suppressed.values().sum();
        (total > 0).then_some(Suppressed { since: self.since, total, reasons: self.suppressed })
    }
}

/// A written line taken apart: the body that was hashed, its hash, and its MAC (absent in
/// logs written before records were authenticated).
pub(crate) struct LineParts<'a> {
    pub body: String,
    pub hash: &'a str,
    pub mac: Option<&'a str>,
}

/// Splits a written line into the body that was hashed, the stored hash and the MAC.
pub(crate) fn split_line(line: &str) -> Option<LineParts<'_>> {
    const HASH: usize = ",\"hash\":\"".len() + 64 + "\"".len();
    const MAC: usize = ",\"mac\":\"".len() + 64 + "\"".len();
    let hex64 = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
    let rest = line.strip_suffix('}')?;
    let (rest, mac) = match rest.len().checked_sub(MAC).filter(|&at| rest.is_char_boundary(at)).map(|at| rest.split_at(at)) {
        Some((head, tail)) if tail.starts_with(",\"mac\":\"") => {
            let mac = tail.strip_prefix(",\"mac\":\"")?.strip_suffix('"')?;
            if !hex64(mac) {
                return None;
            }
            (head, Some(mac))
        }
        _ => (rest, None),
    };
    let at = rest.len().checked_sub(HASH).filter(|&at| at > 0 && rest.is_char_boundary(at))?;
    let (head, tail) = rest.split_at(at);
    let hash = tail.strip_prefix(",\"hash\":\"")?.strip_suffix('"')?;
    if !hex64(hash) {
        return None;
    }
    Some(LineParts { body: format!("{head}}}"), hash, mac })
}

/// A record's MAC: HMAC-SHA256 under the audit key of its hash (which covers the body, and
/// through `prev` every record before it).
pub(crate) fn record_mac(key: &[u8], hash: &str) -> String {
    // HMAC accepts keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(hash.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn now_rfc3339() -> String {
    let ns = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    format_rfc3339_nanos(ns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_with_and_without_a_mac() {
        let hash = "a".repeat(64);
        let mac = "b".repeat(64);
        let with = format!("{{\"seq\":0,\"hash\":\"{hash}\",\"mac\":\"{mac}\"}}");
        let parts = split_line(&with).unwrap();
        assert_eq!((parts.body.as_str(), parts.hash, parts.mac), ("{\"seq\":0}", hash.as_str(), Some(mac.as_str())));
        let without = format!("{{\"seq\":0,\"hash\":\"{hash}\"}}");
        let parts = split_line(&without).unwrap();
        assert_eq!((parts.body.as_str(), parts.mac), ("{\"seq\":0}", None));
        assert!(split_line("{\"seq\":0}").is_none());
        assert!(split_line("").is_none());
        assert!(split_line("é}").is_none());
    }

    #[test]
    fn a_flood_of_one_reason_does_not_hide_another() {
        let recorder = FailedAuthRecorder::new(3);
        let t0 = Instant::now();
        let recorded: Vec<bool> = (0..20).map(|_| recorder.note("10.0.0.9", "garbage", t0).0).collect();
        assert_eq!(recorded.iter().filter(|r| **r).count(), 3);
        assert!(recorder.note("10.0.0.9", "alg none", t0).0, "another kind of attempt is recorded");
        assert!(recorder.note("10.0.0.8", "garbage", t0).0, "another client is recorded");
        let (_, summary) = recorder.note("10.0.0.9", "garbage", t0 + WINDOW);
        let summary = summary.expect("the finished minute's summary");
        assert_eq!(summary.total, 17);
        assert_eq!(summary.reasons["garbage"], 17);
        assert!(recorder.take_finished(t0 + WINDOW, false).is_empty(), "10.0.0.8 suppressed nothing");
    }
}
