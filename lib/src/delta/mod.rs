//! Delta table access: create with change data feed, append with progress
//! markers, read progress back.
//!
//! Exactly-once rests on Delta application transactions (`txn` actions): a
//! stage commits its output rows and its progress (`app id` → last consumed
//! position) in one atomic commit. A second writer committing the same app id
//! concurrently loses with a `ConcurrentTransaction` conflict, which surfaces
//! as [`Error::ConcurrentProgress`] so the loser re-plans instead of writing
//! twice.
//!
//! Hazards (delta-rs 1.1): timestamps must be `Timestamp(µs, "UTC")` or Spark
//! cannot read the table; column mapping stays off (optimize and change-feed
//! reading refuse it); `CommitProperties::with_metadata` replaces the whole
//! map, so it is set once per commit.

use std::collections::HashMap;

use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel as _;
use deltalake::kernel::transaction::{CommitConflictError, CommitProperties, TransactionError};
use deltalake::kernel::{StructType, Transaction};
use deltalake::operations::merge::{MergeBuilder, MergeMetrics};
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableError, TableProperty};

use crate::storage::{storage_options_from_env, Location};
use crate::{Error, Result};

/// The application transaction that keeps jobs rewriting a table's files
/// from running at the same time. Its version is a time (Unix ms) until
/// which the table is held:
/// - merges and deletes (process, curate, erase) set it to the commit time,
///   so two of them prepared at the same time conflict on it and the later
///   one fails instead of committing;
/// - `weir maintain` claims it for a while with an empty commit before it
///   compacts or deletes ([`claim_rewrite_lease`]), and gives it back after;
/// - every rewriting job refuses to start while a claim is live
///   ([`check_rewrite_lease`]).
///
/// Why: delta-rs 1.1 does not count a removal with `dataChange = false` as
/// a conflict, and its optimize cannot carry an application transaction. A
/// compaction and a merge (or two compactions) planned on the same version
/// would both commit, and the rows of the files both rewrote would be in the
/// table twice. Appends carry no marker and commit beside anything.
pub const REWRITE_APP_ID: &str = "weir/rewrite";

/// The rewrite marker of a merge or delete commit (see [`REWRITE_APP_ID`]).
pub fn rewrite_marker() -> Transaction {
    let now = chrono::Utc::now().timestamp_millis();
    Transaction::new_with_last_update(REWRITE_APP_ID, now, Some(now))
}

/// Fails with [`Error::TableBusy`] while another job holds the table's
/// rewrite lease. A lease whose holder ran on this host and is no longer
/// running (killed, crashed) is free: nothing it was doing can commit.
pub async fn check_rewrite_lease(table: &DeltaTable) -> Result<()> {
    let Some(lease) = live_lease(table).await? else { return Ok(()) };
    let url = crate::storage::redact(table.table_url().as_str());
    if let Some(h) = &lease.holder {
        if h.host == this_host() && !pid_alive(h.pid) {
            tracing::warn!(table = %url, host = %h.host, pid = h.pid, "the rewrite lease is held by a run that is no longer running; it is free");
            return Ok(());
        }
    }
    Err(Error::TableBusy { table: url, until: lease.until(), holder: lease.holder() })
}

/// The holder of the table's rewrite lease and when it runs out, while
/// one is held (whether or not the holder still runs).
pub async fn held_lease(table: &DeltaTable) -> Result<Option<String>> {
    Ok(live_lease(table).await?.map(|lease| format!("{}, until {}", lease.holder(), lease.until())))
}

/// A rewrite lease that has not run out.
struct Lease {
    /// Unix ms until which it holds the table.
    until_ms: i64,
    holder: Option<LeaseHolder>,
}

impl Lease {
    fn until(&self) -> String {
        chrono::DateTime::from_timestamp_millis(self.until_ms).map(|t| t.to_rfc3339()).unwrap_or_default()
    }

    fn holder(&self) -> String {
        self.holder.as_ref().map_or_else(|| "an unknown run".to_string(), ToString::to_string)
    }
}

/// The table's rewrite lease while it holds; the holder is read from the
/// history only then.
async fn live_lease(table: &DeltaTable) -> Result<Option<Lease>> {
    let until_ms = progress(table, REWRITE_APP_ID).await?.unwrap_or(0);
    if until_ms <= chrono::Utc::now().timestamp_millis() {
        return Ok(None);
    }
    Ok(Some(Lease { until_ms, holder: lease_holder(table).await }))
}

/// Commit metadata keys naming a lease's holder.
const LEASE_HOST: &str = "weir.lease_host";
const LEASE_PID: &str = "weir.lease_pid";

/// Who claimed a table's rewrite lease.
struct LeaseHolder {
    host: String,
    pid: u32,
    run_id: Option<String>,
}

