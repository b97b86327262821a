//! One request through the proxy: authenticated, checked against the caller's roles, passed on
//! to Jaeger without credentials, its trace answers masked, and audited.
//!
//! | request (after the path prefix) | needs | answer | audit |
//! | --- | --- | --- | --- |
//! | `GET /api/traces/{id}`, `/api/v3/traces/{id}` | support or admin | masked | `jaeger.trace.read` |
//! | `GET /api/traces`, `/api/v3/traces` (search) | support or admin | masked | `jaeger.search`, and `jaeger.trace.read` per trace found |
//! | other `GET /api/...` (services, operations, dependencies, metrics) | support or admin | as Jaeger's | `jaeger.api` |
//! | any other method (`POST /api/archive/{id}`, `/api/transform`) | admin | as Jaeger's | `jaeger.admin` |
//! | `GET` anything else (the UI's page and files) | support or admin | streamed | refusals only |

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use serde_json::Value;

use super::config::JaegerUiConfig;
use super::mask::{mask_answer, trace_ids};
use super::upstream::{response_headers, ProxySetupError, Upstream, UpstreamError};
use crate::api::{ApiError, ApiState};
use crate::audit::{Actor, AuditEvent};
use crate::auth::{AccessControl, AuthError, Permission, Principal, Pseudonymizer, Role};

/// The largest request body passed on (only admins send bodies: `/api/transform` takes OTLP).
const MAX_REQUEST_BODY: usize = 8 << 20;

/// What a request asks of Jaeger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    /// One trace by id: masked.
    Trace,
    /// A trace search: masked; each trace found is audited.
    Search,
    /// Another read of Jaeger's API: service and operation names, dependencies, metrics.
    Api,
    /// Anything but `GET` or `HEAD`: Jaeger's archive and transform endpoints.
    Admin,
    /// The UI's page and files.
    Ui,
}

impl Call {
    /// `rest` is the path after the prefix.
    fn of(method: &Method, rest: &str) -> Call {
        if method != Method::GET && method != Method::HEAD {
            return Call::Admin;
        }
        let api = rest.strip_prefix("/api/v3/").or_else(|| rest.strip_prefix("/api/"));
        match api {
            Some("traces") => Call::Search,
            Some(t) if t.strip_prefix("traces/").is_some_and(|id| !id.is_empty() && !id.contains('/')) => Call::Trace,
            Some(_) => Call::Api,
            None if rest == "/api" => Call::Api,
            None => Call::Ui,
        }
    }

    fn action(self) -> &'static str {
        match self {
            Call::Trace => "jaeger.trace.read",
            Call::Search => "jaeger.search",
            Call::Api => "jaeger.api",
            Call::Admin => "jaeger.admin",
            Call::Ui => "jaeger.ui",
        }
    }

    fn masked(self) -> bool {
        matches!(self, Call::Trace | Call::Search)
    }

    fn granted_to(self, principal: &Principal) -> bool {
        match self {
            Call::Admin => principal.anonymous || principal.has(Role::Admin),
            _ => Permission::ReadTraces.granted_to(principal),
        }
    }
}

/// The proxy in front of one Jaeger query service.
pub struct JaegerProxy {
    path: String,
    max_response: usize,
    upstream: Upstream,
    access: Arc<AccessControl>,
    pseudonyms: Arc<Pseudonymizer>,
}

impl JaegerProxy {
    pub fn new(
        config: &JaegerUiConfig,
        access: Arc<AccessControl>,
        pseudonyms: Arc<Pseudonymizer>,
    ) -> Result<JaegerProxy, ProxySetupError> {
        Ok(JaegerProxy {
            path: config.path.clone(),
            max_response: config.max_response_size.as_usize(),
            upstream: Upstream::new(&config.upstream, config.ca_file.as_deref(), config.timeout)?,
            access,
            pseudonyms,
        })
    }

