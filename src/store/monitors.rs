//! Monitor state in the embedded store: the clocks of every (monitor, order) that learnt
//! something, in one row per order (one write per order and turn, whatever number of rules
//! changed), the alerts (exactly one row per (monitor, order, rule)), and the notification
//! outbox. The monitor writes a clock change, its alert and the notices it causes in one
//! transaction, so after a crash (even `kill -9`) the store says what fired, and the outbox
//! says which notices no notifier confirmed yet: those, and only those, are sent again.

use std::sync::Arc;

use rusqlite::{params, params_from_iter, Transaction};
use serde_json::{json, Value};

use super::spans::{clamp_ns, SpanStore, StoreError};
use crate::orders::{AlertState, LastEvent, OrderAlert, Severity};

const MONITOR_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS monitor_order_clocks (
    monitor TEXT NOT NULL,
    order_id TEXT NOT NULL,
    -- Every clock of the order that learnt something: packed (a BLOB, see OrderClocks), or JSON
    -- text [[rule, from_ns, end_ns, phase], ...] in rows written before.
    clocks TEXT NOT NULL,
    -- 1 when a clock is pending or firing: the orders the monitor holds in memory at start.
    running INTEGER NOT NULL,
    updated_ns INTEGER NOT NULL,
    PRIMARY KEY (monitor, order_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS order_alerts (
    monitor TEXT NOT NULL,
    order_id TEXT NOT NULL,
    rule TEXT NOT NULL,
    from_status TEXT NOT NULL,
    to_status TEXT NOT NULL,
    severity TEXT NOT NULL,
    threshold_seconds REAL NOT NULL,
    elapsed_seconds REAL NOT NULL,
    state TEXT NOT NULL,
    fired_ns INTEGER NOT NULL,
    resolved_ns INTEGER,
    late_data INTEGER NOT NULL,
    current_status TEXT,
    last_service TEXT,
    last_stage TEXT,
    last_ns INTEGER,
    -- The last event's service when the alert fired (Alertmanager's `service` label).
    service TEXT,
    PRIMARY KEY (monitor, order_id, rule)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS order_alerts_by_order ON order_alerts(order_id);
CREATE INDEX IF NOT EXISTS order_alerts_by_fired ON order_alerts(fired_ns);
CREATE INDEX IF NOT EXISTS order_alerts_firing ON order_alerts(state, order_id);
CREATE TABLE IF NOT EXISTS monitor_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    monitor TEXT NOT NULL,
    notifier TEXT NOT NULL,
    kind TEXT NOT NULL,
    alert TEXT NOT NULL,
    created_ns INTEGER NOT NULL
);
";

/// Orders per `INSERT` statement (5 parameters each, far below SQLite's limit), largest first:
/// a turn's orders go in statements of 64 while they last, the rest in statements of 16, 4 and
/// 1 (at most nine more). Each size is prepared once and kept in the statement cache, instead
/// of a statement of the rest's exact length parsed every turn.
const ORDERS_PER_INSERT: [usize; 4] = [64, 16, 4, 1];
static ORDER_INSERTS: std::sync::OnceLock<[String; 4]> = std::sync::OnceLock::new();

/// `INSERT OR REPLACE` of `rows` orders' clocks in one statement.
fn order_clocks_insert(rows: usize) -> String {
    let mut sql = String::from("INSERT OR REPLACE INTO monitor_order_clocks(monitor, order_id, clocks, running, updated_ns) VALUES ");
    for i in 0..rows {
        if i > 0 {
            sql.push_str(", ");
        }
        let p = i * 5;
        sql.push_str(&format!("(?{}, ?{}, ?{}, ?{}, ?{})", p + 1, p + 2, p + 3, p + 4, p + 5));
    }
    sql
}

/// One order's row as a monitor writes it: every clock of the order that learnt something,
/// added one by one ([`OrderClocks::push`]) straight into the stored value, without a tree or a
/// row per clock in between: a busy turn writes thousands of orders.
///
/// The value is packed (a BLOB): [`PACKED`], then per clock the rule name's length (u32 LE) and
/// bytes, `from_ns` and `end_ns` (u64 LE), and the phase as one byte of [`PHASES`] (or
/// [`OTHER_PHASE`], its length and bytes). About 33 bytes a clock against 48-66 as JSON text: the
/// monitor rewrites each changed order every turn, and the store's work grows with the bytes.
/// Rows written before are JSON text (`[[rule, from_ns, end_ns, phase], ...]`) and read as such.
#[derive(Debug, Clone)]
pub struct OrderClocks {
    pub order_id: Arc<str>,
    clocks: Vec<u8>,
    /// A clock is pending or firing.
    running: bool,
}

/// The first byte of a packed clocks value (JSON text starts with `[`).
const PACKED: u8 = 1;
/// The monitor's phases, stored as their index.
const PHASES: [&str; 6] = ["idle", "pending", "firing", "met", "resolved", "cancelled"];
/// A phase not in [`PHASES`]: its length (u32 LE) and bytes follow.
const OTHER_PHASE: u8 = u8::MAX;

impl OrderClocks {
    pub fn new(order_id: Arc<str>) -> OrderClocks {
        OrderClocks { order_id, clocks: Vec::new(), running: false }
    }

    /// Adds one clock; `phase` is the monitor's own word for where it is.
    pub fn push(&mut self, rule: &str, from_ns: u64, end_ns: u64, phase: &str) {
        if self.clocks.is_empty() {
            self.clocks.reserve(112);
            self.clocks.push(PACKED);
        }
        push_bytes(&mut self.clocks, rule.as_bytes());
        self.clocks.extend_from_slice(&from_ns.to_le_bytes());
        self.clocks.extend_from_slice(&end_ns.to_le_bytes());
        match PHASES.iter().position(|p| *p == phase) {
            Some(i) => self.clocks.push(i as u8),
            None => {
                self.clocks.push(OTHER_PHASE);
                push_bytes(&mut self.clocks, phase.as_bytes());
            }
        }
        self.running |= is_running(phase);
    }

    /// No clock was added.
    pub fn is_empty(&self) -> bool {
        self.clocks.is_empty()
    }
}

fn push_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // Rule names come from the configuration: far below 4 GiB.
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

fn is_running(phase: &str) -> bool {
    phase == "pending" || phase == "firing"
}

fn put_orders(tx: &Transaction, sql: &str, monitor: &str, rows: &[OrderClocks], now: i64) -> Result<(), StoreError> {
    let mut args: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(rows.len() * 5);
    for r in rows {
        args.extend([&monitor as &dyn rusqlite::ToSql, &r.order_id, &r.clocks, &r.running, &now]);
    }
    tx.prepare_cached(sql)?.execute(params_from_iter(args))?;
    Ok(())
}

/// A packed clocks value's entries, or `None` if it is not one.
fn unpack_clocks(bytes: &[u8]) -> Option<Vec<(String, u64, u64, String)>> {
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if rest.len() < n {
            return None;
        }
        let (head, tail) = rest.split_at(n);
        *rest = tail;
        Some(head)
    }
    fn u32_le(rest: &mut &[u8]) -> Option<usize> {
        Some(u32::from_le_bytes(take(rest, 4)?.try_into().ok()?) as usize)
    }
    fn u64_le(rest: &mut &[u8]) -> Option<u64> {
        Some(u64::from_le_bytes(take(rest, 8)?.try_into().ok()?))
    }
    fn text(rest: &mut &[u8]) -> Option<String> {
        let n = u32_le(rest)?;
        String::from_utf8(take(rest, n)?.to_vec()).ok()
    }
    let (&PACKED, mut rest) = bytes.split_first()? else { return None };
    let mut entries = Vec::new();
    while !rest.is_empty() {
        let rule = text(&mut rest)?;
        let from_ns = u64_le(&mut rest)?;
        let end_ns = u64_le(&mut rest)?;
        let phase = match take(&mut rest, 1)?[0] {
            OTHER_PHASE => text(&mut rest)?,
            i => PHASES.get(usize::from(i))?.to_string(),
        };
        entries.push((rule, from_ns, end_ns, phase));
    }
    Some(entries)
}

