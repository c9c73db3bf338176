//! Where a pipeline stands, read without changing anything: `weir status`
//! (tables, ingest lag per partition, stages behind their sources, last run
//! outcomes) and `weir plan` ([`plan`]: what the next run would read and
//! write).
//!
//! Everything here comes from Delta logs (versions, file statistics,
//! progress markers) and one listing of the capture source; no data file is
//! read. Row counts come from file statistics: a table written without them
//! reports `rows: null`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::capture::{discover, CaptureFile, PartitionSet, PathFormat};
use crate::delta;
use crate::lake::commit;
use crate::lake::Marker;
use crate::pipeline::LoadedPipeline;
use crate::report::runs::{last_runs, LastRun};
use crate::storage::Location;
use crate::{Error, Result};

/// One table's state.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TableStatus {
    /// Name in the pipeline (`raw`, a curated table's name, ...).
    pub table: String,
    /// Location (credentials removed).
    pub location: String,
    /// Whether the table exists yet.
    pub exists: bool,
    /// Current version.
    pub version: Option<u64>,
    /// Rows in the current version (from file statistics).
    pub rows: Option<u64>,
    /// Data files in the current version.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// When the last commit was made.
    pub last_commit_at: Option<DateTime<Utc>>,
    /// Its operation (`WRITE`, `MERGE`, `OPTIMIZE`, ...).
    pub last_operation: Option<String>,
    /// The Weir job that made it, when Weir did.
    pub last_job: Option<String>,
}

/// One Event Hub partition's ingest state.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PartitionStatus {
    /// Last sequence number ingested.
    pub watermark: Option<i64>,
    /// Newest capture window ingested.
    pub ingested_window: Option<DateTime<Utc>>,
    /// Newest capture file in the source.
    pub newest_file: Option<String>,
    /// Its window.
    pub newest_file_window: Option<DateTime<Utc>>,
    /// Capture files with a window after the newest ingested one.
    pub files_behind: u64,
    /// Their bytes.
    pub bytes_behind: u64,
    /// Newest file's window minus the newest ingested window, in minutes
    /// (0 when caught up; the whole span when nothing was ingested).
    pub minutes_behind: f64,
}

/// A stage reading another table's versions.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StageLag {
    /// `process`, or `curate <table>`.
    pub stage: String,
    /// The table it reads.
    pub source: String,
    /// The source version it has consumed.
    pub consumed_version: Option<u64>,
    /// The source's current version.
    pub source_version: Option<u64>,
    /// Source versions not consumed yet.
    pub versions_behind: u64,
}

/// The whole status.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    /// Pipeline name.
    pub pipeline: String,
    /// When this was read.
    pub checked_at: DateTime<Utc>,
    /// Every table of the pipeline.
    pub tables: Vec<TableStatus>,
    /// Per Event Hub partition found in the source.
    pub partitions: BTreeMap<String, PartitionStatus>,
    /// Stages behind their sources.
    pub stages: Vec<StageLag>,
    /// The last run of each job (from the runs table, when declared).
    pub last_runs: Vec<LastRun>,
}

/// Every table of the pipeline: (name, location).
pub(crate) fn tables(loaded: &LoadedPipeline) -> Result<Vec<(String, Location)>> {
    loaded.tables_written().into_iter().map(|t| Ok((t.name, loaded.location(&t.key)?))).collect()
}

pub(crate) async fn table_status(name: &str, location: &Location) -> Result<TableStatus> {
    let mut s = TableStatus { table: name.to_string(), location: location.to_string(), ..Default::default() };
    let Some(table) = delta::open(location).await? else { return Ok(s) };
    s.exists = true;
    s.version = table.version();
    let snapshot = table.snapshot().map_err(|e| Error::delta(&location, e))?;
    let mut rows = Some(0u64);
    for f in snapshot.log_data().iter() {
        s.files += 1;
        s.bytes += f.size() as u64;
        rows = rows.zip(f.num_records()).map(|(a, b)| a + b as u64);
    }
    s.rows = rows;
    let mut history = table.history(Some(1));
    if let Some(c) = futures::StreamExt::next(&mut history).await.transpose().map_err(|e| Error::delta(&location, e))? {
        s.last_commit_at = c.timestamp.and_then(DateTime::from_timestamp_millis);
        s.last_operation = c.operation.clone();
        s.last_job = commit::stage_of(&c.info).map(str::to_string);
    }
    Ok(s)
}

/// Per partition: capture files listed (after lookback pruning when `prune`),
/// the watermark and the newest ingested window.
pub(crate) struct SourceState {
    pub files: BTreeMap<String, Vec<CaptureFile>>,
    pub watermarks: BTreeMap<String, i64>,
    pub windows: BTreeMap<String, DateTime<Utc>>,
}

