//! The process stage: raw table → processed, quarantine and quality-metrics
//! tables.
//!
//! Per run: read the raw rows added since the version last consumed (the
//! versions' added files, or the change feed for a version that did more
//! than append), parse each body by the pipeline's `.avsc` ([`crate::body`]), check the
//! expectations ([`crate::expectations`]), apply the PII rules
//! ([`crate::pii`]), drop duplicates ([`crate::dedup`]) and append.
//!
//! Exactly once without multi-table transactions: each of the three output
//! tables carries its own application transaction `weir/<pipeline>/process`
//! whose version is the last raw version it holds the output of, committed
//! with its rows. A run starts at the oldest of the three, recomputes that
//! range (the stage is deterministic) and writes to each table only what it
//! lacks; a crash between two commits is repaired by the next run. A range
//! whose output for a table is empty still commits the marker alone.
//!
//! Work is cut into commits of at most `raw_versions_per_commit` raw
//! versions. A `fail` rule stops the run at the first commit holding a
//! failing row; nothing of that range is published (the metrics table still
//! records the failure, without a progress marker).
//!
//! Hazard: dedup against the table only looks back `dedup.lookback_days` of
//! event dates; a re-send older than that is written again.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Date32Array, Float64Array, Int64Array, ListBuilder, RecordBatch,
    RecordBatchOptions, StringArray, StringBuilder, TimestampMicrosecondArray, UInt32Array,
};
use deltalake::arrow::compute::{cast, concat_batches, filter_record_batch, take, take_record_batch};
use deltalake::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef, TimeUnit};
use deltalake::delta_datafusion::DeltaCdfTableProvider;
use deltalake::kernel::Transaction;
use deltalake::DeltaTable;

use crate::body::BodySchema;
use crate::capture::decode::utc_micros;
use crate::dedup::{self, DedupConfig};
use crate::delta::{self, TableSpec, WriteOptions};
use crate::expectations::{self, Action, Expectation};
use crate::lake::commit::CommitInfo;
use crate::lake::conform::{conform, schema_changes};
use crate::lake::contract::{
    self, metrics_schema, quarantine_schema, DEDUP_RULE, PROCESSED_PARTITION_COLUMN, QUARANTINE_PARTITION_COLUMN,
    RAW_PARTITION_COLUMN, SCHEMA_RULE,
};
use crate::lake::fault::fault_point;
use crate::lake::Marker;
use crate::pii::PiiRules;
use crate::pipeline::{LoadedPipeline, ProcessConfig};
use crate::report::{
    DataProblem, ProblemKind, QualityReport, RuleOutcome, RuleVerdict, Stage, StageReport, TableWrite,
};
use crate::storage::Location;
use crate::{Error, Result};

/// Options of one process run.
#[derive(Debug, Clone)]
pub struct ProcessOptions {
    /// Compute and report, write nothing.
    pub dry_run: bool,
    /// Stored in every row written.
    pub run_id: String,
}

/// Everything the stage needs, compiled from the pipeline before any data is
/// read: a broken rule or a missing key stops the run before it starts.
pub struct ProcessPlan {
    /// Pipeline name.
    pub pipeline: String,
    /// The body schema.
    pub body: BodySchema,
    /// The rows the expectations see: body fields (all nullable), `_rescued`
    /// and the lineage columns.
    pub checked_schema: SchemaRef,
    /// Compiled expectations, in declaration order.
    pub expectations: Vec<Expectation>,
    /// PII rules.
    pub pii: PiiRules,
    /// Dedup declaration.
    pub dedup: Option<DedupConfig>,
    /// Schema of the processed table.
    pub processed_schema: SchemaRef,
    /// The schema kept rows are cast to before PII rules: required fields
    /// non-nullable.
    pre_pii_schema: SchemaRef,
    config: ProcessConfig,
    /// Fingerprint of everything that decides the output: the `process:`
    /// section and the body schema. Stored in every commit.
    config_hash: String,
    tables: OutputLocations,
}

#[derive(Debug, Clone)]
struct OutputLocations {
    raw: Location,
    processed: Location,
    quarantine: Location,
    metrics: Option<Location>,
}

impl std::fmt::Debug for ProcessPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessPlan").field("pipeline", &self.pipeline).finish_non_exhaustive()
    }
}

impl ProcessPlan {
    /// Compiles the plan; reads the PII key from the environment.
    pub fn build(loaded: &LoadedPipeline) -> Result<ProcessPlan> {
        let p = &loaded.pipeline;
        let config_error = |path: &str, message: String| Error::InvalidPipeline {
            problems: vec![crate::pipeline::Problem {
                file: loaded.file.clone(),
                line: None,
                path: path.into(),
                message,
            }],
        };
        let process = p.process.clone().ok_or_else(|| {
            config_error("process", "the pipeline has no process: section; add one to run the process stage".into())
        })?;
        let problems = crate::pipeline::check::process(loaded);
        if !problems.is_empty() {
            return Err(Error::InvalidPipeline {
                problems: problems
                    .into_iter()
                    .map(|(path, message)| crate::pipeline::Problem {
                        file: loaded.file.clone(),
                        line: None,
                        path,
                        message,
                    })
                    .collect(),
            });
        }
        let body_config = p.body.as_ref().ok_or_else(|| config_error("body", "missing".into()))?;
        let body = BodySchema::from_file(&loaded.base_dir().join(&body_config.schema))
            .map_err(|e| config_error("body.schema", e.to_string()))?;
        let checked = contract::checked_schema(&body);
        let expectations = process
            .expectations
            .iter()
            .map(|e| expectations::compile(e, &checked))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|m| config_error("process.expectations", m))?;
        let pii = process.pii.build(&body.arrow_schema()).map_err(|e| Error::Secret { message: e.to_string() })?;
        let pre = contract::pre_pii_schema(&body);
        let processed_schema = pii.output_schema(&pre);
        let loc = |t: &Option<crate::pipeline::TableConfig>, name: &str| -> Result<Location> {
            let t = t.as_ref().ok_or_else(|| config_error("tables", format!("tables.{name} is missing")))?;
            Location::parse(&t.path).map_err(|reason| Error::InvalidLocation { location: t.path.clone(), reason })
        };
        let tables = OutputLocations {
            raw: Location::parse(&p.tables.raw.path)
                .map_err(|reason| Error::InvalidLocation { location: p.tables.raw.path.clone(), reason })?,
            processed: loc(&p.tables.processed, "processed")?,
            quarantine: loc(&p.tables.quarantine, "quarantine")?,
            metrics: match &p.tables.quality_metrics {
                None => None,
                Some(_) => Some(loc(&p.tables.quality_metrics, "quality_metrics")?),
            },
        };
        Ok(ProcessPlan {
            pipeline: p.name.clone(),
            body,
            checked_schema: checked,
            expectations,
            pii,
            dedup: process.dedup.clone(),
            processed_schema,
            pre_pii_schema: pre,
            config_hash: config_hash(&process, &body_config.schema, loaded),
            config: process,
            tables,
        })
    }

    fn processed_spec(&self, loaded: &LoadedPipeline) -> TableSpec {
        TableSpec {
            name: format!("{}_processed", self.pipeline),
            description: loaded.pipeline.tables.processed.as_ref().and_then(|t| t.description.clone()),
            schema: self.processed_schema.clone(),
            partition_columns: vec![PROCESSED_PARTITION_COLUMN.to_string()],
        }
    }

    fn quarantine_spec(&self, loaded: &LoadedPipeline) -> TableSpec {
        TableSpec {
            name: format!("{}_quarantine", self.pipeline),
            description: loaded.pipeline.tables.quarantine.as_ref().and_then(|t| t.description.clone()),
            schema: quarantine_schema(),
            partition_columns: vec![QUARANTINE_PARTITION_COLUMN.to_string()],
        }
    }

    fn metrics_spec(&self, loaded: &LoadedPipeline) -> TableSpec {
        TableSpec {
            name: format!("{}_quality_metrics", self.pipeline),
            description: loaded.pipeline.tables.quality_metrics.as_ref().and_then(|t| t.description.clone()),
            schema: metrics_schema(),
            partition_columns: vec![],
        }
    }
}