impl std::fmt::Display for LeaseHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "process {} on host {}", self.pid, self.host)?;
        if let Some(run) = &self.run_id {
            write!(f, " (run {run})")?;
        }
        Ok(())
    }
}

/// The holder of the latest lease claim in the table's recent history.
async fn lease_holder(table: &DeltaTable) -> Option<LeaseHolder> {
    use futures::StreamExt as _;
    let mut history = table.history(Some(100));
    while let Some(Ok(commit)) = history.next().await {
        let info = &commit.info;
        if let (Some(host), Some(pid)) = (info.get(LEASE_HOST), info.get(LEASE_PID)) {
            return Some(LeaseHolder {
                host: host.as_str()?.to_string(),
                pid: u32::try_from(pid.as_u64()?).ok()?,
                run_id: info.get("weir.run_id").and_then(|r| r.as_str()).map(str::to_string),
            });
        }
    }
    None
}

/// This machine's name, as a lease records it.
fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".into())
}

/// Whether process `pid` of this host is running; `true` where that
/// cannot be told (no `/proc`), so a lease is never taken from a live run.
fn pid_alive(pid: u32) -> bool {
    if !std::path::Path::new("/proc/self").exists() {
        return true;
    }
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Commits the table's rewrite lease until now + `hold` (an empty commit
/// with the marker): jobs that would rewrite files refuse to start until it
/// is given back, and one that started before conflicts on commit. Fails
/// with [`Error::TableBusy`] when another job holds it, or with the
/// retryable conflict when another job claims it at the same moment.
pub async fn claim_rewrite_lease(
    table: DeltaTable,
    hold: std::time::Duration,
    metadata: HashMap<String, serde_json::Value>,
) -> Result<DeltaTable> {
    check_rewrite_lease(&table).await?;
    let now = chrono::Utc::now().timestamp_millis();
    let until = now + hold.as_millis() as i64;
    let mut metadata = metadata;
    metadata.insert(LEASE_HOST.into(), this_host().into());
    metadata.insert(LEASE_PID.into(), std::process::id().into());
    lease_commit(table, until, metadata).await
}

/// Gives the rewrite lease back.
pub async fn release_rewrite_lease(
    table: DeltaTable,
    metadata: HashMap<String, serde_json::Value>,
) -> Result<DeltaTable> {
    let now = chrono::Utc::now().timestamp_millis();
    lease_commit(table, now, metadata).await
}

async fn lease_commit(
    table: DeltaTable,
    until: i64,
    metadata: HashMap<String, serde_json::Value>,
) -> Result<DeltaTable> {
    let now = chrono::Utc::now().timestamp_millis();
    let options = WriteOptions {
        progress: vec![Transaction::new_with_last_update(REWRITE_APP_ID, until, Some(now))],
        metadata,
        ..Default::default()
    };
    write_with_progress(table, vec![], options).await
}

/// Whether a delta-rs error is a lost commit race.
pub fn is_commit_conflict(e: &DeltaTableError) -> bool {
    matches!(e, DeltaTableError::Transaction { source: TransactionError::CommitConflict(_) })
}

/// What a table should look like when Weir creates it.
#[derive(Debug, Clone)]
pub struct TableSpec {
    /// Short name stored in the table metadata.
    pub name: String,
    /// Description stored in the table metadata.
    pub description: Option<String>,
    /// Arrow schema of the rows.
    pub schema: SchemaRef,
    /// Partition columns.
    pub partition_columns: Vec<String>,
}

/// Opens a table; `Ok(None)` when nothing exists at the location yet.
pub async fn open(location: &Location) -> Result<Option<DeltaTable>> {
    crate::storage::azure::register();
    if location.local_path().is_some_and(|p| !p.join("_delta_log").is_dir()) {
        return Ok(None);
    }
    let table =
        match DeltaTable::try_from_url_with_storage_options(location.url().clone(), storage_options_from_env()).await {
            Ok(table) => table,
            Err(e) => return Err(damaged_log(location).await.unwrap_or_else(|| Error::delta(location, e))),
        };
    Ok(table.version().is_some().then_some(table))
}

/// After a failed open: the log file that cannot be read as a commit, if
/// one is the cause (the newest commit files first, then the checkpoint
/// hint). `None` when the log reads fine (the failure was elsewhere).
async fn damaged_log(location: &Location) -> Option<Error> {
    use futures::TryStreamExt as _;
    use object_store::ObjectStoreExt as _;
    let (store, prefix) = location.object_store().ok()?;
    let log = prefix.clone().join("_delta_log");
    let mut commits: Vec<object_store::ObjectMeta> = store
        .list(Some(&log))
        .try_collect::<Vec<_>>()
        .await
        .ok()?
        .into_iter()
        .filter(|m| m.location.filename().is_some_and(|n| n.ends_with(".json")))
        .collect();
    commits.sort_by(|a, b| b.location.cmp(&a.location));
    for meta in commits.iter().take(20) {
        let bytes = store.get(&meta.location).await.ok()?.bytes().await.ok()?;
        let reason = match std::str::from_utf8(&bytes) {
            Err(e) => Some(format!("not UTF-8: {e}")),
            Ok(text) => text.lines().filter(|l| !l.trim().is_empty()).enumerate().find_map(|(i, line)| {
                serde_json::from_str::<serde_json::Value>(line).err().map(|e| format!("line {}: {e}", i + 1))
            }),
        };
        if let Some(reason) = reason {
            return Some(Error::DamagedLog {
                table: crate::storage::redact(location.url().as_str()),
                file: format!("_delta_log/{}", meta.location.filename().unwrap_or_default()),
                reason,
            });
        }
    }
    None
}

/// Opens the table, creating it (change data feed on) when absent. Two jobs
/// creating it at once is fine: the loser opens the winner's table.
pub async fn open_or_create(location: &Location, spec: &TableSpec) -> Result<DeltaTable> {
    if let Some(table) = open(location).await? {
        return Ok(table);
    }
    if let Some(dir) = location.local_path() {
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io { path: dir.clone(), source })?;
    }
    let schema: StructType =
        spec.schema.as_ref().try_into_kernel().map_err(|e| Error::Internal(format!("schema of {}: {e}", spec.name)))?;
    crate::storage::azure::register();
    let table = DeltaTable::try_from_url_with_storage_options(location.url().clone(), storage_options_from_env())
        .await
        .map_err(|e| Error::delta(location, e))?;
    let mut create = table
        .create()
        .with_table_name(&spec.name)
        .with_columns(schema.fields().cloned())
        .with_partition_columns(spec.partition_columns.clone())
        .with_configuration_property(TableProperty::EnableChangeDataFeed, Some("true"))
        .with_save_mode(SaveMode::ErrorIfExists)
        // A lost creation race must fail, not be retried as version 1 with a
        // second table id (readers would see the table change identity).
        .with_commit_properties(CommitProperties::default().with_max_retries(0));
    if let Some(d) = &spec.description {
        create = create.with_comment(d);
    }
    match create.await {
        Ok(table) => Ok(table),
        Err(e) => match open(location).await? {
            // Someone else created it between our check and our commit.
            Some(table) => Ok(table),
            None => Err(Error::delta(location, e)),
        },
    }
}

