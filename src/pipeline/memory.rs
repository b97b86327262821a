//! The memory limiter (the Collector's `memory_limiter`, `service.memory_limiter`): one per
//! process, because what it limits, the resident set size, is the process's.
//!
//! Between the soft limit (`limit - spike`) and the hard limit, receivers refuse requests with a
//! retry hint (503 / `UNAVAILABLE`, reason `memory_limit`) before decoding them, so SDKs back off
//! and nothing accepted is dropped. Past the hard limit the processors let go of the spans they
//! hold (into their pipeline's bounded release backlog), and a warning is logged. While
//! refusing, freed memory is handed back to the operating system (`malloc_trim`, the analogue of
//! the Collector's forced GC), so the RSS falls once the queues drain and ingest resumes.
//!
//! The RSS comes from `/proc/self/statm`: every `check_interval`, and on admission when the
//! last sample is older than [`ADMISSION_SAMPLE_EVERY`], so a flood cannot outrun the interval.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::fanout::Pipeline;
use crate::shared::Issues;
use crate::telemetry::MemoryMetrics;

/// Requests resample the RSS when the last sample is older than this.
pub const ADMISSION_SAMPLE_EVERY: Duration = Duration::from_millis(20);

/// `service.memory_limiter`: the Collector's keys. Exactly one of `limit_mib` and
/// `limit_percentage` (of the cgroup's memory limit, or of physical memory without one).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryLimiterConfig {
    #[serde(
        default = "default_check_interval",
        deserialize_with = "crate::net::positive_duration",
        serialize_with = "humantime_serde::serialize"
    )]
    pub check_interval: Duration,
    /// The hard limit in MiB.
    #[serde(default)]
    pub limit_mib: Option<u64>,
    /// Headroom below the hard limit for requests in flight: the soft limit is `limit - spike`.
    /// Default: 20 % of the limit.
    #[serde(default)]
    pub spike_limit_mib: Option<u64>,
    #[serde(default)]
    pub limit_percentage: Option<u32>,
    #[serde(default)]
    pub spike_limit_percentage: Option<u32>,
}

fn default_check_interval() -> Duration {
    Duration::from_secs(1)
}

const MIB: u64 = 1 << 20;

/// Why `service.memory_limiter` gives no limits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemoryLimitError {
    #[error("limit_percentage: cannot read the memory available (/proc/meminfo)")]
    MemoryUnknown,
    #[error("no limit set")]
    NoLimit,
}

impl MemoryLimiterConfig {
    pub fn validate(&self, path: &str, issues: &mut Issues) {
        match (self.limit_mib, self.limit_percentage) {
            (None, None) => issues.push(path, "set limit_mib (the hard limit in MiB) or limit_percentage (of the memory available)"),
            (Some(_), Some(_)) => issues.push(path, "set either limit_mib or limit_percentage, not both"),
            (Some(0), None) => issues.push(format!("{path}.limit_mib"), "must be at least 1"),
            (Some(limit), None) => {
                if self.spike_limit_percentage.is_some() {
                    issues.push(format!("{path}.spike_limit_percentage"), "goes with limit_percentage; with limit_mib use spike_limit_mib");
                }
                if self.spike_limit_mib.is_some_and(|spike| spike >= limit) {
                    issues.push(format!("{path}.spike_limit_mib"), "must be smaller than limit_mib");
                }
            }
            (None, Some(percent)) => {
                if !(1..=100).contains(&percent) {
                    issues.push(format!("{path}.limit_percentage"), "must be between 1 and 100");
                }
                if self.spike_limit_mib.is_some() {
                    issues.push(format!("{path}.spike_limit_mib"), "goes with limit_mib; with limit_percentage use spike_limit_percentage");
                }
                if self.spike_limit_percentage.is_some_and(|spike| spike >= percent) {
                    issues.push(format!("{path}.spike_limit_percentage"), "must be smaller than limit_percentage");
                }
            }
        }
    }

    /// The (soft, hard) limits in bytes; a percentage needs the memory available.
    pub fn limits(&self) -> Result<(u64, u64), MemoryLimitError> {
        let (hard, spike) = match (self.limit_mib, self.limit_percentage) {
            (Some(limit), _) => (limit * MIB, self.spike_limit_mib.map(|s| s * MIB)),
            (None, Some(percent)) => {
                let total = available_memory().ok_or(MemoryLimitError::MemoryUnknown)?;
                (total / 100 * percent as u64, self.spike_limit_percentage.map(|s| total / 100 * s as u64))
            }
            (None, None) => return Err(MemoryLimitError::NoLimit),
        };
        let spike = spike.unwrap_or(hard / 5);
        Ok((hard.saturating_sub(spike), hard))
    }
}