/// Checks the processed table (when it exists) against the schema the
/// pipeline now produces. Breaking changes are problems for `weir validate`.
pub async fn check_table_schema(loaded: &LoadedPipeline) -> Result<Vec<(String, String)>> {
    let Some(process) = &loaded.pipeline.process else { return Ok(vec![]) };
    let Some(t) = &loaded.pipeline.tables.processed else { return Ok(vec![]) };
    let Some(body_config) = &loaded.pipeline.body else { return Ok(vec![]) };
    let Ok(body) = BodySchema::from_file(&loaded.base_dir().join(&body_config.schema)) else { return Ok(vec![]) };
    let location =
        Location::parse(&t.path).map_err(|reason| Error::InvalidLocation { location: t.path.clone(), reason })?;
    let Some(table) = delta::open(&location).await? else { return Ok(vec![]) };
    let wanted = contract::processed_schema_for_check(&body, &process.pii);
    let (_, breaking) = schema_changes(delta::arrow_schema(&table)?.as_ref(), &wanted);
    Ok(breaking
        .into_iter()
        .map(|m| ("body.schema".to_string(), format!("incompatible with the processed table {location}: {m}")))
        .collect())
}

/// Reads raw rows committed in versions `from..=to`, with normalised types:
/// partition and file as Utf8, body as Binary, `_commit_version` last.
///
/// Raw versions are almost always appends: their inserted rows are the
/// rows of the files they add, read here straight from Parquet with only the
/// columns processing needs (the Capture maps and the other raw columns are
/// never decoded). A range holding any other change (an erase or retention
/// delete, a deletion vector, column mapping) is read from the change feed,
/// whose inserts are what a plain append would have given.
async fn read_raw(raw: &DeltaTable, from: u64, to: u64) -> Result<Vec<RecordBatch>> {
    match appended_files(raw, from, to).await? {
        Some(files) => read_appended(raw, files).await,
        None => read_raw_changes(raw, from, to).await,
    }
}

/// Columns of raw rows as processing reads them.
fn raw_read_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("partition_id", DataType::Utf8, false),
        Field::new("sequence_number", DataType::Int64, false),
        Field::new("enqueued_time", utc_micros(), false),
        Field::new("enqueued_date", DataType::Date32, false),
        Field::new("source_file", DataType::Utf8, false),
        Field::new("body", DataType::Binary, true),
        Field::new("_commit_version", DataType::Int64, false),
    ]))
}

/// The files versions `from..=to` added with their versions, or `None` when
/// a version did anything but append (then the change feed is read).
async fn appended_files(raw: &DeltaTable, from: u64, to: u64) -> Result<Option<Vec<(u64, deltalake::kernel::Add)>>> {
    use deltalake::kernel::Action;
    let mapped = raw
        .snapshot()
        .map_err(|e| Error::delta(raw.table_url(), e))?
        .metadata()
        .configuration()
        .get("delta.columnMapping.mode")
        .is_some_and(|m| !m.eq_ignore_ascii_case("none"));
    if mapped {
        return Ok(None);
    }
    let log = raw.log_store();
    let mut files = Vec::new();
    for version in from..=to {
        let bytes = log
            .read_commit_entry(version as _)
            .await
            .map_err(|e| Error::delta(raw.table_url(), e))?
            .ok_or_else(|| Error::Internal(format!("raw version {version} is missing from the log")))?;
        for action in
            deltalake::logstore::get_actions(version as _, &bytes).map_err(|e| Error::delta(raw.table_url(), e))?
        {
            match action {
                Action::Add(add) if add.data_change => {
                    if add.deletion_vector.is_some() {
                        return Ok(None);
                    }
                    files.push((version, add));
                }
                Action::Remove(r) if r.data_change => return Ok(None),
                Action::Cdc(_) => return Ok(None),
                Action::Metadata(m) if m.configuration().contains_key("delta.columnMapping.mode") => return Ok(None),
                _ => {}
            }
        }
    }
    Ok(Some(files))
}

/// Reads the processing columns of appended raw files, in log order.
async fn read_appended(raw: &DeltaTable, files: Vec<(u64, deltalake::kernel::Add)>) -> Result<Vec<RecordBatch>> {
    use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use deltalake::parquet::arrow::ProjectionMask;
    use futures::{StreamExt as _, TryStreamExt as _};
    use object_store::ObjectStoreExt as _;
    let schema = raw_read_schema();
    let store = raw.log_store().object_store(None);
    let url = raw.table_url().clone();
    let read_one = |(version, add): (u64, deltalake::kernel::Add)| {
        let (store, schema, url) = (store.clone(), schema.clone(), url.clone());
        async move {
            let fail = |e: &dyn std::fmt::Display| {
                Error::Internal(format!(
                    "reading raw file {} of {}: {e}",
                    add.path,
                    crate::storage::redact(url.as_str())
                ))
            };
            let path = object_store::path::Path::parse(&add.path)
                .unwrap_or_else(|_| object_store::path::Path::from(add.path.as_str()));
            // Whole files: raw files are bounded by the writer's rotation, and
            // one request each is cheaper than one per column chunk on Azure.
            let bytes = store.get(&path).await.map_err(|e| fail(&e))?.bytes().await.map_err(|e| fail(&e))?;
            let decode = move || -> std::result::Result<Vec<RecordBatch>, String> {
                let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| e.to_string())?;
                let wanted = ["partition_id", "sequence_number", "enqueued_time", "source_file", "body"];
                let roots = wanted
                    .iter()
                    .map(|n| builder.schema().index_of(n).map_err(|_| format!("no column {n}")))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
                let reader = builder.with_projection(mask).with_batch_size(8192).build().map_err(|e| e.to_string())?;
                reader
                    .map(|b| b.and_then(shrunk))
                    .collect::<std::result::Result<Vec<_>, _>>()
                    .map_err(|e| e.to_string())
            };
            let batches = tokio::task::spawn_blocking(decode).await.map_err(|e| fail(&e))?.map_err(|e| fail(&e))?;
            let date = add
                .partition_values
                .get(RAW_PARTITION_COLUMN)
                .and_then(|v| v.as_deref())
                .and_then(|v| chrono::NaiveDate::parse_from_str(v, "%Y-%m-%d").ok())
                .map(|d| (d - chrono::NaiveDate::default()).num_days() as i32)
                .ok_or_else(|| fail(&format!("no {} partition value", RAW_PARTITION_COLUMN)))?;
            batches
                .into_iter()
                .map(|b| {
                    let n = b.num_rows();
                    let column = |name: &str, t: &DataType| -> Result<ArrayRef> {
                        let c = b.column_by_name(name).ok_or_else(|| fail(&format!("no column {name}")))?;
                        cast(c, t).map_err(|e| fail(&e))
                    };
                    let columns = vec![
                        column("partition_id", &DataType::Utf8)?,
                        column("sequence_number", &DataType::Int64)?,
                        column("enqueued_time", &utc_micros())?,
                        Arc::new(Date32Array::from(vec![date; n])) as ArrayRef,
                        column("source_file", &DataType::Utf8)?,
                        column("body", &DataType::Binary)?,
                        Arc::new(Int64Array::from(vec![version as i64; n])) as ArrayRef,
                    ];
                    RecordBatch::try_new(schema.clone(), columns).map_err(|e| fail(&e))
                })
                .collect::<Result<Vec<_>>>()
        }
    };
    // Two files at a time: latency hides behind the other's decoding.
    let parts: Vec<Vec<RecordBatch>> = futures::stream::iter(files).map(read_one).buffered(2).try_collect().await?;
    Ok(parts.into_iter().flatten().collect())
}

