//! The frame every console page shares: head, navigation, the signed-in person, the "no
//! authentication" banner, security headers, and HTML error pages.

use std::time::Instant;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};

use crate::api::{ApiError, ApiState, Caller};
use crate::auth::{Permission, Principal};

/// What the browser may do with a console page: our own scripts, styles and images, requests
/// to ourselves, forms to ourselves, and nothing else (no inline code, no framing).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The navigation entry a page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Orders,
    Alerts,
    Admin,
    /// A page under no entry (a trace).
    None,
}

/// A console request's context: who is asking, the session's CSRF token (for forms), the URL
/// prefix the console is served under, and when the request started (for `Server-Timing`).
pub struct Ctx {
    pub caller: Caller,
    /// `auth.login.public_url`'s path ("" when served at the root).
    pub base: String,
    pub started: Instant,
    /// True when sign-in is configured (the header shows "Sign out").
    pub signin: bool,
}

impl FromRequestParts<ApiState> for Ctx {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Self::Rejection> {
        let caller = parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            // The door inserts the caller before any console handler runs.
            error_page(StatusCode::INTERNAL_SERVER_ERROR, "Internal error", "the request passed no door", "")
        })?;
        Ok(Ctx { caller, base: base_path(state), started: Instant::now(), signin: state.signin.is_some() })
    }
}

impl Ctx {
    pub fn principal(&self) -> &Principal {
        &self.caller.principal
    }

    /// May this caller do `permission` (admin links and forms are shown only then)?
    pub fn may(&self, permission: Permission) -> bool {
        permission.granted_to(&self.caller.principal)
    }

    /// The CSRF token forms carry (empty without a session: bearer and anonymous callers need
    /// none).
    pub fn csrf(&self) -> &str {
        self.caller.csrf.as_deref().unwrap_or("")
    }

    /// A console path under the console's prefix.
    pub fn href(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A whole page: the frame around `body`, with the console's security headers.
    pub fn page(&self, title: &str, nav: Nav, body: Markup) -> Response {
        self.page_with_status(StatusCode::OK, title, nav, body)
    }

    pub fn page_with_status(&self, status: StatusCode, title: &str, nav: Nav, body: Markup) -> Response {
        let principal = self.principal();
        let who = principal.name.clone().unwrap_or_else(|| principal.subject.clone());
        let roles: Vec<String> = principal.roles.iter().map(|r| format!("{r:?}").to_lowercase()).collect();
        let link = |entry: Nav, path: &str, label: &str| {
            html! {
                @if entry == nav {
                    a href=(self.href(path)) aria-current="page" { (label) }
                } @else {
                    a href=(self.href(path)) { (label) }
                }
            }
        };
        let markup = html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    (head_common(title, &self.base))
                    script src=(self.href("/static/console.js")) defer {}
                }
                body {
                    a.skip href="#main" { "Skip to content" }
                    header.top {
                        a.brand href=(self.href("/")) { "tracegate" }
                        nav aria-label="Main" {
                            (link(Nav::Orders, "/", "Orders"))
                            (link(Nav::Alerts, "/alerts", "Alerts"))
                            @if self.may(Permission::ReadAudit) {
                                (link(Nav::Admin, "/admin", "Admin"))
                            }
                        }
                        div.who {
                            @if principal.anonymous {
                                span { "local mode" }
                            } @else {
                                span.person { (who) }
                                @for role in &roles { " " span.role { (role) } }
                                @if self.signin && self.caller.csrf.is_some() {
                                    form method="post" action=(self.href("/logout")) {
                                        input type="hidden" name="csrf" value=(self.csrf());
                                        button type="submit" { "Sign out" }
                                    }
                                }
                            }
                        }
                    }
                    @if principal.anonymous {
                        div.banner role="alert" {
                            strong { "No authentication." }
                            " Anyone who can reach this port can read every order and trace, with personal data in clear. \
                              Configure auth.issuers and auth.login to require sign-in."
                        }
                    }
                    main #main { (body) }
                }
            }
        };
        let elapsed = self.started.elapsed().as_secs_f64() * 1000.0;
        respond(status, markup, Some(elapsed))
    }
}

/// The console's headers on an HTML body; `render_ms` becomes `Server-Timing: render;dur=...`.
fn respond(status: StatusCode, markup: Markup, render_ms: Option<f64>) -> Response {
    let mut response = (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], markup.into_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(ms) = render_ms {
        if let Ok(value) = HeaderValue::from_str(&format!("render;dur={ms:.2}")) {
            headers.insert("server-timing", value);
        }
    }
    response
}

/// What every page's `<head>` holds: the title, the icon and the stylesheet under `base`.
fn head_common(title: &str, base: &str) -> Markup {
    html! {
        meta charset="utf-8";
        meta name="viewport" content="width=device-width, initial-scale=1";
        title { (title) " · tracegate" }
        link rel="icon" href=(format!("{base}/static/icon.svg")) type="image/svg+xml";
        link rel="stylesheet" href=(format!("{base}/static/console.css"));
    }
}

/// A page of its own for a refusal or failure (no navigation: the caller may have no access).
pub fn error_page(status: StatusCode, title: &str, message: &str, base: &str) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head { (head_common(title, base)) }
            body {
                main #main .error {
                    h1 { (title) }
                    p #message { (message) }
                    p { a href=(format!("{base}/")) { "Back to the orders" } }
                }
            }
        }
    };
    respond(status, markup, None)
}

