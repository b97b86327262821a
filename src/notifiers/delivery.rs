//! What every notifier shares: the per-attempt timeout, retries with exponential backoff and
//! jitter, and the dead-letter file that keeps a notice nobody received.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Notice, NotifyError};
use crate::shared::{check_writable, format_rfc3339_nanos, now_unix_nanos, Issues, RetryConfig};
use crate::telemetry::NotifierMetrics;

/// Per attempt, unless the notifier's `timeout` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

pub fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}

/// Retries start sooner than an exporter's (5s): a notice is one small message that someone is
/// waiting for, not a batch that a struggling backend should be spared.
pub fn default_retry() -> RetryConfig {
    RetryConfig { initial_interval: Duration::from_secs(1), ..RetryConfig::default() }
}

/// The delivery settings of one notifier, as its configuration holds them.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct DeliveryConfig {
    pub timeout: Duration,
    pub retry: RetryConfig,
    pub dead_letter: Option<PathBuf>,
}

impl DeliveryConfig {
    pub fn validate(&self, path: &str, issues: &mut Issues) {
        if self.timeout.is_zero() {
            issues.push(format!("{path}.timeout"), "must be greater than 0");
        }
        self.retry.validate(&format!("{path}.retry_on_failure"), issues);
        if let Some(file) = &self.dead_letter {
            check_writable(issues, format!("{path}.dead_letter"), file);
        }
    }
}

/// Runs attempts until one succeeds, the error is permanent, or the retry budget is spent; then
/// writes the dead letter.
pub struct Delivery {
    pub id: String,
    pub config: DeliveryConfig,
    pub outcomes: NotifierMetrics,
}

impl Delivery {
    pub async fn run<F, Fut>(&self, notice: &Notice, mut attempt: F) -> Result<(), NotifyError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), NotifyError>>,
    {
        let retry = &self.config.retry;
        let started = Instant::now();
        let mut interval = retry.initial_interval;
        let mut attempts = 0u32;
        let error = loop {
            attempts += 1;
            let result = match tokio::time::timeout(self.config.timeout, attempt()).await {
                Ok(result) => result,
                Err(_) => Err(NotifyError::Retryable(format!("no answer within {:?}", self.config.timeout))),
            };
            let error = match result {
                Ok(()) => {
                    self.outcomes.sent.inc();
                    tracing::debug!(notifier = %self.id, order_id = %notice.alert.order_id, rule = %notice.alert.rule, kind = ?notice.kind, attempts, "notice sent");
                    return Ok(());
                }
                Err(e @ NotifyError::Permanent(_)) => break e,
                Err(e) => e,
            };
            if !retry.enabled {
                break error;
            }
            let wait = jittered(interval, retry.randomization_factor);
            let budget = retry.max_elapsed_time;
            if !budget.is_zero() && started.elapsed() + wait > budget {
                break NotifyError::Retryable(format!("{error} (gave up after {attempts} attempts in {:?})", started.elapsed()));
            }
            self.outcomes.retry.inc();
            tracing::info!(notifier = %self.id, order_id = %notice.alert.order_id, rule = %notice.alert.rule, error = %error, retry_in = ?wait, "notice not delivered; retrying");
            tokio::time::sleep(wait).await;
            interval = interval.mul_f64(retry.multiplier).min(retry.max_interval);
        };
        self.outcomes.failed.inc();
        tracing::warn!(notifier = %self.id, order_id = %notice.alert.order_id, rule = %notice.alert.rule, kind = ?notice.kind, attempts, error = %error, "notice not delivered; giving up");
        if let Some(file) = &self.config.dead_letter {
            match append_dead_letter(file, &self.id, notice, &error, attempts) {
                Ok(()) => {
                    self.outcomes.dead_lettered.inc();
                }
                Err(e) => {
                    tracing::error!(notifier = %self.id, file = %file.display(), error = %e, "cannot write the dead letter; the notice is lost")
                }
            }
        }
        Err(error)
    }
}

/// `interval` spread by up to `factor` either way, so that notifiers retrying after one outage
/// do not knock on the receiver in step.
fn jittered(interval: Duration, factor: f64) -> Duration {
    if factor <= 0.0 {
        return interval;
    }
    let spread = 1.0 + factor * (fastrand::f64() * 2.0 - 1.0);
    interval.mul_f64(spread.max(0.0))
}

/// One JSON line: when, which notifier, why it failed, and the notice itself (the same facts a
/// webhook body carries), so that someone can send it by hand or replay it.
fn append_dead_letter(file: &Path, id: &str, notice: &Notice, error: &NotifyError, attempts: u32) -> std::io::Result<()> {
    let now = now_unix_nanos();
    let kind = match error {
        NotifyError::Retryable(_) => "retryable",
        NotifyError::Permanent(_) => "permanent",
    };
    let line = serde_json::json!({
        "time": format_rfc3339_nanos(now),
        "notifier": id,
        "error": error.to_string(),
        "error_kind": kind,
        "attempts": attempts,
        "notice": super::facts::notice_json(notice),
    });
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut text = line.to_string();
    text.push('\n');
    // One write call per line with O_APPEND: concurrent notifiers never interleave lines.
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(file)?;
    f.write_all(text.as_bytes())?;
    f.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_the_factor() {
        let base = Duration::from_secs(10);
        for _ in 0..1000 {
            let j = jittered(base, 0.5);
            assert!(j >= Duration::from_secs(5) && j <= Duration::from_secs(15), "{j:?}");
        }
        assert_eq!(jittered(base, 0.0), base);
    }
}
