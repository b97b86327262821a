//! What every notifier shares: the per-attempt timeout, retries with exponential backoff and
//! jitter, and the dead-letter file that keeps a notice nobody received.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Notice, NotifyError};
use crate::shared::{
    check_writable, format_rfc3339_nanos, now_unix_nanos, on_blocking_pool, AttemptError, Backoff, GaveUp, Issues, RetryConfig,
    RetryPolicy, Stopped, Verdict,
};
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
/// writes the dead letter. The retrying is the shared [`RetryPolicy`] (as for exporters and the
/// audit mirror): each attempt gets `timeout` (never more than what is left of
/// `max_elapsed_time`), waits grow from `initial_interval` by `multiplier` up to `max_interval`
/// with jitter, and no retry starts that would wait past `max_elapsed_time`.
pub struct Delivery {
    pub id: String,
    pub config: DeliveryConfig,
    pub outcomes: NotifierMetrics,
}

impl Delivery {
    fn policy(&self) -> RetryPolicy {
        RetryPolicy { backoff: Backoff::from_config(&self.config.retry), attempt_timeout: Some(self.config.timeout) }
    }

    pub async fn run<F, Fut>(&self, notice: &Notice, mut attempt: F) -> Result<(), NotifyError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(), NotifyError>>,
    {
        let started = Instant::now();
        let attempts = AtomicU32::new(0);
        // A notice is delivered or given up on; nothing cancels it half way.
        let never = CancellationToken::new();
        let result = self
            .policy()
            .run(
                &never,
                || {
                    attempts.fetch_add(1, Ordering::Relaxed);
                    attempt()
                },
                |error| match error {
                    AttemptError::Failed(NotifyError::Permanent(_)) => Verdict::Stop,
                    // Replies' `Retry-After` is not read: the backoff decides every wait.
                    _ => Verdict::Retry { retry_after: None },
                },
                |error, wait| {
                    self.outcomes.retry.inc();
                    tracing::info!(notifier = %self.id, order_id = %notice.alert.order_id, rule = %notice.alert.rule, error = %error, retry_in = ?wait, "notice not delivered; retrying");
                },
            )
            .await;
        let attempts = attempts.into_inner();
        let error = match result {
            Ok(()) => {
                self.outcomes.sent.inc();
                tracing::debug!(notifier = %self.id, order_id = %notice.alert.order_id, rule = %notice.alert.rule, kind = ?notice.kind, attempts, "notice sent");
                return Ok(());
            }
            Err(Stopped::Permanent(error)) => error,
            Err(Stopped::GaveUp { last, why, .. }) => {
                let last = match last {
                    AttemptError::Failed(error) => error,
                    AttemptError::TimedOut(limit) => NotifyError::Retryable(format!("no answer within {limit:?}")),
                };
                match why {
                    GaveUp::Disabled => last,
                    GaveUp::Attempts(_) | GaveUp::Elapsed(_) => {
                        NotifyError::Retryable(format!("{last} (gave up after {attempts} attempts in {:?})", started.elapsed()))
                    }
                }
            }
            Err(Stopped::Cancelled) => NotifyError::Retryable("delivery cancelled".to_string()),
        };
        self.outcomes.failed.inc();
        tracing::warn!(notifier = %self.id, order_id = %notice.alert.order_id, rule = %notice.alert.rule, kind = ?notice.kind, attempts, error = %error, "notice not delivered; giving up");
        if let Some(file) = &self.config.dead_letter {
            let line = dead_letter_line(&self.id, notice, &error, attempts);
            // File system calls go to the blocking pool, never an executor thread.
            let written = {
                let file = file.clone();
                on_blocking_pool(move || append_line(&file, &line)).await.unwrap_or_else(|_| Err(std::io::Error::other("shutting down")))
            };
            match written {
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

/// One JSON line: when, which notifier, why it failed, and the notice itself (the same facts a
/// webhook body carries), so that someone can send it by hand or replay it.
fn dead_letter_line(id: &str, notice: &Notice, error: &NotifyError, attempts: u32) -> String {
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
    let mut text = line.to_string();
    text.push('\n');
    text
}

/// Appends `line` to `file`, creating its folder and the file when missing.
fn append_line(file: &Path, line: &str) -> std::io::Result<()> {
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    // One write call per line with O_APPEND: concurrent notifiers never interleave lines.
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(file)?;
    f.write_all(line.as_bytes())?;
    f.flush()
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::notifiers::NoticeKind;
    use crate::orders::OrderAlert;

    fn notice() -> Notice {
        let alert = OrderAlert::firing_for_test("A-1");
        Notice { kind: NoticeKind::Fired, alert, link: None }
    }

    fn delivery(retry: RetryConfig, dead_letter: Option<PathBuf>) -> Delivery {
        let config = DeliveryConfig { timeout: Duration::from_secs(2), retry, dead_letter };
        Delivery { id: "hook".into(), config, outcomes: NotifierMetrics::default() }
    }

    fn no_jitter() -> RetryConfig {
        RetryConfig { randomization_factor: 0.0, max_elapsed_time: Duration::from_secs(10), ..default_retry() }
    }

    /// Runs `delivery` against a script of results (its end: success, a `None`: an attempt that
    /// never answers) and returns when each attempt started, in seconds.
    async fn run(delivery: &Delivery, script: Vec<Option<Result<(), NotifyError>>>) -> (Vec<f64>, Result<(), NotifyError>) {
        let started = Instant::now();
        let times = Arc::new(Mutex::new(Vec::new()));
        let script = Mutex::new(script.into_iter());
        let notice = notice();
        let result = delivery
            .run(&notice, || {
                times.lock().unwrap().push(started.elapsed().as_secs_f64());
                let next = script.lock().unwrap().next();
                async move {
                    match next {
                        None => Ok(()),
                        Some(Some(result)) => result,
                        Some(None) => std::future::pending().await,
                    }
                }
            })
            .await;
        let times = times.lock().unwrap().clone();
        (times, result)
    }

    fn down() -> Option<Result<(), NotifyError>> {
        Some(Err(NotifyError::Retryable("answered 503".into())))
    }

    #[tokio::test(start_paused = true)]
    async fn retries_back_off_from_one_second_and_a_hung_attempt_times_out() {
        let d = delivery(no_jitter(), None);
        // 503, hang (2 s timeout), 503, success; waits 1 s, 1.5 s, 2.25 s.
        let (times, result) = run(&d, vec![down(), None, down()]).await;
        result.unwrap();
        assert_eq!(times, vec![0.0, 1.0, 4.5, 6.75]);
        assert_eq!((d.outcomes.sent.get(), d.outcomes.retry.get(), d.outcomes.failed.get()), (1, 3, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_at_max_elapsed_time_and_writes_the_dead_letter() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("dead.jsonl");
        let d = delivery(no_jitter(), Some(file.clone()));
        let (times, result) = run(&d, (0..100).map(|_| down()).collect()).await;
        // 0, 1, 2.5, 4.75, 8.125; the next would start at 13.2 s > 10 s.
        assert_eq!(times, vec![0.0, 1.0, 2.5, 4.75, 8.125]);
        let error = result.unwrap_err();
        assert!(matches!(&error, NotifyError::Retryable(m) if m.contains("503") && m.contains("gave up after 5 attempts")), "{error:?}");
        let line: serde_json::Value = serde_json::from_str(std::fs::read_to_string(&file).unwrap().trim()).unwrap();
        assert_eq!(line["attempts"], 5);
        assert_eq!(line["error_kind"], "retryable");
        assert_eq!((d.outcomes.retry.get(), d.outcomes.failed.get(), d.outcomes.dead_lettered.get()), (4, 1, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_and_disabled_retry_make_one_attempt() {
        let d = delivery(no_jitter(), None);
        let (times, result) = run(&d, vec![Some(Err(NotifyError::Permanent("answered 400".into())))]).await;
        assert_eq!(times.len(), 1);
        assert!(matches!(result, Err(NotifyError::Permanent(ref m)) if m == "answered 400"), "{result:?}");

        let d = delivery(RetryConfig { enabled: false, ..no_jitter() }, None);
        let (times, result) = run(&d, vec![None]).await;
        assert_eq!(times, vec![0.0]);
        assert!(matches!(result, Err(NotifyError::Retryable(ref m)) if m == "no answer within 2s"), "{result:?}");
        assert_eq!((d.outcomes.retry.get(), d.outcomes.failed.get()), (0, 1));
    }
}