pub(crate) async fn source_state(loaded: &LoadedPipeline, partitions: &PartitionSet) -> Result<SourceState> {
    let p = &loaded.pipeline;
    let source = loaded.location("source.capture.url")?;
    let format = PathFormat::parse(&p.source.capture.path_format)
        .map_err(|reason| Error::InvalidLocation { location: p.source.capture.path_format.clone(), reason })?;
    let raw = delta::open(&loaded.location("tables.raw.path")?).await?;
    let mut watermarks = BTreeMap::new();
    let mut windows = BTreeMap::new();
    if let Some(raw) = &raw {
        if let Some(list) = crate::capture::list_partitions(&source, &format).await? {
            for id in list.iter().filter(|id| partitions.contains(id)) {
                if let Some(w) =
                    delta::progress(raw, &Marker::IngestWatermark { pipeline: &p.name, partition: id }.app_id()).await?
                {
                    watermarks.insert(id.clone(), w);
                }
                if let Some(m) =
                    delta::progress(raw, &Marker::IngestWindow { pipeline: &p.name, partition: id }.app_id()).await?
                {
                    if let Some(at) = DateTime::from_timestamp(m, 0) {
                        windows.insert(id.clone(), at);
                    }
                }
            }
        }
    }
    // Status lists everything: lag counts every file not yet ingested.
    let found = discover(&source, &format, partitions, &BTreeMap::new()).await?;
    Ok(SourceState { files: found.partitions, watermarks, windows })
}

/// Reads the pipeline's status.
pub async fn status(loaded: &LoadedPipeline) -> Result<Status> {
    let p = &loaded.pipeline;
    let mut out = Status { pipeline: p.name.clone(), checked_at: Utc::now(), ..Default::default() };
    for (name, location) in tables(loaded)? {
        out.tables.push(table_status(&name, &location).await?);
    }
    let source = source_state(loaded, &PartitionSet::all()).await?;
    for (id, files) in &source.files {
        let ingested = source.windows.get(id).copied();
        let behind: Vec<&CaptureFile> = files.iter().filter(|f| ingested.is_none_or(|w| f.window > w)).collect();
        let newest = files.last();
        let minutes = match (newest, ingested, behind.first()) {
            (Some(n), Some(w), _) => ((n.window - w).num_seconds().max(0)) as f64 / 60.0,
            (Some(n), None, Some(first)) => (n.window - first.window).num_seconds() as f64 / 60.0,
            _ => 0.0,
        };
        out.partitions.insert(
            id.clone(),
            PartitionStatus {
                watermark: source.watermarks.get(id).copied(),
                ingested_window: ingested,
                newest_file: newest.map(|f| f.name.clone()),
                newest_file_window: newest.map(|f| f.window),
                files_behind: behind.len() as u64,
                bytes_behind: behind.iter().map(|f| f.size).sum(),
                minutes_behind: minutes,
            },
        );
    }
    out.stages = lags(loaded, &out.tables).await?;
    out.last_runs = last_runs(loaded).await?;
    Ok(out)
}

/// Each stage's consumed source version against the source's current one.
pub(crate) async fn lags(loaded: &LoadedPipeline, tables: &[TableStatus]) -> Result<Vec<StageLag>> {
    let p = &loaded.pipeline;
    let version = |name: &str| tables.iter().find(|t| t.table == name).and_then(|t| t.version);
    let mut out = Vec::new();
    let lag = |stage: String, source: &str, consumed: Option<u64>| {
        let source_version = version(source);
        let versions_behind = match (consumed, source_version) {
            (Some(c), Some(s)) => s.saturating_sub(c),
            (None, Some(s)) => s + 1,
            _ => 0,
        };
        StageLag { stage, source: source.to_string(), consumed_version: consumed, source_version, versions_behind }
    };
    for unit in loaded.process_units().iter().filter(|u| u.table.is_some()) {
        let consumed = match delta::open(&loaded.location(&unit.table_key)?).await? {
            Some(processed) => delta::progress(&processed, &unit.app_id(&p.name)).await?.map(|v| v as u64),
            None => None,
        };
        out.push(lag(unit.stage(), "raw", consumed));
    }
    for (i, c) in p.curate.iter().flat_map(|c| &c.tables).enumerate() {
        let source = c.incremental.as_ref().map_or("processed", |i| i.source.as_str());
        let consumed = match delta::open(&loaded.location(&format!("curate.tables[{i}].path"))?).await? {
            Some(t) => delta::progress(&t, &Marker::Curate { pipeline: &p.name, table: &c.name }.app_id())
                .await?
                .map(|v| v as u64),
            None => None,
        };
        out.push(lag(format!("curate {}", c.name), source, consumed));
    }
    Ok(out)
}
