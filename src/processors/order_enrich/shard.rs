//! The enricher's state, cut into shards so that requests enrich in parallel.
//!
//! A trace lives in the shard its id hashes to: its binding (order, how, ambiguous), its user,
//! its waiting spans. A correlation value lives in the shard its text hashes to: the order it is
//! bound to. Who waits on a trace or a value is indexed in the shard of that trace or value, so
//! that binding it and finding its waiters happen under one lock, and a waiter that registers
//! checks the binding under the same lock (no wake-up is lost between two shards).
//!
//! A lock is held for one small step at a time and never while taking another one.

use std::sync::{Mutex, MutexGuard};

use crossbeam_utils::CachePadded;

use tokio::time::Instant;

use super::buffer::{TraceBuffer, TraceId};
use super::cache::TtlCache;
use super::config::OrderEnrichConfig;
use super::Origin;
use crate::telemetry::EnrichMetrics;

/// An order id, user id or correlation value as the caches keep it: inline up to 24 bytes (most
/// ids), so that a cached trace costs no allocation of its own (a cache holds hundreds of
/// thousands of them).
pub type Text = compact_str::CompactString;

#[derive(Debug, Clone)]
pub struct Binding {
    pub order: Text,
    pub origin: Origin,
    pub ambiguous: bool,
}

#[derive(Debug, Clone, Default)]
pub struct TraceInfo {
    pub binding: Option<Binding>,
    pub enduser: Option<Text>,
}

pub struct Shard {
    pub traces: TtlCache<TraceId, TraceInfo>,
    pub values: TtlCache<Text, Text>,
    pub buffer: TraceBuffer,
}

impl Shard {
    /// The order a trace of this shard is bound to, unless it is ambiguous.
    pub fn bound_order(&self, trace: &TraceId, now: Instant) -> Option<Text> {
        match self.traces.get(trace, now).and_then(|i| i.binding.as_ref()) {
            Some(b) if !b.ambiguous => Some(b.order.clone()),
            _ => None,
        }
    }

    pub fn is_bound(&self, trace: &TraceId, now: Instant) -> bool {
        self.traces.get(trace, now).is_some_and(|i| i.binding.is_some())
    }

    pub fn insert_trace(&mut self, trace: TraceId, info: TraceInfo, now: Instant, tally: &mut Tally) {
        let (len, evicted) = (self.traces.len(), self.traces.evicted);
        self.traces.insert(trace, info, now);
        tally.trace_entries += self.traces.len() as i64 - len as i64;
        tally.trace_evictions += self.traces.evicted - evicted;
    }

    pub fn insert_value(&mut self, value: Text, order: Text, now: Instant, tally: &mut Tally) {
        let (len, evicted) = (self.values.len(), self.values.evicted);
        self.values.insert(value, order, now);
        tally.value_entries += self.values.len() as i64 - len as i64;
        tally.value_evictions += self.values.evicted - evicted;
    }

    /// The user of a trace of this shard (the first one seen wins).
    pub fn set_enduser(&mut self, trace: TraceId, user: Text, now: Instant, tally: &mut Tally) {
        match self.traces.get_mut(&trace, now) {
            Some(info) => {
                if info.enduser.is_none() {
                    info.enduser = Some(user);
                }
            }
            None => self.insert_trace(trace, TraceInfo { binding: None, enduser: Some(user) }, now, tally),
        }
    }

    pub fn expire_caches(&mut self, now: Instant, tally: &mut Tally) {
        let (traces, values) = (self.traces.len(), self.values.len());
        self.traces.expire(now);
        self.values.expire(now);
        tally.trace_entries += self.traces.len() as i64 - traces as i64;
        tally.value_entries += self.values.len() as i64 - values as i64;
    }
}

/// At most this many shards; fewer when the caches are small (each shard gets at least
/// `MIN_ENTRIES_PER_SHARD` entries of the smaller cache, so small caches keep their exact
/// oldest-first eviction).
const MAX_SHARDS: usize = 64;
const MIN_ENTRIES_PER_SHARD: usize = 1024;