/// Refuses a table created for another pipeline (by its stored name): a
/// renamed pipeline has no progress markers and would write everything again.
pub fn check_owner(table: &DeltaTable, location: &Location, spec: &TableSpec) -> Result<()> {
    let snapshot = table.snapshot().map_err(|e| Error::delta(location, e))?;
    match snapshot.metadata().name() {
        Some(name) if name != spec.name => Err(Error::InvalidLocation {
            location: location.to_string(),
            reason: format!(
                "this table was created as '{name}', not '{}': it belongs to another pipeline (or the pipeline was renamed, which would ingest everything again); use another table path",
                spec.name
            ),
        }),
        _ => Ok(()),
    }
}

/// Files and bytes added by commits `from..=to` (entries already removed
/// by log cleanup count nothing).
pub async fn added(table: &DeltaTable, from: u64, to: u64) -> Result<(u64, u64)> {
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

/// The oldest version whose commit file is still in the table's log
/// (older ones go with log cleanup, or an erase's purge); `None` when the
/// log holds no commit file.
pub async fn oldest_commit(table: &DeltaTable) -> Result<Option<u64>> {
    use futures::TryStreamExt as _;
    let store = table.log_store().object_store(None);
    let log = object_store::path::Path::from("_delta_log");
    let metas: Vec<object_store::ObjectMeta> =
        store.list(Some(&log)).try_collect().await.map_err(|e| Error::storage(table.table_url(), e))?;
    Ok(metas.iter().filter_map(|m| m.location.filename()?.strip_suffix(".json")?.parse::<u64>().ok()).min())
}

/// The last version recorded for `app_id`, if any.
pub async fn progress(table: &DeltaTable, app_id: &str) -> Result<Option<i64>> {
    let snapshot = table.snapshot().map_err(|e| Error::delta(table.table_url(), e))?;
    snapshot
        .transaction_version(table.log_store().as_ref(), app_id)
        .await
        .map_err(|e| Error::delta(table.table_url(), e))
}

/// Commits files already written (by a streaming writer) as one append,
/// with `progress` in the same commit. Returns the table after the commit; a
/// concurrent commit of the same progress ids is [`Error::ConcurrentProgress`].
pub async fn commit_adds(
    table: DeltaTable,
    adds: Vec<deltalake::kernel::Add>,
    partition_columns: &[String],
    progress: Vec<Transaction>,
    metadata: HashMap<String, serde_json::Value>,
) -> Result<DeltaTable> {
    let url = crate::storage::redact(table.table_url().as_str());
    let conflict_ids: Vec<String> = progress.iter().map(|t| t.app_id.clone()).collect();
    let commit = CommitProperties::default().with_application_transactions(progress).with_metadata(metadata);
    let snapshot = table.snapshot().map_err(|e| Error::delta(&url, e))?;
    let operation = deltalake::protocol::DeltaOperation::Write {
        mode: SaveMode::Append,
        partition_by: (!partition_columns.is_empty()).then(|| partition_columns.to_vec()),
        predicate: None,
    };
    let actions = adds.into_iter().map(deltalake::kernel::Action::Add).collect();
    let done = deltalake::kernel::transaction::CommitBuilder::from(commit)
        .with_actions(actions)
        .build(Some(snapshot), table.log_store(), operation)
        .await;
    let result = match done {
        Ok(done) => {
            let mut table = table;
            table.update_incremental(Some(done.version())).await.map(|()| table)
        }
        Err(e) => Err(e),
    };
    result.map_err(|e| commit_error(&url, Race::Append(&conflict_ids), e))
}

/// Adds the columns of `wanted` the table lacks (nullable, at the end), in
/// one metadata commit. Returns the table unchanged when none are missing.
pub async fn add_missing_columns(
    table: DeltaTable,
    wanted: &deltalake::arrow::datatypes::Schema,
) -> Result<DeltaTable> {
    let missing = missing_columns(&table, wanted)?;
    if missing.is_empty() {
        return Ok(table);
    }
    let url = crate::storage::redact(table.table_url().as_str());
    let fields: Vec<deltalake::arrow::datatypes::Field> =
        missing.iter().map(|n| wanted.field_with_name(n).expect("listed above").clone().with_nullable(true)).collect();
    let schema: StructType = (&deltalake::arrow::datatypes::Schema::new(fields))
        .try_into_kernel()
        .map_err(|e| Error::Internal(format!("columns {missing:?} of {url}: {e}")))?;
    tracing::info!(table = %url, columns = ?missing, "adding columns to the table schema");
    let fields: Vec<_> = schema.fields().cloned().collect();
    table.add_columns().with_fields(fields).await.map_err(|e| Error::delta(&url, e))
}

/// How [`write_with_progress`] appends.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// The table's partition columns.
    pub partition_columns: Vec<String>,
    /// Progress markers committed with the rows.
    pub progress: Vec<Transaction>,
    /// Commit metadata (the whole map: delta-rs replaces, never merges).
    pub metadata: HashMap<String, serde_json::Value>,
    /// Add columns the batches have and the table lacks (schema evolution).
    pub merge_schema: bool,
    /// Columns written without a dictionary: values nearly all distinct
    /// (event ids, sequence numbers), where interning each value before
    /// falling back to plain encoding only costs time.
    pub no_dictionary: Vec<String>,
}

