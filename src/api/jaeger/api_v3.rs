//! Jaeger's api_v3 over HTTP (`/api/v3/traces/{id}`, `/api/v3/traces?query.*`,
//! `/api/v3/services`, `/api/v3/operations`): traces as OTLP JSON in `{"result": ...}`, errors
//! as `{"error": {"httpCode", "message"}}`.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use serde_json::{json, Value};

use super::api_v2::{self, JaegerError};
use super::model::{self, parse_trace_id};
use super::params::{self, Params};
use crate::api::{ApiState, Caller};
use crate::query::TraceQuery;
use crate::shared::parse_rfc3339;

/// An api_v3 error.
pub struct V3Error(JaegerError);

impl From<JaegerError> for V3Error {
    fn from(e: JaegerError) -> V3Error {
        V3Error(e)
    }
}

impl From<crate::query::QueryError> for V3Error {
    fn from(e: crate::query::QueryError) -> V3Error {
        V3Error(e.into())
    }
}

impl IntoResponse for V3Error {
    fn into_response(self) -> Response {
        let JaegerError { status, msg } = self.0;
        (status, Json(json!({"error": {"httpCode": status.as_u16(), "message": msg}}))).into_response()
    }
}

fn malformed(param: &str, error: impl std::fmt::Display) -> V3Error {
    V3Error(JaegerError::bad_request(format!("malformed parameter {param}: {error}")))
}

/// What Jaeger changes in OTLP traces when it stores and reads them: a resource without a usable
/// `service.name` gets Jaeger's name for it, `telemetry.sdk.*` / `telemetry.distro.*`
/// move from spans to their resource (kept on the span when the resource says otherwise), and
/// events are ordered by name.
pub(super) fn adjust(resource_spans: &mut [ResourceSpans]) {
    for rs in resource_spans {
        let resource = rs.resource.get_or_insert_with(Default::default);
        // Jaeger names a resource without a usable `service.name` when it stores it.
        let service = crate::query::service_of(resource);
        let named = resource.attributes.iter().any(|kv| {
            kv.key == "service.name"
                && crate::shared::attr_text(std::slice::from_ref(kv), "service.name").as_deref() == Some(service.as_str())
        });
        if !named {
            resource.attributes.retain(|kv| kv.key != "service.name");
            resource.attributes.push(opentelemetry_proto::tonic::common::v1::KeyValue {
                key: "service.name".into(),
                value: Some(opentelemetry_proto::tonic::common::v1::AnyValue {
                    value: Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(service)),
                }),
                ..Default::default()
            });
        }
        for ss in &mut rs.scope_spans {
            for span in &mut ss.spans {
                span.attributes.retain(|kv| {
                    if !model::LIBRARY_KEYS.contains(&kv.key.as_str()) {
                        return true;
                    }
                    match resource.attributes.iter().find(|r| r.key == kv.key) {
                        Some(existing) => existing.value != kv.value,
                        None => {
                            resource.attributes.push(kv.clone());
                            false
                        }
                    }
                });
                span.events.sort_by(|a, b| a.name.cmp(&b.name));
            }
        }
        resource.attributes.sort_by(|a, b| a.key.cmp(&b.key));
    }
}

fn result(mut resource_spans: Vec<ResourceSpans>) -> Response {
    adjust(&mut resource_spans);
    let mut value = json!({"result": ExportTraceServiceRequest { resource_spans }});
    proto3_json(&mut value);
    Json(value).into_response()
}

/// Fields that proto3 JSON (and so Jaeger's api_v3) leaves out when they hold their default.
const OMITTED_WHEN_DEFAULT: [&str; 19] = [
    "droppedAttributesCount",
    "droppedEventsCount",
    "droppedLinksCount",
    "traceState",
    "parentSpanId",
    "links",
    "events",
    "attributes",
    "schemaUrl",
    "kind",
    "flags",
    "name",
    "version",
    "code",
    "message",
    "entityRefs",
    "scopeSpans",
    "spans",
    "resourceSpans",
];

/// Writes OTLP JSON as Jaeger's api_v3 does: default-valued fields left out, an absent status,
/// resource or scope as `{}`. Attribute values (`value`) are kept exactly.
fn proto3_json(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, field) in map.iter_mut() {
                if matches!(key.as_str(), "status" | "resource" | "scope") && field.is_null() {
                    *field = json!({});
                }
                if key != "value" {
                    proto3_json(field);
                }
            }
            map.retain(|key, field| {
                let default = match field {
                    Value::Null => true,
                    Value::Number(n) => n.as_f64() == Some(0.0),
                    Value::String(s) => s.is_empty(),
                    Value::Array(a) => a.is_empty(),
                    _ => false,
                };
                !(default && OMITTED_WHEN_DEFAULT.contains(&key.as_str()))
            });
        }
        Value::Array(items) => items.iter_mut().for_each(proto3_json),
        _ => {}
    }
}

fn no_traces() -> V3Error {
    V3Error(JaegerError { status: StatusCode::NOT_FOUND, msg: "No traces found".into() })
}

