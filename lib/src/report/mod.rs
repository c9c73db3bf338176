//! The run report: one JSON document per job run, printed to stdout or
//! written to `--report FILE`. Its shape is a contract with schedulers and
//! dashboards: fields are added, never renamed.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::ErrorClass;

/// A closed set of names a report field takes: serialised (and stored in
/// tables) as the given strings, compared as values.
macro_rules! names {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize)]
        pub enum $name {
            $($(#[$vm])* #[serde(rename = $s)] $v),+
        }

        impl $name {
            /// The name in reports, metrics and tables.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$v => $s),+
                }
            }
        }

        /// Compares with the serialised name, as a reader of the report would.
        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

names! {
    /// The stage (or job) a [`StageReport`] is about.
    Stage {
        /// Capture files → raw. (The default only serves struct-update
        /// syntax: every stage names itself.)
        #[default]
        Ingest = "ingest",
        /// Raw → processed, quarantine, quality metrics.
        Process = "process",
        /// Processed → curated tables.
        Curate = "curate",
        /// Table upkeep.
        Maintain = "maintain",
        /// Right to be forgotten.
        Erase = "erase",
    }
}

names! {
    /// How curate brought a table up to date.
    ModelMode {
        /// Only the scope values the source changes touched.
        Incremental = "incremental",
        /// Everything, from scratch.
        Full = "full",
        /// Nothing changed in the source.
        #[default]
        UpToDate = "up_to_date",
        /// The source table does not exist yet.
        NoSource = "no_source",
    }
}

names! {
    /// What happened to the rows a rule checked.
    RuleVerdict {
        /// No row failed.
        #[default]
        Passed = "passed",
        /// Rows failed a `warn` rule within its threshold and were kept.
        Kept = "kept",
        /// Rows failed a `warn` rule above its threshold and were kept.
        Warned = "warned",
        /// Failing rows were dropped.
        Dropped = "dropped",
        /// Failing rows went to quarantine.
        Quarantined = "quarantined",
        /// A `fail` rule failed: nothing of the range was published.
        Failed = "failed",
    }
}

names! {
    /// What kind of input problem a [`DataProblem`] is.
    ProblemKind {
        /// A capture file that cannot be decoded.
        #[default]
        CorruptFile = "corrupt_file",
        /// Sequence numbers missing between files of a partition.
        SequenceGap = "sequence_gap",
        /// Events of a file below the numbers an earlier file of the same
        /// run held, never ingested (not taken).
        OutOfOrder = "out_of_order",
        /// A `fail` rule failed (or a rule's failure rate passed its
        /// threshold): nothing of the range was published.
        ExpectationFailed = "expectation_failed",
        /// A `warn` rule's failure rate passed its threshold.
        ExpectationThreshold = "expectation_threshold",
        /// Storage failed to give a capture file: its partition stopped
        /// before it, the others went on, and the run exits with the
        /// storage error's code.
        UnreadableFile = "unreadable_file",
    }
}

names! {
    /// A maintenance action.
    ActionKind {
        /// Rows older than the retention deleted.
        #[default]
        Retention = "retention",
        /// Small files compacted.
        Optimize = "optimize",
        /// Files rewritten z-ordered.
        Zorder = "zorder",
        /// Unreferenced files deleted.
        Vacuum = "vacuum",
        /// A checkpoint written.
        Checkpoint = "checkpoint",
        /// A rewrite lease left by a run that no longer runs, given back
        /// (`--release-leases`).
        ReleaseLease = "release_lease",
    }
}

names! {
    /// What came of a maintenance action.
    ActionOutcome {
        /// Committed.
        Done = "done",
        /// Would be done (dry run).
        Planned = "planned",
        /// Nothing to do.
        #[default]
        Skipped = "skipped",
    }
}

names! {
    /// How an erasure reached a table.
    ErasureHow {
        /// Rows deleted by lineage or key.
        Delete = "delete",
        /// Curated rows dropped by recomputing the table.
        Recomputed = "recomputed",
        /// Nothing of the subjects was there.
        #[default]
        None = "none",
        /// Found and counted (dry run).
        Planned = "planned",
    }
}

/// Everything a run did.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Unique id of this run (also stored in every row it wrote).
    pub run_id: String,
    /// Pipeline name.
    pub pipeline: String,
    /// Pipeline file.
    pub pipeline_file: String,
    /// Job name (`ingest`, `run`, ...).
    pub job: String,
    /// True when nothing was written.
    pub dry_run: bool,
    /// Start time.
    pub started_at: DateTime<Utc>,
    /// End time.
    pub finished_at: DateTime<Utc>,
    /// Overall outcome.
    pub outcome: Outcome,
    /// Stages that ran, in order.
    pub stages: Vec<StageReport>,
    /// The error that ended the run, if one did.
    pub error: Option<ErrorReport>,
}

