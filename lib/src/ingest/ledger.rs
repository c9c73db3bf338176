//! The files a partition's commits already hold, so a run reads only new
//! capture files inside its lookback instead of decoding a day of files
//! again to find the few events above the watermark.
//!
//! One small JSON file per partition, `_weir/ingest/<partition>.json` in
//! the raw table's folder (a hidden folder: Delta readers and vacuum leave
//! it alone), lists each file read to its end with its size, its entity tag
//! when the store gives one, its window and the highest sequence number it
//! held. It is written after the run's commits and is only a cache:
//!
//! - a file is skipped only while its entry matches the listing (name, size
//!   and tag) and its highest number is at or below the partition's
//!   watermark read from the table itself: exactly the events a reread
//!   would skip as already ingested. A ledger that is missing, unreadable,
//!   from an older table or ahead of the table (a crash between a commit
//!   and the ledger's write) costs a reread, never an event;
//! - a back-filled file is a new name and is read; a rewritten one has a
//!   new size or tag and is read again;
//! - files read only in part (corrupt, unreadable, halted, parked) are not
//!   listed, so later runs read them as today.
//!
//! Entries older than the lookback behind the partition's newest window are
//! dropped when the ledger is written (those files are not listed again);
//! with `lookback_hours: 0` every entry is kept.
//!
//! Hazard: two workers on the same partition at once may overwrite each
//! other's ledger; the entries lost are files read again by the next run.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use serde::{Deserialize, Serialize};

use crate::capture::CaptureFile;
use crate::lake::state;

/// Format version of a ledger file; another version is ignored (read as
/// empty, so its files are read again).
const VERSION: u32 = 1;

/// How many ledger files are read or written at once.
const CONCURRENCY: usize = 16;

/// One file read to its end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    /// Name relative to the capture source.
    name: String,
    size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    e_tag: Option<String>,
    /// Start of the capture window, epoch seconds.
    window: i64,
    /// Highest sequence number in the file; none for a header-only file.
    last: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize)]
struct File {
    version: u32,
    partition: String,
    files: Vec<Entry>,
}

/// The ledgers of the partitions a run works on.
#[derive(Default)]
pub(super) struct Ledgers {
    /// The raw table's store; none before the table exists (nothing to
    /// skip then).
    store: Option<Arc<dyn ObjectStore>>,
    /// Per partition, entries by file name.
    entries: BTreeMap<String, BTreeMap<String, Entry>>,
    /// Partitions with files finished in this run.
    changed: BTreeMap<String, Vec<Entry>>,
}

fn path(partition: &str) -> ObjectPath {
    state::path(&["ingest", &format!("{partition}.json")])
}

const WHAT: &str = "the ingested-files ledger";

impl Ledgers {
    /// Reads the ledgers of `partitions` from the raw table's folder.
    pub(super) async fn load<'a>(
        table: Option<&deltalake::DeltaTable>,
        partitions: impl Iterator<Item = &'a String>,
    ) -> Ledgers {
        let Some(table) = table else { return Ledgers::default() };
        let store = table.log_store().object_store(None);
        let read = futures::stream::iter(partitions.cloned())
            .map(|partition| {
                let store = store.clone();
                async move {
                    let entries = read_one(store.as_ref(), &partition).await;
                    (partition, entries)
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        Ledgers { store: Some(store), entries: read.into_iter().collect(), changed: BTreeMap::new() }
    }

    /// Writes to `table`'s folder (a table this run created).
    pub(super) fn attach(&mut self, table: &deltalake::DeltaTable) {
        if self.store.is_none() {
            self.store = Some(table.log_store().object_store(None));
        }
    }

    /// Whether every event of `file` is known to be in the table: it was
    /// read to its end before, is unchanged, and its highest number is at
    /// or below the partition's `watermark`.
    pub(super) fn holds(&self, file: &CaptureFile, watermark: Option<i64>) -> bool {
        let Some(entry) = self.entries.get(&file.partition_id).and_then(|e| e.get(&file.name)) else {
            return false;
        };
        let same = entry.size == file.size && (entry.e_tag.is_none() || entry.e_tag == file.e_tag);
        let held = match entry.last {
            None => true,
            Some(last) => watermark.is_some_and(|w| last <= w),
        };
        same && held
    }

    /// `file` was read to its end; `last` is its highest sequence number.
    pub(super) fn finished(&mut self, file: &CaptureFile, last: Option<i64>) {
        self.changed.entry(file.partition_id.clone()).or_default().push(Entry {
            name: file.name.clone(),
            size: file.size,
            e_tag: file.e_tag.clone(),
            window: file.window.timestamp(),
            last,
        });
    }

    /// Writes the ledgers of the partitions with files finished in this
    /// run: the entries read at the start plus the new ones whose events
    /// are all at or below the partition's `watermark` now, without those
    /// older than `keep_from` (epoch seconds of a window). Failures are
    /// logged, not returned: the commits have landed, and a missing entry
    /// only costs a reread.
    pub(super) async fn save(&mut self, now: impl Fn(&str) -> (Option<i64>, Option<i64>)) {
        let Some(store) = self.store.clone() else { return };
        let mut writes = Vec::new();
        for (partition, finished) in std::mem::take(&mut self.changed) {
            let (watermark, keep_from) = now(&partition);
            let entries = self.entries.entry(partition.clone()).or_default();
            for e in finished {
                if e.last.is_none_or(|last| watermark.is_some_and(|w| last <= w)) {
                    entries.insert(e.name.clone(), e);
                }
            }
            if let Some(from) = keep_from {
                entries.retain(|_, e| e.window >= from);
            }
            let mut files: Vec<Entry> = entries.values().cloned().collect();
            files.sort_by(|a, b| (a.window, &a.name).cmp(&(b.window, &b.name)));
            writes.push((partition, files));
        }
        futures::stream::iter(writes)
            .map(|(partition, files)| {
                let store = store.clone();
                async move {
                    let file = File { version: VERSION, partition: partition.clone(), files };
                    state::write(
                        store.as_ref(),
                        &path(&partition),
                        &file,
                        WHAT,
                        "the next run reads these files again",
                    )
                    .await;
                }
            })
            .buffer_unordered(CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
    }
}

/// One partition's entries; empty when there is no ledger or it cannot be
/// used.
async fn read_one(store: &dyn ObjectStore, partition: &str) -> BTreeMap<String, Entry> {
    match state::read::<File>(store, &path(partition), WHAT, "its files are read again").await {
        Some(f) if f.version == VERSION && f.partition == partition => {
            f.files.into_iter().map(|e| (e.name.clone(), e)).collect()
        }
        _ => BTreeMap::new(),
    }
}
