//! Sessions: an opaque random id in the browser's cookie, and everything else here. The table is
//! bounded (`max_sessions`); each session ends at the earliest of its `session_lifetime`, its
//! provider tokens' lifetime and a refusal by the provider. Only a hash of the id is kept, in
//! memory and in the persistent store, so a copy of the store opens no session.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::auth::principal::{Principal, Role};
use crate::store::StoreError;

/// One signed-in person.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub issuer: String,
    pub subject: String,
    pub name: Option<String>,
    pub roles: BTreeSet<Role>,
    /// For RP-initiated logout (`id_token_hint`).
    pub id_token: Option<String>,
    pub access_token: String,
    pub refresh_token: Option<String>,
    /// Unix seconds: the access token's end, when the provider said it.
    pub access_expires_at: Option<u64>,
    pub created_at: u64,
    /// Unix seconds; the session is over then, whatever happens.
    pub expires_at: u64,
    /// Unix seconds of the last confirmation by the provider.
    pub checked_at: u64,
    /// Sent in `X-CSRF-Token` (or the `csrf` form field) by pages that cannot rely on `Origin`.
    pub csrf: String,
}

impl Session {
    pub fn principal(&self) -> Principal {
        Principal {
            issuer: self.issuer.clone(),
            subject: self.subject.clone(),
            name: self.name.clone(),
            roles: self.roles.clone(),
            service: None,
            anonymous: false,
        }
    }
}

/// Where sessions outlive a restart (the embedded store). Calls are blocking.
pub trait SessionPersistence: Send + Sync {
    /// Every session not yet expired at `now` (Unix seconds): (id hash, JSON).
    fn load(&self, now: u64) -> Result<Vec<(String, String)>, StoreError>;
    fn save(&self, key: &str, expires_at: u64, body: &str) -> Result<(), StoreError>;
    fn delete(&self, key: &str) -> Result<(), StoreError>;
}

/// The embedded store keeps sessions across restarts.
impl SessionPersistence for crate::store::SpanStore {
    fn load(&self, now: u64) -> Result<Vec<(String, String)>, StoreError> {
        self.sessions_load(now)
    }
    fn save(&self, key: &str, expires_at: u64, body: &str) -> Result<(), StoreError> {
        self.session_save(key, expires_at, body)
    }
    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.session_delete(key)
    }
}

/// The table key of a session id: SHA-256, base64url.
pub fn session_key(id: &str) -> String {
    use sha2::Digest;
    URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(id.as_bytes()))
}

/// A session as the table holds it: its state, and a lock held while it is rechecked so that
/// concurrent requests make one call to the provider.
pub struct Entry {
    pub session: Mutex<Session>,
    pub recheck: tokio::sync::Mutex<()>,
}

/// The bounded table of sessions, written through to the persistent store if there is one.
pub struct SessionTable {
    entries: Mutex<HashMap<String, Arc<Entry>>>,
    max: usize,
    persistence: Option<Arc<dyn SessionPersistence>>,
}

