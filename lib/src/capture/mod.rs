//! Event Hubs Capture files: where they are and what is in them.
//!
//! - [`layout`]: the Capture path format (`{PartitionId}/{Year}/...`) as
//!   configuration, matched against object names.
//! - [`discover`]: listing a source location into per-partition file lists.
//! - [`container`]: the Avro container framing, read as bytes arrive and
//!   cut into chunks of whole blocks, so that files of any size stream in
//!   bounded memory.
//! - [`decode`]: chunks → Arrow, with the schema embedded in each file
//!   (Capture changed its Properties union over the years).
//!
//! Facts that shape this module: Capture writes one block blob per partition
//! per time window, complete when it appears; windows without events produce
//! header-only files (normal heartbeats, not errors); after an outage it
//! back-fills late files whose path time is older than files already seen.
//! Sequence numbers rise by one per event within a partition, so they, not
//! path times, are the watermark.

pub mod container;
pub mod decode;
pub mod discover;
pub mod layout;

pub use container::DecodeError;
pub use container::{Chunk, Header, Splitter};
pub use decode::{decode_capture_file, decode_chunk, CaptureBatch};
pub use discover::{discover, list_partitions, CaptureFile, Discovery};
pub use layout::PathFormat;

use std::collections::BTreeSet;

/// A set of Event Hub partition ids to work on (`--partitions 0,3,8-15`),
/// or one shard of all of them (`--shard 2/8`: the numeric ids whose value
/// modulo 8 is 2), which a Kubernetes Indexed Job or an Airflow mapped task
/// gives each worker without knowing the partition count.
///
/// Ranges are kept as ranges: `0-4000000000` costs as little as `0-3`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionSet {
    ids: Option<PartitionIds>,
    shard: Option<(u32, u32)>,
}

/// The ids of a `--partitions` list: numeric ranges (a single number is a
/// range of one) and ids of any other text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct PartitionIds {
    /// Sorted by start; overlapping ranges are merged.
    ranges: Vec<(u32, u32)>,
    names: BTreeSet<String>,
}

impl PartitionIds {
    fn contains(&self, partition: &str) -> bool {
        if self.names.contains(partition) {
            return true;
        }
        // Only the number's own spelling: `08` is not partition 8, as Capture
        // names partition folders without leading zeros.
        match partition.parse::<u32>() {
            Ok(n) if n.to_string() == partition => self.ranges.iter().any(|&(a, b)| a <= n && n <= b),
            _ => false,
        }
    }

    fn insert_range(&mut self, a: u32, b: u32) {
        self.ranges.push((a, b));
        self.ranges.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(self.ranges.len());
        for &(a, b) in &self.ranges {
            match merged.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        self.ranges = merged;
    }
}

impl PartitionSet {
    /// All partitions.
    pub fn all() -> Self {
        PartitionSet { ids: None, shard: None }
    }

    /// Parses `INDEX/COUNT` (e.g. `2/8`): partitions whose numeric id modulo
    /// COUNT is INDEX. Ids that are not numbers belong to shard 0.
    pub fn parse_shard(spec: &str) -> Result<Self, String> {
        let bad = || format!("{spec:?} is not a shard like 2/8 (INDEX/COUNT, INDEX below COUNT)");
        let (i, n) = spec.split_once('/').ok_or_else(bad)?;
        let (i, n): (u32, u32) = (i.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
        if n == 0 || i >= n {
            return Err(bad());
        }
        Ok(PartitionSet { ids: None, shard: Some((i, n)) })
    }

    /// Parses `0,3,8-15` (ranges of numeric ids, or single ids of any text).
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut ids = PartitionIds::default();
        for part in spec.split(',').map(str::trim) {
            if part.is_empty() {
                return Err(format!("empty element in partition list {spec:?}"));
            }
            match part.split_once('-') {
                Some((a, b)) => match (a.trim().parse::<u32>(), b.trim().parse::<u32>()) {
                    (Ok(a), Ok(b)) if a <= b => ids.insert_range(a, b),
                    _ => return Err(format!("{part:?} is not a range like 8-15")),
                },
                None => match part.parse::<u32>() {
                    Ok(n) if n.to_string() == part => ids.insert_range(n, n),
                    _ => {
                        ids.names.insert(part.to_string());
                    }
                },
            }
        }
        Ok(PartitionSet { ids: Some(ids), shard: None })
    }

    /// Whether the partition is selected.
    pub fn contains(&self, partition: &str) -> bool {
        let in_shard = match self.shard {
            None => true,
            Some((i, n)) => partition.parse::<u64>().map_or(i == 0, |p| p % n as u64 == i as u64),
        };
        in_shard && self.ids.as_ref().is_none_or(|ids| ids.contains(partition))
    }
}

impl std::fmt::Display for PartitionSet {
    /// `all`, `shard 2/8`, or the list: numbers and ranges in order, then
    /// the other ids.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.ids, self.shard) {
            (_, Some((i, n))) => write!(f, "shard {i}/{n}"),
            (None, None) => f.write_str("all"),
            (Some(ids), None) => {
                let ranges = ids.ranges.iter().map(|&(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") });
                f.write_str(&ranges.chain(ids.names.iter().cloned()).collect::<Vec<_>>().join(","))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PartitionSet;

    #[test]
    fn shards_split_numeric_ids_by_remainder() {
        let s = PartitionSet::parse_shard("2/4").unwrap();
        let got: Vec<u32> = (0..12).filter(|p| s.contains(&p.to_string())).collect();
        assert_eq!(got, vec![2, 6, 10]);
        assert_eq!(s.to_string(), "shard 2/4");
        // Every partition is in exactly one shard.
        for p in 0..32 {
            let n = (0..4)
                .filter(|i| PartitionSet::parse_shard(&format!("{i}/4")).unwrap().contains(&p.to_string()))
                .count();
            assert_eq!(n, 1, "{p}");
        }
        assert!(PartitionSet::parse_shard("0/1").unwrap().contains("x"));
        for bad in ["4/4", "1/0", "a/2", "3", "-1/2"] {
            assert!(PartitionSet::parse_shard(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn partition_sets() {
        let s = PartitionSet::parse("0, 3,8-10").unwrap();
        for p in ["0", "3", "8", "9", "10"] {
            assert!(s.contains(p), "{p}");
        }
        for p in ["1", "11", "7"] {
            assert!(!s.contains(p), "{p}");
        }
        assert!(PartitionSet::all().contains("31"));
        assert!(PartitionSet::parse("5-2").is_err());
        assert!(PartitionSet::parse("1,,2").is_err());
        let s = PartitionSet::parse("7,x,0-2,1-3,08").unwrap();
        assert_eq!(s.to_string(), "0-3,7,08,x");
        assert!(s.contains("08") && s.contains("x") && s.contains("2") && !s.contains("8") && !s.contains("02"));
    }

    /// A range is kept as a range, not as the ids in it: the widest one
    /// parses at once and answers membership.
    #[test]
    fn a_huge_range_is_not_expanded() {
        let s = PartitionSet::parse("0-4294967295").unwrap();
        assert!(s.contains("0") && s.contains("4294967295") && !s.contains("4294967296"));
        assert_eq!(s.to_string(), "0-4294967295");
    }
}