/// Reads one order's clocks back (packed, or JSON text as written before); a malformed value
/// is skipped (and logged).
fn decode_clocks(order_id: String, value: rusqlite::types::ValueRef<'_>, out: &mut Vec<ClockRow>) {
    use rusqlite::types::ValueRef;
    let entries: Result<Vec<(String, u64, u64, String)>, String> = match value {
        ValueRef::Blob(bytes) => unpack_clocks(bytes).ok_or_else(|| "not a packed clocks value".to_string()),
        ValueRef::Text(text) => serde_json::from_slice(text).map_err(|e| e.to_string()),
        other => Err(format!("a {} value", other.data_type())),
    };
    let entries = match entries {
        Ok(entries) => entries,
        Err(error) => {
            tracing::warn!(%order_id, %error, "unreadable monitor clocks in the store; the order's clocks are ignored");
            return;
        }
    };
    for (rule, from_ns, end_ns, phase) in entries {
        out.push(ClockRow { order_id: order_id.clone(), rule, from_ns, end_ns, phase });
    }
}

pub(super) fn migrate(conn: &rusqlite::Connection) -> Result<(), StoreError> {
    conn.execute_batch(MONITOR_SCHEMA)?;
    // Stores written before alerts kept the service they fired with.
    let has_service = conn.prepare("SELECT 1 FROM pragma_table_info('order_alerts') WHERE name = 'service'")?.exists([])?;
    if !has_service {
        conn.execute_batch("ALTER TABLE order_alerts ADD COLUMN service TEXT; UPDATE order_alerts SET service = last_service;")?;
    }
    // Stores written before one row per order kept one row per (monitor, order, rule).
    let old = conn.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'monitor_clocks'")?.exists([])?;
    if old {
        conn.execute_batch(
            "BEGIN;
             INSERT OR REPLACE INTO monitor_order_clocks(monitor, order_id, clocks, running, updated_ns)
               SELECT monitor, order_id, json_group_array(json_array(rule, from_ns, end_ns, phase)),
                      max(phase IN ('pending', 'firing')), max(updated_ns)
                 FROM monitor_clocks GROUP BY monitor, order_id;
             DROP TABLE monitor_clocks;
             COMMIT;",
        )?;
        tracing::info!("monitor clocks moved to one row per order (monitor_order_clocks)");
    }
    Ok(())
}

