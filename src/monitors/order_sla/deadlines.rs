//! One rule's deadlines: a calendar queue. Deadlines fall into buckets of [`BUCKET_NS`] by their
//! time; a bucket is an unsorted list until it is the first and taken from, when it becomes a
//! min-heap (built in one pass) and gives its deadlines in time order. Arming a deadline is a
//! push into its bucket whatever order the facts came in (spans arrive seconds out of order:
//! SDKs export in batches), with no search of one large ordered set and no node allocations.
//! Cancelling is lazy: the monitor checks a deadline against its clock when its time comes, and
//! sweeps cancelled ones out when they are many ([`RuleDeadlines::sweep`]).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

/// A deadline: when (Unix nanoseconds), which order slot.
pub(super) type Deadline = (u64, u32);

/// The time a bucket covers.
const BUCKET_NS: u64 = 4_000_000_000;

/// A deadline more than this many buckets before the first or after the last (hours, in data
/// that arrives very late or clocks that jump) is not given the empty buckets between: the
/// caller keeps it in its ordered set instead.
const MAX_GAP: u64 = 1 << 15;

/// One bucket's deadlines: an unsorted list (with its earliest entry) until the bucket is first
/// and taken from; then a min-heap, so that the deadlines still pushed into it (ones that passed
/// already, or fall in the bucket's few seconds) cost a sift of a few levels, not a move of the
/// whole bucket.
enum Bucket {
    Open { entries: Vec<Deadline>, min: Deadline },
    Taken(BinaryHeap<Reverse<Deadline>>),
}

impl Default for Bucket {
    fn default() -> Bucket {
        Bucket::Open { entries: Vec::new(), min: (0, 0) }
    }
}

impl Bucket {
    fn push(&mut self, entry: Deadline) {
        match self {
            Bucket::Open { entries, min } => {
                if entries.is_empty() || entry < *min {
                    *min = entry;
                }
                entries.push(entry);
            }
            Bucket::Taken(heap) => heap.push(Reverse(entry)),
        }
    }

    fn first(&self) -> Option<Deadline> {
        match self {
            Bucket::Open { entries, min } => (!entries.is_empty()).then_some(*min),
            Bucket::Taken(heap) => heap.peek().map(|e| e.0),
        }
    }

    /// Takes the earliest entry (the bucket is a heap from then on).
    fn pop(&mut self) -> Option<Deadline> {
        if let Bucket::Open { entries, .. } = self {
            // Same layout (`Reverse` is transparent): collected in place, then heapified in O(n).
            let heap: Vec<Reverse<Deadline>> = std::mem::take(entries).into_iter().map(Reverse).collect();
            *self = Bucket::Taken(BinaryHeap::from(heap));
        }
        match self {
            Bucket::Taken(heap) => heap.pop().map(|e| e.0),
            Bucket::Open { .. } => unreachable!("made a heap above"),
        }
    }

    fn len(&self) -> usize {
        match self {
            Bucket::Open { entries, .. } => entries.len(),
            Bucket::Taken(heap) => heap.len(),
        }
    }

    fn iter(&self) -> impl Iterator<Item = Deadline> + '_ {
        let (open, taken) = match self {
            Bucket::Open { entries, .. } => (Some(entries.iter().copied()), None),
            Bucket::Taken(heap) => (None, Some(heap.iter().map(|e| e.0))),
        };
        open.into_iter().flatten().chain(taken.into_iter().flatten())
    }

    fn retain(&mut self, mut holds: impl FnMut(Deadline) -> bool) {
        match self {
            Bucket::Open { entries, min } => {
                entries.retain(|e| holds(*e));
                *min = entries.iter().min().copied().unwrap_or_default();
                if entries.capacity() > 2 * entries.len() + 8 {
                    entries.shrink_to_fit();
                }
            }
            Bucket::Taken(heap) => {
                heap.retain(|e| holds(e.0));
                if heap.capacity() > 2 * heap.len() + 8 {
                    heap.shrink_to_fit();
                }
            }
        }
    }
}

/// Deadlines of one rule. Invariant: the first bucket, if any, is not empty.
#[derive(Default)]
pub(super) struct RuleDeadlines {
    /// Start of the first bucket (a multiple of [`BUCKET_NS`]).
    base: u64,
    buckets: VecDeque<Bucket>,
    len: usize,
}

