//! The data path between receivers and exporters: payloads, the bounded exporter queues, the
//! all-or-nothing fan-out and the process's memory limiter.

mod disk;
mod fanout;
mod hold;
mod memory;
mod observer;
mod payload;
mod queue;

pub use disk::{DiskError, DiskLog, Recovered, RecoveryReport, SyncPolicy};
pub use fanout::{Admission, AdmitError, Fanout, Pipeline, RELEASE_PATIENCE, RELEASE_SLICE_SPANS};
pub use hold::HoldJournal;
pub use memory::{resident_bytes, MemoryLimitError, MemoryLimiter, MemoryLimiterConfig};
pub use observer::SpanObserver;
pub use payload::{count_spans, Payload};
pub use queue::{ExporterQueue, QueuedBatch, Reservation, ReserveError};
