//! The `order_enrich` processor: every span that belongs to an order gets `order.id`, every span
//! that records a step gets `order.stage` (and `order.status`), and `enduser.id` travels through
//! the trace.
//!
//! A request is handled in three passes under one lock:
//! 1. *discover*: spans that carry an order id bind their trace (and their correlation values)
//!    to it; spans that carry a user id bind their trace to the user;
//! 2. *join*: spans of still unbound traces join an order through a span link to a bound trace
//!    or a bound correlation value; each new binding also releases buffered traces waiting on it;
//! 3. *tag*: spans of bound traces are tagged and classified by the rules; spans of unbound
//!    traces wait in the `TraceBuffer` (bounded in time and size) or go on untagged.
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
mod rules;

use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};
use regex::Regex;
use tokio::time::Instant;

pub use buffer::TraceId;
pub use config::{default_rules, CorrelationHoldConfig, OrderEnrichConfig, RuleConfig};

use self::buffer::{regroup, Held, ResourceCtx, ScopeCtx, TraceBuffer};
use self::cache::TtlCache;
use self::hold::CorrelationHold;
use self::rules::Rule;
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

#[derive(Debug, Clone)]
struct Binding {
    order: String,
    origin: Origin,
    ambiguous: bool,
}

#[derive(Debug, Clone, Default)]
struct TraceInfo {
    binding: Option<Binding>,
    enduser: Option<String>,
}

struct State {
    traces: TtlCache<TraceId, TraceInfo>,
    values: TtlCache<String, String>,
    buffer: TraceBuffer,
    hold: Option<CorrelationHold>,
}

/// At most this many claimed spans leave the correlation hold per release round.
const HOLD_RELEASE_BATCH: usize = 10_000;

pub struct OrderEnricher {
    config: OrderEnrichConfig,
    patterns: Vec<(Vec<String>, Regex)>,
    rules: Vec<Rule>,
    state: Mutex<State>,
    metrics: EnrichMetrics,
}

/// What the discover pass learnt about one span.
struct Seen {
    trace: Option<TraceId>,
    own: Option<String>,
}

impl OrderEnricher {
    pub fn new(config: OrderEnrichConfig, metrics: EnrichMetrics) -> Result<OrderEnricher, regex::Error> {
        let patterns = config
            .order_id_patterns
            .iter()
            .map(|p| Ok((p.attributes.clone(), Regex::new(&p.regex)?)))
            .collect::<Result<_, regex::Error>>()?;
        let rule_configs = config.rules.clone().unwrap_or_else(|| default_rules(&config.status_keys));
        let rules = rules::compile(&rule_configs)?;
        let state = State {
            traces: TtlCache::new(config.trace_cache.ttl, config.trace_cache.max_entries),
            values: TtlCache::new(config.correlation_cache.ttl, config.correlation_cache.max_entries),
            buffer: TraceBuffer::new(config.max_buffered_spans),
            hold: None,
        };
        Ok(OrderEnricher { config, patterns, rules, state: Mutex::new(state), metrics })
    }

    /// Opens the correlation hold of `pipeline`, when one is configured.
    pub fn with_correlation_hold(self, pipeline: &str) -> Result<OrderEnricher, String> {
        if let Some(c) = &self.config.correlation_hold {
            let hold = CorrelationHold::open(&c.file(pipeline), c.ttl, c.max_bytes.0).map_err(|e| crate::shared::error_chain(&e))?;
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            st.hold = Some(hold);
            self.report(&st);
        }
        Ok(self)
    }

