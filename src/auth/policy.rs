//! The policy: which permission each door needs, and which roles hold it. Deny by default: the
//! API router is built from [`API_ROUTES`], so an endpoint cannot exist without a rule here, and
//! a request that matches no rule is refused.

use std::net::IpAddr;
use std::sync::Arc;

use axum::http::HeaderMap;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValueKind;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

use super::client::{ClientAddress, TrustedProxies};
use super::config::AuthConfig;
use super::error::AuthError;
use super::jwt::TokenVerifier;
use super::principal::{Principal, Role};
use super::setup::AuthSetupError;
use crate::audit::{Actor, AuditEvent, AuditLog};

/// What a request needs (DESIGN.md §2, Roles).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Health checks and Prometheus metrics: no tracing data, open to any caller.
    Public,
    /// Orders and traces (personal data masked for `support`).
    ReadTraces,
    /// The audit log.
    ReadAudit,
    /// The running configuration.
    ViewConfig,
    /// Personal data in clear (with a reason).
    Unmask,
    /// Sending OTLP and order events.
    Ingest,
}

impl Permission {
    /// Whether `principal` holds this permission. The anonymous principal (auth off) holds all.
    pub fn granted_to(self, principal: &Principal) -> bool {
        if principal.anonymous {
            return true;
        }
        match self {
            Permission::Public => true,
            Permission::ReadTraces => principal.has(Role::Support) || principal.has(Role::Admin),
            Permission::ReadAudit | Permission::ViewConfig | Permission::Unmask => principal.has(Role::Admin),
            Permission::Ingest => principal.has(Role::Service),
        }
    }
}

/// One API door.
#[derive(Debug, Clone, Copy)]
pub struct RouteRule {
    pub method: &'static str,
    /// The route as axum matches it.
    pub path: &'static str,
    pub permission: Permission,
    /// The audit action of a request through this door.
    pub action: &'static str,
}

/// Every API route. The router is built from this table, and the matrix test walks it.
pub const API_ROUTES: &[RouteRule] = &[
    RouteRule { method: "GET", path: "/healthz", permission: Permission::Public, action: "health" },
    RouteRule { method: "GET", path: "/readyz", permission: Permission::Public, action: "health" },
    RouteRule { method: "GET", path: "/metrics", permission: Permission::Public, action: "metrics" },
    // Browser sign-in: open doors by nature; each checks its own session, state or CSRF token.
    RouteRule { method: "GET", path: "/login", permission: Permission::Public, action: "login" },
    RouteRule { method: "GET", path: "/auth/callback", permission: Permission::Public, action: "login" },
    RouteRule { method: "POST", path: "/logout", permission: Permission::Public, action: "logout" },
    RouteRule { method: "GET", path: "/auth/session", permission: Permission::Public, action: "session" },
    RouteRule { method: "GET", path: "/api/v1/traces/{trace_id}", permission: Permission::ReadTraces, action: "trace.read" },
    RouteRule { method: "GET", path: "/api/v1/orders", permission: Permission::ReadTraces, action: "orders.list" },
    RouteRule { method: "GET", path: "/api/v1/orders/{order_id}", permission: Permission::ReadTraces, action: "order.read" },
    RouteRule { method: "GET", path: "/api/v1/alerts", permission: Permission::ReadTraces, action: "alerts.list" },
    // The Jaeger-compatible query API (Jaeger UI, Grafana's Jaeger data source) and api_v3.
    RouteRule { method: "GET", path: "/api/services", permission: Permission::ReadTraces, action: "jaeger.services" },
    RouteRule {
        method: "GET",
        path: "/api/services/{service}/operations",
        permission: Permission::ReadTraces,
        action: "jaeger.operations",
    },
    RouteRule { method: "GET", path: "/api/operations", permission: Permission::ReadTraces, action: "jaeger.operations" },
    RouteRule { method: "GET", path: "/api/traces", permission: Permission::ReadTraces, action: "jaeger.traces.search" },
    RouteRule { method: "GET", path: "/api/traces/{trace_id}", permission: Permission::ReadTraces, action: "jaeger.trace.read" },
    RouteRule { method: "GET", path: "/api/dependencies", permission: Permission::ReadTraces, action: "jaeger.dependencies" },
    RouteRule { method: "GET", path: "/api/v3/services", permission: Permission::ReadTraces, action: "jaeger.services" },
    RouteRule { method: "GET", path: "/api/v3/operations", permission: Permission::ReadTraces, action: "jaeger.operations" },
    RouteRule { method: "GET", path: "/api/v3/traces", permission: Permission::ReadTraces, action: "jaeger.traces.search" },
    RouteRule { method: "GET", path: "/api/v3/traces/{trace_id}", permission: Permission::ReadTraces, action: "jaeger.trace.read" },
    RouteRule { method: "GET", path: "/api/v1/audit", permission: Permission::ReadAudit, action: "audit.read" },
    RouteRule { method: "GET", path: "/api/v1/admin/config", permission: Permission::ViewConfig, action: "config.read" },
    RouteRule { method: "POST", path: "/api/v1/admin/reload", permission: Permission::ViewConfig, action: "config.reload" },
    // The support console (HTML pages; refusals are pages too, see api::console). Unmask is
    // checked and audited (with its reason) by its handler, as on /api/v1/traces.
    RouteRule { method: "GET", path: "/static/{file}", permission: Permission::Public, action: "console.static" },
    RouteRule { method: "GET", path: "/", permission: Permission::ReadTraces, action: "console.orders" },
    RouteRule { method: "GET", path: "/orders/{order_id}", permission: Permission::ReadTraces, action: "console.order" },
    RouteRule { method: "GET", path: "/traces/{trace_id}", permission: Permission::ReadTraces, action: "console.trace" },
    RouteRule { method: "POST", path: "/traces/{trace_id}/unmask", permission: Permission::ReadTraces, action: "console.unmask" },
    RouteRule { method: "GET", path: "/alerts", permission: Permission::ReadTraces, action: "console.alerts" },
    RouteRule { method: "GET", path: "/admin", permission: Permission::ReadAudit, action: "console.admin" },
    RouteRule { method: "POST", path: "/admin/reload", permission: Permission::ViewConfig, action: "console.reload" },
];

