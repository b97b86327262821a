//! `AuditLog`: JSON lines, each carrying the SHA-256 of the record before it, with a checkpoint
//! signed by HMAC-SHA256 every `checkpoint_every` records. Writes are synchronous and reported:
//! a caller that must not act unaudited (admin views, unmasking) refuses when a write fails.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::event::{AuditEvent, RecordLine, CHECKPOINT};
use crate::config::Issues;
use crate::store::format_rfc3339_nanos;

/// The `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The `audit:` section.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditConfig {
    /// The JSON-lines file; no audit log when absent.
    pub path: Option<PathBuf>,
    /// The HMAC-SHA256 key that signs checkpoints (use `${env:NAME}`); at least 32 bytes.
    pub checkpoint_key: Option<String>,
    /// A signed checkpoint after this many records.
    pub checkpoint_every: u64,
    /// Failed authentications recorded per source address per minute; the rest are counted in
    /// one summary record, so a flood cannot fill the disk.
    pub failed_auth_per_source_per_minute: u32,
    /// A copy of every record in an Elasticsearch index.
    pub elasticsearch: Option<super::AuditMirrorConfig>,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig { path: None, checkpoint_key: None, checkpoint_every: 100, failed_auth_per_source_per_minute: 20, elasticsearch: None }
    }
}

