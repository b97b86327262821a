//! `TtlCache`: a map whose entries live for a fixed time from insertion, bounded in entries.
//! Expiry and eviction go oldest first, in O(1) per entry.
//!
//! Every entry lives for the same time, so the order of insertion is the order of expiry: the
//! entries sit in a ring, oldest first, and a hash table of their positions finds them by key.
//! An entry is its key, its value and its expiry, with no copy of the key for the eviction
//! order and no per-entry allocation (the trace cache holds hundreds of thousands of them; issue
//! 10's memory target). The table of positions holds 4-byte sequence numbers, so growing it
//! moves no entry and costs little. The ring itself is kept in blocks ([`Ring`]), so growing it
//! copies no entry either.

use std::borrow::Borrow;
use std::collections::VecDeque;
use std::hash::{BuildHasher, Hash};
use std::time::Duration;

use hashbrown::HashTable;
use tokio::time::Instant;

struct Entry<K, V> {
    key: K,
    value: V,
    /// Nanoseconds after the cache's epoch.
    expires: u64,
}

pub struct TtlCache<K, V> {
    /// Oldest first. The entry at `ring[i]` has the sequence number `head + i` (wrapping).
    ring: Ring<Entry<K, V>>,
    head: u32,
    /// The sequence numbers of the entries, by the hash of their keys.
    index: HashTable<u32>,
    hasher: foldhash::fast::RandomState,
    epoch: Instant,
    ttl: Duration,
    max_entries: usize,
    /// Entries in the ring that the index no longer points to: bound again further back (see
    /// [`TtlCache::insert`]); they leave when they reach the front.
    dead: usize,
    pub evicted: u64,
}

/// The table of positions shrinks back to no less than this many entries.
const MIN_CAPACITY: usize = 64;

impl<K: Hash + Eq, V> TtlCache<K, V> {
    /// `max_entries` above `u32::MAX` is taken as `u32::MAX` (sequence numbers are 32 bits).
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        TtlCache {
            ring: Ring::new(max_entries),
            head: 0,
            index: HashTable::new(),
            hasher: Default::default(),
            epoch: Instant::now(),
            ttl,
            max_entries: max_entries.clamp(1, u32::MAX as usize),
            dead: 0,
            evicted: 0,
        }
    }

    /// Live and expired entries still held, not counting those bound again further back.
    pub fn len(&self) -> usize {
        self.ring.len() - self.dead
    }

    pub fn get<Q: Hash + Eq + ?Sized>(&self, key: &Q, now: Instant) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        let now = self.since_epoch(now);
        self.find(key).map(|i| &self.ring[i]).filter(|e| e.expires > now).map(|e| &e.value)
    }

    pub fn get_mut(&mut self, key: &K, now: Instant) -> Option<&mut V> {
        let now = self.since_epoch(now);
        self.find(key).map(|i| &mut self.ring[i]).filter(|e| e.expires > now).map(|e| &mut e.value)
    }

    /// Inserts a new entry; an existing live entry is left as it is (first binding wins) and
    /// `false` is returned.
    pub fn insert(&mut self, key: K, value: V, now: Instant) -> bool {
        self.expire(now);
        let (at, expires) = (self.since_epoch(now), self.since_epoch(now + self.ttl));
        if let Some(i) = self.find(&key) {
            // Still here though its time is up: it was inserted with a later `now` than the
            // entries before it (two requests racing), so expiry has not reached it yet. It is
            // bound again at the back, where its new time belongs: bound again in place, it
            // would hold back the expiry of every entry behind it for a whole `ttl`. The old
            // entry stays in the ring, dead (out of the index), until it reaches the front.
            if self.ring[i].expires > at {
                return false;
            }
            let hash = self.hasher.hash_one(&key);
            let seq = self.head.wrapping_add(i as u32);
            if let Ok(found) = self.index.find_entry(hash, |&s| s == seq) {
                found.remove();
            }
            self.dead += 1;
        }
        while self.len() >= self.max_entries {
            if self.pop_front() {
                self.evicted += 1;
            }
        }
        let hash = self.hasher.hash_one(&key);
        let seq = self.head.wrapping_add(self.ring.len() as u32);
        self.ring.push_back(Entry { key, value, expires });
        let (ring, head, hasher) = (&self.ring, self.head, &self.hasher);
        self.index.insert_unique(hash, seq, |&s| hasher.hash_one(&ring[s.wrapping_sub(head) as usize].key));
        true
    }

    /// Drops entries whose time is up.
    pub fn expire(&mut self, now: Instant) {
        let now = self.since_epoch(now);
        let before = self.ring.len();
        while self.ring.front().is_some_and(|e| e.expires <= now) {
            self.pop_front();
        }
        // After a burst, give back what the table no longer needs (the ring gave back its
        // blocks as they emptied).
        if self.ring.len() < before && self.index.capacity() > MIN_CAPACITY && self.ring.len() < self.index.capacity() / 4 {
            self.ring.drop_spare();
            let (ring, head, hasher) = (&self.ring, self.head, &self.hasher);
            self.index.shrink_to(self.ring.len(), |&s| hasher.hash_one(&ring[s.wrapping_sub(head) as usize].key));
        }
    }

    /// The ring position of a key's entry, live or not.
    fn find<Q: Hash + Eq + ?Sized>(&self, key: &Q) -> Option<usize>
    where
        K: Borrow<Q>,
    {
        let hash = self.hasher.hash_one(key);
        let (ring, head) = (&self.ring, self.head);
        self.index.find(hash, |&s| ring[s.wrapping_sub(head) as usize].key.borrow() == key).map(|&s| s.wrapping_sub(head) as usize)
    }

    /// Takes the front entry out; `false` when it was dead (or there was none).
    fn pop_front(&mut self) -> bool {
        let Some(entry) = self.ring.pop_front() else { return false };
        let hash = self.hasher.hash_one(&entry.key);
        let head = self.head;
        self.head = self.head.wrapping_add(1);
        match self.index.find_entry(hash, |&s| s == head) {
            Ok(found) => {
                found.remove();
                true
            }
            Err(_) => {
                self.dead -= 1;
                false
            }
        }
    }

    fn since_epoch(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }
}

