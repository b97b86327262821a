//! Orders in the embedded store: the correlation table, the per-order summary kept up to date on
//! every insert, and the order timeline assembled from spans when it is read.
//!
//! An order's spans are those whose `order.id` names it, plus spans without an order id whose
//! correlation value (e.g. `constructor.file_id`) is bound to it. A binding is made when a span
//! carries both an order id and a correlation value, so a constructor file saved *before* its
//! order existed joins the order as soon as any span links the two; the join happens when the
//! timeline is read, nothing is rewritten.
//!
//! The `orders` table (first and last time, current status, the last step's service and stage) lets the order list filter and sort
//! without scanning every span; it is folded forward on insert and recomputed from the spans
//! after a retention sweep or when a correlation value moves to another order.

use std::collections::HashMap;

use super::spans::{SpanStore, StoreError};
use crate::orders::{OrderQuery, OrderSort, OrderSpan, OrderSummary, OrderTimeline};
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Transaction};

/// The index of spans by correlation value (made with [`ORDER_SCHEMA`]).
pub(super) const CORRELATION_INDEX: &str =
    "CREATE INDEX IF NOT EXISTS spans_by_correlation ON spans(correlation) WHERE correlation IS NOT NULL;";

/// Schema version 1: correlation values and order summaries; version 2 adds the last step
/// (`step_*`: the service and stage of the latest span that is a step, by start time and span id).
const ORDER_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS correlations (value TEXT PRIMARY KEY, order_id TEXT NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS correlations_by_order ON correlations(order_id);
CREATE TABLE IF NOT EXISTS orders (
    order_id TEXT PRIMARY KEY,
    first_ns INTEGER NOT NULL,
    last_ns INTEGER NOT NULL,
    status TEXT,
    status_ns INTEGER,
    status_span BLOB,
    step_service TEXT,
    step_stage TEXT,
    step_ns INTEGER,
    step_span BLOB
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS orders_by_last ON orders(last_ns);
CREATE INDEX IF NOT EXISTS orders_by_first ON orders(first_ns);
CREATE INDEX IF NOT EXISTS orders_by_status ON orders(status, last_ns);
";

/// Columns added to `orders` by schema version 2.
const STEP_COLUMNS: &str = "
ALTER TABLE orders ADD COLUMN step_service TEXT;
ALTER TABLE orders ADD COLUMN step_stage TEXT;
ALTER TABLE orders ADD COLUMN step_ns INTEGER;
ALTER TABLE orders ADD COLUMN step_span BLOB;
";

/// The current schema version of the order tables.
const VERSION: i64 = 2;

/// Every span of order `?1`: its own, then those linked through a bound correlation value.
pub(super) const ORDER_SPANS: &str = "
    SELECT trace_id, span_id, service, name, start_ns, end_ns, order_stage, order_status, error, 0 AS linked, body
      FROM spans WHERE order_id = ?1
    UNION ALL
    SELECT s.trace_id, s.span_id, s.service, s.name, s.start_ns, s.end_ns, s.order_stage, s.order_status, s.error, 1, s.body
      FROM correlations c JOIN spans s ON s.correlation = c.value
     WHERE c.order_id = ?1 AND s.order_id IS NULL";

/// The last step among the rows of [`ORDER_SPANS`]: the latest span (by start time, span id)
/// that is a step, with its stage as the timeline shows it (`OrderSpan::step_stage`).
const LAST_STEP: &str = "SELECT service,
       coalesce(order_stage, CASE WHEN linked THEN 'file_link' WHEN order_status IS NOT NULL THEN 'status_change' END),
       start_ns, span_id";
const LAST_STEP_WHERE: &str =
    "WHERE order_stage IS NOT NULL OR linked OR order_status IS NOT NULL OR error ORDER BY start_ns DESC, span_id DESC LIMIT 1";

/// Upserts an order summary. In an upsert's SET, bare column names are the stored row's values;
/// the latest status is the one with the greatest (start time, span id), as in the timeline, and
/// so is the last step.
const FOLD: &str = "
INSERT INTO orders(order_id, first_ns, last_ns, status, status_ns, status_span, step_service, step_stage, step_ns, step_span)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
ON CONFLICT(order_id) DO UPDATE SET
  step_service = CASE WHEN excluded.step_ns IS NOT NULL AND (step_ns IS NULL OR (excluded.step_ns, excluded.step_span) >= (step_ns, step_span))
                      THEN excluded.step_service ELSE step_service END,
  step_stage = CASE WHEN excluded.step_ns IS NOT NULL AND (step_ns IS NULL OR (excluded.step_ns, excluded.step_span) >= (step_ns, step_span))
                    THEN excluded.step_stage ELSE step_stage END,
  step_span = CASE WHEN excluded.step_ns IS NOT NULL AND (step_ns IS NULL OR (excluded.step_ns, excluded.step_span) >= (step_ns, step_span))
                   THEN excluded.step_span ELSE step_span END,
  step_ns = CASE WHEN excluded.step_ns IS NOT NULL AND (step_ns IS NULL OR (excluded.step_ns, excluded.step_span) >= (step_ns, step_span))
                 THEN excluded.step_ns ELSE step_ns END,
  first_ns = min(first_ns, excluded.first_ns),
  last_ns = max(last_ns, excluded.last_ns),
  status = CASE WHEN excluded.status IS NOT NULL AND (status IS NULL OR excluded.status_ns > status_ns OR (excluded.status_ns = status_ns AND excluded.status_span >= status_span))
                THEN excluded.status ELSE status END,
  status_ns = CASE WHEN excluded.status IS NOT NULL AND (status IS NULL OR excluded.status_ns > status_ns OR (excluded.status_ns = status_ns AND excluded.status_span >= status_span))
                   THEN excluded.status_ns ELSE status_ns END,
  status_span = CASE WHEN excluded.status IS NOT NULL AND (status IS NULL OR excluded.status_ns > status_ns OR (excluded.status_ns = status_ns AND excluded.status_span >= status_span))
                     THEN excluded.status_span ELSE status_span END";

/// Brings a store written by an older tracegate up to the current schema.
pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version >= VERSION {
        return Ok(());
    }
    let tx = conn.transaction()?;
    if version == 1 {
        // Version 2: the last step of every order, from its spans.
        tx.execute_batch(STEP_COLUMNS)?;
        let existing: Vec<String> = tx.prepare("SELECT order_id FROM orders")?.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?;
        for order_id in &existing {
            recompute(&tx, order_id)?;
        }
        tx.pragma_update(None, "user_version", VERSION)?;
        tx.commit()?;
        return Ok(());
    }
    let has_correlation = tx.prepare("SELECT 1 FROM pragma_table_info('spans') WHERE name = 'correlation'")?.exists([])?;
    if !has_correlation {
        tx.execute_batch("ALTER TABLE spans ADD COLUMN correlation TEXT")?;
    }
    tx.execute_batch(CORRELATION_INDEX)?;
    tx.execute_batch(ORDER_SCHEMA)?;
    // Summaries for orders whose spans were stored before version 1 (none in a new store).
    let existing: Vec<String> = tx
        .prepare("SELECT DISTINCT order_id FROM spans WHERE order_id IS NOT NULL")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for order_id in &existing {
        recompute(&tx, order_id)?;
    }
    tx.pragma_update(None, "user_version", VERSION)?;
    tx.commit()?;
    Ok(())
}

/// What the order tables need from a span just written.
pub(super) struct SpanFacts<'a> {
    pub span_id: &'a [u8],
    pub start_ns: i64,
    pub end_ns: i64,
    pub order_id: Option<&'a str>,
    pub status: Option<&'a str>,
    pub correlation: Option<&'a str>,
    pub service: Option<&'a str>,
    pub stage: Option<&'a str>,
    pub error: bool,
}

