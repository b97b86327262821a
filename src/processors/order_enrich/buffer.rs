//! `TraceBuffer`: spans of traces whose order is not known yet, held for a bounded time. Each held
//! span keeps its resource and scope so that it can be released on its own later. The enricher
//! keeps one buffer per shard and bounds the spans of all of them together.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use tokio::time::Instant;

pub type TraceId = [u8; 16];

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

/// A span out of its request, with where it came from.
pub struct Held {
    pub resource: Arc<ResourceCtx>,
    pub scope: Arc<ScopeCtx>,
    pub span: Span,
}

struct Waiting {
    spans: Vec<Held>,
    deadline: Instant,
    /// Traces this one links to, and correlation values it carries: if one of them gets an
    /// order, so does this trace.
    links: Vec<TraceId>,
    values: Vec<String>,
}

/// The spans of one trace, out of the buffer, with the links and values it was waiting on (the
/// indexes of those live in the shards of those traces and values; see [`TraceBuffer::forget_link`]).
pub struct Taken {
    pub spans: Vec<Held>,
    pub links: Vec<TraceId>,
    pub values: Vec<String>,
}

/// One shard's part of the buffer: the waiting spans of its traces, and who waits on its traces
/// and values (a waiter may live in another shard). The bound on spans is kept by the caller,
/// across shards.
pub struct TraceBuffer {
    traces: HashMap<TraceId, Waiting>,
    deadlines: VecDeque<(TraceId, Instant)>,
    waiting_on_trace: HashMap<TraceId, Vec<TraceId>>,
    waiting_on_value: HashMap<String, Vec<TraceId>>,
}

impl TraceBuffer {
    pub fn new() -> Self {
        TraceBuffer {
            traces: HashMap::new(),
            deadlines: VecDeque::new(),
            waiting_on_trace: HashMap::new(),
            waiting_on_value: HashMap::new(),
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
        held: Held,
        deadline: Instant,
        links: Vec<TraceId>,
        values: Vec<String>,
    ) -> (Vec<TraceId>, Vec<String>, bool) {
        let mut new_trace = false;
        let entry = self.traces.entry(trace).or_insert_with(|| {
            new_trace = true;
            self.deadlines.push_back((trace, deadline));
            Waiting { spans: Vec::new(), deadline, links: Vec::new(), values: Vec::new() }
        });
        entry.spans.push(held);
        let mut new_links = Vec::new();
        for l in links {
            if !entry.links.contains(&l) {
                entry.links.push(l);
                new_links.push(l);
            }
        }
        let mut new_values = Vec::new();
        for v in values {
            if !entry.values.contains(&v) {
                entry.values.push(v.clone());
                new_values.push(v);
            }
        }
        (new_links, new_values, new_trace)
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
        self.traces.remove(trace).map(|w| Taken { spans: w.spans, links: w.links, values: w.values })
    }

    /// Takes the spans of every trace whose deadline is at or before `now`, except those of
    /// traces `keep` says an order has claimed (the request that bound them takes them).
    pub fn expired(&mut self, now: Instant, keep: impl Fn(&TraceId) -> bool) -> Vec<(TraceId, Taken)> {
        let mut out = Vec::new();
        while let Some((trace, deadline)) = self.deadlines.front().copied() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            // The trace may have been released already, or re-buffered with a later deadline.
            if self.traces.get(&trace).is_some_and(|w| w.deadline == deadline) && !keep(&trace) {
                if let Some(taken) = self.take(&trace) {
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

/// Groups held spans back into OTLP structure (spans sharing a resource and scope stay together).
pub fn regroup(held: Vec<Held>) -> Vec<ResourceSpans> {
    let mut out: Vec<(Arc<ResourceCtx>, Vec<(Arc<ScopeCtx>, Vec<Span>)>)> = Vec::new();
    for h in held {
        let ri = match out.iter().position(|(r, _)| Arc::ptr_eq(r, &h.resource)) {
            Some(i) => i,
            None => {
                out.push((h.resource.clone(), Vec::new()));
                out.len() - 1
            }
        };
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
