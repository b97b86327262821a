//! One audit record: who did what to which resource, from where, and how it ended.

use serde::{Deserialize, Serialize};

use crate::auth::Principal;

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
    pub fn of(principal: &Principal) -> Actor {
        Actor {
            iss: principal.issuer.clone(),
            sub: principal.subject.clone(),
            name: principal.name.clone(),
            roles: principal.roles.iter().map(|r| r.to_string()).collect(),
        }
    }

    /// A caller whose token did not verify: nothing about it is trusted.
    pub fn unauthenticated() -> Actor {
        Actor { iss: String::new(), sub: "unauthenticated".into(), name: None, roles: Vec::new() }
    }
}

/// What happened (before the log gives it an id, a sequence number, a time and a hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub actor: Actor,
    /// The peer address.
    pub source: Option<String>,
    pub request_id: Option<String>,
    /// `order.read`, `trace.read`, `orders.list`, `audit.read`, `config.read`, `ingest`,
    /// `authenticate`, `unmask`, ...
    pub action: String,
    /// The order id, trace id or path.
    pub resource: String,
    /// `allowed`, `unauthenticated`, `forbidden`, `not_found`, `error`.
    pub outcome: String,
    pub reason: Option<String>,
}

impl AuditEvent {
    pub fn new(actor: Actor, action: impl Into<String>, resource: impl Into<String>, outcome: impl Into<String>) -> AuditEvent {
        AuditEvent {
            actor,
            source: None,
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

    pub fn with_request_id(mut self, id: Option<String>) -> Self {
        self.request_id = id;
        self
    }

    pub fn because(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
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
    pub request_id: Option<&'a str>,
    pub action: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    /// HMAC-SHA256 of `"{seq}:{prev}"` under the checkpoint key, on checkpoint records.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
    /// The hash of the previous record (64 zeros for the first).
    pub prev: String,
}

/// The action of a checkpoint record.
pub const CHECKPOINT: &str = "audit.checkpoint";
