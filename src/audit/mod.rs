//! The audit trail: who looked at which order or trace and when, every refusal, every failed
//! authentication, every configuration view and unmask. JSON lines in a SHA-256 hash chain
//! with HMAC-signed checkpoints; `tracegate audit verify` checks a file.

mod event;
mod log;
mod mirror;
mod verify;

pub use event::{Actor, AuditEvent, CHECKPOINT};
pub use log::{AuditConfig, AuditError, AuditLog, GENESIS};
pub use mirror::{AuditMirror, AuditMirrorConfig};
pub use verify::{verify_file, verify_text, ChainBreak, VerifyError, VerifyReport};