/// The memory limiter of the process.
pub struct MemoryLimiter {
    soft: u64,
    hard: u64,
    rss: AtomicU64,
    refusing: AtomicBool,
    /// When the RSS was last read; locked only to read it again.
    sampled_at: Mutex<Instant>,
    metrics: MemoryMetrics,
    /// Whose held spans the hard limit releases (see `set_pipelines`).
    pipelines: Mutex<Vec<Arc<Pipeline>>>,
}

impl MemoryLimiter {
    pub fn new(soft: u64, hard: u64, metrics: MemoryMetrics) -> Arc<MemoryLimiter> {
        metrics.soft_limit.set(soft as i64);
        metrics.hard_limit.set(hard as i64);
        let limiter = Arc::new(MemoryLimiter {
            soft,
            hard,
            rss: AtomicU64::new(0),
            refusing: AtomicBool::new(false),
            sampled_at: Mutex::new(Instant::now()),
            metrics,
            pipelines: Mutex::default(),
        });
        limiter.sample();
        limiter
    }

    /// The pipelines whose processors let go of what they hold past the hard limit; a reload
    /// that replaces pipelines sets them again.
    pub fn set_pipelines(&self, pipelines: Vec<Arc<Pipeline>>) {
        *self.pipelines.lock().unwrap_or_else(|p| p.into_inner()) = pipelines;
    }

    /// The last RSS read, in bytes.
    pub fn rss(&self) -> u64 {
        self.rss.load(Ordering::Relaxed)
    }

    /// Whether ingest is refused now (the RSS is past the soft limit). Reads the RSS again when
    /// the last sample is older than [`ADMISSION_SAMPLE_EVERY`] and no other request is reading it.
    pub fn refuses(&self) -> bool {
        if let Ok(mut at) = self.sampled_at.try_lock() {
            if at.elapsed() >= ADMISSION_SAMPLE_EVERY {
                *at = Instant::now();
                drop(at);
                self.sample();
            }
        }
        self.refusing.load(Ordering::Relaxed)
    }

    /// Reads the RSS and updates the refusal state; returns the RSS.
    fn sample(&self) -> u64 {
        let Some(rss) = resident_bytes() else { return self.rss() };
        self.rss.store(rss, Ordering::Relaxed);
        self.metrics.rss.set(rss as i64);
        let refusing = rss >= self.soft;
        if self.refusing.swap(refusing, Ordering::Relaxed) != refusing {
            self.metrics.refusing.set(refusing as i64);
            if refusing {
                tracing::warn!(
                    rss_mib = rss / MIB,
                    soft_limit_mib = self.soft / MIB,
                    "memory past the soft limit: refusing ingest with a retry hint until it falls"
                );
            } else {
                tracing::info!(
                    rss_mib = rss / MIB,
                    soft_limit_mib = self.soft / MIB,
                    "memory under the soft limit again: accepting ingest"
                );
            }
        }
        rss
    }

    /// Samples every `interval`, gives memory back while refusing, and past the hard limit has
    /// the pipelines' processors let go of what they hold. Runs until aborted.
    pub async fn run(self: Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut over_hard = false;
        loop {
            tick.tick().await;
            *self.sampled_at.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
            let mut rss = self.sample();
            if rss >= self.soft {
                release_free_memory();
                rss = self.sample();
            }
            if rss >= self.hard {
                let pipelines = self.pipelines.lock().unwrap_or_else(|p| p.into_inner()).clone();
                let released: usize = pipelines.iter().map(|p| p.release_held(Instant::now())).sum();
                self.metrics.hard_limit_reached.inc();
                if !over_hard {
                    tracing::warn!(
                        rss_mib = rss / MIB,
                        hard_limit_mib = self.hard / MIB,
                        released_spans = released,
                        "memory past the hard limit: held spans released to the queues"
                    );
                }
                release_free_memory();
                self.sample();
            }
            over_hard = rss >= self.hard;
        }
    }
}

/// The process's resident set size from `/proc/self/statm` (pages).
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * page_size())
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 {
        size as u64
    } else {
        4096
    }
}