    pub fn correlation_keys(&self) -> &[String] {
        &self.config.correlation_keys
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
                re.captures(&value).and_then(|c| c.name("order_id")).map(|m| m.as_str().to_string())
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
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let st = &mut *guard;
        st.traces.expire(now);
        st.values.expire(now);
        let mut released: Vec<TraceId> = Vec::new();

        // 1. Discover.
        let mut seen: Vec<Seen> = Vec::new();
        for rs in &batch {
            let resource = resource_attrs(rs);
            for span in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
                let trace = trace_id(span);
                let own = self.own_order(span, resource);
                if let (Some(t), Some(order)) = (trace, own.as_ref()) {
                    self.bind_trace(st, t, order, Origin::Own, now, &mut released);
                    for v in self.values(span) {
                        self.bind_value(st, v, order, now, &mut released);
                    }
                }
                if let (Some(t), Some(user)) = (trace, self.enduser(span)) {
                    set_enduser(st, t, user, now);
                }
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
                    if s.own.is_some() || st.traces.get(&t, now).is_some_and(|i| i.binding.is_some()) {
                        continue;
                    }
                    if let Some((order, origin)) = self.joined_order(st, span, now) {
                        self.bind_trace(st, t, &order, origin, now, &mut released);
                    }
                }
            }
        }

        // 3. Tag, hold, or pass through.
        let deadline = now + self.config.wait;
        // Spans that will not wait in the buffer but may wait in the correlation hold.
        let mut to_hold: Vec<(Held, Vec<String>)> = Vec::new();
        let mut out = Vec::with_capacity(batch.len());
        let mut i = 0;
        for mut rs in batch {
            let resource_ctx: std::cell::OnceCell<Arc<ResourceCtx>> = std::cell::OnceCell::new();
            let mut kept_scopes = Vec::with_capacity(rs.scope_spans.len());
            for mut ss in std::mem::take(&mut rs.scope_spans) {
                let scope_ctx: std::cell::OnceCell<Arc<ScopeCtx>> = std::cell::OnceCell::new();
                let mut kept = Vec::with_capacity(ss.spans.len());
                for mut span in std::mem::take(&mut ss.spans) {
                    let s = &seen[i];
                    i += 1;
                    let info = s.trace.and_then(|t| st.traces.get(&t, now)).cloned().unwrap_or_default();
                    let resource = resource_attrs(&rs);
                    match (&s.own, &info.binding) {
                        (Some(own), _) => {
                            self.tag(&mut span, resource, own, info.enduser.as_deref());
                            self.metrics.tagged_own.inc();
                        }
                        (None, Some(b)) if !b.ambiguous => {
                            self.tag(&mut span, resource, &b.order, info.enduser.as_deref());
                            self.count_tagged(b.origin);
                        }
                        (None, Some(_)) => {
                            self.metrics.untagged_ambiguous.inc();
                        }
                        (None, None) => {
                            if let (Some(t), false) = (s.trace, self.config.wait.is_zero()) {
                                let held = Held {
                                    resource: resource_ctx
                                        .get_or_init(|| {
                                            Arc::new(ResourceCtx { resource: rs.resource.clone(), schema_url: rs.schema_url.clone() })
                                        })
                                        .clone(),
                                    scope: scope_ctx
                                        .get_or_init(|| Arc::new(ScopeCtx { scope: ss.scope.clone(), schema_url: ss.schema_url.clone() }))
                                        .clone(),
                                    span,
                                };
                                let links =
                                    held.span.links.iter().filter_map(|l| <TraceId>::try_from(l.trace_id.as_slice()).ok()).collect();
                                let values = self.values(&held.span);
                                match st.buffer.hold(t, held, deadline, links, values) {
                                    Ok(()) => continue,
                                    Err(back) => {
                                        let values = self.values(&back.span);
                                        if st.hold.is_some() && !values.is_empty() {
                                            to_hold.push((back, values));
                                            continue;
                                        }
                                        self.metrics.untagged_buffer_full.inc();
                                        span = back.span;
                                    }
                                }
                            } else {
                                let values = self.values(&span);
                                if st.hold.is_some() && !values.is_empty() {
                                    let held = Held {
                                        resource: resource_ctx
                                            .get_or_init(|| {
                                                Arc::new(ResourceCtx { resource: rs.resource.clone(), schema_url: rs.schema_url.clone() })
                                            })
                                            .clone(),
                                        scope: scope_ctx
                                            .get_or_init(|| {
                                                Arc::new(ScopeCtx { scope: ss.scope.clone(), schema_url: ss.schema_url.clone() })
                                            })
                                            .clone(),
                                        span,
                                    };
                                    to_hold.push((held, values));
                                    continue;
                                }
                                self.metrics.untagged_no_wait.inc();
                            }
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

        let refused = self.hold_spans(st, to_hold, now);
        if !refused.is_empty() {
            out.extend(regroup(refused));
        }

        // Traces this request bound: their buffered spans go out with it.
        let mut freed = Vec::new();
        for t in released {
            freed.extend(st.buffer.take(&t));
        }
        if !freed.is_empty() {
            let mut groups = regroup(freed);
            for rs in &mut groups {
                let resource = rs.resource.as_ref().map(|r| r.attributes.clone()).unwrap_or_default();
                for span in rs.scope_spans.iter_mut().flat_map(|ss| &mut ss.spans) {
                    let info = trace_id(span).and_then(|t| st.traces.get(&t, now)).cloned().unwrap_or_default();
                    match info.binding {
                        Some(b) if !b.ambiguous => {
                            self.tag(span, &resource, &b.order, info.enduser.as_deref());
                            self.count_tagged(b.origin);
                        }
                        _ => {
                            self.metrics.untagged_ambiguous.inc();
                        }
                    }
                }
            }
            out.extend(groups);
        }
        self.report(st);
        out
    }

    /// Spans whose wait is over: untagged, or into the correlation hold when they carry a
    /// correlation value; and the held spans an order claimed, tagged.
    pub fn expire(&self, now: Instant) -> Vec<ResourceSpans> {
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let st = &mut *guard;
        let mut out = Vec::new();
        let mut to_hold = Vec::new();
        for held in st.buffer.expired(now) {
            let values = if st.hold.is_some() { self.values(&held.span) } else { Vec::new() };
            if values.is_empty() {
                self.metrics.untagged_timeout.inc();
                out.push(held);
            } else {
                to_hold.push((held, values));
            }
        }
        out.extend(self.hold_spans(st, to_hold, now));
        let mut out = regroup(out);
        if let Some(hold) = &mut st.hold {
            let expired = hold.expire(now);
            self.metrics.hold_expired.inc_by(expired as u64);
            let claimed = hold.take_claimed(HOLD_RELEASE_BATCH, now);
            if !claimed.is_empty() {
                self.metrics.hold_released.inc_by(claimed.len() as u64);
                let mut spans = Vec::with_capacity(claimed.len());
                for (order, mut held) in claimed {
                    let resource = held.resource.resource.as_ref().map(|r| r.attributes.as_slice()).unwrap_or(&[]);
                    self.tag(&mut held.span, resource, &order, None);
                    self.metrics.tagged_correlation.inc();
                    spans.push(held);
                }
                out.extend(regroup(spans));
            }
        }
        self.report(st);
        out
    }

    /// Puts spans in the correlation hold; returns those it refused (no room), counted untagged.
    fn hold_spans(&self, st: &mut State, spans: Vec<(Held, Vec<String>)>, now: Instant) -> Vec<Held> {
        if spans.is_empty() {
            return Vec::new();
        }
        let Some(hold) = &mut st.hold else { return spans.into_iter().map(|(h, _)| h).collect() };
        // (A value bound while its span waited in the buffer released the span then; none of
        // these values is bound yet.)
        let put = hold.put(spans, now);
        self.metrics.hold_held.inc_by(put.held as u64);
        self.metrics.hold_full.inc_by(put.refused.len() as u64);
        put.refused
    }

    /// Forgets the spans the correlation hold released last: the pipeline has admitted them
    /// (shutdown; otherwise the next release confirms the previous one).
    pub fn confirm_released(&self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(hold) = &mut st.hold {
            hold.confirm();
        }
    }

    /// Every waiting span, untagged (shutdown, `tracegate process`).
    pub fn flush(&self) -> Vec<ResourceSpans> {
        self.expire(Instant::now() + self.config.wait + std::time::Duration::from_secs(1))
    }

    pub fn buffered_spans(&self) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).buffer.span_count()
    }

    fn report(&self, st: &State) {
        if let Some(hold) = &st.hold {
            self.metrics.hold_spans.set(hold.span_count() as i64);
            self.metrics.hold_bytes.set(hold.bytes() as i64);
        }
        self.metrics.buffer_spans.set(st.buffer.span_count() as i64);
        self.metrics.buffer_traces.set(st.buffer.trace_count() as i64);
        self.metrics.trace_cache_entries.set(st.traces.len() as i64);
        self.metrics.correlation_cache_entries.set(st.values.len() as i64);
        self.metrics.trace_cache_evictions.inc_by(st.traces.evicted - self.metrics.trace_cache_evictions.get().min(st.traces.evicted));
        self.metrics
            .correlation_cache_evictions
            .inc_by(st.values.evicted - self.metrics.correlation_cache_evictions.get().min(st.values.evicted));
    }

    fn count_tagged(&self, origin: Origin) {
        match origin {
            Origin::Own => self.metrics.tagged_trace.inc(),
            Origin::Link => self.metrics.tagged_link.inc(),
            Origin::Correlation => self.metrics.tagged_correlation.inc(),
        };
    }

    /// The order a span of an unbound trace joins through its links or correlation values.
    fn joined_order(&self, st: &State, span: &Span, now: Instant) -> Option<(String, Origin)> {
        for link in &span.links {
            let Ok(linked) = <TraceId>::try_from(link.trace_id.as_slice()) else {
                continue;
            };
            if let Some(Binding { order, ambiguous: false, .. }) = st.traces.get(&linked, now).and_then(|i| i.binding.clone()) {
                return Some((order, Origin::Link));
            }
        }
        self.values(span).iter().find_map(|v| st.values.get(v, now).cloned()).map(|o| (o, Origin::Correlation))
    }

    /// Binds a trace to an order, and everything waiting on that trace to the same order.
    fn bind_trace(&self, st: &mut State, trace: TraceId, order: &str, origin: Origin, now: Instant, released: &mut Vec<TraceId>) {
        let mut work = vec![(trace, origin)];
        while let Some((t, origin)) = work.pop() {
            match st.traces.get_mut(&t, now) {
                Some(info) => match &mut info.binding {
                    Some(b) if b.order != order && !b.ambiguous => {
                        b.ambiguous = true;
                        continue;
                    }
                    Some(_) => continue,
                    None => info.binding = Some(Binding { order: order.to_string(), origin, ambiguous: false }),
                },
                None => {
                    st.traces.insert(
                        t,
                        TraceInfo { binding: Some(Binding { order: order.to_string(), origin, ambiguous: false }), enduser: None },
                        now,
                    );
                }
            }
            released.push(t);
            for waiting in st.buffer.linked_to(&t) {
                work.push((waiting, Origin::Link));
            }
        }
    }

    /// Binds a correlation value to an order, and the buffered traces carrying it.
    fn bind_value(&self, st: &mut State, value: String, order: &str, now: Instant, released: &mut Vec<TraceId>) {
        let waiting = st.buffer.carrying(&value);
        if let Some(hold) = &mut st.hold {
            hold.claim(&value, order);
        }
        st.values.insert(value, order.to_string(), now);
        for t in waiting {
            self.bind_trace(st, t, order, Origin::Correlation, now, released);
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

fn set_enduser(st: &mut State, trace: TraceId, user: String, now: Instant) {
    match st.traces.get_mut(&trace, now) {
        Some(info) => {
            if info.enduser.is_none() {
                info.enduser = Some(user);
            }
        }
        None => {
            st.traces.insert(trace, TraceInfo { binding: None, enduser: Some(user) }, now);
        }
    }
}

fn resource_attrs(rs: &ResourceSpans) -> &[KeyValue] {
    rs.resource.as_ref().map(|r| r.attributes.as_slice()).unwrap_or(&[])
}

fn trace_id(span: &Span) -> Option<TraceId> {
    <TraceId>::try_from(span.trace_id.as_slice()).ok().filter(|t| t.iter().any(|b| *b != 0))
}

#[cfg(test)]
mod tests;