/// `batch` with its buffers cut to their length. The Parquet reader grows
/// a batch's bodies by doubling, so they hold up to twice their size; a
/// range's raw rows are held while they are checked (and the next range's
/// meanwhile), and the slack measured ~0.2 GB of a 10M run's peak.
fn shrunk(batch: RecordBatch) -> std::result::Result<RecordBatch, deltalake::arrow::error::ArrowError> {
    let (schema, mut columns, rows) = batch.into_parts();
    for column in &mut columns {
        // Only a column no one else holds can give memory back.
        if let Some(c) = Arc::get_mut(column) {
            c.shrink_to_fit();
        }
    }
    RecordBatch::try_new_with_options(schema, columns, &RecordBatchOptions::new().with_row_count(Some(rows)))
}

/// [`read_raw`] through the change feed (any kind of version).
async fn read_raw_changes(raw: &DeltaTable, from: u64, to: u64) -> Result<Vec<RecordBatch>> {
    // One partition: the read runs beside the previous range's checks (see
    // `process`), and DataFusion's repartitioning only copied rows here.
    let ctx = deltalake::datafusion::prelude::SessionContext::new_with_config(
        expectations::session().copied_config().with_target_partitions(1),
    );
    let builder = raw.clone().scan_cdf().with_starting_version(from as _).with_ending_version(to as _);
    let provider = DeltaCdfTableProvider::try_new(builder).map_err(|e| Error::delta(raw.table_url(), e))?;
    let df_err = |e: deltalake::datafusion::error::DataFusionError| {
        Error::Internal(format!(
            "reading the change feed of {}: {}",
            crate::storage::redact(raw.table_url().as_str()),
            e
        ))
    };
    ctx.register_table("raw_changes", Arc::new(provider)).map_err(df_err)?;
    let batches = ctx
        .sql(
            "SELECT partition_id, sequence_number, enqueued_time, enqueued_date, source_file, body, _commit_version \
             FROM raw_changes WHERE _change_type = 'insert'",
        )
        .await
        .map_err(df_err)?
        .collect()
        .await
        .map_err(df_err)?;
    let schema = raw_read_schema();
    let mut out = Vec::with_capacity(batches.len());
    for b in batches {
        let columns = schema
            .fields()
            .iter()
            .zip(b.columns())
            .map(|(f, c)| cast(c, f.data_type()))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Internal(format!("raw change feed: {e}")))?;
        out.push(
            RecordBatch::try_new(schema.clone(), columns)
                .map_err(|e| Error::Internal(format!("raw change feed: {e}")))?,
        );
    }
    Ok(out)
}

/// Per-rule figures of one chunk.
#[derive(Debug, Clone)]
struct RuleFigures {
    rule: String,
    expression: Option<String>,
    action: &'static str,
    checked: u64,
    failed: u64,
    max_failure_rate: Option<f64>,
    outcome: RuleVerdict,
}

/// What one chunk of raw rows turns into, before dedup against the table.
struct Evaluated {
    /// Kept rows with the processed schema (PII applied), one batch per raw
    /// batch (never joined: the writer takes them as they are), with their
    /// raw commit versions alongside.
    kept: Vec<RecordBatch>,
    kept_versions: Vec<i64>,
    /// Quarantine rows, with their raw commit versions alongside.
    quarantine: RecordBatch,
    quarantine_versions: Vec<i64>,
    dropped: u64,
    rules: Vec<RuleFigures>,
    /// `fail` rules that fired: the run publishes nothing of this chunk.
    failures: Vec<DataProblem>,
    /// Threshold warnings.
    warnings: Vec<DataProblem>,
}

fn arrow_err(context: &str) -> impl Fn(deltalake::arrow::error::ArrowError) -> Error + '_ {
    move |e| Error::Internal(format!("{context}: {e}"))
}

