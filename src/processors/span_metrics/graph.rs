//! The service graph: requests, failures and latency per client -> server edge, like the
//! Collector's `servicegraph` connector, plus the edges through the bus. A CLIENT or PRODUCER
//! span waits (keyed by its trace and span id) for the SERVER span whose parent it is, or the
//! CONSUMER span that names it as parent or, in a new trace, by a span link; whichever side
//! comes first waits for the other for `store.ttl` (then it counts as unpaired).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::Span;
use tokio::time::Instant;

use super::config::{Naming, SpanMetricsConfig};
use super::red::is_error;
use super::series::{format_float, header, Family, Kind};

type Key = ([u8; 16], [u8; 8]);

/// Hashes trace and span ids cheaply: they are random already, so a keyed multiply-xor over
/// their 8-byte words is enough (the per-process key keeps crafted ids from colliding on purpose).
#[derive(Clone, Copy)]
struct IdHashing(u64);

impl Default for IdHashing {
    fn default() -> Self {
        IdHashing(fastrand::u64(..) | 1)
    }
}

impl std::hash::BuildHasher for IdHashing {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher { state: 0, key: self.0 }
    }
}

struct IdHasher {
    state: u64,
    key: u64,
}

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.state ^ (self.state >> 29)
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.state = (self.state ^ u64::from_le_bytes(word)).wrapping_mul(self.key).rotate_left(23);
        }
    }
}

pub struct ServiceGraph {
    pub requests: Family,
    pub failed: Family,
    pub server_seconds: Family,
    pub client_seconds: Family,
    prefix: &'static str,
    store: Mutex<Store>,
    ttl: Duration,
    max_items: usize,
    pub unpaired_client: AtomicU64,
    pub unpaired_server: AtomicU64,
    pub dropped: AtomicU64,
}

#[derive(Default)]
struct Store {
    pending: HashMap<Key, Pending, IdHashing>,
    /// Keys by when they started waiting, oldest first.
    queue: VecDeque<(Instant, Key)>,
}

#[derive(Default)]
struct Pending {
    client: Option<Half>,
    server: Option<Half>,
}

struct Half {
    service: Box<str>,
    seconds: f64,
    error: bool,
    messaging: bool,
}

impl ServiceGraph {
    pub fn new(config: &SpanMetricsConfig) -> ServiceGraph {
        let prefix = match config.naming {
            Naming::Tracegate => "tracegate_service_graph",
            Naming::Spm => "traces_service_graph",
        };
        let limit = config.aggregation_cardinality_limit;
        let labels = ["client", "server", "connection_type"];
        let bounds: Arc<[f64]> = config.service_graph.buckets.iter().map(Duration::as_secs_f64).collect();
        let histogram = |name: &str, help| Family::new(format!("{prefix}_{name}"), help, &labels, Kind::Histogram(bounds.clone()), limit);
        ServiceGraph {
            requests: Family::new(
                format!("{prefix}_request"),
                "Requests between two services (client -> server edges)",
                &labels,
                Kind::Counter,
                limit,
            ),
            failed: Family::new(
                format!("{prefix}_request_failed"),
                "Requests between two services where either side failed",
                &labels,
                Kind::Counter,
                limit,
            ),
            server_seconds: histogram("request_server_seconds", "Duration of the server (or consumer) side of an edge"),
            client_seconds: histogram("request_client_seconds", "Duration of the client (or producer) side of an edge"),
            prefix,
            store: Mutex::default(),
            ttl: config.service_graph.store.ttl,
            max_items: config.service_graph.store.max_items,
            unpaired_client: AtomicU64::new(0),
            unpaired_server: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    /// Spans that wait for a peer to pair with.
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.store.lock().unwrap_or_else(|p| p.into_inner()).pending.len()
    }

    /// Records the edges of one batch (`spans`: each with its resource's service).
    pub fn record<'a>(&self, spans: impl Iterator<Item = (&'a str, &'a Span)>, now: Instant) {
        let mut edges: Vec<(Half, Half)> = Vec::new();
        {
            let mut store = self.store.lock().unwrap_or_else(|p| p.into_inner());
            self.expire(&mut store, now);
            for (service, span) in spans {
                let Ok(trace) = <[u8; 16]>::try_from(span.trace_id.as_slice()) else { continue };
                let kind = SpanKind::try_from(span.kind).unwrap_or(SpanKind::Unspecified);
                let half = || Half {
                    service: service.into(),
                    seconds: span.end_time_unix_nano.saturating_sub(span.start_time_unix_nano) as f64 / 1e9,
                    error: is_error(span),
                    messaging: matches!(kind, SpanKind::Producer | SpanKind::Consumer),
                };
                match kind {
                    SpanKind::Client | SpanKind::Producer => {
                        let Ok(id) = <[u8; 8]>::try_from(span.span_id.as_slice()) else { continue };
                        self.put(&mut store, (trace, id), half(), true, now, &mut edges);
                    }
                    SpanKind::Server | SpanKind::Consumer => {
                        let mut keys: Vec<Key> = Vec::new();
                        if kind == SpanKind::Consumer {
                            for link in &span.links {
                                if let (Ok(t), Ok(s)) = (link.trace_id.as_slice().try_into(), link.span_id.as_slice().try_into()) {
                                    keys.push((t, s));
                                }
                            }
                        }
                        if keys.is_empty() {
                            if let Ok(parent) = <[u8; 8]>::try_from(span.parent_span_id.as_slice()) {
                                keys.push((trace, parent));
                            }
                        }
                        for key in keys {
                            self.put(&mut store, key, half(), false, now, &mut edges);
                        }
                    }
                    _ => {}
                }
            }
        }
        for (client, server) in edges {
            let connection = if client.messaging || server.messaging { "messaging_system" } else { "" };
            let labels = [&*client.service, &*server.service, connection];
            self.requests.inc(&labels, 1.0);
            if client.error || server.error {
                self.failed.inc(&labels, 1.0);
            }
            self.client_seconds.observe(&labels, client.seconds, None);
            self.server_seconds.observe(&labels, server.seconds, None);
        }
    }