/// Appends `batches` and records the progress markers in the same commit.
/// With no rows, the commit holds the markers alone: a stage whose output is
/// empty must still record what it consumed, and delta-rs writes nothing for
/// an empty input.
pub async fn write_with_progress(
    table: DeltaTable,
    batches: Vec<RecordBatch>,
    options: WriteOptions,
) -> Result<DeltaTable> {
    let url = crate::storage::redact(table.table_url().as_str());
    let conflict_ids: Vec<String> = options.progress.iter().map(|t| t.app_id.clone()).collect();
    let commit =
        CommitProperties::default().with_application_transactions(options.progress).with_metadata(options.metadata);
    let batches: Vec<RecordBatch> = batches.into_iter().filter(|b| b.num_rows() > 0).collect();
    let result = if batches.is_empty() {
        let snapshot = table.snapshot().map_err(|e| Error::delta(&url, e))?;
        let operation =
            deltalake::protocol::DeltaOperation::Write { mode: SaveMode::Append, partition_by: None, predicate: None };
        let done = deltalake::kernel::transaction::CommitBuilder::from(commit)
            .build(Some(snapshot), table.log_store(), operation)
            .await;
        match done {
            Ok(done) => {
                let mut table = table;
                table.update_incremental(Some(done.version())).await.map(|()| table)
            }
            Err(e) => Err(e),
        }
    } else {
        let mut write = table
            .write(batches)
            .with_save_mode(SaveMode::Append)
            .with_partition_columns(options.partition_columns)
            .with_commit_properties(commit);
        if !options.no_dictionary.is_empty() {
            write = write.with_writer_properties(writer_properties(&options.no_dictionary));
        }
        if options.merge_schema {
            write = write.with_schema_mode(deltalake::operations::write::SchemaMode::Merge);
        }
        write.await
    };
    result.map_err(|e| commit_error(&url, Race::Append(&conflict_ids), e))
}