/// How the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Everything available was processed (possibly nothing).
    Success,
    /// Work was done, but some input needs a human (corrupt file, gap...).
    DataProblem,
    /// The run failed; see `error`.
    Failed,
}

/// The error that ended a run.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorReport {
    /// Scheduler class of the error.
    pub class: ErrorClass,
    /// Message (never contains secrets).
    pub message: String,
}

/// One stage's figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StageReport {
    /// Stage name.
    pub stage: Stage,
    /// The route a process stage ran for (pipelines with `process.routes`
    /// run the stage once per route).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// Files read.
    pub files_read: u64,
    /// Bytes of input read.
    pub bytes_read: u64,
    /// Files not read again: older than the lookback behind the newest
    /// window already ingested for their partition.
    pub files_skipped_as_done: u64,
    /// Header-only capture files among those read.
    pub empty_files: u64,
    /// Events decoded.
    pub events_read: u64,
    /// Events written to the output table.
    pub events_written: u64,
    /// Events skipped because an earlier run already wrote them, or because
    /// their file gave the same sequence number before.
    pub events_already_ingested: u64,
    /// Process in `weir run`: events of `events_read` taken from memory as
    /// ingest committed them, instead of read back from the raw table.
    #[serde(skip_serializing_if = "is_zero")]
    pub events_from_ingest: u64,
    /// Per Event Hub partition.
    pub partitions: BTreeMap<String, PartitionReport>,
    /// Tables written and the versions committed.
    pub tables: Vec<TableWrite>,
    /// Everything that needs attention.
    pub problems: Vec<DataProblem>,
    /// Objects below the source that do not match the path format.
    pub unmatched_files: UnmatchedFiles,
    /// Data-quality figures (process stage).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quality: Option<QualityReport>,
    /// Per curated table (curate stage).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<ModelReport>,
    /// Per table and action (maintain job).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub maintenance: Vec<MaintenanceAction>,
    /// What an erase found and deleted (erase job).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub erasure: Option<ErasureReport>,
    /// The stage's plan, on a dry run: what it would read and write, and
    /// why (the same structs `weir plan` prints).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<plan::StagePlan>,
}

/// For `skip_serializing_if`: a figure only some runs have.
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What the curate stage did to one curated table.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ModelReport {
    /// Curated table name.
    pub table: String,
    /// `incremental`, `full`, `up_to_date` or `no_source`.
    pub mode: ModelMode,
    /// Why a full recompute was chosen (first run, model changed, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The driving source table.
    pub source: String,
    /// Source versions consumed by this run: (first, last).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_versions: Option<(u64, u64)>,
    /// Distinct scope values the source changes touched (incremental mode).
    pub scope_values: u64,
    /// Rows the model produced for the recomputed scope.
    pub rows_computed: u64,
    /// Rows added to the table.
    pub rows_inserted: u64,
    /// Rows whose values changed.
    pub rows_updated: u64,
    /// Rows removed (their scope no longer produces them).
    pub rows_deleted: u64,
    /// Rows recomputed with unchanged values (not rewritten).
    pub rows_unchanged: u64,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
}

/// What the process stage did to the rows it read.
#[derive(Debug, Clone, Default, Serialize)]
pub struct QualityReport {
    /// Rows moved to the quarantine table.
    pub events_quarantined: u64,
    /// Rows discarded by `drop` rules.
    pub events_dropped: u64,
    /// Rows discarded as duplicates of the business key.
    pub duplicates_dropped: u64,
    /// Rows an interrupted earlier run had already written.
    pub already_written: u64,
    /// Per rule (`schema` = parsing, `dedup` = duplicates), summed over the run.
    pub rules: Vec<RuleOutcome>,
}

/// One rule's figures in a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RuleOutcome {
    /// Rule name.
    pub rule: String,
    /// Declared action: `warn`, `drop`, `quarantine` or `fail`.
    pub action: crate::expectations::Action,
    /// Rows the rule was checked on.
    pub rows_checked: u64,
    /// Rows that failed it.
    pub rows_failed: u64,
    /// `passed`, `kept`, `warned`, `dropped`, `quarantined` or `failed`.
    pub outcome: RuleVerdict,
}

/// One partition's progress in a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PartitionReport {
    /// Last sequence number ingested before the run.
    pub watermark_before: Option<i64>,
    /// Last sequence number ingested after the run.
    pub watermark_after: Option<i64>,
    /// Capture files listed for the partition.
    pub files_listed: u64,
    /// Files read in this run.
    pub files_read: u64,
    /// Events written in this run.
    pub events_written: u64,
    /// Window of the newest file listed.
    pub newest_file_window: Option<DateTime<Utc>>,
    /// Set when the partition stopped before a corrupt file.
    pub halted_at: Option<String>,
    /// Missing sequence ranges detected.
    pub gaps: Vec<SequenceGap>,
}