/// Entries in a block of a [`Ring`]: 256 entries of the trace cache take 14 KiB. A ring holds
/// up to three blocks more than its entries (its first and last blocks in part, and a spare),
/// so blocks are small beside a shard's bound (7 812 traces by default).
const BLOCK: usize = 256;

/// A queue kept in blocks of at most [`BLOCK`] entries, indexed by position. It grows a block at
/// a time and gives back a block once its last entry has left, so no entry is ever copied and
/// the memory follows the entries: a queue that grows by doubling holds its old and new storage
/// at once, and the caches of all shards grow at about the same moment (about 15 MiB at once
/// for the trace caches of a gateway at 100 000 spans/s, issue 10).
///
/// Every block but the first and the last holds exactly `BLOCK` entries, so a position finds
/// its block by a division. A block grows by doubling up to `BLOCK` (and no further than the
/// queue's bound), so a small queue stays small. The first block, emptied, is kept for the next
/// block to come (a queue at its bound takes one entry out for each it puts in).
struct Ring<T> {
    blocks: VecDeque<VecDeque<T>>,
    len: usize,
    bound: usize,
    spare: Option<VecDeque<T>>,
}

impl<T> Ring<T> {
    fn new(bound: usize) -> Self {
        Ring { blocks: VecDeque::new(), len: 0, bound: bound.max(1), spare: None }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn front(&self) -> Option<&T> {
        self.blocks.front().and_then(VecDeque::front)
    }

    fn push_back(&mut self, value: T) {
        match self.blocks.back_mut() {
            Some(last) if last.len() < BLOCK => {
                if last.len() == last.capacity() {
                    let target = (last.capacity() * 2).clamp(16, BLOCK).min(self.bound);
                    last.reserve_exact(target.saturating_sub(last.len()).max(1));
                }
                last.push_back(value);
            }
            _ => {
                let mut block = self.spare.take().unwrap_or_else(|| VecDeque::with_capacity(16.min(self.bound)));
                block.push_back(value);
                self.blocks.push_back(block);
            }
        }
        self.len += 1;
    }

    fn pop_front(&mut self) -> Option<T> {
        let first = self.blocks.front_mut()?;
        let value = first.pop_front();
        if first.is_empty() {
            if let Some(block) = self.blocks.pop_front() {
                if block.capacity() >= BLOCK && self.spare.is_none() {
                    self.spare = Some(block);
                }
            }
        }
        self.len -= usize::from(value.is_some());
        value
    }

    /// The block and place of position `i` (below `len`).
    fn locate(&self, i: usize) -> (usize, usize) {
        let first = self.blocks.front().map_or(0, VecDeque::len);
        if i < first {
            (0, i)
        } else {
            let j = i - first;
            (1 + j / BLOCK, j % BLOCK)
        }
    }

    /// Lets go of the block kept for reuse (the queue has shrunk).
    fn drop_spare(&mut self) {
        self.spare = None;
    }

    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.blocks.iter().chain(&self.spare).map(VecDeque::capacity).sum()
    }
}

