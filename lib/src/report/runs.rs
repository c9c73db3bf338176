//! The runs table: every job run that changed something appends one row —
//! the audit trail `weir status` reads the last outcome from.
//!
//! Declared as `tables.runs`. The row carries the headline figures as
//! columns and the whole run report as JSON (`report`), so nothing the
//! report says is lost and dashboards can query the usual figures directly.
//! Dry runs, `plan` and `status` change nothing and write no row.

use std::collections::HashMap;
use std::sync::Arc;

use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::DataType;

use super::{Outcome, RunReport};
use crate::capture::decode::utc_micros;
use crate::delta::{self, TableSpec, WriteOptions};
use crate::lake::commit::CommitInfo;
use crate::lake::contract::runs_schema;
use crate::pipeline::LoadedPipeline;
use crate::storage::Location;
use crate::{Error, Result};

/// `success`, `data_problem` or `failed`.
pub fn outcome_name(o: Outcome) -> &'static str {
    match o {
        Outcome::Success => "success",
        Outcome::DataProblem => "data_problem",
        Outcome::Failed => "failed",
    }
}

fn host() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_string()))
        .unwrap_or_else(|| "unknown".into())
}

/// The runs table's location, when the pipeline declares one.
pub fn location(loaded: &LoadedPipeline) -> Result<Option<Location>> {
    loaded.pipeline.tables.runs.as_ref().map(|_| loaded.location("tables.runs.path")).transpose()
}

/// Appends the run's row. `partitions` is the `--partitions` selection of an
/// ingest shard, if any.
pub async fn append(
    loaded: &LoadedPipeline,
    report: &RunReport,
    exit_code: u8,
    partitions: Option<&str>,
) -> Result<()> {
    let Some(location) = location(loaded)? else { return Ok(()) };
    let spec = TableSpec {
        name: format!("{}_runs", loaded.pipeline.name),
        description: loaded.pipeline.tables.runs.as_ref().and_then(|t| t.description.clone()),
        schema: runs_schema(),
        partition_columns: vec![],
    };
    let table = delta::open_or_create(&location, &spec).await?;
    delta::check_owner(&table, &location, &spec)?;
    let sum = |f: fn(&super::StageReport) -> u64| report.stages.iter().map(f).sum::<u64>() as i64;
    let json = serde_json::to_string(report).map_err(|e| Error::Internal(format!("run report: {e}")))?;
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![report.run_id.clone()])),
        Arc::new(StringArray::from(vec![report.pipeline.clone()])),
        Arc::new(StringArray::from(vec![report.job.clone()])),
        Arc::new(TimestampMicrosecondArray::from(vec![report.started_at.timestamp_micros()]).with_timezone("UTC")),
        Arc::new(TimestampMicrosecondArray::from(vec![report.finished_at.timestamp_micros()]).with_timezone("UTC")),
        Arc::new(Int64Array::from(vec![(report.finished_at - report.started_at).num_milliseconds()])),
        Arc::new(StringArray::from(vec![outcome_name(report.outcome)])),
        Arc::new(Int32Array::from(vec![exit_code as i32])),
        Arc::new(StringArray::from(vec![report.error.as_ref().map(|e| format!("{:?}", e.class).to_lowercase())])),
        Arc::new(StringArray::from(vec![report.error.as_ref().map(|e| e.message.clone())])),
        Arc::new(Int64Array::from(vec![sum(|s| s.events_read)])),
        Arc::new(Int64Array::from(vec![sum(|s| s.events_written)])),
        Arc::new(Int64Array::from(vec![sum(|s| s.files_read)])),
        Arc::new(Int64Array::from(vec![sum(|s| s.bytes_read)])),
        Arc::new(StringArray::from(vec![partitions])),
        Arc::new(StringArray::from(vec![host()])),
        Arc::new(StringArray::from(vec![env!("CARGO_PKG_VERSION")])),
        Arc::new(StringArray::from(vec![json])),
    ];
    let batch = RecordBatch::try_new(runs_schema(), columns).map_err(|e| Error::Internal(format!("runs row: {e}")))?;
    let metadata = CommitInfo::new(&report.pipeline, "runs", &report.run_id).into_map();
    delta::write_with_progress(table, vec![batch], WriteOptions { metadata, ..Default::default() }).await?;
    Ok(())
}

/// The last run of each job: (job, run id, finished at, outcome, exit code,
/// error), newest first.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LastRun {
    /// Job name.
    pub job: String,
    /// Run id.
    pub run_id: String,
    /// When it finished (RFC 3339).
    pub finished_at: String,
    /// `success`, `data_problem` or `failed`.
    pub outcome: String,
    /// The process exit code.
    pub exit_code: i32,
    /// The error message, when it failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Reads the last run of every job from the runs table (none when the
/// pipeline has no runs table or it is empty).
pub async fn last_runs(loaded: &LoadedPipeline) -> Result<Vec<LastRun>> {
    let Some(location) = location(loaded)? else { return Ok(vec![]) };
    let Some(table) = delta::open(&location).await? else { return Ok(vec![]) };
    let mut last: HashMap<String, (i64, LastRun)> = HashMap::new();
    for b in delta::read_all(&table).await? {
        let text = |name: &str| -> Result<StringArray> {
            let c = b.column_by_name(name).ok_or_else(|| Error::Internal(format!("runs table lacks {name}")))?;
            Ok(cast(c, &DataType::Utf8).map_err(|e| Error::Internal(e.to_string()))?.as_string::<i32>().clone())
        };
        let (job, run, outcome, error) = (text("job")?, text("run_id")?, text("outcome")?, text("error")?);
        let finished = cast(b.column_by_name("finished_at").unwrap_or(b.column(4)), &utc_micros())
            .map_err(|e| Error::Internal(e.to_string()))?;
        let finished = finished.as_primitive::<deltalake::arrow::datatypes::TimestampMicrosecondType>();
        let code = cast(b.column_by_name("exit_code").unwrap_or(b.column(7)), &DataType::Int32)
            .map_err(|e| Error::Internal(e.to_string()))?;
        let code = code.as_primitive::<deltalake::arrow::datatypes::Int32Type>();
        for i in 0..b.num_rows() {
            let at = finished.value(i);
            let entry = LastRun {
                job: job.value(i).to_string(),
                run_id: run.value(i).to_string(),
                finished_at: chrono::DateTime::from_timestamp_micros(at).map(|t| t.to_rfc3339()).unwrap_or_default(),
                outcome: outcome.value(i).to_string(),
                exit_code: code.value(i),
                error: (!error.is_null(i)).then(|| error.value(i).to_string()),
            };
            match last.get(&entry.job) {
                Some((t, _)) if *t >= at => {}
                _ => {
                    last.insert(entry.job.clone(), (at, entry));
                }
            }
        }
    }
    let mut out: Vec<(i64, LastRun)> = last.into_values().collect();
    out.sort_by_key(|r| std::cmp::Reverse(r.0));
    Ok(out.into_iter().map(|(_, r)| r).collect())
}
