//! Settings every exporter shares: its queue, its batcher and its retry policy. Key names follow
//! the OpenTelemetry Collector's exporterhelper.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Issues;

/// The bounded queue in front of an exporter, sized in spans.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Spans the queue holds, including those being sent.
    pub queue_size: usize,
    /// Encoded bytes the queue holds (spans being sent included), besides `queue_size`: a queue
    /// of large spans is bounded by memory, not only by count. Unset: no byte bound.
    pub max_bytes: Option<super::ByteSize>,
    /// Batches sent concurrently.
    pub num_consumers: usize,
    /// `refuse`: a full queue refuses the request (503 / UNAVAILABLE) so the client retries;
    /// `drop`: this exporter is best-effort, a full queue drops its copy and counts it.
    pub when_full: WhenFull,
    /// A directory: the queue becomes a log on disk there, and a request is acknowledged only
    /// once its spans are written (see `sync`). What was acknowledged survives a crash or
    /// `kill -9` and is sent after the next start.
    pub storage: Option<std::path::PathBuf>,
    /// `always` (default): `fsync` before acknowledging, one for many concurrent requests;
    /// `never`: written to the kernel only (survives the process, not the machine).
    pub sync: SyncPolicy,
    /// Size of one file of the disk log; a file goes once all its batches are delivered.
    pub segment_size: super::ByteSize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            queue_size: 200_000,
            max_bytes: None,
            num_consumers: 4,
            when_full: WhenFull::Refuse,
            storage: None,
            sync: SyncPolicy::Always,
            segment_size: super::ByteSize(64 << 20),
        }
    }
}

/// When records of a disk-backed queue are forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncPolicy {
    /// `fsync` before an append is answered: an acknowledged request survives power loss.
    Always,
    /// Written to the kernel before the answer, `fsync`ed when a file is closed: survives
    /// `kill -9` and crashes of the process, not of the machine.
    Never,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WhenFull {
    Refuse,
    Drop,
}

/// How queued spans are grouped into one export call.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Send once this many spans are waiting (a single larger request is sent whole).
    #[serde(alias = "send_batch_size")]
    pub max_spans: usize,
    /// Send what is waiting after this long, even if the batch is not full.
    #[serde(with = "humantime_serde", alias = "timeout")]
    pub max_wait: Duration,
    /// Largest request body (`otlp` only; default 4MiB, the usual gRPC receive limit). Larger
    /// requests are split.
    pub max_bytes: Option<super::ByteSize>,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig { max_spans: 8192, max_wait: Duration::from_millis(200), max_bytes: None }
    }
}

/// Exponential backoff with jitter, as the Collector's `retry_on_failure`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    pub enabled: bool,
    #[serde(with = "humantime_serde")]
    pub initial_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub max_interval: Duration,
    /// Give up on a batch after this long; `0s` retries for ever.
    #[serde(with = "humantime_serde", alias = "max_elapsed")]
    pub max_elapsed_time: Duration,
    pub multiplier: f64,
    pub randomization_factor: f64,
}

impl RetryConfig {
    /// The checks every `retry_on_failure` gets (exporters, the audit mirror, notifiers); `path`
    /// is where it stands in the file.
    pub fn validate(&self, path: &str, issues: &mut Issues) {
        if !(self.multiplier >= 1.0 && self.multiplier.is_finite()) {
            issues.push(format!("{path}.multiplier"), format!("must be at least 1.0 (a delay never shrinks), got {}", self.multiplier));
        }
        if !(0.0..=1.0).contains(&self.randomization_factor) {
            issues.push(format!("{path}.randomization_factor"), format!("must be between 0 and 1, got {}", self.randomization_factor));
        }
        if !self.enabled {
            return;
        }
        if self.initial_interval.is_zero() {
            issues.push(format!("{path}.initial_interval"), "must be greater than 0 (0 would retry at once, in a busy loop)");
        } else if self.max_interval < self.initial_interval {
            issues.push(
                format!("{path}.max_interval"),
                format!(
                    "must be at least initial_interval ({} < {})",
                    humantime::format_duration(self.max_interval),
                    humantime::format_duration(self.initial_interval)
                ),
            );
        }
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            enabled: true,
            initial_interval: Duration::from_secs(5),
            max_interval: Duration::from_secs(30),
            max_elapsed_time: Duration::from_secs(300),
            multiplier: 1.5,
            randomization_factor: 0.5,
        }
    }
}

/// The settings as one group, validated together.
pub fn validate_common(path: &str, queue: &QueueConfig, batch: &BatchConfig, retry: &RetryConfig, issues: &mut Issues) {
    if queue.queue_size == 0 {
        issues.push(format!("{path}.sending_queue.queue_size"), "must be at least 1");
    }
    if queue.num_consumers == 0 {
        issues.push(format!("{path}.sending_queue.num_consumers"), "must be at least 1");
    }
    if let Some(dir) = &queue.storage {
        super::check_writable(issues, format!("{path}.sending_queue.storage"), dir);
    }
    if queue.max_bytes.is_some_and(|b| b.0 < 64 * 1024) {
        issues.push(format!("{path}.sending_queue.max_bytes"), "must be at least 64KiB");
    }
    if queue.segment_size.0 < 64 * 1024 {
        issues.push(format!("{path}.sending_queue.segment_size"), "must be at least 64KiB");
    }
    if batch.max_bytes.is_some_and(|b| b.0 < 1024) {
        issues.push(format!("{path}.batch.max_bytes"), "must be at least 1KiB");
    }
    if batch.max_spans == 0 {
        issues.push(format!("{path}.batch.max_spans"), "must be at least 1");
    }
    retry.validate(&format!("{path}.retry_on_failure"), issues);
}
