//! The settled part of the stored-key index: keys with one stored copy,
//! sorted, in three parallel arrays with a directory on the hashes' top
//! bits.
//!
//! Why: a hash table of ten million 32-byte entries costs 37–73 bytes a key
//! (its load factor swings from 7/8 to 7/16 as it doubles), and 1.5× that
//! while it doubles — ~0.8 GB at the peak of a 10M-event run. Sorted arrays
//! cost 28 bytes a key plus a 2–4 byte directory, and grow by `realloc`
//! (large blocks are moved by remapping pages, not copied), so there is no
//! doubling peak.
//!
//! Keys are uniform hashes, so the top `bits` of a key name its directory
//! bucket, and a bucket holds one or two keys on average: a lookup is one
//! directory read and a short scan, like a hash-table probe.
//!
//! Hazard: merging is linear in the settled size, so [`super::StoredIndex`]
//! merges only when its recent keys reach a fixed count (a run of N keys
//! merges about N / that count times).

/// A removed entry's partition (the key moved back to the recent keys).
const DEAD: u32 = u32::MAX;

/// Sorted keys with their lineage (partition id, sequence number).
#[derive(Default)]
pub(super) struct SettledKeys {
    keys: Vec<u128>,
    partitions: Vec<u32>,
    sequences: Vec<i64>,
    /// `directory[b]..directory[b + 1]` are the positions of the keys whose
    /// top `bits` are `b`.
    directory: Vec<u32>,
    bits: u32,
    live: usize,
}

impl SettledKeys {
    /// Keys held.
    pub(super) fn len(&self) -> usize {
        self.live
    }

    /// The lineage stored with `key`.
    pub(super) fn get(&self, key: u128) -> Option<(u32, i64)> {
        self.position(key).map(|i| (self.partitions[i], self.sequences[i]))
    }

    /// Removes `key` and returns its lineage.
    pub(super) fn take(&mut self, key: u128) -> Option<(u32, i64)> {
        let i = self.position(key)?;
        let lineage = (self.partitions[i], self.sequences[i]);
        self.partitions[i] = DEAD;
        self.live -= 1;
        Some(lineage)
    }

    fn position(&self, key: u128) -> Option<usize> {
        if self.live == 0 {
            return None;
        }
        let b = self.bucket(key);
        let (lo, hi) = (self.directory[b] as usize, self.directory[b + 1] as usize);
        let i = lo + self.keys[lo..hi].iter().position(|k| *k == key)?;
        (self.partitions[i] != DEAD).then_some(i)
    }

    fn bucket(&self, key: u128) -> usize {
        if self.bits == 0 {
            0
        } else {
            (key >> (128 - self.bits)) as usize
        }
    }

    /// Adds `more` (keys not held here, any order). Removed entries are
    /// dropped on the way.
    pub(super) fn merge(&mut self, mut more: Vec<(u128, u32, i64)>) {
        if more.is_empty() {
            return;
        }
        more.sort_unstable_by_key(|e| e.0);
        self.compact();
        let (n, m) = (self.keys.len(), more.len());
        // Exact growth: a large block is remapped, never held twice.
        self.keys.reserve_exact(m);
        self.partitions.reserve_exact(m);
        self.sequences.reserve_exact(m);
        self.keys.resize(n + m, 0);
        self.partitions.resize(n + m, 0);
        self.sequences.resize(n + m, 0);
        // From the back, so the merge needs no second copy of the keys.
        let (mut i, mut j) = (n, m);
        for w in (0..n + m).rev() {
            if j == 0 {
                break;
            }
            if i > 0 && self.keys[i - 1] > more[j - 1].0 {
                i -= 1;
                self.keys[w] = self.keys[i];
                self.partitions[w] = self.partitions[i];
                self.sequences[w] = self.sequences[i];
            } else {
                j -= 1;
                (self.keys[w], self.partitions[w], self.sequences[w]) = more[j];
            }
        }
        self.live = n + m;
        self.index();
    }

    /// Drops removed entries, keeping the order.
    fn compact(&mut self) {
        if self.live == self.keys.len() {
            return;
        }
        let mut w = 0;
        for r in 0..self.keys.len() {
            if self.partitions[r] != DEAD {
                self.keys[w] = self.keys[r];
                self.partitions[w] = self.partitions[r];
                self.sequences[w] = self.sequences[r];
                w += 1;
            }
        }
        self.keys.truncate(w);
        self.partitions.truncate(w);
        self.sequences.truncate(w);
    }

    /// Rebuilds the directory: between n/2 and n buckets for n keys.
    fn index(&mut self) {
        let n = self.keys.len();
        self.bits = if n < 2 { 0 } else { usize::BITS - n.leading_zeros() - 1 };
        let buckets = 1usize << self.bits;
        self.directory.clear();
        self.directory.reserve_exact(buckets + 1);
        let mut i = 0;
        for b in 0..buckets {
            while i < n && self.bucket(self.keys[i]) < b {
                i += 1;
            }
            self.directory.push(i as u32);
        }
        self.directory.push(n as u32);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Deterministic uniform keys (splitmix64 pairs).
    fn keys(seed: u64, n: usize) -> Vec<u128> {
        let mut s = seed;
        let mut next = || {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        (0..n).map(|_| (u128::from(next()) << 64) | u128::from(next())).collect()
    }

    #[test]
    fn finds_exactly_what_was_merged_over_several_merges() {
        let mut settled = SettledKeys::default();
        let mut expected = HashMap::new();
        for (round, n) in [1usize, 3, 50, 1000, 20_000].into_iter().enumerate() {
            let batch: Vec<(u128, u32, i64)> =
                keys(round as u64, n).into_iter().enumerate().map(|(i, k)| (k, round as u32, i as i64)).collect();
            expected.extend(batch.iter().map(|(k, p, s)| (*k, (*p, *s))));
            settled.merge(batch);
            assert_eq!(settled.len(), expected.len());
            assert!(settled.keys.windows(2).all(|w| w[0] < w[1]), "sorted after round {round}");
        }
        for (k, lineage) in &expected {
            assert_eq!(settled.get(*k), Some(*lineage));
        }
        for k in keys(99, 5000) {
            assert_eq!(settled.get(k), None);
        }
        // Keys sharing their top bits (one bucket) and the extremes.
        let edge = vec![(0u128, 7, 1), (u128::MAX, 7, 2), (u128::MAX - 1, 7, 3)];
        settled.merge(edge);
        assert_eq!(settled.get(0), Some((7, 1)));
        assert_eq!(settled.get(u128::MAX), Some((7, 2)));
        assert_eq!(settled.get(u128::MAX - 1), Some((7, 3)));
    }

    #[test]
    fn taken_keys_are_gone_and_dropped_at_the_next_merge() {
        let mut settled = SettledKeys::default();
        let all = keys(5, 1000);
        settled.merge(all.iter().map(|k| (*k, 1, 1)).collect());
        for k in &all[..400] {
            assert_eq!(settled.take(*k), Some((1, 1)));
            assert_eq!(settled.take(*k), None);
        }
        assert_eq!(settled.len(), 600);
        settled.merge(all[..10].iter().map(|k| (*k, 2, 2)).collect());
        assert_eq!(settled.len(), 610);
        assert_eq!(settled.keys.len(), 610, "removed entries are not kept");
        assert_eq!(settled.get(all[0]), Some((2, 2)));
        assert_eq!(settled.get(all[10]), None);
        assert_eq!(settled.get(all[500]), Some((1, 1)));
    }
}
