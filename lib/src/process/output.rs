//! The three output tables (processed, quarantine, quality metrics): how
//! they are opened, what a range commits to each with its progress marker,
//! and the check that makes a repair run use the configuration of the run
//! it completes.

use std::collections::HashMap;

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::compute::concat_batches;
use deltalake::kernel::Transaction;
use deltalake::DeltaTable;

use super::background::Background;
use super::metrics::{metrics_batch, RuleFigures};
use super::run::RawRange;
use super::schema::check_processed_table;
use super::{arrow_err, Compiled};
use crate::delta::{self, TableSpec, WriteOptions};
use crate::lake::commit::CommitInfo;
use crate::lake::conform::conform;
use crate::lake::contract::{PROCESSED_PARTITION_COLUMN, QUARANTINE_PARTITION_COLUMN};
use crate::lake::fault::fault_point;
use crate::pipeline::LoadedPipeline;
use crate::report::TableWrite;
use crate::storage::Location;
use crate::{Error, Result};

/// The tables a process run writes.
pub(super) struct Outputs {
    pub(super) processed: Output,
    pub(super) quarantine: Output,
    pub(super) metrics: Option<Output>,
}

impl Outputs {
    /// Opens the output tables, creating them when `create`, and checks that
    /// this run may write them: the processed table's schema, and the
    /// configuration of an interrupted run it would complete.
    pub(super) async fn open(plan: &Compiled, loaded: &LoadedPipeline, app_id: &str, create: bool) -> Result<Outputs> {
        let (ps, qs, ms) = (plan.processed_spec(), plan.quarantine_spec(loaded), plan.metrics_spec(loaded));
        let processed =
            Output::open(&plan.unit.name, plan.tables.processed.clone(), create.then_some(&ps), app_id).await?;
        if let Some(t) = &processed.table {
            check_processed_table(t, &processed.location, &plan.processed_schema)?;
        }
        let quarantine =
            Output::open("quarantine", plan.tables.quarantine.clone(), create.then_some(&qs), app_id).await?;
        let mut metrics = match &plan.tables.metrics {
            Some(l) => Some(Output::open("quality_metrics", l.clone(), create.then_some(&ms), app_id).await?),
            None => None,
        };
        // A metrics table added to a running pipeline starts where the data
        // tables are, rather than making the stage re-read the raw history.
        if let Some(m) = metrics.as_mut() {
            m.progress = metrics_start(m.progress, processed.progress, quarantine.progress);
        }
        let outputs = Outputs { processed, quarantine, metrics };
        check_repair_config(plan, &outputs.all()).await?;
        Ok(outputs)
    }

    /// The tables: processed, quarantine, then metrics when there is one.
    pub(super) fn all(&self) -> Vec<&Output> {
        [Some(&self.processed), Some(&self.quarantine), self.metrics.as_ref()].into_iter().flatten().collect()
    }
}

/// The metrics table's marker as a run takes it: one added to a running
/// pipeline starts where both data tables are.
pub(super) fn metrics_start(metrics: Option<i64>, processed: Option<i64>, quarantine: Option<i64>) -> Option<i64> {
    metrics.or_else(|| processed.zip(quarantine).map(|(a, b)| a.min(b)))
}

/// What one range commits: to each table the rows it lacks (`None`: the
/// table holds this range's output already).
pub(super) struct RangeCommits {
    pub(super) range: RawRange,
    pub(super) quarantine: Option<RecordBatch>,
    pub(super) processed: Option<Vec<RecordBatch>>,
    pub(super) metrics: Option<RecordBatch>,
    /// `keep: latest` found newer copies of stored rows: processed rows are
    /// merged on the dedup key, not appended.
    pub(super) replacing: bool,
    /// The oldest event date a merge must see: every stored row the dedup
    /// keys came from.
    pub(super) merge_from: Option<i32>,
}