/// The rule for a matched route, if any. `HEAD` gets exactly `GET`'s rule: the router answers
/// it with the `GET` handler (without the body), so it must pass the same door and be audited
/// the same way.
pub fn rule_for(method: &str, matched_path: &str) -> Option<&'static RouteRule> {
    let method = if method.eq_ignore_ascii_case("HEAD") { "GET" } else { method };
    API_ROUTES.iter().find(|r| r.method == method && r.path == matched_path)
}

/// Authentication and authorization for one listener, with the audit trail beside it.
pub struct AccessControl {
    verifier: Option<TokenVerifier>,
    max_header_bytes: usize,
    audit: Option<Arc<AuditLog>>,
    proxies: TrustedProxies,
}

impl AccessControl {
    /// With no issuers, every caller is the anonymous principal.
    pub fn new(config: &AuthConfig, audit: Option<Arc<AuditLog>>) -> Result<AccessControl, AuthSetupError> {
        let verifier = if config.enabled() { Some(TokenVerifier::new(config)?) } else { None };
        let proxies = TrustedProxies::parse(&config.trusted_proxies)?;
        Ok(AccessControl { verifier, max_header_bytes: config.max_header_bytes, audit, proxies })
    }

    /// The client of a request from `peer`, through `auth.trusted_proxies`.
    pub fn client(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> ClientAddress {
        self.proxies.client(peer, headers)
    }

    /// Whether tokens are checked at all.
    pub fn enabled(&self) -> bool {
        self.verifier.is_some()
    }

    pub fn audit(&self) -> Option<&Arc<AuditLog>> {
        self.audit.as_ref()
    }

    /// Who sent `headers`; `source` is the peer's address. Failures are audited (limited per
    /// client and reason).
    pub async fn authenticate(&self, headers: &HeaderMap, source: Option<&str>, resource: &str) -> Result<Principal, AuthError> {
        let Some(verifier) = &self.verifier else { return Ok(Principal::anonymous()) };
        let result = match bearer_token(headers, self.max_header_bytes) {
            Ok(Some(token)) => verifier.verify(token).await,
            Ok(None) => Err(AuthError::Missing),
            Err(e) => Err(e),
        };
        let client = self.client(source.and_then(|s| s.parse().ok()), headers);
        self.settle(result, &client, resource)
    }

    /// The checks that need no key (a token is present, not oversized, from a configured
    /// issuer), for a synchronous caller. Not enough to let a message be read: OTLP/gRPC runs the
    /// full [`AccessControl::authenticate`] before its codec. Failures are audited like any other.
    pub fn precheck(&self, headers: &HeaderMap, source: Option<&str>, resource: &str) -> Result<(), AuthError> {
        let Some(verifier) = &self.verifier else { return Ok(()) };
        let result = match bearer_token(headers, self.max_header_bytes) {
            Ok(Some(token)) => verifier.precheck(token),
            Ok(None) => Err(AuthError::Missing),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => Ok(()),
            Err(error) => {
                let client = self.client(source.and_then(|s| s.parse().ok()), headers);
                self.settle(Err(error), &client, resource).map(|_| ())
            }
        }
    }

    fn settle(
        &self,
        result: Result<super::jwt::Verified, AuthError>,
        client: &ClientAddress,
        resource: &str,
    ) -> Result<Principal, AuthError> {
        match result {
            Ok(verified) => {
                if !verified.malformed_role_claims.is_empty() {
                    let event = AuditEvent::new(Actor::of(&verified.principal), "authenticate", resource, "allowed")
                        .from_client(client)
                        .because(format!("role claim of the wrong shape: {}", verified.malformed_role_claims.join(", ")));
                    self.record(&event);
                }
                Ok(verified.principal)
            }
            Err(error) => {
                tracing::debug!(%error, source = client.source.as_deref(), "authentication failed");
                if let Some(audit) = &self.audit {
                    let event = AuditEvent::new(Actor::unauthenticated(), "authenticate", resource, error.outcome())
                        .from_client(client)
                        .because(error.to_string());
                    audit.record_failed_auth(&event);
                }
                Err(error)
            }
        }
    }

    /// Records an event without waiting for the file; a write failure is logged and counted
    /// (callers that must fail closed use [`AuditLog::record_acked`] directly).
    pub fn record(&self, event: &AuditEvent) {
        if let Some(audit) = &self.audit {
            audit.submit(event);
        }
    }

    /// Checks a service token against every `ResourceSpans`' `service.name`.
    pub fn check_ingest(&self, principal: &Principal, resource_spans: &[ResourceSpans]) -> Result<(), AuthError> {
        check_ingest(principal, resource_spans.iter().map(service_name))
    }
}

/// A sender may send only its own spans: every claimed service must be its identity.
pub fn check_ingest<'a>(principal: &Principal, claimed: impl IntoIterator<Item = &'a str>) -> Result<(), AuthError> {
    if principal.anonymous {
        return Ok(());
    }
    if !Permission::Ingest.granted_to(principal) {
        return Err(AuthError::Forbidden("sending needs the service role".into()));
    }
    let Some(identity) = principal.service.as_deref() else {
        return Err(AuthError::Forbidden("the token names no service identity".into()));
    };
    for name in claimed {
        if name != identity {
            return Err(AuthError::ServiceMismatch { identity: identity.to_string(), claimed: name.to_string() });
        }
    }
    Ok(())
}

/// A resource's `service.name` ("" when absent).
pub fn service_name(rs: &ResourceSpans) -> &str {
    rs.resource
        .as_ref()
        .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| match &v.value {
            Some(AnyValueKind::StringValue(s)) => Some(s.as_str()),
            _ => None,
        })
        .unwrap_or("")
}

/// The token of a request: `Authorization: Bearer ...`, else `X-Forwarded-Access-Token` (set by
/// oauth2-proxy). Never the query string. Oversized headers are refused before parsing.
pub fn bearer_token(headers: &HeaderMap, max_bytes: usize) -> Result<Option<&str>, AuthError> {
    for name in ["authorization", "x-forwarded-access-token"] {
        let Some(value) = headers.get(name) else { continue };
        if value.len() > max_bytes {
            return Err(AuthError::Invalid(format!("{name} header longer than {max_bytes} bytes")));
        }
        let text = value.to_str().map_err(|_| AuthError::Invalid(format!("{name} header is not ASCII")))?.trim();
        let token = if name == "authorization" {
            match text.split_once(' ') {
                Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
                _ => return Err(AuthError::Invalid("authorization is not a Bearer token".into())),
            }
        } else {
            text
        };
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        return Ok(Some(token));
    }
    Ok(None)
}