/// The memory this process may use: the cgroup's limit (v2 `memory.max`, v1
/// `memory.limit_in_bytes`) when it is below physical memory, else physical memory.
fn available_memory() -> Option<u64> {
    let physical = std::fs::read_to_string("/proc/meminfo").ok().and_then(|text| {
        let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
        line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kib| kib * 1024)
    })?;
    let cgroup = ["/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .filter_map(|text| text.trim().parse::<u64>().ok())
        .min();
    Some(cgroup.map_or(physical, |c| c.min(physical)))
}

/// Hands memory the allocator keeps free back to the operating system.
fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks glibc's own arenas.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> MemoryLimiterConfig {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn soft_is_the_limit_less_the_spike() {
        assert_eq!(config("{limit_mib: 100}").limits().unwrap(), (80 * MIB, 100 * MIB), "spike defaults to 20 %");
        assert_eq!(config("{limit_mib: 100, spike_limit_mib: 10}").limits().unwrap(), (90 * MIB, 100 * MIB));
        let (soft, hard) = config("{limit_percentage: 50, spike_limit_percentage: 10}").limits().unwrap();
        assert!(hard > soft && soft > hard / 2, "40 % of the memory under a limit of 50 %: {soft} {hard}");
        assert_eq!(config("{limit_mib: 1}").check_interval, Duration::from_secs(1));
    }

    #[test]
    fn validation_names_the_key() {
        let check = |yaml: &str| {
            let mut issues = Issues::default();
            config(yaml).validate("service.memory_limiter", &mut issues);
            issues.into_vec().into_iter().map(|i| format!("{}: {}", i.path, i.message)).collect::<Vec<_>>()
        };
        assert!(check("{limit_mib: 100}").is_empty());
        assert!(check("{}")[0].starts_with("service.memory_limiter: set limit_mib"));
        assert!(check("{limit_mib: 100, spike_limit_mib: 100}")[0].starts_with("service.memory_limiter.spike_limit_mib"));
        assert!(check("{limit_percentage: 120}")[0].starts_with("service.memory_limiter.limit_percentage"));
        assert!(check("{limit_mib: 10, limit_percentage: 10}")[0].contains("not both"));
        assert!(serde_yaml_ng::from_str::<MemoryLimiterConfig>("{limit_mib: 1, check_interval: 0s}").is_err());
    }

    /// Past the hard limit, what `order_enrich` holds goes to the release backlog at the next
    /// check, and the check is counted.
    #[tokio::test]
    async fn past_the_hard_limit_held_spans_are_released() {
        use crate::pipeline::{ExporterQueue, Fanout};
        use crate::processors::{Processor, ProcessorConfig};
        use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

        let metrics = crate::telemetry::Metrics::new();
        // A queue with no room: released spans wait in the backlog, where they can be counted.
        let queue = ExporterQueue::new("q", 10, crate::shared::WhenFull::Refuse, metrics.exporter("q"));
        let enrich = Processor::build(&ProcessorConfig::OrderEnrich(Default::default()), "p", &metrics).unwrap();
        let pipeline = Arc::new(Pipeline::new("p".into(), vec![enrich], vec![queue.clone()], true));
        let spans = (1..=6).map(|i| Span { trace_id: vec![1; 16], span_id: vec![i; 8], ..Default::default() }).collect();
        let orderless = vec![ResourceSpans { scope_spans: vec![ScopeSpans { spans, ..Default::default() }], ..Default::default() }];
        Fanout::new(vec![pipeline.clone()]).admit(orderless).await.unwrap();
        assert_eq!((queue.len(), pipeline.backlog_spans()), (0, 0), "six spans wait for their order");

        let limiter = MemoryLimiter::new(1, 2, metrics.memory());
        limiter.set_pipelines(vec![pipeline.clone()]);
        let task = tokio::spawn(limiter.clone().run(Duration::from_millis(10)));
        let deadline = Instant::now() + Duration::from_secs(5);
        while queue.len() + pipeline.backlog_spans() < 6 {
            assert!(Instant::now() < deadline, "held spans were not released");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        task.abort();
        assert!(limiter.metrics.hard_limit_reached.get() >= 1);
        assert!(limiter.refuses());
    }

    #[test]
    fn refuses_past_the_soft_limit_only() {
        let rss = resident_bytes().expect("/proc/self/statm is readable");
        let metrics = crate::telemetry::Metrics::new();
        assert!(!MemoryLimiter::new(rss * 4, rss * 5, metrics.memory()).refuses());
        let tight = MemoryLimiter::new(rss / 4, rss / 2, metrics.memory());
        assert!(tight.refuses());
        assert!(tight.rss() >= rss / 2);
    }
}
