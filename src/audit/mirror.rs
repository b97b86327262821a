//! `AuditMirror`: copies every audit record to an Elasticsearch index, so the security team can
//! search it beside the traces. The file stays the record of truth (its chain is what
//! `tracegate audit verify` checks); the mirror is a copy written in the background with
//! `create` operations keyed by the record id, so a re-sent record is never indexed twice.
//!
//! A failed bulk request is retried with the shared `Backoff` (`retry_on_failure`, bounded by its
//! `max_elapsed_time`), each attempt with the exporter's `timeout`. What the mirror gives up on
//! (retries exhausted, credentials refused, still unsent when the gateway stops) is never lost:
//! it is in the audit file; it is counted and logged with the ids of its first and last record.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::exporters::EsClient;
use crate::shared::{AttemptError, Backoff, RetryConfig, RetryPolicy, Stopped, Verdict};

/// `audit.elasticsearch`: where the copy goes.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuditMirrorConfig {
    /// The id of an `elasticsearch` exporter whose connection settings are used.
    pub exporter: String,
    #[serde(default = "default_index")]
    pub index: String,
    /// How a failed bulk request is retried (the keys of an exporter's `retry_on_failure`);
    /// when absent: from 500ms, doubling up to 30s, for at most 5 minutes per batch. When given,
    /// the keys left out take the exporters' defaults (`RetryConfig::default`), as in an
    /// exporter's `retry_on_failure`.
    #[serde(default = "default_retry")]
    pub retry_on_failure: RetryConfig,
}

fn default_index() -> String {
    "tracegate-audit".into()
}

fn default_retry() -> RetryConfig {
    RetryConfig {
        enabled: true,
        initial_interval: Duration::from_millis(500),
        max_interval: Duration::from_secs(30),
        max_elapsed_time: Duration::from_secs(300),
        multiplier: 2.0,
        randomization_factor: 0.5,
    }
}

/// Records waiting for the mirror; beyond this they are counted and left to the file.
const BACKLOG: usize = 10_000;
/// Records per bulk request.
const BATCH: usize = 500;

/// What the mirror did not copy; every such record is in the audit file.
#[derive(Debug, Default)]
pub struct MirrorCounts {
    /// Not queued because the backlog was full (or the mirror was stopping).
    pub skipped: AtomicU64,
    /// Queued, then given up on: retries exhausted, credentials refused, or still unsent when
    /// the gateway stopped.
    pub given_up: AtomicU64,
}

pub struct AuditMirror {
    tx: mpsc::Sender<(String, String)>,
    pub counts: Arc<MirrorCounts>,
    /// No more records: send what is queued, then end.
    closing: CancellationToken,
    /// Stop at once: what is left is given up on (counted and logged).
    abort: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl AuditMirror {
    /// Starts the background writer (needs a tokio runtime); `retry` as `audit.elasticsearch.
    /// retry_on_failure`, each attempt bounded by the client's timeout.
    pub fn start(client: EsClient, index: String, retry: &RetryConfig) -> AuditMirror {
        let (tx, rx) = mpsc::channel(BACKLOG);
        let counts = Arc::new(MirrorCounts::default());
        let (closing, abort) = (CancellationToken::new(), CancellationToken::new());
        let policy = RetryPolicy { backoff: Backoff::from_config(retry), attempt_timeout: Some(client.timeout()) };
        let writer = Writer { client, index, policy, counts: counts.clone(), closing: closing.clone(), abort: abort.clone() };
        let task = tokio::spawn(writer.run(rx));
        AuditMirror { tx, counts, closing, abort, task: Mutex::new(Some(task)) }
    }

    /// Queues a written record (`id`, its JSON line) for the index.
    pub fn offer(&self, id: String, line: String) {
        if self.closing.is_cancelled() || self.tx.try_send((id, line)).is_err() {
            let n = self.counts.skipped.fetch_add(1, Ordering::Relaxed) + 1;
            if n == 1 || n.is_multiple_of(1000) {
                tracing::warn!(skipped = n, "audit mirror backlog full or stopped; records stay in the audit file only");
            }
        }
    }

    /// Stops the mirror: what was queued before is still sent, for at most `grace`; what is
    /// left then is counted and logged (it stays in the audit file). Call after the last record
    /// (the shutdown checkpoint) was written. Later calls return at once.
    pub async fn stop(&self, grace: Duration) {
        self.closing.cancel();
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(mut task) = task else { return };
        if tokio::time::timeout(grace, &mut task).await.is_err() {
            self.abort.cancel();
            let _ = task.await;
        }
        let (skipped, given_up) = (self.counts.skipped.load(Ordering::Relaxed), self.counts.given_up.load(Ordering::Relaxed));
        if skipped + given_up > 0 {
            tracing::warn!(
                skipped,
                given_up,
                "audit mirror stopped; {} records of this run were not copied to Elasticsearch (they are in the audit file)",
                skipped + given_up
            );
        }
    }
}

impl Drop for AuditMirror {
    fn drop(&mut self) {
        // Without `stop` (a gateway dropped without shutting down) the writer ends too.
        self.abort.cancel();
    }
}

/// Why one bulk request of the mirror failed.
#[derive(Debug, thiserror::Error)]
enum MirrorError {
    #[error("cannot reach Elasticsearch: {0}")]
    Unreachable(String),
    #[error("Elasticsearch answered HTTP {status}")]
    Status { status: u16, retry_after: Option<Duration> },
}

struct Writer {
    client: EsClient,
    index: String,
    policy: RetryPolicy,
    counts: Arc<MirrorCounts>,
    closing: CancellationToken,
    abort: CancellationToken,
}

impl Writer {
    async fn run(self, mut rx: mpsc::Receiver<(String, String)>) {
        loop {
            let first = tokio::select! {
                biased;
                _ = self.abort.cancelled() => None,
                next = rx.recv() => next,
                // Closing and nothing queued: done.
                _ = self.closing.cancelled() => rx.try_recv().ok(),
            };
            let Some(first) = first else { break };
            let mut batch = vec![first];
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            if !self.send(&batch).await {
                break;
            }
        }
        // Stopped at once: what is still queued is given up on.
        rx.close();
        let mut left = Vec::new();
        while let Ok(record) = rx.try_recv() {
            left.push(record);
        }
        if !left.is_empty() {
            self.give_up(&left, "the gateway stopped before they were sent");
        }
    }

