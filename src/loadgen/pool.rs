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

/// Encoded `ExportTraceServiceRequest`s with distinct trace ids, handed out round-robin.
pub(crate) struct RequestPool {
    bodies: Vec<Bytes>,
    next: AtomicUsize,
    mix: TrafficMix,
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
        RequestPool { bodies, next: AtomicUsize::new(0), mix: generator.mix() }
    }

    /// The traces and spans of the pool (every pass over it sends the same mix).
    pub(crate) fn mix(&self) -> TrafficMix {
        self.mix
    }

    /// The next request body; cloning `Bytes` shares the buffer.
    pub(crate) fn next_body(&self) -> Bytes {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.bodies.len();
        self.bodies[index].clone()
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
        let first = pool.next_body();
        for _ in 1..pool.len() {
            assert_ne!(pool.next_body(), first);
        }
        assert_eq!(pool.next_body(), first, "wraps around after the last request");
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
            let request = ExportTraceServiceRequest::decode(pool.next_body()).unwrap();
            for span in request.resource_spans.iter().flat_map(|rs| &rs.scope_spans).flat_map(|ss| &ss.spans) {
                assert!(ids.insert((span.trace_id.clone(), span.span_id.clone())), "a span twice");
            }
        }
        assert_eq!(ids.len(), 100_100);
    }
}
