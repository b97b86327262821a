//! `TraceBuffer`: spans of traces whose order is not known yet, held for a bounded time. Each held
//! span keeps its resource and scope so that it can be released on its own later. The enricher
//! keeps one buffer per shard and bounds the spans of all of them together.
//!
//! A waiting span is kept encoded ([`Parked`]): the protobuf bytes of the span alone, a fifth to
//! a seventh of its decoded size (every attribute key and value of a decoded span is an
//! allocation of its own), with its resource and scope shared with the other spans of its
//! request. It is decoded again when it leaves.
//!
//! The spans that wait share one copy of each resource and scope, whatever request they came in
//! ([`shared_resource`], [`shared_scope`]).

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};

use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use tokio::time::Instant;

use super::pack::{Dictionary, UnpackError};

pub type TraceId = [u8; 16];

/// The buffer's and caches' maps: foldhash, seeded per map, instead of the standard map's SipHash
/// (7% of `bench-enrich`'s time went to hashing trace ids with it).
pub(super) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

#[derive(Debug, PartialEq)]
pub struct ResourceCtx {
    pub resource: Option<Resource>,
    pub schema_url: String,
}

#[derive(Debug, PartialEq)]
pub struct ScopeCtx {
    pub scope: Option<InstrumentationScope>,
    pub schema_url: String,
}

/// The resource of `rs` as spans that wait keep it: the copy other waiting spans already share,
/// or a new one. A service sends the same resource with every request, and a waiting span keeps
/// its resource for as long as it waits: with a copy per request, the resources of the requests
/// of the last `wait` took more memory than the waiting spans themselves (issue 10).
pub fn shared_resource(rs: &ResourceSpans) -> Arc<ResourceCtx> {
    let mut key = Vec::with_capacity(rs.resource.as_ref().map_or(0, Message::encoded_len) + rs.schema_url.len() + 8);
    encode_key(rs.resource.as_ref(), &rs.schema_url, &mut key);
    RESOURCES
        .with(|r| r.borrow_mut().get_or_insert(key, || ResourceCtx { resource: rs.resource.clone(), schema_url: rs.schema_url.clone() }))
}

/// A scope and its schema URL as spans that wait keep them (see [`shared_resource`]).
pub fn shared_scope(scope: Option<&InstrumentationScope>, schema_url: &str) -> Arc<ScopeCtx> {
    let mut key = Vec::with_capacity(scope.map_or(0, Message::encoded_len) + schema_url.len() + 8);
    encode_key(scope, schema_url, &mut key);
    SCOPES.with(|s| s.borrow_mut().get_or_insert(key, || ScopeCtx { scope: scope.cloned(), schema_url: schema_url.to_owned() }))
}

/// A message and a schema URL as one key: the message length-delimited (or a marker when it is
/// absent), then the URL.
fn encode_key(message: Option<&impl Message>, schema_url: &str, key: &mut Vec<u8>) {
    match message {
        Some(m) => {
            key.push(1);
            // Writing into a Vec cannot run out of room.
            let _ = m.encode_length_delimited(key);
        }
        None => key.push(0),
    }
    key.extend_from_slice(schema_url.as_bytes());
}

thread_local! {
    // One table per thread: no lock on the request path, and at most a copy per thread.
    static RESOURCES: RefCell<Interner<ResourceCtx>> = RefCell::new(Interner::new());
    static SCOPES: RefCell<Interner<ScopeCtx>> = RefCell::new(Interner::new());
}

/// Shared copies by their encoded form. The table holds them weakly: a copy goes when its last
/// span leaves, and its entry at the next sweep (when the table has doubled since the last one).
struct Interner<T> {
    copies: FastMap<Box<[u8]>, Weak<T>>,
    sweep_at: usize,
}

impl<T> Interner<T> {
    const MIN_SWEEP: usize = 64;

    fn new() -> Self {
        Interner { copies: FastMap::default(), sweep_at: Self::MIN_SWEEP }
    }

