//! Searching the store the way Jaeger's query API asks: the services and operations seen, and
//! spans by service, operation, time, duration and order, newest first.
//!
//! The `operations` table holds one row per (service, span name, span kind) ever written and
//! still present; it is filled in the span write transaction (`spans.rs`) and trimmed by
//! retention, so listing services and operations never scans spans.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValueKind;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use rusqlite::types::Value as SqlValue;
use rusqlite::{params_from_iter, Connection, Transaction};

use super::spans::clamp_ns;
use super::{SpanStore, StoreError};

const OPERATIONS_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS operations (
    service TEXT NOT NULL,
    name TEXT NOT NULL,
    kind INTEGER NOT NULL,
    PRIMARY KEY (service, name, kind)
) WITHOUT ROWID;
";

/// The service a resource's spans are listed under, as Jaeger names it: `service.name`, or
/// `missing-service-name` / `empty-service-name` / `service-name-wrong-type`.
pub fn jaeger_service_name(resource_attributes: &[KeyValue]) -> String {
    match resource_attributes.iter().find(|kv| kv.key == "service.name").and_then(|kv| kv.value.as_ref()?.value.as_ref()) {
        Some(AnyValueKind::StringValue(s)) if s.is_empty() => "empty-service-name".into(),
        Some(AnyValueKind::StringValue(s)) => s.clone(),
        Some(_) => "service-name-wrong-type".into(),
        None => "missing-service-name".into(),
    }
}

/// The `service` column of spans listed under a Jaeger service name (`None`: the column is NULL).
fn service_column(jaeger_name: &str) -> Option<&str> {
    match jaeger_name {
        "missing-service-name" => None,
        "empty-service-name" => Some(""),
        name => Some(name),
    }
}