/// Snappy (delta-rs's default), without a dictionary for `no_dictionary`.
fn writer_properties(no_dictionary: &[String]) -> deltalake::parquet::file::properties::WriterProperties {
    use deltalake::parquet::file::properties::WriterProperties;
    use deltalake::parquet::schema::types::ColumnPath;
    let mut props = WriterProperties::builder().set_compression(deltalake::parquet::basic::Compression::SNAPPY);
    for c in no_dictionary {
        props = props.set_column_dictionary_enabled(ColumnPath::from(c.as_str()), false);
    }
    props.build()
}

/// Rows each writer of [`append_streamed`] takes at least: fewer rows make
/// one file per partition, as a small incremental run should.
const ROWS_PER_WRITER: usize = 100_000;

/// Like [`write_with_progress`] for batches that fit the table's schema,
/// but the batches go straight into Parquet writers (one per core for
/// large inputs, each on its own task) and the files are committed with
/// [`commit_adds`]. delta-rs's `write` plans the same append through
/// DataFusion: a repartition and a coalescing copy of every row, and one
/// encoder per partition value (one core for a day's events). Batches with
/// columns the table lacks take the `write` path, which evolves the schema.
/// A failed writer stops the others; files of a failed append are left for
/// vacuum: no commit names them.
pub async fn append_streamed(
    table: DeltaTable,
    batches: Vec<RecordBatch>,
    options: WriteOptions,
) -> Result<DeltaTable> {
    use deltalake::writer::{DeltaWriter as _, RecordBatchWriter};
    let batches: Vec<RecordBatch> = batches.into_iter().filter(|b| b.num_rows() > 0).collect();
    let evolves = match batches.first() {
        Some(b) => !missing_columns(&table, b.schema().as_ref())?.is_empty(),
        None => false,
    };
    if batches.is_empty() || evolves {
        return write_with_progress(table, batches, options).await;
    }
    let url = crate::storage::redact(table.table_url().as_str());
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let writers = (rows / ROWS_PER_WRITER).clamp(1, cores);
    let share = rows.div_ceil(writers);
    let mut shares: Vec<Vec<RecordBatch>> = vec![Vec::new()];
    let mut taken = 0;
    for b in batches {
        if taken >= share {
            shares.push(Vec::new());
            taken = 0;
        }
        taken += b.num_rows();
        shares.last_mut().expect("never empty").push(b);
    }
    let props = writer_properties(&options.no_dictionary);
    let mut tasks = Vec::new();
    for share in shares {
        let mut writer = RecordBatchWriter::for_table(&table)
            .map_err(|e| Error::delta(&url, e))?
            .with_writer_properties(props.clone());
        tasks.push(tokio::spawn(async move {
            for b in share {
                writer.write(b).await?;
            }
            writer.flush().await
        }));
    }
    let mut adds = Vec::new();
    let mut tasks = tasks.into_iter();
    while let Some(task) = tasks.next() {
        let failure = match task.await {
            Ok(Ok(written)) => {
                adds.extend(written);
                continue;
            }
            Ok(Err(e)) => Error::delta(&url, e),
            Err(e) => Error::Internal(format!("a writer of {url} stopped: {e}")),
        };
        // The other writers' files would never be committed either.
        tasks.for_each(|t| t.abort());
        return Err(failure);
    }
    commit_adds(table, adds, &options.partition_columns, options.progress, options.metadata).await
}

/// A merge of a source batch into a table, joined on key columns.
struct MergeOn<'a> {
    /// Columns equal on both sides.
    key: &'a [String],
    /// A date partition column and its oldest value (days since the epoch):
    /// keeps the merge from reading the whole table.
    scope: Option<(&'a str, i32)>,
    /// Markers committed with it (the rewrite marker is always added).
    progress: Vec<Transaction>,
    /// Commit metadata.
    metadata: HashMap<String, serde_json::Value>,
    /// New source columns become table columns.
    merge_schema: bool,
    /// What the merge is, for errors.
    what: &'static str,
}

fn side(side: &str, name: &str) -> deltalake::datafusion::prelude::Expr {
    use deltalake::datafusion::common::Column;
    deltalake::datafusion::prelude::col(Column::new(Some(side.to_string()), name))
}