/// One clock as written and read; `phase` is the monitor's own word for where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClockRow {
    pub order_id: String,
    pub rule: String,
    pub from_ns: u64,
    pub end_ns: u64,
    pub phase: String,
}

/// Rows of the outbox in id order, from [`SpanStore::monitor_outbox`].
#[derive(Debug, Default)]
pub struct OutboxPage {
    /// The readable rows (one that is not is logged and left out).
    pub rows: Vec<OutboxRow>,
    /// The id of the last row read, readable or not: where the next page starts.
    pub last_id: Option<i64>,
    /// As many rows as asked for: more may follow.
    pub full: bool,
}

/// A notice to send to one notifier, waiting in the outbox until the notifier confirms it.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub id: i64,
    pub monitor: String,
    pub notifier: String,
    /// The notice kind as the monitor names it (`fired`, `resolved`, `repeat`).
    pub kind: String,
    pub alert: OrderAlert,
}

/// What one turn of a monitor changes, written in one transaction.
#[derive(Debug, Default)]
pub struct MonitorWrite {
    pub monitor: String,
    /// Each order written, with every clock of it that learnt something (its row is replaced
    /// whole).
    pub orders: Vec<OrderClocks>,
    pub alerts: Vec<OrderAlert>,
    /// (notifier id, notice kind, the alert as the notice shows it).
    pub notices: Vec<(String, String, OrderAlert)>,
    /// Outbox entries the notifiers confirmed (or gave up on for good).
    pub delivered: Vec<i64>,
    pub now_ns: u64,
}

impl MonitorWrite {
    pub fn is_empty(&self) -> bool {
        self.orders.is_empty() && self.alerts.is_empty() && self.notices.is_empty() && self.delivered.is_empty()
    }
}

/// Filters of `GET /api/v1/alerts`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AlertQuery {
    pub state: Option<AlertState>,
    pub rule: Option<String>,
    pub severity: Option<Severity>,
    /// Alerts fired at or after this time.
    pub since_ns: Option<u64>,
    /// Alerts fired at or before this time.
    pub until_ns: Option<u64>,
    pub limit: usize,
}

/// The outbox keeps the alert as the notice showed it when it was decided.
fn alert_json(a: &OrderAlert) -> String {
    alert_value(a).to_string()
}