/// Parses, checks and transforms one chunk of raw rows. Pure: the same rows
/// give the same result, which is what makes repair runs exact.
///
/// The batches are shared out in runs of about equal rows, one per core,
/// and each batch is parsed, checked, routed and protected on its own (the
/// raw rows are never copied into one batch); rule figures and outcomes
/// are then taken over the whole chunk, so they depend neither on the
/// number of cores nor on batch sizes.
fn evaluate(plan: &ProcessPlan, raw: Vec<RecordBatch>, run_id: &str, now: DateTime<Utc>) -> Result<Evaluated> {
    let n: usize = raw.iter().map(RecordBatch::num_rows).sum();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let share = n.div_ceil(threads.max(1)).max(1);
    let mut runs: Vec<Vec<RecordBatch>> = vec![Vec::new()];
    let mut rows = 0;
    for b in raw {
        rows += b.num_rows();
        runs.last_mut().expect("never empty").push(b);
        if rows >= share {
            runs.push(Vec::new());
            rows = 0;
        }
    }
    runs.retain(|r| !r.is_empty());
    // Each raw batch is dropped once checked: the bodies are most of a
    // range's memory.
    let each = |run: Vec<RecordBatch>| {
        run.into_iter().map(|b| evaluate_slice(plan, &b, run_id, now)).collect::<Result<Vec<_>>>()
    };
    let parts: Vec<SliceEval> = match runs.len() {
        0 => vec![evaluate_slice(plan, &RecordBatch::new_empty(raw_read_schema()), run_id, now)?],
        1 => each(runs.pop().expect("one run"))?,
        _ => std::thread::scope(|scope| {
            let handles: Vec<_> = runs.into_iter().map(|run| scope.spawn(move || each(run))).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(Error::Internal("a row-check thread panicked".into()))))
                .collect::<Result<Vec<_>>>()
        })?
        .into_iter()
        .flatten()
        .collect(),
    };

    let parsed_ok: usize = parts.iter().map(|p| p.parsed_ok).sum();
    let mut rules = vec![RuleFigures {
        rule: SCHEMA_RULE.to_string(),
        expression: None,
        action: Action::Quarantine.as_str(),
        checked: n as u64,
        failed: (n - parsed_ok) as u64,
        max_failure_rate: None,
        outcome: if parsed_ok == n { RuleVerdict::Passed } else { RuleVerdict::Quarantined },
    }];
    let mut failures = Vec::new();
    let mut warnings = Vec::new();
    for (r, e) in plan.expectations.iter().enumerate() {
        let failed: usize = parts.iter().map(|p| p.rule_failed[r]).sum();
        let samples: Vec<&str> =
            parts.iter().flat_map(|p| p.rule_samples[r].iter().map(String::as_str)).take(SAMPLES).collect();
        let rate = if parsed_ok == 0 { 0.0 } else { failed as f64 / parsed_ok as f64 };
        let exceeded = e.max_failure_rate.is_some_and(|max| rate > max);
        let row_level = e.max_failure_rate.is_none();
        let outcome = match (e.action, failed == 0) {
            (_, true) => RuleVerdict::Passed,
            (Action::Fail, false) if row_level || exceeded => RuleVerdict::Failed,
            (Action::Fail | Action::Warn, false) if exceeded => RuleVerdict::Warned,
            (Action::Fail | Action::Warn, false) => RuleVerdict::Kept,
            (Action::Drop, false) if exceeded => RuleVerdict::Failed,
            (Action::Drop, false) => RuleVerdict::Dropped,
            (Action::Quarantine, false) if exceeded => RuleVerdict::Failed,
            (Action::Quarantine, false) => RuleVerdict::Quarantined,
        };
        let summary = format!(
            "rule {:?} ({}): {} of {} rows failed ({:.2}%{}); sample: {}",
            e.name,
            e.action.as_str(),
            failed,
            parsed_ok,
            rate * 100.0,
            e.max_failure_rate.map(|m| format!(", allowed {:.2}%", m * 100.0)).unwrap_or_default(),
            if samples.is_empty() { "none".to_string() } else { samples.join(", ") }
        );
        if outcome == RuleVerdict::Failed {
            failures.push(problem(ProblemKind::ExpectationFailed, summary, true));
        } else if outcome == RuleVerdict::Warned {
            warnings.push(problem(ProblemKind::ExpectationThreshold, summary, false));
        }
        rules.push(RuleFigures {
            rule: e.name.clone(),
            expression: Some(e.sql.clone()),
            action: e.action.as_str(),
            checked: parsed_ok as u64,
            failed: failed as u64,
            max_failure_rate: e.max_failure_rate,
            outcome,
        });
    }

    let join = |batches: Vec<&RecordBatch>, schema: SchemaRef, what: &str| -> Result<RecordBatch> {
        match batches.as_slice() {
            [one] => Ok((*one).clone()),
            _ => concat_batches(&schema, batches).map_err(arrow_err(what)),
        }
    };
    let quarantine = join(parts.iter().map(|p| &p.quarantine).collect(), quarantine_schema(), "quarantine rows")?;
    Ok(Evaluated {
        kept_versions: parts.iter().flat_map(|p| p.kept_versions.iter().copied()).collect(),
        kept: parts.iter().map(|p| p.kept.clone()).collect(),
        quarantine,
        quarantine_versions: parts.iter().flat_map(|p| p.quarantine_versions.iter().copied()).collect(),
        dropped: parts.iter().map(|p| p.dropped).sum(),
        rules,
        failures,
        warnings,
    })
}

/// Failing rows named per rule in messages.
const SAMPLES: usize = 5;

/// What one slice of a chunk turns into; [`evaluate`] joins the slices.
struct SliceEval {
    parsed_ok: usize,
    /// Per expectation: rows that failed it, and up to [`SAMPLES`] of them.
    rule_failed: Vec<usize>,
    rule_samples: Vec<Vec<String>>,
    kept: RecordBatch,
    kept_versions: Vec<i64>,
    quarantine: RecordBatch,
    quarantine_versions: Vec<i64>,
    dropped: u64,
}

fn evaluate_slice(plan: &ProcessPlan, raw: &RecordBatch, run_id: &str, now: DateTime<Utc>) -> Result<SliceEval> {
    let n = raw.num_rows();
    let col = |name: &str| {
        raw.column_by_name(name).cloned().ok_or_else(|| Error::Internal(format!("raw column {name} missing")))
    };
    let body_col = col("body")?;
    let parsed = plan.body.decode(body_col.as_ref()).map_err(|e| Error::Internal(e.to_string()))?;
    let mut schema_reason: Vec<Option<String>> = vec![None; n];
    for (row, reason) in parsed.failures {
        schema_reason[row] = Some(reason);
    }

    // The rows the rules see: parsed body, `_rescued`, lineage.
    let mut columns: Vec<ArrayRef> = parsed.batch.columns().to_vec();
    for name in ["partition_id", "sequence_number", "enqueued_time", "source_file"] {
        columns.push(col(name)?);
    }
    let checked = RecordBatch::try_new(plan.checked_schema.clone(), columns).map_err(arrow_err("rows to check"))?;

    let parsed_ok = n - schema_reason.iter().filter(|r| r.is_some()).count();
    let mut failed_rules: Vec<Vec<usize>> = vec![Vec::new(); n];
    let keys = sample_key_columns(plan, &checked);
    let mut rule_failed = Vec::with_capacity(plan.expectations.len());
    let mut rule_samples = Vec::with_capacity(plan.expectations.len());
    for (r, e) in plan.expectations.iter().enumerate() {
        let pass = e.evaluate(&checked).map_err(|message| Error::RuleError { rule: e.name.clone(), message })?;
        let mut failing = Vec::new();
        for (i, ok) in pass.iter().enumerate() {
            if schema_reason[i].is_none() && ok != Some(true) {
                failed_rules[i].push(r);
                failing.push(i);
            }
        }
        rule_failed.push(failing.len());
        rule_samples.push(sample_keys(&keys, &failing));
    }

    // Route every row: quarantine wins over drop (keep the evidence).
    let mut keep = Vec::new();
    let mut quarantine = Vec::new();
    let mut dropped = 0u64;
    for i in 0..n {
        let actions = failed_rules[i].iter().map(|&r| plan.expectations[r].action);
        let mut q = schema_reason[i].is_some();
        let mut d = false;
        for a in actions {
            q |= a == Action::Quarantine;
            d |= a == Action::Drop;
        }
        if q {
            quarantine.push(i);
        } else if d {
            dropped += 1;
        } else {
            keep.push(i);
        }
    }

    let versions = col("_commit_version")?;
    let versions = versions.as_primitive::<Int64Type>();
    Ok(SliceEval {
        parsed_ok,
        rule_failed,
        rule_samples,
        quarantine_versions: quarantine.iter().map(|&i| versions.value(i)).collect(),
        kept_versions: keep.iter().map(|&i| versions.value(i)).collect(),
        quarantine: quarantine_rows(plan, raw, &quarantine, &schema_reason, &failed_rules, run_id, now)?,
        kept: kept_rows(plan, &checked, &keep, run_id, now)?,
        dropped,
    })
}

fn problem(kind: ProblemKind, message: String, blocking: bool) -> DataProblem {
    DataProblem { kind, partition: None, file: None, record: None, message, blocking }
}

/// Columns that identify a row to a human: the dedup key when declared.
fn sample_key_columns(plan: &ProcessPlan, checked: &RecordBatch) -> Vec<(String, ArrayRef)> {
    let mut names: Vec<String> = plan.dedup.as_ref().map(|d| d.key.clone()).unwrap_or_default();
    // Samples are taken before the PII rules: never show a protected column.
    names.retain(|n| checked.column_by_name(n).is_some() && !plan.config.pii.rules.iter().any(|r| &r.column == n));
    names.extend(["_partition_id".to_string(), "_sequence_number".to_string()]);
    names
        .into_iter()
        .filter_map(|n| {
            let c = checked.column_by_name(&n)?;
            cast(c, &DataType::Utf8).ok().map(|c| (n, c))
        })
        .collect()
}

