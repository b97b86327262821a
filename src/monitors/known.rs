//! `StoredOrders`: which orders may have clocks in the store, so that the monitor task reads the
//! store only for those. A fixed-size Bloom filter: an order that left memory (or was found in
//! the store at start) is added; a new order is never in it, so its first fact costs no read.
//! A false positive costs one needless read, never a wrong answer; orders forgotten by the
//! retention sweep stay in the filter, which only makes their (empty) read happen.

/// 2^23 bits (1 MiB): about 2% false positives at a million remembered orders.
const BITS: usize = 1 << 23;
const HASHES: u64 = 4;
/// The bits of one order are in one block of 512 bits (a cache line): a lookup reads one line
/// of the filter, not four.
const BLOCK_WORDS: usize = 8;

pub struct StoredOrders {
    bits: Vec<u64>,
}

impl Default for StoredOrders {
    fn default() -> Self {
        StoredOrders { bits: vec![0; BITS / 64] }
    }
}

impl StoredOrders {
    /// The word and bit of each of the order's positions, all in one block.
    fn positions(id: &str) -> impl Iterator<Item = (usize, u64)> {
        use std::hash::BuildHasher;
        // Looked up for every fact of an order new to memory: a fast hash, the same in every
        // run (the filter is rebuilt from the store at start anyway).
        let h = foldhash::fast::FixedState::with_seed(0x7472_6163_6567_6174).hash_one(id);
        let block = (h as usize % (BITS / 64 / BLOCK_WORDS)) * BLOCK_WORDS;
        // Nine bits of the hash's upper half per position within the block's 512 bits.
        let within = h >> 28;
        (0..HASHES).map(move |i| {
            let bit = (within >> (9 * i)) as usize & 511;
            (block + bit / 64, 1u64 << (bit % 64))
        })
    }

    pub fn insert(&mut self, id: &str) {
        for (word, bit) in Self::positions(id) {
            self.bits[word] |= bit;
        }
    }

    /// False: certainly nothing stored. True: maybe.
    pub fn may_contain(&self, id: &str) -> bool {
        Self::positions(id).all(|(word, bit)| self.bits[word] & bit != 0)
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
        // A million remembered orders: about 2% false positives.
        for i in 100_000..1_000_000 {
            known.insert(&format!("A-{i}"));
        }
        let false_positives = (0..100_000).filter(|i| known.may_contain(&format!("B-{i}"))).count();
        assert!(false_positives < 2_500, "{false_positives} false positives in 100000 at a million orders");
    }
}