/// `GET /api/v3/traces/{trace_id}`
pub async fn trace(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(trace_id): Path<String>,
) -> Result<Response, V3Error> {
    let id = parse_trace_id(&trace_id).map_err(|e| malformed("trace_id", e))?;
    let backend = api_v2::backend(&state)?;
    match api_v2::read_trace(&state, &caller, &backend, id).await? {
        Some(resource_spans) => Ok(result(resource_spans)),
        None => Err(no_traces()),
    }
}

/// `query.service_name`, `query.operation_name`, `query.start_time_min` / `_max` (RFC 3339,
/// required), `query.duration_min` / `_max` (Go durations), `query.num_traces`, and (beyond
/// Jaeger's HTTP gateway, which cannot carry them) `query.attributes` as a JSON object.
fn find_query(params: &Params) -> Result<TraceQuery, V3Error> {
    let (Some(min), Some(max)) = (params.get("query.start_time_min"), params.get("query.start_time_max")) else {
        return Err(V3Error(JaegerError::bad_request("query.start_time_min and query.start_time_max are required")));
    };
    let time = |name: &str, text: &str| parse_rfc3339(text).map_err(|e| malformed(name, e));
    let duration = |name: &str| params.get(name).map(|d| params::parse_go_duration(d).map_err(|e| malformed(name, e))).transpose();
    Ok(TraceQuery {
        service: params.get("query.service_name").map(String::from),
        operation: params.get("query.operation_name").map(String::from),
        tags: params::tags(params, "query.attribute", "query.attributes").map_err(|e| V3Error(e.into()))?,
        start_min_ns: time("query.start_time_min", min)?,
        start_max_ns: time("query.start_time_max", max)?,
        duration_min_ns: duration("query.duration_min")?,
        duration_max_ns: duration("query.duration_max")?,
        limit: params::limit(params.get("query.num_traces"), "query.num_traces").map_err(|e| V3Error(e.into()))?,
    })
}

/// `GET /api/v3/traces?query.*`: every matching trace, in one OTLP document.
pub async fn find_traces(
    State(state): State<ApiState>,
    Extension(caller): Extension<Caller>,
    raw: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, V3Error> {
    let params = api_v2::query_params(raw)?;
    let query = find_query(&params)?;
    let backend = api_v2::backend(&state)?;
    let (masker, order_id_masked) = api_v2::search_masker(&state, &caller, &query.tags);
    let mut combined = Vec::new();
    for id in backend.find_traces(query, masker, order_id_masked).await? {
        if let Some(resource_spans) = api_v2::read_trace(&state, &caller, &backend, id).await? {
            combined.extend(resource_spans);
        }
    }
    if combined.is_empty() {
        return Err(no_traces());
    }
    Ok(result(combined))
}

/// `GET /api/v3/services`
pub async fn services(State(state): State<ApiState>) -> Result<Response, V3Error> {
    let services = api_v2::backend(&state)?.services().await?;
    Ok(Json(json!({"services": services})).into_response())
}

/// `GET /api/v3/operations?service=&span_kind=`
pub async fn operations(
    State(state): State<ApiState>,
    raw: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, V3Error> {
    let params = api_v2::query_params(raw)?;
    let Some(service) = params.get("service") else {
        return Ok(Json(json!({"operations": []})).into_response());
    };
    let kind = params.get("span_kind");
    let operations: Vec<Value> = api_v2::backend(&state)?
        .operations(service.to_string())
        .await?
        .into_iter()
        .map(|(name, k)| (name, model::operation_kind(k)))
        .filter(|(_, k)| kind.is_none_or(|want| want == *k))
        // Proto3 JSON leaves an empty kind out.
        .map(|(name, k)| if k.is_empty() { json!({"name": name}) } else { json!({"name": name, "spanKind": k}) })
        .collect();
    Ok(Json(json!({"operations": operations})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_left_out_and_values_kept() {
        let mut v = json!({"result": {"resourceSpans": [{"resource": null, "schemaUrl": "", "scopeSpans": [{"scope": null, "spans": [{
            "traceId": "01", "spanId": "02", "parentSpanId": "", "traceState": "", "kind": 0, "flags": 1, "name": "n",
            "droppedAttributesCount": 0, "links": [], "events": [{"timeUnixNano": "5", "name": "", "attributes": []}],
            "status": null,
            "attributes": [{"key": "zero", "value": {"intValue": "0"}}, {"key": "empty", "value": {"stringValue": ""}}]
        }]}]}]}});
        proto3_json(&mut v);
        assert_eq!(
            v,
            json!({"result": {"resourceSpans": [{"resource": {}, "scopeSpans": [{"scope": {}, "spans": [{
                "traceId": "01", "spanId": "02", "flags": 1, "name": "n",
                "events": [{"timeUnixNano": "5"}],
                "status": {},
                "attributes": [{"key": "zero", "value": {"intValue": "0"}}, {"key": "empty", "value": {"stringValue": ""}}]
            }]}]}]}})
        );
    }
}
