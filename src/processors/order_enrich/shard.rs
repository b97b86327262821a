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

/// A trace as the trace cache keeps it: 32 bytes, its order id and user id in one string (held
/// inline when both together fit in 24 bytes, as most shop ids do) and how it was bound. The
/// cache holds hundreds of thousands (issue 10's memory target); [`TraceInfo`] is what the
/// enricher works with.
#[derive(Debug, Clone, Default)]
pub struct CachedTrace {
    /// The order id (its first `order_len` bytes; empty when not bound), then the user id.
    text: Text,
    order_len: u16,
    flags: u8,
}

const BOUND: u8 = 1;
const AMBIGUOUS: u8 = 2;
const HAS_USER: u8 = 4;
const BY_LINK: u8 = 8;
const BY_CORRELATION: u8 = 16;

impl CachedTrace {
    /// `None` when the order id is over 64 KiB (such a trace is not cached).
    fn new(info: &TraceInfo) -> Option<CachedTrace> {
        let order = info.binding.as_ref().map(|b| b.order.as_str()).unwrap_or("");
        let mut c = CachedTrace { text: Text::default(), order_len: u16::try_from(order.len()).ok()?, flags: 0 };
        c.text.push_str(order);
        if let Some(b) = &info.binding {
            c.flags |= BOUND | Self::origin_flag(b.origin) | if b.ambiguous { AMBIGUOUS } else { 0 };
        }
        if let Some(user) = &info.enduser {
            c.text.push_str(user);
            c.flags |= HAS_USER;
        }
        Some(c)
    }

    fn origin_flag(origin: Origin) -> u8 {
        match origin {
            Origin::Own => 0,
            Origin::Link => BY_LINK,
            Origin::Correlation => BY_CORRELATION,
        }
    }

    pub fn is_bound(&self) -> bool {
        self.flags & BOUND != 0
    }

    fn order(&self) -> &str {
        &self.text[..usize::from(self.order_len)]
    }

    fn user(&self) -> Option<&str> {
        (self.flags & HAS_USER != 0).then(|| &self.text[usize::from(self.order_len)..])
    }

    pub fn info(&self) -> TraceInfo {
        let binding = self.is_bound().then(|| Binding {
            order: Text::from(self.order()),
            origin: match self.flags & (BY_LINK | BY_CORRELATION) {
                BY_LINK => Origin::Link,
                BY_CORRELATION => Origin::Correlation,
                _ => Origin::Own,
            },
            ambiguous: self.flags & AMBIGUOUS != 0,
        });
        TraceInfo { binding, enduser: self.user().map(Text::from) }
    }
}

pub struct Shard {
    pub traces: TtlCache<TraceId, CachedTrace>,
    pub values: TtlCache<Text, Text>,
    pub buffer: TraceBuffer,
}

impl Shard {
    /// The order a trace of this shard is bound to, unless it is ambiguous.
    pub fn bound_order(&self, trace: &TraceId, now: Instant) -> Option<Text> {
        match self.traces.get(trace, now) {
            Some(c) if c.is_bound() && c.flags & AMBIGUOUS == 0 => Some(Text::from(c.order())),
            _ => None,
        }
    }

    pub fn is_bound(&self, trace: &TraceId, now: Instant) -> bool {
        self.traces.get(trace, now).is_some_and(CachedTrace::is_bound)
    }

    /// What the cache knows of a trace of this shard.
    pub fn trace_info(&self, trace: &TraceId, now: Instant) -> Option<TraceInfo> {
        self.traces.get(trace, now).map(CachedTrace::info)
    }

    /// The user of a trace of this shard.
    pub fn enduser(&self, trace: &TraceId, now: Instant) -> Option<Text> {
        self.traces.get(trace, now).and_then(|c| c.user()).map(Text::from)
    }

    pub fn insert_trace(&mut self, trace: TraceId, info: TraceInfo, now: Instant, tally: &mut Tally) {
        let Some(cached) = CachedTrace::new(&info) else { return };
        let (len, evicted) = (self.traces.len(), self.traces.evicted);
        self.traces.insert(trace, cached, now);
        tally.trace_entries += self.traces.len() as i64 - len as i64;
        tally.trace_evictions += self.traces.evicted - evicted;
    }

    /// Binds a trace of this shard to `order`. `false` when it was bound already: to another
    /// order, it is ambiguous from now on.
    pub fn bind(&mut self, trace: TraceId, order: &Text, origin: Origin, now: Instant, tally: &mut Tally) -> bool {
        match self.traces.get_mut(&trace, now) {
            Some(c) if c.is_bound() => {
                if c.order() != order.as_str() {
                    c.flags |= AMBIGUOUS;
                }
                false
            }
            Some(c) => {
                let mut info = c.info();
                info.binding = Some(Binding { order: order.clone(), origin, ambiguous: false });
                // Not cached when the order id is too long: the trace stays unbound here.
                if let Some(bound) = CachedTrace::new(&info) {
                    *c = bound;
                }
                true
            }
            None => {
                let binding = Binding { order: order.clone(), origin, ambiguous: false };
                self.insert_trace(trace, TraceInfo { binding: Some(binding), enduser: None }, now, tally);
                true
            }
        }
    }