impl<T> std::ops::Index<usize> for Ring<T> {
    type Output = T;
    fn index(&self, i: usize) -> &T {
        let (block, at) = self.locate(i);
        &self.blocks[block][at]
    }
}

impl<T> std::ops::IndexMut<usize> for Ring<T> {
    fn index_mut(&mut self, i: usize) -> &mut T {
        let (block, at) = self.locate(i);
        &mut self.blocks[block][at]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_and_evicts_oldest_first() {
        let mut c = TtlCache::new(Duration::from_secs(10), 2);
        let t0 = Instant::now();
        assert!(c.insert("a", 1, t0));
        assert!(!c.insert("a", 2, t0), "first binding wins");
        assert_eq!(c.get(&"a", t0), Some(&1));
        c.insert("b", 2, t0 + Duration::from_secs(1));
        c.insert("c", 3, t0 + Duration::from_secs(2));
        assert_eq!(c.len(), 2);
        assert_eq!(c.evicted, 1);
        assert_eq!(c.get(&"a", t0), None);
        assert_eq!(c.get(&"b", t0 + Duration::from_secs(11)), None, "expired");
        c.expire(t0 + Duration::from_secs(11));
        assert_eq!(c.len(), 1);
        assert!(c.insert("a", 9, t0 + Duration::from_secs(11)), "an expired key can be bound again");
    }

    #[test]
    fn an_entry_behind_a_later_one_is_expired_and_bound_again() {
        let mut c = TtlCache::new(Duration::from_secs(10), 10);
        let t0 = Instant::now();
        c.insert("late", 1, t0 + Duration::from_secs(1));
        c.insert("early", 2, t0);
        let after = t0 + Duration::from_millis(10_500);
        assert_eq!(c.get(&"early", after), None);
        c.expire(after);
        assert_eq!(c.len(), 2, "expiry stops at the first live entry");
        assert!(c.insert("early", 3, after));
        assert_eq!(c.get(&"early", after), Some(&3));
        assert_eq!(c.len(), 2);
        assert!(!c.insert("early", 4, after), "first binding wins again");
        let later = t0 + Duration::from_secs(12);
        c.expire(later);
        assert_eq!(c.len(), 1, "the old entry went with the one before it");
        assert_eq!(c.get(&"early", later), Some(&3));
        c.expire(t0 + Duration::from_secs(21));
        assert_eq!((c.len(), c.ring.len()), (0, 0));
    }

    /// Bound again in place, the entry would hold back the expiry of those behind it (inserted
    /// before it was bound again) for a whole ttl.
    #[test]
    fn an_entry_bound_again_does_not_hold_back_the_expiry_of_those_behind_it() {
        let mut c = TtlCache::new(Duration::from_secs(10), 10);
        let t0 = Instant::now();
        c.insert("late", 1, t0 + Duration::from_secs(1));
        c.insert("early", 2, t0);
        c.insert("behind", 3, t0 + Duration::from_millis(500));
        assert!(c.insert("early", 4, t0 + Duration::from_millis(10_600)));
        let later = t0 + Duration::from_secs(12);
        c.expire(later);
        assert_eq!(c.len(), 1, "only the entry bound again is left");
        assert_eq!(c.get(&"early", later), Some(&4));
        assert_eq!(c.get(&"behind", later), None);
    }

    #[test]
    fn a_full_cache_with_an_entry_bound_again_keeps_its_bound() {
        let mut c = TtlCache::new(Duration::from_secs(10), 3);
        let t0 = Instant::now();
        c.insert("late", 1, t0 + Duration::from_secs(1));
        c.insert("early", 2, t0);
        c.insert("x", 3, t0 + Duration::from_secs(1));
        let at = t0 + Duration::from_millis(10_500);
        assert!(c.insert("early", 4, at), "bound again at the back");
        assert_eq!(c.len(), 3);
        assert!(c.insert("y", 5, at));
        assert_eq!(c.len(), 3, "the bound counts live entries");
        assert_eq!(c.evicted, 1, "\"late\" evicted; the dead entry went without counting");
        assert_eq!(c.get(&"late", at), None);
        assert_eq!((c.get(&"early", at), c.get(&"x", at), c.get(&"y", at)), (Some(&4), Some(&3), Some(&5)));
        c.expire(at);
        assert_eq!((c.len(), c.ring.len(), c.dead), (3, 3, 0), "the dead entry, now at the front, left by its old time");
    }

    /// Many times the bound in keys, inserted and evicted, with lookups of each one against a
    /// plain map: the ring's positions and the table's stay in step across wrap-around, growth,
    /// the table's in-place rehashes and shrinking.
    #[test]
    fn a_long_run_agrees_with_a_plain_map() {
        let bound = 1000;
        let mut c = TtlCache::new(Duration::from_secs(100), bound);
        let mut t = Instant::now();
        let mut live = std::collections::VecDeque::new();
        for k in 0..50_000u64 {
            t += Duration::from_millis(1);
            assert!(c.insert(k, k * 3, t));
            live.push_back(k);
            if live.len() > bound {
                live.pop_front();
            }
            if k % 97 == 0 {
                for &old in live.iter().step_by(37) {
                    assert_eq!(c.get(&old, t), Some(&(old * 3)), "key {old} after {k}");
                }
                if k >= bound as u64 {
                    assert_eq!(c.get(&(k - bound as u64), t), None, "evicted");
                }
            }
        }
        assert_eq!(c.len(), bound);
        assert_eq!(c.evicted, 50_000 - bound as u64);
        assert!(c.ring.capacity() <= bound + 3 * BLOCK, "the ring stays at its bound: {}", c.ring.capacity());
        assert!(c.index.capacity() < 4 * bound, "the table does not keep growing: {}", c.index.capacity());
        // Everything expires; the ring and the table shrink back.
        c.expire(t + Duration::from_secs(101));
        assert_eq!(c.len(), 0);
        assert_eq!(c.ring.capacity(), 0, "every block given back");
        assert!(c.insert(7, 7, t + Duration::from_secs(102)));
        assert_eq!(c.get(&7, t + Duration::from_secs(102)), Some(&7));
    }

    /// Entries pushed and popped in waves across many blocks read back as from a plain queue,
    /// and the ring holds no more than three blocks beyond its entries.
    #[test]
    fn a_ring_in_blocks_reads_like_a_queue_and_holds_its_entries_only() {
        let mut ring = Ring::new(usize::MAX);
        let mut model = VecDeque::new();
        let mut next = 0u64;
        for (push, pop) in [(10, 3), (700, 0), (0, 500), (2000, 1000), (1, 1), (300, 1508), (5000, 4000)] {
            for _ in 0..push {
                ring.push_back(next);
                model.push_back(next);
                next += 1;
            }
            for _ in 0..pop {
                assert_eq!(ring.pop_front(), model.pop_front());
            }
            assert_eq!(ring.len(), model.len());
            assert_eq!(ring.front(), model.front());
            for i in (0..model.len()).step_by(7).chain(model.len().checked_sub(1)) {
                assert_eq!(ring[i], model[i], "position {i}");
            }
            assert!(ring.capacity() <= model.len() + 3 * BLOCK, "{} entries in {}", model.len(), ring.capacity());
        }
        let small = {
            let mut r = Ring::new(5);
            for v in 0..5 {
                r.push_back(v);
            }
            r
        };
        assert!(small.capacity() <= 16, "a small ring stays small: {}", small.capacity());
    }
}