    /// The path prefix the proxy serves (`/jaeger`).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The routes under the prefix; they pass this module's door, not the read API's.
    pub fn routes(&self) -> Router<ApiState> {
        let path = &self.path;
        Router::new().route(path, any(handle)).route(&format!("{path}/"), any(handle)).route(&format!("{path}/{{*rest}}"), any(handle))
    }
}

async fn handle(State(state): State<ApiState>, request: Request) -> Response {
    match state.jaeger_proxy.clone() {
        Some(proxy) => proxy.serve(&state, request).await,
        None => ApiError::NotFound("no such endpoint".into()).into_response(),
    }
}

/// A reply of the proxy's own, in the read API's error shape.
fn failure(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({"error": code, "message": message.into()}))).into_response()
}

fn outcome(status: StatusCode) -> &'static str {
    match status {
        s if s.is_success() || s.is_redirection() => "allowed",
        StatusCode::NOT_FOUND => "not_found",
        s if s.is_client_error() => "bad_request",
        _ => "error",
    }
}

impl JaegerProxy {
    async fn serve(&self, state: &ApiState, request: Request) -> Response {
        let (parts, body) = request.into_parts();
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        let source = peer.map(|ip| ip.to_string());
        let request_id = parts
            .headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() <= 128)
            .map(str::to_string)
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let path = parts.uri.path().to_string();
        let client = self.access.client(peer, &parts.headers);
        // A bearer token, or the browser session when sign-in is configured: the read API's door.
        let (principal, session_csrf) = match crate::api::access::resolve(state, &parts.headers, &client, source.as_deref(), &path).await {
            Ok(found) => found,
            Err(refusal) => return refusal,
        };
        let rest = path.strip_prefix(&self.path).unwrap_or("");
        if !plain_path(rest) {
            // Jaeger would clean such a path and might then route it differently than this
            // proxy classified it.
            return failure(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "the path has a . or .. segment, an empty segment, or an encoded / . or \\",
            );
        }
        let call = Call::of(&parts.method, rest);
        let event = |action: &str, resource: String, outcome: &str| {
            AuditEvent::new(Actor::of(&principal), action, resource, outcome).from_client(&client).with_request_id(Some(request_id.clone()))
        };
        if !call.granted_to(&principal) {
            let needs = if call == Call::Admin { "the admin role" } else { "the support or admin role" };
            let error = AuthError::Forbidden(format!("{} needs {needs}", call.action()));
            self.access.record(&event(call.action(), path.clone(), "forbidden").because(error.to_string()));
            return error.into_response();
        }

        let query = Query::parse(parts.uri.query().unwrap_or(""));
        let unmask = match query.unmask.as_deref() {
            None | Some("" | "false") => false,
            Some("true") if call.masked() && parts.method == Method::GET => true,
            Some("true") => return failure(StatusCode::BAD_REQUEST, "bad_request", "unmask: only trace reads and searches are masked"),
            Some(other) => return failure(StatusCode::BAD_REQUEST, "bad_request", format!("unmask: {other:?} is not true or false")),
        };
        // A browser session changes state (Jaeger's archive, unmasking) only from our own origin.
        if let (Some(csrf), Some(signin)) = (&session_csrf, &state.signin) {
            if (call == Call::Admin || unmask) && !signin.csrf_ok(&parts.headers, csrf, None) {
                let error = AuthError::Forbidden("cross-site request with a session cookie".into());
                self.access.record(&event(call.action(), path.clone(), "forbidden").because(error.to_string()));
                return error.into_response();
            }
        }
        if unmask {
            if let Err(refusal) =
                self.allow_unmask(&principal, query.reason.as_deref(), &|outcome| event("unmask", path.clone(), outcome)).await
            {
                return refusal;
            }
        }
        // The resource as audited: searches with their query (personal tag values as
        // pseudonyms), other calls by path alone.
        let resource = match call {
            Call::Search => format!("{path}?{}", query.audited(&self.pseudonyms)),
            _ => path.clone(),
        };