    /// Binds a correlation value to an order, unless it is bound already (the first binding
    /// wins). Returns the order it is bound to now.
    pub fn insert_value(&mut self, value: Text, order: Text, now: Instant, tally: &mut Tally) -> Text {
        if let Some(bound) = self.values.get(&value, now) {
            return bound.clone();
        }
        let (len, evicted) = (self.values.len(), self.values.evicted);
        self.values.insert(value, order.clone(), now);
        tally.value_entries += self.values.len() as i64 - len as i64;
        tally.value_evictions += self.values.evicted - evicted;
        order
    }

    /// The user of a trace of this shard (the first one seen wins).
    pub fn set_enduser(&mut self, trace: TraceId, user: Text, now: Instant, tally: &mut Tally) {
        match self.traces.get_mut(&trace, now) {
            Some(c) => {
                if c.user().is_none() {
                    c.text.push_str(&user);
                    c.flags |= HAS_USER;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn shard() -> Shard {
        let hour = Duration::from_secs(3600);
        Shard { traces: TtlCache::new(hour, 100), values: TtlCache::new(hour, 100), buffer: TraceBuffer::new() }
    }

    fn info(order: Option<(&str, Origin, bool)>, user: Option<&str>) -> TraceInfo {
        TraceInfo {
            binding: order.map(|(o, origin, ambiguous)| Binding { order: o.into(), origin, ambiguous }),
            enduser: user.map(Text::from),
        }
    }

    fn seen(i: &TraceInfo) -> (Option<(String, Origin, bool)>, Option<String>) {
        (i.binding.as_ref().map(|b| (b.order.to_string(), b.origin, b.ambiguous)), i.enduser.as_ref().map(|u| u.to_string()))
    }

    #[test]
    fn a_cached_trace_is_32_bytes_and_gives_back_what_it_was_given() {
        assert_eq!(std::mem::size_of::<CachedTrace>(), 32);
        let long = "7f1c2a9e-4b0d-4c3e-9a51-0d2b6f8e1c47";
        for order in [None, Some(("A-1001", Origin::Own, false)), Some((long, Origin::Link, true)), Some(("", Origin::Correlation, false))]
        {
            for user in [None, Some("customer-17"), Some(long), Some("")] {
                let i = info(order, user);
                assert_eq!(seen(&CachedTrace::new(&i).unwrap().info()), seen(&i), "{order:?} {user:?}");
            }
        }
    }

    #[test]
    fn a_trace_learns_its_user_and_its_order_in_either_order() {
        let (mut s, mut tally, now) = (shard(), Tally::default(), Instant::now());
        let (a, b) = ([1; 16], [2; 16]);
        s.set_enduser(a, "customer-17".into(), now, &mut tally);
        assert!(!s.is_bound(&a, now));
        assert!(s.bind(a, &"A-1001".into(), Origin::Link, now, &mut tally));
        assert!(s.bind(b, &"A-1002".into(), Origin::Own, now, &mut tally));
        s.set_enduser(b, "customer-18".into(), now, &mut tally);
        s.set_enduser(b, "customer-99".into(), now, &mut tally);
        assert_eq!(seen(&s.trace_info(&a, now).unwrap()), seen(&info(Some(("A-1001", Origin::Link, false)), Some("customer-17"))));
        assert_eq!(seen(&s.trace_info(&b, now).unwrap()), seen(&info(Some(("A-1002", Origin::Own, false)), Some("customer-18"))));
        assert_eq!(s.enduser(&b, now).as_deref(), Some("customer-18"), "the first user seen wins");
        assert_eq!(s.bound_order(&a, now).as_deref(), Some("A-1001"));
        assert_eq!(tally.trace_entries, 2);

        // Bound again: to the same order nothing changes; to another, the trace is ambiguous.
        assert!(!s.bind(a, &"A-1001".into(), Origin::Own, now, &mut tally));
        assert_eq!(s.bound_order(&a, now).as_deref(), Some("A-1001"));
        assert!(!s.bind(a, &"A-2002".into(), Origin::Own, now, &mut tally));
        assert_eq!(s.bound_order(&a, now), None);
        assert!(s.is_bound(&a, now));
        assert_eq!(seen(&s.trace_info(&a, now).unwrap()), seen(&info(Some(("A-1001", Origin::Link, true)), Some("customer-17"))));
    }
}
