//! `TtlCache`: a map whose entries live for a fixed time from insertion, bounded in entries.
//! Expiry and eviction go oldest first, in O(1) per entry.

use std::borrow::Borrow;
use std::collections::VecDeque;
use std::hash::Hash;
use std::time::Duration;

use tokio::time::Instant;

pub struct TtlCache<K, V> {
    entries: super::buffer::FastMap<K, (V, Instant)>,
    order: VecDeque<K>,
    ttl: Duration,
    max_entries: usize,
    pub evicted: u64,
}

impl<K: Hash + Eq + Clone, V> TtlCache<K, V> {
    pub fn new(ttl: Duration, max_entries: usize) -> Self {
        TtlCache { entries: Default::default(), order: VecDeque::new(), ttl, max_entries, evicted: 0 }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn get<Q: Hash + Eq + ?Sized>(&self, key: &Q, now: Instant) -> Option<&V>
    where
        K: Borrow<Q>,
    {
        self.entries.get(key).filter(|(_, exp)| *exp > now).map(|(v, _)| v)
    }

    pub fn get_mut(&mut self, key: &K, now: Instant) -> Option<&mut V> {
        self.entries.get_mut(key).filter(|(_, exp)| *exp > now).map(|(v, _)| v)
    }

    /// Inserts a new entry; an existing live entry is left as it is (first binding wins) and
    /// `false` is returned.
    pub fn insert(&mut self, key: K, value: V, now: Instant) -> bool {
        self.expire(now);
        if self.get(&key, now).is_some() {
            return false;
        }
        if self.entries.insert(key.clone(), (value, now + self.ttl)).is_none() {
            self.order.push_back(key);
        }
        while self.entries.len() > self.max_entries {
            if let Some(oldest) = self.order.pop_front() {
                self.entries.remove(&oldest);
                self.evicted += 1;
            }
        }
        true
    }

    /// Drops entries whose time is up.
    pub fn expire(&mut self, now: Instant) {
        while let Some(front) = self.order.front() {
            match self.entries.get(front) {
                Some((_, exp)) if *exp > now => break,
                _ => {
                    if let Some(k) = self.order.pop_front() {
                        self.entries.remove(&k);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_and_evicts_oldest_first() {
        let t0 = Instant::now();
        let mut c = TtlCache::new(Duration::from_secs(10), 2);
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
}
