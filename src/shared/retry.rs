//! Retry and timeout, once: `Backoff` (when to try again and when to give up) and `RetryPolicy`
//! (a backoff plus a timeout for each attempt). The exporter runner, the Elasticsearch exporter's
//! per-item retry and the audit mirror all retry through these, so every loop has the same rules:
//!
//! - each attempt gets the configured timeout, never one derived from another loop's settings;
//! - the delay starts at `initial_interval`, grows by `multiplier` up to `max_interval`, and is
//!   spread by ±`jitter`; a server's hint (`Retry-After`, gRPC `RetryInfo`) replaces it;
//! - the whole retry is bounded by `max_elapsed` (an attempt never runs past it, and no retry is
//!   started that would wait past it) and, when set, by `max_attempts`.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::RetryConfig;

/// When to try again, and when to give up.
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    pub initial_interval: Duration,
    pub multiplier: f64,
    pub max_interval: Duration,
    /// Give up once this long has passed since the first attempt; zero: never.
    pub max_elapsed: Duration,
    /// Each delay is spread by ±this fraction (0 to 1).
    pub jitter: f64,
    /// Attempts in all, the first included; `None`: no limit but `max_elapsed`.
    pub max_attempts: Option<u32>,
}

impl Backoff {
    /// `retry_on_failure` as a backoff; `enabled: false` allows one attempt.
    pub fn from_config(config: &RetryConfig) -> Backoff {
        Backoff {
            initial_interval: config.initial_interval,
            multiplier: config.multiplier,
            max_interval: config.max_interval,
            max_elapsed: config.max_elapsed_time,
            jitter: config.randomization_factor,
            max_attempts: (!config.enabled).then_some(1),
        }
    }

    /// No retry: one attempt.
    pub fn never() -> Backoff {
        Backoff {
            initial_interval: Duration::ZERO,
            multiplier: 1.0,
            max_interval: Duration::ZERO,
            max_elapsed: Duration::ZERO,
            jitter: 0.0,
            max_attempts: Some(1),
        }
    }

    /// The same backoff without a time limit (a disk-backed queue keeps its spans until they are
    /// delivered).
    pub fn without_time_limit(mut self) -> Backoff {
        self.max_elapsed = Duration::ZERO;
        self
    }

    /// Starts counting: call right before the first attempt.
    pub fn start(&self) -> Schedule {
        Schedule { backoff: self.clone(), started: Instant::now(), attempts: 1, interval: self.initial_interval }
    }
}

/// Why a retry stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GaveUp {
    /// One attempt only (retry disabled).
    Disabled,
    /// `max_attempts` attempts were made.
    Attempts(u32),
    /// The next attempt would start after `max_elapsed`.
    Elapsed(Duration),
}

impl std::fmt::Display for GaveUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GaveUp::Disabled => write!(f, "retry is disabled"),
            GaveUp::Attempts(n) => write!(f, "gave up after {n} attempts"),
            GaveUp::Elapsed(d) => write!(f, "gave up after {d:?} (max elapsed time)"),
        }
    }
}

/// One retry in progress: the attempts made so far and the next delay.
#[derive(Debug, Clone)]
pub struct Schedule {
    backoff: Backoff,
    started: Instant,
    attempts: u32,
    interval: Duration,
}

impl Schedule {
    /// After a failed attempt: how long to wait before the next one (`retry_after`, the peer's
    /// hint, when given), or why not to try again. Counts the next attempt as made.
    pub fn next_delay(&mut self, retry_after: Option<Duration>) -> Result<Duration, GaveUp> {
        if let Some(max) = self.backoff.max_attempts {
            if self.attempts >= max {
                return Err(if max <= 1 { GaveUp::Disabled } else { GaveUp::Attempts(self.attempts) });
            }
        }
        let delay = retry_after.unwrap_or_else(|| jitter(self.interval, self.backoff.jitter));
        let elapsed = self.started.elapsed();
        if !self.backoff.max_elapsed.is_zero() && elapsed + delay >= self.backoff.max_elapsed {
            return Err(GaveUp::Elapsed(elapsed));
        }
        self.interval =
            self.interval.mul_f64(self.backoff.multiplier.max(1.0)).min(self.backoff.max_interval.max(self.backoff.initial_interval));
        self.attempts += 1;
        Ok(delay)
    }

