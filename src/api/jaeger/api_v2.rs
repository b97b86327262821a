//! Jaeger's HTTP query API (`/api/services`, `/api/operations`, `/api/traces`,
//! `/api/dependencies`): what Jaeger UI and Grafana's Jaeger data source call. Every answer is
//! Jaeger's envelope `{"data", "total", "limit", "offset", "errors"}`.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use serde::Serialize;
use serde_json::{json, Value};

use super::model::{self, parse_trace_id};
use super::params::{self, Params};
use crate::api::{ApiError, ApiState, Caller};
use crate::query::{Masker, QueryBackend};

/// An error in Jaeger's shape: `{"data": null, ..., "errors": [{"code", "msg"}]}`.
#[derive(Debug)]
pub struct JaegerError {
    pub status: StatusCode,
    pub msg: String,
}

impl JaegerError {
    pub fn bad_request(msg: impl Into<String>) -> JaegerError {
        JaegerError { status: StatusCode::BAD_REQUEST, msg: msg.into() }
    }
}

impl From<super::params::ParamError> for JaegerError {
    fn from(error: super::params::ParamError) -> JaegerError {
        JaegerError::bad_request(error.message())
    }
}

impl From<ApiError> for JaegerError {
    fn from(error: ApiError) -> JaegerError {
        // The read API's status; internals are logged, and the client sees "internal error".
        if let ApiError::Internal(source) = &error {
            tracing::error!(error = %crate::shared::error_chain(source.as_ref()), "Jaeger API request failed");
        }
        JaegerError { status: error.status(), msg: error.message() }
    }
}

impl From<crate::query::QueryError> for JaegerError {
    fn from(error: crate::query::QueryError) -> JaegerError {
        ApiError::from(error).into()
    }
}

impl IntoResponse for JaegerError {
    fn into_response(self) -> Response {
        let body = json!({"data": null, "total": 0, "limit": 0, "offset": 0,
                          "errors": [{"code": self.status.as_u16(), "msg": self.msg}]});
        (self.status, Json(body)).into_response()
    }
}

#[derive(Serialize)]
struct Envelope<T: Serialize> {
    data: T,
    total: usize,
    limit: usize,
    offset: usize,
    errors: Option<Vec<Value>>,
}

fn envelope<T: Serialize>(data: T, total: usize, errors: Vec<Value>) -> Response {
    Json(Envelope { data, total, limit: 0, offset: 0, errors: if errors.is_empty() { None } else { Some(errors) } }).into_response()
}

/// The query string with every repeated key, or Jaeger's 400.
pub fn query_params(raw: Result<Query<Vec<(String, String)>>, QueryRejection>) -> Result<Params, JaegerError> {
    raw.map(|Query(pairs)| Params(pairs)).map_err(|e| JaegerError::bad_request(e.body_text()))
}

pub fn backend(state: &ApiState) -> Result<QueryBackend, JaegerError> {
    state.backend.clone().ok_or_else(|| ApiError::NoBackend.into())
}

/// Hides personal data from every caller but the anonymous one (authentication off), as
/// `/api/v1` does; the Jaeger API has no unmask.
pub fn mask(state: &ApiState, caller: &Caller, resource_spans: &mut [ResourceSpans]) {
    if !caller.principal.anonymous {
        state.pseudonyms.mask_spans(resource_spans);
    }
}

/// What a search compares tags with: masked copies of the spans for a masked reader.
pub fn search_masker(state: &ApiState, caller: &Caller, tags: &[(String, String)]) -> (Option<Masker>, bool) {
    if caller.principal.anonymous || tags.is_empty() {
        return (None, false);
    }
    let pseudonyms = state.pseudonyms.clone();
    let masker: Masker = Arc::new(move |rs: &mut ResourceSpans| pseudonyms.mask_spans(std::slice::from_mut(rs)));
    (Some(masker), state.pseudonyms.is_personal("order.id"))
}

/// A stored trace, masked for the caller; `None` when unknown.
pub async fn read_trace(
    state: &ApiState,
    caller: &Caller,
    backend: &QueryBackend,
    id: Vec<u8>,
) -> Result<Option<Vec<ResourceSpans>>, JaegerError> {
    let mut found = backend.trace(id).await?;
    if let Some(resource_spans) = &mut found {
        mask(state, caller, resource_spans);
    }
    Ok(found)
}

