//! Event Hubs Capture files: where they are and what is in them.
//!
//! - [`layout`]: the Capture path format (`{PartitionId}/{Year}/...`) as
//!   configuration, matched against object names.
//! - [`discover`]: listing a source location into per-partition file lists.
//! - [`decode`]: Avro container files → Arrow, with the schema embedded in
//!   each file (Capture changed its Properties union over the years).
//! - [`testgen`]: writing realistic capture files for tests and benchmarks.
//!
//! Facts that shape this module: Capture writes one block blob per partition
//! per time window, complete when it appears; windows without events produce
//! header-only files (normal heartbeats, not errors); after an outage it
//! back-fills late files whose path time is older than files already seen.
//! Sequence numbers rise by one per event within a partition, so they, not
//! path times, are the watermark.

pub mod decode;
pub mod discover;
pub mod layout;
pub mod testgen;

pub use decode::{decode_capture_file, CaptureBatch, DecodeError};
pub use discover::{discover, list_partitions, CaptureFile, Discovery};
pub use layout::PathFormat;

use std::collections::BTreeSet;

/// A set of Event Hub partition ids to work on (`--partitions 0,3,8-15`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionSet {
    ids: Option<BTreeSet<String>>,
}

impl PartitionSet {
    /// All partitions.
    pub fn all() -> Self {
        PartitionSet { ids: None }
    }

    /// Parses `0,3,8-15` (ranges of numeric ids, or single ids of any text).
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut ids = BTreeSet::new();
        for part in spec.split(',').map(str::trim) {
            if part.is_empty() {
                return Err(format!("empty element in partition list {spec:?}"));
            }
            match part.split_once('-') {
                Some((a, b)) => {
                    let (a, b): (u32, u32) = match (a.trim().parse(), b.trim().parse()) {
                        (Ok(a), Ok(b)) if a <= b => (a, b),
                        _ => return Err(format!("{part:?} is not a range like 8-15")),
                    };
                    ids.extend((a..=b).map(|i| i.to_string()));
                }
                None => {
                    ids.insert(part.to_string());
                }
            }
        }
        Ok(PartitionSet { ids: Some(ids) })
    }

    /// Whether the partition is selected.
    pub fn contains(&self, partition: &str) -> bool {
        self.ids.as_ref().is_none_or(|ids| ids.contains(partition))
    }

    /// The selected ids; `None` for all partitions.
    pub fn ids(&self) -> Option<&BTreeSet<String>> {
        self.ids.as_ref()
    }
}

impl std::fmt::Display for PartitionSet {
    /// `all`, or the ids joined by commas.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.ids {
            None => f.write_str("all"),
            Some(ids) => f.write_str(&ids.iter().cloned().collect::<Vec<_>>().join(",")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PartitionSet;

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
    }
}