    fn get_or_insert(&mut self, key: Vec<u8>, make: impl FnOnce() -> T) -> Arc<T> {
        if let Some(shared) = self.copies.get(key.as_slice()).and_then(Weak::upgrade) {
            return shared;
        }
        let shared = Arc::new(make());
        self.copies.insert(key.into_boxed_slice(), Arc::downgrade(&shared));
        if self.copies.len() >= self.sweep_at {
            self.copies.retain(|_, copy| copy.strong_count() > 0);
            self.copies.shrink_to_fit();
            self.sweep_at = (self.copies.len() * 2).max(Self::MIN_SWEEP);
        }
        shared
    }
}

/// A span out of its request, with where it came from.
pub struct Held {
    pub resource: Arc<ResourceCtx>,
    pub scope: Arc<ScopeCtx>,
    pub span: Span,
}

/// A span's protobuf bytes as it waits, and whether its status is an error.
pub struct Encoded {
    bytes: Box<[u8]>,
    error: bool,
}

impl Encoded {
    pub fn new(span: &Span) -> Encoded {
        let error = span.status.as_ref().is_some_and(|s| s.code == StatusCode::Error as i32);
        // `encode_to_vec` allocates exactly the encoded length: the box takes it as it is.
        Encoded { bytes: span.encode_to_vec().into_boxed_slice(), error }
    }
}

/// A span waiting in the buffer: encoded, with where it came from.
pub struct Parked {
    resource: Arc<ResourceCtx>,
    scope: Arc<ScopeCtx>,
    span: Box<[u8]>,
    /// The dictionary `span` is packed with (see `pack.rs`), or `None`: `span` is plain.
    packed: Option<Arc<Dictionary>>,
    /// Its status is an error: what a sampler after the enricher needs to know, with the trace
    /// id, to drop the span without decoding it.
    pub error: bool,
    /// It carries a correlation value (it may go to the correlation hold when its wait is over).
    pub has_values: bool,
}

impl Parked {
    /// A span encoded by [`Encoded::new`] (before the trace's lock is taken), with where it
    /// came from.
    pub fn encoded(resource: Arc<ResourceCtx>, scope: Arc<ScopeCtx>, span: Encoded, has_values: bool) -> Parked {
        Parked { resource, scope, span: span.bytes, packed: None, error: span.error, has_values }
    }

    /// The span decoded again (unpacked first if it was packed). It was encoded by
    /// [`Encoded::new`] from a span that had been decoded, so it decodes; should it not, the
    /// error says why.
    pub fn unpark(self) -> Result<Held, UnparkError> {
        let span = match &self.packed {
            None => Span::decode(&*self.span)?,
            Some(dictionary) => Span::decode(dictionary.unpack(&self.span)?.as_slice())?,
        };
        Ok(Held { span, resource: self.resource, scope: self.scope })
    }

    /// Packs the span with `dictionary`, unless it is packed already or would not shrink.
    fn pack(&mut self, dictionary: &Arc<Dictionary>) {
        if self.packed.is_none() {
            if let Some(packed) = dictionary.pack(&self.span) {
                self.span = packed;
                self.packed = Some(dictionary.clone());
            }
        }
    }
}