impl RuleDeadlines {
    /// Deadlines held, cancelled ones included until swept.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// Adds a deadline; gives it back when it is too far from the others (see [`MAX_GAP`]).
    pub(super) fn push(&mut self, entry: Deadline) -> Result<(), Deadline> {
        let at = entry.0;
        if self.buckets.is_empty() {
            self.base = at - at % BUCKET_NS;
        }
        if at < self.base {
            let gap = (self.base - at).div_ceil(BUCKET_NS);
            if gap > MAX_GAP {
                return Err(entry);
            }
            for _ in 0..gap {
                self.buckets.push_front(Bucket::default());
            }
            self.base -= gap * BUCKET_NS;
        }
        let k = (at - self.base) / BUCKET_NS;
        if k >= self.buckets.len() as u64 + MAX_GAP {
            return Err(entry);
        }
        let k = k as usize;
        while self.buckets.len() <= k {
            self.buckets.push_back(Bucket::default());
        }
        self.buckets[k].push(entry);
        self.len += 1;
        Ok(())
    }

    /// The earliest deadline.
    pub(super) fn first(&self) -> Option<Deadline> {
        self.buckets.front().and_then(Bucket::first)
    }

    /// Takes the earliest deadline.
    pub(super) fn pop(&mut self) -> Option<Deadline> {
        let entry = self.buckets.front_mut()?.pop();
        if entry.is_some() {
            self.len -= 1;
        }
        self.drop_empty_front();
        entry
    }

    /// The deadlines due by `now_ns`, in no particular order.
    pub(super) fn due(&self, now_ns: u64) -> impl Iterator<Item = Deadline> + '_ {
        let due_buckets = if now_ns < self.base { 0 } else { ((now_ns - self.base) / BUCKET_NS).saturating_add(1) };
        self.buckets
            .iter()
            .take(usize::try_from(due_buckets).unwrap_or(usize::MAX))
            .flat_map(move |b| b.iter().filter(move |e| e.0 <= now_ns))
    }

    /// Keeps only the deadlines `holds` says still hold.
    pub(super) fn sweep(&mut self, mut holds: impl FnMut(Deadline) -> bool) {
        self.len = 0;
        for bucket in &mut self.buckets {
            bucket.retain(&mut holds);
            self.len += bucket.len();
        }
        self.drop_empty_front();
    }

    fn drop_empty_front(&mut self) {
        while self.buckets.front().is_some_and(|b| b.len() == 0) {
            self.buckets.pop_front();
            self.base += BUCKET_NS;
        }
        if self.buckets.is_empty() {
            self.buckets = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn deadlines_come_out_in_time_order_whatever_order_they_went_in() {
        let mut rng = fastrand::Rng::with_seed(3);
        let mut q = RuleDeadlines::default();
        let mut all = Vec::new();
        for i in 0..5000u32 {
            let at = 1_000_000 * S + rng.u64(0..600 * S);
            q.push((at, i)).unwrap();
            all.push((at, i));
        }
        all.sort();
        assert_eq!(q.len(), 5000);
        assert_eq!(q.first(), Some(all[0]));
        let mut out = Vec::new();
        // Taken half-way, then more pushed before the first (already due) and after.
        for _ in 0..2500 {
            out.push(q.pop().unwrap());
        }
        let late = (all[2500].0 - 1, 9000);
        q.push(late).unwrap();
        all.push(late);
        let after = (all[4999].0 + 3600 * S, 9001);
        q.push(after).unwrap();
        all.push(after);
        all.sort();
        while let Some(e) = q.pop() {
            out.push(e);
        }
        assert!(out.windows(2).all(|w| w[0] <= w[1]), "in time order");
        assert_eq!(out.len(), all.len());
        assert_eq!(q.len(), 0);
        assert_eq!(q.first(), None);
    }

    #[test]
    fn far_out_deadlines_are_given_back_and_sweeping_keeps_the_rest_in_order() {
        let mut q = RuleDeadlines::default();
        q.push((10_000_000 * S, 1)).unwrap();
        assert_eq!(q.push((10_000_000 * S - (MAX_GAP + 2) * BUCKET_NS, 2)), Err((10_000_000 * S - (MAX_GAP + 2) * BUCKET_NS, 2)));
        assert_eq!(q.push((10_000_000 * S + (MAX_GAP + 2) * BUCKET_NS, 3)), Err((10_000_000 * S + (MAX_GAP + 2) * BUCKET_NS, 3)));
        for i in 4..100u32 {
            q.push((10_000_000 * S + u64::from(i) * S, i)).unwrap();
        }
        q.push((10_000_000 * S - 100 * S, 100)).unwrap();
        assert_eq!(q.first(), Some((10_000_000 * S - 100 * S, 100)));
        // Sweeping out the earliest (and every odd one) leaves the first bucket non-empty.
        q.sweep(|(_, i)| i % 2 == 0 && i != 100);
        assert_eq!(q.len(), 48);
        assert_eq!(q.first(), Some((10_000_000 * S + 4 * S, 4)));
        let due: Vec<u32> = q.due(10_000_000 * S + 10 * S).map(|e| e.1).collect();
        let mut sorted = due.clone();
        sorted.sort();
        assert_eq!(sorted, [4, 6, 8, 10]);
    }
}
