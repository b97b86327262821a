//! What the exporter sets up in Elasticsearch before its first bulk request: an index template
//! with the span mapping (for the data stream or the daily indices), a lifecycle policy for the
//! retention of a data stream, and the orders index. Credentials that may only write documents
//! are fine: a 401 / 403 here is logged and the step skipped.

use bytes::Bytes;
use elasticsearch::http::Method;
use serde_json::{json, Value};

use super::config::{ElasticsearchExporterConfig, TargetMode};
use super::error::EsError;
use super::service::EsClient;

/// The mapping of a span document: the fields support queries filter on are keywords, times
/// keep their nanoseconds, other string attributes are keywords too. With `flat_attributes`,
/// attribute maps keep dotted keys as they are (`subobjects: false`, Elasticsearch 8.3+), so
/// `http` and `http.method` on one span do not collide; OpenSearch does not know it.
pub fn span_mappings(flat_attributes: bool) -> Value {
    let keyword = json!({"type": "keyword"});
    let mut mappings = json!({
        "dynamic_templates": [{"strings_as_keyword": {"match_mapping_type": "string", "mapping": {"type": "keyword", "ignore_above": 1024}}}],
        "properties": {
            "@timestamp": {"type": "date_nanos"},
            "trace_id": keyword, "span_id": keyword, "parent_span_id": keyword,
            "name": keyword, "kind": keyword, "duration": {"type": "long"},
            "service": {"properties": {"name": keyword}},
            "order": {"properties": {"id": keyword, "stage": keyword, "status": keyword, "correlation": keyword}},
            "status": {"properties": {"code": keyword, "message": keyword}},
            "otlp": {"type": "object", "enabled": false},
        }
    });
    if flat_attributes {
        let flat = json!({"type": "object", "subobjects": false});
        mappings["properties"]["attributes"] = flat.clone();
        mappings["properties"]["resource"] = json!({"properties": {"attributes": flat.clone()}});
        mappings["properties"]["scope"] = json!({"properties": {"attributes": flat}});
    }
    mappings
}

pub fn orders_mappings() -> Value {
    let keyword = json!({"type": "keyword"});
    json!({
        "dynamic": false,
        "properties": {
            "order_id": keyword, "status": keyword, "services": keyword, "trace_ids": keyword, "correlations": keyword,
            "first_seen": {"type": "date_nanos"}, "last_seen": {"type": "date_nanos"},
            "first_seen_ns": {"type": "long"}, "last_seen_ns": {"type": "long"},
        }
    })
}

/// Installs what is configured; `Err` only when Elasticsearch could not be reached (the export
/// is then retried, and set-up with it).
pub async fn install(client: &EsClient, config: &ElasticsearchExporterConfig, exporter: &str) -> Result<(), EsError> {
    if !config.orders.index.is_empty() {
        let body = json!({"mappings": orders_mappings()});
        let reply = put(client, &format!("/{}", config.orders.index), &body).await?;
        match reply {
            200..=299 => tracing::info!(exporter, index = %config.orders.index, "orders index created"),
            400 => {} // resource_already_exists_exception
            401 | 403 => {
                tracing::warn!(exporter, index = %config.orders.index, status = reply, "may not create the orders index; assuming it exists")
            }
            status => tracing::warn!(exporter, index = %config.orders.index, status, "creating the orders index failed"),
        }
    }
    if !config.templates.install {
        return Ok(());
    }
    let target = &config.mapping;
    let mut settings = json!({});
    if target.mode == TargetMode::DataStream && !config.templates.retention.is_zero() {
        let policy = format!("tracegate-{}", target.data_stream());
        let days = config.templates.retention.as_secs().div_ceil(86_400).max(1);
        let body = json!({"policy": {"phases": {
            "hot": {"actions": {"rollover": {"max_primary_shard_size": "50gb", "max_age": "1d"}}},
            "delete": {"min_age": format!("{days}d"), "actions": {"delete": {}}}
        }}});
        match put(client, &format!("/_ilm/policy/{policy}"), &body).await? {
            200..=299 => settings = json!({"index.lifecycle.name": policy}),
            status @ (401 | 403) => tracing::warn!(
                exporter,
                status,
                "skipping the lifecycle policy: these credentials may not manage ILM (retention is up to the cluster)"
            ),
            status => tracing::warn!(exporter, status, "skipping the lifecycle policy: Elasticsearch did not accept it"),
        }
    }
    let (name, patterns) = match target.mode {
        TargetMode::DataStream => (format!("tracegate-{}", target.data_stream()), vec![target.data_stream()]),
        TargetMode::Index => (format!("tracegate-{}", target.index), vec![format!("{}-*", target.index)]),
    };
    let template = |flat: bool| {
        let mut body = json!({
            "index_patterns": patterns,
            "priority": 250,
            "template": {"settings": settings, "mappings": span_mappings(flat)},
            "_meta": {"managed_by": "tracegate"}
        });
        if target.mode == TargetMode::DataStream {
            body["data_stream"] = json!({});
        }
        body
    };
    let path = format!("/_index_template/{name}");
    let mut status = put(client, &path, &template(true)).await?;
    if status == 400 {
        // OpenSearch (and Elasticsearch before 8.3) refuse `subobjects`.
        status = put(client, &path, &template(false)).await?;
    }
    match status {
        200..=299 => tracing::info!(exporter, template = %name, "index template installed"),
        status @ (401 | 403) => {
            tracing::warn!(exporter, status, template = %name, "skipping the index template: these credentials may not manage templates")
        }
        status => {
            tracing::warn!(exporter, status, template = %name, "Elasticsearch did not accept the index template; documents get dynamic mappings")
        }
    }
    Ok(())
}

async fn put(client: &EsClient, path: &str, body: &Value) -> Result<u16, EsError> {
    let reply = client.request(Method::Put, path, Some(Bytes::from(body.to_string())), "application/json").await?;
    Ok(reply.status)
}
