//! `SpanStore`: spans in SQLite, queryable by trace id, order id, service and time.
//!
//! Each span is kept as its protobuf encoding beside the columns queries filter on; resources and
//! scopes are stored once and referenced. Writes and reads use separate connections (WAL mode),
//! and callers run them on blocking threads. The order tables beside the spans (correlations,
//! order summaries) are kept up to date in the same write transaction; see `orders.rs`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValueKind;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use rusqlite::{params, Connection, OptionalExtension};

use super::orders;
use crate::pipeline::Payload;
use crate::telemetry::StoreHealth;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store at {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("cannot create the store directory {path}")]
    Directory {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("store query failed")]
    Sql(#[from] rusqlite::Error),
    #[error("stored span is corrupt")]
    Corrupt(#[from] prost::DecodeError),
    /// Found at start-up (`PRAGMA quick_check`, or SQLite reporting a malformed file): the store
    /// is not used, so that it fails once, clearly, instead of answering 500s later.
    #[error("the store {} is damaged ({detail}); tracegate does not open it. Move it aside (the file with its -wal and -shm files, e.g. `mv {} {}.damaged`) to start with an empty store, or restore it from a backup", path.display(), path.display(), path.display())]
    Damaged { path: PathBuf, detail: String },
    /// A write failed; `cause` is what the file system says when asked ("read-only file
    /// system", "no space left on device"), else SQLite's error.
    #[error("cannot write the store {}: {cause}", path.display())]
    Write { path: PathBuf, cause: String },
}

pub struct SpanStore {
    pub(super) writer: Mutex<Connection>,
    pub(super) reader: Mutex<Connection>,
    /// `spans.db`, named in every error.
    file: PathBuf,
    /// Where writes report whether they succeeded (`/readyz`), once the gateway asks.
    health: OnceLock<StoreHealth>,
    /// Span attributes whose value links a span to an order (first one present wins).
    correlation_keys: Vec<String>,
}

/// Spans are rows of a rowid table, appended as they come, with their ids in a unique index. (A
/// span's row holds its body, a few hundred bytes: keyed by its random trace id, as the
/// `WITHOUT ROWID` table of earlier versions was, every insert landed on another page of the
/// table, and storing a new span cost about 40% more CPU; see [`convert_span_table`].)
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS resources (id INTEGER PRIMARY KEY, body BLOB NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS scopes (id INTEGER PRIMARY KEY, body BLOB NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS spans (
    trace_id BLOB NOT NULL,
    span_id BLOB NOT NULL,
    resource_id INTEGER NOT NULL,
    scope_id INTEGER NOT NULL,
    service TEXT,
    name TEXT NOT NULL,
    start_ns INTEGER NOT NULL,
    end_ns INTEGER NOT NULL,
    order_id TEXT,
    order_stage TEXT,
    order_status TEXT,
    error INTEGER NOT NULL,
    body BLOB NOT NULL,
    correlation TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS spans_by_id ON spans(trace_id, span_id);
CREATE INDEX IF NOT EXISTS spans_by_order ON spans(order_id, start_ns) WHERE order_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS spans_by_service ON spans(service, start_ns);
CREATE INDEX IF NOT EXISTS spans_by_end ON spans(end_ns);
";

/// Pages the writer keeps in memory, in KiB (SQLite's default is 2 MiB). Writes land all over
/// the tables and their indexes (a span's order and service indexes, an order's monitor clocks):
/// with the default, most of them first read their page back from the operating system.
const WRITER_CACHE_KIB: i64 = 32 * 1024;

fn open(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(|source| StoreError::Open { path: path.into(), source })?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}

impl SpanStore {
    /// Opens (or creates) the store in `dir` (file `spans.db`). A span's first attribute among
    /// `correlation_keys` links it to the order that another span with the same value names
    /// (a constructor file saved before its order existed).
    pub fn open(dir: &Path, correlation_keys: &[String]) -> Result<SpanStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Directory { path: dir.into(), source })?;
        let file = dir.join("spans.db");
        let opened = (|| {
            let mut writer = open(&file)?;
            writer.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)?;
            check_integrity(&writer, &file)?;
            convert_span_table(&mut writer, &file)?;
            writer.execute_batch(SCHEMA)?;
            orders::migrate(&mut writer)?;
            super::monitors::migrate(&writer)?;
            super::search::migrate(&mut writer)?;
            // A write at start, so that a store that cannot be written refuses to start rather
            // than acknowledging spans it will never keep.
            writer.execute_batch(PROBE).map_err(StoreError::from)?;
            let reader = open(&file)?;
            Ok::<_, StoreError>((writer, reader))
        })();
        let (writer, reader) = opened.map_err(|e| classify(e, &file))?;
        Ok(SpanStore {
            writer: Mutex::new(writer),
            reader: Mutex::new(reader),
            file,
            health: OnceLock::new(),
            correlation_keys: correlation_keys.to_vec(),
        })
    }

    /// The store's file (`<dir>/spans.db`).
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Reports every write's outcome to `health` from now on (the first call wins).
    pub fn report_to(&self, health: StoreHealth) {
        let _ = self.health.set(health);
    }

    /// A write's result, reported; a failure names the file and the cause.
    pub(super) fn wrote<T>(&self, result: Result<T, StoreError>, wrote_something: bool) -> Result<T, StoreError> {
        match result {
            Ok(v) => {
                if let (Some(health), true) = (self.health.get(), wrote_something) {
                    health.written();
                }
                Ok(v)
            }
            Err(e) => {
                let e = write_error(e, &self.file);
                if let (Some(health), StoreError::Write { cause, .. }) = (self.health.get(), &e) {
                    health.write_failed(cause);
                }
                Err(e)
            }
        }
    }

    /// The first correlation value a span carries.
    fn correlation(&self, span: &Span) -> Option<String> {
        crate::shared::first_value(&span.attributes, &self.correlation_keys)
    }

    /// Stores every span of the payloads; storing a span again replaces it (idempotent).
    pub fn insert(&self, payloads: &[&Payload]) -> Result<usize, StoreError> {
        let result = self.insert_spans(payloads);
        self.wrote(result, true)
    }

    fn insert_spans(&self, payloads: &[&Payload]) -> Result<usize, StoreError> {
        let mut conn = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let tx = conn.transaction()?;
        let mut count = 0;
        {
            let mut put_resource = tx.prepare_cached(
                "INSERT INTO resources(body) VALUES (?1) ON CONFLICT(body) DO UPDATE SET body = excluded.body RETURNING id",
            )?;
            let mut put_scope = tx
                .prepare_cached("INSERT INTO scopes(body) VALUES (?1) ON CONFLICT(body) DO UPDATE SET body = excluded.body RETURNING id")?;
            let mut put_span = tx.prepare_cached(
                "INSERT OR REPLACE INTO spans(trace_id, span_id, resource_id, scope_id, service, name, start_ns, end_ns, order_id, order_stage, order_status, error, body, correlation)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
            )?;
            // The service's operations, for Jaeger's query API (`search.rs`); each pair once a batch.
            let mut put_operation = tx.prepare_cached("INSERT OR IGNORE INTO operations(service, name, kind) VALUES (?1, ?2, ?3)")?;
            let mut operations: std::collections::HashSet<(String, String, i32)> = std::collections::HashSet::new();
            let mut resource_ids: HashMap<Vec<u8>, i64> = HashMap::new();
            let mut scope_ids: HashMap<Vec<u8>, i64> = HashMap::new();
            let mut folds = orders::OrderFolds::default();
            for payload in payloads {
                for rs in payload.resource_spans().iter() {
                    let key = ResourceSpans { resource: rs.resource.clone(), scope_spans: vec![], schema_url: rs.schema_url.clone() }
                        .encode_to_vec();
                    let resource_id = match resource_ids.get(&key) {
                        Some(id) => *id,
                        None => {
                            let id: i64 = put_resource.query_row([&key], |r| r.get(0))?;
                            resource_ids.insert(key, id);
                            id
                        }
                    };
                    let resource_attrs = rs.resource.as_ref().map(|r| r.attributes.as_slice()).unwrap_or(&[]);
                    let service = string_attr(resource_attrs, "service.name");
                    let jaeger_service = super::search::jaeger_service_name(resource_attrs);
                    for ss in &rs.scope_spans {
                        let key = ScopeSpans { scope: ss.scope.clone(), spans: vec![], schema_url: ss.schema_url.clone() }.encode_to_vec();
                        let scope_id = match scope_ids.get(&key) {
                            Some(id) => *id,
                            None => {
                                let id: i64 = put_scope.query_row([&key], |r| r.get(0))?;
                                scope_ids.insert(key, id);
                                id
                            }
                        };
                        for span in &ss.spans {
                            let error = span.status.as_ref().is_some_and(|s| s.code == StatusCode::Error as i32);
                            let order_id = string_attr(&span.attributes, "order.id");
                            let status = string_attr(&span.attributes, "order.status");
                            let stage = string_attr(&span.attributes, "order.stage");
                            let correlation = self.correlation(span);
                            let (start_ns, end_ns) = (clamp_ns(span.start_time_unix_nano), clamp_ns(span.end_time_unix_nano));
                            put_span.execute(params![
                                span.trace_id,
                                span.span_id,
                                resource_id,
                                scope_id,
                                service,
                                span.name,
                                start_ns,
                                end_ns,
                                order_id,
                                stage,
                                status,
                                error,
                                span.encode_to_vec(),
                                correlation,
                            ])?;
                            let facts = orders::SpanFacts {
                                span_id: &span.span_id,
                                start_ns,
                                end_ns,
                                order_id: order_id.as_deref(),
                                status: status.as_deref(),
                                correlation: correlation.as_deref(),
                                service: service.as_deref(),
                                stage: stage.as_deref(),
                                error,
                            };
                            orders::index_span(&tx, &facts, &mut folds)?;
                            operations.insert((jaeger_service.clone(), span.name.clone(), span.kind));
                            count += 1;
                        }
                    }
                }
            }
            for (service, name, kind) in &operations {
                put_operation.execute(params![service, name, kind])?;
            }
            folds.write(&tx)?;
        }
        tx.commit()?;
        Ok(count)
    }

    /// Every stored span of a trace, grouped by resource and scope, oldest first; `None` if the
    /// trace is unknown.
    pub fn trace(&self, trace_id: &[u8]) -> Result<Option<Vec<ResourceSpans>>, StoreError> {
        let conn = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        let mut stmt = conn.prepare_cached(
            "SELECT s.resource_id, s.scope_id, r.body, sc.body, s.body FROM spans s
             JOIN resources r ON r.id = s.resource_id JOIN scopes sc ON sc.id = s.scope_id
             WHERE s.trace_id = ?1 ORDER BY s.start_ns, s.span_id",
        )?;
        let mut rows = stmt.query([trace_id])?;
        let mut out: Vec<ResourceSpans> = Vec::new();
        let mut index: HashMap<(i64, i64), (usize, usize)> = HashMap::new();
        let mut resource_index: HashMap<i64, usize> = HashMap::new();
        while let Some(row) = rows.next()? {
            let (rid, sid): (i64, i64) = (row.get(0)?, row.get(1)?);
            let span = Span::decode(row.get::<_, Vec<u8>>(4)?.as_slice())?;
            let (ri, si) = match index.get(&(rid, sid)) {
                Some(pos) => *pos,
                None => {
                    let ri = match resource_index.get(&rid) {
                        Some(ri) => *ri,
                        None => {
                            out.push(ResourceSpans::decode(row.get::<_, Vec<u8>>(2)?.as_slice())?);
                            resource_index.insert(rid, out.len() - 1);
                            out.len() - 1
                        }
                    };
                    out[ri].scope_spans.push(ScopeSpans::decode(row.get::<_, Vec<u8>>(3)?.as_slice())?);
                    let pos = (ri, out[ri].scope_spans.len() - 1);
                    index.insert((rid, sid), pos);
                    pos
                }
            };
            out[ri].scope_spans[si].spans.push(span);
        }
        Ok(if out.is_empty() { None } else { Some(out) })
    }

    /// Deletes spans that ended before `cutoff_ns`; returns how many. Order summaries that lost
    /// spans are recomputed from what is left, and dropped with their last span.
    pub fn purge_before(&self, cutoff_ns: u64) -> Result<usize, StoreError> {
        let result = self.purge_spans(cutoff_ns);
        // A sweep that deleted nothing wrote nothing: it says nothing about the disk.
        let wrote = matches!(result, Ok(n) if n > 0);
        self.wrote(result, wrote)
    }

    fn purge_spans(&self, cutoff_ns: u64) -> Result<usize, StoreError> {
        let mut conn = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let tx = conn.transaction()?;
        let deleted = tx.execute("DELETE FROM spans WHERE end_ns < ?1", [clamp_ns(cutoff_ns)])?;
        if deleted > 0 {
            tx.execute("DELETE FROM resources WHERE id NOT IN (SELECT DISTINCT resource_id FROM spans)", [])?;
            tx.execute("DELETE FROM scopes WHERE id NOT IN (SELECT DISTINCT scope_id FROM spans)", [])?;
            orders::after_purge(&tx, clamp_ns(cutoff_ns))?;
            super::search::after_purge(&tx)?;
        }
        tx.commit()?;
        Ok(deleted)
    }

    pub fn span_count(&self) -> Result<u64, StoreError> {
        let conn = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        Ok(conn.query_row("SELECT COUNT(*) FROM spans", [], |r| r.get::<_, i64>(0)).optional()?.unwrap_or(0) as u64)
    }
}

/// Rewrites a span table of the layout earlier versions wrote (`WITHOUT ROWID`, keyed by trace
/// and span id) as a rowid table: once, in one transaction, at start. Its indexes are made
/// again by [`SCHEMA`] (and the correlation index by the order schema's migration, or here when
/// the table has that column).
fn convert_span_table(conn: &mut Connection, file: &Path) -> Result<(), StoreError> {
    let sql: Option<String> =
        conn.query_row("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'spans'", [], |r| r.get(0)).optional()?;
    if !sql.is_some_and(|sql| sql.to_ascii_uppercase().contains("WITHOUT ROWID")) {
        return Ok(());
    }
    // Before the work, so that a slow start (a large store) says why.
    tracing::info!(file = %file.display(), "converting the embedded store's span table to the rowid layout (once; a large store takes a while, and room for a second copy of the table)");
    let started = std::time::Instant::now();
    let tx = conn.transaction()?;
    let has_correlation = tx.prepare("SELECT 1 FROM pragma_table_info('spans') WHERE name = 'correlation'")?.exists([])?;
    tx.execute_batch(
        "DROP INDEX IF EXISTS spans_by_order; DROP INDEX IF EXISTS spans_by_service; DROP INDEX IF EXISTS spans_by_end;
         DROP INDEX IF EXISTS spans_by_correlation; ALTER TABLE spans RENAME TO spans_without_rowid;",
    )?;
    tx.execute_batch(SCHEMA)?;
    const COLUMNS: &str =
        "trace_id, span_id, resource_id, scope_id, service, name, start_ns, end_ns, order_id, order_stage, order_status, error, body";
    let correlation = if has_correlation { "correlation" } else { "NULL" };
    let copied =
        tx.execute(&format!("INSERT INTO spans({COLUMNS}, correlation) SELECT {COLUMNS}, {correlation} FROM spans_without_rowid"), [])?;
    tx.execute_batch("DROP TABLE spans_without_rowid")?;
    if has_correlation {
        tx.execute_batch(orders::CORRELATION_INDEX)?;
    }
    tx.commit()?;
    tracing::info!(file = %file.display(), spans = copied, seconds = started.elapsed().as_secs_f64(), "the embedded store's span table was converted to the rowid layout (once)");
    Ok(())
}

/// The start-up write: a row of a small table, replaced at every start.
const PROBE: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT OR REPLACE INTO meta(key, value) VALUES ('opened_at', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
";

/// `PRAGMA quick_check`: every page and index entry is well formed (O(size of the file), no
/// cross-check of index contents). A store damaged mid-file otherwise opens and fails later.
fn check_integrity(conn: &Connection, file: &Path) -> Result<(), StoreError> {
    let mut stmt = conn.prepare("PRAGMA quick_check(5)")?;
    let found: Vec<String> = stmt.query_map([], |r| r.get::<_, String>(0))?.collect::<Result<_, _>>()?;
    if found.len() == 1 && found[0] == "ok" {
        return Ok(());
    }
    // Rows may hold several lines ("*** in database main ***\nTree 2 page 59: ..."): one line.
    let detail = found.join("\n").lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with("***")).collect::<Vec<_>>().join("; ");
    Err(StoreError::Damaged { path: file.into(), detail: format!("PRAGMA quick_check: {detail}") })
}

/// Errors found while opening: a malformed file becomes `Damaged`, a failed write `Write`.
fn classify(e: StoreError, file: &Path) -> StoreError {
    use rusqlite::ErrorCode::{DatabaseCorrupt, NotADatabase};
    match &e {
        StoreError::Sql(rusqlite::Error::SqliteFailure(f, _)) | StoreError::Open { source: rusqlite::Error::SqliteFailure(f, _), .. }
            if matches!(f.code, DatabaseCorrupt | NotADatabase) =>
        {
            StoreError::Damaged { path: file.into(), detail: crate::shared::error_chain(&e) }
        }
        StoreError::Sql(_) => write_error(e, file),
        // SQLite says "unable to open database file"; the file system may say why.
        StoreError::Open { .. } => match file.parent().and_then(os_refusal) {
            Some(cause) => StoreError::Write { path: file.into(), cause },
            None => e,
        },
        _ => e,
    }
}

/// A failed write, named: the file system's own words when it refuses a write in the store's
/// directory now (read-only, full), else SQLite's.
fn write_error(e: StoreError, file: &Path) -> StoreError {
    if matches!(e, StoreError::Write { .. } | StoreError::Damaged { .. }) {
        return e;
    }
    let cause = file.parent().and_then(os_refusal).unwrap_or_else(|| match &e {
        StoreError::Sql(sql) => sql.to_string(),
        other => crate::shared::error_chain(other),
    });
    StoreError::Write { path: file.into(), cause }
}

/// Writes (and syncs) a small file beside the store; the error, lower-cased as in a sentence
/// ("read-only file system (os error 30)"), if the file system refuses.
fn os_refusal(dir: &Path) -> Option<String> {
    use std::io::Write;
    let probe = dir.join(".spans.db.write-probe");
    let result = std::fs::File::create(&probe).and_then(|mut f| {
        f.write_all(&[0u8; 8192])?;
        f.sync_all()
    });
    let _ = std::fs::remove_file(&probe);
    let error = result.err()?.to_string();
    let mut chars = error.chars();
    Some(chars.next().map(|c| c.to_lowercase().chain(chars).collect()).unwrap_or_default())
}

pub(super) fn clamp_ns(ns: u64) -> i64 {
    i64::try_from(ns).unwrap_or(i64::MAX)
}

/// The string value of an attribute, if present and a string.
/// Sorts every attribute list (resource, scope, span, event, link, nested key-value lists) by key,
/// stably: the canonical order in which the read API answers.
pub fn sort_attributes(resource_spans: &mut [ResourceSpans]) {
    use opentelemetry_proto::tonic::common::v1::AnyValue;
    fn sort(attrs: &mut [KeyValue]) {
        attrs.sort_by(|a, b| a.key.cmp(&b.key));
        for kv in attrs {
            if let Some(v) = &mut kv.value {
                value(v);
            }
        }
    }
    fn value(v: &mut AnyValue) {
        match &mut v.value {
            Some(AnyValueKind::KvlistValue(list)) => sort(&mut list.values),
            Some(AnyValueKind::ArrayValue(array)) => array.values.iter_mut().for_each(value),
            _ => {}
        }
    }
    for rs in resource_spans {
        if let Some(r) = &mut rs.resource {
            sort(&mut r.attributes);
        }
        for ss in &mut rs.scope_spans {
            if let Some(scope) = &mut ss.scope {
                sort(&mut scope.attributes);
            }
            for span in &mut ss.spans {
                sort(&mut span.attributes);
                span.events.iter_mut().for_each(|e| sort(&mut e.attributes));
                span.links.iter_mut().for_each(|l| sort(&mut l.attributes));
            }
        }
    }
}

use crate::shared::attr_string as string_attr;

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::AnyValue;
    use opentelemetry_proto::tonic::resource::v1::Resource;

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue { key: k.into(), value: Some(AnyValue { value: Some(AnyValueKind::StringValue(v.into())) }), ..Default::default() }
    }

    fn payload(service: &str, trace: u8, spans: &[(u8, u64)]) -> Payload {
        Payload::new(vec![ResourceSpans {
            resource: Some(Resource { attributes: vec![kv("service.name", service)], ..Default::default() }),
            scope_spans: vec![ScopeSpans {
                spans: spans
                    .iter()
                    .map(|(id, t)| Span {
                        trace_id: vec![trace; 16],
                        span_id: vec![*id; 8],
                        name: format!("s{id}"),
                        start_time_unix_nano: *t,
                        end_time_unix_nano: t + 10,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }])
    }

    #[test]
    fn stores_reads_back_and_purges() {
        let dir = tempfile::tempdir().unwrap();
        let store = SpanStore::open(dir.path(), &[]).unwrap();
        let a = payload("shop-api", 1, &[(2, 200), (1, 100)]);
        let b = payload("crm-api", 1, &[(3, 300)]);
        assert_eq!(store.insert(&[&a, &b]).unwrap(), 3);
        assert_eq!(store.insert(&[&a]).unwrap(), 2, "re-delivery replaces");
        assert_eq!(store.span_count().unwrap(), 3);
        let trace = store.trace(&[1; 16]).unwrap().unwrap();
        assert_eq!(trace.len(), 2);
        let names: Vec<_> = trace.iter().flat_map(|r| &r.scope_spans).flat_map(|s| &s.spans).map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["s1", "s2", "s3"]);
        assert!(store.trace(&[9; 16]).unwrap().is_none());
        assert_eq!(store.purge_before(250).unwrap(), 2);
        assert_eq!(store.span_count().unwrap(), 1);
    }
}