        let body = match Limited::new(body, MAX_REQUEST_BODY).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(_) => {
                return failure(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    format!("request bodies are limited to {MAX_REQUEST_BODY} bytes"),
                )
            }
        };
        // Every JSON answer of Jaeger's API is masked, whatever this proxy thinks the call is.
        let read = call != Call::Ui && parts.method == Method::GET;
        let path_and_query = if query.forwarded.is_empty() { path.clone() } else { format!("{path}?{}", query.forwarded) };
        let answer = match self.upstream.send(parts.method.clone(), &path_and_query, &parts.headers, body, !read, &request_id).await {
            Ok(answer) => answer,
            Err(error) => {
                tracing::warn!(error = %error, path = %path, "Jaeger request failed");
                self.access.record(&event(call.action(), resource, "error").because(error.to_string()));
                return match error {
                    UpstreamError::Timeout(_) => failure(StatusCode::GATEWAY_TIMEOUT, "upstream_timeout", "Jaeger did not answer in time"),
                    _ => failure(StatusCode::BAD_GATEWAY, "upstream_unavailable", "Jaeger cannot be reached"),
                };
            }
        };

        let (response, found) = if read && answer.status().is_success() {
            match self.read_answer(answer, !unmask && !principal.anonymous).await {
                Ok((response, found)) => (response, found),
                Err(response) => {
                    self.access.record(&event(call.action(), resource, "error").because("Jaeger's answer could not be read for masking"));
                    return response;
                }
            }
        } else {
            let (parts, body) = answer.into_parts();
            let mut response = Response::new(Body::new(body));
            *response.status_mut() = parts.status;
            *response.headers_mut() = response_headers(&parts.headers);
            (response, BTreeSet::new())
        };

        let status = response.status();
        if call != Call::Ui || outcome(status) != "allowed" {
            self.access.record(&event(call.action(), resource, outcome(status)));
        }
        if call == Call::Search {
            for id in &found {
                let trace = format!("{}/api/traces/{id}", self.path);
                self.access.record(&event("jaeger.trace.read", trace, "allowed").because("in the answer to a search"));
            }
        }
        response
    }

    /// An admin may read clear values with a reason, recorded before anything is shown; no
    /// audit log, no unmasking (as on `/api/v1/traces`).
    async fn allow_unmask(
        &self,
        principal: &Principal,
        reason: Option<&str>,
        event: &(dyn Fn(&str) -> AuditEvent + Send + Sync),
    ) -> Result<(), Response> {
        if !Permission::Unmask.granted_to(principal) {
            self.access.record(&event("forbidden").because("unmask needs the admin role"));
            return Err(AuthError::Forbidden("unmask needs the admin role".into()).into_response());
        }
        let Some(reason) = reason.map(str::trim).filter(|r| !r.is_empty()) else {
            return Err(failure(StatusCode::BAD_REQUEST, "bad_request", "reason: unmasking personal data needs a reason"));
        };
        let Some(audit) = self.access.audit() else {
            tracing::warn!("unmask refused: no audit log is configured (audit.path)");
            return Err(failure(StatusCode::SERVICE_UNAVAILABLE, "audit_unavailable", "no audit log: unmasking is refused"));
        };
        if let Err(error) = audit.record_acked(&event("allowed").because(reason.to_string())).await {
            tracing::error!(error = %crate::shared::error_chain(&error), "audit log unwritable; refusing to unmask");
            return Err(failure(StatusCode::SERVICE_UNAVAILABLE, "audit_unavailable", "the audit log cannot be written"));
        }
        Ok(())
    }

    /// Reads an answer of Jaeger's API whole (up to `max_response_size`); a JSON answer is
    /// masked unless `mask` is off and returned with the trace ids it holds, anything else is
    /// passed on as it came.
    async fn read_answer(
        &self,
        answer: http::Response<hyper::body::Incoming>,
        mask: bool,
    ) -> Result<(Response, BTreeSet<String>), Response> {
        let (parts, body) = answer.into_parts();
        if parts.headers.get(header::CONTENT_ENCODING).is_some_and(|e| e != "identity") {
            return Err(failure(StatusCode::BAD_GATEWAY, "upstream_answer", "Jaeger compressed an answer it was not asked to compress"));
        }
        let limit = self.max_response;
        let read = tokio::time::timeout(self.upstream.timeout(), Limited::new(body, limit).collect()).await;
        let bytes: Bytes = match read {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(error)) if error.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
                return Err(failure(
                    StatusCode::BAD_GATEWAY,
                    "upstream_answer_too_large",
                    format!("Jaeger's answer is larger than api.jaeger_ui.max_response_size ({limit} bytes); narrow the search"),
                ))
            }
            Ok(Err(error)) => {
                tracing::warn!(error = %crate::shared::error_chain(error.as_ref()), "reading Jaeger's answer failed");
                return Err(failure(StatusCode::BAD_GATEWAY, "upstream_answer", "Jaeger's answer broke off"));
            }
            Err(_) => return Err(failure(StatusCode::GATEWAY_TIMEOUT, "upstream_timeout", "Jaeger's answer took too long")),
        };
        let Ok(mut json) = serde_json::from_slice::<Value>(&bytes) else {
            // Not JSON, so no spans (Jaeger's page for a path it does not know).
            let mut response = Response::new(Body::from(bytes));
            *response.status_mut() = parts.status;
            *response.headers_mut() = response_headers(&parts.headers);
            return Ok((response, BTreeSet::new()));
        };
        if mask {
            mask_answer(&self.pseudonyms, &mut json);
        }
        let found = trace_ids(&json);
        let mut response = (parts.status, Json(json)).into_response();
        response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok((response, found))
    }
}

