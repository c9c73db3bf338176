//! Purge: make erased rows physically unreadable now.
//!
//! After the deletes, a table still holds the subject's rows in the files
//! the deletes removed (time travel reads them), in change-data files
//! (`_change_data/`, the delete and update pre-images), and as statistics
//! in old log entries. A purge deletes:
//! - every file the current version does not reference that the log names
//!   as removed (a tombstone) or that holds change data, whatever its age;
//! - other unreferenced files older than an hour (orphans of crashed
//!   writers). Younger ones may belong to an ingest committing right now and
//!   are left for `weir maintain`;
//! - the log history: a checkpoint of the current version replaces every
//!   older log entry, except entries a downstream stage has not read yet
//!   (process reads raw's change feed, curate processed's). The checkpoint
//!   is taken on an empty commit marking the purge, so that no entry that
//!   recorded the erase itself survives.
//!
//! Time travel to versions before the purge is gone afterwards.

use std::collections::{HashMap, HashSet};

use chrono::Utc;
use deltalake::operations::vacuum::VacuumMode;
use deltalake::DeltaTable;
use futures::{StreamExt as _, TryStreamExt as _};
use object_store::path::Path;
use object_store::ObjectStoreExt as _;

use crate::lake::Marker;
use crate::pipeline::LoadedPipeline;
use crate::{delta, Error, Result};

/// Unreferenced files younger than this that the log does not name are
/// spared: they may be written by a job about to commit them.
const IN_FLIGHT_HOURS: i64 = 1;

/// What a purge removed from one table.
#[derive(Debug, Default)]
pub(super) struct Purged {
    pub files: u64,
    pub bytes: u64,
    pub log_files: u64,
    pub warnings: Vec<String>,
}

/// Per table, the last version a downstream stage has read (its log from
/// the next version on must stay): raw → process, a curate source → the
/// curated tables computed from it.
pub(super) async fn consumer_versions(loaded: &LoadedPipeline) -> Result<HashMap<String, u64>> {
    let p = &loaded.pipeline;
    let mut out: HashMap<String, u64> = HashMap::new();
    let mut note = |table: &str, version: u64| {
        let e = out.entry(table.to_string()).or_insert(version);
        *e = (*e).min(version);
    };
    // Each process unit (each route, with routes) reads raw.
    for unit in loaded.process_units().iter().filter(|u| u.table.is_some()) {
        if let Some(processed) = delta::open(&loaded.location(&unit.table_key)?).await? {
            if let Some(v) = delta::progress(&processed, &unit.app_id(&p.name)).await? {
                note("raw", v as u64);
            }
        }
    }
    for (i, c) in p.curate.iter().flat_map(|c| &c.tables).enumerate() {
        let Some(inc) = &c.incremental else { continue };
        if let Some(table) = delta::open(&loaded.curated_location(i)?).await? {
            if let Some(v) =
                delta::progress(&table, &Marker::Curate { pipeline: &p.name, table: &c.name }.app_id()).await?
            {
                note(&inc.source, v as u64);
            }
        }
    }
    Ok(out)
}

/// Purges one table; `consumed` is the last version a downstream stage has
/// read, if any; `metadata` goes on the commit that marks the purge.
pub(super) async fn purge(
    table: &DeltaTable,
    consumed: Option<u64>,
    metadata: HashMap<String, serde_json::Value>,
) -> Result<Purged> {
    let url = table.table_url().clone();
    let plan = |hours: i64| {
        table
            .clone()
            .vacuum()
            .with_mode(VacuumMode::Full)
            .with_retention_period(chrono::Duration::hours(hours))
            .with_enforce_retention_duration(false)
            .with_dry_run(true)
    };
    let (_, everything) = plan(0).await.map_err(|e| Error::delta(&url, e))?;
    let (_, old) = plan(IN_FLIGHT_HOURS).await.map_err(|e| Error::delta(&url, e))?;
    let snapshot = table.snapshot().map_err(|e| Error::delta(&url, e))?;
    let tombstones: HashSet<String> = snapshot
        .all_tombstones(table.log_store().as_ref())
        .map_ok(|t| {
            let p = t.path();
            Path::parse(p.as_ref()).unwrap_or_else(|_| Path::from(p.as_ref())).to_string()
        })
        .try_collect()
        .await
        .map_err(|e| Error::delta(&url, e))?;
    let old: HashSet<String> = old.files_deleted.into_iter().collect();
    // Another Delta table inside this one's folder: its files are never ours.
    let nested = delta::nested_tables(table).await?;
    let mut doomed = Vec::new();
    let mut spared = 0u64;
    for f in everything.files_deleted {
        if delta::inside_any(&f, &nested) {
            continue;
        }
        if old.contains(&f) || tombstones.contains(&f) || f.starts_with("_change_data/") || f.contains("/_change_data/")
        {
            doomed.push(f);
        } else {
            spared += 1;
        }
    }

    let store = table.log_store().object_store(None);
    let sizes: HashMap<String, u64> = store
        .list(None)
        .map_ok(|m| (m.location.to_string(), m.size))
        .try_collect()
        .await
        .map_err(|e| Error::storage(&url, e))?;
    let mut out = Purged {
        files: doomed.len() as u64,
        bytes: doomed.iter().filter_map(|f| sizes.get(f)).sum(),
        ..Default::default()
    };
    let results: Vec<object_store::Result<()>> = futures::stream::iter(doomed)
        .map(|f| {
            let store = store.clone();
            async move {
                let path = Path::parse(&f).unwrap_or_else(|_| Path::from(f.as_str()));
                match store.delete(&path).await {
                    Err(object_store::Error::NotFound { .. }) => Ok(()),
                    r => r,
                }
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for r in results {
        r.map_err(|e| Error::storage(&url, e))?;
    }
    if spared > 0 {
        out.warnings.push(format!(
            "{spared} unreferenced files younger than {IN_FLIGHT_HOURS} h were left (a job may be about to commit them); the next weir maintain vacuum removes them if they stay unreferenced"
        ));
    }

    // The log: a checkpoint replaces the history. Commit entries hold
    // merge predicates with the key range a merge touched (a curate run
    // deleting a subject's rows names that subject's id), so the checkpoint
    // goes on a new, empty commit: every entry before it can be deleted.
    let table =
        delta::write_with_progress(table.clone(), vec![], delta::WriteOptions { metadata, ..Default::default() })
            .await?;
    let version = table.version().unwrap_or(0) as u64;
    deltalake::checkpoints::create_checkpoint(&table, None).await.map_err(|e| Error::delta(&url, e))?;
    let keep = consumed.map_or(version, |c| version.min(c + 1));
    if keep < version {
        out.warnings.push(format!(
            "log entries from version {keep} on were kept: a downstream stage has not read them yet (purge again after its next run)"
        ));
    }
    let removed = deltalake::checkpoints::cleanup_expired_logs_for(
        keep as _,
        table.log_store().as_ref(),
        Utc::now().timestamp_millis() + 1_000,
        None,
    )
    .await
    .map_err(|e| Error::delta(&url, e))?;
    out.log_files = removed as u64;
    Ok(out)
}
