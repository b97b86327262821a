//! `CorrelationHold`: spans that carry a correlation value (a constructor file id) and no order,
//! kept on disk until an order claims the value, then let go of tagged; dropped at their `ttl`.
//!
//! The hold is one SQLite file per pipeline (WAL, `synchronous = NORMAL`: a process crash loses
//! nothing committed, a power loss may lose the last commits), bounded in bytes. A claim marks
//! the rows with their order in the same place, so a restart between the claim and the release
//! still releases them. A release is confirmed by [`CorrelationHold::confirm`] once the pipeline
//! has admitted it whole; rows released but not confirmed are released again after a restart
//! (at least once, as the exporter queues are). Two instances of a pipeline (a reload) share
//! the file for a while: each confirms only the rows it released, and only the first to open the
//! file in a process takes the unconfirmed rows of the last run back.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
use prost::Message;
use rusqlite::{params, Connection, OptionalExtension};
use tokio::time::Instant;

use super::buffer::{Held, ResourceCtx, ScopeCtx};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS held (
    id INTEGER PRIMARY KEY,
    trace_id BLOB NOT NULL,
    span_id BLOB NOT NULL,
    expires_ns INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    order_id TEXT,
    released INTEGER NOT NULL DEFAULT 0,
    body BLOB NOT NULL,
    UNIQUE (trace_id, span_id)
);
CREATE INDEX IF NOT EXISTS held_by_expiry ON held(expires_ns) WHERE order_id IS NULL;
CREATE INDEX IF NOT EXISTS held_claimed ON held(released) WHERE order_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS held_values (
    value TEXT NOT NULL,
    id INTEGER NOT NULL REFERENCES held(id) ON DELETE CASCADE,
    PRIMARY KEY (value, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS held_values_by_id ON held_values(id);
";

#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    #[error("cannot create the directory {path}")]
    Directory {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the correlation hold {path} cannot be opened")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
}

/// What a put did with each span.
pub struct Put {
    /// Spans written to the hold (a span held before counts again, as nothing changed).
    pub held: usize,
    /// Spans that found no room, given back.
    pub refused: Vec<Held>,
}

pub struct CorrelationHold {
    conn: Connection,
    path: PathBuf,
    ttl: Duration,
    max_bytes: u64,
    /// Held spans and their bytes, not released (recounted from the file now and then).
    spans: u64,
    bytes: u64,
    /// Wall clock at `base`, so that expiry survives a restart and follows tokio's clock.
    base: (Instant, u64),
    recounted: Instant,
    /// Claimed spans may wait to be released.
    claimed: bool,
    /// The rows released since the last [`CorrelationHold::confirm`], to be confirmed.
    unconfirmed: Vec<i64>,
    swept: Option<Instant>,
    /// This file's entry in [`OPEN_FILES`].
    file: PathBuf,
}

/// Hold files open in this process, with how many instances have each open.
static OPEN_FILES: std::sync::Mutex<Vec<(PathBuf, usize)>> = std::sync::Mutex::new(Vec::new());

impl Drop for CorrelationHold {
    fn drop(&mut self) {
        let mut open = OPEN_FILES.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = open.iter().position(|(p, _)| *p == self.file) {
            open[i].1 -= 1;
            if open[i].1 == 0 {
                open.swap_remove(i);
            }
        }
    }
}

/// How often unclaimed spans are checked for their ttl.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

impl CorrelationHold {
    pub fn open(path: &Path, ttl: Duration, max_bytes: u64) -> Result<CorrelationHold, HoldError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| HoldError::Directory { path: dir.to_path_buf(), source })?;
        }
        let open = || -> Result<Connection, rusqlite::Error> {
            let conn = Connection::open(path)?;
            conn.busy_timeout(Duration::from_secs(5))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "NORMAL")?;
            conn.pragma_update(None, "foreign_keys", true)?;
            conn.execute_batch(SCHEMA)?;
            Ok(conn)
        };
        let conn = open().map_err(|source| HoldError::Open { path: path.to_path_buf(), source })?;
        let file = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let first = {
            let mut open = OPEN_FILES.lock().unwrap_or_else(|p| p.into_inner());
            match open.iter_mut().find(|(p, _)| *p == file) {
                Some((_, n)) => {
                    *n += 1;
                    false
                }
                None => {
                    open.push((file.clone(), 1));
                    true
                }
            }
        };
        // Released before the last stop but never confirmed: they may not have reached the
        // queues, so they go again. Not when another instance of the pipeline has the file open
        // (a reload): those rows are its release, maybe still being admitted.
        if first {
            if let Err(source) = conn.execute("UPDATE held SET released = 0 WHERE released = 1", []) {
                let mut open = OPEN_FILES.lock().unwrap_or_else(|p| p.into_inner());
                open.retain(|(p, _)| *p != file);
                return Err(HoldError::Open { path: path.to_path_buf(), source });
            }
        }
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        let now = Instant::now();
        let mut hold = CorrelationHold {
            conn,
            path: path.to_path_buf(),
            ttl,
            max_bytes,
            spans: 0,
            bytes: 0,
            base: (now, wall),
            recounted: now,
            claimed: true,
            unconfirmed: Vec::new(),
            swept: None,
            file,
        };
        hold.recount(now);
        Ok(hold)
    }

    pub fn span_count(&self) -> u64 {
        self.spans
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    fn wall_ns(&self, now: Instant) -> i64 {
        let ns = self.base.1.saturating_add(now.saturating_duration_since(self.base.0).as_nanos() as u64);
        i64::try_from(ns).unwrap_or(i64::MAX)
    }

    /// Counts what the file holds (another instance of the pipeline may share it during a
    /// reload).
    fn recount(&mut self, now: Instant) {
        let counted = self.conn.query_row("SELECT count(*), total(bytes) FROM held WHERE released = 0", [], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, f64>(1)?))
        });
        match counted {
            Ok((spans, bytes)) => {
                self.spans = spans.max(0) as u64;
                self.bytes = bytes.max(0.0) as u64;
            }
            Err(error) => tracing::warn!(%error, path = %self.path.display(), "cannot count the correlation hold"),
        }
        self.recounted = now;
    }

    /// Holds spans with the correlation values they carry, until `ttl` from `now`; what finds no
    /// room (`max_bytes`) or cannot be written is given back.
    pub fn put(&mut self, spans: Vec<(Held, Vec<String>)>, now: Instant) -> Put {
        let expires = self.wall_ns(now + self.ttl);
        let mut put = Put { held: 0, refused: Vec::new() };
        let tx = match self.conn.transaction() {
            Ok(tx) => tx,
            Err(error) => {
                tracing::error!(%error, path = %self.path.display(), "cannot write the correlation hold; spans go on");
                put.refused = spans.into_iter().map(|(h, _)| h).collect();
                return put;
            }
        };
        let (mut spans_added, mut bytes_added) = (0u64, 0u64);
        let mut written = Vec::new();
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO held(trace_id, span_id, expires_ns, bytes, body) VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT(trace_id, span_id) DO NOTHING RETURNING id",
            );
            let mut value = tx.prepare_cached("INSERT OR IGNORE INTO held_values(value, id) VALUES (?1, ?2)");
            for (held, values) in spans {
                let body = encode(&held);
                let len = body.len() as u64;
                if self.bytes + bytes_added + len > self.max_bytes {
                    put.refused.push(held);
                    continue;
                }
                let (Ok(insert), Ok(value)) = (insert.as_mut(), value.as_mut()) else {
                    put.refused.push(held);
                    continue;
                };
                let id: Result<Option<i64>, _> =
                    insert.query_row(params![held.span.trace_id, held.span.span_id, expires, len as i64, body], |r| r.get(0)).optional();
                match id {
                    Ok(Some(id)) => {
                        if values.iter().all(|v| value.execute(params![v, id]).is_ok()) {
                            spans_added += 1;
                            bytes_added += len;
                            put.held += 1;
                            written.push(held);
                        } else {
                            put.refused.push(held);
                        }
                    }
                    // Held already (a journaled request run again after a restart).
                    Ok(None) => put.held += 1,
                    Err(error) => {
                        tracing::error!(%error, path = %self.path.display(), "cannot write a span to the correlation hold; it goes on");
                        put.refused.push(held);
                    }
                }
            }
        }
        match tx.commit() {
            Ok(()) => {
                self.spans += spans_added;
                self.bytes += bytes_added;
            }
            Err(error) => {
                tracing::error!(%error, path = %self.path.display(), "cannot commit the correlation hold; spans go on");
                put.held -= written.len();
                put.refused.extend(written);
            }
        }
        put
    }

    /// Binds the spans carrying `value` to `order`; returns how many there were.
    pub fn claim(&mut self, value: &str, order: &str) -> usize {
        let claimed = self.conn.execute(
            "UPDATE held SET order_id = ?2 WHERE order_id IS NULL AND id IN (SELECT id FROM held_values WHERE value = ?1)",
            params![value, order],
        );
        let n = claimed.unwrap_or_else(|error| {
            tracing::error!(%error, path = %self.path.display(), "cannot claim held spans; they stay until claimed again or expired");
            0
        });
        self.claimed |= n > 0;
        n
    }

    /// Up to `limit` claimed spans with their order, marked released, to be confirmed by
    /// [`CorrelationHold::confirm`] once admitted.
    pub fn take_claimed(&mut self, limit: usize, now: Instant) -> Vec<(String, Held)> {
        if !self.claimed {
            return Vec::new();
        }
        // Read and marked in one transaction: another instance of the pipeline (a reload) may
        // release from the same file.
        let rows = (|| -> Result<Vec<(i64, String, Vec<u8>)>, rusqlite::Error> {
            let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let rows = {
                let mut stmt =
                    tx.prepare_cached("SELECT id, order_id, body FROM held WHERE order_id IS NOT NULL AND released = 0 LIMIT ?1")?;
                let rows = stmt.query_map([limit as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?.collect::<Result<Vec<_>, _>>()?;
                let mut mark = tx.prepare_cached("UPDATE held SET released = 1 WHERE id = ?1")?;
                for (id, _, _) in &rows {
                    mark.execute([id])?;
                }
                rows
            };
            tx.commit()?;
            Ok(rows)
        })();
        let rows = match rows {
            Ok(rows) => rows,
            Err(error) => {
                tracing::error!(%error, path = %self.path.display(), "cannot take claimed spans from the correlation hold");
                return Vec::new();
            }
        };
        self.claimed = rows.len() >= limit;
        self.unconfirmed.extend(rows.iter().map(|(id, _, _)| *id));
        let mut contexts: Vec<(Arc<ResourceCtx>, Vec<Arc<ScopeCtx>>)> = Vec::new();
        let mut out = Vec::with_capacity(rows.len());
        for (_, order, body) in rows {
            let len = body.len() as u64;
            self.spans = self.spans.saturating_sub(1);
            self.bytes = self.bytes.saturating_sub(len);
            match decode(&body, &mut contexts) {
                Some(held) => out.push((order, held)),
                None => tracing::error!(path = %self.path.display(), "a held span does not decode; skipped"),
            }
        }
        if now.saturating_duration_since(self.recounted) > Duration::from_secs(5) {
            self.recount(now);
        }
        out
    }

    /// Settles the spans this instance released since the last call: with `admitted` (they are
    /// all in the queues) they are forgotten; without (some found no room), they stay in the
    /// file, released, and go again after a restart.
    pub fn confirm(&mut self, admitted: bool) {
        let ids = std::mem::take(&mut self.unconfirmed);
        if ids.is_empty() || !admitted {
            return;
        }
        let deleted = (|| -> Result<(), rusqlite::Error> {
            let tx = self.conn.transaction()?;
            {
                let mut delete = tx.prepare_cached("DELETE FROM held WHERE id = ?1 AND released = 1")?;
                for id in &ids {
                    delete.execute([id])?;
                }
            }
            tx.commit()
        })();
        if let Err(error) = deleted {
            tracing::error!(%error, path = %self.path.display(), "cannot forget released spans; they may be sent again after a restart");
        }
    }

    /// Drops the unclaimed spans whose time is up; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        if self.swept.is_some_and(|at| now.saturating_duration_since(at) < SWEEP_EVERY) {
            return 0;
        }
        self.swept = Some(now);
        let cutoff = self.wall_ns(now);
        let expired: Result<(i64, f64), rusqlite::Error> = (|| {
            let tx = self.conn.transaction()?;
            let counted =
                tx.query_row("SELECT count(*), total(bytes) FROM held WHERE order_id IS NULL AND expires_ns <= ?1", [cutoff], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
            if counted.0 > 0 {
                tx.execute("DELETE FROM held WHERE order_id IS NULL AND expires_ns <= ?1", [cutoff])?;
            }
            tx.commit()?;
            Ok(counted)
        })();
        match expired {
            Ok((n, bytes)) => {
                self.spans = self.spans.saturating_sub(n as u64);
                self.bytes = self.bytes.saturating_sub(bytes as u64);
                n as usize
            }
            Err(error) => {
                tracing::error!(%error, path = %self.path.display(), "cannot expire the correlation hold");
                0
            }
        }
    }
}

