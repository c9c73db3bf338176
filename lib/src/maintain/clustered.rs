//! Which files of each partition the last z-order wrote, so that `weir
//! maintain` re-clusters a partition only when what was added since
//! warrants it, instead of rewriting every partition of two files or more on
//! every run (a day partition z-ordered into eight files was rewritten
//! whole by each maintain, new data or not).
//!
//! One small JSON file per table, `_weir/maintain/zorder.json` in the
//! table's folder (a hidden folder: Delta readers and vacuum leave it
//! alone), holds the z-order columns and, per partition, the files the
//! z-order commit added (read back from that commit's log entry, so an
//! append committed beside it is not taken for clustered). It is written
//! after the commit and is only a cache: missing, unreadable, or written for
//! other columns, every file counts as new, and partitions are z-ordered as
//! without it. A file it names that a later delete, merge or compaction
//! removed is simply no longer active; the files those wrote are new.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use deltalake::DeltaTable;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use serde::{Deserialize, Serialize};

use crate::lake::state;

const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct File {
    version: u32,
    columns: Vec<String>,
    /// Partition (rendered `column=value/...`) → files the z-order wrote.
    partitions: BTreeMap<String, BTreeSet<String>>,
}

/// The clustered files of a table, by partition.
pub(super) struct Clustered {
    store: Arc<dyn ObjectStore>,
    columns: Vec<String>,
    partitions: BTreeMap<String, BTreeSet<String>>,
}

fn path() -> ObjectPath {
    state::path(&["maintain", "zorder.json"])
}

const WHAT: &str = "the z-order record";

impl Clustered {
    /// Reads the table's record for z-order by `columns`.
    pub(super) async fn load(table: &DeltaTable, columns: &[String]) -> Clustered {
        let store = table.log_store().object_store(None);
        let read = state::read::<File>(store.as_ref(), &path(), WHAT, "every partition counts as new").await;
        let partitions = match read {
            Some(f) if f.version == VERSION && f.columns == columns => f.partitions,
            _ => BTreeMap::new(),
        };
        Clustered { store, columns: columns.to_vec(), partitions }
    }

    /// Whether the last z-order of `partition` wrote `file`.
    pub(super) fn holds(&self, partition: &str, file: &str) -> bool {
        self.partitions.get(partition).is_some_and(|files| files.contains(file))
    }

    /// Records the files the z-order commit `version` added, for every
    /// partition it rewrote, and writes the record. Failures are logged:
    /// the next run then rewrites these partitions once more.
    pub(super) async fn record(&mut self, table: &DeltaTable, version: u64) {
        let entry = match table.log_store().read_commit_entry(version).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(version, error = %e, "could not read the z-order commit back");
                return;
            }
        };
        let mut added: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for line in entry.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let Ok(action) = serde_json::from_slice::<serde_json::Value>(line) else { continue };
            let Some(add) = action.get("add") else { continue };
            let (Some(path), Some(values)) = (add["path"].as_str(), add["partitionValues"].as_object()) else {
                continue;
            };
            let mut values: Vec<(String, Option<String>)> =
                values.iter().map(|(k, v)| (k.clone(), v.as_str().map(str::to_string))).collect();
            values.sort();
            added.entry(partition_key(&values)).or_default().insert(percent_decoded(path));
        }
        self.partitions.extend(added);
        let file = File { version: VERSION, columns: self.columns.clone(), partitions: self.partitions.clone() };
        state::write(self.store.as_ref(), &path(), &file, WHAT, "the next maintain re-clusters these partitions").await;
    }
}

/// A partition rendered as maintain names it: `column=value/...`, sorted by
/// column, `null` for a null value.
pub(super) fn partition_key(values: &[(String, Option<String>)]) -> String {
    values.iter().map(|(k, v)| format!("{k}={}", v.as_deref().unwrap_or("null"))).collect::<Vec<_>>().join("/")
}

/// A log path with its `%XX` escapes decoded, as the snapshot gives paths.
fn percent_decoded(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_paths_are_decoded_as_the_snapshot_decodes_them() {
        assert_eq!(percent_decoded("d=2026-11-01/part-1.parquet"), "d=2026-11-01/part-1.parquet");
        assert_eq!(percent_decoded("d=a%20b%2Fc/x%zz%4"), "d=a b/c/x%zz%4");
    }
}
