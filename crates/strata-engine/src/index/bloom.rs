//! Stream-name hashing and the bloom filter of a segment table.
//!
//! Both are part of the on-disk format (`docs/format.md`): a table written by one
//! version is read by the next, so the hash and the probe sequence never change.

/// The 64-bit hash tables key streams by: FNV-1a over the name's UTF-8 bytes, then the
/// SplitMix64 finaliser (FNV alone mixes the last bytes poorly, and names often differ
/// only there: `order-1`, `order-2`).
///
/// Two streams can share a hash: readers check the stream name of every record they
/// read, and a hash shared inside one table only costs extra reads.
pub fn stream_hash(name: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in name.as_bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(hash)
}

/// SplitMix64's finaliser: every input bit affects every output bit.
fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Bits per key: about 1 % false positives with [`PROBES`] probes.
pub const BITS_PER_KEY: usize = 10;
/// Probes per key.
pub const PROBES: u32 = 7;

/// A bloom filter over stream hashes: "certainly not here" or "maybe here".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bloom {
    words: Vec<u64>,
}

impl Bloom {
    /// An empty filter sized for `keys` keys.
    pub fn with_keys(keys: usize) -> Bloom {
        let bits = keys.saturating_mul(BITS_PER_KEY).max(64);
        Bloom {
            words: vec![0; bits.div_ceil(64)],
        }
    }

    /// A filter from its words (as stored).
    pub fn from_words(words: Vec<u64>) -> Option<Bloom> {
        (!words.is_empty()).then_some(Bloom { words })
    }

    /// Its words (as stored).
    pub fn words(&self) -> &[u64] {
        &self.words
    }

    /// Bytes it holds in memory.
    pub fn size_bytes(&self) -> usize {
        self.words.len() * 8
    }

    fn probes(&self, hash: u64) -> impl Iterator<Item = (usize, u64)> {
        // Double hashing (Kirsch–Mitzenmacher): probe i is h1 + i·h2.
        let bits = (self.words.len() * 64) as u64;
        let h1 = hash;
        let h2 = mix(hash ^ 0x9e37_79b9_7f4a_7c15) | 1;
        (0..PROBES).map(move |i| {
            let bit = h1.wrapping_add(u64::from(i).wrapping_mul(h2)) % bits;
            ((bit / 64) as usize, 1u64 << (bit % 64))
        })
    }

    /// Adds a key.
    pub fn insert(&mut self, hash: u64) {
        let probes: Vec<(usize, u64)> = self.probes(hash).collect();
        for (word, mask) in probes {
            self.words[word] |= mask;
        }
    }

    /// Whether the key may have been added (never false for one that was).
    pub fn may_contain(&self, hash: u64) -> bool {
        self.probes(hash)
            .all(|(word, mask)| self.words[word] & mask != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_stable() {
        // Part of the format: these values must never change.
        assert_eq!(stream_hash(""), 0xf52a_15e9_a9b5_e89b);
        assert_eq!(stream_hash("order-1"), 0xedf2_3fc2_e07f_a9d3);
        assert_eq!(stream_hash("$all"), 0xdd7d_030d_ef20_f7d7);
    }

    #[test]
    fn no_false_negatives_and_few_false_positives() {
        let mut bloom = Bloom::with_keys(10_000);
        for i in 0..10_000 {
            bloom.insert(stream_hash(&format!("in-{i}")));
        }
        for i in 0..10_000 {
            assert!(bloom.may_contain(stream_hash(&format!("in-{i}"))));
        }
        let false_positives = (0..10_000)
            .filter(|i| bloom.may_contain(stream_hash(&format!("out-{i}"))))
            .count();
        assert!(
            false_positives < 300,
            "{false_positives} false positives in 10 000"
        );
    }
}