/// Why a waiting span does not come back.
#[derive(Debug, thiserror::Error)]
pub enum UnparkError {
    #[error("it does not decode")]
    Decode(#[from] prost::DecodeError),
    #[error("it does not unpack")]
    Unpack(#[from] UnpackError),
}

/// Decodes parked spans; one that does not decode (see [`Parked::unpark`]) is logged and left
/// out.
pub fn unpark_all(parked: Vec<Parked>) -> Vec<Held> {
    let mut out = Vec::with_capacity(parked.len());
    for p in parked {
        match p.unpark() {
            Ok(held) => out.push(held),
            Err(error) => {
                tracing::error!(error = %crate::shared::error_chain(&error), "a span waiting for its order does not come back; dropped")
            }
        }
    }
    out
}

struct Waiting {
    spans: Vec<Parked>,
    /// How many of `spans` are not packed (yet).
    plain: u32,
    deadline: Instant,
    /// What few traces have: the traces this one links to and the correlation values it
    /// carries (if one of them gets an order, so does this trace). Boxed: a trace that waits
    /// with neither (tens of thousands at once on a busy gateway) takes 56 bytes here.
    joins: Option<Box<Joins>>,
}

#[derive(Default)]
struct Joins {
    links: Vec<TraceId>,
    values: Vec<String>,
}

/// Packs the plain spans of a waiting trace and lowers `budget` by them.
fn pack_trace(waiting: &mut Waiting, dictionary: &Arc<Dictionary>, budget: &mut usize) {
    if waiting.plain == 0 {
        return;
    }
    *budget = budget.saturating_sub(waiting.plain as usize);
    for span in &mut waiting.spans {
        span.pack(dictionary);
    }
    // Spans that would not shrink stay plain and are not tried again.
    waiting.plain = 0;
    // Most of a span's wait is packed: its place in the list costs no more than itself from
    // here on (a list that grew by doubling holds up to twice its spans).
    waiting.spans.shrink_to_fit();
}

/// The spans of one trace, out of the buffer, with the links and values it was waiting on (the
/// indexes of those live in the shards of those traces and values; see [`TraceBuffer::forget_link`]).
pub struct Taken {
    pub spans: Vec<Parked>,
    pub links: Vec<TraceId>,
    pub values: Vec<String>,
}

/// One shard's part of the buffer: the waiting spans of its traces, and who waits on its traces
/// and values (a waiter may live in another shard). The bound on spans is kept by the caller,
/// across shards.
pub struct TraceBuffer {
    traces: FastMap<TraceId, Waiting>,
    /// Every trace that came to wait, in order of its deadline, until the deadline passes (a
    /// trace that left earlier stays listed until then).
    deadlines: VecDeque<(TraceId, Instant)>,
    /// How many entries at the front of `deadlines` packing has gone past. Each run starts
    /// there: going over the whole list every run (every trace that came to wait in the last
    /// `wait`, most of them long gone) held up acknowledgements as the buffer grew (issue 10's
    /// p99).
    packed_through: usize,
    /// Traces packing went past that have plain spans again (a span that came later), with
    /// their deadline (a trace that left and waits again has another).
    repack: Vec<(TraceId, Instant)>,
    waiting_on_trace: FastMap<TraceId, Vec<TraceId>>,
    waiting_on_value: FastMap<String, Vec<TraceId>>,
}

impl TraceBuffer {
    pub fn new() -> Self {
        TraceBuffer {
            traces: FastMap::default(),
            deadlines: VecDeque::new(),
            packed_through: 0,
            repack: Vec::new(),
            waiting_on_trace: FastMap::default(),
            waiting_on_value: FastMap::default(),
        }
    }

    /// Whether spans of `trace` wait here.
    pub fn contains(&self, trace: &TraceId) -> bool {
        self.traces.contains_key(trace)
    }

    /// Holds a span of `trace` (a trace of this shard) until `deadline` (the trace's first
    /// deadline wins). Returns the links and values new to the trace, to be indexed with
    /// [`TraceBuffer::wait_on_trace`] and [`TraceBuffer::wait_on_value`] in their own shards,
    /// and whether the trace is new to the buffer.
    pub fn hold(
        &mut self,
        trace: TraceId,
        held: Parked,
        deadline: Instant,
        links: Vec<TraceId>,
        values: Vec<String>,
    ) -> (Vec<TraceId>, Vec<String>, bool) {
        let mut new_trace = false;
        let entry = self.traces.entry(trace).or_insert_with(|| {
            new_trace = true;
            self.deadlines.push_back((trace, deadline));
            Waiting { spans: Vec::new(), plain: 0, deadline, joins: None }
        });
        if !new_trace && entry.plain == 0 && held.packed.is_none() {
            // Packed before (only packing leaves a waiting trace without plain spans): packing
            // has gone past it and comes back for this span through `repack`.
            self.repack.push((trace, entry.deadline));
        }
        entry.plain += u32::from(held.packed.is_none());
        entry.spans.push(held);
        let (mut new_links, mut new_values) = (Vec::new(), Vec::new());
        if !links.is_empty() || !values.is_empty() {
            let joins = entry.joins.get_or_insert_with(Default::default);
            for l in links {
                if !joins.links.contains(&l) {
                    joins.links.push(l);
                    new_links.push(l);
                }
            }
            for v in values {
                if !joins.values.contains(&v) {
                    joins.values.push(v.clone());
                    new_values.push(v);
                }
            }
        }
        (new_links, new_values, new_trace)
    }

    /// Packs the plain spans of the traces whose deadline is at or before `deadline_by` (those
    /// that have waited long enough), oldest first, until `budget` spans were looked at (whole
    /// traces), going on from where the last run stopped; then those of traces it went past that
    /// got plain spans since. The budget is lowered by the spans looked at; at 0, more may be
    /// left.
    pub fn pack(&mut self, deadline_by: Instant, dictionary: &Arc<Dictionary>, budget: &mut usize) {
        while let Some(&(trace, deadline)) = self.deadlines.get(self.packed_through) {
            if deadline > deadline_by || *budget == 0 {
                break;
            }
            self.packed_through += 1;
            if let Some(waiting) = self.traces.get_mut(&trace).filter(|w| w.deadline == deadline) {
                pack_trace(waiting, dictionary, budget);
            }
        }
        // Every entry is looked at: those of traces that have left go, whatever the budget.
        let mut i = 0;
        while i < self.repack.len() {
            let (trace, deadline) = self.repack[i];
            match self.traces.get_mut(&trace).filter(|w| w.deadline == deadline) {
                Some(_) if *budget == 0 => i += 1,
                Some(waiting) => {
                    pack_trace(waiting, dictionary, budget);
                    self.repack.swap_remove(i);
                }
                None => {
                    self.repack.swap_remove(i);
                }
            }
        }
        if self.repack.is_empty() && self.repack.capacity() > 1024 {
            self.repack = Vec::new();
        }
    }

    #[cfg(test)]
    pub fn packed_spans(&self) -> usize {
        self.traces.values().flat_map(|w| &w.spans).filter(|p| p.packed.is_some()).count()
    }

    /// Up to `n` plain waiting spans, copied (a sample for a packing dictionary).
    pub fn sample(&self, n: usize, out: &mut Vec<Box<[u8]>>) {
        let plain = self.traces.values().flat_map(|w| &w.spans).filter(|p| p.packed.is_none());
        out.extend(plain.take(n.saturating_sub(out.len())).map(|p| p.span.clone()));
    }

    /// Records that `waiter` waits on `linked` (a trace of this shard).
    pub fn wait_on_trace(&mut self, linked: TraceId, waiter: TraceId) {
        self.waiting_on_trace.entry(linked).or_default().push(waiter);
    }

    /// Records that `waiter` waits on the correlation `value` (a value of this shard).
    pub fn wait_on_value(&mut self, value: String, waiter: TraceId) {
        self.waiting_on_value.entry(value).or_default().push(waiter);
    }

    /// Traces that wait on `trace` through a link (some may have left the buffer since).
    pub fn linked_to(&mut self, trace: &TraceId) -> Vec<TraceId> {
        self.waiting_on_trace.remove(trace).unwrap_or_default()
    }

    /// Traces that wait on the correlation `value` (some may have left the buffer since).
    pub fn carrying(&mut self, value: &str) -> Vec<TraceId> {
        self.waiting_on_value.remove(value).unwrap_or_default()
    }

    /// Takes every held span of a trace.
    pub fn take(&mut self, trace: &TraceId) -> Option<Taken> {
        self.traces.remove(trace).map(|w| {
            let Joins { links, values } = w.joins.map(|j| *j).unwrap_or_default();
            Taken { spans: w.spans, links, values }
        })
    }

    /// Takes the spans of the traces whose deadline is at or before `now`, except those of
    /// traces `keep` says an order has claimed (the request that bound them takes them), oldest
    /// first, until `budget` spans are taken (whole traces: the last one may go past it). The
    /// budget is lowered by the spans taken; at 0, more may be due.
    pub fn expired(&mut self, now: Instant, keep: impl Fn(&TraceId) -> bool, budget: &mut usize) -> Vec<(TraceId, Taken)> {
        let mut out = Vec::new();
        while let Some((trace, deadline)) = self.deadlines.front().copied() {
            if deadline > now || *budget == 0 {
                break;
            }
            self.deadlines.pop_front();
            self.packed_through = self.packed_through.saturating_sub(1);
            // The trace may have been released already, or re-buffered with a later deadline.
            if self.traces.get(&trace).is_some_and(|w| w.deadline == deadline) && !keep(&trace) {
                if let Some(taken) = self.take(&trace) {
                    *budget = budget.saturating_sub(taken.spans.len());
                    out.push((trace, taken));
                }
            }
        }
        out
    }

    /// Forgets that `waiter` waits on `linked` (it left the buffer).
    pub fn forget_link(&mut self, linked: &TraceId, waiter: &TraceId) {
        if let Some(list) = self.waiting_on_trace.get_mut(linked) {
            list.retain(|t| t != waiter);
            if list.is_empty() {
                self.waiting_on_trace.remove(linked);
            }
        }
    }

    /// Forgets that `waiter` waits on `value` (it left the buffer).
    pub fn forget_value(&mut self, value: &str, waiter: &TraceId) {
        if let Some(list) = self.waiting_on_value.get_mut(value) {
            list.retain(|t| t != waiter);
            if list.is_empty() {
                self.waiting_on_value.remove(value);
            }
        }
    }
}

/// Groups held spans back into OTLP structure (spans sharing a resource and scope stay together),
/// in the order their resources first appear.
pub fn regroup(held: Vec<Held>) -> Vec<ResourceSpans> {
    let mut out: Vec<(Arc<ResourceCtx>, Vec<(Arc<ScopeCtx>, Vec<Span>)>)> = Vec::new();
    // Released spans come from thousands of requests: find a resource's group by its address
    // (a span's resource is shared by its request's spans), not by a search through the groups.
    let mut index: FastMap<*const ResourceCtx, usize> = FastMap::default();
    for h in held {
        let ri = *index.entry(Arc::as_ptr(&h.resource)).or_insert_with(|| {
            out.push((h.resource.clone(), Vec::new()));
            out.len() - 1
        });
        let scopes = &mut out[ri].1;
        match scopes.iter_mut().find(|(s, _)| Arc::ptr_eq(s, &h.scope)) {
            Some((_, spans)) => spans.push(h.span),
            None => scopes.push((h.scope.clone(), vec![h.span])),
        }
    }
    out.into_iter()
        .map(|(r, scopes)| ResourceSpans {
            resource: r.resource.clone(),
            schema_url: r.schema_url.clone(),
            scope_spans: scopes
                .into_iter()
                .map(|(s, spans)| ScopeSpans { scope: s.scope.clone(), schema_url: s.schema_url.clone(), spans })
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::resource::v1::Resource;

    use super::super::{OrderEnrichConfig, OrderEnricher};
    use super::*;
    use crate::telemetry::Metrics;

    fn text(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(any_value::Value::StringValue(value.into())) }),
            ..Default::default()
        }
    }

    /// `traces` traces of `per_trace` spans each, none naming an order, in one request per trace
    /// of one service.
    fn orderless(traces: u8, per_trace: u8) -> Vec<Vec<ResourceSpans>> {
        (1..=traces)
            .map(|t| {
                let spans = (0..per_trace)
                    .map(|i| Span {
                        trace_id: vec![t; 16],
                        span_id: vec![i + 1; 8],
                        name: format!("GET /catalog {t}.{i}"),
                        attributes: vec![text("http.route", "/catalog"), text("url.path", &format!("/catalog/{t}"))],
                        ..Default::default()
                    })
                    .collect();
                vec![ResourceSpans {
                    resource: Some(Resource { attributes: vec![text("service.name", "shop-api")], ..Default::default() }),
                    scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                    ..Default::default()
                }]
            })
            .collect()
    }

    fn spans_of(batches: &[ResourceSpans]) -> Vec<Span> {
        batches.iter().flat_map(|rs| &rs.scope_spans).flat_map(|ss| ss.spans.clone()).collect()
    }

    /// Requests of one service park spans with one shared copy of its resource and scope; a copy
    /// nobody holds any more leaves the table.
    #[test]
    fn waiting_spans_share_one_copy_of_each_resource_and_scope() {
        let rs = |service: &str, url: &str| ResourceSpans {
            resource: Some(Resource { attributes: vec![text("service.name", service)], ..Default::default() }),
            schema_url: url.into(),
            scope_spans: Vec::new(),
        };
        let a = shared_resource(&rs("shop-api", "u1"));
        assert!(Arc::ptr_eq(&a, &shared_resource(&rs("shop-api", "u1"))));
        assert_eq!(*a, ResourceCtx { resource: rs("shop-api", "u1").resource, schema_url: "u1".into() });
        assert!(!Arc::ptr_eq(&a, &shared_resource(&rs("shop-api", "u2"))), "another schema URL");
        assert!(!Arc::ptr_eq(&a, &shared_resource(&rs("crm-api", "u1"))), "another resource");
        let none = ResourceSpans { resource: None, ..rs("shop-api", "u1") };
        let empty = ResourceSpans { resource: Some(Resource::default()), ..rs("shop-api", "u1") };
        assert!(!Arc::ptr_eq(&shared_resource(&none), &shared_resource(&empty)), "no resource is not an empty one");

        let scope = InstrumentationScope { name: "io.opentelemetry.spring".into(), ..Default::default() };
        let s = shared_scope(Some(&scope), "");
        assert!(Arc::ptr_eq(&s, &shared_scope(Some(&scope), "")));
        assert!(!Arc::ptr_eq(&s, &shared_scope(None, "")));

        // Copies let go of at once (a span that left) do not pile up in the table.
        for i in 0..1000 {
            drop(shared_resource(&rs("shop-api", &format!("v{i}"))));
        }
        RESOURCES.with(|r| assert!(r.borrow().copies.len() <= 130, "{} entries", r.borrow().copies.len()));
        assert!(Arc::ptr_eq(&a, &shared_resource(&rs("shop-api", "u1"))), "a copy still held stays shared");
    }

    #[test]
    fn a_parked_span_comes_back_as_it_went_in() {
        let span = Span {
            trace_id: vec![7; 16],
            span_id: vec![1; 8],
            name: "GET /catalog".into(),
            attributes: vec![text("http.route", "/catalog"), text("url.path", "/catalog/42")],
            ..Default::default()
        };
        let resource = Arc::new(ResourceCtx { resource: None, schema_url: "r".into() });
        let scope = Arc::new(ScopeCtx { scope: None, schema_url: "s".into() });
        let parked = Parked::encoded(resource.clone(), scope.clone(), Encoded::new(&span), false);
        assert_eq!(parked.span.len(), span.encoded_len(), "kept encoded, at its encoded size");
        let held = parked.unpark().unwrap();
        assert_eq!(held.span, span);
        assert!(Arc::ptr_eq(&held.resource, &resource) && Arc::ptr_eq(&held.scope, &scope));
    }

    /// Packing goes over each waiting trace once; a span that comes later to a trace already
    /// packed is packed by the next run.
    #[tokio::test(start_paused = true)]
    async fn packing_goes_on_from_where_it_stopped_and_comes_back_for_late_spans() {
        let config = OrderEnrichConfig { wait: Duration::from_secs(5), ..Default::default() };
        let e = OrderEnricher::new(config, Metrics::new().enrich("a")).unwrap();
        let t0 = Instant::now();
        for request in orderless(40, 5) {
            assert!(e.process(request, t0).is_empty());
        }
        let packed = |e: &OrderEnricher| e.shards.each().map(|s| s.buffer.packed_spans()).sum::<usize>();
        let mut at = t0 + Duration::from_secs(1);
        assert!(e.expire_some(at, usize::MAX, None).0.is_empty());
        assert_eq!(packed(&e), 200);
        for shard in e.shards.each() {
            assert_eq!(shard.buffer.packed_through, shard.buffer.deadlines.len(), "packing went past every trace");
        }
        // A sixth span of trace 1, and of a new trace 41.
        let mut late = orderless(1, 6).remove(0);
        late[0].scope_spans[0].spans.drain(..5);
        let mut new = orderless(41, 1).remove(40);
        new[0].scope_spans[0].spans[0].span_id = vec![9; 8];
        assert!(e.process(late, at).is_empty());
        assert!(e.process(new, at).is_empty());
        assert_eq!(e.buffered_spans(), 202);
        at += Duration::from_secs(1);
        assert!(e.expire_some(at, usize::MAX, None).0.is_empty());
        assert_eq!(packed(&e), 202, "the late span and the new trace's are packed");
        assert!(e.shards.each().all(|s| s.buffer.repack.is_empty()), "nothing left to come back for");
        // Everything leaves at the deadline, unpacked as it went in.
        let out = e.expire_some(t0 + Duration::from_secs(5), usize::MAX, None).0;
        assert_eq!(spans_of(&out).len(), 201);
        let out = e.expire_some(at + Duration::from_secs(5), usize::MAX, None).0;
        assert_eq!(spans_of(&out).len(), 1);
    }

    /// Traces whose wait ends together leave in slices of about the size asked for, whole traces
    /// at a time, and the slices together are what one `expire` gives.
    #[tokio::test(start_paused = true)]
    async fn expired_spans_leave_in_slices() {
        let config = OrderEnrichConfig { wait: Duration::from_secs(5), ..Default::default() };
        let sliced = OrderEnricher::new(config.clone(), Metrics::new().enrich("a")).unwrap();
        let whole = OrderEnricher::new(config, Metrics::new().enrich("b")).unwrap();
        let t0 = Instant::now();
        for request in orderless(40, 5) {
            assert!(sliced.process(request.clone(), t0).is_empty());
            assert!(whole.process(request, t0).is_empty());
        }
        assert_eq!(sliced.buffered_spans(), 200);
        // Nothing is due yet; the spans that have waited a while are packed, in slices too.
        let mut packing_slices = 0;
        loop {
            let (out, more) = sliced.expire_some(t0 + Duration::from_secs(4), 12, None);
            assert!(out.is_empty(), "nothing is due yet");
            packing_slices += 1;
            if !more {
                break;
            }
            assert!(packing_slices <= 20, "packing ends");
        }
        assert!(packing_slices > 10, "200 spans packed 12 at a time: {packing_slices} calls");
        let packed = sliced.shards.each().map(|s| s.buffer.packed_spans()).sum::<usize>();
        assert_eq!(packed, 200, "every waiting span is packed");

        let later = t0 + Duration::from_secs(5);
        let mut from_slices: Vec<Span> = Vec::new();
        let mut slices = Vec::new();
        loop {
            let (out, more) = sliced.expire_some(later, 12, None);
            slices.push(spans_of(&out).len());
            from_slices.extend(spans_of(&out));
            if !more {
                break;
            }
            assert!(slices.len() <= 20, "the slices end");
        }
        let (last, full) = slices.split_last().unwrap();
        assert!(full.iter().all(|n| (12..=15).contains(n)), "slices of at least 12 spans, whole traces of 5: {slices:?}");
        assert!(*last <= 15, "{slices:?}");
        assert_eq!(sliced.buffered_spans(), 0);
        let mut at_once = spans_of(&whole.expire(later));
        assert_eq!(at_once.len(), 200);
        from_slices.sort_by(|a, b| a.name.cmp(&b.name));
        at_once.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(from_slices, at_once, "the same spans, untagged and unchanged");
    }

    /// With a sampler after the enricher, the untagged spans it would drop leave the buffer
    /// without being decoded: what comes out of the sampler, and what it counts, is what letting
    /// every span go decoded and sampling them after gives.
    #[tokio::test(start_paused = true)]
    async fn spans_the_sampler_drops_are_let_go_of_undecoded() {
        use crate::processors::order_sampling::OrderSamplingConfig;
        use crate::processors::{Processor, ProcessorConfig};
        use opentelemetry_proto::tonic::trace::v1::Status;

        let enrich = ProcessorConfig::OrderEnrich(OrderEnrichConfig { wait: Duration::from_secs(5), ..Default::default() });
        let sample = ProcessorConfig::OrderSampling(OrderSamplingConfig { fraction: 0.3, keep_errors: true });
        let (fast, slow) = (Metrics::new(), Metrics::new());
        let build = |c: &ProcessorConfig, m: &Metrics| Processor::build(c, "p", m).unwrap();
        let (enrich_fast, sample_fast) = (build(&enrich, &fast), build(&sample, &fast));
        let (enrich_slow, sample_slow) = (build(&enrich, &slow), build(&sample, &slow));
        let t0 = Instant::now();
        for mut request in orderless(200, 3) {
            // Every seventh trace failed: the sampler keeps those whatever their trace id.
            let span = &mut request[0].scope_spans[0].spans[0];
            if span.trace_id[0] % 7 == 0 {
                span.status = Some(Status { code: StatusCode::Error as i32, ..Default::default() });
            }
            assert!(enrich_fast.process(request.clone(), t0).is_empty());
            assert!(enrich_slow.process(request, t0).is_empty());
        }
        let later = t0 + Duration::from_secs(5);
        let fast_out = sample_fast.process(enrich_fast.expire_some(later, usize::MAX, Some(&sample_fast)).0, later);
        let slow_out = sample_slow.process(enrich_slow.expire(later), later);
        let (mut fast_spans, mut slow_spans) = (spans_of(&fast_out), spans_of(&slow_out));
        fast_spans.sort_by(|a, b| a.name.cmp(&b.name));
        slow_spans.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(fast_spans, slow_spans);
        assert!(!fast_spans.is_empty() && fast_spans.len() < 600, "some kept, some dropped: {}", fast_spans.len());
        assert!(fast_spans.iter().any(|s| s.status.is_some()), "failed spans are kept");
        let sampled = |m: &Metrics| {
            let mut lines: Vec<String> = m
                .render()
                .lines()
                .filter(|l| l.starts_with("tracegate_order_sampling") || l.starts_with("tracegate_order_enrich"))
                .map(String::from)
                .collect();
            lines.sort();
            lines
        };
        assert!(!sampled(&fast).is_empty());
        assert_eq!(sampled(&fast), sampled(&slow), "the same spans counted dropped, kept and untagged");
        assert_eq!(enrich_fast.expire_some(later, usize::MAX, None).0, Vec::new(), "nothing left waiting");
    }

    /// Held spans of many requests are grouped back under their own resource, in the order the
    /// resources first came.
    #[test]
    fn regroup_keeps_spans_under_their_resource_and_scope() {
        let resources: Vec<Arc<ResourceCtx>> =
            (0..3).map(|i| Arc::new(ResourceCtx { resource: None, schema_url: format!("r{i}") })).collect();
        let scope = Arc::new(ScopeCtx { scope: None, schema_url: String::new() });
        let held: Vec<Held> = [0, 1, 0, 2, 1, 0]
            .iter()
            .enumerate()
            .map(|(n, &r)| Held {
                resource: resources[r].clone(),
                scope: scope.clone(),
                span: Span { name: format!("{r}-{n}"), ..Default::default() },
            })
            .collect();
        let out = regroup(held);
        let shape: Vec<(String, Vec<String>)> = out
            .iter()
            .map(|rs| (rs.schema_url.clone(), spans_of(std::slice::from_ref(rs)).into_iter().map(|s| s.name).collect()))
            .collect();
        assert_eq!(
            shape,
            vec![
                ("r0".to_string(), vec!["0-0".to_string(), "0-2".into(), "0-5".into()]),
                ("r1".to_string(), vec!["1-1".to_string(), "1-4".into()]),
                ("r2".to_string(), vec!["2-3".to_string()]),
            ]
        );
    }
}
