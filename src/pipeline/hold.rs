//! `HoldJournal`: spans a processor holds after their request was acknowledged (`order_enrich`
//! waiting for a trace's order), written to disk so that a crash does not lose them.
//!
//! The journal does not follow spans through the enricher. When a request is admitted, the spans
//! of it that did not come out of the processors (held, or dropped by sampling) are written as
//! one record, in the same group commit as the queues' copies. The enricher lets every span go
//! within its `wait`, so a record is settled once `wait` (plus a margin) has passed, the spans
//! the enricher let go of by then are in the (disk-backed) queues, and no request that may have
//! released them is still being admitted. Settled records are acknowledged; after a crash, the
//! records not settled are run through the processors again. Spans that had already gone out
//! are then sent twice (at least once), never lost.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
use tokio::time::Instant;

use super::disk::DiskLog;

/// Time allowed beyond the enricher's wait for released spans to reach the queues.
const SETTLE_MARGIN: Duration = Duration::from_secs(2);

pub struct HoldJournal {
    log: DiskLog,
    horizon: Duration,
    /// Records written, with when they settle, oldest first.
    records: Mutex<VecDeque<(u64, Instant)>>,
    /// Requests being admitted, by when they started.
    admits: Mutex<BTreeMap<u64, Instant>>,
    next_admit: AtomicU64,
}

/// A request being admitted; settled records wait for it.
pub struct AdmitGuard<'a> {
    journal: &'a HoldJournal,
    id: u64,
}

impl Drop for AdmitGuard<'_> {
    fn drop(&mut self) {
        self.journal.admits.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
    }
}

impl HoldJournal {
    /// `wait`: the longest a processor holds a span.
    pub fn new(log: DiskLog, wait: Duration) -> HoldJournal {
        HoldJournal {
            log,
            horizon: wait + SETTLE_MARGIN,
            records: Mutex::default(),
            admits: Mutex::default(),
            next_admit: AtomicU64::new(0),
        }
    }

    pub fn log(&self) -> &DiskLog {
        &self.log
    }

    pub fn begin_admit(&self, now: Instant) -> AdmitGuard<'_> {
        let id = self.next_admit.fetch_add(1, Ordering::Relaxed);
        self.admits.lock().unwrap_or_else(|p| p.into_inner()).insert(id, now);
        AdmitGuard { journal: self, id }
    }

    /// A record written at `now`.
    pub fn remember(&self, seq: u64, now: Instant) {
        self.records.lock().unwrap_or_else(|p| p.into_inner()).push_back((seq, now + self.horizon));
    }

    /// Records in the journal, not yet settled.
    pub fn pending(&self) -> usize {
        self.records.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Acknowledges the records settled by `released_at`: the processors were asked at that
    /// time to let go of what was due and what they let go of is in the queues.
    pub fn settle(&self, released_at: Instant) {
        let oldest_admit = self.admits.lock().unwrap_or_else(|p| p.into_inner()).values().min().copied();
        let cutoff = oldest_admit.map_or(released_at, |a| a.min(released_at));
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        while records.front().is_some_and(|(_, settles)| *settles <= cutoff) {
            if let Some((seq, _)) = records.pop_front() {
                self.log.ack(seq);
            }
        }
    }

    /// Acknowledges every record (the processors let go of everything and it is in the queues).
    pub fn settle_all(&self) {
        let mut records = self.records.lock().unwrap_or_else(|p| p.into_inner());
        for (seq, _) in records.drain(..) {
            self.log.ack(seq);
        }
    }
}

/// The spans of `input` that are not in `output` (by trace and span id), kept in their resource
/// and scope.
pub fn missing_spans(input: &[ResourceSpans], output: &[ResourceSpans]) -> Vec<ResourceSpans> {
    let out: HashSet<(&[u8], &[u8])> = output
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .map(|s| (s.trace_id.as_slice(), s.span_id.as_slice()))
        .collect();
    let mut missing = Vec::new();
    for rs in input {
        let mut scopes = Vec::new();
        for ss in &rs.scope_spans {
            let spans: Vec<_> =
                ss.spans.iter().filter(|s| !out.contains(&(s.trace_id.as_slice(), s.span_id.as_slice()))).cloned().collect();
            if !spans.is_empty() {
                scopes.push(ScopeSpans { scope: ss.scope.clone(), spans, schema_url: ss.schema_url.clone() });
            }
        }
        if !scopes.is_empty() {
            missing.push(ResourceSpans { resource: rs.resource.clone(), scope_spans: scopes, schema_url: rs.schema_url.clone() });
        }
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::Span;

    fn rs(ids: &[u8]) -> Vec<ResourceSpans> {
        let spans = ids.iter().map(|i| Span { trace_id: vec![1; 16], span_id: vec![*i; 8], ..Default::default() }).collect();
        vec![ResourceSpans { scope_spans: vec![ScopeSpans { spans, ..Default::default() }], ..Default::default() }]
    }

    #[test]
    fn the_spans_that_did_not_come_out_are_the_held_ones() {
        let held = missing_spans(&rs(&[1, 2, 3, 4]), &rs(&[2, 4, 9]));
        let ids: Vec<u8> = held[0].scope_spans[0].spans.iter().map(|s| s.span_id[0]).collect();
        assert_eq!(ids, vec![1, 3]);
        assert!(missing_spans(&rs(&[1]), &rs(&[1])).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_record_settles_after_the_wait_and_not_while_an_older_admit_runs() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _, _) = DiskLog::open(dir.path(), "hold", crate::shared::SyncPolicy::Never, 1 << 20).unwrap();
        let journal = HoldJournal::new(log.clone(), Duration::from_secs(1));
        let t0 = Instant::now();
        let seq = log.append(bytes::Bytes::from_static(b"held")).await.unwrap();
        journal.remember(seq, t0);
        let admit = journal.begin_admit(t0 + Duration::from_millis(500));
        journal.settle(t0 + Duration::from_secs(10));
        assert_eq!(journal.pending(), 1, "a request admitted before the record settled may be releasing its spans");
        drop(admit);
        journal.settle(t0 + Duration::from_secs(2));
        assert_eq!(journal.pending(), 1, "not before wait + margin");
        journal.settle(t0 + Duration::from_secs(3));
        assert_eq!(journal.pending(), 0);
    }
}
