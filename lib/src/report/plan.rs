//! Stage plans as reports print them: what a stage would read and write,
//! and why. Each stage builds its plan before it runs ([`crate::stage`]);
//! a dry run's stage report carries it (`plan`), and `weir plan` prints the
//! same structs, so the plan and the run cannot disagree.

use std::collections::BTreeMap;

use serde::Serialize;

use super::ModelMode;

/// One stage's plan, in its stage report.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum StagePlan {
    /// The capture files an ingest reads.
    Ingest(IngestPlan),
    /// The raw versions process reads.
    Process(SourcePlan),
    /// Per curated table, the source versions its model reads.
    Curate(Vec<SourcePlan>),
    /// The tables maintain would look after and with which actions.
    Maintain(Vec<MaintainPlan>),
}

/// One partition's share of the next ingest.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PartitionPlan {
    /// Last sequence number ingested.
    pub watermark: Option<i64>,
    /// Capture files the ingest would read (the lookback keeps them).
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Of those, files with a window after the newest one ingested.
    pub new_files: u64,
    /// Their bytes.
    pub new_bytes: u64,
    /// First file it would read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_file: Option<String>,
    /// Last file it would read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_file: Option<String>,
}

/// The next ingest: the files a run would read now.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IngestPlan {
    /// Files to read, all partitions.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// New files (window after the newest ingested), all partitions.
    pub new_files: u64,
    /// Their bytes.
    pub new_bytes: u64,
    /// Per partition.
    pub partitions: BTreeMap<String, PartitionPlan>,
}

/// A stage that reads another table's versions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SourcePlan {
    /// `process` or `curate <table>`.
    pub stage: String,
    /// The table it reads.
    pub source: String,
    /// `incremental` (versions to read), `full` (a first run, a model
    /// without `incremental:` or one whose definition changed),
    /// `up_to_date`, or `no_source` (the source does not exist yet).
    pub mode: ModelMode,
    /// Why a full recompute (first run, model changed, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// First source version it would read.
    pub from_version: Option<u64>,
    /// Last one (the source's version when planned).
    pub to_version: Option<u64>,
    /// Data files added in those versions (from their commit entries).
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// A table maintain would look after.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MaintainPlan {
    /// Name in the pipeline.
    pub table: String,
    /// Location.
    pub location: String,
    /// Current version; `None` when the table does not exist yet (nothing
    /// to do).
    pub version: Option<u64>,
    /// The actions the policy enables, in the order they run.
    pub actions: Vec<super::ActionKind>,
    /// Vacuum's retention in hours.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vacuum_retention_hours: Option<u64>,
}

impl SourcePlan {
    /// The plan of `stage` reading `source` as `catchup` decides it: the
    /// versions it reads (none when up to date) and why a full one.
    pub fn decided(stage: &str, source: &str, catchup: &crate::lake::refresh::Catchup) -> SourcePlan {
        use crate::lake::refresh::Refresh;
        let mut plan = SourcePlan { stage: stage.to_string(), source: source.to_string(), ..Default::default() };
        plan.mode = match catchup.decide() {
            Refresh::UpToDate => ModelMode::UpToDate,
            Refresh::Incremental { .. } => ModelMode::Incremental,
            Refresh::Full(reason) => {
                plan.reason = Some(reason.to_string());
                ModelMode::Full
            }
        };
        // A full recompute reads the source from its first version.
        let to = catchup.source_version;
        let from = if plan.mode == ModelMode::Full { 0 } else { catchup.from() };
        if plan.mode != ModelMode::UpToDate && from <= to {
            (plan.from_version, plan.to_version) = (Some(from), Some(to));
        }
        plan
    }
}

impl From<IngestPlan> for StagePlan {
    fn from(plan: IngestPlan) -> StagePlan {
        StagePlan::Ingest(plan)
    }
}

impl From<SourcePlan> for StagePlan {
    fn from(plan: SourcePlan) -> StagePlan {
        StagePlan::Process(plan)
    }
}

impl From<Vec<SourcePlan>> for StagePlan {
    fn from(plans: Vec<SourcePlan>) -> StagePlan {
        StagePlan::Curate(plans)
    }
}

impl From<Vec<MaintainPlan>> for StagePlan {
    fn from(plans: Vec<MaintainPlan>) -> StagePlan {
        StagePlan::Maintain(plans)
    }
}
