//! `SpanObserver`: what a pipeline shows the spans it admits to, after its processors ran. The
//! order monitors (above the pipeline) implement it; the pipeline only calls it.

use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

/// Sees every batch a pipeline admits (processed, tagged with orders), on the request path:
/// an implementation must only pick what it needs and hand it off (a bounded channel), never
/// block or wait. A batch is shown once its processors ran, before it is committed: a request
/// refused after that (a disk-backed queue could not write it) was shown too, so what an
/// observer derives must not change when the client's retry shows the same spans again.
pub trait SpanObserver: Send + Sync {
    fn observe(&self, batch: &[ResourceSpans]);
}