    /// Puts one side of an edge; when the other side waits, the edge is complete.
    fn put(&self, store: &mut Store, key: Key, half: Half, client: bool, now: Instant, edges: &mut Vec<(Half, Half)>) {
        if let Some(p) = store.pending.get_mut(&key) {
            let (mine, other) = if client { (&mut p.client, &mut p.server) } else { (&mut p.server, &mut p.client) };
            match other.take() {
                Some(other) => {
                    store.pending.remove(&key);
                    edges.push(if client { (half, other) } else { (other, half) });
                }
                // The same side again (a client's retry of the same spans): the latest counts.
                None => *mine = Some(half),
            }
            return;
        }
        if store.pending.len() >= self.max_items {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let pending = if client { Pending { client: Some(half), server: None } } else { Pending { client: None, server: Some(half) } };
        store.pending.insert(key, pending);
        store.queue.push_back((now, key));
    }

    fn expire(&self, store: &mut Store, now: Instant) {
        while let Some((since, key)) = store.queue.front().copied() {
            if now.saturating_duration_since(since) < self.ttl {
                break;
            }
            store.queue.pop_front();
            if let Some(p) = store.pending.remove(&key) {
                if p.client.is_some() {
                    self.unpaired_client.fetch_add(1, Ordering::Relaxed);
                }
                if p.server.is_some() {
                    self.unpaired_server.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    pub fn encode(&self, out: &mut String, openmetrics: bool, now: Instant) {
        {
            let mut store = self.store.lock().unwrap_or_else(|p| p.into_inner());
            self.expire(&mut store, now);
        }
        self.requests.encode(out, openmetrics);
        self.failed.encode(out, openmetrics);
        self.server_seconds.encode(out, openmetrics);
        self.client_seconds.encode(out, openmetrics);
        let name = format!("{}_unpaired_spans", self.prefix);
        let family = if openmetrics { name.clone() } else { format!("{name}_total") };
        header(out, &family, "Spans whose peer never came within store.ttl, by side", "counter");
        for (side, v) in [("client", &self.unpaired_client), ("server", &self.unpaired_server)] {
            out.push_str(&format!("{name}_total{{side=\"{side}\"}} {}\n", format_float(v.load(Ordering::Relaxed) as f64)));
        }
        let name = format!("{}_dropped_spans", self.prefix);
        let family = if openmetrics { name.clone() } else { format!("{name}_total") };
        header(out, &family, "Spans not paired because store.max_items spans were waiting", "counter");
        out.push_str(&format!("{name}_total {}\n", format_float(self.dropped.load(Ordering::Relaxed) as f64)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::span::Link;

    fn span(kind: SpanKind, trace: u8, id: u8, parent: Option<u8>, ms: u64) -> Span {
        Span {
            trace_id: vec![trace; 16],
            span_id: vec![id; 8],
            parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
            kind: kind as i32,
            start_time_unix_nano: 1_000_000_000,
            end_time_unix_nano: 1_000_000_000 + ms * 1_000_000,
            ..Default::default()
        }
    }

    #[test]
    fn client_server_and_linked_bus_edges_pair_in_any_order() {
        let g = ServiceGraph::new(&SpanMetricsConfig::default());
        let now = Instant::now();
        let server = span(SpanKind::Server, 1, 2, Some(1), 10);
        let client = span(SpanKind::Client, 1, 1, None, 20);
        g.record([("crm-api", &server)].into_iter(), now);
        g.record([("shop-api", &client)].into_iter(), now);
        let producer = span(SpanKind::Producer, 1, 3, Some(1), 1);
        let mut consumer = span(SpanKind::Consumer, 9, 4, None, 5);
        consumer.links.push(Link { trace_id: vec![1; 16], span_id: vec![3; 8], ..Default::default() });
        g.record([("shop-api", &producer), ("crm-api", &consumer)].into_iter(), now);
        assert_eq!(g.requests.get(&["shop-api", "crm-api", ""]), Some(1.0));
        assert_eq!(g.requests.get(&["shop-api", "crm-api", "messaging_system"]), Some(1.0));
        assert_eq!(g.waiting(), 0);
        let lonely = span(SpanKind::Client, 5, 5, None, 1);
        g.record([("shop-api", &lonely)].into_iter(), now);
        g.record(std::iter::empty(), now + Duration::from_secs(11));
        assert_eq!(g.unpaired_client.load(Ordering::Relaxed), 1);
    }
}
