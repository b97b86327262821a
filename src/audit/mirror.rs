//! `AuditMirror`: copies every audit record to an Elasticsearch index, so the security team can
//! search it beside the traces. The file stays the record of truth (its chain is what
//! `tracegate audit verify` checks); the mirror is a copy written in the background with
//! `create` operations keyed by the record id, so a re-sent record is never indexed twice.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::exporters::EsClient;

/// `audit.elasticsearch`: where the copy goes.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuditMirrorConfig {
    /// The id of an `elasticsearch` exporter whose connection settings are used.
    pub exporter: String,
    #[serde(default = "default_index")]
    pub index: String,
}

fn default_index() -> String {
    "tracegate-audit".into()
}

/// Records waiting for the mirror; beyond this they are counted and left to the file.
const BACKLOG: usize = 10_000;
/// Records per bulk request.
const BATCH: usize = 500;

pub struct AuditMirror {
    tx: mpsc::Sender<(String, String)>,
    /// Records not mirrored because the backlog was full (they are still in the file).
    pub skipped: AtomicU64,
}

impl AuditMirror {
    /// Starts the background writer (needs a tokio runtime).
    pub fn start(client: EsClient, index: String) -> AuditMirror {
        let (tx, rx) = mpsc::channel(BACKLOG);
        tokio::spawn(write_copies(rx, client, index));
        AuditMirror { tx, skipped: AtomicU64::new(0) }
    }

    /// Queues a written record (`id`, its JSON line) for the index.
    pub fn offer(&self, id: String, line: String) {
        if self.tx.try_send((id, line)).is_err() {
            let n = self.skipped.fetch_add(1, Ordering::Relaxed) + 1;
            if n == 1 || n % 1000 == 0 {
                tracing::warn!(skipped = n, "audit mirror backlog full; records stay in the audit file only");
            }
        }
    }
}

async fn write_copies(mut rx: mpsc::Receiver<(String, String)>, client: EsClient, index: String) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let mut body = String::new();
        for (id, line) in &batch {
            let action = serde_json::json!({"create": {"_index": index, "_id": id}});
            body.push_str(&action.to_string());
            body.push('\n');
            body.push_str(line);
            body.push('\n');
        }
        let body = client.bulk_body(std::iter::once(body.as_bytes()));
        let mut delay = Duration::from_millis(500);
        loop {
            match client.bulk(&body).await {
                Ok((reply, _)) if (200..300).contains(&reply.status) => {
                    report_items(&reply.body);
                    break;
                }
                Ok((reply, _)) if reply.status == 401 || reply.status == 403 => {
                    tracing::error!(status = reply.status, index = %index, "Elasticsearch refuses the audit mirror's credentials; records stay in the audit file only");
                    break;
                }
                Ok((reply, _)) => {
                    tracing::warn!(status = reply.status, index = %index, retry_in = ?delay, "audit mirror bulk failed; will retry")
                }
                Err(error) => {
                    tracing::warn!(%error, index = %index, retry_in = ?delay, "audit mirror cannot reach Elasticsearch; will retry")
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    }
}

/// Logs items Elasticsearch refused; 409 means the record is there already.
fn report_items(body: &[u8]) {
    let Ok(reply) = serde_json::from_slice::<serde_json::Value>(body) else { return };
    if reply["errors"] != serde_json::Value::Bool(true) {
        return;
    }
    for item in reply["items"].as_array().into_iter().flatten() {
        let result = &item["create"];
        let status = result["status"].as_u64().unwrap_or(0);
        if status >= 300 && status != 409 {
            tracing::error!(status, id = %result["_id"], error = %result["error"], "audit mirror: a record was refused by Elasticsearch (it stays in the audit file)");
        }
    }
}