/// Up to [`SAMPLES`] of `rows`, each named by its key columns.
fn sample_keys(keys: &[(String, ArrayRef)], rows: &[usize]) -> Vec<String> {
    rows.iter()
        .take(SAMPLES)
        .map(|&i| {
            keys.iter()
                .map(|(name, c)| {
                    let s = c.as_string::<i32>();
                    format!("{name}={}", if s.is_null(i) { "null" } else { s.value(i) })
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn quarantine_rows(
    plan: &ProcessPlan,
    raw: &RecordBatch,
    rows: &[usize],
    schema_reason: &[Option<String>],
    failed_rules: &[Vec<usize>],
    run_id: &str,
    now: DateTime<Utc>,
) -> Result<RecordBatch> {
    let idx = UInt32Array::from(rows.iter().map(|&i| i as u32).collect::<Vec<_>>());
    let pick = |name: &str| -> Result<ArrayRef> {
        let c = raw.column_by_name(name).ok_or_else(|| Error::Internal(format!("raw column {name} missing")))?;
        take(c, &idx, None).map_err(arrow_err("quarantine rows"))
    };
    let mut names =
        ListBuilder::new(StringBuilder::new()).with_field(Arc::new(Field::new("element", DataType::Utf8, true)));
    let mut reasons = StringBuilder::new();
    for &i in rows {
        let mut text = Vec::new();
        if let Some(reason) = &schema_reason[i] {
            names.values().append_value(SCHEMA_RULE);
            text.push(format!("{SCHEMA_RULE}: {reason}"));
        }
        for &r in &failed_rules[i] {
            let e = &plan.expectations[r];
            names.values().append_value(&e.name);
            text.push(format!("{} ({}): not true: {}", e.name, e.action.as_str(), e.sql));
        }
        names.append(true);
        reasons.append_value(text.join("; "));
    }
    let k = rows.len();
    RecordBatch::try_new(
        quarantine_schema(),
        vec![
            pick("partition_id")?,
            pick("sequence_number")?,
            pick("enqueued_time")?,
            pick("source_file")?,
            pick("_commit_version")?,
            pick("body")?,
            Arc::new(names.finish()),
            Arc::new(reasons.finish()),
            Arc::new(StringArray::from(vec![run_id; k])),
            Arc::new(TimestampMicrosecondArray::from(vec![now.timestamp_micros(); k]).with_timezone("UTC")),
            pick("enqueued_date")?,
        ],
    )
    .map_err(arrow_err("quarantine rows"))
}

fn kept_rows(
    plan: &ProcessPlan,
    checked: &RecordBatch,
    rows: &[usize],
    run_id: &str,
    now: DateTime<Utc>,
) -> Result<RecordBatch> {
    let idx = UInt32Array::from(rows.iter().map(|&i| i as u32).collect::<Vec<_>>());
    let picked = take_record_batch(checked, &idx).map_err(arrow_err("kept rows"))?;
    let k = picked.num_rows();
    let event_time = picked
        .column_by_name(&plan.config.event_time)
        .ok_or_else(|| Error::Internal("event_time column missing".into()))?;
    let event_time = cast(event_time, &DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())))
        .map_err(arrow_err("event time"))?;
    let event_time = event_time.as_primitive::<deltalake::arrow::datatypes::TimestampMicrosecondType>();
    let enqueued = picked.column_by_name("_enqueued_time").ok_or_else(|| Error::Internal("lineage missing".into()))?;
    let enqueued = enqueued.as_primitive::<deltalake::arrow::datatypes::TimestampMicrosecondType>();
    const DAY_MICROS: i64 = 86_400_000_000;
    let dates: Date32Array = (0..k)
        .map(|i| {
            let t = if event_time.is_null(i) { enqueued.value(i) } else { event_time.value(i) };
            Some(t.div_euclid(DAY_MICROS) as i32)
        })
        .collect();
    let mut columns = picked.columns().to_vec();
    columns.push(Arc::new(StringArray::from(vec![run_id; k])));
    columns.push(Arc::new(TimestampMicrosecondArray::from(vec![now.timestamp_micros(); k]).with_timezone("UTC")));
    columns.push(Arc::new(dates));
    // Casting to the declared schema makes required fields NOT NULL; rows
    // missing one were quarantined by the parser already.
    let typed = RecordBatch::try_new(plan.pre_pii_schema.clone(), columns).map_err(arrow_err("processed rows"))?;
    plan.pii.apply(&typed).map_err(|e| Error::Internal(format!("PII rules: {e}")))
}

fn rows_after(batch: &RecordBatch, versions: &[i64], after: Option<i64>) -> Result<RecordBatch> {
    match after {
        None => Ok(batch.clone()),
        Some(p) => {
            let mask: BooleanArray = versions.iter().map(|v| Some(*v > p)).collect();
            filter_record_batch(batch, &mask).map_err(arrow_err("rows to write"))
        }
    }
}

/// Reads the stored keys and lineage within the dedup lookback.
async fn stored_keys(table: &DeltaTable, dedup: &DedupConfig, oldest: i32) -> Result<Vec<RecordBatch>> {
    let ctx = expectations::session();
    let df_err = |e: deltalake::datafusion::error::DataFusionError| {
        Error::Internal(format!("reading keys of {}: {e}", crate::storage::redact(table.table_url().as_str())))
    };
    table.update_datafusion_session(&ctx.state()).map_err(|e| Error::delta(table.table_url(), e))?;
    let provider = table.table_provider().await.map_err(df_err)?;
    ctx.register_table("processed", provider).map_err(df_err)?;
    let cols: Vec<String> = dedup.stored_columns().iter().map(|k| format!("\"{}\"", k.replace('"', "\"\""))).collect();
    let from =
        chrono::NaiveDate::from_num_days_from_ce_opt(oldest - dedup.lookback_days as i32 + 719_163).unwrap_or_default();
    let sql =
        format!("SELECT {} FROM processed WHERE \"{PROCESSED_PARTITION_COLUMN}\" >= DATE '{from}'", cols.join(", "));
    let batches = ctx.sql(&sql).await.map_err(df_err)?.collect().await.map_err(df_err)?;
    let mut out = Vec::with_capacity(batches.len());
    for b in batches {
        // Scans return view types; the key converter wants the batch's types.
        let columns = b
            .columns()
            .iter()
            .map(|c| match c.data_type() {
                DataType::Utf8View => cast(c, &DataType::Utf8),
                DataType::BinaryView => cast(c, &DataType::Binary),
                _ => Ok(c.clone()),
            })
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(arrow_err("stored keys"))?;
        let fields: Vec<Field> = b
            .schema()
            .fields()
            .iter()
            .zip(&columns)
            .map(|(f, c)| Field::new(f.name(), c.data_type().clone(), true))
            .collect();
        out.push(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(arrow_err("stored keys"))?);
    }
    Ok(out)
}

struct Output {
    name: &'static str,
    location: Location,
    table: Option<DeltaTable>,
    version_before: Option<u64>,
    progress: Option<i64>,
    written: Vec<u64>,
}

impl Output {
    async fn open(name: &'static str, location: Location, spec: Option<&TableSpec>, app_id: &str) -> Result<Output> {
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
            name,
            version_before: table.as_ref().and_then(|t| t.version()),
            location,
            table,
            progress,
            written: vec![],
        })
    }

    fn needs(&self, to: u64) -> bool {
        self.progress.is_none_or(|p| p < to as i64)
    }

    async fn write(&mut self, batches: Vec<RecordBatch>, to: u64, options: WriteOptions) -> Result<()> {
        let table = self.table.take().ok_or_else(|| Error::Internal(format!("{} table not open", self.name)))?;
        let schema = delta::arrow_schema(&table)?;
        let batches = batches
            .into_iter()
            .filter(|b| b.num_rows() > 0)
            .map(|b| conform(&b, schema.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        fault_point("process_before_commit");
        let table = delta::append_streamed(table, batches, options).await?;
        fault_point("process_after_commit");
        if let Some(v) = table.version() {
            self.written.push(v);
        }
        self.table = Some(table);
        self.progress = Some(to as i64);
        Ok(())
    }

    /// Like [`write`](Self::write), but rows whose key the table holds
    /// replace the stored row (a Delta merge restricted to `scope`, the
    /// partition column and the oldest date the stored keys were read from).
    async fn upsert(
        &mut self,
        batch: RecordBatch,
        to: u64,
        key: &[String],
        scope: Option<(&str, i32)>,
        options: WriteOptions,
    ) -> Result<()> {
        let table = self.table.take().ok_or_else(|| Error::Internal(format!("{} table not open", self.name)))?;
        let batch = conform(&batch, delta::arrow_schema(&table)?.as_ref())?;
        fault_point("process_before_commit");
        let table = delta::upsert_with_progress(table, batch, key, scope, options).await?;
        fault_point("process_after_commit");
        if let Some(v) = table.version() {
            self.written.push(v);
        }
        self.table = Some(table);
        self.progress = Some(to as i64);
        Ok(())
    }

    fn report(&self) -> TableWrite {
        TableWrite {
            table: self.name.to_string(),
            location: self.location.to_string(),
            version_before: self.version_before,
            versions_written: self.written.clone(),
        }
    }
}

fn metrics_batch(
    plan: &ProcessPlan,
    run_id: &str,
    from: u64,
    to: u64,
    rules: &[RuleFigures],
    published: bool,
    now: DateTime<Utc>,
) -> Result<RecordBatch> {
    let k = rules.len();
    RecordBatch::try_new(
        metrics_schema(),
        vec![
            Arc::new(StringArray::from(vec![run_id; k])),
            Arc::new(StringArray::from(vec![plan.pipeline.as_str(); k])),
            Arc::new(StringArray::from(vec!["process"; k])),
            Arc::new(Int64Array::from(vec![from as i64; k])),
            Arc::new(Int64Array::from(vec![to as i64; k])),
            Arc::new(StringArray::from(rules.iter().map(|r| r.rule.as_str()).collect::<Vec<_>>())),
            Arc::new(StringArray::from(rules.iter().map(|r| r.expression.as_deref()).collect::<Vec<_>>())),
            Arc::new(StringArray::from(rules.iter().map(|r| r.action).collect::<Vec<_>>())),
            Arc::new(Int64Array::from(rules.iter().map(|r| r.checked as i64).collect::<Vec<_>>())),
            Arc::new(Int64Array::from(rules.iter().map(|r| r.failed as i64).collect::<Vec<_>>())),
            Arc::new(Float64Array::from(
                rules.iter().map(|r| (r.checked > 0).then(|| r.failed as f64 / r.checked as f64)).collect::<Vec<_>>(),
            )),
            Arc::new(Float64Array::from(rules.iter().map(|r| r.max_failure_rate).collect::<Vec<_>>())),
            Arc::new(StringArray::from(rules.iter().map(|r| r.outcome.as_str()).collect::<Vec<_>>())),
            Arc::new(BooleanArray::from(vec![published; k])),
            Arc::new(TimestampMicrosecondArray::from(vec![now.timestamp_micros(); k]).with_timezone("UTC")),
        ],
    )
    .map_err(arrow_err("metrics rows"))
}

fn commit_metadata(plan: &ProcessPlan, run_id: &str, from: u64, to: u64) -> HashMap<String, serde_json::Value> {
    CommitInfo::new(&plan.pipeline, "process", run_id)
        .with("raw_versions", serde_json::json!([from, to]))
        .with(CONFIG_HASH_KEY, plan.config_hash.clone())
        .into_map()
}

const CONFIG_HASH_KEY: &str = "weir.process_config";

fn config_hash(process: &ProcessConfig, schema: &std::path::Path, loaded: &LoadedPipeline) -> String {
    use sha2::Digest as _;
    let mut h = sha2::Sha256::new();
    h.update(serde_json::to_vec(process).unwrap_or_default());
    h.update(std::fs::read(loaded.base_dir().join(schema)).unwrap_or_default());
    h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// When the three tables' markers differ, an earlier run was interrupted
/// between its commits, and the repair must recompute that range with the
/// configuration that wrote the table that got furthest: otherwise a row
/// could be quarantined under a rule that no longer exists and also be
/// published (or be in neither table).
async fn check_repair_config(plan: &ProcessPlan, outputs: &[&Output]) -> Result<()> {
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

/// Runs the process stage.
pub async fn process(loaded: &LoadedPipeline, options: &ProcessOptions) -> Result<StageReport> {
    let started = Instant::now();
    let plan = ProcessPlan::build(loaded)?;
    let mut report = StageReport { stage: Stage::Process, ..Default::default() };
    let mut quality = QualityReport::default();
    let Some(raw) = delta::open(&plan.tables.raw).await? else {
        tracing::info!(table = %plan.tables.raw, "the raw table does not exist yet: nothing to process");
        report.duration_ms = started.elapsed().as_millis() as u64;
        return Ok(report);
    };
    let latest = raw.version().unwrap_or(0);
    let app_id = Marker::Process { pipeline: &plan.pipeline }.app_id();
    let create = !options.dry_run;
    let (ps, qs, ms) = (plan.processed_spec(loaded), plan.quarantine_spec(loaded), plan.metrics_spec(loaded));
    let processed = Output::open("processed", plan.tables.processed.clone(), create.then_some(&ps), &app_id).await?;
    if let Some(t) = &processed.table {
        let (added, breaking) = schema_changes(delta::arrow_schema(t)?.as_ref(), &plan.processed_schema);
        if !breaking.is_empty() {
            return Err(Error::SchemaChange { table: processed.location.to_string(), changes: breaking });
        }
        if !added.is_empty() {
            tracing::info!(columns = ?added, "the body schema gained optional fields: adding them to the processed table");
        }
    }
    let quarantine = Output::open("quarantine", plan.tables.quarantine.clone(), create.then_some(&qs), &app_id).await?;
    let mut metrics = match &plan.tables.metrics {
        Some(l) => Some(Output::open("quality_metrics", l.clone(), create.then_some(&ms), &app_id).await?),
        None => None,
    };

    // A metrics table added to a running pipeline starts where the data
    // tables are, rather than making the stage re-read the raw history.
    if let Some(m) = metrics.as_mut() {
        if m.progress.is_none() {
            m.progress = processed.progress.zip(quarantine.progress).map(|(a, b)| a.min(b));
        }
    }
    let outputs: Vec<&Output> = [Some(&processed), Some(&quarantine), metrics.as_ref()].into_iter().flatten().collect();
    check_repair_config(&plan, &outputs).await?;
    let markers: Vec<i64> = [Some(&processed), Some(&quarantine), metrics.as_ref()]
        .into_iter()
        .flatten()
        .map(|o| o.progress.unwrap_or(-1))
        .collect();
    let oldest_progress = markers.iter().copied().min().unwrap_or(-1);
    let mut from = (oldest_progress + 1) as u64;
    let mut key_cache: Option<(i32, dedup::StoredIndex)> = None;
    let step = plan.config.raw_versions_per_commit;
    // A range never crosses a table's marker: the range an interrupted run
    // committed to one table is recomputed exactly for the others, even
    // when the raw table has grown since.
    let range_end = |from: u64| {
        markers.iter().filter(|&&m| m >= from as i64).map(|&m| m as u64).fold((from + step - 1).min(latest), u64::min)
    };
    // The previous range's writes land while this range is read and
    // checked (see `Background`). The next range is not read ahead: with
    // both cores busy it gained nothing, and held a range of raw rows
    // (~0.1 GB at 1M events and 10M).
    let mut outs = Background::new(Outputs { processed, quarantine, metrics });
    // A failing range must not leave a write in flight: it would land after
    // the run has reported its error.
    let looped: Result<()> = async {
        while from <= latest {
            let to = range_end(from);
            let now = Utc::now();
            let rows = read_raw(&raw, from, to).await?;
            let ev_rows: usize = rows.iter().map(RecordBatch::num_rows).sum();
            report.events_read += ev_rows as u64;
            let ev = evaluate(&plan, rows, &options.run_id, now)?;
            report.problems.extend(ev.warnings.iter().cloned());
            let mut chunk_rules = ev.rules.clone();
            if !ev.failures.is_empty() {
                merge_rules(&mut quality, &chunk_rules);
                report.problems.extend(ev.failures.iter().cloned());
                if let (Some(m), false) = (outs.get().await?.metrics.as_mut(), options.dry_run) {
                    let batch = metrics_batch(&plan, &options.run_id, from, to, &ev.rules, false, now)?;
                    // No progress marker: the range is not done.
                    let progress = m.progress;
                    m.write(
                        vec![batch],
                        to,
                        WriteOptions {
                            metadata: commit_metadata(&plan, &options.run_id, from, to),
                            ..Default::default()
                        },
                    )
                    .await?;
                    m.progress = progress;
                }
                tracing::warn!(from, to, "a fail rule fired: nothing of this range is published");
                break;
            }

            // Dedup over the whole range (lineage-aware), so a repair run counts
            // what the original run counted; then keep what the table lacks.
            let mut kept = ev.kept;
            let mut kept_versions = ev.kept_versions;
            // `keep: latest` found newer copies of stored rows: merge, not append.
            let mut replacing = false;
            let mut kept_hashes: Vec<Option<u128>> = Vec::new();
            let mut merge_from: Option<i32> = None;
            if let Some(d) = &plan.dedup {
                // Dedup reads only its own columns, joined (small); the rows
                // themselves are filtered once, batch by batch.
                let tagged = dedup_columns(&kept, d)?;
                // Keys are hashed once; the index filters and records by hash.
                let hashes = dedup::key_hashes(&tagged, d).map_err(Error::Internal)?;
                let (mut keep, within) = dedup::within_batch_mask(&tagged, &hashes, d).map_err(Error::Internal)?;
                let oldest = tagged
                    .column_by_name(PROCESSED_PARTITION_COLUMN)
                    .and_then(|c| c.as_primitive_opt::<deltalake::arrow::datatypes::Date32Type>())
                    .and_then(|a| a.iter().zip(&keep).filter_map(|(d, k)| d.filter(|_| *k)).min());
                // Stored keys are read once per run (again only when a range
                // reaches further back); what this run writes is added to them.
                let from = oldest.map(|o| o - d.lookback_days as i32);
                let rebuild = from.is_some_and(|from| key_cache.as_ref().is_none_or(|(f, _)| from < *f));
                if let (true, Some(oldest), Some(from)) = (rebuild, oldest, from) {
                    // Reading stored keys needs the previous write to have landed.
                    if let Some(t) = &outs.get().await?.processed.table {
                        let mut index = dedup::StoredIndex::new(d);
                        for b in stored_keys(t, d, oldest).await? {
                            index.add(&b).map_err(Error::Internal)?;
                        }
                        key_cache = Some((from, index));
                    }
                }
                if let (Some(_), Some((cached_from, _))) = (oldest, &key_cache) {
                    // The merge must see every stored row the keys came from.
                    merge_from = Some(*cached_from);
                }
                let counts = match key_cache.as_mut() {
                    Some((_, index)) => index.filter_mask(&tagged, &hashes, &mut keep).map_err(Error::Internal)?,
                    None => dedup::DedupCounts::default(),
                };
                quality.duplicates_dropped += within + counts.against_table;
                quality.already_written += counts.already_written;
                replacing = counts.replacing > 0;
                let duplicates = within + counts.against_table;
                chunk_rules.push(RuleFigures {
                    rule: DEDUP_RULE.to_string(),
                    expression: Some(format!("first of each ({})", d.key.join(", "))),
                    action: "drop",
                    checked: tagged.num_rows() as u64,
                    failed: duplicates,
                    max_failure_rate: None,
                    outcome: if duplicates == 0 { RuleVerdict::Passed } else { RuleVerdict::Dropped },
                });
                kept = filter_parts(kept, &keep)?;
                kept_versions = flagged(&kept_versions, &keep);
                kept_hashes = flagged(&hashes, &keep);
            }
            merge_rules(&mut quality, &chunk_rules);
            quality.events_quarantined += ev.quarantine.num_rows() as u64;
            quality.events_dropped += ev.dropped;

            // The previous range's writes must be in before this range commits
            // anything: a failed write then stops the run here.
            let o = outs.get().await?;
            let meta = commit_metadata(&plan, &options.run_id, from, to);
            let progress = vec![Transaction::new_with_last_update(&app_id, to as i64, Some(now.timestamp_millis()))];
            let options_for = |partition: &str| WriteOptions {
                partition_columns: if partition.is_empty() { vec![] } else { vec![partition.to_string()] },
                progress: progress.clone(),
                metadata: meta.clone(),
                ..Default::default()
            };
            let quarantine_rows = match o.quarantine.needs(to) {
                true => Some(rows_after(&ev.quarantine, &ev.quarantine_versions, o.quarantine.progress)?),
                false => None,
            };
            let mut processed_rows = None;
            if o.processed.needs(to) {
                // A repair run writes only what the interrupted run did not.
                let rows = match o.processed.progress {
                    Some(p) => {
                        let newer: Vec<bool> = kept_versions.iter().map(|v| *v > p).collect();
                        if !kept_hashes.is_empty() {
                            kept_hashes = flagged(&kept_hashes, &newer);
                        }
                        filter_parts(kept, &newer)?
                    }
                    None => kept,
                };
                report.events_written += rows.iter().map(RecordBatch::num_rows).sum::<usize>() as u64;
                if let (Some(d), Some((_, keys))) = (&plan.dedup, key_cache.as_mut()) {
                    let mut offset = 0;
                    for part in &rows {
                        let indices = d
                            .stored_columns()
                            .iter()
                            .map(|n| part.schema().index_of(n))
                            .collect::<std::result::Result<Vec<_>, _>>()
                            .map_err(arrow_err("dedup keys"))?;
                        let n = part.num_rows();
                        let projected = part.project(&indices).map_err(arrow_err("dedup keys"))?;
                        keys.add_hashed(&projected, &kept_hashes[offset..offset + n]).map_err(Error::Internal)?;
                        offset += n;
                    }
                }
                processed_rows = Some(rows);
            }
            let metrics_rows = match o.metrics.as_ref().is_some_and(|m| m.needs(to)) {
                // A range without rows records progress but no figures.
                true => Some(metrics_batch(
                    &plan,
                    &options.run_id,
                    from,
                    to,
                    if ev_rows == 0 { &[] } else { &chunk_rules },
                    true,
                    now,
                )?),
                false => None,
            };
            if !options.dry_run {
                let quarantine_options = options_for(QUARANTINE_PARTITION_COLUMN);
                // Dedup keys are unique and sequence numbers nearly so.
                let no_dictionary = plan
                    .dedup
                    .iter()
                    .flat_map(|d| d.key.iter().cloned())
                    .chain(["_sequence_number".to_string()])
                    .collect();
                let processed_options =
                    WriteOptions { merge_schema: true, no_dictionary, ..options_for(PROCESSED_PARTITION_COLUMN) };
                let metrics_options = options_for("");
                let upsert_key = plan.dedup.as_ref().filter(|_| replacing).map(|d| d.key.clone());
                // In this order, as a run without overlap would: a crash leaves
                // the tables at a known step (see the repair tests).
                outs.start(move |mut o| async move {
                    if let Some(rows) = quarantine_rows {
                        o.quarantine.write(vec![rows], to, quarantine_options).await?;
                    }
                    match (processed_rows, upsert_key) {
                        (Some(rows), Some(key)) if rows.iter().any(|b| b.num_rows() > 0) => {
                            let scope = merge_from.map(|from| (PROCESSED_PARTITION_COLUMN, from));
                            let rows = concat_batches(&rows[0].schema(), &rows).map_err(arrow_err("rows to merge"))?;
                            o.processed.upsert(rows, to, &key, scope, processed_options).await?;
                        }
                        (Some(rows), _) => o.processed.write(rows, to, processed_options).await?,
                        (None, _) => {}
                    }
                    if let (Some(batch), Some(m)) = (metrics_rows, o.metrics.as_mut()) {
                        m.write(vec![batch], to, metrics_options).await?;
                    }
                    Ok(o)
                });
            }
            from = to + 1;
        }
        Ok(())
    }
    .await;
    if let Err(e) = looped {
        // The earlier error is the one to report; this only waits.
        outs.settle().await;
        return Err(e);
    }

    let o = outs.get().await?;
    report.tables = [Some(&o.processed), Some(&o.quarantine), o.metrics.as_ref()]
        .into_iter()
        .flatten()
        .map(Output::report)
        .collect();
    report.quality = Some(quality);
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// The tables a process run writes.
struct Outputs {
    processed: Output,
    quarantine: Output,
    metrics: Option<Output>,
}

/// Outputs whose writes run on a task of their own, one range at a time:
/// the next range's writes (and anything that reads the tables) wait for
/// the previous range's.
struct Background<T> {
    out: Option<T>,
    writing: Option<tokio::task::JoinHandle<Result<T>>>,
}

impl<T: Send + 'static> Background<T> {
    fn new(out: T) -> Self {
        Background { out: Some(out), writing: None }
    }

    /// The outputs, once the writes in flight (if any) have landed; their
    /// error is returned here.
    async fn get(&mut self) -> Result<&mut T> {
        if let Some(handle) = self.writing.take() {
            let out = handle.await.map_err(|e| Error::Internal(format!("the output tables' writer: {e}")))??;
            self.out = Some(out);
        }
        self.out.as_mut().ok_or_else(|| Error::Internal("the output tables' writer failed earlier in this run".into()))
    }

    /// Waits for the write in flight, if any, whatever its outcome.
    async fn settle(&mut self) {
        if let Some(handle) = self.writing.take() {
            if let Ok(Ok(out)) = handle.await {
                self.out = Some(out);
            }
        }
    }

    /// Starts `write` on the outputs; call after [`get`](Self::get).
    fn start<F, Fut>(&mut self, write: F)
    where
        F: FnOnce(T) -> Fut,
        Fut: std::future::Future<Output = Result<T>> + Send + 'static,
    {
        let out = self.out.take().expect("get() before start()");
        self.writing = Some(tokio::spawn(write(out)));
    }
}

fn merge_rules(quality: &mut QualityReport, rules: &[RuleFigures]) {
    for r in rules {
        let entry = match quality.rules.iter_mut().position(|q| q.rule == r.rule) {
            Some(i) => &mut quality.rules[i],
            None => {
                quality.rules.push(RuleOutcome {
                    rule: r.rule.clone(),
                    action: r.action.to_string(),
                    outcome: r.outcome,
                    ..Default::default()
                });
                quality.rules.last_mut().expect("just pushed")
            }
        };
        entry.rows_checked += r.checked;
        entry.rows_failed += r.failed;
        // The most serious outcome of any chunk is the run's outcome.
        if !matches!(r.outcome, RuleVerdict::Passed | RuleVerdict::Kept) {
            entry.outcome = r.outcome;
        }
    }
}

/// The columns dedup reads (key, order, lineage, event date) of the kept
/// rows, in one batch.
fn dedup_columns(parts: &[RecordBatch], d: &DedupConfig) -> Result<RecordBatch> {
    let mut names = d.stored_columns();
    for c in d.order_by.iter().map(String::as_str).chain([PROCESSED_PARTITION_COLUMN]) {
        if !names.iter().any(|n| n == c) {
            names.push(c.to_string());
        }
    }
    let schema = parts.first().map(RecordBatch::schema).ok_or_else(|| Error::Internal("no kept rows batch".into()))?;
    let indices = names
        .iter()
        .map(|n| schema.index_of(n))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(arrow_err("dedup columns"))?;
    let projected = parts
        .iter()
        .map(|p| p.project(&indices))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(arrow_err("dedup columns"))?;
    concat_batches(&projected[0].schema(), &projected).map_err(arrow_err("dedup columns"))
}

/// The rows of `parts` (taken in order, as one sequence) that `keep`
/// selects; a batch all of whose rows stay is passed on uncopied.
fn filter_parts(parts: Vec<RecordBatch>, keep: &[bool]) -> Result<Vec<RecordBatch>> {
    let mut offset = 0;
    parts
        .into_iter()
        .map(|p| {
            let mask = &keep[offset..offset + p.num_rows()];
            offset += p.num_rows();
            if mask.iter().all(|k| *k) {
                Ok(p)
            } else {
                filter_record_batch(&p, &BooleanArray::from(mask.to_vec())).map_err(arrow_err("kept rows"))
            }
        })
        .collect()
}

/// The values `keep` selects.
fn flagged<T: Copy>(values: &[T], keep: &[bool]) -> Vec<T> {
    values.iter().zip(keep).filter(|(_, k)| **k).map(|(v, _)| *v).collect()
}
