//! `weir plan`: what the next `weir run` would read and write, from one
//! listing of the capture source and the Delta logs. Changes nothing. A job:
//! it asks each stage for its plan rather than working it out again.
//!
//! Ingest's part is [`crate::ingest::plan`], the planning the run itself
//! does: every file the lookback keeps (events at or below a partition's
//! watermark are skipped inside them); "new" files are those with a window
//! after the newest one ingested. Process reads the raw versions
//! after its marker; each curated table the source versions after its own.
//! Whether a stage is up to date, incremental or full is decided by
//! [`crate::lake::refresh`], the decision curate runs by, except that the
//! plan reads no models and so cannot see one that changed.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::capture::PartitionSet;
use crate::ingest::IngestPlan;
use crate::lake::refresh::{Catchup, Definition, Refresh};
use crate::pipeline::LoadedPipeline;
use crate::report::ModelMode;
use crate::status::{lags, table_status, tables};
use crate::storage::Location;
use crate::{delta, Error, Result};

/// A stage that reads another table's versions.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SourcePlan {
    /// `process` or `curate <table>`.
    pub stage: String,
    /// The table it reads.
    pub source: String,
    /// `incremental` (versions to read), `full` (a first run or a model
    /// without `incremental:`), `up_to_date`, or `no_source` (a curated
    /// table whose source does not exist yet, as the run reports it).
    pub mode: ModelMode,
    /// First source version it would read.
    pub from_version: Option<u64>,
    /// Last one (the source's current version).
    pub to_version: Option<u64>,
    /// Data files added in those versions (from their commit entries).
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// A table the run would write.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TablePlan {
    /// Name in the pipeline.
    pub table: String,
    /// Location.
    pub location: String,
    /// Current version; `None` when the run would create it.
    pub version: Option<u64>,
}

/// What the next `weir run` would do.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Plan {
    /// Pipeline name.
    pub pipeline: String,
    /// When the plan was made.
    pub planned_at: DateTime<Utc>,
    /// The ingest stage.
    pub ingest: IngestPlan,
    /// Process and curate, in order.
    pub stages: Vec<SourcePlan>,
    /// The tables and their current versions.
    pub tables: Vec<TablePlan>,
}

/// Files and bytes added by commits `from..=to` (entries already removed by
/// log cleanup count nothing).
async fn added(table: &deltalake::DeltaTable, from: u64, to: u64) -> Result<(u64, u64)> {
    let mut files = 0;
    let mut bytes = 0;
    for v in from..=to {
        let entry =
            table.log_store().read_commit_entry(v as _).await.map_err(|e| Error::delta(table.table_url(), e))?;
        let Some(entry) = entry else { continue };
        for line in entry.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            if let Ok(action) = serde_json::from_slice::<serde_json::Value>(line) {
                if let Some(add) = action.get("add") {
                    files += 1;
                    bytes += add.get("size").and_then(|s| s.as_u64()).unwrap_or(0);
                }
            }
        }
    }
    Ok((files, bytes))
}

/// Plans the next run of `partitions`.
pub async fn plan(loaded: &LoadedPipeline, partitions: &PartitionSet) -> Result<Plan> {
    let p = &loaded.pipeline;
    let mut out = Plan { pipeline: p.name.clone(), planned_at: Utc::now(), ..Default::default() };
    out.ingest = crate::ingest::plan(loaded, partitions).await?;

    let mut statuses = Vec::new();
    for (name, path) in tables(loaded) {
        let s = table_status(&name, &path).await?;
        out.tables.push(TablePlan { table: name, location: s.location.clone(), version: s.version });
        statuses.push(s);
    }
    let incremental = |stage: &str| -> bool {
        match stage.strip_prefix("curate ") {
            None => true,
            Some(name) => p.curate.iter().flat_map(|c| &c.tables).any(|c| c.name == name && c.incremental.is_some()),
        }
    };
    // Process starts where its output table furthest behind is, as the run does.
    let process_marker = crate::process::pending(loaded).await?.map(|(from, _)| from as i64 - 1);
    for lag in lags(loaded, &statuses).await? {
        let exists = |name: &str| statuses.iter().any(|t| t.table == name && t.exists);
        let target = lag.stage.strip_prefix("curate ").unwrap_or("processed");
        let mut sp = SourcePlan { stage: lag.stage.clone(), source: lag.source.clone(), ..Default::default() };
        let Some(to) = lag.source_version else {
            // As the runs say it: curate reports a missing source as such;
            // process without a raw table has nothing to do.
            sp.mode = if lag.stage.starts_with("curate ") { ModelMode::NoSource } else { ModelMode::UpToDate };
            out.stages.push(sp);
            continue;
        };
        let catchup = Catchup {
            target_exists: exists(target),
            marker: match (lag.stage == "process", process_marker) {
                (true, Some(m)) => (m >= 0).then_some(m),
                _ => lag.consumed_version.map(|c| c as i64),
            },
            source_version: to,
            incremental: incremental(&lag.stage),
            full_refresh: false,
            // The plan reads no SQL: a changed model shows only in the run.
            definition: Definition::Same,
        };
        sp.mode = match catchup.decide() {
            Refresh::UpToDate => ModelMode::UpToDate,
            Refresh::Incremental { .. } => ModelMode::Incremental,
            Refresh::Full(_) => ModelMode::Full,
        };
        let from = catchup.from();
        if from <= to {
            let path = tables(loaded).into_iter().find(|(n, _)| *n == lag.source).map(|(_, p)| p);
            if let Some(path) = path {
                if let Some(table) = delta::open(&Location::resolve(&path)?).await? {
                    (sp.files, sp.bytes) = added(&table, from, to).await?;
                }
            }
            sp.from_version = Some(from);
            sp.to_version = Some(to);
        }
        out.stages.push(sp);
    }
    Ok(out)
}