/// An alert as JSON, the way monitor state stores it (the embedded outbox and the Elasticsearch
/// monitor documents): times in Unix nanoseconds.
pub fn alert_value(a: &OrderAlert) -> Value {
    json!({
        "order_id": a.order_id, "monitor": a.monitor, "rule": a.rule, "from": a.from, "to": a.to,
        "severity": a.severity.as_str(), "threshold_seconds": a.threshold_seconds, "elapsed_seconds": a.elapsed_seconds,
        "state": a.state.as_str(), "fired_at": a.fired_at, "resolved_at": a.resolved_at, "late_data": a.late_data,
        "current_status": a.current_status,
        "last_event": a.last_event.as_ref().map(|e| json!({"service": e.service, "stage": e.stage, "time": e.time})),
        "service": a.service,
    })
}

fn alert_from_json(text: &str) -> Option<OrderAlert> {
    alert_from_value(&serde_json::from_str(text).ok()?)
}

/// Reads what [`alert_value`] wrote; `None` for anything else.
pub fn alert_from_value(v: &Value) -> Option<OrderAlert> {
    let s = |k: &str| v[k].as_str().map(str::to_string);
    Some(OrderAlert {
        order_id: s("order_id")?,
        monitor: s("monitor")?,
        rule: s("rule")?,
        from: s("from")?,
        to: s("to")?,
        severity: Severity::parse(v["severity"].as_str()?)?,
        threshold_seconds: v["threshold_seconds"].as_f64()?,
        elapsed_seconds: v["elapsed_seconds"].as_f64()?,
        state: state_parse(v["state"].as_str()?)?,
        fired_at: v["fired_at"].as_u64()?,
        resolved_at: v["resolved_at"].as_u64(),
        late_data: v["late_data"].as_bool()?,
        current_status: s("current_status"),
        last_event: v["last_event"].as_object().map(|e| LastEvent {
            service: e.get("service").and_then(Value::as_str).map(str::to_string),
            stage: e.get("stage").and_then(Value::as_str).map(str::to_string),
            time: e.get("time").and_then(Value::as_u64).unwrap_or(0),
        }),
        service: s("service"),
    })
}

fn state_parse(text: &str) -> Option<AlertState> {
    match text {
        "firing" => Some(AlertState::Firing),
        "resolved" => Some(AlertState::Resolved),
        _ => None,
    }
}

const ALERT_COLUMNS: &str = "monitor, order_id, rule, from_status, to_status, severity, threshold_seconds, elapsed_seconds, state, fired_ns, resolved_ns, late_data, current_status, last_service, last_stage, last_ns, service";

fn alert_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<OrderAlert> {
    let severity: String = r.get(5)?;
    let state: String = r.get(8)?;
    let last_ns: Option<i64> = r.get(15)?;
    Ok(OrderAlert {
        monitor: r.get(0)?,
        order_id: r.get(1)?,
        rule: r.get(2)?,
        from: r.get(3)?,
        to: r.get(4)?,
        severity: Severity::parse(&severity).unwrap_or(Severity::Warning),
        threshold_seconds: r.get(6)?,
        elapsed_seconds: r.get(7)?,
        state: state_parse(&state).unwrap_or(AlertState::Firing),
        fired_at: to_u64(r.get(9)?),
        resolved_at: r.get::<_, Option<i64>>(10)?.map(to_u64),
        late_data: r.get(11)?,
        current_status: r.get(12)?,
        last_event: last_ns.map(|ns| LastEvent { service: r.get(13).ok().flatten(), stage: r.get(14).ok().flatten(), time: to_u64(ns) }),
        service: r.get(16)?,
    })
}

fn to_u64(ns: i64) -> u64 {
    u64::try_from(ns).unwrap_or(0)
}

fn put_alert(tx: &Transaction<'_>, a: &OrderAlert) -> Result<(), StoreError> {
    let last = a.last_event.as_ref();
    tx.prepare_cached(&format!("INSERT OR REPLACE INTO order_alerts({ALERT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)"))?
        .execute(params![
            a.monitor,
            a.order_id,
            a.rule,
            a.from,
            a.to,
            a.severity.as_str(),
            a.threshold_seconds,
            a.elapsed_seconds,
            a.state.as_str(),
            clamp_ns(a.fired_at),
            a.resolved_at.map(clamp_ns),
            a.late_data,
            a.current_status,
            last.and_then(|e| e.service.clone()),
            last.and_then(|e| e.stage.clone()),
            last.map(|e| clamp_ns(e.time)),
            a.service,
        ])?;
    Ok(())
}