/// The door's answer to a console request without a valid session or token: off to sign-in
/// (coming back to `path_and_query` afterwards) when browser sign-in is configured, else a 401
/// page.
pub fn unauthenticated(state: &ApiState, path_and_query: &str, refusal: Response) -> Response {
    let Some(signin) = &state.signin else {
        // The refusal's status and its `WWW-Authenticate` challenge, with a page for people.
        let mut page =
            error_page(refusal.status(), "Not signed in", "This page needs a valid bearer token (browser sign-in is not configured).", "");
        if let Some(challenge) = refusal.headers().get(header::WWW_AUTHENTICATE) {
            page.headers_mut().insert(header::WWW_AUTHENTICATE, challenge.clone());
        }
        return page;
    };
    let base = signin.config().base_path();
    // The browser's address of the page, under the console's base path as `/login` is.
    let next: String = url::form_urlencoded::byte_serialize(format!("{base}{path_and_query}").as_bytes()).collect();
    let location = format!("{base}/login?next={next}");
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The door's answer to a console request by someone without the role it needs (`needs`), or
/// a state change sent from another site (`needs` is none).
pub fn forbidden(state: &ApiState, principal: &Principal, needs: Option<Permission>) -> Response {
    let base = base_path(state);
    let who = principal.name.clone().unwrap_or_else(|| principal.subject.clone());
    let message = match needs {
        Some(Permission::ReadTraces) => format!("You are signed in as {who}, but this page needs the support or admin role."),
        Some(_) => format!("You are signed in as {who}, but this page needs the admin role."),
        None => "This request came from another site and was refused; use the console's own buttons.".to_string(),
    };
    error_page(StatusCode::FORBIDDEN, "Access denied", &message, &base)
}

/// A console handler's failure, answered as an HTML page.
#[derive(Debug)]
pub struct PageError(pub ApiError);

impl From<ApiError> for PageError {
    fn from(e: ApiError) -> Self {
        PageError(e)
    }
}

impl From<crate::api::ParamError> for PageError {
    fn from(e: crate::api::ParamError) -> Self {
        PageError(e.into())
    }
}

impl From<crate::query::QueryError> for PageError {
    fn from(e: crate::query::QueryError) -> Self {
        PageError(e.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        let (title, message) = match &self.0 {
            ApiError::NotFound(what) => ("Not found", what.clone()),
            ApiError::BadRequest(what) => ("Bad request", what.clone()),
            ApiError::BadParam(e) => ("Bad request", e.message()),
            ApiError::Internal(source) => {
                tracing::error!(error = %crate::shared::error_chain(source.as_ref()), "console request failed");
                ("Internal error", "the request failed; the gateway's log has the cause".to_string())
            }
            other => ("Unavailable", other.to_string()),
        };
        // Drawn for the root here (a handler's error cannot see the state); `error_pages` draws it
        // again under the console's base path.
        let mut response = error_page(status, title, &message, "");
        response.extensions_mut().insert(ErrorPage { title, message });
        response
    }
}

/// A [`PageError`]'s page, kept on its response for [`error_pages`].
#[derive(Debug, Clone)]
struct ErrorPage {
    title: &'static str,
    message: String,
}

/// Middleware around the console's handlers: a handler's error page links the stylesheet, icon
/// and orders page under the console's base path (`auth.login.public_url`'s path), as every
/// other page does.
pub async fn error_pages(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    if let Some(page) = response.extensions_mut().remove::<ErrorPage>() {
        let base = base_path(&state);
        if !base.is_empty() {
            return error_page(response.status(), page.title, &page.message, &base);
        }
    }
    response
}

/// The path the console is served under: `auth.login.public_url`'s ("" at the root or without
/// sign-in).
fn base_path(state: &ApiState) -> String {
    state.signin.as_ref().map(|s| s.config().base_path()).unwrap_or_default()
}

/// `text` as one URL path segment: everything but RFC 3986's unreserved characters
/// percent-encoded (order ids may hold `/`, `?`, `#`, `%`, spaces, `<`).
pub fn path_segment(text: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// The console page at `path` with the filters `fields` as `value` gives them (the empty ones
/// left out) and `limit`: a list's "show more" link.
pub fn more_href(ctx: &Ctx, path: &str, fields: &[&str], value: &dyn Fn(&str) -> String, limit: usize) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for field in fields {
        let v = value(field);
        if !v.is_empty() {
            query.append_pair(field, &v);
        }
    }
    query.append_pair("limit", &limit.to_string());
    format!("{}?{}", ctx.href(path), query.finish())
}

/// A page's path parameter (an order or trace id), or a 400 page when it is not text (percent-
/// encoded bytes that are not UTF-8).
pub fn path_param(
    param: Result<axum::extract::Path<String>, axum::extract::rejection::PathRejection>,
    what: &str,
) -> Result<String, ApiError> {
    param.map(|axum::extract::Path(value)| value).map_err(|e| ApiError::BadRequest(format!("the {what} is not valid: {}", e.body_text())))
}

/// A table's header row: one `<th scope="col">` a column, those in `numeric` right-aligned
/// (class `num`).
pub fn thead(columns: &[&str], numeric: &[&str]) -> Markup {
    html! {
        thead { tr { @for column in columns { th scope="col" class=[numeric.contains(column).then_some("num")] { (column) } } } }
    }
}

/// A list page's filter that cannot be applied, above the list.
pub fn filter_error(error: &str) -> Markup {
    html! { p #filter-error .error-message role="alert" { strong { "Cannot filter: " } (error) } }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_path_segment_keeps_unreserved_characters_only() {
        assert_eq!(super::path_segment("A 1/2?x#<script>"), "A%201%2F2%3Fx%23%3Cscript%3E");
        assert_eq!(super::path_segment("A-1_0.0~9%+ü"), "A-1_0.0~9%25%2B%C3%BC");
    }
}
