//! `Pipeline` and `Fanout`: what a receiver hands its batches to. Capacity for the request is
//! reserved in every exporter queue of every pipeline first, all or nothing; only then do the
//! processors run and the results enter the queues. A refused request therefore changed nothing,
//! neither the queues nor the processors' state, and the client's retry duplicates nothing.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::{ExportTracePartialSuccess, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use tokio::time::Instant;

use super::hold::{missing_spans, AdmitGuard, HoldJournal};
use super::observer::SpanObserver;
use super::payload::{count_spans, split_spans, Payload};
use super::queue::{ExporterQueue, Reservation, ReserveError};
use crate::processors::Processor;
use crate::shared::WhenFull;

/// How long spans released by a processor (with no client waiting) wait for queue room.
pub const RELEASE_PATIENCE: Duration = Duration::from_secs(30);

/// Spans processors released beyond what the request that released them reserved, waiting for
/// queue room; bounded so that a long outage cannot grow it without limit.
pub const RELEASE_BACKLOG_SPANS: usize = 100_000;

/// Spans whose wait is over are let go of (and waiting spans packed) in slices of about this
/// many (see [`Pipeline::released_some`]): about a millisecond of work, so that the requests on
/// the release task's thread wait at most that long for it, each time they give way. A request
/// gives way several times (its headers, body, processing, reply), so a slice's length counts
/// several times over in its latency: with 2 048, the orderless benchmark's p99 acknowledgement
/// was 25-28 ms, with 256, 8-17 ms (BENCHMARKS.md, "2026-12-02, slices").
pub const RELEASE_SLICE_SPANS: usize = 256;

/// One pipeline: its processors in order, then its exporters' queues.
pub struct Pipeline {
    pub name: String,
    pub processors: Vec<Processor>,
    pub exporters: Vec<Arc<ExporterQueue>>,
    /// Some exporter reads spans decoded; otherwise payloads are kept encoded only.
    pub keep_decoded: bool,
    /// Released spans that found no room when they were released, for the pipeline's release
    /// task (`drain_backlog`), which waits for room with back-pressure. Never a detached task.
    backlog: Mutex<ReleaseBacklog>,
    backlog_ready: tokio::sync::Notify,
    /// Shown every processed batch before it enters the queues (the order monitors).
    observer: Option<Arc<dyn SpanObserver>>,
    /// With a disk-backed queue: the spans the processors hold are journaled (see `hold`).
    hold: Option<Arc<HoldJournal>>,
    /// A release was abandoned half-way (shutdown): what it carried is not in the queues.
    release_interrupted: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct ReleaseBacklog {
    batches: VecDeque<Vec<ResourceSpans>>,
    spans: usize,
}

/// The pipelines fed by one receiver.
pub struct Fanout {
    /// Swapped whole by a configuration reload; a request works on the set it started with.
    feeds: std::sync::RwLock<Arc<Feeds>>,
}

/// The pipelines a receiver feeds, as one unit.
pub struct Feeds {
    pipelines: Vec<Arc<Pipeline>>,
    /// Some queue is bounded in bytes.
    sized: bool,
}

impl Feeds {
    fn new(pipelines: Vec<Arc<Pipeline>>) -> Feeds {
        let sized = pipelines.iter().flat_map(|p| &p.exporters).any(|q| q.bounded_by_bytes());
        Feeds { pipelines, sized }
    }
}

/// What happened to an accepted request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Admission {
    pub accepted_spans: usize,
    /// Spans of the request that processors rejected (reported in `partial_success`).
    pub rejected_spans: usize,
    pub rejected_message: String,
}

impl Admission {
    /// Adds spans the receiver took out of the request before admission.
    pub fn with_rejected(mut self, spans: usize, message: &str) -> Admission {
        if spans > 0 {
            self.rejected_spans += spans;
            self.rejected_message =
                if self.rejected_message.is_empty() { message.to_string() } else { format!("{}; {message}", self.rejected_message) };
        }
        self
    }

