//! The `order_enrich` processor: every span that belongs to an order gets `order.id`, every span
//! that records a step gets `order.stage` (and `order.status`), and `enduser.id` travels through
//! the trace.
//!
//! A request is handled in three passes:
//! 1. *discover*: spans that carry an order id bind their trace (and their correlation values)
//!    to it; spans that carry a user id bind their trace to the user;
//! 2. *join*: spans of still unbound traces join an order through a span link to a bound trace
//!    or a bound correlation value; each new binding also releases buffered traces waiting on it;
//! 3. *tag*: spans of bound traces are tagged and classified by the rules; spans of unbound
//!    traces wait in the `TraceBuffer` (bounded in time and size) or go on untagged.
//!
//! The state is sharded by trace id and by correlation value (`shard.rs`), each shard under its
//! own lock, so requests of one pipeline enrich in parallel. A lock is held for one step (bind a
//! trace, look a value up, buffer a span), never across a pass; a span that starts to wait
//! registers with the traces and values it waits on under their locks and checks their binding
//! there, so a binding made meanwhile by another request is never missed. Run one request at a
//! time, the result is what it was with one lock for everything; run concurrently, every span
//! gets the tags of some serial order of the requests.
//!
//! Spans that carry a correlation value and no order when their wait is over go to the
//! `CorrelationHold` when one is configured: on disk, until a span binds the value to an order
//! (they are then let go of tagged, by `expire`, on the release path) or their `ttl` is over
//! (dropped, counted).
//!
//! A trace that names two different orders (a batch job) is *ambiguous*: spans with their own
//! order id keep it, spans without one are left untagged rather than given a wrong order.

mod buffer;
mod cache;
mod config;
mod hold;
mod pack;
mod rules;
mod shard;
#[cfg(test)]
mod threads;

use std::cell::OnceCell;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_utils::CachePadded;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};
use tokio::time::Instant;

pub use buffer::TraceId;
pub use config::{default_rules, CorrelationHoldConfig, OrderEnrichConfig, RuleConfig};
pub use hold::HoldError;

use self::buffer::{regroup, shared_resource, shared_scope, unpark_all, Encoded, FastMap, Held, Parked, ResourceCtx, ScopeCtx, Taken};
use self::hold::CorrelationHold;
use self::pack::{Packer, PACK_AFTER};
use self::rules::Rule;
use self::shard::{Shards, Tally, Text, TraceInfo};
use crate::processors::attrs;
use crate::telemetry::EnrichMetrics;

/// How a trace came to belong to an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A span of the trace names the order.
    Own,
    /// A span of the trace links to a span of an order's trace.
    Link,
    /// A span of the trace carries a correlation value bound to the order.
    Correlation,
}

/// Buffer slots a call takes from the shared count at once (see `reserve_buffer_slot`).
const SLOTS_AT_ONCE: usize = 32;

/// At most this many claimed spans leave the correlation hold per release round.
const HOLD_RELEASE_BATCH: usize = 10_000;

pub struct OrderEnricher {
    config: OrderEnrichConfig,
    patterns: Vec<(Vec<String>, rules::ThreadRegex)>,
    rules: Vec<Rule>,
    shards: Shards,
    /// Spans waiting in the shards' buffers, together (bounded by `max_buffered_spans`). The
    /// counts that every call writes are on cache lines of their own, away from what every span
    /// reads (the configuration, the shards).
    buffered: CachePadded<AtomicUsize>,
    /// Traces waiting, and entries of the two caches, over every shard (for the gauges).
    buffered_traces: CachePadded<AtomicI64>,
    trace_entries: CachePadded<AtomicI64>,
    value_entries: CachePadded<AtomicI64>,
    hold: Mutex<Option<CorrelationHold>>,
    has_hold: bool,
    /// Packs spans that have waited a while (`pack.rs`).
    packer: Packer,
    metrics: EnrichMetrics,
}

/// What the discover pass learnt about one span.
struct Seen {
    trace: Option<TraceId>,
    own: Option<String>,
}

/// One call's work in progress: the traces it bound (their waiting spans go out at its end),
/// what it counted, and what it learnt of the traces it met.
#[derive(Default)]
struct Run {
    released: Vec<TraceId>,
    tally: Tally,
    /// A request carries many spans of each trace: what one span of a trace learnt from the
    /// trace's shard, the next span of that trace takes from here instead of taking the shard's
    /// lock again (taken by every span, the locks of shards that every thread uses were most of
    /// what two threads lost against one). Within a call a trace's entry only grows (bound,
    /// given a user) unless the trace cache evicts one: then all of this is forgotten
    /// ([`Run::forget_if_evicted`]), so one thread gives exactly what asking every time gives.
    /// Another call may bind a trace this one saw unbound meanwhile, as it could between two
    /// questions before; the span is then tagged from the binding when it is put to wait.
    traces: FastMap<TraceId, Learnt>,
}

