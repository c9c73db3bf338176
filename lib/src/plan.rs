//! `weir plan`: what the next `weir run` would read and write, changing
//! nothing. A job: it asks each stage for its own plan
//! ([`crate::stage::plan`]), the plan the stage's run starts from and a
//! dry run's report carries, so `weir plan` and the run cannot disagree.
//!
//! Ingest reads every file the lookback keeps (events at or below a
//! partition's watermark are skipped inside them); "new" files are those
//! with a window after the newest one ingested. Process reads the raw
//! versions after the marker of its output furthest behind; each curated
//! table the source versions after its own, or all of them when its model
//! changed or has no incremental scope.
//!
//! Hazard: each stage is planned on the lake as it is now. In a run, a
//! stage is planned after the one before it has written, so process and
//! curate will read more than this plan shows when ingest has new files.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::capture::PartitionSet;
use crate::curate::CurateOptions;
use crate::ingest::IngestOptions;
use crate::pipeline::LoadedPipeline;
use crate::process::ProcessOptions;
use crate::report::plan::{IngestPlan, SourcePlan};
use crate::stage;
use crate::status::{table_status, tables};
use crate::Result;

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

/// Plans the next run of `partitions`.
pub async fn plan(loaded: &LoadedPipeline, partitions: &PartitionSet) -> Result<Plan> {
    let p = &loaded.pipeline;
    let mut out = Plan { pipeline: p.name.clone(), planned_at: Utc::now(), ..Default::default() };
    for (name, location) in tables(loaded)? {
        let s = table_status(&name, &location).await?;
        out.tables.push(TablePlan { table: name, location: s.location.clone(), version: s.version });
    }
    let ingest = IngestOptions {
        partitions: partitions.clone(),
        dry_run: true,
        run_id: String::new(),
        on_progress: None,
        feed: None,
    };
    out.ingest = stage::plan(loaded, &ingest).await?;
    if p.process.is_some() {
        let process = ProcessOptions { dry_run: true, run_id: String::new(), route: None, follow: None };
        for process in crate::process::each_unit(loaded, &process) {
            out.stages.push(stage::plan(loaded, &process).await?);
        }
    }
    if p.curate.as_ref().is_some_and(|c| !c.tables.is_empty()) {
        let curate = CurateOptions { dry_run: true, ..Default::default() };
        out.stages.extend(stage::plan(loaded, &curate).await?);
    }
    Ok(out)
}