pub struct Shards {
    /// Each on cache lines of its own: a lock taken on one thread does not take the line of its
    /// neighbour from another.
    shards: Box<[CachePadded<Mutex<Shard>>]>,
    mask: usize,
}

impl Shards {
    /// The caches' `max_entries` are split between the shards (together exactly the configured
    /// bound); each shard evicts its own oldest entry.
    pub fn new(config: &OrderEnrichConfig) -> Shards {
        let smallest = config.trace_cache.max_entries.min(config.correlation_cache.max_entries);
        let mut n = MAX_SHARDS;
        while n > 1 && smallest / n < MIN_ENTRIES_PER_SHARD {
            n /= 2;
        }
        let share = |total: usize, i: usize| (total / n + usize::from(i < total % n)).max(1);
        let shards = (0..n)
            .map(|i| {
                CachePadded::new(Mutex::new(Shard {
                    traces: TtlCache::new(config.trace_cache.ttl, share(config.trace_cache.max_entries, i)),
                    values: TtlCache::new(config.correlation_cache.ttl, share(config.correlation_cache.max_entries, i)),
                    buffer: TraceBuffer::new(),
                }))
            })
            .collect();
        Shards { shards, mask: n - 1 }
    }

    pub fn len(&self) -> usize {
        self.shards.len()
    }

    /// The shard of a trace.
    pub fn trace(&self, trace: &TraceId) -> MutexGuard<'_, Shard> {
        let (a, b) = trace.split_at(8);
        let h = u64::from_le_bytes(a.try_into().unwrap_or_default()) ^ u64::from_le_bytes(b.try_into().unwrap_or_default());
        self.lock(mix(h))
    }

    /// The shard of a correlation value.
    pub fn value(&self, value: &str) -> MutexGuard<'_, Shard> {
        // FNV-1a: values are short, and a shard needs no protection against chosen collisions
        // (the maps inside keep their own hashers).
        let h = value.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
        self.lock(mix(h))
    }

    /// Each shard in turn.
    pub fn each(&self) -> impl Iterator<Item = MutexGuard<'_, Shard>> {
        self.shards.iter().map(|m| m.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn lock(&self, h: u64) -> MutexGuard<'_, Shard> {
        // A panic while a shard was locked leaves it consistent enough to go on: every step
        // keeps the maps valid.
        self.shards[(h as usize) & self.mask].lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn mix(h: u64) -> u64 {
    let h = h.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^ (h >> 29)
}

/// What one call did to the counters and gauges, applied at its end (one update of each shared
/// metric per request instead of one per span).
#[derive(Default)]
pub struct Tally {
    pub tagged_own: u64,
    pub tagged_trace: u64,
    pub tagged_link: u64,
    pub tagged_correlation: u64,
    pub untagged_timeout: u64,
    pub untagged_buffer_full: u64,
    pub untagged_no_wait: u64,
    pub untagged_ambiguous: u64,
    pub buffer_traces: i64,
    pub trace_entries: i64,
    pub value_entries: i64,
    pub trace_evictions: u64,
    pub value_evictions: u64,
}

impl Tally {
    pub fn tagged(&mut self, origin: Origin) {
        match origin {
            Origin::Own => self.tagged_trace += 1,
            Origin::Link => self.tagged_link += 1,
            Origin::Correlation => self.tagged_correlation += 1,
        }
    }

    pub fn apply(&self, m: &EnrichMetrics) {
        for (counter, n) in [
            (&m.tagged_own, self.tagged_own),
            (&m.tagged_trace, self.tagged_trace),
            (&m.tagged_link, self.tagged_link),
            (&m.tagged_correlation, self.tagged_correlation),
            (&m.untagged_timeout, self.untagged_timeout),
            (&m.untagged_buffer_full, self.untagged_buffer_full),
            (&m.untagged_no_wait, self.untagged_no_wait),
            (&m.untagged_ambiguous, self.untagged_ambiguous),
            (&m.trace_cache_evictions, self.trace_evictions),
            (&m.correlation_cache_evictions, self.value_evictions),
        ] {
            if n > 0 {
                counter.inc_by(n);
            }
        }
    }
}