impl Run {
    /// Forgets what was learnt of traces when the trace cache evicted an entry since
    /// `evictions` (an evicted trace is unbound again, and without its user).
    fn forget_if_evicted(&mut self, evictions: u64) {
        if self.tally.trace_evictions != evictions {
            self.traces.clear();
        }
    }
}

/// Buffer slots a call took from the shared count and has not used yet: given back when the
/// call is done with them, or when it unwinds.
struct Slots<'a> {
    count: &'a AtomicUsize,
    held: usize,
}

impl Drop for Slots<'_> {
    fn drop(&mut self) {
        if self.held > 0 {
            self.count.fetch_sub(self.held, Ordering::AcqRel);
        }
    }
}

/// What a call learnt of one trace.
#[derive(Default)]
struct Learnt {
    /// The trace is bound (the call bound it, or saw it bound); `None` until asked.
    bound: Option<bool>,
    /// The order this call bound the trace to for a span that names it (binding it again to
    /// the same order changes nothing while the entry is not evicted).
    own: Option<Text>,
    /// The call gave the trace its user, or saw it had one (the first user seen stays).
    user_set: bool,
    /// The trace's user, as read for tagging.
    user: Option<Option<Text>>,
    /// The trace's binding and user, as read for tagging a span that does not name its order
    /// (once a trace is bound, its spans that follow are tagged alike).
    info: Option<TraceInfo>,
}

/// A span that started to wait, and the traces and values it waits on, to register with them.
struct Registration {
    trace: TraceId,
    links: Vec<TraceId>,
    values: Vec<String>,
}

impl OrderEnricher {
    pub fn new(config: OrderEnrichConfig, metrics: EnrichMetrics) -> Result<OrderEnricher, regex::Error> {
        let patterns = config
            .order_id_patterns
            .iter()
            .map(|p| Ok((p.attributes.clone(), rules::ThreadRegex::new(&p.regex)?)))
            .collect::<Result<_, regex::Error>>()?;
        let rule_configs = config.rules.clone().unwrap_or_else(|| default_rules(&config.status_keys));
        let rules = rules::compile(&rule_configs)?;
        let shards = Shards::new(&config);
        Ok(OrderEnricher {
            config,
            patterns,
            rules,
            shards,
            buffered: CachePadded::new(AtomicUsize::new(0)),
            buffered_traces: CachePadded::new(AtomicI64::new(0)),
            trace_entries: CachePadded::new(AtomicI64::new(0)),
            value_entries: CachePadded::new(AtomicI64::new(0)),
            hold: Mutex::new(None),
            has_hold: false,
            packer: Packer::default(),
            metrics,
        })
    }

    /// Opens the correlation hold of `pipeline`, when one is configured.
    pub fn with_correlation_hold(mut self, pipeline: &str) -> Result<OrderEnricher, HoldError> {
        if let Some(c) = &self.config.correlation_hold {
            let hold = CorrelationHold::open(&c.file(pipeline), c.ttl, c.max_bytes.0)?;
            self.report_hold(&hold);
            *self.hold.get_mut().unwrap_or_else(|e| e.into_inner()) = Some(hold);
            self.has_hold = true;
        }
        Ok(self)
    }

    pub fn correlation_keys(&self) -> &[String] {
        &self.config.correlation_keys
    }

    /// How many shards the state is cut into.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The order id a span names itself: configured keys on the span, then on its resource,
    /// then the patterns.
    fn own_order(&self, span: &Span, resource: &[KeyValue]) -> Option<String> {
        let keys = &self.config.order_id_keys;
        if let Some(v) =
            keys.iter().find_map(|k| attrs::get(&span.attributes, k)).or_else(|| keys.iter().find_map(|k| attrs::get(resource, k)))
        {
            if !v.is_empty() {
                return Some(v.into_owned());
            }
        }
        self.patterns.iter().find_map(|(keys, re)| {
            keys.iter().find_map(|k| {
                let value = attrs::get(&span.attributes, k)?;
                re.get().captures(&value).and_then(|c| c.name("order_id")).map(|m| m.as_str().to_string())
            })
        })
    }