impl AuditConfig {
    pub fn validate(&self, issues: &mut Issues) {
        if self.checkpoint_every == 0 {
            issues.push("audit.checkpoint_every", "must be at least 1");
        }
        if let Some(key) = &self.checkpoint_key {
            if key.len() < 32 {
                issues.push("audit.checkpoint_key", "a checkpoint key needs at least 32 bytes");
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot open audit log {path}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the audit record")]
    Write(#[source] std::io::Error),
    #[error("cannot read the audit log")]
    Read(#[source] std::io::Error),
}

pub struct AuditLog {
    path: PathBuf,
    writer: Mutex<Writer>,
    key: Option<Vec<u8>>,
    every: u64,
    failed_auth_limit: u32,
    failed_auth: Mutex<HashMap<String, (Instant, u32)>>,
    mirror: std::sync::OnceLock<super::AuditMirror>,
}

struct Writer {
    file: File,
    next_seq: u64,
    prev: String,
    since_checkpoint: u64,
}

impl AuditLog {
    /// Opens (or creates) the log and continues its chain.
    pub fn open(config: &AuditConfig, path: &Path) -> Result<AuditLog, AuditError> {
        let open_error = |source| AuditError::Open { path: path.display().to_string(), source };
        let (mut next_seq, mut prev, mut since_checkpoint) = (0, GENESIS.to_string(), 0);
        if path.is_file() {
            let file = File::open(path).map_err(open_error)?;
            for line in BufReader::new(file).lines() {
                let line = line.map_err(open_error)?;
                if let Some((hash, body)) = split_hash(&line) {
                    let seq = serde_json::from_str::<serde_json::Value>(&body).ok().and_then(|v| v["seq"].as_u64()).unwrap_or(next_seq);
                    let checkpoint = body.contains(&format!("\"action\":\"{CHECKPOINT}\""));
                    next_seq = seq + 1;
                    prev = hash.to_string();
                    since_checkpoint = if checkpoint { 0 } else { since_checkpoint + 1 };
                }
            }
        }
        let file = OpenOptions::new().create(true).append(true).open(path).map_err(open_error)?;
        Ok(AuditLog {
            path: path.to_path_buf(),
            writer: Mutex::new(Writer { file, next_seq, prev, since_checkpoint }),
            key: config.checkpoint_key.as_ref().map(|k| k.as_bytes().to_vec()),
            every: config.checkpoint_every.max(1),
            failed_auth_limit: config.failed_auth_per_source_per_minute,
            failed_auth: Mutex::new(HashMap::new()),
            mirror: std::sync::OnceLock::new(),
        })
    }

    /// Copies every record written from now on to Elasticsearch as well.
    pub fn mirror_to(&self, mirror: super::AuditMirror) {
        let _ = self.mirror.set(mirror);
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record (and a checkpoint when one is due).
    pub fn record(&self, event: &AuditEvent) -> Result<(), AuditError> {
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let line = RecordLine {
            id: uuid::Uuid::now_v7().to_string(),
            seq: w.next_seq,
            time: now_rfc3339(),
            actor: Some(&event.actor),
            source: event.source.as_deref(),
            request_id: event.request_id.as_deref(),
            action: &event.action,
            resource: Some(&event.resource),
            outcome: Some(&event.outcome),
            reason: event.reason.as_deref(),
            sig: None,
            prev: w.prev.clone(),
        };
        let text = write_line(&mut w, &line)?;
        if let Some(mirror) = self.mirror.get() {
            mirror.offer(line.id.clone(), text);
        }
        w.since_checkpoint += 1;
        if let Some(key) = &self.key {
            if w.since_checkpoint >= self.every {
                let seq = w.next_seq;
                let checkpoint = RecordLine {
                    id: uuid::Uuid::now_v7().to_string(),
                    seq,
                    time: now_rfc3339(),
                    actor: None,
                    source: None,
                    request_id: None,
                    action: CHECKPOINT,
                    resource: None,
                    outcome: None,
                    reason: None,
                    sig: Some(checkpoint_signature(key, seq, &w.prev)),
                    prev: w.prev.clone(),
                };
                let text = write_line(&mut w, &checkpoint)?;
                if let Some(mirror) = self.mirror.get() {
                    mirror.offer(checkpoint.id.clone(), text);
                }
                w.since_checkpoint = 0;
            }
        }
        Ok(())
    }

    /// Records a failed authentication unless `source` already had its share this minute; the
    /// first record past the share says that further failures are being suppressed.
    pub fn record_failed_auth(&self, event: &AuditEvent) {
        let key = event.source.clone().unwrap_or_default();
        let verdict = {
            let mut seen = self.failed_auth.lock().unwrap_or_else(|p| p.into_inner());
            if seen.len() > 10_000 {
                seen.retain(|_, (start, _)| start.elapsed() < Duration::from_secs(60));
            }
            let entry = seen.entry(key).or_insert((Instant::now(), 0));
            if entry.0.elapsed() >= Duration::from_secs(60) {
                *entry = (Instant::now(), 0);
            }
            entry.1 += 1;
            entry.1
        };
        let result = if verdict <= self.failed_auth_limit {
            self.record(event)
        } else if verdict == self.failed_auth_limit + 1 {
            let mut summary = event.clone();
            summary.action = "authenticate.suppressed".into();
            summary.reason = Some(format!(
                "more than {} failed authentications from this source in a minute; not recording more",
                self.failed_auth_limit
            ));
            self.record(&summary)
        } else {
            Ok(())
        };
        if let Err(error) = result {
            tracing::error!(error = %crate::exporters::error_chain(&error), "cannot write an audit record");
        }
    }

    /// Every record (checkpoints included), parsed, in file order.
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

/// Appends a line to the chain; returns the line as written (without its newline).
fn write_line(w: &mut Writer, line: &RecordLine<'_>) -> Result<String, AuditError> {
    // A struct of strings and numbers always serializes.
    let body = serde_json::to_string(line).map_err(|e| AuditError::Write(std::io::Error::other(e)))?;
    let hash = hex::encode(Sha256::digest(body.as_bytes()));
    let text = format!("{},\"hash\":\"{hash}\"}}\n", &body[..body.len() - 1]);
    w.file.write_all(text.as_bytes()).and_then(|_| w.file.flush()).map_err(AuditError::Write)?;
    w.next_seq += 1;
    w.prev = hash;
    Ok(text.trim_end().to_string())
}

/// Splits a written line into its stored hash and the body that was hashed.
pub(crate) fn split_hash(line: &str) -> Option<(&str, String)> {
    const SUFFIX: usize = ",\"hash\":\"".len() + 64 + "\"}".len();
    if line.len() < SUFFIX + 2 || !line.is_char_boundary(line.len() - SUFFIX) {
        return None;
    }
    let (head, tail) = line.split_at(line.len() - SUFFIX);
    let hash = tail.strip_prefix(",\"hash\":\"")?.strip_suffix("\"}")?;
    if !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some((hash, format!("{head}}}")))
}

pub(crate) fn checkpoint_signature(key: &[u8], seq: u64, prev: &str) -> String {
    // HMAC accepts keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(format!("{seq}:{prev}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn now_rfc3339() -> String {
    let ns = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    format_rfc3339_nanos(ns)
}
