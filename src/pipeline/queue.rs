//! `ExporterQueue`: the bounded queue in front of one exporter, sized in spans.
//!
//! Capacity is a semaphore of span permits. A receiver first *reserves* capacity in every queue
//! its batch goes to and only then commits the batch to all of them, so a refused request was put
//! in no queue at all. The permits travel with the batch and are returned once the exporter is
//! done with it (delivered, failed, or dropped), so the bound covers spans being sent too.

use std::sync::{Arc, RwLock};

use tokio::sync::{mpsc, Mutex, OwnedSemaphorePermit, Semaphore};

use super::disk::DiskLog;
use super::payload::Payload;
use crate::shared::WhenFull;
use crate::telemetry::ExporterMetrics;

/// One batch waiting for its exporter, with the capacity it holds.
pub struct QueuedBatch {
    pub payload: Arc<Payload>,
    pub permit: OwnedSemaphorePermit,
    /// Its share of the queue's byte bound (`max_bytes`), in KiB.
    pub bytes: Option<OwnedSemaphorePermit>,
    /// Its record in the queue's disk log, acknowledged by `ExporterQueue::done`.
    pub seq: Option<u64>,
    /// When it entered the queue (or was written, for a batch recovered from disk).
    pub enqueued: std::time::SystemTime,
}

pub struct ExporterQueue {
    pub exporter: String,
    pub when_full: WhenFull,
    capacity: usize,
    permits: Arc<Semaphore>,
    /// The byte bound (`max_bytes`), in KiB permits; none without one.
    byte_limit: Option<(usize, Arc<Semaphore>)>,
    sender: RwLock<Option<mpsc::UnboundedSender<QueuedBatch>>>,
    receiver: Mutex<mpsc::UnboundedReceiver<QueuedBatch>>,
    /// A batch a consumer took but could not fit in its request; the next consumer starts with
    /// it. Only touched while holding `receiver`.
    front: std::sync::Mutex<Option<QueuedBatch>>,
    /// Batches given back by retired consumers.
    returned: std::sync::Mutex<Vec<QueuedBatch>>,
    /// With `sending_queue.storage`: every batch is written here before it is acknowledged.
    log: Option<DiskLog>,
    pub metrics: ExporterMetrics,
}

/// Why capacity could not be reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReserveError {
    /// Not enough room now; a retry later may succeed.
    Full,
    /// The batch is larger than the queue could ever hold.
    TooLarge,
    /// The queue no longer accepts batches (shutting down).
    Closed,
}

/// Capacity held for a batch that is about to be committed; dropping it gives the capacity back.
pub struct Reservation {
    queue: Arc<ExporterQueue>,
    permit: OwnedSemaphorePermit,
    bytes: Option<OwnedSemaphorePermit>,
}

/// KiB permits for `bytes` (at least one for a non-empty batch).
fn kib(bytes: usize) -> usize {
    bytes.div_ceil(1024)
}

impl ExporterQueue {
    pub fn new(exporter: &str, capacity: usize, when_full: WhenFull, metrics: ExporterMetrics) -> Arc<ExporterQueue> {
        ExporterQueue::with_log(exporter, capacity, when_full, None, metrics)
    }

    /// A queue whose batches are also written to `log` (a disk-backed queue).
    pub fn with_log(
        exporter: &str,
        capacity: usize,
        when_full: WhenFull,
        log: Option<DiskLog>,
        metrics: ExporterMetrics,
    ) -> Arc<ExporterQueue> {
        let (tx, rx) = mpsc::unbounded_channel();
        metrics.queue_capacity.set(capacity as i64);
        Arc::new(ExporterQueue {
            exporter: exporter.into(),
            when_full,
            capacity,
            permits: Arc::new(Semaphore::new(capacity)),
            byte_limit: None,
            sender: RwLock::new(Some(tx)),
            receiver: Mutex::new(rx),
            front: std::sync::Mutex::new(None),
            returned: std::sync::Mutex::new(Vec::new()),
            log,
            metrics,
        })
    }

