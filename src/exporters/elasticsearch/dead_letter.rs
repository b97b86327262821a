//! The dead-letter file: documents Elasticsearch refused for good, one JSON line each with the
//! error, so nothing is dropped with only a log line to show for it. Lines can be fixed and
//! replayed with `_bulk`.

use std::path::PathBuf;

use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use super::encoder::BulkItem;
use crate::shared::format_rfc3339_nanos;

pub struct DeadLetter {
    path: PathBuf,
    /// One writer at a time, so lines never interleave.
    lock: Mutex<()>,
}

impl DeadLetter {
    pub fn new(path: PathBuf) -> DeadLetter {
        DeadLetter { path, lock: Mutex::new(()) }
    }

    /// Appends `{"time", "index", "id", "status", "error", "document"}` per record.
    pub async fn write(&self, records: &[(BulkItem, u16, serde_json::Value)]) -> std::io::Result<()> {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
        let mut text = Vec::new();
        for (item, status, error) in records {
            let document: serde_json::Value = serde_json::from_slice(item.document())
                .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(item.document()).into_owned()));
            let line = serde_json::json!({
                "time": format_rfc3339_nanos(now),
                "index": &*item.index,
                "id": item.id,
                "status": status,
                "error": error,
                "document": document,
            });
            serde_json::to_writer(&mut text, &line)?;
            text.push(b'\n');
        }
        let _guard = self.lock.lock().await;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir).await?;
        }
        let mut file = tokio::fs::OpenOptions::new().create(true).append(true).open(&self.path).await?;
        file.write_all(&text).await?;
        file.sync_data().await
    }
}