    /// Time left before `max_elapsed` (`None`: no limit).
    pub fn remaining(&self) -> Option<Duration> {
        (!self.backoff.max_elapsed.is_zero()).then(|| self.backoff.max_elapsed.saturating_sub(self.started.elapsed()))
    }

    /// Attempts made (or started) so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

/// `interval` spread by ±`factor`.
pub fn jitter(interval: Duration, factor: f64) -> Duration {
    if factor <= 0.0 {
        return interval;
    }
    let spread = (fastrand::f64() * 2.0 - 1.0) * factor.min(1.0);
    interval.mul_f64((1.0 + spread).max(0.0))
}

/// A backoff and a timeout for each attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub backoff: Backoff,
    /// Per attempt; `None` when the operation bounds its own requests.
    pub attempt_timeout: Option<Duration>,
}

/// How one attempt failed.
#[derive(Debug)]
pub enum AttemptError<E> {
    /// The operation's own error.
    Failed(E),
    /// It did not finish within this long (the attempt timeout or what was left of
    /// `max_elapsed`).
    TimedOut(Duration),
}

impl<E: std::fmt::Display> std::fmt::Display for AttemptError<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttemptError::Failed(e) => e.fmt(f),
            AttemptError::TimedOut(d) => write!(f, "attempt timed out after {d:?}"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for AttemptError<E> {
    /// The operation's error's own cause (its message is this one's): chains print once.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AttemptError::Failed(e) => e.source(),
            AttemptError::TimedOut(_) => None,
        }
    }
}

/// What the caller makes of a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Try again, after the peer's hint if it gave one.
    Retry { retry_after: Option<Duration> },
    /// Trying again cannot help.
    Stop,
}

/// Why `RetryPolicy::run` returned without a success.
#[derive(Debug)]
pub enum Stopped<E> {
    /// The last attempt's error was judged not worth retrying.
    Permanent(E),
    /// Retrying stopped (`why`); `last` is the last attempt's failure.
    GaveUp { last: AttemptError<E>, why: GaveUp, attempts: u32 },
    /// `cancel` fired.
    Cancelled,
}

impl RetryPolicy {
    /// Runs `attempt` once, bounded by the attempt timeout and by `limit` (what is left of the
    /// retry's time, if bounded).
    pub async fn attempt<T, E>(&self, limit: Option<Duration>, attempt: impl Future<Output = Result<T, E>>) -> Result<T, AttemptError<E>> {
        let timeout = match (self.attempt_timeout, limit) {
            (Some(a), Some(l)) => Some(a.min(l)),
            (a, l) => a.or(l),
        };
        match timeout {
            Some(t) => match tokio::time::timeout(t, attempt).await {
                Ok(result) => result.map_err(AttemptError::Failed),
                Err(_) => Err(AttemptError::TimedOut(t)),
            },
            None => attempt.await.map_err(AttemptError::Failed),
        }
    }

