//! Listing capture files below a source location.
//!
//! Capture writes a file per partition per window (9,216 a day at 32
//! partitions and 5 minutes), so listing everything every run grows without
//! bound. When the path format keeps the date in folders of its own
//! (`{PartitionId}/{Year}/{Month}/{Day}/...`, the default), a partition
//! with a cutoff is listed only from the cutoff's day on: years, months and
//! days before it are skipped by delimiter listings, without reading what is
//! in them. Other formats are listed in full.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use futures::{StreamExt as _, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;

use super::layout::FolderLevel;
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
    /// The store's entity tag, when it gives one: it changes when the
    /// object is rewritten.
    pub e_tag: Option<String>,
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

/// The partitions below `source`, when the path format has them in folders
/// of their own (`None` otherwise: they are only known from a full listing).
pub async fn list_partitions(source: &Location, format: &PathFormat) -> Result<Option<Vec<String>>> {
    let Some((levels, _)) = format.folder_levels() else { return Ok(None) };
    check_source(source)?;
    let (store, prefix) = source.object_store()?;
    let folders = partition_folders(store.as_ref(), &prefix, &levels, source).await?;
    let mut ids: Vec<String> = folders.into_iter().map(|(_, p)| p).collect();
    ids.sort();
    ids.dedup();
    Ok(Some(ids))
}

fn check_source(source: &Location) -> Result<()> {
    match source.local_path() {
        Some(dir) if !dir.is_dir() => Err(Error::InvalidLocation {
            location: source.to_string(),
            reason: "capture source folder does not exist".to_string(),
        }),
        _ => Ok(()),
    }
}

fn storage_error(source: &Location) -> impl Fn(object_store::Error) -> Error + '_ {
    move |e| Error::storage(source, e)
}

/// The folders one level down.
async fn children(store: &dyn ObjectStore, prefix: &ObjectPath, source: &Location) -> Result<Vec<ObjectPath>> {
    let listed = store.list_with_delimiter(Some(prefix)).await.map_err(storage_error(source))?;
    Ok(listed.common_prefixes)
}

fn last_segment(p: &ObjectPath) -> String {
    p.filename().map(str::to_string).unwrap_or_default()
}

/// (folder, partition id) of every partition folder.
async fn partition_folders(
    store: &dyn ObjectStore,
    prefix: &ObjectPath,
    levels: &[FolderLevel],
    source: &Location,
) -> Result<Vec<(ObjectPath, String)>> {
    let mut current: Vec<(ObjectPath, Option<String>)> = vec![(prefix.clone(), None)];
    for level in levels {
        let mut next = Vec::new();
        for (folder, partition) in current {
            for child in children(store, &folder, source).await? {
                let id = match level {
                    FolderLevel::Partition => Some(last_segment(&child)),
                    FolderLevel::Other => partition.clone(),
                };
                next.push((child, id));
            }
        }
        current = next;
    }
    Ok(current.into_iter().filter_map(|(f, p)| p.map(|p| (f, p))).collect())
}

/// The subtrees below a partition folder that can hold files of windows
/// from `cutoff` on: every later year and month, and the days from the
/// cutoff's day. Names that are not numbers are kept (and reported).
async fn recent_subtrees(
    store: &dyn ObjectStore,
    partition: &ObjectPath,
    cutoff: DateTime<Utc>,
    source: &Location,
) -> Result<Vec<ObjectPath>> {
    use chrono::Datelike as _;
    let number = |p: &ObjectPath| last_segment(p).parse::<u32>().ok();
    let mut out = Vec::new();
    for year in children(store, partition, source).await? {
        match number(&year) {
            Some(y) if (y as i32) < cutoff.year() => {}
            Some(y) if y as i32 == cutoff.year() => {
                for month in children(store, &year, source).await? {
                    match number(&month) {
                        Some(m) if m < cutoff.month() => {}
                        Some(m) if m == cutoff.month() => {
                            for day in children(store, &month, source).await? {
                                match number(&day) {
                                    Some(d) if d < cutoff.day() => {}
                                    _ => out.push(day),
                                }
                            }
                        }
                        _ => out.push(month),
                    }
                }
            }
            _ => out.push(year),
        }
    }
    Ok(out)
}

/// Lists the capture files below `source` in the selected partitions. A
/// partition with a cutoff in `since` is listed only from the cutoff's day
/// on, when the path format allows (see the module docs); files before the
/// cutoff may still be returned and are the caller's to skip.
pub async fn discover(
    source: &Location,
    format: &PathFormat,
    selected: &PartitionSet,
    since: &BTreeMap<String, DateTime<Utc>>,
) -> Result<Discovery> {
    check_source(source)?;
    let (store, prefix) = source.object_store()?;
    let subtrees: Vec<ObjectPath> = match format.folder_levels() {
        Some((levels, _)) if !since.is_empty() => {
            let mut out = Vec::new();
            for (folder, partition) in partition_folders(store.as_ref(), &prefix, &levels, source).await? {
                if !selected.contains(&partition) {
                    continue;
                }
                match since.get(&partition) {
                    Some(cutoff) => out.extend(recent_subtrees(store.as_ref(), &folder, *cutoff, source).await?),
                    None => out.push(folder),
                }
            }
            out
        }
        _ => vec![prefix.clone()],
    };
    let listings: Vec<Vec<object_store::ObjectMeta>> = futures::stream::iter(subtrees.iter().map(|p| {
        let store = store.clone();
        async move { store.list(Some(p)).try_collect::<Vec<_>>().await }
    }))
    .buffer_unordered(8)
    .try_collect()
    .await
    .map_err(storage_error(source))?;
    let objects = listings.into_iter().flatten();

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
                    e_tag: meta.e_tag.clone(),
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