/// Starts a range's commits on the writer task, each with the tables'
/// progress marker at `range.to`; call after [`Background::get`].
pub(super) fn start_commits(
    outs: &mut Background<Outputs>,
    plan: &Compiled,
    run_id: &str,
    app_id: &str,
    commits: RangeCommits,
) {
    let RangeCommits { range, quarantine, processed, metrics, replacing, merge_from } = commits;
    let to = range.to;
    let meta = commit_metadata(plan, run_id, &range);
    let progress = vec![Transaction::new_with_last_update(app_id, to as i64, Some(range.now.timestamp_millis()))];
    let options_for = |partition: &str| WriteOptions {
        partition_columns: if partition.is_empty() { vec![] } else { vec![partition.to_string()] },
        progress: progress.clone(),
        metadata: meta.clone(),
        ..Default::default()
    };
    let quarantine_options = options_for(QUARANTINE_PARTITION_COLUMN);
    // Dedup keys are unique and sequence numbers nearly so.
    let no_dictionary =
        plan.dedup.iter().flat_map(|d| d.key.iter().cloned()).chain(["_sequence_number".to_string()]).collect();
    let processed_options =
        WriteOptions { merge_schema: true, no_dictionary, ..options_for(PROCESSED_PARTITION_COLUMN) };
    // A pipeline that gained routes adds the route column to its metrics.
    let metrics_options = WriteOptions { merge_schema: plan.routing.is_some(), ..options_for("") };
    let upsert_key = plan.dedup.as_ref().filter(|_| replacing).map(|d| d.key.clone());
    // In this order, as a run without overlap would: a crash leaves
    // the tables at a known step (see the repair tests).
    outs.start(move |mut o| async move {
        if let Some(rows) = quarantine {
            o.quarantine.write(vec![rows], to, quarantine_options).await?;
        }
        match (processed, upsert_key) {
            (Some(rows), Some(key)) if rows.iter().any(|b| b.num_rows() > 0) => {
                let scope = merge_from.map(|from| (PROCESSED_PARTITION_COLUMN, from));
                let rows = concat_batches(&rows[0].schema(), &rows).map_err(arrow_err("rows to merge"))?;
                o.processed.upsert(rows, to, &key, scope, processed_options).await?;
            }
            (Some(rows), _) => o.processed.write(rows, to, processed_options).await?,
            (None, _) => {}
        }
        if let (Some(batch), Some(m)) = (metrics, o.metrics.as_mut()) {
            m.write(vec![batch], to, metrics_options).await?;
        }
        Ok(o)
    });
}

/// Records the figures of a range a `fail` rule stopped in the metrics
/// table, without a progress marker: the range is not done.
pub(super) async fn record_unpublished(
    metrics: &mut Output,
    plan: &Compiled,
    run_id: &str,
    range: &RawRange,
    rules: &[RuleFigures],
) -> Result<()> {
    let batch = metrics_batch(plan, run_id, range, rules, false)?;
    let progress = metrics.progress;
    metrics
        .write(
            vec![batch],
            range.to,
            WriteOptions {
                metadata: commit_metadata(plan, run_id, range),
                merge_schema: plan.routing.is_some(),
                ..Default::default()
            },
        )
        .await?;
    metrics.progress = progress;
    Ok(())
}

/// One output table: its state when the run began, its progress marker
/// (the last raw version it holds the output of) and the versions this run
/// wrote.
pub(super) struct Output {
    pub(super) name: String,
    pub(super) location: Location,
    /// `None` in a dry run when the table does not exist yet.
    pub(super) table: Option<DeltaTable>,
    version_before: Option<u64>,
    pub(super) progress: Option<i64>,
    written: Vec<u64>,
}

impl Output {
    /// Opens the table at `location`, creating it by `spec` when given.
    async fn open(name: &str, location: Location, spec: Option<&TableSpec>, app_id: &str) -> Result<Output> {
        let table = match spec {
            Some(spec) => {
                let t = delta::open_or_create(&location, spec).await?;
                delta::check_owner(&t, &location, spec)?;
                Some(t)
            }
            None => delta::open(&location).await?,
        };
        let progress = match &table {
            Some(t) => delta::progress(t, app_id).await?,
            None => None,
        };
        Ok(Output {
            name: name.to_string(),
            version_before: table.as_ref().and_then(|t| t.version()),
            location,
            table,
            progress,
            written: vec![],
        })
    }

    /// Whether the table lacks any of the output of raw versions up to `to`.
    pub(super) fn needs(&self, to: u64) -> bool {
        self.progress.is_none_or(|p| p < to as i64)
    }

