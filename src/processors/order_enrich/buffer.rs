//! `TraceBuffer`: spans of traces whose order is not known yet, held for a bounded time and a
//! bounded number of spans. Each held span keeps its resource and scope so that it can be
//! released on its own later.

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

pub struct TraceBuffer {
    traces: HashMap<TraceId, Waiting>,
    deadlines: VecDeque<(TraceId, Instant)>,
    waiting_on_trace: HashMap<TraceId, Vec<TraceId>>,
    waiting_on_value: HashMap<String, Vec<TraceId>>,
    spans: usize,
    max_spans: usize,
}

impl TraceBuffer {
    pub fn new(max_spans: usize) -> Self {
        TraceBuffer {
            traces: HashMap::new(),
            deadlines: VecDeque::new(),
            waiting_on_trace: HashMap::new(),
            waiting_on_value: HashMap::new(),
            spans: 0,
            max_spans,
        }
    }

    pub fn span_count(&self) -> usize {
        self.spans
    }

    pub fn trace_count(&self) -> usize {
        self.traces.len()
    }

    /// Holds a span until `deadline` (the trace's first deadline wins); gives it back if the
    /// buffer is full.
    pub fn hold(&mut self, trace: TraceId, held: Held, deadline: Instant, links: Vec<TraceId>, values: Vec<String>) -> Result<(), Held> {
        if self.spans >= self.max_spans {
            return Err(held);
        }
        let entry = self.traces.entry(trace).or_insert_with(|| {
            self.deadlines.push_back((trace, deadline));
            Waiting { spans: Vec::new(), deadline, links: Vec::new(), values: Vec::new() }
        });
        entry.spans.push(held);
        for l in links {
            if !entry.links.contains(&l) {
                entry.links.push(l);
                self.waiting_on_trace.entry(l).or_default().push(trace);
            }
        }
        for v in values {
            if !entry.values.contains(&v) {
                self.waiting_on_value.entry(v.clone()).or_default().push(trace);
                entry.values.push(v);
            }
        }
        self.spans += 1;
        Ok(())
    }

    /// Buffered traces that link to `trace`.
    pub fn linked_to(&mut self, trace: &TraceId) -> Vec<TraceId> {
        self.waiting_on_trace.remove(trace).unwrap_or_default()
    }

    /// Buffered traces that carry the correlation `value`.
    pub fn carrying(&mut self, value: &str) -> Vec<TraceId> {
        self.waiting_on_value.remove(value).unwrap_or_default()
    }

    /// Takes every held span of a trace.
    pub fn take(&mut self, trace: &TraceId) -> Vec<Held> {
        match self.traces.remove(trace) {
            Some(w) => {
                self.forget_indexes(trace, &w);
                self.spans -= w.spans.len();
                w.spans
            }
            None => Vec::new(),
        }
    }

    /// Takes the spans of every trace whose deadline is at or before `now`.
    pub fn expired(&mut self, now: Instant) -> Vec<Held> {
        let mut out = Vec::new();
        while let Some((trace, deadline)) = self.deadlines.front().copied() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            // The trace may have been released already, or re-buffered with a later deadline.
            if self.traces.get(&trace).is_some_and(|w| w.deadline == deadline) {
                out.extend(self.take(&trace));
            }
        }
        out
    }

    fn forget_indexes(&mut self, trace: &TraceId, w: &Waiting) {
        for l in &w.links {
            if let Some(list) = self.waiting_on_trace.get_mut(l) {
                list.retain(|t| t != trace);
                if list.is_empty() {
                    self.waiting_on_trace.remove(l);
                }
            }
        }
        for v in &w.values {
            if let Some(list) = self.waiting_on_value.get_mut(v) {
                list.retain(|t| t != trace);
                if list.is_empty() {
                    self.waiting_on_value.remove(v);
                }
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