    /// The OTLP reply: `partial_success` only when spans were rejected (by the receiver or a
    /// processor).
    pub fn reply(self) -> ExportTraceServiceResponse {
        let partial_success = (self.rejected_spans > 0)
            .then_some(ExportTracePartialSuccess { rejected_spans: self.rejected_spans as i64, error_message: self.rejected_message });
        ExportTraceServiceResponse { partial_success }
    }
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum AdmitError {
    #[error("the queue of exporter {exporter:?} is full")]
    QueueFull { exporter: String },
    #[error("the request holds {spans} spans, more than the queue of exporter {exporter:?} can ever hold")]
    TooLarge { exporter: String, spans: usize },
    #[error("the gateway is shutting down")]
    ShuttingDown,
    #[error("the disk queue of exporter {exporter:?} cannot be written: {error}")]
    Storage { exporter: String, error: String },
}

impl Pipeline {
    pub fn new(name: String, processors: Vec<Processor>, exporters: Vec<Arc<ExporterQueue>>, keep_decoded: bool) -> Pipeline {
        Pipeline {
            name,
            processors,
            exporters,
            keep_decoded,
            backlog: Mutex::default(),
            backlog_ready: tokio::sync::Notify::new(),
            observer: None,
            hold: None,
            release_interrupted: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether a release was abandoned half-way (its spans are counted as dropped at shutdown).
    pub fn release_interrupted(&self) -> bool {
        self.release_interrupted.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The same pipeline, journaling what its processors hold in `journal`.
    pub fn with_hold_journal(mut self, journal: Arc<HoldJournal>) -> Pipeline {
        self.hold = Some(journal);
        self
    }

    pub fn hold_journal(&self) -> Option<&Arc<HoldJournal>> {
        self.hold.as_ref()
    }

    /// The same pipeline, showing what it admits to `observer`.
    pub fn observed_by(mut self, observer: Arc<dyn SpanObserver>) -> Pipeline {
        self.observer = Some(observer);
        self
    }

    fn observe(&self, batch: &[ResourceSpans]) {
        if let Some(observer) = &self.observer {
            observer.observe(batch);
        }
    }

    /// Spans waiting in the release backlog.
    pub fn backlog_spans(&self) -> usize {
        self.backlog.lock().unwrap_or_else(|p| p.into_inner()).spans
    }

    /// Puts released spans in the backlog; over [`RELEASE_BACKLOG_SPANS`] they are dropped and
    /// counted on every queue of the pipeline.
    fn defer(&self, batch: Vec<ResourceSpans>) {
        let n = count_spans(&batch);
        {
            let mut backlog = self.backlog.lock().unwrap_or_else(|p| p.into_inner());
            if backlog.spans + n <= RELEASE_BACKLOG_SPANS {
                backlog.spans += n;
                backlog.batches.push_back(batch);
                drop(backlog);
                self.backlog_ready.notify_one();
                return;
            }
        }
        for queue in &self.exporters {
            queue.metrics.dropped_full.inc_by(n as u64);
        }
        tracing::warn!(pipeline = %self.name, spans = n, "released spans found no queue room and the release backlog is full; dropped");
    }

    /// Waits until the backlog has spans (or `timeout` passes).
    pub async fn backlog_waiting(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.backlog_ready.notified()).await;
    }

    /// Admits the backlog to the queues, oldest first, waiting up to `patience` for room for
    /// each batch (back-pressure: the backlog fills meanwhile, and past its bound drops).
    pub async fn drain_backlog(&self, patience: Duration) {
        loop {
            let next = {
                let mut backlog = self.backlog.lock().unwrap_or_else(|p| p.into_inner());
                let batch = backlog.batches.pop_front();
                if let Some(b) = &batch {
                    backlog.spans -= count_spans(b);
                }
                batch
            };
            match next {
                Some(batch) => {
                    self.admit_released(batch, patience).await;
                }
                None => return,
            }
        }
    }

    /// Runs the processors from `start` on.
    fn process_from(&self, start: usize, mut batch: Vec<ResourceSpans>, now: Instant) -> Vec<ResourceSpans> {
        for p in &self.processors[start..] {
            if batch.is_empty() {
                break;
            }
            batch = p.process(batch, now);
        }
        batch
    }

    pub fn process(&self, batch: Vec<ResourceSpans>, now: Instant) -> Vec<ResourceSpans> {
        self.process_from(0, batch, now)
    }

    /// Everything the processors hold, run through the rest of the pipeline (shutdown, reload,
    /// once the release task is stopped); settled by [`Pipeline::confirm_released`] once admitted.
    pub fn released_all(&self, now: Instant) -> Vec<ResourceSpans> {
        self.flushed(now, Processor::flush)
    }

    fn flushed(&self, now: Instant, flush: impl Fn(&Processor) -> Vec<ResourceSpans>) -> Vec<ResourceSpans> {
        let mut out = Vec::new();
        for (i, p) in self.processors.iter().enumerate() {
            let let_go = flush(p);
            if !let_go.is_empty() {
                out.extend(self.process_from(i + 1, let_go, now));
            }
        }
        self.observe(&out);
        out
    }

    /// Settles what the processors let go of ([`Pipeline::released_some`],
    /// [`Pipeline::released_all`]) since the last call: `admitted`, it is all in the queues and
    /// what they kept on disk for it is forgotten; else it goes again after a restart.
    pub fn confirm_released(&self, admitted: bool) {
        self.processors.iter().for_each(|p| p.confirm_released(admitted));
    }

    /// Spans that processors let go of on their own (their wait is over), in slices: about
    /// `max_spans` from each processor at most, and `true` when more may be due at `now`. The
    /// release task admits a slice and lets the requests on its thread run before it takes the
    /// next one, so that the traces whose wait ends together (a burst of traffic 5 s ago) neither
    /// hold up acknowledgements nor sit decoded all at once.
    pub fn released_some(&self, now: Instant, max_spans: usize) -> (Vec<ResourceSpans>, bool) {
        let mut out = Vec::new();
        let mut more = false;
        for (i, p) in self.processors.iter().enumerate() {
            let (let_go, left) = p.expire_some(now, max_spans, self.processors.get(i + 1));
            more |= left;
            if !let_go.is_empty() {
                out.extend(self.process_from(i + 1, let_go, now));
            }
        }
        self.observe(&out);
        (out, more)
    }

    /// Lets go of everything the processors hold in memory, run through the rest of the
    /// pipeline, into the release backlog (admitted by the pipeline's release task): the memory
    /// limiter's hard limit. What they keep on disk stays there. Returns how many spans were let
    /// go of.
    pub fn release_held(&self, now: Instant) -> usize {
        let out = self.flushed(now, Processor::flush_memory);
        let n = count_spans(&out);
        if n > 0 {
            self.defer(out);
        }
        n
    }

    /// Puts released spans in every queue, waiting for room up to `patience`; what still finds
    /// no room is dropped and counted.
    fn payload(&self, batch: Vec<ResourceSpans>) -> Payload {
        if self.keep_decoded {
            Payload::new(batch)
        } else {
            Payload::encoded_only(batch)
        }
    }

    /// Returns the spans that found no room (dropped and counted per queue).
    pub async fn admit_released(&self, batch: Vec<ResourceSpans>, patience: Duration) -> usize {
        let payload = Arc::new(self.payload(batch));
        let n = payload.span_count();
        let mut dropped = 0;
        if n == 0 {
            return 0;
        }
        let mut unreached = Unreached { queues: &self.exporters, spans: n, interrupted: &self.release_interrupted };
        for (i, queue) in self.exporters.iter().enumerate() {
            unreached.queues = &self.exporters[i..];
            let bytes = if queue.bounded_by_bytes() { payload.encoded_len() } else { 0 };
            let reserved = match queue.when_full {
                WhenFull::Drop => queue.reserve_sized(n, bytes),
                WhenFull::Refuse => queue.reserve_wait(n, bytes, patience).await,
            };
            let reserved = match (reserved, queue.log()) {
                (Ok(r), Some(log)) => match log.append(payload.request_bytes()).await {
                    Ok(seq) => r.commit_logged(payload.clone(), Some(seq)),
                    Err(error) => {
                        queue.metrics.storage_errors.inc();
                        queue.metrics.dropped_full.inc_by(n as u64);
                        dropped = n;
                        tracing::error!(exporter = %queue.exporter, pipeline = %self.name, spans = n, %error, "released spans could not be written to the disk queue; dropped");
                        continue;
                    }
                },
                (r, _) => r.and_then(|r| r.commit(payload.clone())),
            };
            match reserved {
                Ok(()) => {}
                Err(ReserveError::Closed) => {
                    queue.metrics.dropped_shutdown.inc_by(n as u64);
                    dropped = n;
                }
                Err(error) => {
                    queue.metrics.dropped_full.inc_by(n as u64);
                    dropped = n;
                    tracing::warn!(exporter = %queue.exporter, pipeline = %self.name, spans = n, ?error, "no queue room for released spans; dropped");
                }
            }
        }
        unreached.queues = &[];
        dropped
    }

    /// Held spans journaled before the last stop (`(seq, spans)`), run through the processors
    /// again: what comes out waits in the release backlog (admitted by the release task), what
    /// is held again stays journaled under its old record until it settles.
    pub fn recover_held(&self, records: Vec<(u64, Vec<ResourceSpans>)>, now: Instant) {
        for (seq, spans) in records {
            let out = self.process(spans, now);
            if !out.is_empty() {
                self.defer(out);
            }
            if let Some(journal) = &self.hold {
                journal.remember(seq, now);
            }
        }
    }
}

impl Fanout {
    pub fn new(pipelines: Vec<Arc<Pipeline>>) -> Fanout {
        Fanout { feeds: std::sync::RwLock::new(Arc::new(Feeds::new(pipelines))) }
    }

    /// Feeds `pipelines` from now on. Returns the previous set: once the caller holds its only
    /// reference (`Arc::strong_count == 1`), no request is being admitted to it any more.
    pub fn replace(&self, pipelines: Vec<Arc<Pipeline>>) -> Arc<Feeds> {
        let mut feeds = self.feeds.write().unwrap_or_else(|p| p.into_inner());
        std::mem::replace(&mut *feeds, Arc::new(Feeds::new(pipelines)))
    }

    fn current(&self) -> Arc<Feeds> {
        self.feeds.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub async fn admit(&self, resource_spans: Vec<ResourceSpans>) -> Result<Admission, AdmitError> {
        let spans = count_spans(&resource_spans);
        if spans == 0 {
            return Ok(Admission::default());
        }
        // Queues bounded in bytes are charged the request's encoded size.
        let feeds = self.current();
        if feeds.pipelines.is_empty() {
            return Err(AdmitError::ShuttingDown);
        }
        let bytes = if feeds.sized { resource_spans.iter().map(prost::Message::encoded_len).sum() } else { 0 };
        // 1. Room for the whole request everywhere, or nothing. Dropping `reserved` on an early
        //    return gives back everything taken so far.
        let mut reserved: Vec<Vec<Option<Reservation>>> = Vec::with_capacity(feeds.pipelines.len());
        for pipeline in &feeds.pipelines {
            let mut per_queue = Vec::with_capacity(pipeline.exporters.len());
            for queue in &pipeline.exporters {
                match queue.reserve_sized(spans, bytes) {
                    Ok(r) => per_queue.push(Some(r)),
                    // Counted below, as what the processors make of the request (it may hold
                    // some of them back, or let earlier ones go with them).
                    Err(ReserveError::Full) if queue.when_full == WhenFull::Drop => per_queue.push(None),
                    Err(ReserveError::Full) => return Err(AdmitError::QueueFull { exporter: queue.exporter.clone() }),
                    Err(ReserveError::TooLarge) => return Err(AdmitError::TooLarge { exporter: queue.exporter.clone(), spans }),
                    Err(ReserveError::Closed) => return Err(AdmitError::ShuttingDown),
                }
            }
            reserved.push(per_queue);
        }

        // 2. Each pipeline processes its own copy; the result is bound for its queues.
        let now = Instant::now();
        let last = feeds.pipelines.len() - 1;
        let mut input = Some(resource_spans);
        let mut commits: Vec<Commit> = Vec::new();
        let mut holds: Vec<(&Arc<HoldJournal>, Vec<ResourceSpans>)> = Vec::new();
        // What pipelines whose processors hold spans made of the request: see the refusal below.
        let mut held_over: Vec<(&Arc<Pipeline>, Arc<Payload>)> = Vec::new();
        let mut _admitting: Vec<AdmitGuard<'_>> = Vec::new();
        for (i, (pipeline, reservations)) in feeds.pipelines.iter().zip(reserved).enumerate() {
            let batch = if i == last { input.take().unwrap_or_default() } else { input.clone().unwrap_or_default() };
            let out = match &pipeline.hold {
                Some(journal) => {
                    _admitting.push(journal.begin_admit(now));
                    let copy = batch.clone();
                    let out = pipeline.process(batch, now);
                    let held = missing_spans(&copy, &out);
                    if !held.is_empty() {
                        holds.push((journal, held));
                    }
                    out
                }
                None => pipeline.process(batch, now),
            };
            let produced = count_spans(&out);
            if produced == 0 {
                continue;
            }
            // Before the disk write: a refused request was seen too, which changes nothing, as
            // the monitors' facts are idempotent and the client's retry brings the same ones.
            pipeline.observe(&out);
            // Processors may have held back spans, or released earlier ones with these. What the
            // request reserved is committed now; released spans beyond it go in as well when
            // every queue has room, or else through the pipeline's bounded release backlog.
            let mut out = out;
            let mut reservations = reservations;
            if produced > spans {
                let extra = produced - spans;
                let room = reservations.iter_mut().flatten().all(|r| r.try_grow(extra));
                if !room {
                    // Reservations that did grow shrink back below, with `resize`.
                    let (own, released) = split_spans(out, spans);
                    pipeline.defer(released);
                    out = own;
                }
            }
            let produced = count_spans(&out);
            let payload = Arc::new(pipeline.payload(out));
            if pipeline.processors.iter().any(Processor::holds_spans) {
                held_over.push((pipeline, payload.clone()));
            }
            for (queue, reservation) in pipeline.exporters.iter().zip(reservations) {
                match reservation {
                    Some(r) => match r.resize(produced) {
                        Ok(r) => commits.push(Commit { reservation: r, payload: payload.clone(), spans: produced, seq: None }),
                        // Reservations only shrink here (to what the request reserved, or to
                        // what grew with it), which cannot fail.
                        Err(_) => {
                            queue.metrics.dropped_full.inc_by(produced as u64);
                        }
                    },
                    // A best-effort queue that was full: none of it goes in.
                    None => {
                        queue.metrics.dropped_full.inc_by(produced as u64);
                    }
                }
            }
        }

        // 3. Disk-backed queues write their copy first (one group commit for all of them); if
        //    any write fails, the request is refused and enters no queue.
        //    Spans the processors hold are journaled in the same group commit.
        let hold_writes: Vec<_> = holds
            .iter()
            .map(|(journal, held)| (*journal, journal.log().append(Payload::encoded_only(held.clone()).request_bytes())))
            .collect();
        let written = write_logs(&mut commits).await;
        let mut hold_failure = None;
        let mut hold_seqs = Vec::new();
        for (journal, write) in hold_writes {
            match write.await {
                Ok(seq) => hold_seqs.push((journal, seq)),
                Err(error) => {
                    hold_failure.get_or_insert(AdmitError::Storage {
                        exporter: format!("hold journal of pipeline {}", journal.log().dir().display()),
                        error: error.to_string(),
                    });
                }
            }
        }
        if written.is_err() || hold_failure.is_some() {
            for (journal, seq) in hold_seqs {
                journal.log().ack(seq);
            }
            for c in &commits {
                if let (Some(log), Some(seq)) = (c.reservation.queue().log(), c.seq) {
                    log.ack(seq);
                }
            }
            // The processors ran, and cannot take it back: the output of a pipeline that holds
            // spans may carry spans it held for earlier requests, which were acknowledged. They
            // must not go with the refusal, so that output goes through the pipeline's release
            // backlog. The request's own spans in it may then arrive twice (its client sends it
            // again), as may those the processors now hold: at least once, never lost.
            drop(commits);
            for (pipeline, payload) in held_over {
                pipeline.defer(payload.resource_spans().into_owned());
            }
            return Err(written.err().or(hold_failure).unwrap_or(AdmitError::ShuttingDown));
        }
        for (journal, seq) in hold_seqs {
            journal.remember(seq, now);
        }
        for c in commits {
            commit(c);
        }
        Ok(Admission { accepted_spans: spans, ..Default::default() })
    }
}

/// The queues a batch of released spans has not reached yet. When its admission is abandoned
/// half-way (the release task is aborted at shutdown while it waits for room), those spans are
/// counted as dropped at shutdown, so the shutdown report still adds up.
struct Unreached<'a> {
    queues: &'a [Arc<ExporterQueue>],
    spans: usize,
    /// Set when spans were abandoned: the journal of held spans must then keep its records.
    interrupted: &'a std::sync::atomic::AtomicBool,
}

impl Drop for Unreached<'_> {
    fn drop(&mut self) {
        if !self.queues.is_empty() {
            self.interrupted.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        for queue in self.queues {
            queue.metrics.dropped_shutdown.inc_by(self.spans as u64);
        }
    }
}

/// A batch bound for one queue, with the capacity reserved for it.
struct Commit {
    reservation: Reservation,
    payload: Arc<Payload>,
    spans: usize,
    seq: Option<u64>,
}

/// Writes the batches of disk-backed queues to their logs, one group commit for all.
async fn write_logs(commits: &mut [Commit]) -> Result<(), AdmitError> {
    // Every append is handed to its writer before the first is awaited, so they share fsyncs.
    let writes: Vec<_> = commits
        .iter()
        .enumerate()
        .filter_map(|(i, c)| c.reservation.queue().log().map(|log| (i, log.append(c.payload.request_bytes()))))
        .collect();
    let mut failure = None;
    for (i, write) in writes {
        match write.await {
            Ok(seq) => commits[i].seq = Some(seq),
            Err(error) => {
                let exporter = commits[i].reservation.queue().exporter.clone();
                commits[i].reservation.queue().metrics.storage_errors.inc();
                failure.get_or_insert(AdmitError::Storage { exporter, error: error.to_string() });
            }
        }
    }
    // On failure the caller acknowledges what was written, so that a restart does not send it.
    failure.map_or(Ok(()), Err)
}

/// Commits a reserved (and, for a disk-backed queue, written) batch. Capacity is held, so only a
/// queue closed by shutdown in the meantime refuses it; that is counted, never turned into an
/// error for a request whose other pipelines already took it (all or nothing towards the
/// client). A written record stays on disk and is sent after the next start.
fn commit(c: Commit) {
    let queue = c.reservation.queue().clone();
    if c.reservation.commit_logged(c.payload, c.seq).is_err() && c.seq.is_none() {
        queue.metrics.dropped_shutdown.inc_by(c.spans as u64);
        tracing::warn!(exporter = %queue.exporter, spans = c.spans, "queue closed while a request was admitted; counted as dropped at shutdown");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Metrics;
    use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Span};

    fn spans(n: usize) -> Vec<ResourceSpans> {
        vec![ResourceSpans {
            scope_spans: vec![ScopeSpans { spans: vec![Span::default(); n], ..Default::default() }],
            ..Default::default()
        }]
    }

    fn pipeline(exporters: Vec<Arc<ExporterQueue>>) -> Arc<Pipeline> {
        Arc::new(Pipeline::new("p".into(), vec![], exporters, true))
    }

    #[tokio::test]
    async fn a_full_queue_refuses_and_leaves_the_others_untouched() {
        let metrics = Metrics::new();
        let a = ExporterQueue::new("a", 100, WhenFull::Refuse, metrics.exporter("a"));
        let b = ExporterQueue::new("b", 5, WhenFull::Refuse, metrics.exporter("b"));
        let fanout = Fanout::new(vec![pipeline(vec![a.clone(), b.clone()])]);
        assert_eq!(fanout.admit(spans(4)).await.unwrap().accepted_spans, 4);
        assert_eq!(fanout.admit(spans(4)).await, Err(AdmitError::QueueFull { exporter: "b".into() }));
        assert_eq!(a.len(), 4, "the refused batch went nowhere");
        assert_eq!(b.len(), 4);
    }

    #[tokio::test]
    async fn a_best_effort_queue_drops_without_refusing() {
        let metrics = Metrics::new();
        let a = ExporterQueue::new("a", 100, WhenFull::Refuse, metrics.exporter("a"));
        let b = ExporterQueue::new("b", 5, WhenFull::Drop, metrics.exporter("b"));
        let fanout = Fanout::new(vec![pipeline(vec![a.clone(), b.clone()])]);
        fanout.admit(spans(4)).await.unwrap();
        fanout.admit(spans(4)).await.unwrap();
        assert_eq!(a.len(), 8);
        assert_eq!(b.len(), 4);
        assert_eq!(b.metrics.dropped_full.get(), 4);
    }

    fn trace(trace: u8, first: u8, n: u8, order: Option<&str>) -> Vec<ResourceSpans> {
        use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
        let spans = (0..n)
            .map(|i| Span {
                trace_id: vec![trace; 16],
                span_id: vec![first + i; 8],
                attributes: match (i, order) {
                    (0, Some(id)) => vec![KeyValue {
                        key: "order.id".into(),
                        value: Some(AnyValue { value: Some(any_value::Value::StringValue(id.into())) }),
                        ..Default::default()
                    }],
                    _ => vec![],
                },
                ..Default::default()
            })
            .collect();
        vec![ResourceSpans { scope_spans: vec![ScopeSpans { spans, ..Default::default() }], ..Default::default() }]
    }

    /// Spans an enricher releases beyond the request's reservation never hold the client up or
    /// live in a detached task: without room they wait in the pipeline's bounded backlog, and the
    /// release path admits them when room returns.
    #[tokio::test]
    async fn released_spans_without_room_wait_in_the_backlog_not_in_a_task() {
        let metrics = Metrics::new();
        let queue = ExporterQueue::new("q", 10, WhenFull::Refuse, metrics.exporter("q"));
        let enrich = crate::processors::ProcessorConfig::OrderEnrich(Default::default());
        let processor = Processor::build(&enrich, "p", &metrics).unwrap();
        let pipeline = Arc::new(Pipeline::new("p".into(), vec![processor], vec![queue.clone()], true));
        let fanout = Fanout::new(vec![pipeline.clone()]);

        fanout.admit(trace(1, 1, 6, None)).await.unwrap();
        assert_eq!((queue.len(), pipeline.backlog_spans()), (0, 0), "six spans wait for their order");
        fanout.admit(trace(2, 1, 3, Some("B-2"))).await.unwrap();
        assert_eq!(queue.len(), 3);
        // The order arrives: six held spans come free with four new ones; room for seven only.
        let admission = fanout.admit(trace(1, 7, 4, Some("A-1"))).await.unwrap();
        assert_eq!(admission.accepted_spans, 4);
        assert_eq!((queue.len(), pipeline.backlog_spans()), (7, 6), "the request's own four in, the six released wait");
        assert_eq!(queue.metrics.dropped_full.get(), 0);

        // Room returns (the exporter sent the first batch): the release path admits the backlog.
        drop(queue.recv().await.unwrap());
        pipeline.drain_backlog(Duration::from_secs(1)).await;
        assert_eq!((queue.len(), pipeline.backlog_spans()), (10, 0));
        assert_eq!(queue.metrics.dropped_full.get(), 0, "nothing was dropped");
    }

    /// A best-effort queue that is full is charged what it misses: the spans an enricher let go
    /// with the request, not the request's own that it holds back.
    #[tokio::test]
    async fn a_full_best_effort_queue_counts_the_spans_it_misses() {
        let metrics = Metrics::new();
        let archive = ExporterQueue::new("archive", 8, WhenFull::Drop, metrics.exporter("archive"));
        let enrich = crate::processors::ProcessorConfig::OrderEnrich(Default::default());
        let processor = Processor::build(&enrich, "p", &metrics).unwrap();
        let fanout = Fanout::new(vec![Arc::new(Pipeline::new("p".into(), vec![processor], vec![archive.clone()], true))]);
        fanout.admit(trace(1, 1, 6, None)).await.unwrap();
        fanout.admit(trace(2, 1, 8, Some("B-2"))).await.unwrap();
        assert_eq!((archive.len(), archive.metrics.dropped_full.get()), (8, 0), "six wait, eight in");
        // Full: three spans of a new trace wait in the enricher (nothing is missed yet) ...
        fanout.admit(trace(3, 1, 3, None)).await.unwrap();
        assert_eq!(archive.metrics.dropped_full.get(), 0);
        // ... and trace 1's order lets its six go with the request's four: ten missed.
        fanout.admit(trace(1, 7, 4, Some("A-1"))).await.unwrap();
        assert_eq!((archive.len(), archive.metrics.dropped_full.get()), (8, 10));
    }

    /// A request refused because a disk-backed queue cannot write does not take with it the
    /// spans an enricher released with it (held for earlier, acknowledged requests).
    #[tokio::test]
    async fn a_refused_request_loses_none_of_the_spans_it_released() {
        let metrics = Metrics::new();
        let queue = ExporterQueue::new("q", 100, WhenFull::Refuse, metrics.exporter("q"));
        let enrich = crate::processors::ProcessorConfig::OrderEnrich(Default::default());
        let processor = Processor::build(&enrich, "p", &metrics).unwrap();
        let enriched = Arc::new(Pipeline::new("p".into(), vec![processor], vec![queue.clone()], true));
        let dir = tempfile::tempdir().unwrap();
        let log_dir = dir.path().join("log");
        let (log, _, _) = crate::pipeline::disk::DiskLog::open(&log_dir, "d", crate::pipeline::disk::SyncPolicy::Always, 4096).unwrap();
        let disk = ExporterQueue::with_log("d", 100, WhenFull::Refuse, Some(log), metrics.exporter("d"));
        let fanout = Fanout::new(vec![enriched.clone(), pipeline(vec![disk.clone()])]);

        // Spans large enough to fill the log's first segment: its next write opens a new file.
        let mut first = trace(1, 1, 6, None);
        for span in &mut first[0].scope_spans[0].spans {
            span.name = "x".repeat(1000);
        }
        fanout.admit(first).await.unwrap();
        assert_eq!((queue.len(), disk.len()), (0, 6), "six spans wait for their order in the enricher");
        // The disk queue can no longer write (its directory is gone); the order arrives.
        std::fs::remove_dir_all(&log_dir).unwrap();
        let refused = fanout.admit(trace(1, 7, 4, Some("A-1"))).await;
        assert!(matches!(refused, Err(AdmitError::Storage { .. })), "{refused:?}");
        assert_eq!(disk.len(), 6, "the refused request entered no queue");
        // The six released spans (and the request's own four) wait in the release backlog.
        assert_eq!((queue.len(), enriched.backlog_spans()), (0, 10));
        enriched.drain_backlog(Duration::from_secs(1)).await;
        assert_eq!(queue.len(), 10);
        assert_eq!(queue.metrics.dropped_full.get(), 0, "nothing was dropped");
    }
}