/// Runs one merge: source `batch` (alias `source`) into `table` (alias
/// `target`) on `m.key`, with the clauses `clauses` adds, under the
/// rewrite lease's marker. A lost race is [`Error::ConcurrentProgress`]
/// naming the contended markers.
async fn merge_on(
    table: DeltaTable,
    batch: RecordBatch,
    m: MergeOn<'_>,
    clauses: impl FnOnce(MergeBuilder) -> std::result::Result<MergeBuilder, DeltaTableError>,
) -> Result<(DeltaTable, MergeMetrics)> {
    use deltalake::datafusion::common::ScalarValue;
    use deltalake::datafusion::prelude::{lit, SessionContext};
    check_rewrite_lease(&table).await?;
    let url = crate::storage::redact(table.table_url().as_str());
    let mut contended: Vec<String> = m.progress.iter().map(|t| t.app_id.clone()).collect();
    if contended.is_empty() {
        contended.push(REWRITE_APP_ID.to_string());
    }
    let mut predicate = m
        .key
        .iter()
        .map(|k| side("target", k).eq(side("source", k)))
        .reduce(|a, b| a.and(b))
        .ok_or_else(|| Error::Internal(format!("{} without a key", m.what)))?;
    if let Some((column, from)) = m.scope {
        predicate = predicate.and(side("target", column).gt_eq(lit(ScalarValue::Date32(Some(from)))));
    }
    let source =
        SessionContext::new().read_batch(batch).map_err(|e| Error::Internal(format!("{} {url}: {e}", m.what)))?;
    let commit = CommitProperties::default()
        .with_application_transactions(m.progress.into_iter().chain([rewrite_marker()]).collect())
        .with_metadata(m.metadata);
    let merge = table
        .merge(source, predicate)
        .with_source_alias("source")
        .with_target_alias("target")
        .with_merge_schema(m.merge_schema)
        .with_commit_properties(commit);
    let result = match clauses(merge) {
        Ok(merge) => merge.await,
        Err(e) => Err(e),
    };
    result.map_err(|e| commit_error(&url, Race::Rewrite(&contended), e))
}

/// Upserts `batch` on `key` and records the progress markers in the same
/// commit: a stored row with the key is replaced by the batch's row, other
/// rows are inserted. `scope` (a date partition column and its oldest value,
/// days since the epoch) keeps the merge from reading the whole table. The
/// batch must hold at least one row whose key is stored, or delta-rs makes
/// no commit and the markers are lost.
pub async fn upsert_with_progress(
    table: DeltaTable,
    batch: RecordBatch,
    key: &[String],
    scope: Option<(&str, i32)>,
    options: WriteOptions,
) -> Result<DeltaTable> {
    let names: Vec<String> = batch.schema().fields().iter().map(|f| f.name().clone()).collect();
    let m = MergeOn {
        key,
        scope,
        progress: options.progress,
        metadata: options.metadata,
        merge_schema: options.merge_schema,
        what: "upsert into",
    };
    let (table, _) = merge_on(table, batch, m, |merge| {
        merge.when_matched_update(|u| names.iter().fold(u, |u, n| u.update(n.as_str(), side("source", n)))).and_then(
            |m| m.when_not_matched_insert(|i| names.iter().fold(i, |i, n| i.set(n.as_str(), side("source", n)))),
        )
    })
    .await?;
    Ok(table)
}

/// Applies a change batch (rows tagged `insert`, `update` or `delete` in
/// `op_column`) with one merge on `key`, recording the progress markers in
/// the same commit. The change feed shows inserts, update pre/post images
/// and deletes for exactly those rows.
pub async fn apply_changes(
    table: DeltaTable,
    batch: RecordBatch,
    key: &[String],
    op_column: &str,
    options: WriteOptions,
) -> Result<DeltaTable> {
    use deltalake::datafusion::prelude::lit;
    let names: Vec<String> =
        batch.schema().fields().iter().map(|f| f.name().clone()).filter(|n| n != op_column).collect();
    let op = |value: &str| side("source", op_column).eq(lit(value.to_string()));
    let m = MergeOn {
        key,
        scope: None,
        progress: options.progress,
        metadata: options.metadata,
        merge_schema: options.merge_schema,
        what: "merge into",
    };
    let (table, _) = merge_on(table, batch, m, |merge| {
        merge
            .when_matched_delete(|d| d.predicate(op("delete")))
            .and_then(|m| {
                m.when_matched_update(|u| {
                    names.iter().fold(u.predicate(op("update")), |u, n| u.update(n.as_str(), side("source", n)))
                })
            })
            .and_then(|m| {
                m.when_not_matched_insert(|i| {
                    names.iter().fold(i.predicate(op("insert")), |i, n| i.set(n.as_str(), side("source", n)))
                })
            })
    })
    .await?;
    Ok(table)
}

/// Deletes the rows whose values in every column of `keys` equal a row of
/// `keys` (one merge, so the change feed shows them as `delete`). The key
/// values never enter the Delta log: the commit records the join predicate,
/// not literals. Returns the table and the number of rows deleted.
pub async fn delete_keys(
    table: DeltaTable,
    keys: RecordBatch,
    metadata: HashMap<String, serde_json::Value>,
) -> Result<(DeltaTable, u64)> {
    let key: Vec<String> = keys.schema().fields().iter().map(|f| f.name().clone()).collect();
    let m = MergeOn { key: &key, scope: None, progress: vec![], metadata, merge_schema: false, what: "delete from" };
    let (table, metrics) = merge_on(table, keys, m, |merge| merge.when_matched_delete(|d| d)).await?;
    Ok((table, metrics.num_target_rows_deleted as u64))
}