/// Stored spans in Jaeger's model, after Jaeger v2's query-side adjustments (library
/// attributes on the resource, events by name; see `api_v3::adjust`).
fn jaeger_traces(mut resource_spans: Vec<ResourceSpans>) -> Vec<model::Trace> {
    super::api_v3::adjust(&mut resource_spans);
    model::traces(&resource_spans)
}

/// `GET /api/services`
pub async fn services(State(state): State<ApiState>) -> Result<Response, JaegerError> {
    let services = backend(&state)?.services().await?;
    Ok(envelope(&services, services.len(), Vec::new()))
}

/// `GET /api/services/{service}/operations`: the operation names of a service.
pub async fn service_operations(State(state): State<ApiState>, Path(service): Path<String>) -> Result<Response, JaegerError> {
    let mut names: Vec<String> = backend(&state)?.operations(service).await?.into_iter().map(|(name, _)| name).collect();
    names.dedup();
    Ok(envelope(&names, names.len(), Vec::new()))
}

/// `GET /api/operations?service=&spanKind=`
pub async fn operations(
    State(state): State<ApiState>,
    raw: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, JaegerError> {
    let params = query_params(raw)?;
    let service = params.get("service").ok_or_else(|| JaegerError::bad_request("parameter 'service' is required"))?;
    let kind = params.get("spanKind");
    let operations: Vec<Value> = backend(&state)?
        .operations(service.to_string())
        .await?
        .into_iter()
        .map(|(name, k)| (name, model::operation_kind(k)))
        .filter(|(_, k)| kind.is_none_or(|want| want == *k))
        .map(|(name, k)| json!({"name": name, "spanKind": k}))
        .collect();
    Ok(envelope(&operations, operations.len(), Vec::new()))
}

/// `GET /api/traces/{trace_id}`
pub async fn trace(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(trace_id): Path<String>,
) -> Result<Response, JaegerError> {
    let id = parse_trace_id(&trace_id).map_err(|e| JaegerError::bad_request(e.to_string()))?;
    let backend = backend(&state)?;
    match read_trace(&state, &caller, &backend, id).await? {
        Some(resource_spans) => Ok(envelope(jaeger_traces(resource_spans), 0, Vec::new())),
        None => Err(JaegerError { status: StatusCode::NOT_FOUND, msg: "trace not found".into() }),
    }
}

/// `GET /api/traces?service=&operation=&tags=&start=&end=&minDuration=&maxDuration=&limit=`, or
/// `?traceID=...` (repeated) for given traces.
pub async fn search(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    raw: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, JaegerError> {
    let params = query_params(raw)?;
    let backend = backend(&state)?;
    let asked: Vec<&str> = params.all("traceID").filter(|t| !t.is_empty()).collect();
    let mut errors = Vec::new();
    let ids = if asked.is_empty() {
        let query = params::trace_query(&params, crate::shared::now_unix_nanos())?;
        let (masker, order_id_masked) = search_masker(&state, &caller, &query.tags);
        backend.find_traces(query, masker, order_id_masked).await?
    } else {
        if asked.len() > params::MAX_LIMIT {
            return Err(JaegerError::bad_request(format!("at most {} traceID parameters", params::MAX_LIMIT)));
        }
        asked
            .iter()
            .map(|t| parse_trace_id(t).map_err(|e| JaegerError::bad_request(format!("cannot parse traceID param: {e}"))))
            .collect::<Result<_, _>>()?
    };
    let mut traces = Vec::with_capacity(ids.len());
    for id in ids {
        match read_trace(&state, &caller, &backend, id.clone()).await? {
            Some(resource_spans) => traces.extend(jaeger_traces(resource_spans)),
            // Asked for by id and not stored (a search only finds stored traces).
            None => errors.push(json!({"msg": "trace not found", "traceID": model::trace_id_text(&id)})),
        }
    }
    Ok(envelope(traces, 0, errors))
}

/// `GET /api/dependencies?endTs=&lookback=&service=`: the service graph, bus hops included.
pub async fn dependencies(
    State(state): State<ApiState>,
    raw: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, JaegerError> {
    let params = query_params(raw)?;
    let (start, end) = params::graph_window(&params, crate::shared::now_unix_nanos())?;
    let service = params.get("service");
    let links: Vec<Value> = backend(&state)?
        .dependencies(start, end)
        .await?
        .into_iter()
        .filter(|l| service.is_none_or(|s| l.parent == s || l.child == s))
        .map(|l| json!({"parent": l.parent, "child": l.child, "callCount": l.call_count}))
        .collect();
    Ok(envelope(links, 0, Vec::new()))
}