/// Whether a path (after the prefix) is as Jaeger will route it: no `.` or `..` segment, no empty
/// segment, no encoded `/`, `.` or `\`.
fn plain_path(rest: &str) -> bool {
    let lower = rest.to_ascii_lowercase();
    !rest.split('/').skip(1).any(|segment| segment == "." || segment == "..")
        && !rest.contains("//")
        && !rest.contains('\\')
        && !["%2e", "%2f", "%5c"].iter().any(|encoded| lower.contains(encoded))
}

/// A request's query string: tracegate's own parameters (`unmask`, `reason`) taken out, the
/// rest passed on as written.
struct Query {
    unmask: Option<String>,
    reason: Option<String>,
    /// Passed on to Jaeger unchanged.
    forwarded: String,
    /// Decoded `(name, value)` of the passed-on parameters, for the audit.
    pairs: Vec<(String, String)>,
}

impl Query {
    fn parse(raw: &str) -> Query {
        let mut query = Query { unmask: None, reason: None, forwarded: String::new(), pairs: Vec::new() };
        for segment in raw.split('&').filter(|s| !s.is_empty()) {
            let (name, value) = segment.split_once('=').unwrap_or((segment, ""));
            let (name, value) = (decode(name), decode(value));
            match name.as_str() {
                "unmask" => query.unmask = Some(value),
                "reason" => query.reason = Some(value),
                _ => {
                    if !query.forwarded.is_empty() {
                        query.forwarded.push('&');
                    }
                    query.forwarded.push_str(segment);
                    query.pairs.push((name, value));
                }
            }
        }
        query
    }

