//! `StoredOrders`: which orders may have clocks in the store, so that the monitor task reads the
//! store only for those. A fixed-size Bloom filter: an order that left memory (or was found in
//! the store at start) is added; a new order is never in it, so its first fact costs no read.
//! A false positive costs one needless read, never a wrong answer; orders forgotten by the
//! retention sweep stay in the filter, which only makes their (empty) read happen.

/// 2^23 bits (1 MiB): under 2% false positives up to a million remembered orders.
const BITS: usize = 1 << 23;
const HASHES: u64 = 4;

pub struct StoredOrders {
    bits: Vec<u64>,
}

impl Default for StoredOrders {
    fn default() -> Self {
        StoredOrders { bits: vec![0; BITS / 64] }
    }
}

impl StoredOrders {
    fn positions(id: &str) -> impl Iterator<Item = usize> {
        use std::hash::BuildHasher;
        // Looked up for every fact of an order new to memory: a fast hash, the same in every
        // run (the filter is rebuilt from the store at start anyway).
        let a = foldhash::fast::FixedState::with_seed(0x7472_6163_6567_6174).hash_one(id);
        let b = a.rotate_left(32) | 1;
        // Double hashing: the i-th position is a + i·b.
        (0..HASHES).map(move |i| (a.wrapping_add(i.wrapping_mul(b)) as usize) % BITS)
    }

    pub fn insert(&mut self, id: &str) {
        for p in Self::positions(id) {
            self.bits[p / 64] |= 1 << (p % 64);
        }
    }

    /// False: certainly nothing stored. True: maybe.
    pub fn may_contain(&self, id: &str) -> bool {
        Self::positions(id).all(|p| self.bits[p / 64] & (1 << (p % 64)) != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_every_inserted_order_and_few_others() {
        let mut known = StoredOrders::default();
        for i in 0..100_000 {
            known.insert(&format!("A-{i}"));
        }
        assert!((0..100_000).all(|i| known.may_contain(&format!("A-{i}"))));
        let false_positives = (0..100_000).filter(|i| known.may_contain(&format!("B-{i}"))).count();
        assert!(false_positives < 100, "{false_positives} false positives in 100000");
    }
}