/// Reads clock rows; `sql` selects (order_id, clocks).
fn clock_rows(tx: &rusqlite::Connection, sql: &str, args: Vec<rusqlite::types::Value>) -> Result<Vec<ClockRow>, StoreError> {
    let mut out = Vec::new();
    let mut stmt = tx.prepare_cached(sql)?;
    let mut rows = stmt.query(params_from_iter(args))?;
    while let Some(row) = rows.next()? {
        decode_clocks(row.get(0)?, row.get_ref(1)?, &mut out);
    }
    Ok(out)
}

impl SpanStore {
    /// Writes one turn of a monitor: clocks, alerts and new notices together; returns the outbox
    /// ids of the new notices, in order.
    pub fn monitor_write(&self, w: &MonitorWrite) -> Result<Vec<i64>, StoreError> {
        let mut conn = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let tx = conn.transaction()?;
        let now = clamp_ns(w.now_ns);
        // Many rows per statement: a busy turn writes thousands of orders, and each statement
        // run costs more than the row it adds.
        let inserts = ORDER_INSERTS.get_or_init(|| ORDERS_PER_INSERT.map(order_clocks_insert));
        let mut rest = &w.orders[..];
        for (size, sql) in ORDERS_PER_INSERT.into_iter().zip(inserts) {
            let mut chunks = rest.chunks_exact(size);
            for chunk in &mut chunks {
                put_orders(&tx, sql, &w.monitor, chunk, now)?;
            }
            rest = chunks.remainder();
        }
        for a in &w.alerts {
            put_alert(&tx, a)?;
        }
        let mut ids = Vec::with_capacity(w.notices.len());
        for (notifier, kind, alert) in &w.notices {
            let id: i64 = tx
                .prepare_cached(
                    "INSERT INTO monitor_outbox(monitor, notifier, kind, alert, created_ns) VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id",
                )?
                .query_row(params![w.monitor, notifier, kind, alert_json(alert), now], |r| r.get(0))?;
            ids.push(id);
        }
        for id in &w.delivered {
            tx.prepare_cached("DELETE FROM monitor_outbox WHERE id = ?1")?.execute([id])?;
        }
        tx.commit()?;
        Ok(ids)
    }

    /// Every stored clock of the monitor's orders that have a running clock (pending or firing),
    /// and those orders' alerts: what the monitor holds in memory at start.
    pub fn monitor_running(&self, monitor: &str) -> Result<(Vec<ClockRow>, Vec<OrderAlert>), StoreError> {
        let conn = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        let clocks = clock_rows(
            &conn,
            "SELECT order_id, clocks FROM monitor_order_clocks WHERE monitor = ?1 AND running",
            vec![monitor.to_string().into()],
        )?;
        let alerts = conn
            .prepare_cached(&format!("SELECT {ALERT_COLUMNS} FROM order_alerts WHERE monitor = ?1 AND state = 'firing'"))?
            .query_map([monitor], alert_row)?
            .collect::<Result<_, _>>()?;
        Ok((clocks, alerts))
    }

    /// The stored clocks of some orders of a monitor (orders that come back after they left
    /// memory), with their firing alerts.
    pub fn monitor_orders(&self, monitor: &str, order_ids: &[&str]) -> Result<(Vec<ClockRow>, Vec<OrderAlert>), StoreError> {
        let conn = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        let mut clocks = Vec::new();
        let mut alerts = Vec::new();
        // SQLite allows 32766 parameters; chunks keep each statement small and cacheable.
        for chunk in order_ids.chunks(200) {
            let marks = (2..chunk.len() + 2).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ");
            let mut args: Vec<rusqlite::types::Value> = vec![monitor.to_string().into()];
            args.extend(chunk.iter().map(|id| rusqlite::types::Value::from(id.to_string())));
            clocks.extend(clock_rows(
                &conn,
                &format!("SELECT order_id, clocks FROM monitor_order_clocks WHERE monitor = ?1 AND order_id IN ({marks})"),
                args.clone(),
            )?);
            let found: Vec<OrderAlert> = conn
                .prepare_cached(&format!(
                    "SELECT {ALERT_COLUMNS} FROM order_alerts WHERE monitor = ?1 AND state = 'firing' AND order_id IN ({marks})"
                ))?
                .query_map(params_from_iter(args), alert_row)?
                .collect::<Result<_, _>>()?;
            alerts.extend(found);
        }
        Ok((clocks, alerts))
    }