    /// The parameters for the audit record, with personal tag values as pseudonyms: Jaeger's
    /// `tags={"key":"value"}` and `tag=key:value`, and `/api/v3`'s `query.attributes`.
    fn audited(&self, p: &Pseudonymizer) -> String {
        let shown: Vec<String> = self
            .pairs
            .iter()
            .map(|(name, value)| {
                let value = match name.as_str() {
                    "tags" | "query.attributes" => match serde_json::from_str::<Value>(value) {
                        Ok(Value::Object(mut map)) => {
                            for (key, v) in map.iter_mut() {
                                if p.is_personal(key) {
                                    *v = Value::String(p.pseudonym(&v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())));
                                }
                            }
                            Value::Object(map).to_string()
                        }
                        // Not a map: Jaeger refuses it; its text is not shown.
                        _ => "<not a JSON map>".to_string(),
                    },
                    "tag" => match value.split_once(':') {
                        Some((key, v)) if p.is_personal(key) => format!("{key}:{}", p.pseudonym(v)),
                        _ => value.clone(),
                    },
                    _ => value.clone(),
                };
                format!("{name}={value}")
            })
            .collect();
        shown.join("&")
    }
}

/// Percent-decoding of a query component (`+` is a space), lossy on bad UTF-8; a `%` not
/// followed by two hex digits stays as it is.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = || std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                if let Some(b) = hex() {
                    out.push(b);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::PersonalDataConfig;

    #[test]
    fn calls_are_told_apart_by_method_and_path() {
        let get = Method::GET;
        assert_eq!(Call::of(&get, "/api/traces/0af7651916cd43dd8448eb211c80319c"), Call::Trace);
        assert_eq!(Call::of(&get, "/api/v3/traces/0af7651916cd43dd8448eb211c80319c"), Call::Trace);
        assert_eq!(Call::of(&get, "/api/traces"), Call::Search);
        assert_eq!(Call::of(&get, "/api/v3/traces"), Call::Search);
        assert_eq!(Call::of(&get, "/api/services"), Call::Api);
        assert_eq!(Call::of(&get, "/api/traces/x/y"), Call::Api);
        assert_eq!(Call::of(&Method::POST, "/api/archive/0af7651916cd43dd8448eb211c80319c"), Call::Admin);
        assert_eq!(Call::of(&Method::DELETE, "/"), Call::Admin);
        assert_eq!(Call::of(&get, ""), Call::Ui);
        assert_eq!(Call::of(&get, "/static/index-abc.js"), Call::Ui);
        assert_eq!(Call::of(&get, "/search"), Call::Ui);
        for plain in ["", "/", "/search", "/api/traces/0af7", "/static/index-abc.js", "/trace/0af7"] {
            assert!(plain_path(plain), "{plain}");
        }
        for tricky in ["/../api/traces/1", "/x/./api", "//api/traces", "/%2e%2e/api", "/api%2Ftraces", "/a\\b", "/static/.."] {
            assert!(!plain_path(tricky), "{tricky}");
        }
    }

    #[test]
    fn own_parameters_are_taken_out_and_personal_tag_values_never_audited() {
        let p = Pseudonymizer::new(&PersonalDataConfig { pseudonym_key: Some("k".repeat(32)), ..Default::default() });
        let query = Query::parse("service=shop-api&tags=%7B%22enduser.id%22%3A%22u-42%22%7D&unmask=true&reason=ticket+77&tag=user.email:ann%40shop.test&limit=20");
        assert_eq!(query.unmask.as_deref(), Some("true"));
        assert_eq!(query.reason.as_deref(), Some("ticket 77"));
        assert_eq!(query.forwarded, "service=shop-api&tags=%7B%22enduser.id%22%3A%22u-42%22%7D&tag=user.email:ann%40shop.test&limit=20");
        let audited = query.audited(&p);
        assert!(!audited.contains("u-42") && !audited.contains("ann@shop.test"), "{audited}");
        assert!(audited.contains(&p.pseudonym("u-42")) && audited.contains(&p.pseudonym("ann@shop.test")), "{audited}");
        assert!(audited.starts_with("service=shop-api&tags="), "{audited}");
        assert_eq!(decode("a%2"), "a%2");
        assert_eq!(decode("%zz%41"), "%zzA");
    }
}