    /// The same queue, also bounded to `max_bytes` of encoded spans.
    pub fn bounded_in_bytes(self: Arc<Self>, max_bytes: usize) -> Arc<ExporterQueue> {
        let mut queue = Arc::try_unwrap(self).unwrap_or_else(|_| panic!("bounded_in_bytes is called on a new queue"));
        let limit = kib(max_bytes).max(1);
        queue.byte_limit = Some((limit, Arc::new(Semaphore::new(limit))));
        Arc::new(queue)
    }

    /// Whether the queue has a byte bound (admission then measures requests).
    pub fn bounded_by_bytes(&self) -> bool {
        self.byte_limit.is_some()
    }

    /// Bytes held against the byte bound (0 without one).
    pub fn bytes_held(&self) -> usize {
        self.byte_limit.as_ref().map_or(0, |(limit, s)| (limit - s.available_permits()) * 1024)
    }

    fn reserve_bytes(&self, bytes: usize) -> Result<Option<OwnedSemaphorePermit>, ReserveError> {
        let Some((limit, semaphore)) = &self.byte_limit else { return Ok(None) };
        let need = kib(bytes);
        if need > *limit {
            return Err(ReserveError::TooLarge);
        }
        let n = u32::try_from(need).map_err(|_| ReserveError::TooLarge)?;
        match semaphore.clone().try_acquire_many_owned(n) {
            Ok(p) => Ok(Some(p)),
            Err(tokio::sync::TryAcquireError::NoPermits) => Err(ReserveError::Full),
            Err(tokio::sync::TryAcquireError::Closed) => Err(ReserveError::Closed),
        }
    }

    /// The disk log, for a disk-backed queue.
    pub fn log(&self) -> Option<&DiskLog> {
        self.log.as_ref()
    }

    /// The exporter is done with a batch (delivered, or dropped for good): its record on disk
    /// is no longer needed. A batch dropped without this (shutdown) is sent again after a start.
    pub fn done(&self, batch: QueuedBatch) {
        if let (Some(log), Some(seq)) = (&self.log, batch.seq) {
            log.ack(seq);
        }
    }

    /// Puts a batch recovered from the disk log back in the queue, waiting for room.
    pub async fn restore(&self, payload: Arc<Payload>, seq: u64, written_at_ns: u64) -> Result<(), ReserveError> {
        let enqueued = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(written_at_ns);
        self.enqueue_waiting(payload, Some(seq), enqueued).await
    }