/// A missing range of sequence numbers in one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SequenceGap {
    /// Partition id.
    pub partition: String,
    /// First missing sequence number.
    pub from: i64,
    /// Last missing sequence number.
    pub to: i64,
    /// The file whose first event follows the gap.
    pub before_file: String,
}

/// A table written by a stage.
#[derive(Debug, Clone, Serialize)]
pub struct TableWrite {
    /// Table name in the pipeline (`raw`, ...).
    pub table: String,
    /// Table location (without secrets).
    pub location: String,
    /// Version before the run (None: created by this run).
    pub version_before: Option<u64>,
    /// Versions committed by this run, in order.
    pub versions_written: Vec<u64>,
}

/// Something about the input that needs attention.
#[derive(Debug, Clone, Serialize)]
pub struct DataProblem {
    /// Machine-readable kind: `corrupt_file`, `sequence_gap`, `out_of_order`,
    /// `expectation_failed`, `expectation_threshold`.
    pub kind: ProblemKind,
    /// Partition, when the problem belongs to one.
    pub partition: Option<String>,
    /// File, when the problem belongs to one.
    pub file: Option<String>,
    /// Record index in the file, when known.
    pub record: Option<u64>,
    /// What happened and what was done about it.
    pub message: String,
    /// Whether this problem makes the run exit with the data-problem code.
    pub blocking: bool,
}

/// Objects that are not capture files.
#[derive(Debug, Clone, Default, Serialize)]
pub struct UnmatchedFiles {
    /// How many.
    pub count: u64,
    /// The first few names.
    pub sample: Vec<String>,
}

impl RunReport {
    /// The outcome implied by the stages' problems.
    pub fn outcome_from_stages(stages: &[StageReport]) -> Outcome {
        if stages.iter().flat_map(|s| &s.problems).any(|p| p.blocking) {
            Outcome::DataProblem
        } else {
            Outcome::Success
        }
    }
}

pub mod lineage;
pub mod metrics;
pub mod plan;
pub mod runs;

/// One action on one table.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MaintenanceAction {
    /// Table name in the pipeline.
    pub table: String,
    /// `retention`, `optimize`, `zorder`, `vacuum` or `checkpoint`.
    pub action: ActionKind,
    /// `done`, `planned` (dry run), or `skipped` (nothing to do).
    pub outcome: ActionOutcome,
    /// Data files the current version references (retention, optimize,
    /// zorder), stored data files (vacuum) or log files (checkpoint), before.
    pub files_before: u64,
    /// Their bytes before.
    pub bytes_before: u64,
    /// Files after (before, for a dry run).
    pub files_after: u64,
    /// Bytes after.
    pub bytes_after: u64,
    /// What was (or would be) done, for humans.
    pub detail: String,
    /// The table version this action committed, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
}

impl MaintenanceAction {
    /// The action with its outcome.
    pub fn ended(mut self, outcome: ActionOutcome) -> MaintenanceAction {
        self.outcome = outcome;
        self
    }
}

/// What an erase did, per table.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ErasureReport {
    /// Subjects requested (after removing repeats).
    pub subjects: u64,
    /// Their subject-key fields.
    pub fields: Vec<String>,
    /// Whether the run purged.
    pub purged: bool,
    /// The raw version erased at (the version process had consumed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_version: Option<u64>,
    /// Per table.
    pub tables: Vec<ErasedTable>,
    /// The erasure log table and the version holding this run's entries.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_version: Option<u64>,
    /// Things a human should know.
    pub warnings: Vec<String>,
}

/// One table's part of an erasure.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ErasedTable {
    /// Table name in the pipeline.
    pub table: String,
    /// Its location (credentials removed).
    pub location: String,
    /// `delete` (rows deleted by lineage or key), `recomputed` (curated rows
    /// dropped by the curate stage), `none` (nothing of the subjects), or
    /// `planned` (dry run).
    pub how: ErasureHow,
    /// Rows of the subjects found (before the delete).
    pub rows_found: u64,
    /// Rows deleted.
    pub rows_deleted: u64,
    /// The version that deleted them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// From when no file of the table holds the deleted rows: now after a
    /// purge, else the delete time plus the table's vacuum retention (the
    /// first `weir maintain` after it removes them). Absent when vacuum is
    /// off for the table or nothing was deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreadable_after: Option<DateTime<Utc>>,
    /// Files deleted by the purge (removed data files, change-data files).
    pub files_purged: u64,
    /// Their bytes.
    pub bytes_purged: u64,
    /// Log files replaced by the purge checkpoint.
    pub log_files_removed: u64,
}
