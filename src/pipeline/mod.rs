//! The data path between receivers and exporters: payloads, the bounded exporter queues and the
//! all-or-nothing fan-out.

mod fanout;
mod payload;
mod queue;

pub use fanout::{Admission, AdmitError, Fanout, Pipeline, RELEASE_PATIENCE};
pub use payload::{count_spans, Payload};
pub use queue::{ExporterQueue, QueuedBatch, Reservation, ReserveError};