    /// Every order of the monitor with a stored clock (read once at start).
    pub fn monitor_order_ids(&self, monitor: &str) -> Result<Vec<String>, StoreError> {
        let conn = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        let ids = conn
            .prepare_cached("SELECT order_id FROM monitor_order_clocks WHERE monitor = ?1")?
            .query_map([monitor], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        Ok(ids)
    }

    /// Outbox entries of a monitor after `after_id`, oldest first.
    pub fn monitor_outbox(&self, monitor: &str, after_id: i64, limit: usize) -> Result<OutboxPage, StoreError> {
        let conn = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        let rows: Vec<(i64, String, String, String)> = conn
            .prepare_cached("SELECT id, notifier, kind, alert FROM monitor_outbox WHERE monitor = ?1 AND id > ?2 ORDER BY id LIMIT ?3")?
            .query_map(params![monitor, after_id, i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<Result<_, _>>()?;
        let (last_id, full) = (rows.last().map(|r| r.0), rows.len() == limit);
        let mut out = Vec::with_capacity(rows.len());
        for (id, notifier, kind, alert) in rows {
            match alert_from_json(&alert) {
                Some(alert) => out.push(OutboxRow { id, monitor: monitor.into(), notifier, kind, alert }),
                None => tracing::warn!(id, monitor, "unreadable monitor outbox entry; skipped"),
            }
        }
        Ok(OutboxPage { rows: out, last_id, full })
    }

    /// Alerts of one order, oldest first.
    pub fn order_alerts(&self, order_id: &str) -> Result<Vec<OrderAlert>, StoreError> {
        let conn = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        let alerts = conn
            .prepare_cached(&format!("SELECT {ALERT_COLUMNS} FROM order_alerts WHERE order_id = ?1 ORDER BY fired_ns, monitor, rule"))?
            .query_map([order_id], alert_row)?
            .collect::<Result<_, _>>()?;
        Ok(alerts)
    }

    /// Alerts matching `query`, newest (last fired) first.
    pub fn alerts(&self, query: &AlertQuery) -> Result<Vec<OrderAlert>, StoreError> {
        let conn = self.reader.lock().unwrap_or_else(|e| e.into_inner());
        let mut sql = format!("SELECT {ALERT_COLUMNS} FROM order_alerts WHERE 1");
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        let mut arg = |value: rusqlite::types::Value| {
            args.push(value);
            format!("?{}", args.len())
        };
        if let Some(state) = query.state {
            sql += &format!(" AND state = {}", arg(state.as_str().to_string().into()));
        }
        if let Some(rule) = &query.rule {
            sql += &format!(" AND rule = {}", arg(rule.clone().into()));
        }
        if let Some(severity) = query.severity {
            sql += &format!(" AND severity = {}", arg(severity.as_str().to_string().into()));
        }
        if let Some(since) = query.since_ns {
            sql += &format!(" AND fired_ns >= {}", arg(clamp_ns(since).into()));
        }
        if let Some(until) = query.until_ns {
            sql += &format!(" AND fired_ns <= {}", arg(clamp_ns(until).into()));
        }
        let limit = arg(i64::try_from(query.limit).unwrap_or(i64::MAX).into());
        sql += &format!(" ORDER BY fired_ns DESC, order_id, monitor, rule LIMIT {limit}");
        let alerts = conn.prepare_cached(&sql)?.query_map(params_from_iter(args), alert_row)?.collect::<Result<_, _>>()?;
        Ok(alerts)
    }

    /// Forgets orders whose clocks all finished and resolved alerts not touched since `cutoff_ns` (the store's
    /// retention): their orders' spans are gone too. Returns how many rows went.
    pub fn purge_monitor_state(&self, cutoff_ns: u64) -> Result<usize, StoreError> {
        let mut conn = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let tx = conn.transaction()?;
        let cutoff = clamp_ns(cutoff_ns);
        let mut n = tx.execute("DELETE FROM monitor_order_clocks WHERE NOT running AND updated_ns < ?1", [cutoff])?;
        n += tx.execute("DELETE FROM order_alerts WHERE state = 'resolved' AND resolved_ns < ?1", [cutoff])?;
        tx.commit()?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(order: &str, rule: &str, from_ns: u64, end_ns: u64, phase: &str) -> ClockRow {
        ClockRow { order_id: order.into(), rule: rule.into(), from_ns, end_ns, phase: phase.into() }
    }

    /// The rows grouped by order, as a monitor writes them.
    fn orders(clocks: &[ClockRow]) -> Vec<OrderClocks> {
        let mut out: Vec<OrderClocks> = Vec::new();
        for c in clocks {
            let i = match out.iter().position(|o| *o.order_id == *c.order_id) {
                Some(i) => i,
                None => {
                    out.push(OrderClocks::new(c.order_id.as_str().into()));
                    out.len() - 1
                }
            };
            out[i].push(&c.rule, c.from_ns, c.end_ns, &c.phase);
        }
        out
    }

    #[test]
    fn clocks_are_packed_and_read_back_whatever_the_names() {
        let mut o = OrderClocks::new("A-1".into());
        assert!(o.is_empty());
        o.push("crm_accepts", 1_795_165_200_123_456_789, 0, "pending");
        assert!(o.running);
        o.push("odd \"name\"\\\n", u64::MAX, 10, "met");
        o.push("заказ", 3, 4, "a phase of a later version");
        // The format byte; per clock the name's length and bytes, two times and the phase's byte
        // (or 255, its length and bytes).
        assert_eq!(o.clocks.len(), 1 + (4 + 11 + 16 + 1) + (4 + 12 + 16 + 1) + (4 + 10 + 16 + 1 + 4 + 26));
        let mut read = Vec::new();
        decode_clocks("A-1".into(), rusqlite::types::ValueRef::Blob(&o.clocks), &mut read);
        assert_eq!(
            read,
            vec![
                row("A-1", "crm_accepts", 1_795_165_200_123_456_789, 0, "pending"),
                row("A-1", "odd \"name\"\\\n", u64::MAX, 10, "met"),
                row("A-1", "заказ", 3, 4, "a phase of a later version"),
            ]
        );
        let mut done = OrderClocks::new("A-2".into());
        done.push("crm_accepts", 1, 2, "met");
        assert!(!done.running);
    }

    #[test]
    fn clocks_written_as_json_text_are_read_and_damaged_ones_skipped() {
        use rusqlite::types::ValueRef;
        let mut read = Vec::new();
        let text = r#"[["crm_accepts",1795165200123456789,0,"pending"],["production",1,2,"met"]]"#;
        decode_clocks("A-1".into(), ValueRef::Text(text.as_bytes()), &mut read);
        assert_eq!(read, vec![row("A-1", "crm_accepts", 1_795_165_200_123_456_789, 0, "pending"), row("A-1", "production", 1, 2, "met")]);
        let mut packed = OrderClocks::new("A-2".into());
        packed.push("crm_accepts", 1, 2, "met");
        let cut = &packed.clocks[..packed.clocks.len() - 1];
        for damaged in [ValueRef::Blob(cut), ValueRef::Blob(&[7, 0]), ValueRef::Text(b"[[1]]"), ValueRef::Integer(3), ValueRef::Null] {
            decode_clocks("A-2".into(), damaged, &mut read);
        }
        assert_eq!(read.len(), 2, "nothing read from damaged values: {read:?}");

        // A row an earlier version wrote as text comes back with the packed ones.
        let dir = tempfile::tempdir().unwrap();
        let store = SpanStore::open(dir.path(), &[]).unwrap();
        store.writer.lock().unwrap().execute("INSERT INTO monitor_order_clocks VALUES ('sla', 'A-1', ?1, 1, 5)", [text]).unwrap();
        let mut running = OrderClocks::new("A-3".into());
        running.push("crm_accepts", 7, 0, "firing");
        store.monitor_write(&MonitorWrite { monitor: "sla".into(), orders: vec![running], now_ns: 6, ..Default::default() }).unwrap();
        let (clocks, _) = store.monitor_running("sla").unwrap();
        assert_eq!(
            sorted(clocks),
            vec![
                row("A-1", "crm_accepts", 1_795_165_200_123_456_789, 0, "pending"),
                row("A-1", "production", 1, 2, "met"),
                row("A-3", "crm_accepts", 7, 0, "firing"),
            ]
        );
    }

    fn sorted(mut rows: Vec<ClockRow>) -> Vec<ClockRow> {
        rows.sort_by(|a, b| (&a.order_id, &a.rule).cmp(&(&b.order_id, &b.rule)));
        rows
    }

    #[test]
    fn an_order_is_one_row_holding_all_its_clocks_and_running_orders_come_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = SpanStore::open(dir.path(), &[]).unwrap();
        // 70 orders: statements of 64, 4 and 1 orders.
        let mut clocks = Vec::new();
        for i in 0..70 {
            let order = format!("A-{i:03}");
            clocks.push(row(&order, "crm_accepts", 10 + i, 20 + i, "met"));
            if i % 2 == 0 {
                clocks.push(row(&order, "production", 20 + i, 0, "pending"));
            }
        }
        clocks.reverse();
        store.monitor_write(&MonitorWrite { monitor: "sla".into(), orders: orders(&clocks), now_ns: 5, ..Default::default() }).unwrap();
        let rows: i64 = store.writer.lock().unwrap().query_row("SELECT count(*) FROM monitor_order_clocks", [], |r| r.get(0)).unwrap();
        assert_eq!(rows, 70);

        let (running, _) = store.monitor_running("sla").unwrap();
        let want: Vec<ClockRow> = clocks.iter().filter(|c| c.order_id[2..].parse::<u32>().unwrap() % 2 == 0).cloned().collect();
        assert_eq!(sorted(running), sorted(want));
        let (some, _) = store.monitor_orders("sla", &["A-001", "A-002"]).unwrap();
        assert_eq!(
            sorted(some),
            vec![
                row("A-001", "crm_accepts", 11, 21, "met"),
                row("A-002", "crm_accepts", 12, 22, "met"),
                row("A-002", "production", 22, 0, "pending")
            ]
        );
        assert_eq!(store.monitor_order_ids("sla").unwrap().len(), 70);
        assert!(store.monitor_running("other").unwrap().0.is_empty());

        // A later write replaces the order's row whole; finished orders go with the purge.
        store
            .monitor_write(&MonitorWrite {
                monitor: "sla".into(),
                orders: orders(&[row("A-002", "crm_accepts", 12, 22, "met"), row("A-002", "production", 22, 30, "met")]),
                now_ns: 6,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(store.monitor_running("sla").unwrap().0.iter().filter(|c| c.order_id == "A-002").count(), 0);
        assert_eq!(store.purge_monitor_state(7).unwrap(), 36, "35 orders never running, A-002 finished at 6");
        assert_eq!(store.monitor_order_ids("sla").unwrap().len(), 34);
    }

    #[test]
    fn a_store_with_one_row_per_rule_is_converted_at_start() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = rusqlite::Connection::open(dir.path().join("spans.db")).unwrap();
            conn.execute_batch(
                "CREATE TABLE monitor_clocks (monitor TEXT NOT NULL, order_id TEXT NOT NULL, rule TEXT NOT NULL,
                    from_ns INTEGER NOT NULL, end_ns INTEGER NOT NULL, phase TEXT NOT NULL, updated_ns INTEGER NOT NULL,
                    PRIMARY KEY (monitor, order_id, rule)) WITHOUT ROWID;
                 CREATE INDEX monitor_clocks_running ON monitor_clocks(monitor, phase) WHERE phase IN ('pending', 'firing');
                 INSERT INTO monitor_clocks VALUES ('sla', 'A-1', 'crm_accepts', 1, 2, 'met', 7),
                                                  ('sla', 'A-1', 'production', 2, 0, 'firing', 8),
                                                  ('sla', 'A-2', 'crm_accepts', 3, 4, 'met', 9);",
            )
            .unwrap();
        }
        let store = SpanStore::open(dir.path(), &[]).unwrap();
        let (running, _) = store.monitor_running("sla").unwrap();
        assert_eq!(sorted(running), vec![row("A-1", "crm_accepts", 1, 2, "met"), row("A-1", "production", 2, 0, "firing")]);
        assert_eq!(store.monitor_orders("sla", &["A-2"]).unwrap().0, vec![row("A-2", "crm_accepts", 3, 4, "met")]);
        let old: i64 = store
            .writer
            .lock()
            .unwrap()
            .query_row("SELECT count(*) FROM sqlite_master WHERE name LIKE 'monitor_clocks%'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(old, 0, "the old table and its index are gone");
        drop(store);
        // Opening again finds nothing to convert.
        let store = SpanStore::open(dir.path(), &[]).unwrap();
        assert_eq!(store.monitor_order_ids("sla").unwrap().len(), 2);
    }
}