/// The last step seen: (service, stage, start time, span id).
type Step = (Option<String>, Option<String>, i64, Vec<u8>);

/// Order summary changes gathered over one insert, written once per order at its end (folding
/// is commutative, so the order of spans does not matter).
#[derive(Default)]
pub(super) struct OrderFolds {
    by_order: HashMap<String, Fold>,
}

struct Fold {
    first_ns: i64,
    last_ns: i64,
    /// The latest status seen: (status, start time, span id).
    status: Option<(String, i64, Vec<u8>)>,
    step: Option<Step>,
}

impl OrderFolds {
    /// `linked`: the span joined the order through a correlation value.
    fn add(&mut self, order_id: &str, span: &SpanFacts<'_>, linked: bool) {
        let status = span.status.map(|s| (s.to_string(), span.start_ns, span.span_id.to_vec()));
        // The stage as the timeline shows it (`OrderSpan::step_stage`, `OrderSpan::is_step`).
        let probe = crate::orders::OrderSpan {
            trace_id: Vec::new(),
            span_id: Vec::new(),
            parent_span_id: Vec::new(),
            step_key: String::new(),
            service: None,
            name: String::new(),
            start_ns: 0,
            end_ns: 0,
            stage: span.stage.map(String::from),
            status: span.status.map(String::from),
            error: span.error,
            linked,
        };
        let step = probe.is_step().then(|| (span.service.map(String::from), probe.step_stage(), span.start_ns, span.span_id.to_vec()));
        match self.by_order.get_mut(order_id) {
            Some(fold) => {
                if let Some(new) = step {
                    if fold.step.as_ref().is_none_or(|old| (new.2, &new.3) >= (old.2, &old.3)) {
                        fold.step = Some(new);
                    }
                }
                fold.first_ns = fold.first_ns.min(span.start_ns);
                fold.last_ns = fold.last_ns.max(span.end_ns.max(span.start_ns));
                if let Some(new) = status {
                    if fold.status.as_ref().is_none_or(|old| (new.1, &new.2) >= (old.1, &old.2)) {
                        fold.status = Some(new);
                    }
                }
            }
            None => {
                self.by_order
                    .insert(order_id.to_string(), Fold { first_ns: span.start_ns, last_ns: span.end_ns.max(span.start_ns), status, step });
            }
        }
    }

