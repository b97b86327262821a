//! Browser sessions in the embedded store, so that a restart does not sign everyone out: one row
//! per session, keyed by a hash of its id (never the id itself), with its end time and its state
//! as JSON (which the `auth` layer writes and reads). Expired rows are deleted when read.

use rusqlite::params;

use super::spans::{SpanStore, StoreError};

const SESSION_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS login_sessions (
    key TEXT PRIMARY KEY NOT NULL,
    expires_at INTEGER NOT NULL,
    body TEXT NOT NULL
) WITHOUT ROWID;
";

impl SpanStore {
    /// Every session whose end (Unix seconds) is after `now`: (key, JSON). Expired ones are
    /// deleted.
    pub fn sessions_load(&self, now: u64) -> Result<Vec<(String, String)>, StoreError> {
        let conn = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        conn.execute_batch(SESSION_SCHEMA)?;
        conn.execute("DELETE FROM login_sessions WHERE expires_at <= ?1", params![now as i64])?;
        let mut stmt = conn.prepare("SELECT key, body FROM login_sessions")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Writes (or replaces) one session.
    pub fn session_save(&self, key: &str, expires_at: u64, body: &str) -> Result<(), StoreError> {
        let conn = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        conn.execute_batch(SESSION_SCHEMA)?;
        conn.execute(
            "INSERT INTO login_sessions (key, expires_at, body) VALUES (?1, ?2, ?3)
             ON CONFLICT(key) DO UPDATE SET expires_at = excluded.expires_at, body = excluded.body",
            params![key, expires_at.min(i64::MAX as u64) as i64, body],
        )?;
        Ok(())
    }

    pub fn session_delete(&self, key: &str) -> Result<(), StoreError> {
        let conn = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        conn.execute_batch(SESSION_SCHEMA)?;
        conn.execute("DELETE FROM login_sessions WHERE key = ?1", params![key])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_survive_reopening_and_expire() {
        let dir = tempfile::tempdir().unwrap();
        let store = SpanStore::open(dir.path(), &[]).unwrap();
        store.session_save("k1", 100, "{\"a\":1}").unwrap();
        store.session_save("k2", 50, "{}").unwrap();
        store.session_save("k1", 200, "{\"a\":2}").unwrap();
        drop(store);
        let store = SpanStore::open(dir.path(), &[]).unwrap();
        assert_eq!(store.sessions_load(60).unwrap(), vec![("k1".to_string(), "{\"a\":2}".to_string())]);
        store.session_delete("k1").unwrap();
        assert!(store.sessions_load(0).unwrap().is_empty());
    }
}