/// What a lost commit race contended for. An append loses only to a
/// commit of the same markers (other concurrent appends are fine); a
/// rewrite (merge, delete) loses to any conflicting commit, since it read
/// files another writer may have changed.
enum Race<'a> {
    Append(&'a [String]),
    Rewrite(&'a [String]),
}

/// A delta-rs error as Weir's: a lost race is [`Error::ConcurrentProgress`]
/// naming the contended markers (retryable: the loser re-plans), anything
/// else a Delta error.
fn commit_error(url: &str, race: Race<'_>, e: DeltaTableError) -> Error {
    let (lost, ids) = match race {
        Race::Append(ids) => (
            matches!(
                &e,
                DeltaTableError::Transaction {
                    source: TransactionError::CommitConflict(CommitConflictError::ConcurrentTransaction)
                }
            ),
            ids,
        ),
        Race::Rewrite(ids) => (is_commit_conflict(&e), ids),
    };
    if lost {
        Error::ConcurrentProgress { table: url.to_string(), app_id: ids.join(",") }
    } else {
        Error::delta(&url, e)
    }
}

/// Parquet settings for raw rows: snappy (delta-rs's default), and no
/// dictionary or statistics for `body`. Bodies are unique JSON documents:
/// a dictionary is built and thrown away for every page, and min/max of a
/// body helps no reader (a profile of ingest showed the dictionary interner
/// at 2.4% of the time).
pub(crate) fn raw_writer_properties() -> deltalake::parquet::file::properties::WriterProperties {
    use deltalake::parquet::basic::Compression;
    use deltalake::parquet::file::properties::{EnabledStatistics, WriterProperties};
    use deltalake::parquet::schema::types::ColumnPath;
    let body = ColumnPath::from("body");
    let mut props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_column_dictionary_enabled(body.clone(), false)
        .set_column_statistics_enabled(body, EnabledStatistics::None);
    // Unique per event: a dictionary never pays, and interning every value
    // before falling back to plain encoding cost ~3% of ingest.
    for unique in ["sequence_number", "offset"] {
        props = props.set_column_dictionary_enabled(ColumnPath::from(unique), false);
    }
    props.build()
}

/// Columns of `wanted` the table lacks.
pub fn missing_columns(table: &DeltaTable, wanted: &deltalake::arrow::datatypes::Schema) -> Result<Vec<String>> {
    let have = arrow_schema(table)?;
    Ok(wanted.fields().iter().filter(|f| have.field_with_name(f.name()).is_err()).map(|f| f.name().clone()).collect())
}

/// Folders below the table's root that hold a Delta table of their own (a
/// `_delta_log/` below the root's): another table's files, which nothing
/// done to this table may delete. Pipelines refuse nested tables they
/// declare; this finds the ones they do not know, by listing the folder.
pub async fn nested_tables(table: &DeltaTable) -> Result<Vec<String>> {
    Ok(nested_in(&list_all(table).await?))
}

/// Every object under the table's root, its log included.
pub async fn list_all(table: &DeltaTable) -> Result<Vec<object_store::ObjectMeta>> {
    use futures::TryStreamExt as _;
    let store = table.log_store().object_store(None);
    store.list(None).try_collect().await.map_err(|e| Error::storage(table.table_url(), e))
}

/// The nested tables' folders (see [`nested_tables`]) among `objects`
/// listed under a table's root.
pub fn nested_in(objects: &[object_store::ObjectMeta]) -> Vec<String> {
    let keys = objects.iter().map(|m| m.location.as_ref());
    let mut folders: Vec<String> = keys.filter_map(|k| k.find("/_delta_log/").map(|i| k[..i].to_string())).collect();
    folders.sort();
    folders.dedup();
    folders
}

/// Whether `path` (relative to a table's root) lies in one of `folders`.
pub fn inside_any(path: &str, folders: &[String]) -> bool {
    folders.iter().any(|f| path.strip_prefix(f.as_str()).is_some_and(|rest| rest.starts_with('/')))
}

/// The table's current schema as Arrow.
pub fn arrow_schema(table: &DeltaTable) -> Result<SchemaRef> {
    let snapshot = table.snapshot().map_err(|e| Error::delta(table.table_url(), e))?;
    Ok(snapshot.snapshot().arrow_schema())
}

/// Reads the whole current version of a table (tests, small tables, tools).
pub async fn read_all(table: &DeltaTable) -> Result<Vec<RecordBatch>> {
    use futures::TryStreamExt;
    let url = table.table_url().clone();
    let (_, stream) =
        table.clone().scan_table().await.map_err(|e| Error::delta(&crate::storage::redact(url.as_str()), e))?;
    stream
        .try_collect()
        .await
        .map_err(|e| Error::Internal(format!("reading {}: {e}", crate::storage::redact(url.as_str()))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{Date32Array, Int64Array};
    use deltalake::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    /// `days` date partitions of `n` rows each, in batches of 8,192.
    fn batches(n: usize, days: i32) -> (SchemaRef, Vec<RecordBatch>) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("day", DataType::Date32, false),
        ]));
        let mut out = Vec::new();
        for day in 0..days {
            for start in (0..n).step_by(8192) {
                let ids: Vec<i64> =
                    (start..(start + 8192).min(n)).map(|i| (day as i64) * n as i64 + i as i64).collect();
                let len = ids.len();
                out.push(
                    RecordBatch::try_new(
                        schema.clone(),
                        vec![Arc::new(Int64Array::from(ids)), Arc::new(Date32Array::from(vec![20_000 + day; len]))],
                    )
                    .unwrap(),
                );
            }
        }
        (schema, out)
    }

    #[tokio::test]
    async fn a_large_streamed_append_uses_every_writer_and_commits_once_with_its_marker() {
        let dir = tempfile::tempdir().unwrap();
        let location = Location::parse(dir.path().join("t").to_str().unwrap()).unwrap();
        let (schema, input) = batches(300_000, 1);
        let spec = TableSpec { name: "t".into(), description: None, schema, partition_columns: vec!["day".into()] };
        let table = open_or_create(&location, &spec).await.unwrap();
        let before = table.version().unwrap();
        let options = WriteOptions {
            partition_columns: vec!["day".into()],
            progress: vec![Transaction::new_with_last_update("weir/test", 7, None)],
            ..Default::default()
        };
        let table = append_streamed(table, input, options).await.unwrap();
        assert_eq!(table.version(), Some(before + 1), "one commit");
        assert_eq!(progress(&table, "weir/test").await.unwrap(), Some(7));
        let rows = read_all(&table).await.unwrap();
        let mut ids: Vec<i64> = rows
            .iter()
            .flat_map(|b| b.column(0).as_any().downcast_ref::<Int64Array>().unwrap().values().to_vec())
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, (0..300_000).collect::<Vec<i64>>(), "every row once");
        let files: Vec<String> = table.get_file_uris().unwrap().collect();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        // One date: each writer's share is one file (two on two cores).
        let writers = (300_000 / ROWS_PER_WRITER).clamp(1, cores);
        assert_eq!(files.len(), writers);
    }

    #[tokio::test]
    async fn a_streamed_append_without_rows_commits_the_marker_alone() {
        let dir = tempfile::tempdir().unwrap();
        let location = Location::parse(dir.path().join("t").to_str().unwrap()).unwrap();
        let (schema, _) = batches(0, 0);
        let spec = TableSpec { name: "t".into(), description: None, schema: schema.clone(), partition_columns: vec![] };
        let table = open_or_create(&location, &spec).await.unwrap();
        let before = table.version().unwrap();
        let options = WriteOptions {
            progress: vec![Transaction::new_with_last_update("weir/test", 3, None)],
            ..Default::default()
        };
        let table = append_streamed(table, vec![RecordBatch::new_empty(schema)], options).await.unwrap();
        assert_eq!(table.version(), Some(before + 1));
        assert_eq!(progress(&table, "weir/test").await.unwrap(), Some(3));
        assert_eq!(table.get_file_uris().unwrap().count(), 0);
    }

    /// A truncated commit file (a torn write, a bad restore) is named, as
    /// a data problem, and the message carries no backtrace even when
    /// `RUST_BACKTRACE` is set.
    #[tokio::test]
    async fn a_damaged_log_file_is_named_as_a_data_problem() {
        let dir = tempfile::tempdir().unwrap();
        let location = Location::parse(dir.path().join("t").to_str().unwrap()).unwrap();
        let (schema, all) = batches(10, 1);
        let spec = TableSpec { name: "t".into(), description: None, schema, partition_columns: vec![] };
        let mut table = open_or_create(&location, &spec).await.unwrap();
        for b in all.into_iter().take(2) {
            table = write_with_progress(table, vec![b], WriteOptions::default()).await.unwrap();
        }
        let last = dir.path().join(format!("t/_delta_log/{:020}.json", table.version().unwrap()));
        let text = std::fs::read(&last).unwrap();
        std::fs::write(&last, &text[..text.len() / 2]).unwrap();
        let e = open(&location).await.unwrap_err();
        assert_eq!(e.class(), crate::ErrorClass::Data, "{e}");
        let message = e.to_string();
        assert!(message.contains(&format!("_delta_log/{:020}.json is damaged", table.version().unwrap())), "{message}");
        assert!(!message.contains(" 0: "), "{message}");
    }
}