/// Creates the operations table; a store written before it existed gets it filled from its
/// spans once (each span's kind is read from its protobuf).
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let exists = conn.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'operations'")?.exists([])?;
    if exists {
        return Ok(());
    }
    let tx = conn.transaction()?;
    tx.execute_batch(OPERATIONS_SCHEMA)?;
    {
        let mut read = tx.prepare("SELECT r.body, s.name, s.body FROM spans s JOIN resources r ON r.id = s.resource_id")?;
        let mut put = tx.prepare("INSERT OR IGNORE INTO operations(service, name, kind) VALUES (?1, ?2, ?3)")?;
        let mut rows = read.query([])?;
        while let Some(row) = rows.next()? {
            let resource = ResourceSpans::decode(row.get::<_, Vec<u8>>(0)?.as_slice())?.resource.unwrap_or_default();
            let span = Span::decode(row.get::<_, Vec<u8>>(2)?.as_slice())?;
            put.execute(rusqlite::params![jaeger_service_name(&resource.attributes), row.get::<_, String>(1)?, span.kind])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// After a retention sweep: operations whose last span is gone go too.
pub(super) fn after_purge(tx: &Transaction) -> Result<(), StoreError> {
    // Spans without a service name are listed under `missing-service-name`.
    tx.execute(
        "DELETE FROM operations WHERE NOT EXISTS
           (SELECT 1 FROM spans s WHERE s.name = operations.name
              AND (s.service = operations.service OR (s.service IS NULL AND operations.service = 'missing-service-name')
                   OR (s.service = '' AND operations.service = 'empty-service-name')))",
        [],
    )?;
    Ok(())
}

/// Which spans a search reads. Times are Unix nanoseconds; a span matches when its start lies
/// in `[start_min_ns, start_max_ns]`.
#[derive(Debug, Clone, Default)]
pub struct SpanFilter {
    pub service: Option<String>,
    pub operation: Option<String>,
    /// The span's own `order.id` attribute.
    pub order_id: Option<String>,
    pub start_min_ns: u64,
    pub start_max_ns: u64,
    pub duration_min_ns: Option<u64>,
    pub duration_max_ns: Option<u64>,
}

/// A span found by a search, with its resource and scope (shared by the spans that have them).
pub struct FoundSpan {
    pub resource: Arc<Resource>,
    pub scope: Arc<InstrumentationScope>,
    pub span: Span,
}

impl SpanStore {
    /// Every service that has spans in the store, in name order.
    pub fn services(&self) -> Result<Vec<String>, StoreError> {
        let conn = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        let mut stmt = conn.prepare_cached("SELECT DISTINCT service FROM operations ORDER BY service")?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The (span name, OTLP span kind) pairs of a service, in name then kind order.
    pub fn operations(&self, service: &str) -> Result<Vec<(String, i32)>, StoreError> {
        let conn = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        let mut stmt = conn.prepare_cached("SELECT name, kind FROM operations WHERE service = ?1 ORDER BY name, kind")?;
        let rows = stmt.query_map([service], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i32>(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Visits the spans that `filter` selects, newest start first, at most `max_spans` of them;
    /// `visit` stops the walk with `ControlFlow::Break`. Returns how many spans were visited.
    pub fn scan_spans(
        &self,
        filter: &SpanFilter,
        max_spans: usize,
        mut visit: impl FnMut(FoundSpan) -> ControlFlow<()>,
    ) -> Result<usize, StoreError> {
        let conn = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        let mut sql = String::from("SELECT resource_id, scope_id, body FROM spans WHERE start_ns >= ?1 AND start_ns <= ?2");
        let mut params: Vec<SqlValue> =
            vec![SqlValue::Integer(clamp_ns(filter.start_min_ns)), SqlValue::Integer(clamp_ns(filter.start_max_ns))];
        if filter.service.as_deref().map(service_column) == Some(None) {
            sql.push_str(" AND service IS NULL");
        }
        let mut add = |clause: &str, value: SqlValue| {
            params.push(value);
            sql.push_str(&format!(" AND {clause} ?{}", params.len()));
        };
        if let Some(Some(column)) = filter.service.as_deref().map(service_column) {
            add("service =", SqlValue::Text(column.to_string()));
        }
        if let Some(operation) = &filter.operation {
            add("name =", SqlValue::Text(operation.clone()));
        }
        if let Some(order_id) = &filter.order_id {
            add("order_id =", SqlValue::Text(order_id.clone()));
        }
        if let Some(min) = filter.duration_min_ns {
            add("end_ns - start_ns >=", SqlValue::Integer(clamp_ns(min)));
        }
        if let Some(max) = filter.duration_max_ns {
            add("end_ns - start_ns <=", SqlValue::Integer(clamp_ns(max)));
        }
        params.push(SqlValue::Integer(i64::try_from(max_spans).unwrap_or(i64::MAX)));
        sql.push_str(&format!(" ORDER BY start_ns DESC, trace_id, span_id LIMIT ?{}", params.len()));

        let mut stmt = conn.prepare(&sql)?;
        let mut rows = stmt.query(params_from_iter(params))?;
        let mut resources: HashMap<i64, Arc<Resource>> = HashMap::new();
        let mut scopes: HashMap<i64, Arc<InstrumentationScope>> = HashMap::new();
        let mut visited = 0;
        while let Some(row) = rows.next()? {
            let (rid, sid): (i64, i64) = (row.get(0)?, row.get(1)?);
            let resource = match resources.get(&rid) {
                Some(r) => r.clone(),
                None => {
                    let body: Vec<u8> = conn.query_row("SELECT body FROM resources WHERE id = ?1", [rid], |r| r.get(0))?;
                    let r = Arc::new(ResourceSpans::decode(body.as_slice())?.resource.unwrap_or_default());
                    resources.insert(rid, r.clone());
                    r
                }
            };
            let scope = match scopes.get(&sid) {
                Some(s) => s.clone(),
                None => {
                    let body: Vec<u8> = conn.query_row("SELECT body FROM scopes WHERE id = ?1", [sid], |r| r.get(0))?;
                    let s = Arc::new(ScopeSpans::decode(body.as_slice())?.scope.unwrap_or_default());
                    scopes.insert(sid, s.clone());
                    s
                }
            };
            let span = Span::decode(row.get::<_, Vec<u8>>(2)?.as_slice())?;
            visited += 1;
            if visit(FoundSpan { resource, scope, span }).is_break() {
                break;
            }
        }
        Ok(visited)
    }
}