    /// Runs `attempt` until it succeeds, `judge` calls its error permanent, the backoff gives up
    /// or `cancel` fires. `judge` sees every failure (timeouts included, as `TimedOut`) and
    /// decides; `on_retry` is told each failure that will be retried, and after how long.
    pub async fn run<T, E, F, Fut>(
        &self,
        cancel: &CancellationToken,
        mut attempt: F,
        mut judge: impl FnMut(&AttemptError<E>) -> Verdict,
        mut on_retry: impl FnMut(&AttemptError<E>, Duration),
    ) -> Result<T, Stopped<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut schedule = self.backoff.start();
        loop {
            let result = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(Stopped::Cancelled),
                r = self.attempt(schedule.remaining(), attempt()) => r,
            };
            let error = match result {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            let retry_after = match judge(&error) {
                Verdict::Stop => {
                    return Err(match error {
                        AttemptError::Failed(e) => Stopped::Permanent(e),
                        timed_out => Stopped::GaveUp { last: timed_out, why: GaveUp::Disabled, attempts: schedule.attempts() },
                    })
                }
                Verdict::Retry { retry_after } => retry_after,
            };
            let delay = match schedule.next_delay(retry_after) {
                Ok(delay) => delay,
                Err(why) => return Err(Stopped::GaveUp { last: error, why, attempts: schedule.attempts() }),
            };
            on_retry(&error, delay);
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Err(Stopped::Cancelled),
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    fn backoff() -> Backoff {
        Backoff {
            initial_interval: Duration::from_secs(1),
            multiplier: 2.0,
            max_interval: Duration::from_secs(5),
            max_elapsed: Duration::from_secs(30),
            jitter: 0.0,
            max_attempts: None,
        }
    }

    /// Runs a policy against a script of attempt results (`Err(Some(d))`: a retryable failure
    /// with hint `d`; `Err(None)`: retryable without a hint; the script's end: success), and
    /// returns when each attempt started (seconds since the start) and the outcome.
    async fn run_script(policy: RetryPolicy, script: Vec<Result<(), Option<u64>>>) -> (Vec<f64>, Result<u32, Stopped<String>>) {
        let started = Instant::now();
        let times = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(script.into_iter()));
        let cancel = CancellationToken::new();
        let result = policy
            .run(
                &cancel,
                || {
                    let times = times.clone();
                    let next = script.lock().unwrap().next();
                    async move {
                        times.lock().unwrap().push(started.elapsed().as_secs_f64());
                        match next {
                            None | Some(Ok(())) => Ok(times.lock().unwrap().len() as u32),
                            Some(Err(hint)) => Err(format!("hint {hint:?}")),
                        }
                    }
                },
                |e| match e {
                    AttemptError::Failed(m) if m.contains("Some") => Verdict::Retry {
                        retry_after: m.trim_start_matches("hint Some(").trim_end_matches(')').parse().ok().map(Duration::from_secs),
                    },
                    AttemptError::Failed(m) if m == "permanent" => Verdict::Stop,
                    _ => Verdict::Retry { retry_after: None },
                },
                |_, _| {},
            )
            .await;
        let times = times.lock().unwrap().clone();
        (times, result)
    }

