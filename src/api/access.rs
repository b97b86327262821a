//! The API's door: every request is matched to its rule in [`API_ROUTES`], authenticated,
//! authorized and audited here, before any handler runs. Deny by default: a request that
//! matches no rule needs a valid token and then finds no handler.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{ApiError, ApiState};
use crate::audit::{Actor, AuditEvent};
use crate::auth::{rule_for, AuthError, ClientAddress, Permission, Principal};

/// The caller of an API request, for handlers that need it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub principal: Principal,
    pub client: ClientAddress,
    pub request_id: String,
}

pub async fn authorize(State(state): State<ApiState>, mut request: Request, next: Next) -> Response {
    let rule = request.extensions().get::<MatchedPath>().and_then(|m| rule_for(request.method().as_str(), m.as_str()));
    if rule.is_some_and(|r| r.permission == Permission::Public) {
        return next.run(request).await;
    }
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    let source = peer.map(|ip| ip.to_string());
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 128)
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    // The path (with its order or trace id) is the resource; the query string is never logged.
    let resource = request.uri().path().to_string();
    let access = state.access.clone();
    let client = access.client(peer, request.headers());
    let principal = match access.authenticate(request.headers(), source.as_deref(), &resource).await {
        Ok(p) => p,
        Err(error) => return error.into_response(),
    };
    let event = |action: &str, outcome: &str| {
        AuditEvent::new(Actor::of(&principal), action, resource.clone(), outcome)
            .from_client(&client)
            .with_request_id(Some(request_id.clone()))
    };
    let Some(rule) = rule else {
        // No rule: no handler either (the router is built from the rules); 404 or 405 follows,
        // and is audited like any refusal.
        let response = next.run(request).await;
        access
            .record(&event("api.unmatched", "refused").because(format!("no rule for this request (HTTP {})", response.status().as_u16())));
        return response;
    };
    if !rule.permission.granted_to(&principal) {
        let error = AuthError::Forbidden(format!("{} needs {:?}", rule.action, rule.permission));
        access.record(&event(rule.action, "forbidden").because(error.to_string()));
        return error.into_response();
    }
    // Admin actions are recorded before they happen, and refused if the record cannot be written.
    let fail_closed = matches!(rule.permission, Permission::ReadAudit | Permission::ViewConfig | Permission::Unmask);
    if fail_closed {
        if let Some(audit) = access.audit() {
            if let Err(error) = audit.record(&event(rule.action, "allowed")) {
                tracing::error!(error = %crate::shared::error_chain(&error), "audit log unwritable; refusing an admin action");
                return ApiError::AuditUnavailable.into_response();
            }
        }
    }
    request.extensions_mut().insert(Caller { principal: principal.clone(), client: client.clone(), request_id: request_id.clone() });
    let response = next.run(request).await;
    if !fail_closed {
        let outcome = match response.status() {
            s if s.is_success() => "allowed",
            StatusCode::NOT_FOUND => "not_found",
            s if s.is_client_error() => "bad_request",
            _ => "error",
        };
        access.record(&event(rule.action, outcome));
    }
    response
}