    fn values(&self, span: &Span) -> Vec<String> {
        self.config
            .correlation_keys
            .iter()
            .filter_map(|k| attrs::get(&span.attributes, k))
            .filter(|v| !v.is_empty())
            .map(|v| v.into_owned())
            .collect()
    }

    fn enduser(&self, span: &Span) -> Option<String> {
        self.config.enduser_keys.iter().find_map(|k| attrs::get(&span.attributes, k)).map(|v| v.into_owned())
    }

    /// Runs the three passes over a request; returns the spans to send on now (tagged, passed
    /// through, or released from the buffer because this request revealed their order).
    pub fn process(&self, batch: Vec<ResourceSpans>, now: Instant) -> Vec<ResourceSpans> {
        let mut run = Run::default();

        // 1. Discover.
        let mut seen: Vec<Seen> = Vec::new();
        for rs in &batch {
            let resource = resource_attrs(rs);
            for span in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
                let trace = trace_id(span);
                let own = self.own_order(span, resource);
                let evictions = run.tally.trace_evictions;
                // The user first: a request that sees the binding sees the user with it.
                if let (Some(t), Some(user)) = (trace, self.enduser(span)) {
                    let learnt = run.traces.entry(t).or_default();
                    if !learnt.user_set {
                        learnt.user_set = true;
                        self.shards.trace(&t).set_enduser(t, Text::from(user), now, &mut run.tally);
                    }
                }
                if let (Some(t), Some(order)) = (trace, own.as_ref()) {
                    let order: Text = match run.traces.get(&t).and_then(|l| l.own.clone()) {
                        Some(bound) if *bound == **order => bound,
                        _ => {
                            let order = Text::from(order.as_str());
                            self.bind_trace(&mut run, t, &order, Origin::Own, now, false);
                            let learnt = run.traces.entry(t).or_default();
                            learnt.own = Some(order.clone());
                            learnt.bound = Some(true);
                            order
                        }
                    };
                    for v in self.values(span) {
                        self.bind_value(&mut run, v, &order, now);
                    }
                }
                run.forget_if_evicted(evictions);
                seen.push(Seen { trace, own });
            }
        }