    #[tokio::test(start_paused = true)]
    async fn delays_grow_by_the_multiplier_up_to_the_max_interval() {
        let policy = RetryPolicy { backoff: backoff(), attempt_timeout: None };
        let (times, result) = run_script(policy, vec![Err(None); 5]).await;
        assert_eq!(result.unwrap(), 6);
        // Delays 1, 2, 4, 5, 5.
        assert_eq!(times, vec![0.0, 1.0, 3.0, 7.0, 12.0, 17.0]);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_at_max_elapsed_without_waiting_past_it() {
        let policy = RetryPolicy { backoff: Backoff { max_elapsed: Duration::from_secs(10), ..backoff() }, attempt_timeout: None };
        let (times, result) = run_script(policy, vec![Err(None); 100]).await;
        // 0, 1, 3, 7; the next would start at 12 > 10.
        assert_eq!(times, vec![0.0, 1.0, 3.0, 7.0]);
        match result {
            Err(Stopped::GaveUp { why: GaveUp::Elapsed(elapsed), attempts: 4, .. }) => assert_eq!(elapsed, Duration::from_secs(7)),
            other => panic!("expected to give up at max elapsed: {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_never_runs_past_max_elapsed() {
        // Each attempt hangs; the timeout is 8 s but only 10 s are allowed in all.
        let policy = RetryPolicy {
            backoff: Backoff { max_elapsed: Duration::from_secs(10), ..backoff() },
            attempt_timeout: Some(Duration::from_secs(8)),
        };
        let started = Instant::now();
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let result: Result<(), _> = policy
            .run(
                &CancellationToken::new(),
                || {
                    attempts.lock().unwrap().push(started.elapsed().as_secs());
                    std::future::pending::<Result<(), String>>()
                },
                |_| Verdict::Retry { retry_after: None },
                |_, _| {},
            )
            .await;
        // 0..8 (timeout), wait 1 s, 9..10 (what was left), then give up.
        assert_eq!(*attempts.lock().unwrap(), vec![0, 9]);
        assert!(
            matches!(result, Err(Stopped::GaveUp { last: AttemptError::TimedOut(d), .. }) if d == Duration::from_secs(1)),
            "{result:?}"
        );
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_hint_replaces_the_backoff() {
        let policy = RetryPolicy { backoff: backoff(), attempt_timeout: None };
        let (times, result) = run_script(policy, vec![Err(Some(7)), Err(None), Err(Some(3))]).await;
        assert!(result.is_ok());
        // Hint 7; then the backoff's second interval (2); then hint 3.
        assert_eq!(times, vec![0.0, 7.0, 9.0, 12.0]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_error_is_not_retried() {
        let policy = RetryPolicy { backoff: backoff(), attempt_timeout: None };
        let calls = Arc::new(Mutex::new(0));
        let result: Result<(), _> = policy
            .run(
                &CancellationToken::new(),
                || {
                    *calls.lock().unwrap() += 1;
                    async { Err::<(), _>("permanent".to_string()) }
                },
                |e| match e {
                    AttemptError::Failed(m) if m == "permanent" => Verdict::Stop,
                    _ => Verdict::Retry { retry_after: None },
                },
                |_, _| panic!("not retried"),
            )
            .await;
        assert!(matches!(result, Err(Stopped::Permanent(ref m)) if m == "permanent"));
        assert_eq!(*calls.lock().unwrap(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_timed_out_attempt_is_retried_with_its_own_timeout() {
        let policy = RetryPolicy { backoff: backoff(), attempt_timeout: Some(Duration::from_secs(2)) };
        let started = Instant::now();
        let calls = Arc::new(Mutex::new(0u32));
        let result = policy
            .run(
                &CancellationToken::new(),
                || {
                    let calls = calls.clone();
                    async move {
                        let n = {
                            let mut c = calls.lock().unwrap();
                            *c += 1;
                            *c
                        };
                        if n < 3 {
                            std::future::pending::<()>().await;
                        }
                        Ok::<u32, String>(n)
                    }
                },
                |_| Verdict::Retry { retry_after: None },
                |_, _| {},
            )
            .await;
        assert_eq!(result.unwrap(), 3);
        // 2 s timeout, 1 s wait, 2 s timeout, 2 s wait, success.
        assert_eq!(started.elapsed(), Duration::from_secs(7));
    }

    #[tokio::test(start_paused = true)]
    async fn max_attempts_and_disabled_retry() {
        let policy = RetryPolicy { backoff: Backoff { max_attempts: Some(3), ..backoff() }, attempt_timeout: None };
        let (times, result) = run_script(policy, vec![Err(None); 10]).await;
        assert_eq!(times.len(), 3);
        assert!(matches!(result, Err(Stopped::GaveUp { why: GaveUp::Attempts(3), .. })), "{result:?}");

        let disabled = RetryConfig { enabled: false, ..RetryConfig::default() };
        let policy = RetryPolicy { backoff: Backoff::from_config(&disabled), attempt_timeout: None };
        let (times, result) = run_script(policy, vec![Err(None); 10]).await;
        assert_eq!(times.len(), 1);
        assert!(matches!(result, Err(Stopped::GaveUp { why: GaveUp::Disabled, .. })), "{result:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_stops_a_wait() {
        let policy = RetryPolicy { backoff: backoff().without_time_limit(), attempt_timeout: None };
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(100)).await;
            stop.cancel();
        });
        let started = Instant::now();
        let result: Result<(), _> =
            policy.run(&cancel, || async { Err::<(), _>("down".to_string()) }, |_| Verdict::Retry { retry_after: None }, |_, _| {}).await;
        assert!(matches!(result, Err(Stopped::Cancelled)));
        assert_eq!(started.elapsed(), Duration::from_secs(100));
    }

    #[test]
    fn jitter_stays_within_the_factor() {
        for _ in 0..1000 {
            let d = jitter(Duration::from_secs(10), 0.5);
            assert!(d >= Duration::from_secs(5) && d <= Duration::from_secs(15), "{d:?}");
        }
        assert_eq!(jitter(Duration::from_secs(3), 0.0), Duration::from_secs(3));
    }

    #[test]
    fn the_configuration_maps_one_to_one() {
        let config = RetryConfig::default();
        let b = Backoff::from_config(&config);
        assert_eq!(b.initial_interval, Duration::from_secs(5));
        assert_eq!(b.max_interval, Duration::from_secs(30));
        assert_eq!(b.max_elapsed, Duration::from_secs(300));
        assert_eq!(b.multiplier, 1.5);
        assert_eq!(b.jitter, 0.5);
        assert_eq!(b.max_attempts, None);
    }
}