    /// Writes the gathered changes into the `orders` table.
    pub(super) fn write(self, tx: &Transaction<'_>) -> Result<(), StoreError> {
        for (order_id, f) in &self.by_order {
            fold(
                tx,
                order_id,
                f.first_ns,
                f.last_ns,
                f.status.as_ref().map(|(s, ns, span)| (s.as_str(), *ns, span.as_slice())),
                f.step.as_ref(),
            )?;
        }
        Ok(())
    }
}

/// Records what one span changes: its correlation binding now, its order's summary in `folds`.
pub(super) fn index_span(tx: &Transaction<'_>, span: &SpanFacts<'_>, folds: &mut OrderFolds) -> Result<(), StoreError> {
    match (span.order_id, span.correlation) {
        (Some(order_id), correlation) => {
            folds.add(order_id, span, false);
            if let Some(value) = correlation {
                bind(tx, value, order_id)?;
            }
        }
        (None, Some(value)) => {
            let bound: Option<String> =
                tx.prepare_cached("SELECT order_id FROM correlations WHERE value = ?1")?.query_row([value], |r| r.get(0)).optional()?;
            if let Some(order_id) = bound {
                folds.add(&order_id, span, true);
            }
        }
        (None, None) => {}
    }
    Ok(())
}

/// Widens an order's summary by a span's times and takes its status if it is the latest.
fn fold(
    tx: &Transaction<'_>,
    order_id: &str,
    first_ns: i64,
    last_ns: i64,
    status: Option<(&str, i64, &[u8])>,
    step: Option<&Step>,
) -> Result<(), StoreError> {
    let (status, status_ns, status_span) = match status {
        Some((s, ns, span)) => (Some(s), Some(ns), Some(span)),
        None => (None, None, None),
    };
    let (step_service, step_stage, step_ns, step_span) = match step {
        Some((service, stage, ns, span)) => (service.as_deref(), stage.as_deref(), Some(*ns), Some(span.as_slice())),
        None => (None, None, None, None),
    };
    tx.prepare_cached(FOLD)?.execute(params![
        order_id,
        first_ns,
        last_ns,
        status,
        status_ns,
        status_span,
        step_service,
        step_stage,
        step_ns,
        step_span
    ])?;
    Ok(())
}

