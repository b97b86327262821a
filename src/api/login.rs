//! Browser sign-in on the API port: `GET /login`, `GET /auth/callback`, `POST /logout` and
//! `GET /auth/session`. The flow and the sessions are `auth::SignIn`'s; this file turns them
//! into redirects, cookies and short pages.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{ApiError, ApiState};
use crate::auth::{set_cookie, CallbackParams, ClientAddress, LoginRefused, SessionError, SignIn};

/// How long the browser keeps the cookie that binds a sign-in to it.
const BINDING_MAX_AGE: u64 = 600;
/// The largest `POST /logout` form read.
const MAX_FORM_BYTES: usize = 4096;

fn signin(state: &ApiState) -> Result<&SignIn, ApiError> {
    state.signin.as_deref().ok_or_else(|| ApiError::NotFound("browser sign-in is not configured (auth.login)".into()))
}

fn client(state: &ApiState, request: &Request) -> ClientAddress {
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    state.access.client(peer, request.headers())
}

/// The query string as `T`; a malformed one is a 400.
fn query<T: serde::de::DeserializeOwned>(request: &Request) -> Result<T, ApiError> {
    serde_urlencoded_query(request.uri().query().unwrap_or(""))
}

fn serde_urlencoded_query<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, ApiError> {
    Query::<T>::try_from_uri(&format!("/?{text}").parse().map_err(|_| ApiError::BadRequest("malformed query".into()))?)
        .map(|q| q.0)
        .map_err(|e| ApiError::BadRequest(e.body_text()))
}

/// A redirect that also sets cookies. 303, so a `POST /logout` is followed with a `GET`.
fn redirect(location: &str, cookies: &[String]) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    for cookie in cookies {
        if let Ok(value) = HeaderValue::from_str(cookie) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A short page for a refused sign-in; the message is one of `SignIn`'s fixed sentences.
fn page(status: u16, message: &str, login_path: &str, cookies: &[String]) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let body = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>tracegate: sign-in</title></head>\n\
         <body><h1>Not signed in</h1><p id=\"message\">{}</p><p><a href=\"{}\">Sign in again</a></p></body></html>\n",
        escape(message),
        escape(login_path)
    );
    let mut response = (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response();
    for cookie in cookies {
        if let Ok(value) = HeaderValue::from_str(cookie) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'none'"));
    response
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;").replace('\'', "&#39;")
}

#[derive(Debug, serde::Deserialize)]
pub struct LoginParams {
    next: Option<String>,
}

/// `GET /login[?next=/path]`: off to the provider.
pub async fn login(State(state): State<ApiState>, request: Request) -> Result<Response, ApiError> {
    let signin = signin(&state)?;
    let client = client(&state, &request);
    let params: LoginParams = query(&request)?;
    let secure = signin.config().secure();
    match signin.begin(params.next.as_deref(), &client).await {
        Ok(start) => Ok(redirect(&start.location, &[set_cookie(signin.cookie_names().1, &start.binding, BINDING_MAX_AGE, secure)])),
        Err(LoginRefused { status, message, .. }) => Ok(page(status, message, &login_path(signin), &[])),
    }
}

fn login_path(signin: &SignIn) -> String {
    format!("{}/login", signin.config().base_path())
}

/// `GET /auth/callback?code=...&state=...`: the provider sends the browser back here.
pub async fn callback(State(state): State<ApiState>, request: Request) -> Result<Response, ApiError> {
    let signin = signin(&state)?;
    let client = client(&state, &request);
    let params: CallbackParams = query(&request)?;
    let headers = request.headers();
    let secure = signin.config().secure();
    let (session_cookie, binding_cookie) = signin.cookie_names();
    let clear_binding = set_cookie(binding_cookie, "", 0, secure);
    match signin.callback(&params, headers, &client).await {
        Ok(done) => Ok(redirect(&done.next, &[set_cookie(session_cookie, &done.session_id, done.max_age, secure), clear_binding])),
        Err(refused) => Ok(page(refused.status, refused.message, &login_path(signin), &[clear_binding])),
    }
}

/// `POST /logout`: needs same-origin (`Origin` / `Sec-Fetch-Site`) or the session's CSRF token
/// (form field `csrf` or `X-CSRF-Token`), so another site cannot sign a person out.
pub async fn logout(State(state): State<ApiState>, request: Request) -> Result<Response, ApiError> {
    let signin = signin(&state)?;
    let client = client(&state, &request);
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    let body: Bytes = axum::body::to_bytes(body, MAX_FORM_BYTES).await.unwrap_or_default();
    let secure = signin.config().secure();
    let session_cookie = signin.cookie_names().0;
    let clear = set_cookie(session_cookie, "", 0, secure);
    let session_id = signin.session_cookie(&headers);
    if let Some(csrf) = session_id.and_then(|id| signin.csrf_of(id)) {
        let form = url::form_urlencoded::parse(&body).find(|(k, _)| k == "csrf").map(|(_, v)| v.into_owned());
        if !signin.csrf_ok(&headers, &csrf, form.as_deref()) {
            if let Some(audit) = state.access.audit() {
                let event = crate::audit::AuditEvent::new(crate::audit::Actor::unauthenticated(), "logout", "/logout", "forbidden")
                    .from_client(&client)
                    .because("cross-site logout refused (no same-origin Origin or Sec-Fetch-Site, no CSRF token)");
                audit.submit(&event);
            }
            return Ok((
                StatusCode::FORBIDDEN,
                Json(serde_json::json!({"error": "forbidden", "message": "logout must come from this site"})),
            )
                .into_response());
        }
    }
    let location = signin.logout(session_id, &client).await;
    Ok(redirect(&location, &[clear]))
}

/// `GET /auth/session`: who is signed in, the CSRF token for state-changing requests, and when
/// the session ends. 401 without a session.
pub async fn session(State(state): State<ApiState>, request: Request) -> Result<Response, ApiError> {
    let signin = signin(&state)?;
    let client = client(&state, &request);
    let Some(id) = signin.session_cookie(request.headers()) else {
        return Ok(session_error(SessionError::Unknown));
    };
    match signin.describe(id, &client).await {
        Ok(value) => {
            let mut response = Json(value).into_response();
            response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok(response)
        }
        Err(error) => Ok(session_error(error)),
    }
}

/// 401 for an unknown or ended session, 503 when the provider cannot confirm it.
pub fn session_error(error: SessionError) -> Response {
    match error {
        SessionError::Unconfirmed(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"error": "unavailable", "message": "the identity provider cannot confirm the session; try again shortly"})),
        )
            .into_response(),
        _ => (StatusCode::UNAUTHORIZED, Json(serde_json::json!({"error": "unauthenticated", "message": "sign in again"}))).into_response(),
    }
}
