//! The API's door: every request is matched to its rule in [`API_ROUTES`], authenticated,
//! authorized and audited here, before any handler runs. Deny by default: a request that
//! matches no rule needs a valid token and then finds no handler.

use std::net::SocketAddr;
use std::time::Duration;

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
    /// The browser session's CSRF token (forms carry it); none for bearer and anonymous callers.
    pub csrf: Option<String>,
}

/// How long an answer waits for the audit records of its request to be written, so that a
/// caller who got an answer finds its record in the file. Only when the file stalls is this
/// reached, and then once: later answers do not wait until the writer has caught up.
const AUDIT_GRACE: Duration = Duration::from_millis(250);

pub async fn authorize(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let response = door(&state, request, next).await;
    if let Some(audit) = state.access.audit() {
        audit.caught_up(AUDIT_GRACE).await;
    }
    response
}

async fn door(state: &ApiState, mut request: Request, next: Next) -> Response {
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
    // Console pages are answered in HTML: a sign-in redirect or a page, not JSON.
    let page = rule.is_some_and(|r| super::console::is_page_action(r.action));
    let (principal, session_csrf) = match resolve(state, request.headers(), &client, source.as_deref(), &resource).await {
        Ok(found) => found,
        Err(response) if page => {
            let path_and_query = request.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
            return super::console::unauthenticated(state, path_and_query, response);
        }
        Err(response) => return response,
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
        if page {
            return super::console::forbidden(state, &principal, Some(rule.permission));
        }
        return error.into_response();
    }
    // A browser session changes state (admin actions, unmask) only from our own pages.
    if let (Some(csrf), Some(signin)) = (&session_csrf, &state.signin) {
        let changes_state = !matches!(request.method().as_str(), "GET" | "HEAD" | "OPTIONS")
            || request.uri().query().is_some_and(|q| q.split('&').any(|p| p.starts_with("unmask=")));
        if changes_state && !signin.csrf_ok(request.headers(), csrf, None) {
            let error = AuthError::Forbidden("cross-site request with a session cookie".into());
            access.record(&event(rule.action, "forbidden").because(error.to_string()));
            if page {
                return super::console::forbidden(state, &principal, None);
            }
            return error.into_response();
        }
    }
    // Admin actions are recorded before they happen, and refused if the record cannot be written.
    let fail_closed = matches!(rule.permission, Permission::ReadAudit | Permission::ViewConfig | Permission::Unmask);
    if fail_closed {
        if let Some(audit) = access.audit() {
            if let Err(error) = audit.record_acked(&event(rule.action, "allowed")).await {
                tracing::error!(error = %crate::shared::error_chain(&error), "audit log unwritable; refusing an admin action");
                return ApiError::AuditUnavailable.into_response();
            }
        }
    }
    request.extensions_mut().insert(Caller {
        principal: principal.clone(),
        client: client.clone(),
        request_id: request_id.clone(),
        csrf: session_csrf.clone(),
    });
    let response = next.run(request).await;
    if !fail_closed {
        let outcome = match response.status() {
            s if s.is_success() || s.is_redirection() => "allowed",
            StatusCode::NOT_FOUND => "not_found",
            s if s.is_client_error() => "bad_request",
            _ => "error",
        };
        access.record(&event(rule.action, outcome));
    }
    response
}

/// Who is calling: a bearer token (`Authorization` or `X-Forwarded-Access-Token`) when one is
/// sent, else the browser session cookie when sign-in is configured. The session's CSRF token
/// comes back beside the principal of a session. Failures are audited and become the reply.
pub async fn resolve(
    state: &ApiState,
    headers: &axum::http::HeaderMap,
    client: &ClientAddress,
    source: Option<&str>,
    resource: &str,
) -> Result<(Principal, Option<String>), Response> {
    let bearer = headers.contains_key(axum::http::header::AUTHORIZATION) || headers.contains_key("x-forwarded-access-token");
    let session = state.signin.as_ref().filter(|_| !bearer).and_then(|s| s.session_cookie(headers).map(|id| (s, id)));
    let Some((signin, id)) = session else {
        return state.access.authenticate(headers, source, resource).await.map(|p| (p, None)).map_err(IntoResponse::into_response);
    };
    match signin.authenticate(id, client).await {
        Ok(caller) => Ok((caller.principal, Some(caller.csrf))),
        Err(error) => {
            if let Some(audit) = state.access.audit() {
                let event = AuditEvent::new(Actor::unauthenticated(), "authenticate", resource, "unauthenticated")
                    .from_client(client)
                    .because(error.to_string());
                audit.record_failed_auth(&event);
            }
            Err(super::login::session_error(error))
        }
    }
}
