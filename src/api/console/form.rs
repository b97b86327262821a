//! The console's POST forms (unmask, reload): the body read within a size limit, and the
//! session's CSRF token checked.
//!
//! The door has already checked the role and, for a browser session, that the request comes
//! from our own origin; a session's form must also carry the session's CSRF token (a hidden
//! `csrf` field). Bearer and anonymous callers have no session and no token.

use std::collections::HashMap;

use axum::body::Body;
use axum::http::StatusCode;
use axum::response::Response;

use super::layout::error_page;
use super::Ctx;
use crate::api::ApiState;
use crate::audit::{Actor, AuditEvent};

/// An `application/x-www-form-urlencoded` body, at most `limit` bytes: each field's first
/// value, or a 413 page.
pub async fn read(ctx: &Ctx, body: Body, limit: usize) -> Result<HashMap<String, String>, Response> {
    let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
        let message = format!("The form is larger than {limit} bytes; this console's forms are smaller.");
        return Err(error_page(StatusCode::PAYLOAD_TOO_LARGE, "Request too large", &message, &ctx.base));
    };
    let mut form = HashMap::new();
    for (key, value) in url::form_urlencoded::parse(&bytes) {
        form.entry(key.into_owned()).or_insert_with(|| value.into_owned());
    }
    Ok(form)
}

/// `None` when the form may go on: the caller has no session, or the form carries the
/// session's CSRF token. Otherwise a 403 page, the refusal recorded in the audit log as
/// `action` on `resource`.
pub fn csrf_refusal(ctx: &Ctx, state: &ApiState, form: &HashMap<String, String>, action: &str, resource: &str) -> Option<Response> {
    let expected = ctx.caller.csrf.as_deref()?;
    let sent = form.get("csrf").map(String::as_str).unwrap_or("");
    if same_token(sent.as_bytes(), expected.as_bytes()) {
        return None;
    }
    let event = AuditEvent::new(Actor::of(ctx.principal()), action, resource, "forbidden")
        .from_client(&ctx.caller.client)
        .with_request_id(Some(ctx.caller.request_id.clone()))
        .because("the form's CSRF token is missing or not the session's");
    state.access.record(&event);
    let message = "This form does not carry your session's CSRF token (it was not sent from this page of your \
                   session); reload the page and try again.";
    Some(error_page(StatusCode::FORBIDDEN, "Access denied", message, &ctx.base))
}

/// `sent` is the (non-empty) `expected` token, compared in time independent of where they differ.
fn same_token(sent: &[u8], expected: &[u8]) -> bool {
    !expected.is_empty() && sent.len() == expected.len() && sent.iter().zip(expected).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_match_exactly_and_never_when_empty() {
        assert!(super::same_token(b"abc", b"abc"));
        assert!(!super::same_token(b"abd", b"abc"));
        assert!(!super::same_token(b"ab", b"abc"));
        assert!(!super::same_token(b"", b""));
    }
}
