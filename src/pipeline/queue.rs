//! `ExporterQueue`: the bounded queue in front of one exporter, sized in spans.
//!
//! Capacity is a semaphore of span permits. A receiver first *reserves* capacity in every queue
//! its batch goes to and only then commits the batch to all of them, so a refused request was put
//! in no queue at all. The permits travel with the batch and are returned once the exporter is
//! done with it (delivered, failed, or dropped), so the bound covers spans being sent too.

use std::sync::{Arc, RwLock};

use tokio::sync::{mpsc, Mutex, OwnedSemaphorePermit, Semaphore};

use super::payload::Payload;
use crate::shared::WhenFull;
use crate::telemetry::ExporterMetrics;

/// One batch waiting for its exporter, with the capacity it holds.
pub struct QueuedBatch {
    pub payload: Arc<Payload>,
    pub permit: OwnedSemaphorePermit,
}

pub struct ExporterQueue {
    pub exporter: String,
    pub when_full: WhenFull,
    capacity: usize,
    permits: Arc<Semaphore>,
    sender: RwLock<Option<mpsc::UnboundedSender<QueuedBatch>>>,
    receiver: Mutex<mpsc::UnboundedReceiver<QueuedBatch>>,
    /// A batch a consumer took but could not fit in its request; the next consumer starts with
    /// it. Only touched while holding `receiver`.
    front: std::sync::Mutex<Option<QueuedBatch>>,
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
}

impl ExporterQueue {
    pub fn new(exporter: &str, capacity: usize, when_full: WhenFull, metrics: ExporterMetrics) -> Arc<ExporterQueue> {
        let (tx, rx) = mpsc::unbounded_channel();
        metrics.queue_capacity.set(capacity as i64);
        Arc::new(ExporterQueue {
            exporter: exporter.into(),
            when_full,
            capacity,
            permits: Arc::new(Semaphore::new(capacity)),
            sender: RwLock::new(Some(tx)),
            receiver: Mutex::new(rx),
            front: std::sync::Mutex::new(None),
            metrics,
        })
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
        if spans > self.capacity {
            return Err(ReserveError::TooLarge);
        }
        if self.sender.read().unwrap_or_else(|e| e.into_inner()).is_none() {
            return Err(ReserveError::Closed);
        }
        // `spans` <= capacity, which fits the semaphore's u32 range (checked at construction by
        // the config's limits), so the conversion only fails for absurd capacities.
        let n = u32::try_from(spans).map_err(|_| ReserveError::TooLarge)?;
        match self.permits.clone().try_acquire_many_owned(n) {
            Ok(permit) => Ok(Reservation { queue: self.clone(), permit }),
            Err(tokio::sync::TryAcquireError::NoPermits) => Err(ReserveError::Full),
            Err(tokio::sync::TryAcquireError::Closed) => Err(ReserveError::Closed),
        }
    }

    /// Like `reserve`, but waits up to `patience` for room (used for spans a processor releases
    /// on its own, which have no client to answer).
    pub async fn reserve_wait(self: &Arc<Self>, spans: usize, patience: std::time::Duration) -> Result<Reservation, ReserveError> {
        if spans > self.capacity {
            return Err(ReserveError::TooLarge);
        }
        if self.sender.read().unwrap_or_else(|e| e.into_inner()).is_none() {
            return Err(ReserveError::Closed);
        }
        let n = u32::try_from(spans).map_err(|_| ReserveError::TooLarge)?;
        match tokio::time::timeout(patience, self.permits.clone().acquire_many_owned(n)).await {
            Ok(Ok(permit)) => Ok(Reservation { queue: self.clone(), permit }),
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

    /// Batches still waiting, taken out without sending (used after the shutdown deadline).
    pub fn drain_now(&self) -> Vec<QueuedBatch> {
        let mut out: Vec<QueuedBatch> = self.take_front().into_iter().collect();
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
        let guard = self.queue.sender.read().unwrap_or_else(|e| e.into_inner());
        match guard.as_ref() {
            Some(tx) => tx.send(QueuedBatch { payload, permit: self.permit }).map_err(|_| ReserveError::Closed),
            None => Err(ReserveError::Closed),
        }
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