    /// Enqueues a batch that was acknowledged long ago (recovered, or moved by a reload): it
    /// waits for room instead of being refused, taking at most the queue's whole capacity.
    async fn enqueue_waiting(&self, payload: Arc<Payload>, seq: Option<u64>, enqueued: std::time::SystemTime) -> Result<(), ReserveError> {
        let n = u32::try_from(payload.span_count().min(self.capacity)).map_err(|_| ReserveError::TooLarge)?;
        let permit = self.permits.clone().acquire_many_owned(n).await.map_err(|_| ReserveError::Closed)?;
        let bytes = match &self.byte_limit {
            Some((limit, semaphore)) => {
                let need = u32::try_from(kib(payload.encoded_len()).min(*limit)).map_err(|_| ReserveError::TooLarge)?;
                Some(semaphore.clone().acquire_many_owned(need).await.map_err(|_| ReserveError::Closed)?)
            }
            None => None,
        };
        let guard = self.sender.read().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            Some(tx) => tx.send(QueuedBatch { payload, permit, bytes, seq, enqueued }).map_err(|_| ReserveError::Closed),
            None => Err(ReserveError::Closed),
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Spans queued or being sent.
    pub fn len(&self) -> usize {
        self.capacity - self.permits.available_permits()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn reserve(self: &Arc<Self>, spans: usize) -> Result<Reservation, ReserveError> {
        self.reserve_sized(spans, 0)
    }

    /// Reserves `spans` and, for a queue bounded in bytes, `bytes` of encoded spans.
    pub fn reserve_sized(self: &Arc<Self>, spans: usize, bytes: usize) -> Result<Reservation, ReserveError> {
        if spans > self.capacity {
            return Err(ReserveError::TooLarge);
        }
        if self.sender.read().unwrap_or_else(|e| e.into_inner()).is_none() {
            return Err(ReserveError::Closed);
        }
        // `spans` <= capacity, which fits the semaphore's u32 range (checked at construction by
        // the config's limits), so the conversion only fails for absurd capacities.
        let n = u32::try_from(spans).map_err(|_| ReserveError::TooLarge)?;
        let bytes = self.reserve_bytes(bytes)?;
        match self.permits.clone().try_acquire_many_owned(n) {
            Ok(permit) => Ok(Reservation { queue: self.clone(), permit, bytes }),
            Err(tokio::sync::TryAcquireError::NoPermits) => Err(ReserveError::Full),
            Err(tokio::sync::TryAcquireError::Closed) => Err(ReserveError::Closed),
        }
    }

    /// Like `reserve`, but waits up to `patience` for room (used for spans a processor releases
    /// on its own, which have no client to answer).
    pub async fn reserve_wait(
        self: &Arc<Self>,
        spans: usize,
        bytes: usize,
        patience: std::time::Duration,
    ) -> Result<Reservation, ReserveError> {
        if spans > self.capacity {
            return Err(ReserveError::TooLarge);
        }
        if self.sender.read().unwrap_or_else(|e| e.into_inner()).is_none() {
            return Err(ReserveError::Closed);
        }
        let n = u32::try_from(spans).map_err(|_| ReserveError::TooLarge)?;
        let deadline = tokio::time::Instant::now() + patience;
        let bytes = match &self.byte_limit {
            None => None,
            Some((limit, semaphore)) => {
                let need = kib(bytes);
                if need > *limit {
                    return Err(ReserveError::TooLarge);
                }
                let need = u32::try_from(need).map_err(|_| ReserveError::TooLarge)?;
                match tokio::time::timeout_at(deadline, semaphore.clone().acquire_many_owned(need)).await {
                    Ok(Ok(p)) => Some(p),
                    Ok(Err(_)) => return Err(ReserveError::Closed),
                    Err(_) => return Err(ReserveError::Full),
                }
            }
        };
        match tokio::time::timeout_at(deadline, self.permits.clone().acquire_many_owned(n)).await {
            Ok(Ok(permit)) => Ok(Reservation { queue: self.clone(), permit, bytes }),
            Ok(Err(_)) => Err(ReserveError::Closed),
            Err(_) => Err(ReserveError::Full),
        }
    }

    /// Stops accepting batches; consumers finish what is queued and then see the end.
    pub fn close(&self) {
        self.sender.write().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// The next batch, or `None` once the queue is closed and empty.
    pub async fn recv(&self) -> Option<QueuedBatch> {
        self.receiver.lock().await.recv().await
    }

    /// Puts a batch back at the front of the queue (hold the receiver while doing so).
    pub fn put_back(&self, batch: QueuedBatch) {
        *self.front.lock().unwrap_or_else(|e| e.into_inner()) = Some(batch);
    }

    /// The batch put back, if any (hold the receiver while doing so).
    pub fn take_front(&self) -> Option<QueuedBatch> {
        self.front.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    /// Batches a consumer had in hand when it was stopped (shutdown, or a reload retiring its
    /// exporter), unsent.
    pub fn give_back(&self, batches: Vec<QueuedBatch>) {
        self.returned.lock().unwrap_or_else(|e| e.into_inner()).extend(batches);
    }

    /// Takes a batch from another queue (the one this queue replaces in a reload), with its
    /// record in the disk log that both share; waits for room.
    pub async fn adopt(&self, batch: QueuedBatch) -> Result<(), ReserveError> {
        let QueuedBatch { payload, seq, enqueued, .. } = batch;
        self.enqueue_waiting(payload, seq, enqueued).await
    }

    /// Batches still waiting, taken out without sending (used after the shutdown deadline).
    pub fn drain_now(&self) -> Vec<QueuedBatch> {
        let mut out: Vec<QueuedBatch> = std::mem::take(&mut *self.returned.lock().unwrap_or_else(|e| e.into_inner()));
        out.extend(self.take_front());
        if let Ok(mut rx) = self.receiver.try_lock() {
            while let Ok(b) = rx.try_recv() {
                out.push(b);
            }
        }
        out
    }

    /// The receiver half, held by a consumer while it assembles a batch.
    pub async fn lock_receiver(&self) -> tokio::sync::MutexGuard<'_, mpsc::UnboundedReceiver<QueuedBatch>> {
        self.receiver.lock().await
    }
}

impl Reservation {
    pub fn spans(&self) -> usize {
        self.permit.num_permits()
    }

    /// Changes the reserved amount to `spans` (processors may hold back or release spans).
    /// Growing fails when the queue has no room; the reservation is then given back whole.
    pub fn resize(mut self, spans: usize) -> Result<Reservation, ReserveError> {
        let have = self.permit.num_permits();
        if spans < have {
            drop(self.permit.split(have - spans));
            return Ok(self);
        }
        if spans > have {
            let extra = u32::try_from(spans - have).map_err(|_| ReserveError::TooLarge)?;
            match self.queue.permits.clone().try_acquire_many_owned(extra) {
                Ok(more) => self.permit.merge(more),
                Err(_) => return Err(ReserveError::Full),
            }
        }
        Ok(self)
    }

    /// Grows the reservation by `extra` spans if the queue has room now; unchanged otherwise.
    pub fn try_grow(&mut self, extra: usize) -> bool {
        let Ok(extra) = u32::try_from(extra) else { return false };
        match self.queue.permits.clone().try_acquire_many_owned(extra) {
            Ok(more) => {
                self.permit.merge(more);
                true
            }
            Err(_) => false,
        }
    }

    /// Puts the batch in the queue. Fails only if the queue was closed since the reservation.
    pub fn commit(self, payload: Arc<Payload>) -> Result<(), ReserveError> {
        self.commit_logged(payload, None)
    }

    /// Puts a batch already written to the queue's disk log (`seq`) in the queue.
    pub fn commit_logged(self, payload: Arc<Payload>, seq: Option<u64>) -> Result<(), ReserveError> {
        let guard = self.queue.sender.read().unwrap_or_else(|e| e.into_inner());
        let batch = QueuedBatch { payload, permit: self.permit, bytes: self.bytes, seq, enqueued: std::time::SystemTime::now() };
        match guard.as_ref() {
            Some(tx) => tx.send(batch).map_err(|_| ReserveError::Closed),
            None => Err(ReserveError::Closed),
        }
    }

    pub fn queue(&self) -> &Arc<ExporterQueue> {
        &self.queue
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::Metrics;

    fn queue(cap: usize) -> Arc<ExporterQueue> {
        ExporterQueue::new("q", cap, WhenFull::Refuse, Metrics::new().exporter("q"))
    }

    #[test]
    fn a_queue_bounded_in_bytes_refuses_what_does_not_fit() {
        let q = ExporterQueue::new("q", 1000, WhenFull::Refuse, Metrics::new().exporter("q")).bounded_in_bytes(10 * 1024);
        let a = q.reserve_sized(1, 6 * 1024).unwrap();
        assert_eq!(q.bytes_held(), 6 * 1024);
        assert_eq!(q.reserve_sized(1, 5 * 1024).err(), Some(ReserveError::Full), "spans fit, bytes do not");
        assert_eq!(q.reserve_sized(1, 11 * 1024).err(), Some(ReserveError::TooLarge));
        drop(a);
        assert!(q.reserve_sized(1, 10 * 1024).is_ok());
    }

    #[test]
    fn reservation_is_returned_when_dropped() {
        let q = queue(10);
        let r = q.reserve(8).unwrap();
        assert_eq!(q.len(), 8);
        assert_eq!(q.reserve(3).err(), Some(ReserveError::Full));
        drop(r);
        assert_eq!(q.len(), 0);
        assert!(q.reserve(10).is_ok());
        assert_eq!(q.reserve(11).err(), Some(ReserveError::TooLarge));
    }

    #[tokio::test]
    async fn capacity_is_held_until_the_batch_is_done() {
        let q = queue(10);
        q.reserve(4).unwrap().commit(Arc::new(Payload::new(vec![]))).unwrap();
        assert_eq!(q.len(), 4);
        let batch = q.recv().await.unwrap();
        assert_eq!(q.len(), 4, "still held while being sent");
        drop(batch);
        assert_eq!(q.len(), 0);
        q.close();
        assert_eq!(q.reserve(1).err(), Some(ReserveError::Closed));
        assert!(q.recv().await.is_none());
    }
}
