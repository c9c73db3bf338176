//! The sequence numbers taken from one capture file, as ranges: a file in
//! order is one range whatever its size, so this costs nothing for the
//! files Capture writes and stays small for most others.

use std::collections::BTreeMap;

/// Disjoint, non-adjacent closed ranges of sequence numbers.
#[derive(Debug, Default)]
pub(super) struct SeqRanges {
    /// First number of each range → its last.
    ranges: BTreeMap<i64, i64>,
}

impl SeqRanges {
    /// Adds `seq`; false when it was there already.
    pub(super) fn insert(&mut self, seq: i64) -> bool {
        // The common case: the next number of a file in order.
        if let Some(mut last) = self.ranges.last_entry() {
            if seq.checked_sub(1) == Some(*last.get()) {
                *last.get_mut() = seq;
                return true;
            }
        }
        let below = self.ranges.range(..=seq).next_back().map(|(a, b)| (*a, *b));
        if below.is_some_and(|(_, b)| seq <= b) {
            return false;
        }
        let start = match below {
            Some((a, b)) if seq.checked_sub(1) == Some(b) => a,
            _ => seq,
        };
        let end = match seq.checked_add(1).and_then(|next| self.ranges.remove(&next)) {
            Some(end) => end,
            None => seq,
        };
        self.ranges.insert(start, end);
        true
    }

    /// The lowest and highest number, when every number between them is
    /// here.
    pub(super) fn single(&self) -> Option<(i64, i64)> {
        match self.ranges.len() {
            1 => self.ranges.first_key_value().map(|(a, b)| (*a, *b)),
            _ => None,
        }
    }

    /// The highest number.
    pub(super) fn max(&self) -> Option<i64> {
        self.ranges.last_key_value().map(|(_, b)| *b)
    }

    /// The numbers missing above `after` (from the lowest number when
    /// `None`) up to the highest, as closed ranges in order.
    pub(super) fn holes(&self, after: Option<i64>) -> Vec<(i64, i64)> {
        let mut out = Vec::new();
        let mut expected = after.map(|a| a.saturating_add(1));
        for (&a, &b) in &self.ranges {
            if let Some(e) = expected {
                if b < e {
                    continue;
                }
                if a > e {
                    out.push((e, a - 1));
                }
            }
            expected = Some(b.saturating_add(1));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(seqs: &[i64]) -> (SeqRanges, Vec<bool>) {
        let mut r = SeqRanges::default();
        let added = seqs.iter().map(|s| r.insert(*s)).collect();
        (r, added)
    }

    #[test]
    fn ranges_merge_in_any_order_and_know_their_holes() {
        let (r, added) = of(&[5, 3, 9, 4, 8, 4, 6, 20]);
        assert_eq!(added, vec![true, true, true, true, true, false, true, true]);
        assert_eq!(r.ranges, BTreeMap::from([(3, 6), (8, 9), (20, 20)]));
        assert_eq!(r.single(), None);
        assert_eq!(r.max(), Some(20));
        assert_eq!(r.holes(None), vec![(7, 7), (10, 19)]);
        assert_eq!(r.holes(Some(0)), vec![(1, 2), (7, 7), (10, 19)]);
        assert_eq!(r.holes(Some(8)), vec![(10, 19)]);
        assert_eq!(r.holes(Some(20)), Vec::<(i64, i64)>::new());

        let (r, _) = of(&(48..=57).rev().collect::<Vec<_>>());
        assert_eq!(r.single(), Some((48, 57)));
        assert_eq!(r.holes(Some(47)), Vec::<(i64, i64)>::new());
        let (r, _) = of(&[1, 0, 3, 2, 5, 4]);
        assert_eq!(r.single(), Some((0, 5)));
        let (r, added) = of(&[i64::MAX, i64::MIN, i64::MAX - 1, i64::MIN + 1, i64::MIN]);
        assert_eq!(added, vec![true, true, true, true, false]);
        assert_eq!(r.ranges, BTreeMap::from([(i64::MIN, i64::MIN + 1), (i64::MAX - 1, i64::MAX)]));
    }
}
