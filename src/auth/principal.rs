//! Who is calling: a verified token's subject and roles, or `anonymous` when auth is off.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A tracegate role (DESIGN.md §2, Roles).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Support,
    Admin,
    Service,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Support => "support",
            Role::Admin => "admin",
            Role::Service => "service",
        })
    }
}

/// The caller of one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    /// `iss`; empty for the anonymous principal.
    pub issuer: String,
    /// `sub`, or `anonymous`.
    pub subject: String,
    /// A display name (`preferred_username`, `name` or `email`), when the token has one.
    pub name: Option<String>,
    pub roles: BTreeSet<Role>,
    /// The sending service's identity (the issuer's `service_claim`), when present.
    #[serde(skip)]
    pub service: Option<String>,
    /// True when authentication is off: the policy allows everything, and says so in the audit.
    #[serde(skip)]
    pub anonymous: bool,
}

impl Principal {
    /// The caller when no `auth.issuers` are configured (one machine, loopback only).
    pub fn anonymous() -> Principal {
        Principal { issuer: String::new(), subject: "anonymous".into(), name: None, roles: BTreeSet::new(), service: None, anonymous: true }
    }

    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// The audit names a verified caller by its principal. Written here, beside `Principal`, so the
/// audit trail needs to know nothing about authentication.
impl crate::audit::Actor {
    pub fn of(principal: &Principal) -> crate::audit::Actor {
        crate::audit::Actor {
            iss: principal.issuer.clone(),
            sub: principal.subject.clone(),
            name: principal.name.clone(),
            roles: principal.roles.iter().map(|r| r.to_string()).collect(),
        }
    }
}