/// A held span as one OTLP `ResourceSpans` (its resource, its scope, itself).
fn encode(held: &Held) -> Vec<u8> {
    ResourceSpans {
        resource: held.resource.resource.clone(),
        schema_url: held.resource.schema_url.clone(),
        scope_spans: vec![ScopeSpans {
            scope: held.scope.scope.clone(),
            schema_url: held.scope.schema_url.clone(),
            spans: vec![held.span.clone()],
        }],
    }
    .encode_to_vec()
}

/// The span back, sharing resource and scope with spans decoded before it where they are equal
/// (so that they are grouped together again).
fn decode(body: &[u8], contexts: &mut Vec<(Arc<ResourceCtx>, Vec<Arc<ScopeCtx>>)>) -> Option<Held> {
    let mut rs = ResourceSpans::decode(body).ok()?;
    let mut ss = rs.scope_spans.pop()?;
    let span = ss.spans.pop()?;
    let resource = ResourceCtx { resource: rs.resource, schema_url: rs.schema_url };
    let scope = ScopeCtx { scope: ss.scope, schema_url: ss.schema_url };
    let ri = match contexts.iter().position(|(r, _)| **r == resource) {
        Some(i) => i,
        None => {
            contexts.push((Arc::new(resource), Vec::new()));
            contexts.len() - 1
        }
    };
    let (resource, scopes) = &mut contexts[ri];
    let scope = match scopes.iter().find(|s| ***s == scope) {
        Some(s) => s.clone(),
        None => {
            let s = Arc::new(scope);
            scopes.push(s.clone());
            s
        }
    };
    Some(Held { resource: resource.clone(), scope, span })
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::Span;

    fn held(id: u8) -> Held {
        Held {
            resource: Arc::new(ResourceCtx { resource: None, schema_url: String::new() }),
            scope: Arc::new(ScopeCtx { scope: None, schema_url: String::new() }),
            span: Span { trace_id: vec![1; 16], span_id: vec![id; 8], name: format!("save file {id}"), ..Default::default() },
        }
    }

    #[tokio::test(start_paused = true)]
    async fn held_until_claimed_or_expired_and_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hold.sqlite");
        let t0 = Instant::now();
        let mut hold = CorrelationHold::open(&path, Duration::from_secs(60), 1 << 20).unwrap();
        let put = hold.put(vec![(held(1), vec!["F-1".into()]), (held(2), vec!["F-2".into()]), (held(3), vec!["F-1".into()])], t0);
        assert_eq!((put.held, put.refused.len(), hold.span_count()), (3, 0, 3));
        assert_eq!(hold.put(vec![(held(1), vec!["F-1".into()])], t0).held, 1, "holding a span again changes nothing");
        assert_eq!(hold.span_count(), 3);
        assert_eq!(hold.claim("F-1", "A-1"), 2);
        assert_eq!(hold.claim("F-9", "A-1"), 0);
        drop(hold);

        // A restart between the claim and the release: the claim was kept.
        let mut hold = CorrelationHold::open(&path, Duration::from_secs(60), 1 << 20).unwrap();
        assert_eq!(hold.span_count(), 3);
        let taken = hold.take_claimed(100, t0);
        let mut names: Vec<(String, String)> = taken.iter().map(|(o, h)| (o.clone(), h.span.name.clone())).collect();
        names.sort();
        assert_eq!(names, vec![("A-1".to_string(), "save file 1".to_string()), ("A-1".to_string(), "save file 3".to_string())]);
        assert!(Arc::ptr_eq(&taken[0].1.resource, &taken[1].1.resource), "equal resources are shared again");
        drop(hold);

        // Released but never confirmed: released again after a restart. So is a release that
        // was not admitted whole.
        let mut hold = CorrelationHold::open(&path, Duration::from_secs(60), 1 << 20).unwrap();
        assert_eq!(hold.take_claimed(100, t0).len(), 2);
        hold.confirm(false);
        assert!(hold.take_claimed(100, t0).is_empty(), "released once in a run");
        drop(hold);
        let mut hold = CorrelationHold::open(&path, Duration::from_secs(60), 1 << 20).unwrap();
        assert_eq!(hold.take_claimed(100, t0).len(), 2);
        hold.confirm(true);
        drop(hold);
        let mut hold = CorrelationHold::open(&path, Duration::from_secs(60), 1 << 20).unwrap();
        assert!(hold.take_claimed(100, t0).is_empty(), "confirmed: gone");
        assert_eq!(hold.span_count(), 1);
        assert_eq!(hold.expire(t0 + Duration::from_secs(59)), 0);
        assert_eq!(hold.expire(t0 + Duration::from_secs(61)), 1);
        assert_eq!((hold.span_count(), hold.bytes()), (0, 0));
    }

    /// A reload: the new instance of the pipeline opens the file while the old one is still
    /// admitting its last release. The new one neither takes that release back nor confirms it;
    /// each confirms only what it released.
    #[tokio::test(start_paused = true)]
    async fn two_instances_on_one_file_settle_only_their_own_releases() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hold.sqlite");
        let t0 = Instant::now();
        let mut old = CorrelationHold::open(&path, Duration::from_secs(60), 1 << 20).unwrap();
        old.put(vec![(held(1), vec!["F-1".into()]), (held(2), vec!["F-2".into()])], t0);
        old.claim("F-1", "A-1");
        assert_eq!(old.take_claimed(100, t0).len(), 1, "the old instance's release, being admitted");

        let mut new = CorrelationHold::open(dir.path().join(".").join("hold.sqlite").as_path(), Duration::from_secs(60), 1 << 20).unwrap();
        assert!(new.take_claimed(100, t0).is_empty(), "not taken back while the old instance has it");
        new.claim("F-2", "A-2");
        assert_eq!(new.take_claimed(100, t0).len(), 1);
        new.confirm(true);
        drop(new);
        // The old instance's release is still there: its admission failed, so a restart sends it.
        old.confirm(false);
        drop(old);
        let mut after = CorrelationHold::open(&path, Duration::from_secs(60), 1 << 20).unwrap();
        let again = after.take_claimed(100, t0);
        assert_eq!(again.iter().map(|(o, h)| (o.as_str(), h.span.span_id[0])).collect::<Vec<_>>(), vec![("A-1", 1)]);
    }

    #[tokio::test(start_paused = true)]
    async fn bounded_in_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let one = encode(&held(1)).len() as u64;
        let mut hold = CorrelationHold::open(&dir.path().join("h.sqlite"), Duration::from_secs(60), one * 2).unwrap();
        let put = hold.put((1..=3).map(|i| (held(i), vec![format!("F-{i}")])).collect(), Instant::now());
        assert_eq!((put.held, put.refused.len()), (2, 1));
        assert_eq!(put.refused[0].span.span_id, vec![3; 8]);
        assert_eq!(hold.bytes(), one * 2);
    }
}