    /// Sends one batch with retries; `false` when the mirror was stopped meanwhile.
    async fn send(&self, batch: &[(String, String)]) -> bool {
        let mut body = String::new();
        for (id, line) in batch {
            let action = serde_json::json!({"create": {"_index": self.index, "_id": id}});
            body.push_str(&action.to_string());
            body.push('\n');
            body.push_str(line);
            body.push('\n');
        }
        let body = self.client.bulk_body(std::iter::once(body.as_bytes()));
        let result = self
            .policy
            .run(
                &self.abort,
                || async {
                    match self.client.bulk(&body).await {
                        Ok((reply, _)) if (200..300).contains(&reply.status) => Ok(reply),
                        Ok((reply, _)) => Err(MirrorError::Status { status: reply.status, retry_after: reply.retry_hint() }),
                        Err(error) => Err(MirrorError::Unreachable(error.to_string())),
                    }
                },
                |error| match error {
                    AttemptError::Failed(MirrorError::Status { status: 401 | 403, .. }) => Verdict::Stop,
                    AttemptError::Failed(MirrorError::Status { retry_after, .. }) => Verdict::Retry { retry_after: *retry_after },
                    _ => Verdict::Retry { retry_after: None },
                },
                |error, delay| tracing::warn!(%error, index = %self.index, retry_in = ?delay, "audit mirror bulk request failed; will retry"),
            )
            .await;
        match result {
            Ok(reply) => {
                report_items(&reply.body);
                true
            }
            Err(Stopped::Permanent(error)) => {
                tracing::error!(%error, index = %self.index, "Elasticsearch refuses the audit mirror's credentials");
                self.give_up(batch, "Elasticsearch refused the credentials");
                true
            }
            Err(Stopped::GaveUp { last, why, .. }) => {
                tracing::error!(error = %last, index = %self.index, "audit mirror: {why}");
                self.give_up(batch, "retries exhausted (audit.elasticsearch.retry_on_failure)");
                true
            }
            Err(Stopped::Cancelled) => {
                self.give_up(batch, "the gateway stopped before they were sent");
                false
            }
        }
    }

