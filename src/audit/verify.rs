//! `tracegate audit verify FILE`: walks the hash chain and names the first record that was
//! changed, removed or reordered; checks every checkpoint's signature when the key is known.

use std::path::Path;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::event::CHECKPOINT;
use super::log::{checkpoint_signature, split_hash, GENESIS};

/// A chain that holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    pub records: u64,
    pub checkpoints_verified: u64,
    /// Checkpoints present but not checked (no key given).
    pub checkpoints_unchecked: u64,
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
    let mut report = VerifyReport { records: 0, checkpoints_verified: 0, checkpoints_unchecked: 0 };
    let mut prev = GENESIS.to_string();
    for (index, line) in text.lines().enumerate() {
        // Records are numbered from 0, one per line.
        let expected_seq = index as u64;
        let brk = |problem: String| ChainBreak { line: index + 1, expected_seq, problem };
        if line.trim().is_empty() {
            return Err(brk("empty line".into()));
        }
        let (stored, body) = split_hash(line).ok_or_else(|| brk("not an audit record (no hash at the end)".into()))?;
        let actual = hex::encode(Sha256::digest(body.as_bytes()));
        if actual != stored {
            return Err(brk("record was changed (its hash does not match its content)".into()));
        }
        let record: Value = serde_json::from_str(&body).map_err(|e| brk(format!("not JSON: {e}")))?;
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
        if record["action"].as_str() == Some(CHECKPOINT) {
            match key {
                Some(key) => {
                    if record["sig"].as_str() != Some(checkpoint_signature(key, seq, &prev).as_str()) {
                        return Err(brk("checkpoint signature does not verify".into()));
                    }
                    report.checkpoints_verified += 1;
                }
                None => report.checkpoints_unchecked += 1,
            }
        }
        prev = stored.to_string();
        report.records += 1;
    }
    Ok(report)
}
