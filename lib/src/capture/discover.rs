//! Listing capture files below a source location.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;

use super::{PartitionSet, PathFormat};
use crate::storage::Location;
use crate::{Error, Result};

/// One capture file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CaptureFile {
    /// Start of the capture window (from the path).
    pub window: DateTime<Utc>,
    /// Name relative to the source folder (`3/2026/11/22/04/05/00.avro`).
    pub name: String,
    /// Full object path in the store.
    pub path: ObjectPath,
    /// Size in bytes.
    pub size: u64,
    /// Event Hub partition id (from the path).
    pub partition_id: String,
}

/// What a listing found.
#[derive(Debug, Default)]
pub struct Discovery {
    /// Files per partition, in window order (then name).
    pub partitions: BTreeMap<String, Vec<CaptureFile>>,
    /// Objects below the source that do not match the path format.
    pub unmatched: Vec<String>,
}

impl Discovery {
    /// Number of files found in the selected partitions.
    pub fn file_count(&self) -> usize {
        self.partitions.values().map(Vec::len).sum()
    }
}

/// Lists every capture file below `source` in the selected partitions.
pub async fn discover(
    source: &Location,
    format: &PathFormat,
    selected: &PartitionSet,
) -> Result<Discovery> {
    let (store, prefix) = source.object_store()?;
    if let Some(dir) = source.local_path() {
        if !dir.is_dir() {
            return Err(Error::InvalidLocation {
                location: source.to_string(),
                reason: "capture source folder does not exist".to_string(),
            });
        }
    }
    let objects: Vec<_> = store
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|e| Error::Storage { url: source.to_string(), message: crate::storage::scrub(&e.to_string()) })?;

    let mut found = Discovery::default();
    let mut hubs = std::collections::BTreeSet::new();
    let strip = format!("{}/", prefix.as_ref());
    for meta in objects {
        let full = meta.location.as_ref();
        let name = if prefix.as_ref().is_empty() { full } else { full.strip_prefix(&strip).unwrap_or(full) };
        match format.parse_path(name) {
            Some(info) if selected.contains(&info.partition_id) => {
                hubs.extend(info.hub.clone());
                found.partitions.entry(info.partition_id.clone()).or_default().push(CaptureFile {
                    window: info.window,
                    name: name.to_string(),
                    path: meta.location.clone(),
                    size: meta.size,
                    partition_id: info.partition_id,
                });
            }
            Some(_) => {}
            None => found.unmatched.push(name.to_string()),
        }
    }
    // Partition 0 of two event hubs are two streams with separate sequence
    // numbers: one watermark cannot serve both.
    if hubs.len() > 1 {
        return Err(Error::InvalidLocation {
            location: source.to_string(),
            reason: format!(
                "holds capture files of several event hubs ({}); point source.capture.url at one event hub's folder, one pipeline per hub",
                hubs.into_iter().collect::<Vec<_>>().join(", ")
            ),
        });
    }
    for files in found.partitions.values_mut() {
        files.sort();
    }
    found.unmatched.sort();
    Ok(found)
}
