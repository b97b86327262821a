//! Many threads sharing one enricher, taking the next request in turn: how the concurrent tests
//! run a list of requests. (`tracegate bench-enrich` deals its requests out before the clock
//! starts instead; see `loadgen::enrich_bench`.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use tokio::time::Instant;

use super::OrderEnricher;

impl OrderEnricher {
    /// Enriches `requests` on `threads` scoped threads that take the next request in turn, all at
    /// `now`; what `process` gave back, in no particular order. Nothing that waits in the buffer
    /// is let go of (call `expire` or `flush` after). A panic in a thread is passed on.
    pub(crate) fn process_on_threads(&self, requests: Vec<Vec<ResourceSpans>>, threads: usize, now: Instant) -> Vec<Vec<ResourceSpans>> {
        let queue: Vec<Mutex<Option<Vec<ResourceSpans>>>> = requests.into_iter().map(|r| Mutex::new(Some(r))).collect();
        let next = AtomicUsize::new(0);
        std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads.max(1))
                .map(|_| {
                    scope.spawn(|| {
                        let mut outs = Vec::new();
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            let Some(slot) = queue.get(i) else { break };
                            // Each index is taken once, so the slot is always full.
                            let request = slot.lock().unwrap_or_else(|e| e.into_inner()).take().unwrap_or_default();
                            outs.push(self.process(request, now));
                        }
                        outs
                    })
                })
                .collect();
            workers.into_iter().flat_map(|w| w.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
        })
    }
}