    /// Appends `batches` (conformed to the table's schema) and the progress
    /// marker of `options` in one commit.
    pub(super) async fn write(&mut self, batches: Vec<RecordBatch>, to: u64, options: WriteOptions) -> Result<()> {
        let table = self.table.take().ok_or_else(|| Error::Internal(format!("{} table not open", self.name)))?;
        let schema = delta::arrow_schema(&table)?;
        let batches = batches
            .into_iter()
            .filter(|b| b.num_rows() > 0)
            .map(|b| conform(&b, schema.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        self.committed(to, delta::append_streamed(table, batches, options)).await
    }

    /// Like [`write`](Self::write), but rows whose key the table holds
    /// replace the stored row (a Delta merge restricted to `scope`, the
    /// partition column and the oldest date the stored keys were read from).
    pub(super) async fn upsert(
        &mut self,
        batch: RecordBatch,
        to: u64,
        key: &[String],
        scope: Option<(&str, i32)>,
        options: WriteOptions,
    ) -> Result<()> {
        let table = self.table.take().ok_or_else(|| Error::Internal(format!("{} table not open", self.name)))?;
        let batch = conform(&batch, delta::arrow_schema(&table)?.as_ref())?;
        self.committed(to, delta::upsert_with_progress(table, batch, key, scope, options)).await
    }

    /// Runs `commit` (a write carrying the marker of raw version `to`) between
    /// the crash tests' fault points, and keeps the table it leaves.
    async fn committed(
        &mut self,
        to: u64,
        commit: impl std::future::Future<Output = Result<DeltaTable>>,
    ) -> Result<()> {
        fault_point("process_before_commit");
        let table = commit.await?;
        fault_point("process_after_commit");
        if let Some(v) = table.version() {
            self.written.push(v);
        }
        self.table = Some(table);
        self.progress = Some(to as i64);
        Ok(())
    }

    /// What the run did to the table, for the run report.
    pub(super) fn report(&self) -> TableWrite {
        TableWrite {
            table: self.name.clone(),
            location: self.location.to_string(),
            version_before: self.version_before,
            versions_written: self.written.clone(),
        }
    }
}

/// Commit metadata of every table's commit for `range`: the run, the raw
/// versions and the configuration fingerprint.
fn commit_metadata(plan: &Compiled, run_id: &str, range: &RawRange) -> HashMap<String, serde_json::Value> {
    CommitInfo::new(&plan.pipeline, "process", run_id)
        .with("raw_versions", serde_json::json!([range.from, range.to]))
        .with(CONFIG_HASH_KEY, plan.config_hash.clone())
        .into_map()
}

/// Commit metadata key of the configuration fingerprint.
const CONFIG_HASH_KEY: &str = "weir.process_config";

/// When the three tables' markers differ, an earlier run was interrupted
/// between its commits, and the repair must recompute that range with the
/// configuration that wrote the table that got furthest: otherwise a row
/// could be quarantined under a rule that no longer exists and also be
/// published (or be in neither table).
async fn check_repair_config(plan: &Compiled, outputs: &[&Output]) -> Result<()> {
    use futures::StreamExt as _;
    let Some(newest) = outputs.iter().filter_map(|o| o.progress).max() else { return Ok(()) };
    if outputs.iter().all(|o| o.progress == Some(newest)) {
        return Ok(());
    }
    for o in outputs.iter().filter(|o| o.progress == Some(newest)) {
        let Some(table) = &o.table else { continue };
        let mut history = table.history(Some(1));
        let Some(Ok(last)) = history.next().await else { continue };
        if let Some(stored) = last.info.get(CONFIG_HASH_KEY).and_then(|v| v.as_str()) {
            if stored != plan.config_hash {
                return Err(Error::RepairConflict {
                    message: format!(
                        "an earlier process run stopped between its commits ({} is at raw version {newest}, {}) and the process section or body schema has changed since (configuration {stored}, now {}); rerun once with the configuration that run used to complete it, then change the pipeline",
                        o.name,
                        outputs
                            .iter()
                            .filter(|x| x.progress != Some(newest))
                            .map(|x| format!("{} at {}", x.name, x.progress.map_or("none".to_string(), |p| p.to_string())))
                            .collect::<Vec<_>>()
                            .join(", "),
                        plan.config_hash
                    ),
                });
            }
        }
    }
    Ok(())
}