        // 2. Join through links and correlation values (twice, for chains within one request).
        for _ in 0..2 {
            let mut i = 0;
            for rs in &batch {
                for span in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
                    let s = &seen[i];
                    i += 1;
                    let Some(t) = s.trace else { continue };
                    if s.own.is_some() {
                        continue;
                    }
                    let bound = match run.traces.get(&t).and_then(|l| l.bound) {
                        Some(bound) => bound,
                        None => {
                            let bound = self.shards.trace(&t).is_bound(&t, now);
                            run.traces.entry(t).or_default().bound = Some(bound);
                            bound
                        }
                    };
                    if bound {
                        continue;
                    }
                    if let Some((order, origin)) = self.joined_order(span, now) {
                        let evictions = run.tally.trace_evictions;
                        self.bind_trace(&mut run, t, &order, origin, now, false);
                        run.forget_if_evicted(evictions);
                    }
                }
            }
        }

        // 3. Tag, hold, or pass through.
        let deadline = now + self.config.wait;
        // Spans that will not wait in the buffer but may wait in the correlation hold.
        let mut to_hold: Vec<(Held, Vec<String>)> = Vec::new();
        let mut registrations: Vec<Registration> = Vec::new();
        let mut slots = Slots { count: &self.buffered, held: 0 };
        let mut out = Vec::with_capacity(batch.len());
        let mut i = 0;
        for mut rs in batch {
            let resource_ctx: OnceCell<Arc<ResourceCtx>> = OnceCell::new();
            let mut kept_scopes = Vec::with_capacity(rs.scope_spans.len());
            for mut ss in std::mem::take(&mut rs.scope_spans) {
                let scope_ctx: OnceCell<Arc<ScopeCtx>> = OnceCell::new();
                let resource_of = || resource_ctx.get_or_init(|| shared_resource(&rs)).clone();
                let scope_of = || scope_ctx.get_or_init(|| shared_scope(ss.scope.as_ref(), &ss.schema_url)).clone();
                let held = |span: Span| Held { resource: resource_of(), scope: scope_of(), span };
                let mut kept = Vec::with_capacity(ss.spans.len());
                for mut span in std::mem::take(&mut ss.spans) {
                    let s = &seen[i];
                    i += 1;
                    let resource = resource_attrs(&rs);
                    if let Some(own) = &s.own {
                        let enduser = s.trace.and_then(|t| {
                            let learnt = run.traces.entry(t).or_default();
                            learnt.user.get_or_insert_with(|| self.shards.trace(&t).enduser(&t, now)).clone()
                        });
                        self.tag(&mut span, resource, own, enduser.as_deref());
                        run.tally.tagged_own += 1;
                        kept.push(span);
                        continue;
                    }
                    let waits = !self.config.wait.is_zero();
                    match s.trace {
                        Some(t) => {
                            if let Some(info) = run.traces.get(&t).and_then(|l| l.info.as_ref()) {
                                self.tag_bound(&mut span, resource, info, &mut run.tally);
                                kept.push(span);
                                continue;
                            }
                            // A span of a trace this call found unbound (pass 2) most likely
                            // waits: it is encoded, and what it waits on listed, before the
                            // trace's lock is taken, so that the lock covers the check and the
                            // insert only (encoding is most of what parking a span costs).
                            // The shared resource and scope are looked up here too (once per
                            // request), not under the lock.
                            let prepare = |span: &Span| {
                                let links = span.links.iter().filter_map(|l| <TraceId>::try_from(l.trace_id.as_slice()).ok()).collect();
                                (Encoded::new(span), links, self.values(span), resource_of(), scope_of())
                            };
                            let early = (waits && run.traces.get(&t).and_then(|l| l.bound) == Some(false)).then(|| prepare(&span));
                            // The binding is read, and the span put to wait, under the trace's
                            // lock: a request binding the trace meanwhile takes it from there.
                            let mut shard = self.shards.trace(&t);
                            let info = shard.trace_info(&t, now).unwrap_or_default();
                            if info.binding.is_some() {
                                run.traces.entry(t).or_default().info = Some(info.clone());
                            }
                            match &info.binding {
                                Some(_) => {
                                    drop(shard);
                                    self.tag_bound(&mut span, resource, &info, &mut run.tally);
                                }
                                None if waits && self.reserve_buffer_slot(&mut slots) => {
                                    let (encoded, links, values, resource, scope) = early.unwrap_or_else(|| prepare(&span));
                                    let parked = Parked::encoded(resource, scope, encoded, !values.is_empty());
                                    let (links, values, new_trace) = shard.buffer.hold(t, parked, deadline, links, values);
                                    drop(shard);
                                    // The span's own memory is let go of after the lock.
                                    drop(span);
                                    run.tally.buffer_traces += i64::from(new_trace);
                                    if !links.is_empty() || !values.is_empty() {
                                        registrations.push(Registration { trace: t, links, values });
                                    }
                                    continue;
                                }
                                None => {
                                    drop(shard);
                                    let values = self.values(&span);
                                    if self.has_hold && !values.is_empty() {
                                        to_hold.push((held(span), values));
                                        continue;
                                    }
                                    if waits {
                                        run.tally.untagged_buffer_full += 1;
                                    } else {
                                        run.tally.untagged_no_wait += 1;
                                    }
                                }
                            }
                        }
                        None => {
                            let values = self.values(&span);
                            if self.has_hold && !values.is_empty() {
                                to_hold.push((held(span), values));
                                continue;
                            }
                            run.tally.untagged_no_wait += 1;
                        }
                    }
                    kept.push(span);
                }
                if !kept.is_empty() {
                    ss.spans = kept;
                    kept_scopes.push(ss);
                }
            }
            if !kept_scopes.is_empty() {
                rs.scope_spans = kept_scopes;
                out.push(rs);
            }
        }

        drop(slots);

        // Waiting spans register with what they wait on; what got bound meanwhile binds them.
        for r in registrations {
            match self.register(&r, now) {
                Some((order, origin)) => self.bind_trace(&mut run, r.trace, &order, origin, now, false),
                // The trace left the buffer (another request bound it, or its wait ran out)
                // before it registered: nothing is to wake it, and its entries would stay.
                None if !self.shards.trace(&r.trace).buffer.contains(&r.trace) => self.unregister(&r.trace, &r.links, &r.values),
                None => {}
            }
        }

        let refused = self.hold_spans(to_hold, now);
        if !refused.is_empty() {
            out.extend(regroup(refused));
        }

        // Traces this request bound: their buffered spans go out with it.
        let mut freed = Vec::new();
        for t in std::mem::take(&mut run.released) {
            let (taken, info) = {
                let mut shard = self.shards.trace(&t);
                let Some(taken) = shard.buffer.take(&t) else { continue };
                (taken, shard.trace_info(&t, now).unwrap_or_default())
            };
            let Taken { spans, links, values } = taken;
            self.forget(&t, &links, &values, spans.len(), &mut run.tally);
            for mut held in unpark_all(spans) {
                let resource = held.resource.resource.as_ref().map(|r| r.attributes.as_slice()).unwrap_or(&[]);
                self.tag_bound(&mut held.span, resource, &info, &mut run.tally);
                freed.push(held);
            }
        }
        if !freed.is_empty() {
            out.extend(regroup(freed));
        }
        self.report(&run.tally);
        out
    }

    /// Spans whose wait is over: untagged, or into the correlation hold when they carry a
    /// correlation value; and the held spans an order claimed, tagged.
    pub fn expire(&self, now: Instant) -> Vec<ResourceSpans> {
        self.expire_some(now, usize::MAX, None).0
    }

    /// [`OrderEnricher::expire`], letting go of about `max_spans` waiting spans at most (whole
    /// traces), so that a caller on an executor thread can let other work run in between:
    /// `true` when more may be due at `now`.
    ///
    /// `drops(trace_id, error)`: whether what comes after the enricher (a sampler) drops an
    /// untagged span of that trace, whose status is an error or not. Such spans are let go of
    /// without being decoded; with a sampler after it, most of the traces that never got an
    /// order are dropped, and decoding them was most of the cost of letting them go.
    pub fn expire_some(&self, now: Instant, max_spans: usize, drops: Option<&dyn Fn(&[u8], bool) -> bool>) -> (Vec<ResourceSpans>, bool) {
        self.let_go(now, max_spans, drops, HoldRelease::Due)
    }

    fn let_go(
        &self,
        now: Instant,
        max_spans: usize,
        drops: Option<&dyn Fn(&[u8], bool) -> bool>,
        release: HoldRelease,
    ) -> (Vec<ResourceSpans>, bool) {
        let mut tally = Tally::default();
        let mut out = Vec::new();
        let mut to_hold = Vec::new();
        let mut expired = Vec::new();
        let mut budget = max_spans;
        for mut shard in self.shards.each() {
            shard.expire_caches(now, &mut tally);
            if budget == 0 {
                continue;
            }
            let shard = &mut *shard;
            // A trace bound by a request still under way is that request's to release.
            let traces = &shard.traces;
            expired.extend(shard.buffer.expired(now, |t| traces.get(t, now).is_some_and(|c| c.is_bound()), &mut budget));
        }
        let mut more = budget == 0;
        // Packing is for spans that go on waiting: not in a flush, whose `now` is ahead (it
        // would put the next packing run off by as much).
        if !more && release == HoldRelease::Due {
            more = !self.pack_waiting(now, &mut budget);
        }
        for (trace, Taken { mut spans, links, values }) in expired {
            self.forget(&trace, &links, &values, spans.len(), &mut tally);
            if let Some(drops) = drops {
                // A span with a correlation value may go to the hold, tagged later: not dropped.
                let before = spans.len();
                spans.retain(|p| (self.has_hold && p.has_values) || !drops(&trace, p.error));
                tally.untagged_timeout += (before - spans.len()) as u64;
            }
            for held in unpark_all(spans) {
                let values = if self.has_hold { self.values(&held.span) } else { Vec::new() };
                if values.is_empty() {
                    tally.untagged_timeout += 1;
                    out.push(held);
                } else {
                    to_hold.push((held, values));
                }
            }
        }
        out.extend(self.hold_spans(to_hold, now));
        let mut out = regroup(out);
        if self.has_hold && release != HoldRelease::Untouched {
            let mut guard = self.hold.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(hold) = guard.as_mut() {
                if release == HoldRelease::Due {
                    let expired = hold.expire(now);
                    self.metrics.hold_expired.inc_by(expired as u64);
                }
                // Within what is left of the call's slice (the next call takes more).
                let limit = HOLD_RELEASE_BATCH.min(budget);
                let claimed = if limit == 0 { Vec::new() } else { hold.take_claimed(limit, now) };
                more |= limit == 0 || claimed.len() >= limit;
                self.report_hold(hold);
                drop(guard);
                if !claimed.is_empty() {
                    self.metrics.hold_released.inc_by(claimed.len() as u64);
                    let mut spans = Vec::with_capacity(claimed.len());
                    for (order, mut held) in claimed {
                        let resource = held.resource.resource.as_ref().map(|r| r.attributes.as_slice()).unwrap_or(&[]);
                        self.tag(&mut held.span, resource, &order, None);
                        tally.tagged_correlation += 1;
                        spans.push(held);
                    }
                    out.extend(regroup(spans));
                }
            }
        }
        self.report(&tally);
        (out, more)
    }

    /// Packs the spans that have waited [`PACK_AFTER`] (at most every `PACK_EVERY`), looking at
    /// about `budget` spans: `false` when it stopped at the budget with more to pack. Waits of
    /// a second or less are not worth it.
    fn pack_waiting(&self, now: Instant, budget: &mut usize) -> bool {
        if self.config.wait <= 2 * PACK_AFTER || self.buffered_spans() == 0 || !self.packer.due(now) {
            return true;
        }
        let sample = |n: usize| {
            let mut out = Vec::with_capacity(n);
            for shard in self.shards.each() {
                if out.len() >= n {
                    break;
                }
                shard.buffer.sample(n, &mut out);
            }
            out
        };
        let Some(dictionary) = self.packer.dictionary(now, sample) else { return true };
        let deadline_by = now + self.config.wait - PACK_AFTER;
        for mut shard in self.shards.each() {
            if *budget == 0 {
                break;
            }
            shard.buffer.pack(deadline_by, &dictionary, budget);
        }
        let finished = *budget > 0;
        self.packer.finished(finished);
        finished
    }

    /// Puts spans in the correlation hold; returns those it refused (no room), counted untagged.
    fn hold_spans(&self, spans: Vec<(Held, Vec<String>)>, now: Instant) -> Vec<Held> {
        if spans.is_empty() {
            return Vec::new();
        }
        if !self.has_hold {
            return spans.into_iter().map(|(h, _)| h).collect();
        }
        let mut values: Vec<String> = spans.iter().flat_map(|(_, v)| v.iter().cloned()).collect();
        values.sort_unstable();
        values.dedup();
        let refused = {
            let mut guard = self.hold.lock().unwrap_or_else(|e| e.into_inner());
            let Some(hold) = guard.as_mut() else { return spans.into_iter().map(|(h, _)| h).collect() };
            let put = hold.put(spans, now);
            self.metrics.hold_held.inc_by(put.held as u64);
            self.metrics.hold_full.inc_by(put.refused.len() as u64);
            self.report_hold(hold);
            put.refused
        };
        // A value bound by another request after these spans found it unbound claimed the hold
        // before they were in it: claim them now. (Run one request at a time, none is bound.)
        let bound: Vec<(String, Text)> =
            values.into_iter().filter_map(|v| self.shards.value(&v).values.get(v.as_str(), now).cloned().map(|o| (v, o))).collect();
        if !bound.is_empty() {
            let mut guard = self.hold.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(hold) = guard.as_mut() {
                for (value, order) in &bound {
                    hold.claim(value, order);
                }
            }
        }
        refused
    }

    /// Settles what the correlation hold let go of since the last call: with `admitted` the
    /// pipeline has put all of it in the queues and the hold forgets it; without, some found no
    /// room, and it goes again after a restart.
    pub fn confirm_released(&self, admitted: bool) {
        if !self.has_hold {
            return;
        }
        let mut guard = self.hold.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(hold) = guard.as_mut() {
            hold.confirm(admitted);
        }
    }

    /// Every waiting span, untagged, and what the correlation hold has claimed, tagged
    /// (shutdown, reload, `tracegate process`); the caller confirms the hold's part
    /// ([`OrderEnricher::confirm_released`]) once it has admitted everything.
    pub fn flush(&self) -> Vec<ResourceSpans> {
        let at = Instant::now() + self.config.wait + std::time::Duration::from_secs(1);
        self.let_go(at, usize::MAX, None, HoldRelease::Claimed).0
    }

    /// Every waiting span, untagged, leaving the correlation hold alone: what it keeps is on disk
    /// and takes no memory (the memory limiter's hard limit, beside the release task).
    pub fn flush_memory(&self) -> Vec<ResourceSpans> {
        let at = Instant::now() + self.config.wait + std::time::Duration::from_secs(1);
        self.let_go(at, usize::MAX, None, HoldRelease::Untouched).0
    }

    pub fn buffered_spans(&self) -> usize {
        self.buffered.load(Ordering::Acquire)
    }

    /// Takes a slot of the buffer for a span about to wait, if there is one left. Slots are taken
    /// from the shared count `SLOTS_AT_ONCE` at a time while there is room for that many, then
    /// one at a time, so that threads enriching at once do not contend on the count for every
    /// span; what a call did not use goes back when its [`Slots`] are dropped. Between calls the
    /// count is exact; while calls run, it (and the `buffer_spans` gauge) may count up to
    /// `SLOTS_AT_ONCE - 1` unused slots for each of them, and another call may find the buffer
    /// full that much early.
    fn reserve_buffer_slot(&self, slots: &mut Slots<'_>) -> bool {
        if slots.held == 0 {
            let max = self.config.max_buffered_spans;
            let take = |want: usize| {
                self.buffered.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n + want <= max).then_some(n + want)).is_ok()
            };
            if take(SLOTS_AT_ONCE) {
                slots.held = SLOTS_AT_ONCE;
            } else if take(1) {
                slots.held = 1;
            } else {
                return false;
            }
        }
        slots.held -= 1;
        true
    }

    /// A trace left the buffer with `spans` spans: it no longer waits on its links and values.
    fn forget(&self, trace: &TraceId, links: &[TraceId], values: &[String], spans: usize, tally: &mut Tally) {
        self.buffered.fetch_sub(spans, Ordering::AcqRel);
        tally.buffer_traces -= 1;
        self.unregister(trace, links, values);
    }

    /// Forgets that `trace` waits on `links` and `values`: it left the buffer. No lock is held
    /// from the trace's leaving to here, so another request may have parked spans of the trace
    /// again meanwhile and registered them with some of the same links or values, which the
    /// lines above then took away. A trace that waits again waits on them again (an entry
    /// twice only wakes it twice; waking a trace that has left does nothing).
    fn unregister(&self, trace: &TraceId, links: &[TraceId], values: &[String]) {
        if links.is_empty() && values.is_empty() {
            return;
        }
        for l in links {
            self.shards.trace(l).buffer.forget_link(l, trace);
        }
        for v in values {
            self.shards.value(v).buffer.forget_value(v, trace);
        }
        if self.shards.trace(trace).buffer.contains(trace) {
            for l in links {
                self.shards.trace(l).buffer.wait_on_trace(*l, *trace);
            }
            for v in values {
                self.shards.value(v).buffer.wait_on_value(v.clone(), *trace);
            }
        }
    }

    /// Registers a waiting trace with the traces it links to and the values it carries, each
    /// under its own shard's lock; the first of them already bound gives its order instead.
    fn register(&self, r: &Registration, now: Instant) -> Option<(Text, Origin)> {
        for l in &r.links {
            let mut shard = self.shards.trace(l);
            match shard.bound_order(l, now) {
                Some(order) => return Some((order, Origin::Link)),
                None => shard.buffer.wait_on_trace(*l, r.trace),
            }
        }
        for v in &r.values {
            let mut shard = self.shards.value(v);
            match shard.values.get(v.as_str(), now).cloned() {
                Some(order) => return Some((order, Origin::Correlation)),
                None => shard.buffer.wait_on_value(v.clone(), r.trace),
            }
        }
        None
    }

    fn report(&self, tally: &Tally) {
        tally.apply(&self.metrics);
        let add = |total: &AtomicI64, delta: i64| {
            if delta == 0 {
                total.load(Ordering::Relaxed)
            } else {
                total.fetch_add(delta, Ordering::Relaxed) + delta
            }
        };
        self.metrics.buffer_spans.set(self.buffered.load(Ordering::Relaxed) as i64);
        self.metrics.buffer_traces.set(add(&self.buffered_traces, tally.buffer_traces));
        self.metrics.trace_cache_entries.set(add(&self.trace_entries, tally.trace_entries));
        self.metrics.correlation_cache_entries.set(add(&self.value_entries, tally.value_entries));
    }

    fn report_hold(&self, hold: &CorrelationHold) {
        self.metrics.hold_spans.set(hold.span_count() as i64);
        self.metrics.hold_bytes.set(hold.bytes() as i64);
    }

    /// The order a span of an unbound trace joins through its links or correlation values.
    fn joined_order(&self, span: &Span, now: Instant) -> Option<(Text, Origin)> {
        for link in &span.links {
            let Ok(linked) = <TraceId>::try_from(link.trace_id.as_slice()) else {
                continue;
            };
            if let Some(order) = self.shards.trace(&linked).bound_order(&linked, now) {
                return Some((order, Origin::Link));
            }
        }
        self.values(span).iter().find_map(|v| self.shards.value(v).values.get(v.as_str(), now).cloned()).map(|o| (o, Origin::Correlation))
    }

    /// Binds a trace to an order, and everything waiting on that trace to the same order.
    /// `waiting`: the trace was found in an index of waiters, which may be out of date; it is
    /// bound only if it still waits.
    fn bind_trace(&self, run: &mut Run, trace: TraceId, order: &Text, origin: Origin, now: Instant, waiting: bool) {
        let mut work = vec![(trace, origin, waiting)];
        while let Some((t, origin, waiting)) = work.pop() {
            let waiters = {
                let mut shard = self.shards.trace(&t);
                if waiting && !shard.buffer.contains(&t) {
                    continue;
                }
                // Whichever way below, the trace is bound after this.
                run.traces.entry(t).or_default().bound = Some(true);
                if !shard.bind(t, order, origin, now, &mut run.tally) {
                    continue;
                }
                shard.buffer.linked_to(&t)
            };
            run.released.push(t);
            for w in waiters {
                work.push((w, Origin::Link, true));
            }
        }
    }

    /// Binds a correlation value to an order, and the buffered traces carrying it. A value bound
    /// already keeps its order (the first binding wins), and so do the traces carrying it: those
    /// that come later find that order in the cache.
    fn bind_value(&self, run: &mut Run, value: String, order: &Text, now: Instant) {
        let (waiting, order) = {
            let mut shard = self.shards.value(&value);
            let waiting = shard.buffer.carrying(&value);
            let order = shard.insert_value(Text::from(value.as_str()), order.clone(), now, &mut run.tally);
            (waiting, order)
        };
        let order = &order;
        // After the binding is visible: spans on their way to the hold check it once they are in
        // (see `hold_spans`), so that one of the two claims them.
        if self.has_hold {
            let mut guard = self.hold.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(hold) = guard.as_mut() {
                hold.claim(&value, order);
            }
        }
        for t in waiting {
            self.bind_trace(run, t, order, Origin::Correlation, now, true);
        }
    }

    /// Tags a span of a bound trace with the trace's order and user, and counts it; a trace bound
    /// to two orders (or not bound) leaves it untagged, counted as ambiguous.
    fn tag_bound(&self, span: &mut Span, resource: &[KeyValue], info: &TraceInfo, tally: &mut Tally) {
        match &info.binding {
            Some(b) if !b.ambiguous => {
                self.tag(span, resource, &b.order, info.enduser.as_deref());
                tally.tagged(b.origin);
            }
            _ => tally.untagged_ambiguous += 1,
        }
    }

    /// Writes the order's attributes on a span.
    fn tag(&self, span: &mut Span, resource: &[KeyValue], order: &str, enduser: Option<&str>) {
        if attrs::get(&span.attributes, "order.id").as_deref() != Some(order) {
            attrs::set(&mut span.attributes, "order.id", order);
        }
        if !attrs::has(&span.attributes, "order.stage") {
            let service = attrs::get(resource, "service.name").map(|s| s.into_owned()).unwrap_or_default();
            if let Some(step) = rules::classify(&self.rules, span, resource, &service, &self.config.status_keys) {
                attrs::set(&mut span.attributes, "order.stage", &step.stage);
                if let Some(status) = step.status {
                    if !attrs::has(&span.attributes, "order.status") {
                        attrs::set(&mut span.attributes, "order.status", &status);
                    }
                }
            }
        }
        // A status is a fact of its own: whatever the stage (even one set before tracegate).
        if !attrs::has(&span.attributes, "order.status") {
            if let Some(status) = rules::span_status(span, &self.config.status_keys) {
                attrs::set(&mut span.attributes, "order.status", &status);
            }
        }
        if let Some(user) = enduser {
            if !attrs::has(&span.attributes, "enduser.id") {
                attrs::set(&mut span.attributes, "enduser.id", user);
            }
        }
    }
}

/// What letting go of spans does with the correlation hold. Whatever it takes is confirmed by
/// the caller once admitted ([`OrderEnricher::confirm_released`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum HoldRelease {
    /// Drops what is past its time and takes claimed spans: the release task.
    Due,
    /// Takes claimed spans: shutdown and reload.
    Claimed,
    /// Leaves the hold alone.
    Untouched,
}

fn resource_attrs(rs: &ResourceSpans) -> &[KeyValue] {
    rs.resource.as_ref().map(|r| r.attributes.as_slice()).unwrap_or(&[])
}

fn trace_id(span: &Span) -> Option<TraceId> {
    <TraceId>::try_from(span.trace_id.as_slice()).ok().filter(|t| t.iter().any(|b| *b != 0))
}

#[cfg(test)]
mod concurrent_tests;
#[cfg(test)]
mod tests;
