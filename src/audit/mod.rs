//! The audit trail: who looked at which order or trace and when, every refusal, every failed
//! authentication, every configuration view and unmask. JSON lines in a SHA-256 hash chain, each
//! record authenticated with HMAC-SHA256 under the audit key, checkpoints at each run's start,
//! every `checkpoint_every` records and at a clean stop; `tracegate audit verify` checks a file.

mod event;
mod log;
mod mirror;
mod verify;

pub use event::{Actor, AuditEvent, Checkpoint, CHECKPOINT, MAX_REASON_BYTES, MAX_RESOURCE_BYTES};
pub use log::{AuditConfig, AuditError, AuditLog, GENESIS, KEY_ENV};
pub use mirror::{AuditMirror, AuditMirrorConfig};
pub use verify::{verify_file, verify_text, ChainBreak, VerifyError, VerifyReport};