    fn give_up(&self, records: &[(String, String)], why: &str) {
        let n = records.len() as u64;
        let total = self.counts.given_up.fetch_add(n, Ordering::Relaxed) + n;
        let first = records.first().map(|r| r.0.as_str()).unwrap_or_default();
        let last = records.last().map(|r| r.0.as_str()).unwrap_or_default();
        tracing::error!(
            records = n,
            first_id = first,
            last_id = last,
            given_up_total = total,
            index = %self.index,
            "audit mirror gave up on {n} records ({why}); they stay in the audit file"
        );
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

#[cfg(test)]
mod tests {
    //! The mirror against a stub Elasticsearch that fails on demand (fault injection): bounded
    //! retry, what it gives up on counted, and a stop that sends what is queued.

    use std::sync::atomic::AtomicU16;
    use std::time::Instant;

    use super::*;

    /// A `_bulk` endpoint answering `status` (201 items when 200); counts the records it stored.
    struct Stub {
        url: String,
        status: Arc<AtomicU16>,
        requests: Arc<AtomicU64>,
        stored: Arc<AtomicU64>,
        server: JoinHandle<()>,
    }

    impl Drop for Stub {
        fn drop(&mut self) {
            self.server.abort();
        }
    }

    async fn stub(status: u16) -> Stub {
        let (status, requests, stored) = (Arc::new(AtomicU16::new(status)), Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (s, r, d) = (status.clone(), requests.clone(), stored.clone());
        let app = axum::Router::new().route(
            "/_bulk",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let (s, r, d) = (s.clone(), r.clone(), d.clone());
                async move {
                    r.fetch_add(1, Ordering::Relaxed);
                    let status = s.load(Ordering::Relaxed);
                    if status != 200 {
                        return (axum::http::StatusCode::from_u16(status).unwrap(), String::from("{}"));
                    }
                    let mut text = Vec::new();
                    if headers.get("content-encoding").is_some() {
                        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&body[..]), &mut text).unwrap();
                    } else {
                        text = body.to_vec();
                    }
                    let n = String::from_utf8_lossy(&text).lines().count() / 2;
                    d.fetch_add(n as u64, Ordering::Relaxed);
                    let items = vec![r#"{"create":{"status":201}}"#; n].join(",");
                    (axum::http::StatusCode::OK, format!(r#"{{"errors":false,"items":[{items}]}}"#))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Stub { url, status, requests, stored, server }
    }

    fn mirror(url: &str, max_elapsed: Duration) -> AuditMirror {
        let config: crate::exporters::ElasticsearchExporterConfig =
            serde_yaml_ng::from_str(&format!("endpoints: [\"{url}\"]\ntimeout: 2s\n")).unwrap();
        let retry = RetryConfig {
            initial_interval: Duration::from_millis(20),
            max_interval: Duration::from_millis(40),
            max_elapsed_time: max_elapsed,
            randomization_factor: 0.0,
            ..default_retry()
        };
        AuditMirror::start(EsClient::new(&config).unwrap(), "audit".into(), &retry)
    }

    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        let started = Instant::now();
        while !done() {
            assert!(started.elapsed() < Duration::from_secs(10), "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn retries_are_bounded_and_what_is_given_up_is_counted() {
        let es = stub(503).await;
        let m = mirror(&es.url, Duration::from_millis(300));
        for i in 0..3 {
            m.offer(format!("r{i}"), format!(r#"{{"id":"r{i}"}}"#));
        }
        until("the mirror to give up", || m.counts.given_up.load(Ordering::Relaxed) == 3).await;
        let tried = es.requests.load(Ordering::Relaxed);
        assert!((3..=20).contains(&tried), "retried with backoff, a bounded number of times: {tried}");
        // The mirror goes on with later records once Elasticsearch is back.
        es.status.store(200, Ordering::Relaxed);
        m.offer("r3".into(), r#"{"id":"r3"}"#.into());
        until("the next record to be stored", || es.stored.load(Ordering::Relaxed) == 1).await;
        m.stop(Duration::from_secs(2)).await;
        assert_eq!(m.counts.given_up.load(Ordering::Relaxed), 3);
        assert_eq!(m.counts.skipped.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn refused_credentials_are_not_retried() {
        let es = stub(401).await;
        let m = mirror(&es.url, Duration::from_secs(60));
        m.offer("a".into(), "{}".into());
        until("the mirror to give up", || m.counts.given_up.load(Ordering::Relaxed) == 1).await;
        assert_eq!(es.requests.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn stop_sends_what_is_queued() {
        let es = stub(200).await;
        let m = mirror(&es.url, Duration::from_secs(60));
        for i in 0..1200 {
            m.offer(format!("r{i}"), "{}".into());
        }
        m.stop(Duration::from_secs(5)).await;
        assert_eq!(es.stored.load(Ordering::Relaxed), 1200, "every record offered before the stop");
        // Records offered after the stop are counted (they are in the file only).
        m.offer("late".into(), "{}".into());
        assert_eq!(m.counts.skipped.load(Ordering::Relaxed), 1);
        assert_eq!(m.counts.given_up.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn stop_ends_an_endless_retry_within_its_grace() {
        let es = stub(503).await;
        // No time limit: only the stop ends it.
        let m = mirror(&es.url, Duration::ZERO);
        for i in 0..3 {
            m.offer(format!("r{i}"), "{}".into());
        }
        until("a few attempts", || es.requests.load(Ordering::Relaxed) >= 2).await;
        let started = Instant::now();
        m.stop(Duration::from_millis(300)).await;
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(2), "stopped after its grace: {took:?}");
        assert_eq!(m.counts.given_up.load(Ordering::Relaxed), 3, "counted, not silently lost");
        let after = es.requests.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(es.requests.load(Ordering::Relaxed), after, "no attempt after the stop");
    }
}
