//! `tracegate audit verify FILE`: walks the hash chain and names the first record that was
//! changed, removed, reordered, inserted or made up.
//!
//! With the audit key every record's MAC is checked, so a record written by anyone without the
//! key is found, even when they re-hashed the chain after it; the checkpoints say where each run
//! began and whether it ended cleanly. Without the key only the chain is checked: that finds
//! accidental damage and edits by someone who did not recompute the hashes, but anyone can
//! recompute SHA-256, so it proves nothing against a deliberate rewrite.

use std::path::Path;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::event::{Checkpoint, CHECKPOINT};
use super::log::{record_mac, split_line, GENESIS};

/// A chain that holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub records: u64,
    pub checkpoints: u64,
    /// Whether every record's MAC was checked with the key.
    pub authenticated: bool,
    /// Runs of the gateway the log holds (start checkpoints).
    pub runs: u64,
    /// Runs that began after a run that did not end with a shutdown checkpoint (a crash, a
    /// kill, or a tail that was removed).
    pub unclean_restarts: u64,
    /// Whether the log ends with a shutdown checkpoint. When it does not, the gateway is still
    /// running, or stopped without one, or records at the end were removed: the key cannot tell
    /// which.
    pub ends_cleanly: bool,
}

/// Where the chain breaks: the line (1-based), the record's sequence number, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line} (record seq {expected_seq}): {problem}")]
pub struct ChainBreak {
    pub line: usize,
    /// The sequence number the record at this line should have.
    pub expected_seq: u64,
    pub problem: String,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("cannot read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Broken(#[from] ChainBreak),
}

pub fn verify_file(path: &Path, key: Option<&[u8]>) -> Result<VerifyReport, VerifyError> {
    let text = std::fs::read_to_string(path).map_err(|source| VerifyError::Read { path: path.display().to_string(), source })?;
    Ok(verify_text(&text, key)?)
}

pub fn verify_text(text: &str, key: Option<&[u8]>) -> Result<VerifyReport, ChainBreak> {
    let mut report =
        VerifyReport { records: 0, checkpoints: 0, authenticated: key.is_some(), runs: 0, unclean_restarts: 0, ends_cleanly: false };
    let mut prev = GENESIS.to_string();
    // Records since the last checkpoint, and how many may come before the next one.
    let mut since_checkpoint = 0u64;
    let mut every = u64::MAX;
    let mut last_was_shutdown = false;
    if text.is_empty() {
        return Err(ChainBreak { line: 1, expected_seq: 0, problem: "the log is empty (every run begins with a start checkpoint)".into() });
    }
    for (index, line) in text.lines().enumerate() {
        // Records are numbered from 0, one per line.
        let expected_seq = index as u64;
        let brk = |problem: String| ChainBreak { line: index + 1, expected_seq, problem };
        if line.trim().is_empty() {
            return Err(brk("empty line".into()));
        }
        let parts = split_line(line).ok_or_else(|| brk("not an audit record (no hash at the end)".into()))?;
        let actual = hex::encode(Sha256::digest(parts.body.as_bytes()));
        if actual != parts.hash {
            return Err(brk("record was changed (its hash does not match its content)".into()));
        }
        if let Some(key) = key {
            match parts.mac {
                None => return Err(brk("record carries no MAC: not written by tracegate with an audit key".into())),
                Some(mac) if mac != record_mac(key, parts.hash) => {
                    return Err(brk(
                        "MAC does not verify: the record was written or re-hashed without the audit key (forged, changed, or another key)"
                            .into(),
                    ))
                }
                Some(_) => {}
            }
        }
        let record: Value = serde_json::from_str(&parts.body).map_err(|e| brk(format!("not JSON: {e}")))?;
        let seq = record["seq"].as_u64().ok_or_else(|| brk("record has no seq".into()))?;
        if seq > expected_seq {
            return Err(brk(format!("record(s) removed: expected seq {expected_seq}, found {seq}")));
        }
        if seq < expected_seq {
            return Err(brk(format!("records reordered or duplicated: expected seq {expected_seq}, found {seq}")));
        }
        if record["prev"].as_str() != Some(prev.as_str()) {
            return Err(brk("chain broken: prev is not the hash of the record before".into()));
        }
        let checkpoint = if record["action"].as_str() == Some(CHECKPOINT) {
            let c: Checkpoint = serde_json::from_value(record["checkpoint"].clone())
                .map_err(|e| brk(format!("checkpoint record without a valid checkpoint field: {e}")))?;
            Some(c)
        } else {
            None
        };
        if index == 0 && checkpoint.as_ref().is_none_or(|c| c.kind != "start" || c.previous.as_deref() != Some("new")) {
            return Err(brk("the log does not begin with the start checkpoint of a new log (records removed from the front, or not a tracegate audit log)".into()));
        }
        if last_was_shutdown && checkpoint.as_ref().is_none_or(|c| c.kind != "start") {
            return Err(brk("a record after a shutdown checkpoint that is not a start checkpoint (records inserted)".into()));
        }
        match &checkpoint {
            Some(c) => {
                report.checkpoints += 1;
                if c.every == 0 {
                    return Err(brk("checkpoint says 0 records between checkpoints".into()));
                }
                if c.kind == "start" {
                    report.runs += 1;
                    let expected = match (index, last_was_shutdown) {
                        (0, _) => "new",
                        (_, true) => "clean",
                        (_, false) => "unclean",
                    };
                    if c.previous.as_deref() != Some(expected) {
                        return Err(brk(format!(
                            "start checkpoint says the log looked {:?} when this run opened it, but the records before it make it {expected:?} (records removed or inserted)",
                            c.previous.as_deref().unwrap_or("")
                        )));
                    }
                    if expected == "unclean" {
                        report.unclean_restarts += 1;
                    }
                } else if c.kind != "interval" && c.kind != "shutdown" {
                    return Err(brk(format!("unknown checkpoint kind {:?}", c.kind)));
                }
                since_checkpoint = 0;
                every = c.every;
                last_was_shutdown = c.kind == "shutdown";
            }
            None => {
                since_checkpoint += 1;
                if since_checkpoint > every {
                    return Err(brk(format!(
                        "more than {every} records since the last checkpoint (records inserted, or a checkpoint removed)"
                    )));
                }
                last_was_shutdown = false;
            }
        }
        prev = parts.hash.to_string();
        report.records += 1;
    }
    report.ends_cleanly = last_was_shutdown;
    Ok(report)
}
