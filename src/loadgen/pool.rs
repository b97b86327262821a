//! The encoded requests a run sends, built before the clock starts.

use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use prost::Message;

use super::spans::{TrafficGenerator, TrafficMix};

/// Spans held in the pool at most (a few hundred requests at the default size), so that every
/// request of a run is encoded up front without the pool growing large.
const POOL_SPAN_BUDGET: usize = 25_600;
const MIN_REQUESTS: usize = 4;
const MAX_REQUESTS: usize = 256;

/// Encoded `ExportTraceServiceRequest`s with distinct trace ids, handed out round-robin (or
/// each once, for placed orders).
pub(crate) struct RequestPool {
    bodies: Vec<Bytes>,
    next: AtomicUsize,
    mix: TrafficMix,
    /// Spans in each body.
    spans_per_request: u64,
    /// Every body is handed out once, then none; the last may hold fewer spans.
    once: Option<u64>,
}

impl RequestPool {
    /// `orderless_share`: see [`TrafficGenerator::with_orderless_share`]; `None` = the default mix.
    /// `spans`: how many spans the pool holds at least (`None`: up to 25 600, sent again and
    /// again).
    pub(crate) fn build(
        spans_per_request: usize,
        seed: u64,
        now_unix_nanos: u64,
        orderless_share: Option<f64>,
        spans: Option<u64>,
    ) -> Self {
        let per_request = spans_per_request.max(1);
        let count = match spans {
            Some(spans) => usize::try_from(spans.div_ceil(per_request as u64)).unwrap_or(usize::MAX).max(MIN_REQUESTS),
            None => (POOL_SPAN_BUDGET / per_request).clamp(MIN_REQUESTS, MAX_REQUESTS),
        };
        let mut generator = TrafficGenerator::new(seed, now_unix_nanos);
        if let Some(share) = orderless_share {
            generator = generator.with_orderless_share(share);
        }
        let bodies = (0..count).map(|_| Bytes::from(generator.request(spans_per_request).encode_to_vec())).collect();
        RequestPool { bodies, next: AtomicUsize::new(0), mix: generator.mix(), spans_per_request: per_request as u64, once: None }
    }

    /// `orders` placed orders going no further ([`TrafficGenerator::placed_orders`]), in
    /// requests of `spans_per_request`, each handed out once.
    pub(crate) fn placed_orders(orders: u64, spans_per_request: usize, seed: u64, now_unix_nanos: u64) -> Self {
        let per_request = spans_per_request.max(1) as u64;
        let mut generator = TrafficGenerator::new(seed, now_unix_nanos);
        let bodies = (0..orders.div_ceil(per_request))
            .map(|i| {
                let spans = per_request.min(orders - i * per_request) as usize;
                Bytes::from(generator.placed_orders(spans).encode_to_vec())
            })
            .collect();
        RequestPool { bodies, next: AtomicUsize::new(0), mix: generator.mix(), spans_per_request: per_request, once: Some(orders) }
    }

    /// The traces and spans of the pool (every pass over it sends the same mix).
    pub(crate) fn mix(&self) -> TrafficMix {
        self.mix
    }

    /// The next request body (cloning `Bytes` shares the buffer) and its spans; `None` when a
    /// pool of bodies sent once has handed out its last.
    pub(crate) fn next_body(&self) -> Option<(Bytes, u64)> {
        let index = self.next.fetch_add(1, Ordering::Relaxed);
        match self.once {
            None => Some((self.bodies[index % self.bodies.len()].clone(), self.spans_per_request)),
            Some(spans) => {
                let body = self.bodies.get(index)?.clone();
                Some((body, self.spans_per_request.min(spans - index as u64 * self.spans_per_request)))
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.bodies.len()
    }

    pub(crate) fn encoded_bytes(&self) -> usize {
        self.bodies.iter().map(Bytes::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

    #[test]
    fn pool_hands_out_decodable_requests_round_robin() {
        let pool = RequestPool::build(100, 9, 1_763_700_000_000_000_000, None, None);
        assert_eq!(pool.len(), 256);
        let first = pool.next_body().unwrap().0;
        for _ in 1..pool.len() {
            assert_ne!(pool.next_body().unwrap().0, first);
        }
        assert_eq!(pool.next_body().unwrap().0, first, "wraps around after the last request");
        let request = ExportTraceServiceRequest::decode(first).unwrap();
        let spans: usize = request.resource_spans.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len()).sum();
        assert_eq!(spans, 100);
        assert_eq!(pool.mix().spans, 25_600);
    }

    #[test]
    fn the_orderless_share_reaches_the_pool() {
        let pool = RequestPool::build(100, 9, 1_763_700_000_000_000_000, Some(0.3), None);
        let share = pool.mix().orderless_trace_share();
        assert!((0.29..=0.31).contains(&share), "{:?}", pool.mix());
    }

    #[test]
    fn large_requests_make_a_smaller_pool() {
        assert_eq!(RequestPool::build(10_000, 1, 1_763_700_000_000_000_000, None, None).len(), MIN_REQUESTS);
        assert_eq!(RequestPool::build(1_000, 1, 1_763_700_000_000_000_000, None, None).len(), 25);
    }

    #[test]
    fn a_pool_of_unique_spans_holds_the_whole_run_and_no_span_twice() {
        let pool = RequestPool::build(100, 9, 1_763_700_000_000_000_000, None, Some(100_050));
        assert_eq!(pool.len(), 1_001);
        let mut ids = std::collections::HashSet::new();
        for _ in 0..pool.len() {
            let request = ExportTraceServiceRequest::decode(pool.next_body().unwrap().0).unwrap();
            for span in request.resource_spans.iter().flat_map(|rs| &rs.scope_spans).flat_map(|ss| &ss.spans) {
                assert!(ids.insert((span.trace_id.clone(), span.span_id.clone())), "a span twice");
            }
        }
        assert_eq!(ids.len(), 100_100);
    }

    #[test]
    fn placed_orders_are_each_sent_once_each_with_an_order_of_its_own() {
        let pool = RequestPool::placed_orders(250, 100, 9, 1_763_700_000_000_000_000);
        let mut orders = std::collections::HashSet::new();
        let mut sizes = Vec::new();
        while let Some((body, count)) = pool.next_body() {
            let request = ExportTraceServiceRequest::decode(body).unwrap();
            let spans: Vec<_> = request.resource_spans.iter().flat_map(|rs| &rs.scope_spans).flat_map(|ss| &ss.spans).collect();
            assert_eq!(spans.len() as u64, count);
            sizes.push(spans.len());
            for span in spans {
                assert_eq!(span.name, "POST /orders");
                let order = crate::shared::attr_string(&span.attributes, "order.id").unwrap();
                assert!(order.starts_with("P-"), "{order}");
                assert!(orders.insert(order), "an order twice");
            }
        }
        assert_eq!(sizes, [100, 100, 50]);
        assert_eq!(pool.next_body(), None, "nothing after the last");
        assert_eq!((pool.mix().traces, pool.mix().spans, pool.mix().orderless_traces), (250, 250, 0));
    }
}