/// Binds a correlation value to an order. A new binding folds the spans that carried only the
/// value (saved before the order was known) into the order's summary.
fn bind(tx: &Transaction<'_>, value: &str, order_id: &str) -> Result<(), StoreError> {
    let previous: Option<String> =
        tx.prepare_cached("SELECT order_id FROM correlations WHERE value = ?1")?.query_row([value], |r| r.get(0)).optional()?;
    if previous.as_deref() == Some(order_id) {
        return Ok(());
    }
    tx.prepare_cached(
        "INSERT INTO correlations(value, order_id) VALUES (?1, ?2) ON CONFLICT(value) DO UPDATE SET order_id = excluded.order_id",
    )?
    .execute([value, order_id])?;
    let linked: (Option<i64>, Option<i64>) = tx
        .prepare_cached("SELECT min(start_ns), max(max(start_ns, end_ns)) FROM spans WHERE correlation = ?1 AND order_id IS NULL")?
        .query_row([value], |r| Ok((r.get(0)?, r.get(1)?)))?;
    if let (Some(first), Some(last)) = linked {
        let status: Option<(String, i64, Vec<u8>)> = tx
            .prepare_cached("SELECT order_status, start_ns, span_id FROM spans WHERE correlation = ?1 AND order_id IS NULL AND order_status IS NOT NULL ORDER BY start_ns DESC, span_id DESC LIMIT 1")?
            .query_row([value], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        // Every linked span is a step (its own stage, else `file_link`).
        let step: Option<Step> = tx
            .prepare_cached("SELECT service, coalesce(order_stage, 'file_link'), start_ns, span_id FROM spans WHERE correlation = ?1 AND order_id IS NULL ORDER BY start_ns DESC, span_id DESC LIMIT 1")?
            .query_row([value], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .optional()?;
        fold(tx, order_id, first, last, status.as_ref().map(|(s, ns, span)| (s.as_str(), *ns, span.as_slice())), step.as_ref())?;
    }
    if let Some(previous) = previous {
        // The value's spans left the previous order.
        recompute(tx, &previous)?;
    }
    Ok(())
}

/// Rebuilds an order's summary from its spans, or removes it when none are left.
fn recompute(tx: &Transaction<'_>, order_id: &str) -> Result<(), StoreError> {
    let (count, first, last): (i64, Option<i64>, Option<i64>) = tx
        .prepare_cached(&format!("SELECT count(*), min(start_ns), max(max(start_ns, end_ns)) FROM ({ORDER_SPANS})"))?
        .query_row([order_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    let (Some(first), Some(last)) = (first, last) else {
        tx.prepare_cached("DELETE FROM orders WHERE order_id = ?1")?.execute([order_id])?;
        return Ok(());
    };
    debug_assert!(count > 0);
    let status: Option<(String, i64, Vec<u8>)> = tx
        .prepare_cached(&format!("SELECT order_status, start_ns, span_id FROM ({ORDER_SPANS}) WHERE order_status IS NOT NULL ORDER BY start_ns DESC, span_id DESC LIMIT 1"))?
        .query_row([order_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let (status, status_ns, status_span) = match status {
        Some((s, ns, span)) => (Some(s), Some(ns), Some(span)),
        None => (None, None, None),
    };
    let step: Option<Step> = tx
        .prepare_cached(&format!("{LAST_STEP} FROM ({ORDER_SPANS}) {LAST_STEP_WHERE}"))?
        .query_row([order_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .optional()?;
    let (step_service, step_stage, step_ns, step_span) = match step {
        Some((service, stage, ns, span)) => (service, stage, Some(ns), Some(span)),
        None => (None, None, None, None),
    };
    tx.prepare_cached(
        "INSERT OR REPLACE INTO orders(order_id, first_ns, last_ns, status, status_ns, status_span, step_service, step_stage, step_ns, step_span)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![order_id, first, last, status, status_ns, status_span, step_service, step_stage, step_ns, step_span])?;
    Ok(())
}

/// After spans that ended before `cutoff_ns` were deleted: drops bindings whose value no span
/// carries any more and recomputes every order that may have lost spans (a deleted span started
/// before the cutoff, so its order's first time did too).
pub(super) fn after_purge(tx: &Transaction<'_>, cutoff_ns: i64) -> Result<(), StoreError> {
    tx.execute("DELETE FROM correlations WHERE NOT EXISTS (SELECT 1 FROM spans WHERE spans.correlation = correlations.value)", [])?;
    let touched: Vec<String> =
        tx.prepare("SELECT order_id FROM orders WHERE first_ns < ?1")?.query_map([cutoff_ns], |r| r.get(0))?.collect::<Result<_, _>>()?;
    for order_id in &touched {
        recompute(tx, order_id)?;
    }
    Ok(())
}

fn to_u64(ns: i64) -> u64 {
    u64::try_from(ns).unwrap_or(0)
}

impl SpanStore {
    /// The timeline of an order, or `None` if no stored span belongs to it.
    pub fn order_timeline(&self, order_id: &str) -> Result<Option<OrderTimeline>, StoreError> {
        let conn = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        let mut stmt = conn.prepare_cached(ORDER_SPANS)?;
        let spans = stmt
            .query_map([order_id], |r| {
                // The stored span for what the timeline's columns leave out (parent, step key).
                let body: Vec<u8> = r.get(10)?;
                let span = <opentelemetry_proto::tonic::trace::v1::Span as prost::Message>::decode(body.as_slice()).unwrap_or_default();
                Ok(OrderSpan {
                    trace_id: r.get(0)?,
                    span_id: r.get(1)?,
                    parent_span_id: span.parent_span_id,
                    step_key: crate::orders::step_key(|k| crate::shared::attr_string(&span.attributes, k)),
                    service: r.get(2)?,
                    name: r.get(3)?,
                    start_ns: to_u64(r.get(4)?),
                    end_ns: to_u64(r.get(5)?),
                    stage: r.get(6)?,
                    status: r.get(7)?,
                    error: r.get(8)?,
                    linked: r.get(9)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(OrderTimeline::assemble(order_id, spans))
    }

    /// A page of order summaries matching `query`, in its order (`query.sort`).
    pub fn orders(&self, query: &OrderQuery) -> Result<Vec<OrderSummary>, StoreError> {
        let conn = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        let (sql, args) = list_sql(query);
        type Row = (String, Option<String>, i64, i64, Option<String>, Option<String>, i64);
        let rows: Vec<Row> = conn
            .prepare_cached(&sql)?
            .query_map(params_from_iter(args), |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)))?
            .collect::<Result<_, _>>()?;
        let mut per_service =
            conn.prepare_cached(&format!("SELECT service, count(*) FROM ({ORDER_SPANS}) GROUP BY service ORDER BY service"))?;
        let mut out = Vec::with_capacity(rows.len());
        for (order_id, status, first, last, current_service, current_stage, firing) in rows {
            let counts: Vec<(Option<String>, i64)> =
                per_service.query_map([&order_id], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
            out.push(OrderSummary {
                span_count: counts.iter().map(|(_, n)| to_u64(*n)).sum(),
                services: counts.into_iter().filter_map(|(s, _)| s).collect(),
                order_id,
                status,
                first_seen: to_u64(first),
                last_seen: to_u64(last),
                current_service,
                current_stage,
                firing_alerts: to_u64(firing),
            });
        }
        Ok(out)
    }
}

/// The SQL and arguments of an order-list query; filters that are not set are left out, so
/// SQLite plans each combination on its own.
pub(super) fn list_sql(query: &OrderQuery) -> (String, Vec<rusqlite::types::Value>) {
    let mut sql = String::from(
        "SELECT o.order_id, o.status, o.first_ns, o.last_ns, o.step_service, o.step_stage,
                (SELECT count(*) FROM order_alerts a WHERE a.state = 'firing' AND a.order_id = o.order_id)
           FROM orders o WHERE 1",
    );
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    let mut arg = |value: rusqlite::types::Value| {
        args.push(value);
        format!("?{}", args.len())
    };
    if let Some(order_id) = &query.order_id {
        sql += &format!(" AND o.order_id = {}", arg(order_id.clone().into()));
    }
    if let Some(prefix) = &query.id_prefix {
        // GLOB is case-sensitive like Elasticsearch's prefix query (LIKE is not), and a
        // leading literal lets SQLite walk the primary key; `*`, `?` and `[` are escaped.
        sql += &format!(" AND o.order_id GLOB {}", arg(format!("{}*", glob_escape(prefix)).into()));
    }
    if let Some(status) = &query.status {
        sql += &format!(" AND o.status = {}", arg(status.clone().into()));
    }
    if !query.exclude_statuses.is_empty() {
        let list: Vec<String> = query.exclude_statuses.iter().map(|s| arg(s.clone().into())).collect();
        sql += &format!(" AND (o.status IS NULL OR o.status NOT IN ({}))", list.join(", "));
    }
    if let Some(since) = query.since_ns {
        sql += &format!(" AND o.last_ns >= {}", arg(super::spans::clamp_ns(since).into()));
    }
    if let Some(until) = query.until_ns {
        sql += &format!(" AND o.first_ns <= {}", arg(super::spans::clamp_ns(until).into()));
    }
    if let Some(service) = &query.service {
        // `+s.service` keeps SQLite from walking every span of the service for each order: the
        // order's own spans (spans_by_order, spans_by_correlation) are far fewer.
        let p = arg(service.clone().into());
        sql += &format!(
            " AND (EXISTS (SELECT 1 FROM spans s WHERE s.order_id = o.order_id AND +s.service = {p})
               OR EXISTS (SELECT 1 FROM correlations c JOIN spans s ON s.correlation = c.value
                          WHERE c.order_id = o.order_id AND s.order_id IS NULL AND +s.service = {p}))"
        );
    }
    if let Some(state) = query.alert {
        let p = arg(state.as_str().to_string().into());
        sql += &format!(" AND EXISTS (SELECT 1 FROM order_alerts a WHERE a.order_id = o.order_id AND a.state = {p})");
    }
    if query.no_alerts {
        sql += " AND NOT EXISTS (SELECT 1 FROM order_alerts a WHERE a.order_id = o.order_id AND a.state IN ('firing', 'resolved'))";
    }
    let (before, direction) = match query.sort {
        OrderSort::NewestFirst => ("<", "DESC"),
        OrderSort::LongestWaiting => (">", "ASC"),
    };
    if let Some((last_ns, order_id)) = &query.after {
        let t = arg(super::spans::clamp_ns(*last_ns).into());
        let id = arg(order_id.clone().into());
        sql += &format!(" AND (o.last_ns {before} {t} OR (o.last_ns = {t} AND o.order_id > {id}))");
    }
    let limit = arg(i64::try_from(query.limit).unwrap_or(i64::MAX).into());
    sql += &format!(" ORDER BY o.last_ns {direction}, o.order_id LIMIT {limit}");
    (sql, args)
}

/// `text` as a GLOB pattern that matches only itself.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '*' | '?' | '[' => {
                out.push('[');
                out.push(c);
                out.push(']');
            }
            c => out.push(c),
        }
    }
    out
}