impl SessionTable {
    pub fn new(max: usize, persistence: Option<Arc<dyn SessionPersistence>>, now: u64) -> SessionTable {
        let table = SessionTable { entries: Mutex::new(HashMap::new()), max, persistence };
        if let Some(store) = &table.persistence {
            match store.load(now) {
                Ok(rows) => {
                    let mut entries = table.lock();
                    for (key, body) in rows {
                        match serde_json::from_str::<Session>(&body) {
                            Ok(session) => {
                                entries.insert(key, Arc::new(Entry { session: Mutex::new(session), recheck: Default::default() }));
                            }
                            Err(error) => tracing::warn!(%error, "a stored session cannot be read; it is dropped"),
                        }
                    }
                    tracing::info!(sessions = entries.len(), "browser sessions restored from the embedded store");
                }
                Err(error) => {
                    tracing::warn!(error = %crate::shared::error_chain(&error), "stored browser sessions cannot be read; everyone signs in again")
                }
            }
        }
        table
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Entry>>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn get(&self, key: &str) -> Option<Arc<Entry>> {
        self.lock().get(key).cloned()
    }

    /// Adds a session; when the table is full, expired sessions go first, then the one closest
    /// to its end. Returns the sessions pushed out (for the audit).
    pub async fn insert(&self, key: String, session: Session, now: u64) -> Vec<Session> {
        let mut pushed_out = Vec::new();
        let mut gone = Vec::new();
        {
            let mut entries = self.lock();
            if entries.len() >= self.max {
                entries.retain(|k, e| {
                    let alive = e.session.lock().unwrap_or_else(|p| p.into_inner()).expires_at > now;
                    if !alive {
                        gone.push(k.clone());
                    }
                    alive
                });
            }
            while entries.len() >= self.max {
                let Some(oldest) = entries
                    .iter()
                    .min_by_key(|(_, e)| e.session.lock().unwrap_or_else(|p| p.into_inner()).expires_at)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                if let Some(entry) = entries.remove(&oldest) {
                    pushed_out.push(entry.session.lock().unwrap_or_else(|p| p.into_inner()).clone());
                }
                gone.push(oldest);
            }
            entries.insert(key.clone(), Arc::new(Entry { session: Mutex::new(session.clone()), recheck: Default::default() }));
        }
        for key in gone {
            self.forget(&key).await;
        }
        self.persist(&key, &session).await;
        pushed_out
    }

    /// Writes a session's new state through to the store.
    pub async fn persist(&self, key: &str, session: &Session) {
        let Some(store) = self.persistence.clone() else { return };
        let (key, expires_at) = (key.to_string(), session.expires_at);
        let body = match serde_json::to_string(session) {
            Ok(body) => body,
            Err(error) => return tracing::error!(%error, "a session cannot be serialized"),
        };
        match tokio::task::spawn_blocking(move || store.save(&key, expires_at, &body)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(error = %crate::shared::error_chain(&error), "a browser session cannot be stored; it ends when tracegate restarts")
            }
            Err(error) => tracing::warn!(%error, "storing a browser session failed"),
        }
    }

    /// Ends a session: gone from memory and from the store. Returns it if it was there.
    pub async fn remove(&self, key: &str) -> Option<Session> {
        let entry = self.lock().remove(key);
        self.forget(key).await;
        entry.map(|e| e.session.lock().unwrap_or_else(|p| p.into_inner()).clone())
    }

    async fn forget(&self, key: &str) {
        let Some(store) = self.persistence.clone() else { return };
        let key = key.to_string();
        match tokio::task::spawn_blocking(move || store.delete(&key)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(error = %crate::shared::error_chain(&error), "an ended browser session cannot be removed from the store")
            }
            Err(error) => tracing::warn!(%error, "removing a browser session failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(expires_at: u64) -> Session {
        Session {
            issuer: "https://idp.test".into(),
            subject: format!("s{expires_at}"),
            name: None,
            roles: BTreeSet::from([Role::Support]),
            id_token: None,
            access_token: "at".into(),
            refresh_token: None,
            access_expires_at: None,
            created_at: 0,
            expires_at,
            checked_at: 0,
            csrf: "c".into(),
        }
    }

    #[derive(Default)]
    struct Memory(Mutex<HashMap<String, (u64, String)>>);
    impl SessionPersistence for Memory {
        fn load(&self, now: u64) -> Result<Vec<(String, String)>, StoreError> {
            Ok(self.0.lock().unwrap().iter().filter(|(_, (e, _))| *e > now).map(|(k, (_, b))| (k.clone(), b.clone())).collect())
        }
        fn save(&self, key: &str, expires_at: u64, body: &str) -> Result<(), StoreError> {
            self.0.lock().unwrap().insert(key.into(), (expires_at, body.into()));
            Ok(())
        }
        fn delete(&self, key: &str) -> Result<(), StoreError> {
            self.0.lock().unwrap().remove(key);
            Ok(())
        }
    }

    #[tokio::test]
    async fn bounded_the_nearest_end_goes_first_and_the_store_follows() {
        let store = Arc::new(Memory::default());
        let table = SessionTable::new(2, Some(store.clone()), 0);
        assert!(table.insert("a".into(), session(300), 10).await.is_empty());
        assert!(table.insert("b".into(), session(200), 10).await.is_empty());
        let out = table.insert("c".into(), session(400), 10).await;
        assert_eq!(out.iter().map(|s| s.expires_at).collect::<Vec<_>>(), [200]);
        assert_eq!(table.len(), 2);
        assert!(table.get("b").is_none());
        assert_eq!(store.0.lock().unwrap().len(), 2);

        // A restart: what the store holds comes back; what expired does not.
        let again = SessionTable::new(2, Some(store.clone()), 350);
        assert_eq!(again.len(), 1);
        assert!(again.get("c").is_some());
        assert!(again.remove("c").await.is_some());
        assert!(store.0.lock().unwrap().get("c").is_none());
        assert_ne!(session_key("id"), "id");
    }
}
