//! One audit record: who did what to which resource, from where, and how it ended.

use serde::{Deserialize, Serialize};

/// The caller as the audit names it. Never a token or a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub iss: String,
    pub sub: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
}

impl Actor {
    /// A caller whose token did not verify: nothing about it is trusted.
    pub fn unauthenticated() -> Actor {
        Actor { iss: String::new(), sub: "unauthenticated".into(), name: None, roles: Vec::new() }
    }
}

/// What happened (before the log gives it an id, a sequence number, a time and a hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub actor: Actor,
    /// The client address: the peer, or the address a trusted proxy forwarded for.
    pub source: Option<String>,
    /// The trusted proxy the request came through, when `source` was forwarded.
    pub via: Option<String>,
    pub request_id: Option<String>,
    /// `order.read`, `trace.read`, `orders.list`, `audit.read`, `config.read`, `ingest`,
    /// `authenticate`, `unmask`, ...
    pub action: String,
    /// The order id, trace id or path (cut at [`MAX_RESOURCE_BYTES`] when written).
    pub resource: String,
    /// `allowed`, `unauthenticated`, `forbidden`, `not_found`, `error`.
    pub outcome: String,
    /// Cut at [`MAX_REASON_BYTES`] when written.
    pub reason: Option<String>,
}

/// The longest `resource` a record keeps: a 60 KB path must not write 60 KB.
pub const MAX_RESOURCE_BYTES: usize = 512;
/// The longest `reason` a record keeps.
pub const MAX_REASON_BYTES: usize = 1024;

impl AuditEvent {
    pub fn new(actor: Actor, action: impl Into<String>, resource: impl Into<String>, outcome: impl Into<String>) -> AuditEvent {
        AuditEvent {
            actor,
            source: None,
            via: None,
            request_id: None,
            action: action.into(),
            resource: resource.into(),
            outcome: outcome.into(),
            reason: None,
        }
    }

    pub fn from_source(mut self, source: Option<String>) -> Self {
        self.source = source;
        self
    }

    /// The client address and the trusted proxy it came through (`via`), if any.
    pub fn from_addresses(mut self, source: Option<String>, via: Option<String>) -> Self {
        self.source = source;
        self.via = via;
        self
    }

    pub fn with_request_id(mut self, id: Option<String>) -> Self {
        self.request_id = id;
        self
    }

    pub fn because(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
}

/// `text` cut to at most `max` bytes on a character boundary, saying how much was cut.
pub(crate) fn capped(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}...[{} more bytes]", &text[..end], text.len() - end))
}

/// A record as written: the event plus its place in the chain. Field order is the line's order.
#[derive(Debug, Serialize)]
pub(crate) struct RecordLine<'a> {
    pub id: String,
    pub seq: u64,
    pub time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub actor: Option<&'a Actor>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<&'a str>,
    pub action: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    /// On checkpoint records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<Checkpoint>,
    /// The hash of the previous record (64 zeros for the first).
    pub prev: String,
}

/// What a checkpoint record says. Checkpoints are written when a run starts, every
/// `checkpoint_every` records, and when a run stops cleanly; like every record they carry the
/// key's MAC, so a verifier with the key knows where each run began and whether it ended.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Checkpoint {
    /// `start`, `interval` or `shutdown`.
    pub kind: String,
    /// The most records that may follow before the next checkpoint.
    pub every: u64,
    /// On `start`: how the log looked when this run opened it: `new` (empty), `clean` (it
    /// ended with a shutdown checkpoint) or `unclean` (a crash, a kill, or a removed tail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
}

/// The action of a checkpoint record.
pub const CHECKPOINT: &str = "audit.checkpoint";
